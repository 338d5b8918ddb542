"""A robot's own RGB-D recording (rosbag2) as a dataset beside NYU, KITTI and the rooms.

``load_recording(config, image_hw)`` reads the bag twice through the package's bag reader
(``moa_depth_ros.bag.recovery.open_input``: MCAP or sqlite3, an unfinished recording read as
far as it goes, as ``moa-depth bag`` does):

1. an index: every colour, depth and CameraInfo message's stamp, frame_id and size, and a
   small grey thumbnail of each colour frame. From it, before anything is trained:

   - registration: depth in the colour camera's optical frame (equal frame_ids) at the
     colour size or an integer binning of it, else ``RegistrationError`` in one line naming
     the usual fix (``align_depth.enable:=true``, depth_image_proc ``register``);
   - pairing: each colour frame takes the depth frame nearest in header stamp, within half
     a colour frame period (one depth frame serves at most one colour frame); unpaired
     frames of both streams are counted and reported;
   - blocks: the paired frames in time order are split into training, validation and a
     held-out block at the end (``holdout`` of the frames), contiguous, with ``guard_s``
     of frames dropped at each boundary (consecutive frames are near duplicates: a random
     split would score the model on copies of its training frames);
   - keyframes: inside each block a frame is kept when its thumbnail differs from the last
     kept one by more than ``keyframe_change`` (mean absolute difference, grey in [0, 1]),
     so a slow robot at 30 Hz does not train on thousands of copies of one view.

2. the kept frames, decoded: colour in every encoding the node accepts and CompressedImage
   jpeg/png (``moa_depth_ros.frame.msgs``); depth as 16UC1 millimetres (0 = none), 32FC1
   metres (NaN or 0 = none) or image_transport compressedDepth (PNG / RVL,
   ``training.data.compressed_depth``). Calibration is the colour camera_info, as the node
   reads it (``CameraModel.from_camera_info``: binning, ROI). Depth is brought to the colour
   grid (a binned depth image by nearest neighbour, never blended), then both are rectified
   as the node rectifies its input (``frame.rectify.Rectifier``: colour bilinear, depth
   nearest; ``input_rectified`` for an image_rect topic), and K is the rectified camera's.

Sensor depth is not ground truth everywhere. Masked (0 = no label): no return (0 / NaN),
depth outside [``min_depth_m``, ``max_depth_m``] (the sensor's trustworthy range: stereo
error grows with the square of depth), and pixels on a depth discontinuity: where the jump
across a pixel (between its two neighbours, in a row or a column) exceeds
``edge_jump_rel`` of its depth and ``edge_contrast`` times the depth change on either side.
That catches flying pixels (a depth sensor mixes foreground and background at an edge
into a depth no surface has) and the one-pixel band on each side of an edge where aligned
depth is least trustworthy (the alignment reprojects depth with the depth camera's
calibration), while a smooth slope, even a floor seen at a grazing angle from a low robot,
is kept: its depth changes as much on either side as across the pixel.

Samples follow ``training.data.base``: the training split's image is resized once to the
network input (``resize_to_input``, the node's resize) and its depth subsampled to a label
grid of ``label_scale`` times the input (nearest, K scaled with it); validation and held-out
samples keep the camera's resolution, so they can be scored through ``DepthPipeline``
exactly as the node runs. The canonical-camera conversion then happens where it happens for
every dataset: in the training loop and in the pipeline, from K through
``frame.scale.focal_at_input_px``.
"""

from __future__ import annotations

import bisect
import dataclasses
import pathlib
import struct
import sys
from typing import Any, Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from moa_depth_ros.errors import ConfigError, InvalidImageError, MoaDepthError
from moa_depth_ros.frame import msgs
from moa_depth_ros.frame.geometry import CameraModel
from moa_depth_ros.frame.pipeline import resize_to_input
from training.data.augment import AugmentConfig, hflip, photometric
from training.data.base import DatasetError, make_sample
from training.data.compressed_depth import decode_compressed_depth, is_compressed_depth

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
THUMB_WH = (32, 24)
SPLIT_BLOCKS = {'train': 'train', 'val': 'val', 'test': 'holdout'}
REGISTRATION_FIX = (
    'record depth aligned to colour (realsense2_camera align_depth.enable:=true, or '
    'depth_image_proc register with the colour camera_info)'
)


