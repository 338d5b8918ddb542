"""Message <-> numpy codec for sensor_msgs Image, CompressedImage and PointCloud2.

Everything here is a pure function over message *fields*, so the same code serves rclpy
messages on the robot and ``rosbags`` messages in the offline bag tool: both spell the fields
the same way, and ``data`` may be ``bytes``, ``array.array('B')`` or a numpy array.

Reads are zero-copy (``np.frombuffer`` over the message buffer, honouring ``step`` and
``is_bigendian``); colour conversions go through OpenCV. Writes produce ``ImageFields`` /
``CloudFields`` whose ``data`` is a flat uint8 view of the encoded array: ``frame.cdr``
serializes them into the bytes the node publishes, and ``fill_image_msg`` moves an image into
a message object with one memcpy (rclpy) or none (rosbags). The message types read are
``Protocol``s (``ImageMessage``, ``CompressedImageMessage``, ``PointCloudMessage``): the
fields used, whichever library made the message. cv_bridge is not used: ROS 2 Humble's
cv_bridge breaks under NumPy 2 (ros-perception/vision_opencv#535).

Depth conventions (REP 118, REP 117): ``32FC1`` is metres along the optical axis with NaN for
"no measurement"; ``16UC1`` is millimetres with 0 for "no measurement".
"""

from __future__ import annotations

import array
import dataclasses
import sys
from typing import Any, Protocol, Sequence, Union

import cv2
import numpy as np

from moa_depth_ros.errors import InvalidImageError
from moa_depth_ros.frame.geometry import pack_rgb, unpack_rgb

__all__ = [
    'CloudFields',
    'ImageFields',
    'SUPPORTED_ENCODINGS',
    'colorize_depth',
    'CompressedImageMessage',
    'ImageMessage',
    'PointCloudMessage',
    'decode_camera_image',
    'decode_cloud',
    'decode_compressed_image',
    'decode_depth',
    'decode_image',
    'encode_cloud',
    'encode_colored_depth',
    'encode_confidence',
    'encode_depth',
    'encode_rgb',
    'fill_image_msg',
    'pack_rgb',
    'unpack_rgb',
]

# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = 1, 2, 3, 4, 5, 6, 7, 8
_POINT_FIELD_DTYPES = {
    INT8: np.dtype(np.int8),
    UINT8: np.dtype(np.uint8),
    INT16: np.dtype(np.int16),
    UINT16: np.dtype(np.uint16),
    INT32: np.dtype(np.int32),
    UINT32: np.dtype(np.uint32),
    FLOAT32: np.dtype(np.float32),
    FLOAT64: np.dtype(np.float64),
}

_NATIVE_BIG_ENDIAN = sys.byteorder == 'big'


class ImageMessage(Protocol):
    """The sensor_msgs/Image fields the codec reads and writes."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any  # bytes, array.array('B') (rclpy) or a uint8 numpy array (rosbags)


class CompressedImageMessage(Protocol):
    """The sensor_msgs/CompressedImage fields the codec reads."""

    format: str
    data: Any


class PointCloudMessage(Protocol):
    """The sensor_msgs/PointCloud2 fields the codec reads."""

    height: int
    width: int
    fields: Sequence[Any]  # PointField: name, offset, datatype, count
    is_bigendian: bool
    point_step: int
    row_step: int
    data: Any
    is_dense: bool


CameraImageMessage = Union[ImageMessage, CompressedImageMessage]


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How an Image encoding lays out a pixel, and how OpenCV turns it into RGB."""

    channels: int  # samples per pixel in the buffer (the packed yuv422 formats: 2 bytes)
    sample_bytes: int  # 1, or 2 for the 16-bit encodings (scaled to 8 bits like cv_bridge)
    to_rgb: int | None  # cv2.cvtColor code, None when the samples already are RGB


