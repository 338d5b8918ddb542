"""Serialized (CDR) bytes of the messages the package writes: Image, CameraInfo, PointCloud2.

The node publishes these bytes as they are (rclpy publishes ``bytes`` as a serialized message)
and the bag tool writes them into the bag: one serialization for both, and one copy of each
payload. Filling an rclpy message instead copies the payload into an ``array.array``, then
rclpy copies it into the C message and the middleware serializes it once more.

The layout is XCDR1, little endian (encapsulation ``00 01 00 00``), what rmw_fastrtps and
rosbag2 write for these types in every ROS 2 distribution from Humble on: alignment is counted
from the end of the 4-byte encapsulation header, strings carry their length including the NUL,
sequences a uint32 count. Padding is written as zeros. Pure Python; no ROS imports.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Mapping, Sequence

import numpy as np

_ENCAPSULATION_CDR_LE = b'\x00\x01\x00\x00'


@dataclasses.dataclass(frozen=True)
class Header:
    """std_msgs/Header: the stamp (seconds, nanoseconds) and the frame id."""

    sec: int
    nanosec: int
    frame_id: str

    @classmethod
    def of(cls, msg_header: Any) -> Header:
        """Copy a message's header (rclpy or rosbags)."""
        stamp = msg_header.stamp
        return cls(int(stamp.sec), int(stamp.nanosec), str(msg_header.frame_id))


class _Writer:
    """Accumulates CDR parts; large payloads are referenced, copied once in ``getvalue``."""

    def __init__(self) -> None:
        self._parts: list[Any] = [_ENCAPSULATION_CDR_LE]
        self._offset = 0

    def _put(self, data: Any, size: int) -> None:
        self._parts.append(data)
        self._offset += size

    def align(self, size: int) -> None:
        pad = -self._offset % size
        if pad:
            self._put(b'\x00' * pad, pad)

    def pack(self, fmt: str, *values: Any) -> None:
        """Write fixed-size values (struct format without byte order), aligned to the first."""
        self.align(struct.calcsize(fmt.lstrip('0123456789')[0]))
        data = struct.pack('<' + fmt, *values)
        self._put(data, len(data))

    def string(self, text: str) -> None:
        data = text.encode('utf-8') + b'\x00'
        self.pack('I', len(data))
        self._put(data, len(data))

    def octets(self, payload: np.ndarray) -> None:
        """Write a uint8[] sequence: its count, then the bytes (referenced, copied at the end)."""
        flat = np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
        self.pack('I', flat.size)
        self._put(memoryview(flat), flat.size)

    def doubles(self, values: Sequence[float], sequence: bool) -> None:
        if sequence:
            self.pack('I', len(values))
        if len(values):
            self.pack(f'{len(values)}d', *(float(v) for v in values))

    def header(self, header: Header) -> None:
        self.pack('iI', header.sec, header.nanosec)
        self.string(header.frame_id)

    def getvalue(self) -> bytes:
        return b''.join(self._parts)


def image(header: Header, fields: Any) -> bytes:
    """Serialize a sensor_msgs/Image from ``msgs.ImageFields``."""
    w = _Writer()
    w.header(header)
    w.pack('II', int(fields.height), int(fields.width))
    w.string(str(fields.encoding))
    w.pack('B', int(fields.is_bigendian))
    w.pack('I', int(fields.step))
    w.octets(fields.data)
    return w.getvalue()


def camera_info(header: Header, fields: Mapping[str, Any]) -> bytes:
    """Serialize a sensor_msgs/CameraInfo from ``CameraModel.to_camera_info_fields()``."""
    w = _Writer()
    w.header(header)
    w.pack('II', int(fields['height']), int(fields['width']))
    w.string(str(fields['distortion_model']))
    w.doubles(list(fields['d']), sequence=True)
    for name, length in (('k', 9), ('r', 9), ('p', 12)):
        values = list(fields[name])
        if len(values) != length:
            raise ValueError(f'CameraInfo.{name} needs {length} values, got {len(values)}')
        w.doubles(values, sequence=False)
    w.pack('II', int(fields['binning_x']), int(fields['binning_y']))
    roi = fields['roi']
    w.pack(
        'IIIIB',
        int(roi['x_offset']),
        int(roi['y_offset']),
        int(roi['height']),
        int(roi['width']),
        int(bool(roi['do_rectify'])),
    )
    return w.getvalue()


def point_cloud(header: Header, fields: Any) -> bytes:
    """Serialize a sensor_msgs/PointCloud2 from ``msgs.CloudFields``."""
    w = _Writer()
    w.header(header)
    w.pack('II', int(fields.height), int(fields.width))
    w.pack('I', len(fields.fields))
    for name, offset, datatype, count in fields.fields:
        w.string(str(name))
        w.pack('I', int(offset))
        w.pack('B', int(datatype))
        w.pack('I', int(count))
    w.pack('B', int(bool(fields.is_bigendian)))
    w.pack('II', int(fields.point_step), int(fields.row_step))
    w.octets(fields.data)
    w.pack('B', int(bool(fields.is_dense)))
    return w.getvalue()
