"""Write a rosbag2 camera stream of a synthetic room: test input for the node and bag tool.

The camera glides on a smooth loop through one procedural room (``training.data.
synthetic``), looking across it. Per frame the bag holds ``sensor_msgs/Image`` on
``image_topic``, ``sensor_msgs/CameraInfo`` on ``info_topic``, optionally a JPEG
``sensor_msgs/CompressedImage`` on ``<image_topic>/compressed`` and the exact depth as
32FC1 metres (NaN = invalid, REP 118) on ``depth_topic``. Header stamps start at
``start_ns`` and advance at ``rate_hz``; the bag's receive time equals the header stamp.

Messages come from the real ROS 2 Humble definitions of ``rosbags`` and are CDR-encoded
by it, so the file is what ``ros2 bag record`` of a camera driver would give.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
import math
import os
from pathlib import Path
import shutil
import tempfile
from typing import Sequence

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from moa_depth_ros.errors import ConfigError
from training.data.synthetic import (
    CAMERA_CLEARANCE_M,
    CAMERA_HEIGHT_RANGE_M,
    SceneSpec,
    render,
    sample_scene,
)

ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'yuv422', 'yuv422_yuy2')
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
DEFAULT_START_NS = 1_700_000_000_000_000_000

# Camera angular speed around the loop (rad/s): about 0.5 m/s in a mid-size room.
_LOOP_RAD_PER_S = 0.3


@dataclass
class SyntheticBagInfo:
    """What was written: enough for a test or a demo to check the bag it reads back."""

    path: Path
    n_frames: int
    width: int
    height: int
    K: np.ndarray | None  # the camera matrix of every frame (None: each frame has its own)
    topics: dict[str, str] = field(default_factory=dict)  # topic -> message type
    stamps_ns: list[int] = field(default_factory=list)


def encode_image(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """Encode uint8 RGB [H,W,3] as ``encoding``; return (data uint8 1-D, step bytes)."""
    h, w = rgb.shape[:2]
    if encoding == 'rgb8':
        out = rgb
    elif encoding == 'bgr8':
        out = rgb[..., ::-1]
    elif encoding == 'rgba8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == 'bgra8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == 'mono8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding == 'mono16':
        # Full 16-bit range, little-endian (is_bigendian = 0).
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype('<u2') * np.uint16(257)
    elif encoding in ('yuv422', 'yuv422_yuy2'):
        if w % 2:
            raise ConfigError(f'{encoding} needs an even image width, got width={w}')
        code = cv2.COLOR_RGB2YUV_UYVY if encoding == 'yuv422' else cv2.COLOR_RGB2YUV_YUY2
        out = cv2.cvtColor(np.ascontiguousarray(rgb), code)
    else:
        raise ConfigError(f'encoding must be one of {ENCODINGS}, got {encoding!r}')
    data = np.ascontiguousarray(out).view(np.uint8).reshape(-1)
    return data, data.size // h


def trajectory_pose(
    spec: SceneSpec, t_s: float
) -> tuple[tuple[float, float, float], float, float]:
    """Camera (position, yaw, pitch) at time ``t_s`` on a loop looking across the room."""
    w, _, d = spec.room_size_m
    margin = CAMERA_CLEARANCE_M + 0.05
    rx, rz = max(0.05, 0.5 * w - margin - 0.3), max(0.05, 0.5 * d - margin - 0.3)
    theta = _LOOP_RAD_PER_S * t_s + spec.seed % 7  # start angle varies with the room
    x = 0.5 * w + rx * math.cos(theta)
    z = 0.5 * d + rz * math.sin(theta)
    y = 1.4 + 0.1 * math.sin(0.7 * t_s)
    yaw = math.atan2(0.5 * w - x, 0.5 * d - z) + 0.35 * math.sin(0.5 * t_s)
    pitch = math.radians(-10.0 + 5.0 * math.sin(0.4 * t_s))
    return (x, y, z), yaw, pitch


def _clear_path(spec: SceneSpec, times_s: Sequence[float]) -> SceneSpec:
    """Drop blocks the camera's loop (``trajectory_pose``) would come too close to."""
    return clear_path(spec, [trajectory_pose(spec, t)[0] for t in times_s])


def clear_path(spec: SceneSpec, positions: Sequence[tuple[float, float, float]]) -> SceneSpec:
    """Drop blocks a camera at ``positions`` comes too close to (and legs left without a top)."""
    path_xz = np.array([[p[0], p[2]] for p in positions])
    gap = CAMERA_CLEARANCE_M
    kept, removed = [], []
    for box in spec.boxes:
        inside = (
            (path_xz[:, 0] > box.lo_m[0] - gap)
            & (path_xz[:, 0] < box.hi_m[0] + gap)
            & (path_xz[:, 1] > box.lo_m[2] - gap)
            & (path_xz[:, 1] < box.hi_m[2] + gap)
        )
        (removed if inside.any() else kept).append(box)

    def under_removed(box) -> bool:
        return any(
            r.lo_m[0] <= box.lo_m[0]
            and box.hi_m[0] <= r.hi_m[0]
            and r.lo_m[2] <= box.lo_m[2]
            and box.hi_m[2] <= r.hi_m[2]
            for r in removed
        )

    kept = [b for b in kept if not (b.kind == 'leg' and under_removed(b))]
    return dataclasses.replace(spec, boxes=tuple(kept))