# yuv422 is UYVY (sensor_msgs/image_encodings.hpp), yuv422_yuy2 is YUYV, what most USB (UVC)
# cameras send. 8UC1 / 8UC3 are OpenCV's generic types: grey and BGR, as cv_bridge reads them.
# OpenCV names a Bayer pattern after the second row's second and third pixels, so ROS's
# RGGB (first row R G) is OpenCV's BayerBG, and so on (checked against a mosaic in the tests).
_LAYOUTS: dict[str, _Layout] = {
    'rgb8': _Layout(3, 1, None),
    'bgr8': _Layout(3, 1, cv2.COLOR_BGR2RGB),
    'rgba8': _Layout(4, 1, cv2.COLOR_RGBA2RGB),
    'bgra8': _Layout(4, 1, cv2.COLOR_BGRA2RGB),
    'mono8': _Layout(1, 1, cv2.COLOR_GRAY2RGB),
    '8UC1': _Layout(1, 1, cv2.COLOR_GRAY2RGB),
    '8UC3': _Layout(3, 1, cv2.COLOR_BGR2RGB),
    'mono16': _Layout(1, 2, cv2.COLOR_GRAY2RGB),
    'rgb16': _Layout(3, 2, None),
    'bgr16': _Layout(3, 2, cv2.COLOR_BGR2RGB),
    'yuv422': _Layout(2, 1, cv2.COLOR_YUV2RGB_UYVY),
    'yuv422_yuy2': _Layout(2, 1, cv2.COLOR_YUV2RGB_YUY2),
    'bayer_rggb8': _Layout(1, 1, cv2.COLOR_BayerBG2RGB),
    'bayer_bggr8': _Layout(1, 1, cv2.COLOR_BayerRG2RGB),
    'bayer_gbrg8': _Layout(1, 1, cv2.COLOR_BayerGR2RGB),
    'bayer_grbg8': _Layout(1, 1, cv2.COLOR_BayerGB2RGB),
}

#: Image encodings ``decode_image`` understands.
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)

# Bounds for cv2.inRange masks of "positive and finite" (inRange is False for NaN).
# (nextafter, not finfo.smallest_subnormal: Humble's Ubuntu 22.04 ships NumPy 1.21, which
# lacks that attribute.)
_SMALLEST_POSITIVE_F32 = float(np.nextafter(np.float32(0.0), np.float32(1.0)))
_LARGEST_F32 = float(np.finfo(np.float32).max)
# Largest depth a 16UC1 image holds, in millimetres.
_MAX_DEPTH_MM = 65535


@dataclasses.dataclass
class ImageFields:
    """The fields of a sensor_msgs/Image except the header; ``data`` is flat uint8."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


@dataclasses.dataclass
class CloudFields:
    """The fields of a sensor_msgs/PointCloud2 except the header; ``data`` is flat uint8.

    ``fields`` holds ``(name, offset, datatype, count)`` tuples (PointField values).
    """

    height: int
    width: int
    fields: list[tuple[str, int, int, int]]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: np.ndarray
    is_dense: bool


# --------------------------------------------------------------------------------------------
# Reading images


def _buffer(data: Any, what: str) -> np.ndarray:
    """View a message ``data`` field as flat uint8 without copying where possible."""
    if isinstance(data, np.ndarray):
        # The bytes, never a value cast (a non-uint8 array is reinterpreted, as a C++ node would).
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        # A plain list of ints (hand-built messages): correct but slow, never the fast path.
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidImageError(
            f'{what}.data must be bytes, array.array or a uint8 array, got {type(data).__name__}'
        ) from e


def _checked_view(msg: Any, bytes_per_pixel: int, dtype: np.dtype, channels: int) -> np.ndarray:
    """Validate size, step and data length; return a strided [H, W(, C)] view of ``data``."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InvalidImageError(
            f'Image height and width must be positive, got height={height} width={width}'
        )
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise InvalidImageError(
            f'Image.step {step} is smaller than width*bytes_per_pixel = '
            f'{width}*{bytes_per_pixel} = {row_bytes} (encoding {msg.encoding!r})'
        )
    buf = _buffer(msg.data, 'Image')
    if buf.size < step * height:
        raise InvalidImageError(
            f'Image.data has {buf.size} bytes, fewer than step*height = '
            f'{step}*{height} = {step * height}'
        )
    shape: tuple[int, ...] = (height, width) if channels == 1 else (height, width, channels)
    strides: tuple[int, ...] = (step, dtype.itemsize)
    if channels != 1:
        strides = (step, dtype.itemsize * channels, dtype.itemsize)
    view = np.ndarray(shape=shape, dtype=dtype, buffer=buf, strides=strides)
    if step % dtype.itemsize:
        # OpenCV cannot describe rows that do not start on an element boundary (it would
        # misread them), so such odd steps cost one copy.
        view = np.ascontiguousarray(view)
    return view


