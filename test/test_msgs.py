"""sensor_msgs <-> numpy codec: every encoding on hand-built fixtures, errors, depth and clouds."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from moa_depth_ros.errors import InvalidImageError
from moa_depth_ros.frame import msgs
from moa_depth_ros.frame.geometry import PointCloud


def image_msg(encoding, height, width, rows, *, step=None, big_endian=0, pad=0xEE, kind=bytes):
    """Build an Image-like message from per-row byte strings, padding rows up to ``step``."""
    row_bytes = len(rows[0]) if rows else 0
    step = row_bytes if step is None else step
    raw = b''.join(bytes(r) + bytes([pad]) * (step - len(r)) for r in rows)
    if kind is np.ndarray:
        data = np.frombuffer(raw, dtype=np.uint8).copy()
    elif kind is array.array:
        data = array.array('B', raw)
    elif kind is list:
        data = list(raw)
    else:
        data = kind(raw)
    return SimpleNamespace(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=big_endian,
        step=step,
        data=data,
    )


def rows_of(image: np.ndarray) -> list[bytes]:
    return [image[r].tobytes() for r in range(image.shape[0])]


# A 2 x 3 RGB fixture with distinct channel values, and the same pixels in other layouts.
RGB = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [40, 50, 60], [70, 80, 90]]],
    dtype=np.uint8,
)


@pytest.mark.parametrize('kind', [bytes, bytearray, array.array, np.ndarray, list])
def test_rgb8_with_row_padding_decodes_exactly_from_every_data_type(kind):
    msg = image_msg('rgb8', 2, 3, rows_of(RGB), step=12, kind=kind)
    out = msgs.decode_image(msg)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_rgb8_decode_is_zero_copy():
    msg = image_msg('rgb8', 2, 3, rows_of(RGB), step=10, kind=bytearray)
    out = msgs.decode_image(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, dtype=np.uint8))


@pytest.mark.parametrize(
    ('encoding', 'layout'),
    [
        ('bgr8', lambda im: im[..., ::-1]),
        ('rgba8', lambda im: np.concatenate([im, np.full(im.shape[:2] + (1,), 7, np.uint8)], 2)),
        (
            'bgra8',
            lambda im: np.concatenate(
                [im[..., ::-1], np.full(im.shape[:2] + (1,), 9, np.uint8)], 2
            ),
        ),
    ],
)
def test_colour_encodings_with_padding(encoding, layout):
    raw = np.ascontiguousarray(layout(RGB))
    msg = image_msg(encoding, 2, 3, rows_of(raw), step=raw.shape[1] * raw.shape[2] + 5)
    np.testing.assert_array_equal(msgs.decode_image(msg), RGB)


def test_mono8_replicates_grey_into_three_channels():
    grey = np.array([[0, 1, 2], [128, 254, 255]], dtype=np.uint8)
    out = msgs.decode_image(image_msg('mono8', 2, 3, rows_of(grey), step=4))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize('big_endian', [0, 1])
@pytest.mark.parametrize('step', [6, 7, 8])  # 7: rows start between two uint16 elements
def test_mono16_both_byte_orders_scale_like_cv_bridge(big_endian, step):
    values = np.array([[0, 257, 65535], [1000, 128 * 257, 40000]], dtype=np.uint16)
    raw = values.astype('>u2' if big_endian else '<u2')
    msg = image_msg('mono16', 2, 3, rows_of(raw), step=step, big_endian=big_endian)
    out = msgs.decode_image(msg)
    # cv_bridge: convertTo(CV_8U, 255/65535) rounds to nearest.
    expected = np.array([[0, 1, 255], [4, 128, 156]], dtype=np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], expected)


def bt601(y, u, v):
    """Limited-range BT.601 YUV -> RGB, computed here independently of OpenCV."""
    c, d, e = 1.164 * (y - 16.0), u - 128.0, v - 128.0
    rgb = np.array([c + 1.596 * e, c - 0.392 * d - 0.813 * e, c + 2.017 * d])
    return np.clip(np.rint(rgb), 0, 255)


# Two macro-pixels per row (4 pixels): (Y0, Y1, U, V).
YUV_ROWS = [[(16, 235, 128, 128), (81, 145, 90, 240)], [(41, 170, 54, 34), (120, 120, 200, 60)]]


@pytest.mark.parametrize('encoding', ['yuv422', 'yuv422_yuy2'])
def test_yuv422_packings(encoding):
    rows, expected = [], np.zeros((2, 4, 3))
    for r, macro_pixels in enumerate(YUV_ROWS):
        row = []
        for m, (y0, y1, u, v) in enumerate(macro_pixels):
            # yuv422 is UYVY, yuv422_yuy2 is YUYV.
            row += [u, y0, v, y1] if encoding == 'yuv422' else [y0, u, y1, v]
            expected[r, 2 * m] = bt601(y0, u, v)
            expected[r, 2 * m + 1] = bt601(y1, u, v)
        rows.append(bytes(row))
    out = msgs.decode_image(image_msg(encoding, 2, 4, rows, step=12))
    assert np.abs(out.astype(int) - expected).max() <= 2
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])  # Y=16 is black
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])  # Y=235 is white


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer_mosaics_demosaic_to_the_colours_they_sampled(pattern):
    h, w = 8, 10
    colour = (200, 100, 30)
    mosaic = np.empty((h, w), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour['rgb'.index(pattern[2 * dy + dx])]
    msg = image_msg(f'bayer_{pattern}8', h, w, rows_of(mosaic))
    out = msgs.decode_image(msg)
    assert out.shape == (h, w, 3)
    assert np.abs(out[2:-2, 2:-2].astype(int) - colour).max() <= 1  # away from the borders
    too_small = image_msg(f'bayer_{pattern}8', 1, 4, [b'\0' * 4])
    with pytest.raises(InvalidImageError, match='at least 2x2'):
        msgs.decode_image(too_small)


@pytest.mark.parametrize(
    ('msg', 'words'),
    [
        (image_msg('rgba16', 1, 1, [b'\0' * 8]), ["'rgba16'", 'encoding']),
        (image_msg('rgb8', 2, 3, [b'\0' * 8] * 2), ['step', '8', '9']),
        (
            SimpleNamespace(
                height=2, width=3, encoding='rgb8', is_bigendian=0, step=9, data=b'\0' * 17
            ),
            ['data', '17', '18'],
        ),  # fmt: skip
        (image_msg('mono8', 0, 3, []), ['height', '0']),
        (
            SimpleNamespace(height=2, width=0, encoding='mono8', is_bigendian=0, step=0, data=b''),
            ['width=0'],
        ),  # fmt: skip
        (image_msg('yuv422', 1, 3, [b'\0' * 6]), ['width', '3', 'even']),
    ],
)
def test_bad_images_raise_typed_errors_naming_field_and_value(msg, words):
    with pytest.raises(InvalidImageError) as info:
        msgs.decode_image(msg)
    for word in words:
        assert word in str(info.value)


def test_data_may_be_longer_than_step_times_height():
    msg = image_msg('rgb8', 2, 3, rows_of(RGB) + [b'extra'])
    msg.height = 2
    np.testing.assert_array_equal(msgs.decode_image(msg), RGB)


# ------------------------------------------------------------------------- compressed images


def compressed(bgr: np.ndarray, ext: str, fmt: str):
    ok, buf = cv2.imencode(ext, bgr)
    assert ok
    return SimpleNamespace(format=fmt, data=buf.tobytes())


def test_png_decodes_losslessly_to_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = compressed(rgb[..., ::-1], '.png', 'rgb8; png compressed bgr8')
    np.testing.assert_array_equal(msgs.decode_compressed_image(msg), rgb)


def test_jpeg_decodes_to_rgb_order():
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    out = msgs.decode_compressed_image(compressed(rgb[..., ::-1], '.jpg', 'jpeg'))
    assert out.shape == (16, 16, 3)
    assert abs(int(out[..., 0].mean()) - 200) < 6 and out[..., 2].mean() < 6


@pytest.mark.parametrize(
    ('fmt', 'data', 'word'),
    [
        ('16UC1; compressedDepth png', b'\x89PNG', 'compressedDepth'),
        ('jpeg', b'', 'empty'),
        ('jpeg', b'not an image at all', 'could not be decoded'),
        ('tiff', b'II*\0', "'tiff'"),
    ],
)
def test_bad_compressed_images(fmt, data, word):
    with pytest.raises(InvalidImageError, match=word):
        msgs.decode_compressed_image(SimpleNamespace(format=fmt, data=data))


# ------------------------------------------------------------------------------ depth images


def as_msg(fields: msgs.ImageFields):
    return SimpleNamespace(
        **{f: getattr(fields, f) for f in msgs.ImageFields.__dataclass_fields__}
    )


def test_32fc1_is_metres_with_nan_invalid():
    depth = np.array([[1.5, np.nan, -2.0], [0.0, np.inf, 70.0]], dtype=np.float32)
    fields = msgs.encode_depth(depth, '32FC1')
    assert (fields.encoding, fields.step, fields.height, fields.width) == ('32FC1', 12, 2, 3)
    assert fields.data.dtype == np.uint8 and fields.data.size == 24
    back = msgs.decode_depth(as_msg(fields))
    np.testing.assert_array_equal(
        back, np.array([[1.5, np.nan, np.nan], [np.nan, np.inf, 70.0]], dtype=np.float32)
    )


def test_16uc1_is_millimetres_with_zero_invalid_clamped_and_never_overflowing():
    depth = np.array(
        [[np.nan, -1.0, 0.0, 1e-5, 0.0014, 0.0016], [1.25, 2.5, 65.535, 70.0, 1e9, np.inf]],
        dtype=np.float32,
    )
    fields = msgs.encode_depth(depth, '16UC1')
    assert (fields.encoding, fields.step) == ('16UC1', 12)
    depth_mm = fields.data.view(np.uint16).reshape(2, 6)
    np.testing.assert_array_equal(
        depth_mm, [[0, 0, 0, 1, 1, 2], [1250, 2500, 65535, 65535, 65535, 0]]
    )
    back = msgs.decode_depth(as_msg(fields))
    assert np.isnan(back[0, :3]).all() and back[1, 1] == pytest.approx(2.5)


def test_bad_depth_encoding_and_shape():
    with pytest.raises(InvalidImageError, match='16UC2'):
        msgs.encode_depth(np.ones((2, 2), np.float32), '16UC2')
    with pytest.raises(InvalidImageError, match='depth_m'):
        msgs.encode_depth(np.ones((2, 2, 2), np.float32))


def test_confidence_and_rgb_round_trip():
    conf = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    fields = msgs.encode_confidence(conf)
    assert fields.encoding == '32FC1'
    np.testing.assert_array_equal(fields.data.view(np.float32).reshape(3, 4), conf)
    rgb_fields = msgs.encode_rgb(RGB)
    assert (rgb_fields.encoding, rgb_fields.step) == ('rgb8', 9)
    np.testing.assert_array_equal(msgs.decode_image(as_msg(rgb_fields)), RGB)


def test_colored_depth_preview_is_bgr8_near_warm_far_cold_invalid_black():
    depth = np.array([[0.6, 9.5, np.nan]], dtype=np.float32)
    fields = msgs.encode_colored_depth(depth, 0.5, 10.0)
    assert fields.encoding == 'bgr8'
    bgr = fields.data.reshape(1, 3, 3).astype(int)
    near, far, invalid = bgr[0]
    assert near[2] > near[0] and far[0] > far[2]  # red near, blue far
    np.testing.assert_array_equal(invalid, [0, 0, 0])


# ------------------------------------------------------------------------------ point clouds


def test_pack_rgb_matches_depth_image_proc_bit_layout():
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3]], dtype=np.uint8)
    packed = msgs.pack_rgb(rgb)
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(
        packed.view(np.uint32), [0xFF0000, 0x00FF00, 0x0000FF, (1 << 16) | (2 << 8) | 3]
    )
    np.testing.assert_array_equal(msgs.unpack_rgb(packed), rgb)


def test_organized_cloud_on_non_square_image_keeps_rows_and_columns():
    h, w = 3, 5  # non-square on purpose: ros2/common_interfaces#236 swaps H and W
    xyz = np.zeros((h, w, 3), dtype=np.float32)
    xyz[..., 0] = np.arange(w)[None, :]  # x = column
    xyz[..., 1] = np.arange(h)[:, None]  # y = row
    xyz[..., 2] = 2.0
    xyz[1, 4] = np.nan
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[2, 1] = (10, 20, 30)
    fields = msgs.encode_cloud(PointCloud(xyz=xyz, rgb=rgb, organized=True))
    assert (fields.height, fields.width, fields.point_step, fields.row_step) == (3, 5, 16, 80)
    assert fields.is_dense is False
    assert [f[:3] for f in fields.fields] == [
        ('x', 0, 7),
        ('y', 4, 7),
        ('z', 8, 7),
        ('rgb', 12, 7),
    ]
    cloud = msgs.decode_cloud(SimpleNamespace(fields=[SimpleNamespace(
        name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields.fields],
        **{k: getattr(fields, k) for k in ('height', 'width', 'is_bigendian', 'point_step',
                                           'row_step', 'data')}))  # fmt: skip
    assert cloud.shape == (3, 5)
    np.testing.assert_array_equal(cloud['x'][2], np.arange(5))
    np.testing.assert_array_equal(cloud['y'][:, 3], np.arange(3))
    assert np.isnan(cloud['z'][1, 4]) and cloud['z'][1, 3] == 2.0
    np.testing.assert_array_equal(msgs.unpack_rgb(cloud['rgb'][2, 1]), [10, 20, 30])


def test_unorganized_cloud_is_one_row_and_dense():
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    fields = msgs.encode_cloud(PointCloud(xyz=xyz, organized=False))
    assert (fields.height, fields.width, fields.point_step, fields.is_dense) == (1, 4, 12, True)
    np.testing.assert_array_equal(fields.data.view(np.float32).reshape(4, 3), xyz)


def pf(name, offset, datatype, count=1):
    return SimpleNamespace(name=name, offset=offset, datatype=datatype, count=count)


def test_decode_cloud_honours_offsets_padding_and_big_endian():
    # depth_image_proc's XYZRGB layout: x y z at 0/4/8, rgb at 16, 32-byte points, big-endian.
    points = np.zeros((2, 3), dtype=np.dtype({
        'names': ['x', 'y', 'z', 'rgb'], 'formats': ['>f4'] * 4, 'offsets': [0, 4, 8, 16],
        'itemsize': 32}))  # fmt: skip
    points['x'] = [[1, 2, 3], [4, 5, 6]]
    points['z'] = 7.5
    row_step = 3 * 32 + 8  # padded rows too
    raw = b''.join(points[r].tobytes() + b'\0' * 8 for r in range(2))
    msg = SimpleNamespace(
        height=2, width=3, is_bigendian=True, point_step=32, row_step=row_step, data=raw,
        fields=[pf('x', 0, 7), pf('y', 4, 7), pf('z', 8, 7), pf('rgb', 16, 7)],
    )  # fmt: skip
    cloud = msgs.decode_cloud(msg)
    np.testing.assert_array_equal(cloud['x'], [[1, 2, 3], [4, 5, 6]])
    assert (cloud['z'] == 7.5).all()


def test_decode_cloud_rejects_short_data():
    msg = SimpleNamespace(
        height=2, width=2, is_bigendian=False, point_step=12, row_step=24, data=b'\0' * 40,
        fields=[pf('x', 0, 7)],
    )  # fmt: skip
    with pytest.raises(InvalidImageError, match='40'):
        msgs.decode_cloud(msg)


# --------------------------------------------------------------------------- filling messages


class RclpyLikeImage:
    """Mimics rclpy's generated setter: array.array('B') is taken as is, else per element."""

    def __init__(self):
        self._data = array.array('B')
        self.slow_path_used = False

    def get_fields_and_field_types(self):
        return {'data': 'sequence<uint8>'}

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        if isinstance(value, array.array):
            assert value.typecode == 'B'
            self._data = value
            return
        self.slow_path_used = True
        self._data = array.array('B', value)


