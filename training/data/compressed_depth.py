"""image_transport's ``compressedDepth`` format: decode (any recording) and encode (test bags).

Written from ros-perception/image_transport_plugins, ``compressed_depth_image_transport``
(``src/codec.cpp``, ``src/rvl_codec.cpp``, ``include/.../compression_common.h``); no code
is copied. A ``sensor_msgs/CompressedImage`` of that transport holds:

- ``format``: ``'<encoding>; compressedDepth <png|rvl>'``, e.g. ``'16UC1; compressedDepth png'``.
  Older publishers wrote ``'<encoding>; compressedDepth'`` (PNG) or only ``'<encoding>'``
  (no ``;`` at all: PNG too); the encoding is the text before the first ``;``.
- ``data``: a 12-byte ``ConfigHeader`` (int32 compression format, float32 depthParam[2],
  host order: little-endian on every platform ROS 2 ships for), then the payload.
- payload ``png``: a 16-bit single-channel PNG. ``rvl``: uint32 cols, uint32 rows, then the
  RVL stream (Wilson 2017): 32-bit little-endian words read as 8 nibbles each, most
  significant first; a value is a run of nibbles, 3 bits each, least significant first, the
  4th bit set while more follow. The stream is pairs (zeros, nonzeros) of run lengths, each
  nonzeros run followed by its values as zigzag-coded differences to the previous nonzero
  value (which carries across runs; uint16 arithmetic).
- ``16UC1``: the pixels are the millimetres themselves (the publisher zeroed those beyond its
  ``depth_max``). ``32FC1``: quantised inverse depth: ``q = uint16(A / z + B)`` with
  ``A = depthParam[0]``, ``B = depthParam[1]``, decoded as ``z = A / (q - B)``; 0 = no depth.

Pure numpy + OpenCV (PNG), no ROS: the training data reads recordings with it, and it sits in
``training/data`` until the package's frame layer wants it.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from moa_depth_ros.errors import InvalidImageError

HEADER = struct.Struct('<iff')  # compression format (INV_DEPTH = 0), depthParam[0], [1]
RVL_SIZE = struct.Struct('<II')  # cols, rows
INV_DEPTH = 0
# The publisher's defaults (compressed_depth_image_transport CompressedDepthPublisher.cfg).
DEFAULT_DEPTH_MAX_M = 10.0
DEFAULT_DEPTH_QUANTIZATION = 100.0


def is_compressed_depth(fmt: str) -> bool:
    """Tell a compressedDepth CompressedImage from a colour one by its ``format``."""
    return 'compresseddepth' in str(fmt).lower()


def parse_format(fmt: str) -> tuple[str, str]:
    """Return (image encoding, codec 'png' or 'rvl') of a compressedDepth ``format`` string.

    As ``decodeCompressedDepthImage``: no ``;`` means an old PNG publisher; after the ``;``,
    ``compressedDepth png`` / ``compressedDepth rvl`` name the codec and a bare
    ``compressedDepth`` is PNG. Anything else raises InvalidImageError.
    """
    fmt = str(fmt)
    encoding, sep, rest = fmt.partition(';')
    encoding = encoding.strip()
    if not sep:
        return encoding, 'png'
    if 'compressedDepth png' in rest:
        return encoding, 'png'
    if 'compressedDepth rvl' in rest:
        return encoding, 'rvl'
    if 'compressedDepth' in rest and 'compressedDepth ' not in rest:
        return encoding, 'png'
    raise InvalidImageError(
        f'CompressedImage.format {fmt!r} is not a compressedDepth format '
        f"('<encoding>; compressedDepth png' or '... rvl')"
    )


# ------------------------------------------------------------------------------------ RVL


def rvl_decode(payload: bytes | np.ndarray, num_pixels: int) -> np.ndarray:
    """Decode an RVL stream into ``num_pixels`` uint16 values (see the module docstring).

    Vectorised: every nibble is unpacked at once, the variable-length values are summed per
    group, and only the (zeros, nonzeros) run headers are walked in Python.
    """
    buf = np.frombuffer(bytes(payload), dtype=np.uint8)
    if buf.size % 4:
        buf = np.concatenate([buf, np.zeros(4 - buf.size % 4, np.uint8)])
    words = buf.view('<u4')
    shifts = np.arange(28, -4, -4, dtype=np.uint32)  # most significant nibble first
    nibbles = ((words[:, None] >> shifts[None, :]) & np.uint32(0xF)).reshape(-1).astype(np.int64)
    last = (nibbles & 0x8) == 0  # a value ends at a nibble without the continuation bit
    ends = np.flatnonzero(last)
    if ends.size == 0:
        raise InvalidImageError('RVL stream holds no complete value')
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    position = np.arange(ends[-1] + 1) - np.repeat(starts, ends - starts + 1)
    if position.max(initial=0) > 10:
        raise InvalidImageError('RVL stream holds a value longer than 32 bits: corrupt data')
    values = np.zeros(ends.size, np.int64)
    np.add.at(values, group, (nibbles[: ends[-1] + 1] & 0x7) << (3 * position))

    out = np.zeros(num_pixels, np.uint16)
    value_at: list[np.ndarray] = []  # indices into ``values`` of the nonzero pixels
    pixel_at: list[np.ndarray] = []  # and the pixels they fill
    index, pixel, count = 0, 0, values.size
    while pixel < num_pixels:
        if index + 2 > count:
            raise InvalidImageError(
                f'RVL stream ends after {pixel} of {num_pixels} pixels: truncated data'
            )
        zeros, nonzeros = int(values[index]), int(values[index + 1])
        index += 2
        pixel += zeros
        if pixel + nonzeros > num_pixels or index + nonzeros > count:
            raise InvalidImageError(
                f'RVL run of {zeros} zeros and {nonzeros} values at pixel {pixel - zeros} runs '
                f'past the {num_pixels}-pixel image or the data: corrupt data'
            )
        if nonzeros:
            value_at.append(np.arange(index, index + nonzeros))
            pixel_at.append(np.arange(pixel, pixel + nonzeros))
        index += nonzeros
        pixel += nonzeros
    if value_at:
        coded = values[np.concatenate(value_at)]
        delta = (coded >> 1) ^ -(coded & 1)  # zigzag back to a signed difference
        out[np.concatenate(pixel_at)] = (np.cumsum(delta) & 0xFFFF).astype(np.uint16)
    return out


def rvl_encode(values: np.ndarray) -> bytes:
    """Encode uint16 values as an RVL stream (for writing compressedDepth test recordings)."""
    flat = np.asarray(values, np.uint16).reshape(-1)
    nonzero = flat != 0
    # Runs as [start, stop) of alternating zero / nonzero pixels, starting with zeros.
    change = np.flatnonzero(np.diff(nonzero.astype(np.int8))) + 1
    bounds = [0, *change.tolist(), flat.size]
    if flat.size and nonzero[0]:
        bounds.insert(0, 0)  # an empty run of zeros first
    if (len(bounds) - 1) % 2:
        bounds.append(flat.size)  # an empty run of nonzeros last
    out_values: list[int] = []
    previous = 0
    for k in range(0, len(bounds) - 1, 2):
        zeros_start, start, stop = bounds[k], bounds[k + 1], bounds[k + 2]
        out_values += [start - zeros_start, stop - start]
        chunk = flat[start:stop].astype(np.int64)
        if chunk.size:
            delta = np.diff(np.concatenate([[previous], chunk]))
            out_values += ((delta << 1) ^ (delta >> 63)).tolist()
            previous = int(chunk[-1])
    nibbles: list[int] = []
    for value in out_values:
        while True:
            nibble = value & 0x7
            value >>= 3
            if value:
                nibble |= 0x8
            nibbles.append(nibble)
            if not value:
                break
    nibbles.extend([0] * (-len(nibbles) % 8))
    arr = np.asarray(nibbles, np.uint32).reshape(-1, 8)
    words = np.zeros(arr.shape[0], np.uint32)
    for k in range(8):
        words |= arr[:, k] << np.uint32(28 - 4 * k)
    return words.astype('<u4').tobytes()


# ------------------------------------------------------------------------------------ codec


def decode_compressed_depth(msg) -> np.ndarray:
    """Decode a compressedDepth sensor_msgs/CompressedImage to float32 metres, NaN = none.

    16UC1 payloads are millimetres (0 = none), 32FC1 payloads quantised inverse depth. Raises
    InvalidImageError naming what is wrong (format, header, payload).
    """
    fmt = str(getattr(msg, 'format', ''))
    encoding, codec = parse_format(fmt)
    data = msg.data
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if len(raw) <= HEADER.size:
        raise InvalidImageError(
            f'compressedDepth data has {len(raw)} bytes, no more than its '
            f'{HEADER.size}-byte header (format {fmt!r})'
        )
    _, quant_a, quant_b = HEADER.unpack_from(raw, 0)
    payload = raw[HEADER.size :]
    if codec == 'png':
        image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 2 or image.dtype != np.uint16:
            raise InvalidImageError(
                f'compressedDepth PNG payload ({len(payload)} bytes, format {fmt!r}) is not a '
                f'single-channel 16-bit PNG'
            )
    else:
        if len(payload) < RVL_SIZE.size:
            raise InvalidImageError(f'compressedDepth RVL payload of {len(payload)} bytes')
        cols, rows = RVL_SIZE.unpack_from(payload, 0)
        # The subscriber's sanity check: RVL compresses at best about 5 pixels per byte here.
        if rows == 0 or cols == 0 or rows * cols > 5 * len(payload):
            raise InvalidImageError(
                f'compressedDepth RVL payload claims {cols}x{rows} pixels in '
                f'{len(payload)} bytes: malformed'
            )
        image = rvl_decode(payload[RVL_SIZE.size :], rows * cols).reshape(rows, cols)
    if encoding == '16UC1':
        depth_m = image.astype(np.float32) * np.float32(0.001)
        depth_m[image == 0] = np.nan
        return depth_m
    if encoding == '32FC1':
        with np.errstate(divide='ignore', invalid='ignore'):
            depth_m = (
                np.float32(quant_a) / (image.astype(np.float32) - np.float32(quant_b))
            ).astype(np.float32)
        depth_m[image == 0] = np.nan
        return depth_m
    raise InvalidImageError(
        f'compressedDepth encoding {encoding!r} (format {fmt!r}) is not a depth encoding; '
        f'supported: 16UC1, 32FC1'
    )


def encode_compressed_depth(
    depth_m: np.ndarray,
    encoding: str = '16UC1',
    codec: str = 'png',
    *,
    depth_max_m: float = DEFAULT_DEPTH_MAX_M,
    depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION,
) -> tuple[str, bytes]:
    """Encode metres (NaN / 0 = none) as the compressedDepth publisher does: (format, data)."""
    if codec not in ('png', 'rvl'):
        raise InvalidImageError(f"compressedDepth codec must be 'png' or 'rvl', got {codec!r}")
    depth = np.nan_to_num(np.asarray(depth_m, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if encoding == '16UC1':
        mm = np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
        mm[mm > np.uint16(min(65535, int(depth_max_m * 1000.0)))] = 0
        image, quant_a, quant_b = mm, 0.0, 0.0
    elif encoding == '32FC1':
        quant_a = float(np.float32(depth_quantization * (depth_quantization + 1.0)))
        quant_b = float(np.float32(1.0 - quant_a / depth_max_m))
        valid = (depth > 0) & (depth < depth_max_m)
        with np.errstate(divide='ignore'):
            q = np.float32(quant_a) / np.where(valid, depth, 1.0) + np.float32(quant_b)
        image = np.where(valid, np.clip(q, 0, 65535), 0).astype(np.uint16)  # truncates, as C
    else:
        raise InvalidImageError(
            f'compressedDepth encoding must be 16UC1 or 32FC1, got {encoding!r}'
        )
    if codec == 'png':
        ok, png = cv2.imencode('.png', image)
        if not ok:
            raise InvalidImageError('PNG encoding of the depth image failed')
        payload = png.tobytes()
    else:
        rows, cols = image.shape
        payload = RVL_SIZE.pack(cols, rows) + rvl_encode(image)
    data = HEADER.pack(INV_DEPTH, quant_a, quant_b) + payload
    return f'{encoding}; compressedDepth {codec}', data