def decode_camera_image(msg: CameraImageMessage) -> np.ndarray:
    """Decode a camera frame, raw (``decode_image``) or compressed (``decode_compressed_image``).

    Told apart by their fields: an Image has ``encoding``, a CompressedImage ``format``.
    """
    if hasattr(msg, 'encoding'):
        return decode_image(msg)
    if hasattr(msg, 'format'):
        return decode_compressed_image(msg)
    raise InvalidImageError(
        f'{type(msg).__name__} is neither a sensor_msgs/Image (encoding) nor a '
        f'CompressedImage (format)'
    )


def decode_image(msg: ImageMessage) -> np.ndarray:
    """Decode a sensor_msgs/Image to uint8 RGB [H, W, 3].

    rgb8 is returned as a zero-copy (possibly read-only, possibly row-strided) view of the
    message buffer; every other encoding is converted by OpenCV into a new array: colour
    orders, grey, packed YUV 4:2:2, Bayer mosaics (demosaiced), and 16-bit images scaled to
    8 bits by 255/65535 with rounding, as cv_bridge does. Raises InvalidImageError for an
    unknown encoding, a step smaller than one row, short data or an image too small for its
    encoding.
    """
    encoding = str(msg.encoding)
    try:
        layout = _LAYOUTS[encoding]
    except KeyError as e:
        raise InvalidImageError(
            f'Image.encoding {encoding!r} is not supported; supported: '
            f'{", ".join(SUPPORTED_ENCODINGS)}'
        ) from e
    if encoding.startswith('yuv422') and int(msg.width) % 2:
        raise InvalidImageError(
            f'Image.width must be even for {encoding!r} (two pixels share U and V), '
            f'got {msg.width}'
        )
    if encoding.startswith('bayer_') and (int(msg.width) < 2 or int(msg.height) < 2):
        raise InvalidImageError(
            f'a {encoding!r} image must be at least 2x2 (one Bayer cell), '
            f'got {msg.width}x{msg.height}'
        )
    if layout.sample_bytes == 2:
        dtype = np.dtype('>u2' if msg.is_bigendian else '<u2')
        wide = _checked_view(msg, 2 * layout.channels, dtype, layout.channels)
        if not dtype.isnative:
            wide = wide.astype(np.uint16)
        samples = cv2.convertScaleAbs(wide, alpha=255.0 / 65535.0)
    else:
        samples = _checked_view(msg, layout.channels, np.dtype(np.uint8), layout.channels)
    if layout.to_rgb is None:
        return samples
    return cv2.cvtColor(samples, layout.to_rgb)


