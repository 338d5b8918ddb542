"""image_transport's compressedDepth format: the decoder against a test-side encoder.

The encoder here is written separately from ``training.data.compressed_depth``, from the
format as ros-perception/image_transport_plugins defines it (compressed_depth_image_transport
``src/codec.cpp``: 12-byte ConfigHeader {int32 format, float32 depthParam[2]} then the
payload; ``src/rvl_codec.cpp``: 3-bit groups with a continuation bit, 8 nibbles per 32-bit
word, most significant first; runs of zeros and nonzeros, zigzag deltas), bit by bit in
plain Python, so the decoder is checked against the format rather than against itself.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from moa_depth_ros.errors import InvalidImageError
from training.data.compressed_depth import (
    decode_compressed_depth,
    encode_compressed_depth,
    parse_format,
    rvl_decode,
    rvl_encode,
)

# ------------------------------------------------------------------ test-side encoder


class _NibbleWriter:
    """RvlCodec::EncodeVLE: nibbles into 32-bit words, the first nibble in the top bits."""

    def __init__(self) -> None:
        self.words: list[int] = []
        self.word = 0
        self.count = 0

    def value(self, value: int) -> None:
        while True:
            nibble = value & 0x7
            value >>= 3
            if value:
                nibble |= 0x8
            self.word = ((self.word << 4) | nibble) & 0xFFFFFFFF
            self.count += 1
            if self.count == 8:
                self.words.append(self.word)
                self.word, self.count = 0, 0
            if not value:
                return

    def finish(self) -> bytes:
        if self.count:
            self.words.append((self.word << (4 * (8 - self.count))) & 0xFFFFFFFF)
        return b''.join(struct.pack('<I', w) for w in self.words)


def reference_rvl(values) -> bytes:
    """RvlCodec::CompressRVL, one pixel at a time."""
    values = [int(v) for v in np.asarray(values, np.uint16).ravel()]
    out = _NibbleWriter()
    i, previous = 0, 0
    while i < len(values):
        zeros = 0
        while i < len(values) and values[i] == 0:
            zeros, i = zeros + 1, i + 1
        out.value(zeros)
        nonzeros = 0
        while i + nonzeros < len(values) and values[i + nonzeros] != 0:
            nonzeros += 1
        out.value(nonzeros)
        for _ in range(nonzeros):
            delta = values[i] - previous
            out.value(((delta << 1) ^ (delta >> 31)) & 0xFFFFFFFF)
            previous = values[i]
            i += 1
    return out.finish()


def reference_message(depth_m: np.ndarray, encoding: str, codec: str, fmt: str | None = None):
    """Build a CompressedImage as encodeCompressedDepthImage does (depth_max 10, quant 100)."""
    depth = np.nan_to_num(depth_m.astype(np.float32), nan=0.0)
    if encoding == '16UC1':
        image = np.round(depth * 1000).astype(np.uint16)
        a = b = 0.0
    else:
        a = np.float32(100.0 * 101.0)
        b = np.float32(1.0 - a / np.float32(10.0))
        image = np.zeros(depth.shape, np.uint16)
        valid = (depth > 0) & (depth < 10.0)
        image[valid] = (a / depth[valid] + b).astype(np.uint16)  # C truncation
    if codec == 'png':
        payload = cv2.imencode('.png', image)[1].tobytes()
    else:
        rows, cols = image.shape
        payload = struct.pack('<II', cols, rows) + reference_rvl(image)
    data = struct.pack('<iff', 0, a, b) + payload
    fmt = fmt if fmt is not None else f'{encoding}; compressedDepth {codec}'
    return SimpleNamespace(format=fmt, data=np.frombuffer(data, np.uint8))


def _depth_with_holes(shape=(37, 53), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 9.5, shape).astype(np.float32)
    depth[rng.uniform(size=shape) < 0.15] = np.nan  # scattered holes
    depth[5:9, :] = np.nan  # a whole band: long zero runs
    depth[:, -3:] = 4.0  # repeated values: zero deltas
    return depth


# ------------------------------------------------------------------ tests


def test_rvl_known_words():
    # [0, 0, 5]: zeros=2, nonzeros=1, zigzag(5)=10 -> nibbles 2, 1, 0xA (10 = 0b1010: low 3
    # bits 2 with continuation, then 1) , 1 -> 0x21A1 then padding.
    words = reference_rvl([0, 0, 5])
    assert words == struct.pack('<I', 0x21A10000)
    assert rvl_decode(words, 3).tolist() == [0, 0, 5]


@pytest.mark.parametrize('values', [[0], [7], [65535, 0, 1], [1, 2, 3, 65535, 0, 0, 0, 9]])
def test_rvl_decode_matches_reference_encoder(values):
    assert rvl_decode(reference_rvl(values), len(values)).tolist() == values
    assert rvl_encode(np.array(values, np.uint16)) == reference_rvl(values)


def test_rvl_large_image_round_trip():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 65536, (48, 64)).astype(np.uint16)
    image[rng.uniform(size=image.shape) < 0.3] = 0
    encoded = reference_rvl(image)
    assert np.array_equal(rvl_decode(encoded, image.size).reshape(image.shape), image)
    assert rvl_encode(image) == encoded


@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_16uc1_round_trip_millimetres(codec):
    depth = _depth_with_holes()
    decoded = decode_compressed_depth(reference_message(depth, '16UC1', codec))
    assert decoded.dtype == np.float32 and decoded.shape == depth.shape
    assert np.array_equal(np.isnan(decoded), np.isnan(depth))
    valid = ~np.isnan(depth)
    np.testing.assert_allclose(decoded[valid], np.round(depth[valid] * 1000) / 1000, atol=1e-6)


@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_32fc1_inverse_depth_round_trip(codec):
    depth = _depth_with_holes(seed=1)
    decoded = decode_compressed_depth(reference_message(depth, '32FC1', codec))
    assert np.array_equal(np.isnan(decoded), np.isnan(depth))
    valid = ~np.isnan(depth)
    # One step of the quantised inverse depth at z is z^2 / A (A = 10100): 9 mm at 9.5 m.
    step = depth[valid] ** 2 / 10100.0
    assert np.all(np.abs(decoded[valid] - depth[valid]) <= step + 1e-4)


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_package_encoder_writes_what_the_reference_decodes(encoding, codec):
    depth = _depth_with_holes(seed=2)
    fmt, data = encode_compressed_depth(depth, encoding, codec)
    reference = reference_message(depth, encoding, codec)
    assert fmt == reference.format
    assert data == reference.data.tobytes()


@pytest.mark.parametrize(
    ('fmt', 'expected'),
    [
        ('16UC1; compressedDepth png', ('16UC1', 'png')),
        ('16UC1; compressedDepth rvl', ('16UC1', 'rvl')),
        ('32FC1; compressedDepth', ('32FC1', 'png')),  # before the codec was named
        ('16UC1', ('16UC1', 'png')),  # the oldest publishers: no ';' at all
    ],
)
def test_format_strings(fmt, expected):
    assert parse_format(fmt) == expected
    depth = _depth_with_holes(seed=4)
    message = reference_message(depth, expected[0], expected[1], fmt=fmt)
    assert np.array_equal(np.isnan(decode_compressed_depth(message)), np.isnan(depth))


def test_malformed_inputs_raise_typed_errors():
    depth = _depth_with_holes()
    with pytest.raises(InvalidImageError, match='not a compressedDepth format'):
        parse_format('16UC1; compressedDepth zstd')
    good = reference_message(depth, '16UC1', 'rvl')
    short = SimpleNamespace(format=good.format, data=good.data[:12])
    with pytest.raises(InvalidImageError, match='header'):
        decode_compressed_depth(short)
    truncated = SimpleNamespace(format=good.format, data=good.data[: len(good.data) // 3])
    with pytest.raises(InvalidImageError, match='RVL'):
        decode_compressed_depth(truncated)
    not_png = reference_message(depth, '16UC1', 'rvl', fmt='16UC1; compressedDepth png')
    with pytest.raises(InvalidImageError, match='16-bit PNG'):
        decode_compressed_depth(not_png)
    colour = reference_message(depth, '16UC1', 'png', fmt='rgb8; compressedDepth png')
    with pytest.raises(InvalidImageError, match='not a depth encoding'):
        decode_compressed_depth(colour)