class RegistrationError(DatasetError):
    """Depth that is not registered to the colour camera (other frame, other grid)."""


@dataclasses.dataclass(frozen=True)
class RecordingConfig:
    """Where a recording is and how it becomes training data (see the module docstring)."""

    bag: str = ''
    image_topic: str = '/camera/color/image_raw'
    depth_topic: str = '/camera/aligned_depth_to_color/image_raw'
    info_topic: str = '/camera/color/camera_info'
    holdout: float = 0.2
    val: float = 0.05
    guard_s: float = 1.0
    min_depth_m: float = 0.3
    max_depth_m: float = 10.0
    edge_jump_rel: float = 0.05
    edge_contrast: float = 3.0
    keyframe_change: float = 0.02
    #: Largest stamp difference of a pair; 0 = half the colour frame period (median).
    max_pair_dt_s: float = 0.0
    label_scale: float = 2.0
    #: The colour topic is already rectified (image_proc's image_rect): P is its camera, as
    #: the node's ``input_rectified`` parameter declares it.
    input_rectified: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 0.9:
            raise ConfigError(f'holdout must be in (0, 0.9), got {self.holdout!r}')
        if not 0.0 < self.val < 0.5 or self.holdout + self.val >= 0.95:
            raise ConfigError(
                f'val must be in (0, 0.5) with holdout + val < 0.95, got val={self.val!r} '
                f'holdout={self.holdout!r}'
            )
        if not 0.0 < self.min_depth_m < self.max_depth_m:
            raise ConfigError(
                f'need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}'
            )
        for name in ('guard_s', 'keyframe_change', 'max_pair_dt_s', 'edge_jump_rel'):
            if getattr(self, name) < 0:
                raise ConfigError(f'{name} must be >= 0, got {getattr(self, name)!r}')
        if self.label_scale <= 0:
            raise ConfigError(f'label_scale must be > 0, got {self.label_scale!r}')

    @property
    def depth_range_m(self) -> tuple[float, float]:
        return (float(self.min_depth_m), float(self.max_depth_m))


@dataclasses.dataclass
class _Entry:
    """One colour or depth message of the index."""

    ordinal: int  # its position among the messages of its topic
    stamp_ns: int
    frame_id: str
    size_wh: tuple[int, int]
    thumb: np.ndarray | None = None
    info_index: int = -1  # colour: the CameraInfo it goes with


@dataclasses.dataclass
class Frame:
    """A decoded, masked frame: uint8 RGB, depth metres (0 = none), K, both on one grid."""

    rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    stamp_ns: int
    block: str


@dataclasses.dataclass
class Recording:
    """What was read: the decoded frames of each block and the report of how."""

    config: RecordingConfig
    frames: dict[str, list[Frame]]
    report: dict[str, Any]


# ---------------------------------------------------------------------------- topics


def resolve_topic(topics: dict[str, str], requested: str, kind: str) -> str:
    """Return the recorded topic for ``requested``: itself, or its image_transport sibling.

    ``ros2 bag record`` of a compressed transport stores ``<topic>/compressed`` (colour) or
    ``<topic>/compressedDepth`` (depth); users name the base topic, as image_transport does.
    """
    suffixes = {'colour': ('', '/compressed'), 'depth': ('', '/compressedDepth', '/compressed')}
    wanted = (IMAGE, COMPRESSED)
    if kind == 'info':
        suffixes, wanted = {'info': ('',)}, (CAMERA_INFO,)
    for suffix in suffixes[kind]:
        topic = requested.rstrip('/') + suffix
        if topics.get(topic) in wanted:
            return topic
    listed = ', '.join(f'{t} ({ty.rsplit("/", 1)[-1]})' for t, ty in sorted(topics.items()))
    raise ConfigError(
        f'the recording has no {kind} topic {requested!r}'
        + (' (nor its compressed transport)' if kind != 'info' else '')
        + f'; its topics: {listed or "none"}'
    )