def decode_compressed_image(msg: CompressedImageMessage) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg or png) to uint8 RGB [H, W, 3].

    image_transport's ``format`` reads like ``'rgb8; jpeg compressed bgr8'`` or just ``'jpeg'``;
    the colour order of the compressed payload is always BGR for colour images, which is what
    OpenCV decodes to. compressedDepth (PNG-wrapped depth) is not a camera image and is refused.
    """
    fmt = str(getattr(msg, 'format', ''))
    lowered = fmt.lower()
    if 'compresseddepth' in lowered:
        raise InvalidImageError(
            f'CompressedImage.format {fmt!r} is a compressed depth image, not a camera image'
        )
    if lowered and not any(kind in lowered for kind in ('jpeg', 'jpg', 'png')):
        raise InvalidImageError(
            f'CompressedImage.format {fmt!r} is not supported; supported: jpeg, png'
        )
    buf = _buffer(msg.data, 'CompressedImage')
    if buf.size == 0:
        raise InvalidImageError(f'CompressedImage.data is empty (format {fmt!r})')
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise InvalidImageError(
            f'CompressedImage.data ({buf.size} bytes, format {fmt!r}) could not be decoded'
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_depth(msg: ImageMessage) -> np.ndarray:
    """Decode a 32FC1 (metres) or 16UC1 (millimetres) depth image to float32 metres, NaN invalid.

    The inverse of ``encode_depth``, for the bag tool and tests.
    """
    encoding = str(msg.encoding)
    order = '>' if msg.is_bigendian else '<'
    if encoding == '32FC1':
        depth = _checked_view(msg, 4, np.dtype(order + 'f4'), 1)
        return depth.astype(np.float32)
    if encoding == '16UC1':
        depth_mm = _checked_view(msg, 2, np.dtype(order + 'u2'), 1)
        depth_m = depth_mm.astype(np.float32) * np.float32(0.001)
        depth_m[depth_mm == 0] = np.nan
        return depth_m
    raise InvalidImageError(
        f'Image.encoding {encoding!r} is not a depth encoding; supported: 32FC1, 16UC1'
    )


# --------------------------------------------------------------------------------------------
# Writing images


def _fields_from_array(image: np.ndarray, encoding: str) -> ImageFields:
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    return ImageFields(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=int(_NATIVE_BIG_ENDIAN and image.dtype.itemsize > 1),
        step=int(image.strides[0]),
        data=image.reshape(-1).view(np.uint8),
    )


def _require_2d(array_: np.ndarray, what: str) -> np.ndarray:
    array_ = np.asarray(array_)
    if array_.ndim == 3 and array_.shape[2] == 1:
        array_ = array_[..., 0]
    if array_.ndim != 2 or array_.size == 0:
        raise InvalidImageError(f'{what} must be a non-empty [H, W] array, got {array_.shape}')
    return array_


def encode_depth(depth_m: np.ndarray, encoding: str = '32FC1') -> ImageFields:
    """Encode a depth map in metres as 32FC1 (metres, NaN invalid) or 16UC1 (mm, 0 invalid).

    32FC1: finite values <= 0 become NaN; +-Inf pass through (REP 117: too far / too close).
    16UC1: NaN, non-positive and +-Inf become 0; positive depths round to the nearest
    millimetre and are clamped into [1, 65535], so a valid reading never turns into "invalid"
    and never wraps around.
    """
    depth_m = _require_2d(depth_m, 'depth_m')
    if encoding == '32FC1':
        depth = np.asarray(depth_m, dtype=np.float32)
        # NaN compares False, so NaN stays; -Inf is REP 117's "too close" and stays too.
        non_positive = (depth <= 0) & (depth != -np.inf)
        if non_positive.any():
            depth = np.where(non_positive, np.float32(np.nan), depth)
        return _fields_from_array(depth, '32FC1')
    if encoding == '16UC1':
        depth = np.ascontiguousarray(depth_m, dtype=np.float32)
        # NumPy, not OpenCV: OpenCV 4.x's Python binding reads a 4x1 image as a Scalar and
        # scales only its first pixel (found by the compatibility lane on OpenCV 4.6).
        with np.errstate(invalid='ignore'):
            valid = (depth > 0) & (depth <= _LARGEST_F32)  # NaN and +-Inf are invalid
            # Clamp before scaling so nothing wraps; round to the nearest millimetre; a
            # sub-millimetre but valid depth becomes 1 mm, never "invalid".
            scaled = np.minimum(depth, np.float32(_MAX_DEPTH_MM / 1000.0))
            scaled *= np.float32(1000.0)
            np.rint(scaled, out=scaled)
            np.maximum(scaled, np.float32(1.0), out=scaled)
        depth_mm = np.zeros(depth.shape, dtype=np.uint16)
        np.copyto(depth_mm, scaled, casting='unsafe', where=valid)
        return _fields_from_array(depth_mm, '16UC1')
    raise InvalidImageError(f'depth encoding must be 32FC1 or 16UC1, got {encoding!r}')


def encode_confidence(confidence: np.ndarray) -> ImageFields:
    """Encode a confidence map (values in [0, 1]) as 32FC1."""
    confidence = _require_2d(confidence, 'confidence')
    return _fields_from_array(np.asarray(confidence, dtype=np.float32), '32FC1')


def colorize_depth(depth_m: np.ndarray, min_depth_m: float, max_depth_m: float) -> np.ndarray:
    """Colour-map a depth map to BGR uint8: near is red, far is blue, invalid is black."""
    depth_m = _require_2d(depth_m, 'depth_m')
    if not (np.isfinite(min_depth_m) and np.isfinite(max_depth_m)) or max_depth_m <= min_depth_m:
        raise InvalidImageError(
            f'colour range must be finite with min < max, got [{min_depth_m}, {max_depth_m}]'
        )
    depth = np.ascontiguousarray(depth_m, dtype=np.float32)
    scale = 255.0 / (max_depth_m - min_depth_m)
    # TURBO runs blue -> red; flip so that near obstacles stand out in warm colours. The
    # uint8 output saturates, so depths outside the range take the end colours.
    level = cv2.addWeighted(depth, -scale, depth, 0.0, max_depth_m * scale, dtype=cv2.CV_8U)
    bgr = cv2.applyColorMap(level, cv2.COLORMAP_TURBO)
    valid = cv2.inRange(depth, _SMALLEST_POSITIVE_F32, _LARGEST_F32)  # False for NaN, Inf
    return cv2.bitwise_and(bgr, bgr, mask=valid)


def encode_colored_depth(
    depth_m: np.ndarray, min_depth_m: float, max_depth_m: float
) -> ImageFields:
    """Encode a colour-mapped depth preview (``colorize_depth``) as bgr8."""
    return _fields_from_array(colorize_depth(depth_m, min_depth_m, max_depth_m), 'bgr8')


def encode_rgb(rgb: np.ndarray) -> ImageFields:
    """Encode a uint8 RGB [H, W, 3] image as rgb8."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise InvalidImageError(
            f'rgb must be a non-empty uint8 [H, W, 3] array, got {rgb.dtype} {rgb.shape}'
        )
    return _fields_from_array(rgb, 'rgb8')


