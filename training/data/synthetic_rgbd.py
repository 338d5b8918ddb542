"""A synthetic RGB-D recording of a ground robot, as ``realsense2_camera`` would record it.

The fine-tuning demonstration (``make finetune-demo``) needs an environment the quickstart
model has never seen, recorded the way a robot team records theirs. Here that is a few
procedural rooms (seeds outside every synthetic split), driven through twice on loops at a
fixed camera mount 0.2-0.5 m above the floor (the quickstart trains at 1.3-1.5 m), through a
RealSense-like 69 degree lens, with depth aligned to the colour camera
(``align_depth.enable:=true``: same frame_id, same size) and a depth sensor's faults:

- disparity quantisation and noise (stereo: depth error grows with the square of depth);
- range limits (nothing nearer than ``min_range_m`` or beyond ``max_range_m``);
- holes: the occlusion shadow left of near objects (the projector / second imager cannot
  see there), blotches where matching fails, scattered single-pixel dropouts;
- flying pixels: at depth edges a pixel mixes foreground and background into a depth no
  surface has;
- millimetre rounding of 16UC1.

Colour and depth are separate streams: depth stamps lag colour by a few milliseconds and
each stream loses a few frames, so the pairing has something to count. The depth topic is
16UC1 ``sensor_msgs/Image``, 32FC1, or ``CompressedImage`` in image_transport's
compressedDepth format (PNG or RVL, ``training.data.compressed_depth``) on
``<depth topic>/compressedDepth``, as ``ros2 bag record`` stores a compressed transport.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
import shutil
import tempfile
from typing import Sequence

import cv2
import numpy as np
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from moa_depth_ros.errors import ConfigError
from training.data.compressed_depth import encode_compressed_depth
from training.data.synthetic import CAMERA_CLEARANCE_M, SceneSpec, render, sample_scene
from training.data.synthetic_bag import (
    DEFAULT_START_NS,
    STORAGES,
    _camera_info_msg,
    _header,
    _image_msg,
    clear_path,
    encode_image,
)

#: Depth formats of a recording: Image encodings, compressedDepth codecs, or none (RGB only).
DEPTH_FORMATS = ('16UC1', '32FC1', 'compressedDepth png', 'compressedDepth rvl', 'none')
#: Colour as image_transport's compressed transport (CompressedImage on <topic>/compressed).
COMPRESSED_COLOUR = ('jpeg', 'png')
#: Rooms of the demonstration environment: seeds beyond every synthetic split's range
#: (``training.data.splits.SYNTHETIC_SEED_RANGES`` ends at 1,200,000).
ENVIRONMENT_SEED = 5_000_000
COLOR_TOPIC = '/camera/color/image_raw'
INFO_TOPIC = '/camera/color/camera_info'
DEPTH_TOPIC = '/camera/aligned_depth_to_color/image_raw'
DEPTH_INFO_TOPIC = '/camera/aligned_depth_to_color/camera_info'
OPTICAL_FRAME = 'camera_color_optical_frame'


@dataclasses.dataclass(frozen=True)
class SensorModel:
    """A RealSense-D435-like stereo depth sensor (the numbers are of that class of camera)."""

    min_range_m: float = 0.28
    max_range_m: float = 10.0
    #: Stereo baseline and the depth imager's focal length (848 px wide, 87 degrees).
    baseline_m: float = 0.05
    disparity_focal_px: float = 430.0
    disparity_noise_px: float = 0.06
    disparity_step_px: float = 1.0 / 16.0
    #: Share of the image lost to blotches where stereo matching fails.
    blotch_fraction: float = 0.03
    speckle_fraction: float = 0.004
    #: Chance that a pixel on a depth edge mixes foreground and background.
    flying_pixel_prob: float = 0.5

    def corrupt(self, depth_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Exact depth (0 = none) -> what the sensor reports, float32 metres (0 = none)."""
        depth = np.asarray(depth_m, np.float32)
        h, w = depth.shape
        valid = depth > 0
        fb = self.baseline_m * self.disparity_focal_px
        disparity = np.where(valid, fb / np.where(valid, depth, 1.0), 0.0)
        disparity += rng.normal(0.0, self.disparity_noise_px, depth.shape)
        disparity = np.round(disparity / self.disparity_step_px) * self.disparity_step_px
        out = np.where(valid & (disparity > 0), fb / np.maximum(disparity, 1e-6), 0.0)
        out = out.astype(np.float32)
        # Flying pixels: a pixel next to a depth jump takes a mix of both sides.
        padded = np.pad(depth, 1, mode='edge')
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            other = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            edge = valid & (other > 0) & (np.abs(other - depth) > 0.1 * depth)
            mix = edge & (rng.uniform(size=depth.shape) < self.flying_pixel_prob / 2)
            t = rng.uniform(0.2, 0.8, depth.shape).astype(np.float32)
            out = np.where(mix, t * depth + (1 - t) * other, out)
        # Occlusion shadow: background just left of a nearer surface is not seen by both.
        shadow = np.zeros(depth.shape, bool)
        scale = w / 848.0  # the shadow's width in this image's pixels
        for shift in range(1, max(2, int(round(12 * scale * 2)))):
            right = np.zeros_like(depth)
            right[:, :-shift] = depth[:, shift:]
            width_px = fb * scale * (1.0 / np.maximum(right, 1e-3) - 1.0 / np.maximum(depth, 1e-3))
            shadow |= valid & (right > 0) & (right < 0.9 * depth) & (shift <= width_px)
        # Blotches: a smooth random field over a threshold; speckle: single pixels.
        field = cv2.resize(
            rng.standard_normal((max(2, h // 16), max(2, w // 16))).astype(np.float32),
            (w, h),
            interpolation=cv2.INTER_CUBIC,
        )
        blotch = field > np.quantile(field, 1.0 - self.blotch_fraction)
        speckle = rng.uniform(size=depth.shape) < self.speckle_fraction
        in_range = (out >= self.min_range_m) & (out <= self.max_range_m)
        out[~valid | shadow | blotch | speckle | ~in_range] = 0.0
        return out


@dataclasses.dataclass(frozen=True)
class RobotDrive:
    """Where the robot drives: rooms, laps, rate, lens and camera mount."""

    rooms: int = 4
    laps: int = 2
    seconds_per_room: float = 16.0
    rate_hz: float = 15.0
    width: int = 320
    height: int = 240
    hfov_deg: float = 69.0
    camera_height_m: tuple[float, float] = (0.2, 0.5)
    first_seed: int = ENVIRONMENT_SEED
    #: Depth stamps lag colour by this much; each stream loses this share of frames.
    depth_lag_s: float = 0.003
    drop_fraction: float = 0.02

    def room_seeds(self) -> list[int]:
        return [self.first_seed + i for i in range(self.rooms)]


def robot_pose(
    spec: SceneSpec, t_s: float, lap: int, mount_m: float
) -> tuple[tuple[float, float, float], float, float]:
    """Camera (position, yaw, pitch) of a robot driving a loop around a room.

    Lap 0 drives counter-clockwise on a wide loop, lap 1 clockwise on a narrower one from
    another start, so a revisit sees the room from new places. The camera looks ahead along
    the path, turned a little towards the room's middle, nearly level.
    """
    w, _, d = spec.room_size_m
    margin = CAMERA_CLEARANCE_M + 0.05
    shrink = 0.0 if lap % 2 == 0 else 0.35
    rx = max(0.05, 0.5 * w - margin - 0.2 - shrink)
    rz = max(0.05, 0.5 * d - margin - 0.2 - shrink)
    direction = 1.0 if lap % 2 == 0 else -1.0
    theta = direction * 0.35 * t_s + spec.seed % 5 + 1.7 * lap
    x, z = 0.5 * w + rx * math.cos(theta), 0.5 * d + rz * math.sin(theta)
    tangent = math.atan2(-rx * math.sin(theta) * direction, rz * math.cos(theta) * direction)
    to_centre = math.atan2(0.5 * w - x, 0.5 * d - z)
    blend = 0.35 + 0.25 * math.sin(0.4 * t_s + lap)
    yaw = math.atan2(
        (1 - blend) * math.sin(tangent) + blend * math.sin(to_centre),
        (1 - blend) * math.cos(tangent) + blend * math.cos(to_centre),
    )
    pitch = math.radians(2.0 * math.sin(0.5 * t_s))
    return (x, mount_m, z), yaw, pitch


@dataclasses.dataclass
class RecordingInfo:
    """What ``write_rgbd_recording`` wrote."""

    paths: list[Path]
    colour_frames: int
    depth_frames: int
    rooms: list[int]
    mount_heights_m: list[float]


def _depth_message(types, header, depth_m: np.ndarray, depth_format: str):
    if depth_format.startswith('compressedDepth'):
        codec = depth_format.split()[1]
        fmt, data = encode_compressed_depth(depth_m, '16UC1', codec)
        msg = types['sensor_msgs/msg/CompressedImage'](
            header=header, format=fmt, data=np.frombuffer(data, np.uint8)
        )
        return msg, 'sensor_msgs/msg/CompressedImage'
    if depth_format == '16UC1':
        mm = np.clip(np.rint(depth_m * 1000.0), 0, 65535).astype('<u2')
        data = mm.view(np.uint8).reshape(-1)
        step = 2 * mm.shape[1]
    else:
        metres = np.where(depth_m > 0, depth_m, np.nan).astype('<f4')
        data = metres.view(np.uint8).reshape(-1)
        step = 4 * metres.shape[1]
    h, w = depth_m.shape
    return _image_msg(types, header, w, h, depth_format, step, data), 'sensor_msgs/msg/Image'


def write_rgbd_recording(
    paths: Sequence[str | os.PathLike],
    depth_formats: Sequence[str],
    drive: RobotDrive = RobotDrive(),
    *,
    sensor: SensorModel = SensorModel(),
    storage: str = 'mcap',
    colour_encoding: str = 'rgb8',
    start_ns: int = DEFAULT_START_NS,
    seed: int = 0,
    first_lap: int = 0,
) -> RecordingInfo:
    """Render one drive and write it to one bag per entry of ``depth_formats``.

    Every bag holds the same colour frames (``colour_encoding``, or 'jpeg' / 'png' for a
    CompressedImage on ``<topic>/compressed``) and CameraInfo; the depth differs only in how
    it is stored ('none': an RGB-only recording). ``first_lap`` > 0 starts the loops where a
    later visit would (an RGB-only drive on other paths through the same rooms).
    """
    paths = [Path(p) for p in paths]
    if len(paths) != len(depth_formats):
        raise ConfigError('write_rgbd_recording needs one path per depth format')
    for path, fmt in zip(paths, depth_formats):
        if fmt not in DEPTH_FORMATS:
            raise ConfigError(f'depth format must be one of {DEPTH_FORMATS}, got {fmt!r}')
        if path.exists():
            raise ConfigError(f'bag path {str(path)!r} exists already; rosbag2 never overwrites')
    if storage not in STORAGES:
        raise ConfigError(f'storage must be one of {tuple(STORAGES)}, got {storage!r}')
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    rng = np.random.default_rng([seed, 77])
    period_ns = int(round(1e9 / drive.rate_hz))
    frames_per_room = int(round(drive.seconds_per_room * drive.rate_hz))
    lo, hi = drive.camera_height_m
    mounts = [float(rng.uniform(lo, hi)) for _ in drive.room_seeds()]
    rooms = {}
    for room_seed in drive.room_seeds():
        times = [i / drive.rate_hz for i in range(frames_per_room)]
        spec = sample_scene(room_seed, drive.width, drive.height, hfov_deg=drive.hfov_deg)
        poses = [
            robot_pose(spec, t, lap, 0.3)
            for lap in range(first_lap, first_lap + drive.laps)
            for t in times
        ]
        rooms[room_seed] = clear_path(spec, [p[0] for p in poses])

    compressed = colour_encoding in COMPRESSED_COLOUR
    colour_topic = COLOR_TOPIC + ('/compressed' if compressed else '')
    colour_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    staging_dirs, writers, conns = [], [], []
    try:
        for path, fmt in zip(paths, depth_formats):
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
            staging_dirs.append(staging)
            writer = Writer(staging / path.name, version=8, storage_plugin=STORAGES[storage])
            writer.open()
            writers.append(writer)
            topics = {colour_topic: colour_type, INFO_TOPIC: 'sensor_msgs/msg/CameraInfo'}
            if fmt != 'none':
                if fmt.startswith('compressedDepth'):
                    topics[DEPTH_TOPIC + '/compressedDepth'] = 'sensor_msgs/msg/CompressedImage'
                else:
                    topics[DEPTH_TOPIC] = 'sensor_msgs/msg/Image'
                topics[DEPTH_INFO_TOPIC] = 'sensor_msgs/msg/CameraInfo'
            conns.append(
                {
                    topic: writer.add_connection(topic, msgtype, typestore=typestore)
                    for topic, msgtype in topics.items()
                }
            )
        colour_count = depth_count = 0
        frame = 0
        for lap in range(first_lap, first_lap + drive.laps):
            for room_index, room_seed in enumerate(drive.room_seeds()):
                spec = rooms[room_seed]
                for i in range(frames_per_room):
                    t_s = i / drive.rate_hz
                    position, yaw, pitch = robot_pose(spec, t_s, lap, mounts[room_index])
                    stamp = int(start_ns) + frame * period_ns
                    frame += 1
                    view = spec.with_camera(position, yaw, pitch)
                    sample = render(
                        view, noise_seed=seed * 1_000_003 + frame, depth_range_m=(0.01, 100.0)
                    )
                    keep_colour = rng.uniform() >= drive.drop_fraction
                    keep_depth = rng.uniform() >= drive.drop_fraction
                    depth = sensor.corrupt(sample.depth_m, rng)
                    header = _header(types, stamp, OPTICAL_FRAME)
                    depth_stamp = stamp + int(drive.depth_lag_s * 1e9)
                    depth_header = _header(types, depth_stamp, OPTICAL_FRAME)
                    info = _camera_info_msg(types, header, view)
                    depth_info = _camera_info_msg(types, depth_header, view)
                    if colour_encoding in COMPRESSED_COLOUR:
                        ok, payload = cv2.imencode(f'.{colour_encoding}', sample.rgb[..., ::-1])
                        if not ok:
                            raise ConfigError(f'{colour_encoding} encoding failed')
                        colour = types['sensor_msgs/msg/CompressedImage'](
                            header=header,
                            format=f'rgb8; {colour_encoding} compressed bgr8',
                            data=payload.ravel(),
                        )
                    else:
                        data, step = encode_image(sample.rgb, colour_encoding)
                        colour = _image_msg(
                            types, header, drive.width, drive.height, colour_encoding, step, data
                        )
                    colour_raw = typestore.serialize_cdr(colour, colour_type)
                    info_raw = typestore.serialize_cdr(info, 'sensor_msgs/msg/CameraInfo')
                    depth_info_raw = typestore.serialize_cdr(
                        depth_info, 'sensor_msgs/msg/CameraInfo'
                    )
                    colour_count += int(keep_colour)
                    depth_count += int(keep_depth)
                    for writer, fmt, c in zip(writers, depth_formats, conns):
                        writer.write(c[INFO_TOPIC], stamp, info_raw)
                        if keep_colour:
                            writer.write(c[colour_topic], stamp, colour_raw)
                        if fmt == 'none' or not keep_depth:
                            continue
                        msg, msgtype = _depth_message(types, depth_header, depth, fmt)
                        topic = DEPTH_TOPIC + (
                            '/compressedDepth' if fmt.startswith('compressedDepth') else ''
                        )
                        writer.write(c[DEPTH_INFO_TOPIC], depth_stamp, depth_info_raw)
                        writer.write(c[topic], depth_stamp, typestore.serialize_cdr(msg, msgtype))
        for writer in writers:
            writer.close()
        writers = []
        for staging, path in zip(staging_dirs, paths):
            os.rename(staging / path.name, path)
    finally:
        for writer in writers:
            writer.close()
        for staging in staging_dirs:
            shutil.rmtree(staging, ignore_errors=True)
    return RecordingInfo(
        paths=paths,
        colour_frames=colour_count,
        depth_frames=depth_count,
        rooms=drive.room_seeds(),
        mount_heights_m=mounts,
    )