# ---------------------------------------------------------------------------- message fields


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _png_size(payload: bytes) -> tuple[int, int]:
    if payload[:8] != b'\x89PNG\r\n\x1a\n' or len(payload) < 24:
        raise InvalidImageError('compressedDepth PNG payload has no PNG header')
    width, height = struct.unpack('>II', payload[16:24])
    return int(width), int(height)


def depth_size_wh(msg: Any) -> tuple[int, int]:
    """(width, height) of a depth message without decoding its pixels."""
    if hasattr(msg, 'encoding'):
        return int(msg.width), int(msg.height)
    from training.data.compressed_depth import HEADER, RVL_SIZE, parse_format

    _, codec = parse_format(msg.format)
    data = msg.data
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    payload = raw[HEADER.size :]
    if codec == 'png':
        return _png_size(payload)
    if len(payload) < RVL_SIZE.size:
        raise InvalidImageError('compressedDepth RVL payload has no size header')
    cols, rows = RVL_SIZE.unpack_from(payload, 0)
    return int(cols), int(rows)


def decode_depth_msg(msg: Any) -> np.ndarray:
    """Decode any depth message the recordings may hold to float32 metres, NaN/0 = none."""
    if hasattr(msg, 'encoding'):
        return msgs.decode_depth(msg)
    if not is_compressed_depth(getattr(msg, 'format', '')):
        raise InvalidImageError(
            f'depth CompressedImage format {msg.format!r} is not compressedDepth '
            f'(a lossy jpeg/png of depth cannot be trained on)'
        )
    return decode_compressed_depth(msg)