# --------------------------------------------------------------------------------------------
# Point clouds


def encode_cloud(cloud: Any) -> CloudFields:
    """Pack a ``geometry.PointCloud`` into PointCloud2 fields.

    Layout: x, y, z float32 at offsets 0, 4, 8 (point_step 12), plus rgb float32 at 12
    (point_step 16) when the cloud has colours. Organized clouds keep H x W with NaN points and
    ``is_dense`` false; unorganized clouds are 1 x N with only finite points.
    """
    xyz = np.asarray(cloud.xyz)
    if xyz.dtype != np.float32 or xyz.shape[-1:] != (3,) or xyz.ndim not in (2, 3):
        raise InvalidImageError(
            f'cloud.xyz must be float32 [H, W, 3] or [N, 3], got {xyz.dtype} {xyz.shape}'
        )
    if cloud.organized:
        if xyz.ndim != 3:
            raise InvalidImageError(f'an organized cloud needs xyz [H, W, 3], got {xyz.shape}')
        height, width = xyz.shape[:2]
    else:
        xyz = xyz.reshape(-1, 3)
        height, width = 1, xyz.shape[0]
    fields = [('x', 0, FLOAT32, 1), ('y', 4, FLOAT32, 1), ('z', 8, FLOAT32, 1)]
    if cloud.rgb is None:
        packed = np.ascontiguousarray(xyz)  # already x, y, z interleaved: no copy
        point_step = 12
    else:
        packed = getattr(cloud, 'packed', None)
        if packed is None or packed.shape != xyz.shape[:-1] + (4,):
            rgb = np.asarray(cloud.rgb)
            if rgb.size != xyz.size or rgb.shape[-1:] != (3,):
                raise InvalidImageError(
                    f'cloud.rgb shape {rgb.shape} does not match cloud.xyz shape {xyz.shape}'
                )
            packed = np.concatenate(
                [xyz, pack_rgb(rgb.reshape(xyz.shape)).reshape(xyz.shape[:-1] + (1,))], axis=-1
            )
        packed = np.ascontiguousarray(packed, dtype=np.float32)
        fields.append(('rgb', 12, FLOAT32, 1))
        point_step = 16
    return CloudFields(
        height=int(height),
        width=int(width),
        fields=fields,
        is_bigendian=_NATIVE_BIG_ENDIAN,
        point_step=point_step,
        row_step=point_step * int(width),
        data=packed.reshape(-1).view(np.uint8),
        is_dense=not cloud.organized,
    )


