"""Message codec against real ROS 2 CDR and independent decoders.

Round trips go through rosbags' CDR serialisation with the Humble and Jazzy message sets;
decoding is compared with rosbags.image and cv_bridge wherever those are installed.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from moa_depth_ros.frame import cdr, msgs
from moa_depth_ros.frame.geometry import CameraModel, make_cloud

STORES = [Stores.ROS2_HUMBLE, Stores.ROS2_JAZZY]


@pytest.fixture(params=STORES, ids=lambda s: s.name)
def store(request):
    return get_typestore(request.param)


def header(store):
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    return Header(stamp=Time(sec=12, nanosec=345), frame_id='camera_optical_frame')


def empty_image(store):
    Image = store.types['sensor_msgs/msg/Image']
    return Image(
        header=header(store),
        height=0,
        width=0,
        encoding='',
        is_bigendian=0,
        step=0,
        data=np.zeros(0, dtype=np.uint8),
    )


def cdr_round_trip(store, msg):
    raw = store.serialize_cdr(msg, msg.__msgtype__)
    return store.deserialize_cdr(raw, msg.__msgtype__)


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_depth_image_survives_cdr(store, encoding):
    depth = np.linspace(0.3, 9.0, 5 * 7, dtype=np.float32).reshape(5, 7)
    depth[1, 2] = np.nan
    msg = msgs.fill_image_msg(empty_image(store), msgs.encode_depth(depth, encoding))
    back = cdr_round_trip(store, msg)
    assert (back.height, back.width, back.encoding) == (5, 7, encoding)
    assert back.header.frame_id == 'camera_optical_frame'
    decoded = msgs.decode_depth(back)
    if encoding == '32FC1':
        np.testing.assert_array_equal(decoded, depth)
    else:
        np.testing.assert_allclose(decoded, np.round(depth * 1000) / 1000, atol=1e-6)
        assert np.isnan(decoded[1, 2])


def test_rgb_and_confidence_survive_cdr(store):
    rgb = np.random.default_rng(3).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    back = cdr_round_trip(store, msgs.fill_image_msg(empty_image(store), msgs.encode_rgb(rgb)))
    np.testing.assert_array_equal(msgs.decode_image(back), rgb)
    conf = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    back = cdr_round_trip(
        store, msgs.fill_image_msg(empty_image(store), msgs.encode_confidence(conf))
    )
    np.testing.assert_array_equal(np.frombuffer(back.data, np.float32).reshape(4, 6), conf)


def test_compressed_image_survives_cdr(store):
    rgb = np.random.default_rng(4).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    ok, png = cv2.imencode('.png', rgb[..., ::-1])
    assert ok
    CompressedImage = store.types['sensor_msgs/msg/CompressedImage']
    msg = CompressedImage(header=header(store), format='rgb8; png compressed bgr8', data=png)
    np.testing.assert_array_equal(msgs.decode_compressed_image(cdr_round_trip(store, msg)), rgb)


@pytest.mark.parametrize('with_rgb', [False, True])
def test_organized_cloud_survives_cdr_on_a_non_square_image(store, with_rgb):
    camera = CameraModel(width=6, height=4, fx_px=5.0, fy_px=6.0, cx_px=2.5, cy_px=1.5)
    depth = np.full((4, 6), 2.0, dtype=np.float32)
    depth[3, 5] = np.nan
    rgb = np.random.default_rng(5).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    cloud = make_cloud(depth, camera, rgb=rgb if with_rgb else None)
    # The bytes the node publishes, read by an independent CDR implementation.
    raw = cdr.point_cloud(cdr.Header(12, 345, 'camera_optical_frame'), msgs.encode_cloud(cloud))
    back = store.deserialize_cdr(raw, 'sensor_msgs/msg/PointCloud2')
    assert back.header.frame_id == 'camera_optical_frame' and back.header.stamp.nanosec == 345
    assert (back.height, back.width, back.is_dense) == (4, 6, False)
    assert [f.name for f in back.fields] == ['x', 'y', 'z'] + (['rgb'] if with_rgb else [])
    points = msgs.decode_cloud(back)
    assert points.shape == (4, 6)
    np.testing.assert_array_equal(points['z'][:3], 2.0)
    assert np.isnan(points['x'][3, 5]) and np.isnan(points['z'][3, 5])
    # Column 5 is right of cx and row 0 above cy: x > 0, y < 0 (REP 103 optical frame).
    assert points['x'][0, 5] > 0 and points['y'][0, 5] < 0
    if with_rgb:
        np.testing.assert_array_equal(msgs.unpack_rgb(points['rgb']), rgb)


def test_camera_info_fields_survive_cdr(store):
    camera = CameraModel(
        width=64,
        height=48,
        fx_px=50.0,
        fy_px=52.0,
        cx_px=31.0,
        cy_px=24.5,
        distortion_model='rational_polynomial',
        d=(-0.1, 0.02, 0.001, -0.001, 0.0, 0.01, 0.0, 0.0),
    )
    fields = camera.to_camera_info_fields()
    CameraInfo = store.types['sensor_msgs/msg/CameraInfo']
    RegionOfInterest = store.types['sensor_msgs/msg/RegionOfInterest']
    msg = CameraInfo(
        header=header(store),
        height=fields['height'],
        width=fields['width'],
        distortion_model=fields['distortion_model'],
        d=np.array(fields['d']),
        k=np.array(fields['k']),
        r=np.array(fields['r']),
        p=np.array(fields['p']),
        binning_x=fields['binning_x'],
        binning_y=fields['binning_y'],
        roi=RegionOfInterest(**fields['roi']),
    )
    assert CameraModel.from_camera_info(cdr_round_trip(store, msg)) == camera


# ------------------------------------------------------------------ independent implementations


def raw_image(store, encoding, height, width, raw: np.ndarray, big_endian=0):
    msg = empty_image(store)
    msg.height, msg.width, msg.encoding, msg.is_bigendian = height, width, encoding, big_endian
    msg.step = raw.nbytes // height
    msg.data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    return cdr_round_trip(store, msg)


def fixtures():
    rng = np.random.default_rng(7)
    h, w = 6, 10
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    mono16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    mosaic = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return (
        h,
        w,
        {
            'rgb8': (rgb, 0),
            'bgr8': (rgb[..., ::-1], 0),
            'rgba8': (np.concatenate([rgb, alpha], 2), 0),
            'bgra8': (np.concatenate([rgb[..., ::-1], alpha], 2), 0),
            'mono8': (rgb[..., 0], 0),
            'mono16': (mono16.astype('<u2'), 0),
            'mono16_be': (mono16.astype('>u2'), 1),
            'yuv422': (rng.integers(0, 256, (h, 2 * w), dtype=np.uint8), 0),
            # (8UC1 / 8UC3, OpenCV's generic types, are read as mono8 / bgr8 here; neither
            # rosbags.image nor cv_bridge converts them to rgb8, so test_msgs covers them.)
            'rgb16': (rgb16.astype('<u2'), 0),
            'bgr16_be': (rgb16[..., ::-1].astype('>u2'), 1),
            'bayer_rggb8': (mosaic, 0),
            'bayer_bggr8': (mosaic, 0),
            'bayer_gbrg8': (mosaic, 0),
            'bayer_grbg8': (mosaic, 0),
        },
    )


@pytest.mark.parametrize('name', list(fixtures()[2]))
def test_decoding_matches_rosbags_image(name):
    image = pytest.importorskip(
        'rosbags.image', reason='rosbags-image (independent decoder) is not installed'
    )
    store = get_typestore(Stores.ROS2_HUMBLE)
    h, w, cases = fixtures()
    raw, big_endian = cases[name]
    encoding = name.removesuffix('_be')
    msg = raw_image(store, encoding, h, w, np.ascontiguousarray(raw), big_endian)
    ours = msgs.decode_image(msg)
    theirs = image.message_to_cvimage(msg, 'rgb8')
    # rosbags.image truncates 16 -> 8 bits where cv_bridge (and we) round: allow 1 level.
    tolerance = 1 if encoding in ('mono16', 'rgb16', 'bgr16') else 0
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= tolerance


@pytest.mark.cv_bridge
@pytest.mark.parametrize('name', list(fixtures()[2]))
def test_decoding_matches_cv_bridge(name):
    import cv_bridge
    from sensor_msgs.msg import Image

    h, w, cases = fixtures()
    raw, big_endian = cases[name]
    raw = np.ascontiguousarray(raw)
    msg = Image()
    msg.height, msg.width, msg.encoding = h, w, name.removesuffix('_be')
    msg.is_bigendian, msg.step = big_endian, raw.nbytes // h
    flat = raw.reshape(-1).view(np.uint8)
    msgs.fill_image_msg(msg, msgs.ImageFields(h, w, msg.encoding, big_endian, msg.step, flat))
    theirs = cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding='rgb8')
    np.testing.assert_array_equal(msgs.decode_image(msg), theirs)