def _thumb(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, THUMB_WH, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


# ---------------------------------------------------------------------------- pure steps


def check_registration(colour: _Entry, depth: _Entry) -> tuple[int, int]:
    """Return the depth binning (bx, by) of a pair, or raise RegistrationError (one line)."""
    if colour.frame_id != depth.frame_id:
        raise RegistrationError(
            f'depth is in frame {depth.frame_id!r}, colour in {colour.frame_id!r}: the depth is '
            f'not registered to the colour camera; {REGISTRATION_FIX}'
        )
    (cw, ch), (dw, dh) = colour.size_wh, depth.size_wh
    if dw <= 0 or dh <= 0 or cw % dw or ch % dh:
        raise RegistrationError(
            f'depth is {dw}x{dh}, colour {cw}x{ch}: not the colour size or an integer binning '
            f'of it; {REGISTRATION_FIX}'
        )
    return cw // dw, ch // dh


def pair_by_stamp(
    colour_ns: Sequence[int], depth_ns: Sequence[int], max_dt_ns: int
) -> list[tuple[int, int]]:
    """Pair sorted stamps: each colour with its nearest depth within ``max_dt_ns``.

    One depth frame serves at most one colour frame (the nearer one keeps it). Returns
    (colour index, depth index) pairs in colour order.
    """
    best: dict[int, tuple[int, int]] = {}  # depth index -> (|dt|, colour index)
    for ci, stamp in enumerate(colour_ns):
        j = bisect.bisect_left(depth_ns, stamp)
        candidates = [k for k in (j - 1, j) if 0 <= k < len(depth_ns)]
        if not candidates:
            continue
        k = min(candidates, key=lambda k: abs(depth_ns[k] - stamp))
        dt = abs(depth_ns[k] - stamp)
        if dt <= max_dt_ns and (k not in best or dt < best[k][0]):
            best[k] = (dt, ci)
    return sorted((ci, k) for k, (_, ci) in best.items())


def split_blocks(n: int, holdout: float, val: float, guard: int) -> dict[str, range]:
    """Contiguous blocks of ``n`` time-ordered frames: train | val | holdout, guards between.

    The held-out block is the last ``holdout`` share of the frames, validation the ``val``
    share before it; ``guard`` frames are dropped at each of the two boundaries.
    """
    n_hold = max(1, int(round(holdout * n)))
    n_val = max(1, int(round(val * n)))
    hold_start = n - n_hold
    val_stop = hold_start - guard
    val_start = val_stop - n_val
    train_stop = val_start - guard
    if train_stop < 1:
        raise DatasetError(
            f'{n} paired frames are too few for a training block before validation '
            f'({n_val}) and held-out ({n_hold}) blocks with {guard}-frame guards; record longer'
        )
    return {
        'train': range(0, train_stop),
        'val': range(val_start, val_stop),
        'holdout': range(hold_start, n),
    }


def select_keyframes(thumbs: Sequence[np.ndarray], change: float) -> list[int]:
    """Return the frames whose thumbnail differs from the last kept one by more than ``change``."""
    kept: list[int] = []
    last = None
    for i, thumb in enumerate(thumbs):
        if last is None or float(np.mean(np.abs(thumb - last))) > change:
            kept.append(i)
            last = thumb
    return kept


def edge_mask(depth_m: np.ndarray, jump_rel: float, contrast: float) -> np.ndarray:
    """Pixels on a depth discontinuity (see the module docstring): True = drop."""
    z = np.asarray(depth_m, np.float32)
    h, w = z.shape
    out = np.zeros((h, w), bool)
    padded = np.pad(z, 2, mode='constant')
    for axis in (0, 1):

        def at(offset: int, axis: int = axis) -> np.ndarray:
            if axis == 1:
                return padded[2 : 2 + h, 2 + offset : 2 + offset + w]
            return padded[2 + offset : 2 + offset + h, 2 : 2 + w]

        a2, a1, b1, b2 = at(-2), at(-1), at(1), at(2)
        valid = (z > 0) & (a1 > 0) & (b1 > 0)
        jump = np.abs(b1 - a1)
        side = np.where(a2 > 0, np.abs(a1 - a2), 0.0) + np.where(b2 > 0, np.abs(b2 - b1), 0.0)
        out |= valid & (jump > jump_rel * z) & (jump > contrast * side)
    return out


def clean_depth(depth_m: np.ndarray, config: RecordingConfig) -> tuple[np.ndarray, dict]:
    """Apply the masks; return (depth metres, 0 = none) and the pixel counts of each mask."""
    z = np.nan_to_num(np.asarray(depth_m, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    none = z <= 0
    z[none] = 0.0
    out_of_range = ~none & ((z < config.min_depth_m) | (z > config.max_depth_m))
    z[out_of_range] = 0.0
    edges = (
        edge_mask(z, config.edge_jump_rel, config.edge_contrast) if config.edge_jump_rel else None
    )
    if edges is not None:
        z[edges] = 0.0
    counts = {
        'pixels': int(z.size),
        'no_return': int(none.sum()),
        'out_of_range': int(out_of_range.sum()),
        'depth_edge': int(edges.sum()) if edges is not None else 0,
        'kept': int((z > 0).sum()),
    }
    return z, counts


# ---------------------------------------------------------------------------- reading


def _progress(total: int, enabled: bool, desc: str):
    import tqdm

    return tqdm.tqdm(total=total, disable=not enabled, desc=desc, unit='msg', file=sys.stderr)


def load_recording(config: RecordingConfig, image_hw: tuple[int, int]) -> Recording:
    """Read, pair, split and decode a recording (see the module docstring)."""
    from rosbags.typesys import Stores, get_typestore

    from moa_depth_ros.bag.recovery import open_input

    bag = pathlib.Path(config.bag).expanduser()
    if not bag.exists():
        raise ConfigError(f'recording {str(bag)!r} does not exist')

    # -- pass 1: the index
    colour: list[_Entry] = []
    depth: list[_Entry] = []
    infos: list[Any] = []
    undecodable: dict[str, int] = {}
    with open_input(bag) as reader:
        distro = (
            reader.ros_distro
            if reader.ros_distro in ('humble', 'iron', 'jazzy', 'kilted')
            else 'humble'
        )
        typestore = get_typestore(getattr(Stores, f'ROS2_{distro.upper()}'))
        topics = {c.topic: c.msgtype for c in reader.connections}
        colour_topic = resolve_topic(topics, config.image_topic, 'colour')
        depth_topic = resolve_topic(topics, config.depth_topic, 'depth')
        info_topic = resolve_topic(topics, config.info_topic, 'info')
        # A message's ordinal counts every message of its topic, readable or not: the
        # second pass finds the kept frames by it.
        ordinals = {colour_topic: 0, depth_topic: 0}
        messages_read = 0
        bar = _progress(reader.message_count, config.progress, 'index')
        try:
            for conn, _, raw in reader.messages():
                bar.update(1)
                messages_read += 1
                if conn.topic not in (colour_topic, depth_topic, info_topic):
                    continue
                ordinal = ordinals.get(conn.topic, -1)
                if conn.topic in ordinals:
                    ordinals[conn.topic] += 1
                try:
                    msg = typestore.deserialize_cdr(raw, conn.msgtype)
                except Exception as e:  # rosbags raises several types for a foreign payload
                    key = f'{conn.topic}: cannot deserialize ({type(e).__name__})'
                    undecodable[key] = undecodable.get(key, 0) + 1
                    continue
                if conn.topic == info_topic:
                    infos.append(msg)
                    continue
                try:
                    if conn.topic == colour_topic:
                        rgb = msgs.decode_camera_image(msg)
                        colour.append(
                            _Entry(
                                ordinal,
                                _stamp_ns(msg),
                                str(msg.header.frame_id),
                                (rgb.shape[1], rgb.shape[0]),
                                _thumb(rgb),
                                len(infos) - 1,
                            )
                        )
                    else:
                        size = depth_size_wh(msg)
                        depth.append(
                            _Entry(ordinal, _stamp_ns(msg), str(msg.header.frame_id), size)
                        )
                except MoaDepthError as e:
                    key = f'{conn.topic}: {type(e).__name__}: {e}'
                    undecodable[key] = undecodable.get(key, 0) + 1
        finally:
            bar.close()
        recovered = reader.recovery_note(messages_read)

    if not colour or not depth:
        raise DatasetError(
            f'{bag}: {len(colour)} readable colour and {len(depth)} readable depth frames; '
            f'nothing to train on'
            + (f' (unreadable: {"; ".join(undecodable)})' if undecodable else '')
        )
    if not infos:
        raise DatasetError(
            f'{bag}: no CameraInfo on {info_topic}: the colour calibration is needed to give '
            f'depth its metric scale as the node does; record the camera_info topic'
        )
    colour.sort(key=lambda e: e.stamp_ns)
    depth.sort(key=lambda e: e.stamp_ns)
    colour_ns = [e.stamp_ns for e in colour]
    period_ns = float(np.median(np.diff(colour_ns))) if len(colour) > 1 else 1e9 / 30
    max_dt_ns = int(config.max_pair_dt_s * 1e9) if config.max_pair_dt_s else int(period_ns / 2)
    pairs = pair_by_stamp(colour_ns, [e.stamp_ns for e in depth], max_dt_ns)
    if not pairs:
        raise DatasetError(
            f'{bag}: none of {len(colour)} colour and {len(depth)} depth frames are within '
            f'{max_dt_ns / 1e6:.1f} ms of each other by header stamp; are both stamped by the '
            f'same clock?'
        )
    binnings = {check_registration(colour[ci], depth[di]) for ci, di in pairs}
    if len(binnings) > 1:
        raise RegistrationError(
            f'depth frames come at several sizes (binnings {sorted(binnings)}); {REGISTRATION_FIX}'
        )
    cameras = []
    for info in infos:
        try:
            cameras.append(CameraModel.from_camera_info(info))
        except MoaDepthError as e:
            raise DatasetError(f'{bag}: unusable colour camera_info on {info_topic}: {e}') from e
    cw, ch = colour[pairs[0][0]].size_wh
    for ci, _ in pairs:
        camera = cameras[max(0, colour[ci].info_index)]
        if camera.size != colour[ci].size_wh:
            raise DatasetError(
                f'{bag}: the camera_info on {info_topic} describes a {camera.width}x'
                f'{camera.height} image, the colour frames are {cw}x{ch}; record the '
                f'camera_info of this image stream'
            )

    guard = int(round(config.guard_s * 1e9 / period_ns))
    blocks = split_blocks(len(pairs), config.holdout, config.val, guard)
    chosen: dict[int, str] = {}  # colour index -> block
    keyframes = {}
    for name, block in blocks.items():
        in_block = [pairs[i] for i in block]
        kept = select_keyframes([colour[ci].thumb for ci, _ in in_block], config.keyframe_change)
        keyframes[name] = len(kept)
        for k in kept:
            chosen[in_block[k][0]] = name
    depth_of = dict(pairs)

    # -- pass 2: decode the kept frames
    want_colour = {colour[ci].ordinal: ci for ci in chosen}
    want_depth = {depth[depth_of[ci]].ordinal: ci for ci in chosen}
    decoded_rgb: dict[int, np.ndarray] = {}
    decoded_depth: dict[int, np.ndarray] = {}
    with open_input(bag) as reader:
        ordinals = {colour_topic: 0, depth_topic: 0}
        bar = _progress(reader.message_count, config.progress, 'decode')
        try:
            for conn, _, raw in reader.messages():
                bar.update(1)
                if conn.topic not in ordinals:
                    continue
                ordinal = ordinals[conn.topic]
                ordinals[conn.topic] += 1
                table = want_colour if conn.topic == colour_topic else want_depth
                if ordinal not in table:
                    continue
                msg = typestore.deserialize_cdr(raw, conn.msgtype)  # it did in pass 1
                try:
                    if conn.topic == colour_topic:
                        decoded_rgb[table[ordinal]] = np.array(msgs.decode_camera_image(msg))
                    else:
                        decoded_depth[table[ordinal]] = decode_depth_msg(msg)
                except MoaDepthError as e:  # a depth payload only pass 2 decodes: frame lost
                    key = f'{conn.topic}: {type(e).__name__}: {e}'
                    undecodable[key] = undecodable.get(key, 0) + 1
        finally:
            bar.close()

    bx, by = binnings.pop()
    frames: dict[str, list[Frame]] = {name: [] for name in blocks}
    mask_counts: dict[str, int] = {}
    for ci in sorted(chosen):
        if ci not in decoded_rgb or ci not in decoded_depth:
            continue  # its depth payload did not decode: counted in undecodable
        camera = cameras[max(0, colour[ci].info_index)]
        rgb, depth_m = decoded_rgb.pop(ci), decoded_depth.pop(ci)
        if (bx, by) != (1, 1):  # binned depth onto the colour grid, never blended
            depth_m = cv2.resize(depth_m, (cw, ch), interpolation=cv2.INTER_NEAREST_EXACT)
        rgb, depth_m, camera = _rectified(rgb, depth_m, camera, config.input_rectified)
        depth_m, counts = clean_depth(depth_m, config)
        for key, value in counts.items():
            mask_counts[key] = mask_counts.get(key, 0) + value
        frames[chosen[ci]].append(Frame(rgb, depth_m, camera.k, colour[ci].stamp_ns, chosen[ci]))

    report = {
        'bag': str(bag),
        'recovered': recovered,
        'topics': {'colour': colour_topic, 'depth': depth_topic, 'info': info_topic},
        'colour_frames': len(colour),
        'depth_frames': len(depth),
        'paired': len(pairs),
        'unpaired_colour': len(colour) - len(pairs),
        'unpaired_depth': len(depth) - len(pairs),
        'max_pair_dt_ms': max_dt_ns / 1e6,
        'colour_period_ms': period_ns / 1e6,
        'undecodable': undecodable,
        'size_wh': [cw, ch],
        'depth_binning': [bx, by],
        'blocks': {
            name: {
                'first': block.start,
                'stop': block.stop,
                'frames': len(block),
                'keyframes': keyframes[name],
                'first_stamp_ns': colour[pairs[block.start][0]].stamp_ns,
                'last_stamp_ns': colour[pairs[block.stop - 1][0]].stamp_ns,
            }
            for name, block in blocks.items()
        },
        'guard_frames': guard,
        'masked_pixels': mask_counts,
        'image_hw': list(image_hw),
    }
    return Recording(config=config, frames=frames, report=report)


def _rectified(rgb: np.ndarray, depth_m: np.ndarray, camera: CameraModel, input_rectified: bool):
    """Colour, depth and their camera on the rectified grid the node works on.

    ``frame.rectify.Rectifier``, as ``DepthPipeline`` builds it from the same camera_info:
    colour bilinear, depth nearest (NaN where no raw pixel is seen), and the rectified
    camera (K = P[:3, :3]) whose focal length gives the canonical-camera conversion.
    """
    from moa_depth_ros.frame import rectify

    rect = rectify.Rectifier(camera, input_rectified=input_rectified)
    return rect.rectify_image(rgb), rect.rectify_depth(depth_m), rect.output


def format_report(report: dict[str, Any]) -> str:
    """Return the human-readable account of what was read, paired, split and masked."""
    blocks = report['blocks']
    masked = report['masked_pixels']
    pixels = max(1, masked.get('pixels', 0))
    lines = [
        f'recording {report["bag"]}: {report["colour_frames"]} colour frames on '
        f'{report["topics"]["colour"]}, {report["depth_frames"]} depth frames on '
        f'{report["topics"]["depth"]} ({report["size_wh"][0]}x{report["size_wh"][1]}, depth '
        f'binning {report["depth_binning"][0]}x{report["depth_binning"][1]})',
        f'paired by stamp within {report["max_pair_dt_ms"]:.1f} ms: {report["paired"]}; '
        f'unpaired: {report["unpaired_colour"]} colour, {report["unpaired_depth"]} depth',
    ]
    if report.get('recovered'):
        lines.append(report['recovered'])
    for reason, count in sorted(report['undecodable'].items()):
        lines.append(f'  unreadable {count}x: {reason}')
    lines.append(
        'blocks (contiguous, in time order, '
        f'{report["guard_frames"]} guard frames between): '
        + ', '.join(
            f'{name} frames {b["first"]}-{b["stop"] - 1} ({b["keyframes"]} keyframes of '
            f'{b["frames"]})'
            for name, b in blocks.items()
        )
    )
    lines.append(
        'depth labels: '
        + ', '.join(
            f'{key.replace("_", " ")} {100.0 * masked.get(key, 0) / pixels:.1f} %'
            for key in ('no_return', 'out_of_range', 'depth_edge', 'kept')
        )
        + ' of the pixels'
    )
    return '\n'.join(lines)


# ---------------------------------------------------------------------------- dataset


class RGBDRecording(Dataset):
    """One block of a ``Recording`` as samples (``training.data.base``).

    ``split`` 'train' gives the training keyframes at the network input (image) and the
    label grid (depth), flipped and colour-jittered by ``augment_cfg``; 'val' and 'test'
    (the held-out block) give full-resolution frames without augmentation.
    """

    def __init__(
        self,
        recording: Recording,
        split: str,
        image_hw: tuple[int, int],
        *,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        if split not in SPLIT_BLOCKS:
            raise ConfigError(f'split must be one of {tuple(SPLIT_BLOCKS)}, got {split!r}')
        self.recording = recording
        self.split = split
        self.frames = recording.frames[SPLIT_BLOCKS[split]]
        if not self.frames:
            raise DatasetError(
                f'the {SPLIT_BLOCKS[split]} block of {recording.config.bag} is empty'
            )
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.augment_cfg = augment_cfg
        self.seed = int(seed)
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.frames)

    def _train_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image at the input size (the node's resize), depth on the label grid, its K."""
        if index in self._cache:
            return self._cache[index]
        frame = self.frames[index]
        h, w = frame.depth_m.shape
        in_h, in_w = self.image_hw
        image = resize_to_input(frame.rgb.astype(np.float32) / np.float32(255.0), self.image_hw)
        scale = self.recording.config.label_scale
        lh, lw = min(h, max(1, round(scale * in_h))), min(w, max(1, round(scale * in_w)))
        depth = frame.depth_m
        K = frame.K
        if (lh, lw) != (h, w):
            depth = cv2.resize(depth, (lw, lh), interpolation=cv2.INTER_NEAREST_EXACT)
            camera = CameraModel(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2]).scaled(lw, lh)
            K = camera.k
        self._cache[index] = (image, depth, K)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict:
        frame = self.frames[index]
        name = f'recording_{self.split}_{frame.stamp_ns}'
        if self.split != 'train':
            return make_sample(frame.rgb, frame.depth_m, frame.K, name)
        image, depth, K = self._train_arrays(index)
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.uniform() < self.augment_cfg.hflip_prob:
                # K describes the depth grid: hflip mirrors it with the depth's width.
                _, depth, K = hflip(depth, depth, K)
                image = image[:, ::-1]
            if rng.uniform() < self.augment_cfg.photometric_prob:
                image = photometric(image, self.augment_cfg, rng)
        return make_sample(image, depth, K, name)