def decode_cloud(msg: PointCloudMessage) -> np.ndarray:
    """View a PointCloud2 as a structured numpy array of shape (height, width).

    Field names, offsets, datatypes and counts come from ``msg.fields``; ``point_step``,
    ``row_step`` and ``is_bigendian`` are honoured, so padded layouts (e.g. depth_image_proc's
    32-byte XYZRGB) decode too. Zero-copy over the message buffer.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    order = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for field in msg.fields:
        try:
            base = _POINT_FIELD_DTYPES[int(field.datatype)].newbyteorder(order)
        except KeyError as e:
            raise InvalidImageError(
                f'PointField {field.name!r} has unknown datatype {field.datatype}'
            ) from e
        count = int(field.count) if int(field.count) > 0 else 1
        names.append(str(field.name))
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(field.offset))
    dtype = np.dtype(
        {'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': point_step}
    )
    if width * point_step > row_step:
        raise InvalidImageError(
            f'PointCloud2.row_step {row_step} is smaller than width*point_step = '
            f'{width}*{point_step}'
        )
    buf = _buffer(msg.data, 'PointCloud2')
    if buf.size < row_step * height:
        raise InvalidImageError(
            f'PointCloud2.data has {buf.size} bytes, fewer than row_step*height = '
            f'{row_step}*{height}'
        )
    return np.ndarray(
        shape=(height, width), dtype=dtype, buffer=buf, strides=(row_step, point_step)
    )


# --------------------------------------------------------------------------------------------
# Filling messages


def _is_rclpy_message(msg: Any) -> bool:
    """Tell an rclpy message (array.array sequences) from a rosbags one (numpy arrays)."""
    if hasattr(type(msg), '__msgtype__'):  # rosbags dataclasses carry their type name here
        return False
    return isinstance(getattr(msg, 'data', None), array.array) or hasattr(
        msg, 'get_fields_and_field_types'
    )


def _as_data(msg: Any, data: np.ndarray) -> Any:
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)  # bytes, never a value cast
    if _is_rclpy_message(msg):
        # rclpy's uint8[] setter takes an array.array('B') as is; anything else is checked and
        # copied element by element (ros2/rclpy#763). frombytes is a single memcpy from the
        # buffer (ros2/rosidl_python#156), where array.array('B', x) would iterate.
        out = array.array('B')
        out.frombytes(data)
        return out
    return data


def fill_image_msg(msg: ImageMessage, fields: ImageFields) -> ImageMessage:
    """Set the non-header fields of an rclpy or rosbags sensor_msgs/Image; returns ``msg``."""
    msg.height = int(fields.height)
    msg.width = int(fields.width)
    msg.encoding = str(fields.encoding)
    msg.is_bigendian = int(fields.is_bigendian)
    msg.step = int(fields.step)
    msg.data = _as_data(msg, fields.data)
    return msg