def _header(types, stamp_ns: int, frame_id: str):
    time_cls, header_cls = types['builtin_interfaces/msg/Time'], types['std_msgs/msg/Header']
    stamp = time_cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))
    return header_cls(stamp=stamp, frame_id=frame_id)


def _image_msg(types, header, width: int, height: int, encoding: str, step: int, data):
    return types['sensor_msgs/msg/Image'](
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data,
    )


def _depth_msg(types, header, depth_m: np.ndarray):
    """Exact depth as 32FC1 metres, NaN where the renderer hit nothing."""
    depth = np.where(depth_m > 0, depth_m, np.nan).astype('<f4')
    height, width = depth.shape
    return _image_msg(
        types, header, width, height, '32FC1', 4 * width, depth.view(np.uint8).reshape(-1)
    )


def _camera_info_msg(types, header, spec: SceneSpec):
    info = types['sensor_msgs/msg/CameraInfo']
    roi = types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    k = spec.K
    p = np.zeros((3, 4))
    p[:, :3] = k
    return info(
        header=header,
        height=spec.height,
        width=spec.width,
        distortion_model='plumb_bob',
        d=np.zeros(5),
        k=k.ravel().astype(np.float64),
        r=np.eye(3).ravel(),
        p=p.ravel(),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def write_synthetic_bag(
    path: str | os.PathLike,
    n_frames: int = 30,
    width: int = 640,
    height: int = 480,
    *,
    encodings: Sequence[str] = ('rgb8',),
    storage: str = 'mcap',
    compressed: bool = False,
    write_depth: bool = False,
    rate_hz: float = 10.0,
    start_ns: int = DEFAULT_START_NS,
    seed: int = 0,
    frame_id: str = 'camera_optical_frame',
    image_topic: str = '/camera/image_raw',
    info_topic: str = '/camera/camera_info',
    depth_topic: str = '/camera/depth_gt',
    jpeg_quality: int = 90,
    hfov_deg: float | tuple[float, float] | None = None,
) -> SyntheticBagInfo:
    """Write a rosbag2 directory at ``path`` (which must not exist yet).

    With several ``encodings`` frame ``i`` uses ``encodings[i % len(encodings)]`` on the
    same topic, as a stream whose driver changes format would. The bag is assembled in a
    temporary sibling directory and moved into place, so ``path`` is never half-written.
    ``hfov_deg``: the camera's horizontal field of view, fixed or a (low, high) range the
    seed draws one from (None: the generator's default range).
    """
    path = Path(path)
    if path.exists():
        raise ConfigError(f'bag path {str(path)!r} exists already; rosbag2 never overwrites')
    if storage not in STORAGES:
        raise ConfigError(f'storage must be one of {tuple(STORAGES)}, got {storage!r}')
    if n_frames < 1 or rate_hz <= 0:
        raise ConfigError(f'need n_frames >= 1 and rate_hz > 0, got {n_frames}, {rate_hz}')
    encodings = tuple(encodings)
    if not encodings:
        raise ConfigError('encodings must name at least one encoding')
    for encoding in encodings:
        if encoding not in ENCODINGS:
            raise ConfigError(f'encoding must be one of {ENCODINGS}, got {encoding!r}')
        if encoding.startswith('yuv422') and width % 2:
            raise ConfigError(f'{encoding} needs an even image width, got width={width}')

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    period_ns = int(round(1e9 / rate_hz))
    stamps = [int(start_ns) + i * period_ns for i in range(n_frames)]
    times_s = [(s - stamps[0]) * 1e-9 for s in stamps]
    room = _clear_path(sample_scene(seed, width, height, hfov_deg=hfov_deg), times_s)

    topics = {image_topic: 'sensor_msgs/msg/Image', info_topic: 'sensor_msgs/msg/CameraInfo'}
    if compressed:
        topics[f'{image_topic}/compressed'] = 'sensor_msgs/msg/CompressedImage'
    if write_depth:
        topics[depth_topic] = 'sensor_msgs/msg/Image'

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
    try:
        with Writer(staging / path.name, version=8, storage_plugin=STORAGES[storage]) as writer:
            conns = {
                topic: writer.add_connection(topic, msgtype, typestore=typestore)
                for topic, msgtype in topics.items()
            }
            for i, (stamp, t_s) in enumerate(zip(stamps, times_s)):
                position, yaw, pitch = trajectory_pose(room, t_s)
                frame = render(
                    room.with_camera(position, yaw, pitch), noise_seed=seed * 100003 + i
                )
                header = _header(types, stamp, frame_id)
                encoding = encodings[i % len(encodings)]
                data, step = encode_image(frame.rgb, encoding)
                image = _image_msg(types, header, width, height, encoding, step, data)
                writer.write(
                    conns[image_topic],
                    stamp,
                    typestore.serialize_cdr(image, 'sensor_msgs/msg/Image'),
                )
                info = _camera_info_msg(types, header, room)
                writer.write(
                    conns[info_topic],
                    stamp,
                    typestore.serialize_cdr(info, 'sensor_msgs/msg/CameraInfo'),
                )
                if compressed:
                    ok, jpeg = cv2.imencode(
                        '.jpg', frame.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
                    )
                    if not ok:
                        raise ConfigError(f'JPEG encoding failed at quality {jpeg_quality}')
                    msg = types['sensor_msgs/msg/CompressedImage'](
                        header=header, format='rgb8; jpeg compressed bgr8', data=jpeg.ravel()
                    )
                    writer.write(
                        conns[f'{image_topic}/compressed'],
                        stamp,
                        typestore.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage'),
                    )
                if write_depth:
                    msg = _depth_msg(types, header, frame.depth_m)
                    writer.write(
                        conns[depth_topic],
                        stamp,
                        typestore.serialize_cdr(msg, 'sensor_msgs/msg/Image'),
                    )
        os.rename(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SyntheticBagInfo(
        path=path,
        n_frames=n_frames,
        width=width,
        height=height,
        K=room.K,
        topics=topics,
        stamps_ns=stamps,
    )


def write_rooms_bag(
    path: str | os.PathLike,
    seeds: Sequence[int],
    width: int,
    height: int,
    *,
    hfov_deg: float,
    camera_height_m: tuple[float, float] = CAMERA_HEIGHT_RANGE_M,
    start_ns: int = DEFAULT_START_NS,
    rate_hz: float = 10.0,
    frame_id: str = 'camera_optical_frame',
    image_topic: str = '/camera/image_raw',
    info_topic: str = '/camera/camera_info',
    depth_topic: str = '/camera/depth_gt',
) -> SyntheticBagInfo:
    """Write one frame of each room ``seeds`` names, seen through one lens, to a rosbag2.

    A held-out test set as a camera would record it: rgb8 images, their CameraInfo (the lens
    of ``hfov_deg``) and the exact depth (32FC1 metres, NaN invalid) on ``depth_topic``, all
    stamped alike; ``moa-depth bag`` then runs over it exactly as over a recording.
    """
    path = Path(path)
    if path.exists():
        raise ConfigError(f'bag path {str(path)!r} exists already; rosbag2 never overwrites')
    if not seeds:
        raise ConfigError('seeds must name at least one room')
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    period_ns = int(round(1e9 / rate_hz))
    stamps = [int(start_ns) + i * period_ns for i in range(len(seeds))]
    topics = {
        image_topic: 'sensor_msgs/msg/Image',
        info_topic: 'sensor_msgs/msg/CameraInfo',
        depth_topic: 'sensor_msgs/msg/Image',
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
    try:
        with Writer(staging / path.name, version=8, storage_plugin=STORAGES['mcap']) as writer:
            conns = {
                topic: writer.add_connection(topic, msgtype, typestore=typestore)
                for topic, msgtype in topics.items()
            }
            for seed, stamp in zip(seeds, stamps):
                spec = sample_scene(
                    int(seed), width, height, hfov_deg=hfov_deg, camera_height_m=camera_height_m
                )
                frame = render(spec)
                header = _header(types, stamp, frame_id)
                data, step = encode_image(frame.rgb, 'rgb8')
                image = _image_msg(types, header, width, height, 'rgb8', step, data)
                truth = _depth_msg(types, header, frame.depth_m)
                info = _camera_info_msg(types, header, spec)
                for topic, msg, msgtype in (
                    (info_topic, info, 'sensor_msgs/msg/CameraInfo'),
                    (image_topic, image, 'sensor_msgs/msg/Image'),
                    (depth_topic, truth, 'sensor_msgs/msg/Image'),
                ):
                    writer.write(conns[topic], stamp, typestore.serialize_cdr(msg, msgtype))
        os.rename(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SyntheticBagInfo(
        path=path,
        n_frames=len(seeds),
        width=width,
        height=height,
        K=None,  # the principal point differs from room to room: each CameraInfo has its own
        topics=topics,
        stamps_ns=stamps,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.data.synthetic_bag OUT``: write a synthetic camera bag."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('path', help='bag directory to create (must not exist)')
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--rate-hz', type=float, default=10.0)
    parser.add_argument('--storage', choices=tuple(STORAGES), default='mcap')
    parser.add_argument('--encoding', action='append', choices=ENCODINGS)
    parser.add_argument('--compressed', action='store_true', help='add a JPEG topic')
    parser.add_argument('--depth', action='store_true', help='add ground-truth depth (32FC1)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    info = write_synthetic_bag(
        args.path,
        args.frames,
        args.width,
        args.height,
        encodings=tuple(args.encoding or ('rgb8',)),
        storage=args.storage,
        compressed=args.compressed,
        write_depth=args.depth,
        rate_hz=args.rate_hz,
        seed=args.seed,
    )
    print(f'wrote {info.n_frames} frames to {info.path}: ' + ', '.join(sorted(info.topics)))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