def test_fill_image_msg_uses_the_rclpy_fast_path():
    msg = RclpyLikeImage()
    msgs.fill_image_msg(msg, msgs.encode_depth(np.full((2, 3), 1.5, np.float32)))
    assert not msg.slow_path_used
    assert isinstance(msg.data, array.array) and msg.data.typecode == 'B'
    assert (msg.height, msg.width, msg.step, msg.encoding) == (2, 3, 12, '32FC1')
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.float32), 1.5)
    assert isinstance(msg.is_bigendian, int)


# --------------------------------------------------------------------------- property tests


def encode_raw(
    rgb: np.ndarray, encoding: str, big_endian: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Lay out ``rgb`` in ``encoding``; return (raw [H, row_bytes] uint8, expected RGB or None)."""
    h, w, _ = rgb.shape
    if encoding == 'rgb8':
        return rgb.reshape(h, -1), rgb
    if encoding in ('bgr8', '8UC3'):
        return rgb[..., ::-1].reshape(h, -1), rgb
    if encoding in ('rgba8', 'bgra8'):
        colour = rgb if encoding == 'rgba8' else rgb[..., ::-1]
        alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        return np.concatenate([colour, alpha], 2).reshape(h, -1), rgb
    if encoding in ('mono8', '8UC1'):
        return rgb[..., 0].copy(), np.repeat(rgb[..., :1], 3, axis=2)
    if encoding in ('rgb16', 'bgr16'):
        values = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
        colour = values if encoding == 'rgb16' else values[..., ::-1]
        raw = colour.astype('>u2' if big_endian else '<u2').view(np.uint8).reshape(h, -1)
        return raw, np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
    if encoding.startswith('bayer_'):  # random mosaics: checked against the unpadded decode
        return rng.integers(0, 256, (h, w), dtype=np.uint8), None
    if encoding == 'mono16':
        values = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        raw = values.astype('>u2' if big_endian else '<u2').view(np.uint8).reshape(h, -1)
        grey = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return raw, np.repeat(grey[..., None], 3, axis=2)
    # yuv422 variants: random bytes; checked against the unpadded decode only.
    return rng.integers(0, 256, (h, 2 * w), dtype=np.uint8), None


@settings(max_examples=50, deadline=None)
@given(
    height=st.integers(1, 9),
    half_width=st.integers(1, 6),
    odd=st.booleans(),
    padding=st.integers(0, 9),
    encoding=st.sampled_from(msgs.SUPPORTED_ENCODINGS),
    big_endian=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_any_size_step_and_encoding_decodes_like_the_unpadded_image(
    height, half_width, odd, padding, encoding, big_endian, seed
):
    width = 2 * half_width - (odd and not encoding.startswith('yuv'))
    if encoding.startswith('bayer_'):  # one Bayer cell at least
        height, width = max(height, 2), max(width, 2)
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw, expected = encode_raw(rgb, encoding, big_endian, rng)
    raw = np.ascontiguousarray(raw)
    tight = image_msg(encoding, height, width, rows_of(raw), big_endian=big_endian)
    padded = image_msg(
        encoding, height, width, rows_of(raw), step=raw.shape[1] + padding, big_endian=big_endian
    )
    out = msgs.decode_image(padded)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, msgs.decode_image(tight))
    if expected is not None:
        np.testing.assert_array_equal(out, expected)


@settings(max_examples=50, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_depth_encodings_round_trip_within_a_millimetre(height, width, seed):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.001, 60.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.2] = np.nan
    back32 = msgs.decode_depth(as_msg(msgs.encode_depth(depth, '32FC1')))
    np.testing.assert_array_equal(back32, depth)
    back16 = msgs.decode_depth(as_msg(msgs.encode_depth(depth, '16UC1')))
    np.testing.assert_array_equal(np.isnan(back16), np.isnan(depth))
    valid = ~np.isnan(depth)
    # Half a millimetre of rounding plus a few float32 ulps at up to 60 m.
    assert np.all(np.abs(back16[valid] - depth[valid]) <= 0.0005 + 2e-5)
