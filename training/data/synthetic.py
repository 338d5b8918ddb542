"""Procedural indoor scenes with exact metric depth: the embedded dataset of the package.

A scene is a box-shaped room (floor, ceiling, four walls) holding furniture-like
axis-aligned blocks (cabinets, tables on legs, sofas, crates, pictures and doors on the
walls), seen by a pinhole camera with NYU-like intrinsics from a random pose inside the
room. Rendering is analytic ray casting in vectorised numpy: one ray per pixel, the exit
point of the room's slab, the entry point of every block whose projected bounding
rectangle covers the pixel, the nearest hit wins. Surfaces carry patterns (planks,
tiles, checkers, stripes) in surface coordinates, so texture gives perspective cues, and
Lambertian shading from a ceiling lamp.

World frame: metres, y up, the floor is the plane y = 0, the room spans
[0, width] x [0, height] x [0, length]. Camera frame: the optical frame of REP 103
(x right, y down, z forward). Depth is the distance along the optical z axis, like a
depth camera and the NYU / KITTI ground truth. Everything is a pure function of the seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import math

import numpy as np

from moa_depth_ros.errors import ConfigError

# Depth outside this range is marked invalid (0), like a structured-light sensor; the
# sampler keeps the camera far enough from every surface that this almost never happens.
DEPTH_RANGE_M = (0.5, 10.0)

# Surface ids in SceneSample.labels; blocks follow as FIRST_BOX_ID + index.
FLOOR_ID, CEILING_ID, WALL_X0_ID, WALL_X1_ID, WALL_Z0_ID, WALL_Z1_ID = range(6)
FIRST_BOX_ID = 6
SURFACE_NAMES = ('floor', 'ceiling', 'wall_x0', 'wall_x1', 'wall_z0', 'wall_z1')

PATTERNS = ('plain', 'checker', 'stripes', 'planks', 'tiles')

# Camera height above the floor drawn per scene (metres): from a low robot mount to a
# handheld camera at eye level. Scale is hard to tell from one image, and the wider this
# range, the more of a scene's absolute depth a network must guess from cues such as
# the ceiling, doors and tables.
CAMERA_HEIGHT_RANGE_M = (1.0, 1.8)

# Smallest distance from the camera to any wall or block footprint. With a horizontal
# field of view under 70 degrees it keeps every depth above DEPTH_RANGE_M[0].
CAMERA_CLEARANCE_M = 0.75


@dataclass(frozen=True)
class Material:
    """A procedural surface pattern in surface coordinates (metres)."""

    pattern: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    scale_m: float
    swap_axes: bool = False


@dataclass(frozen=True)
class Box:
    """An axis-aligned block: corners ``lo_m`` < ``hi_m`` in the world frame."""

    lo_m: tuple[float, float, float]
    hi_m: tuple[float, float, float]
    material: Material
    kind: str = 'block'

    def __post_init__(self) -> None:
        # Plain floats: numpy float64 scalars would promote the renderer's float32 arrays.
        object.__setattr__(self, 'lo_m', tuple(float(v) for v in self.lo_m))
        object.__setattr__(self, 'hi_m', tuple(float(v) for v in self.hi_m))


@dataclass(frozen=True)
class SceneSpec:
    """Everything that determines one rendered frame: room, blocks, light, camera."""

    room_size_m: tuple[float, float, float]  # width (x), height (y), length (z)
    surface_materials: tuple[Material, ...]  # one per SURFACE_NAMES entry
    boxes: tuple[Box, ...]
    light_position_m: tuple[float, float, float]
    camera_position_m: tuple[float, float, float]
    yaw_rad: float  # heading about world +y; 0 looks along +z
    pitch_rad: float  # positive looks up
    roll_rad: float
    width: int
    height: int
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    noise_std: float = 0.01
    seed: int = 0

    @property
    def K(self) -> np.ndarray:
        return np.array(
            [[self.fx_px, 0.0, self.cx_px], [0.0, self.fy_px, self.cy_px], [0.0, 0.0, 1.0]]
        )

    def with_camera(
        self,
        position_m: tuple[float, float, float],
        yaw_rad: float,
        pitch_rad: float = 0.0,
        roll_rad: float = 0.0,
    ) -> SceneSpec:
        """Return the same room seen from another pose."""
        return dataclasses.replace(
            self,
            camera_position_m=tuple(float(v) for v in position_m),
            yaw_rad=float(yaw_rad),
            pitch_rad=float(pitch_rad),
            roll_rad=float(roll_rad),
        )


@dataclass
class SceneSample:
    """One rendered frame.

    ``depth_m`` is 0 where invalid (outside DEPTH_RANGE_M). ``cam_to_world`` maps optical
    frame points to the world frame (y up, floor at y = 0). ``labels`` holds surface ids.
    """

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth_m: np.ndarray  # float32 [H, W]
    K: np.ndarray  # float64 [3, 3]
    camera_info: dict
    cam_to_world: np.ndarray  # float64 [4, 4]
    labels: np.ndarray  # int16 [H, W]
    spec: SceneSpec


def camera_rotation(yaw_rad: float, pitch_rad: float, roll_rad: float) -> np.ndarray:
    """Rotation from the optical frame to the world frame (columns: right, down, forward)."""
    if abs(pitch_rad) >= math.radians(89.0):
        # Looking straight up or down leaves the heading (and "right") undefined.
        raise ConfigError(f'pitch_rad must be within +-89 degrees, got {pitch_rad!r}')
    cp, sp = math.cos(pitch_rad), math.sin(pitch_rad)
    forward = np.array([math.sin(yaw_rad) * cp, sp, math.cos(yaw_rad) * cp])
    up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    cr, sr = math.cos(roll_rad), math.sin(roll_rad)
    right, down = cr * right + sr * down, -sr * right + cr * down
    return np.stack([right, down, forward], axis=1)


def camera_info_dict(spec: SceneSpec, frame_id: str = 'camera_optical_frame') -> dict:
    """CameraInfo fields (sensor_msgs/CameraInfo names, upper-case matrices) for a spec."""
    k = spec.K
    p = np.zeros((3, 4))
    p[:, :3] = k
    return {
        'frame_id': frame_id,
        'width': int(spec.width),
        'height': int(spec.height),
        'distortion_model': 'plumb_bob',
        'D': [0.0] * 5,
        'K': [float(v) for v in k.ravel()],
        'R': [float(v) for v in np.eye(3).ravel()],
        'P': [float(v) for v in p.ravel()],
        'binning_x': 0,
        'binning_y': 0,
    }


# --------------------------------------------------------------------------- sampling

_WOODS = ((0.55, 0.38, 0.22), (0.70, 0.52, 0.33), (0.42, 0.27, 0.16), (0.78, 0.64, 0.45))
_PAINTS = (
    (0.86, 0.84, 0.78),
    (0.72, 0.80, 0.84),
    (0.85, 0.76, 0.66),
    (0.70, 0.78, 0.66),
    (0.90, 0.88, 0.86),
    (0.80, 0.70, 0.74),
)
_FABRICS = ((0.30, 0.35, 0.55), (0.55, 0.20, 0.18), (0.35, 0.45, 0.30), (0.25, 0.25, 0.28))
_TILES = ((0.80, 0.80, 0.78), (0.55, 0.55, 0.58), (0.62, 0.50, 0.42))


def _pick(rng: np.random.Generator, options: tuple) -> tuple[float, float, float]:
    base = np.asarray(options[int(rng.integers(len(options)))])
    return tuple(float(c) for c in np.clip(base * rng.uniform(0.9, 1.1, 3), 0.0, 1.0))


def _darker(color: tuple[float, float, float], factor: float) -> tuple[float, float, float]:
    return tuple(float(c * factor) for c in color)


def _floor_material(rng: np.random.Generator) -> Material:
    kind = rng.choice(['planks', 'tiles', 'checker'])
    if kind == 'planks':
        wood = _pick(rng, _WOODS)
        return Material('planks', wood, _darker(wood, 0.55), rng.uniform(0.12, 0.22))
    if kind == 'tiles':
        tile = _pick(rng, _TILES)
        return Material('tiles', tile, _darker(tile, 0.6), rng.uniform(0.3, 0.6))
    a = _pick(rng, _TILES)
    return Material('checker', a, _darker(a, 0.45), rng.uniform(0.25, 0.5))


def _wall_material(rng: np.random.Generator, paint: tuple[float, float, float]) -> Material:
    if rng.uniform() < 0.3:
        return Material('stripes', paint, _darker(paint, 0.82), rng.uniform(0.08, 0.2))
    return Material('plain', paint, _darker(paint, 0.9), rng.uniform(0.5, 1.5))


def _object_material(rng: np.random.Generator, kind: str) -> Material:
    if kind in ('cabinet', 'table', 'crate', 'door'):
        wood = _pick(rng, _WOODS)
        return Material(
            'planks', wood, _darker(wood, 0.6), rng.uniform(0.08, 0.2), bool(rng.integers(2))
        )
    if kind == 'sofa':
        fabric = _pick(rng, _FABRICS)
        return Material('checker', fabric, _darker(fabric, 0.8), rng.uniform(0.05, 0.12))
    # Pictures: bold colours make them stand out from the wall.
    a, b = _pick(rng, _FABRICS + _PAINTS), _pick(rng, _WOODS + _FABRICS)
    return Material('stripes', a, b, rng.uniform(0.04, 0.12), bool(rng.integers(2)))


def _footprint_clear(lo, hi, camera_xz, placed) -> bool:
    """Tell whether a block footprint keeps its distance from the camera and other blocks."""
    cx, cz = camera_xz
    gap = CAMERA_CLEARANCE_M
    if lo[0] - gap < cx < hi[0] + gap and lo[2] - gap < cz < hi[2] + gap:
        return False
    for other_lo, other_hi in placed:
        if lo[0] < other_hi[0] and other_lo[0] < hi[0] and lo[2] < other_hi[2]:
            if other_lo[2] < hi[2]:
                return False
    return True


def _against_wall(rng, room, size_x, size_z):
    """Place a footprint touching a random wall; return (x0, z0, sx, sz)."""
    w, _, d = room
    wall = int(rng.integers(4))
    if wall >= 2:  # x walls: swap so the long side runs along the wall
        size_x, size_z = size_z, size_x
    if wall == 0:
        return 0.0, rng.uniform(0, d - size_z), size_x, size_z
    if wall == 1:
        return w - size_x, rng.uniform(0, d - size_z), size_x, size_z
    if wall == 2:
        return rng.uniform(0, w - size_x), 0.0, size_x, size_z
    return rng.uniform(0, w - size_x), d - size_z, size_x, size_z


def _sample_objects(rng, room, camera_xz) -> list[Box]:
    w, h, d = room
    boxes: list[Box] = []
    placed: list[tuple] = []
    n_objects = int(rng.integers(3, 8))
    for _ in range(n_objects * 4):  # rejection sampling with a bounded number of tries
        if len(placed) >= n_objects:
            break
        kind = rng.choice(['cabinet', 'table', 'sofa', 'crate', 'cabinet'])
        mat = _object_material(rng, str(kind))
        if kind == 'cabinet':
            x0, z0, sx, sz = _against_wall(
                rng, room, rng.uniform(0.5, 1.4), rng.uniform(0.35, 0.6)
            )
            top = rng.uniform(0.8, min(2.1, h - 0.2))
        elif kind == 'sofa':
            x0, z0, sx, sz = _against_wall(rng, room, rng.uniform(1.4, 2.2), rng.uniform(0.8, 1.0))
            top = rng.uniform(0.4, 0.55)
        else:
            sx = rng.uniform(0.8, 1.6) if kind == 'table' else rng.uniform(0.3, 0.7)
            sz = rng.uniform(0.6, 1.0) if kind == 'table' else rng.uniform(0.3, 0.7)
            x0, z0 = rng.uniform(0.2, w - sx - 0.2), rng.uniform(0.2, d - sz - 0.2)
            top = rng.uniform(0.7, 0.78) if kind == 'table' else rng.uniform(0.3, 0.7)
        lo, hi = (x0, 0.0, z0), (x0 + sx, top, z0 + sz)
        if x0 < 0 or z0 < 0 or hi[0] > w or hi[2] > d:
            continue
        if not _footprint_clear(lo, hi, camera_xz, placed):
            continue
        placed.append((lo, hi))
        if kind == 'table':
            boxes.append(Box((x0, top - 0.04, z0), hi, mat, 'table'))
            leg = 0.05
            for lx in (x0 + 0.03, x0 + sx - 0.03 - leg):
                for lz in (z0 + 0.03, z0 + sz - 0.03 - leg):
                    boxes.append(Box((lx, 0.0, lz), (lx + leg, top - 0.04, lz + leg), mat, 'leg'))
        elif kind == 'sofa':
            boxes.append(Box(lo, hi, mat, 'sofa'))
            # A backrest along the wall side of the seat.
            back = 0.2
            if x0 == 0.0 and sx < sz:
                back_lo, back_hi = (x0, top, z0), (x0 + back, top + 0.4, z0 + sz)
            elif hi[0] == w and sx < sz:
                back_lo, back_hi = (hi[0] - back, top, z0), (hi[0], top + 0.4, z0 + sz)
            elif z0 == 0.0:
                back_lo, back_hi = (x0, top, z0), (x0 + sx, top + 0.4, z0 + back)
            else:
                back_lo, back_hi = (x0, top, hi[2] - back), (x0 + sx, top + 0.4, hi[2])
            boxes.append(Box(back_lo, back_hi, mat, 'sofa'))
        else:
            boxes.append(Box(lo, hi, mat, str(kind)))
            if kind == 'crate' and rng.uniform() < 0.4:  # a smaller crate stacked on top
                s = 0.6 * min(sx, sz)
                boxes.append(Box((x0, top, z0), (x0 + s, top + s, z0 + s), mat, 'crate'))
    # Pictures and doors: thin panels on the walls, texture cues at known depth.
    for _ in range(int(rng.integers(1, 4))):
        kind = 'door' if rng.uniform() < 0.3 else 'picture'
        pw, ph = (0.9, 2.0) if kind == 'door' else (rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.7))
        y0 = 0.0 if kind == 'door' else rng.uniform(1.1, max(1.2, h - ph - 0.2))
        t = 0.03
        wall = int(rng.integers(4))
        mat = _object_material(rng, kind)
        if wall < 2:
            z0 = rng.uniform(0.1, max(0.2, d - pw - 0.1))
            x0 = 0.0 if wall == 0 else w - t
            boxes.append(Box((x0, y0, z0), (x0 + t, y0 + ph, z0 + pw), mat, kind))
        else:
            x0 = rng.uniform(0.1, max(0.2, w - pw - 0.1))
            z0 = 0.0 if wall == 2 else d - t
            boxes.append(Box((x0, y0, z0), (x0 + pw, y0 + ph, z0 + t), mat, kind))
    return boxes


def sample_scene(
    seed: int,
    width: int,
    height: int,
    *,
    hfov_deg: float | tuple[float, float] | None = None,
    camera_height_m: tuple[float, float] = CAMERA_HEIGHT_RANGE_M,
    lens_sampling: str = 'angle',
) -> SceneSpec:
    """Draw a room, its furniture, a lamp and a camera pose from ``seed``.

    ``hfov_deg``: the horizontal field of view: fixed, drawn from a (low, high) range, or None
    for 56-66 degrees. ``lens_sampling`` says how a range is drawn: 'angle' (uniform in
    degrees) or 'focal' (uniform in focal length, which draws narrow lenses more often).
    ``camera_height_m``: (low, high) of the camera's height above the floor.
    """
    if width < 2 or height < 2:
        raise ConfigError(f'scene size must be at least 2x2 pixels, got {width}x{height}')
    low_m, high_m = (float(v) for v in camera_height_m)
    if not 0.2 <= low_m <= high_m <= 2.2:
        # Rooms are at least 2.4 m high; the camera stays 0.2 m clear of floor and ceiling.
        raise ConfigError(
            f'camera_height_m must satisfy 0.2 <= low <= high <= 2.2, got {camera_height_m!r}'
        )
    rng = np.random.default_rng(int(seed))
    room = (rng.uniform(3.0, 6.5), rng.uniform(2.4, 3.0), rng.uniform(3.5, 7.5))
    w, h, d = room
    paint = _pick(rng, _PAINTS)
    ceiling_white = _pick(rng, ((0.93, 0.93, 0.91),))
    materials = (
        _floor_material(rng),
        Material('plain', ceiling_white, _darker(ceiling_white, 0.95), 2.0),
        *(_wall_material(rng, paint) for _ in range(4)),
    )
    gap = CAMERA_CLEARANCE_M
    cam = (rng.uniform(gap, w - gap), rng.uniform(low_m, high_m), rng.uniform(gap, d - gap))
    boxes = _sample_objects(rng, room, (cam[0], cam[2]))
    # Look towards the farthest of a few points across the room, so a view is rarely just
    # a wall close up.
    candidates = rng.uniform((0.3, 0.3), (w - 0.3, d - 0.3), size=(6, 2))
    far = np.hypot(candidates[:, 0] - cam[0], candidates[:, 1] - cam[2])
    target = candidates[int(np.argmax(far))]
    yaw = math.atan2(target[0] - cam[0], target[1] - cam[2])
    pitch = math.radians(rng.uniform(-25.0, 5.0))
    roll = math.radians(rng.uniform(-3.0, 3.0))
    # A pendant lamp below the ceiling, so the ceiling is lit too.
    light = (rng.uniform(0.3, 0.7) * w, h - rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.7) * d)
    if lens_sampling not in ('angle', 'focal'):
        raise ConfigError(f"lens_sampling must be 'angle' or 'focal', got {lens_sampling!r}")
    if hfov_deg is None or isinstance(hfov_deg, (tuple, list)):
        if hfov_deg is not None and len(hfov_deg) != 2:
            raise ConfigError(f'hfov_deg range must be [low, high] degrees, got {hfov_deg!r}')
        low_deg, high_deg = (56.0, 66.0) if hfov_deg is None else (float(v) for v in hfov_deg)
        if not 10.0 <= low_deg <= high_deg <= 160.0:
            raise ConfigError(f'hfov_deg range must lie in [10, 160] degrees, got {hfov_deg!r}')
        if lens_sampling == 'angle':
            hfov = math.radians(rng.uniform(low_deg, high_deg))
        else:  # 'focal': focal length in units of the half width
            f = rng.uniform(
                1.0 / math.tan(math.radians(high_deg) / 2.0),
                1.0 / math.tan(math.radians(low_deg) / 2.0),
            )
            hfov = 2.0 * math.atan(1.0 / f)
    else:
        if not 10.0 <= float(hfov_deg) <= 160.0:
            raise ConfigError(f'hfov_deg must lie in [10, 160] degrees, got {hfov_deg!r}')
        hfov = math.radians(float(hfov_deg))
    fx = 0.5 * width / math.tan(0.5 * hfov)
    cx = (width - 1) / 2.0 + rng.uniform(-0.02, 0.02) * width
    cy = (height - 1) / 2.0 + rng.uniform(-0.02, 0.02) * height
    return SceneSpec(
        room_size_m=tuple(float(v) for v in room),
        surface_materials=materials,
        boxes=tuple(boxes),
        light_position_m=tuple(float(v) for v in light),
        camera_position_m=tuple(float(v) for v in cam),
        yaw_rad=float(yaw),
        pitch_rad=float(pitch),
        roll_rad=float(roll),
        width=int(width),
        height=int(height),
        fx_px=float(fx),
        fy_px=float(fx),
        cx_px=float(cx),
        cy_px=float(cy),
        seed=int(seed),
    )


# --------------------------------------------------------------------------- rendering


def _hash01(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cheap integer hash to [0, 1): per-plank and per-tile colour variation."""
    x = a.astype(np.int64) * 73856093 ^ b.astype(np.int64) * 19349663
    x = (x ^ (x >> 13)) * 1274126177
    return ((x ^ (x >> 16)) & 0xFFFF).astype(np.float32) / 65536.0


def _box_rect(box: Box, origin, rot_wc, spec: SceneSpec) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (v0, v1, u0, u1) that can see ``box``; None when it cannot be seen."""
    lo, hi = box.lo_m, box.hi_m
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    cam = (corners - origin) @ rot_wc  # world -> optical frame (rot_wc is orthonormal)
    z = cam[:, 2]
    if np.all(z <= 0.0):
        return None
    if np.any(z <= 1e-3):  # straddles the image plane: projection is unbounded
        return 0, spec.height, 0, spec.width
    u = spec.fx_px * cam[:, 0] / z + spec.cx_px
    v = spec.fy_px * cam[:, 1] / z + spec.cy_px
    u0, u1 = max(int(math.floor(u.min())), 0), min(int(math.ceil(u.max())) + 1, spec.width)
    v0, v1 = max(int(math.floor(v.min())), 0), min(int(math.ceil(v.max())) + 1, spec.height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _pattern_values(pattern_id, s1, s2, scale, sid) -> np.ndarray:
    """Mix factor between a material's colour a (0) and colour b (1), per pixel (flat)."""
    out = np.empty_like(s1)
    counts = np.bincount(pattern_id, minlength=len(PATTERNS))
    for pid in np.flatnonzero(counts):
        # Gather once per pattern: each pattern runs only on its own pixels.
        idx = np.flatnonzero(pattern_id == pid) if counts[pid] < len(s1) else slice(None)
        q1, q2 = s1[idx] / scale[idx], s2[idx] / scale[idx]
        name = PATTERNS[int(pid)]
        if name == 'plain':
            # Gentle low-frequency blotches, like uneven paint.
            val = 0.25 + 0.25 * np.sin(2.1 * q1 + sid[idx]) * np.sin(1.7 * q2)
        elif name == 'checker':
            val = np.mod(np.floor(q1) + np.floor(q2), 2.0)
        elif name == 'stripes':
            val = (q1 - np.floor(q1) < 0.5).astype(np.float32)
        elif name == 'planks':
            # Planks of per-plank shade, grain along them and dark seams between.
            i1 = np.floor(q1)
            shade = _hash01(i1.astype(np.int64), sid[idx])
            grain = 0.5 + 0.5 * np.sin(11.0 * q2 + 6.0 * shade)
            val = np.where(q1 - i1 < 0.05, np.float32(1.0), 0.35 * shade + 0.15 * grain)
        else:  # tiles with grout lines
            i1, i2 = np.floor(q1), np.floor(q2)
            cell = i1.astype(np.int64) * 131 + i2.astype(np.int64)
            grout = (q1 - i1 < 0.04) | (q2 - i2 < 0.04)
            val = np.where(grout, np.float32(1.0), 0.15 * _hash01(cell, sid[idx]))
        out[idx] = val
    return out


def render(
    spec: SceneSpec,
    *,
    noise_seed: int | None = None,
    depth_range_m: tuple[float, float] = DEPTH_RANGE_M,
) -> SceneSample:
    """Ray-cast ``spec`` into RGB, depth along optical z, and surface labels.

    ``noise_seed`` picks the sensor-noise pattern (default: the scene seed); a video of
    one room passes a different one per frame. Depth outside ``depth_range_m`` is 0 (a
    simulated depth sensor passes its own, wider range and applies its own limits).
    """
    width, height = spec.width, spec.height
    rot = camera_rotation(spec.yaw_rad, spec.pitch_rad, spec.roll_rad)
    # Python floats, not numpy float64 scalars: those would promote every array to float64.
    origin = tuple(float(v) for v in spec.camera_position_m)
    room = spec.room_size_m

    # Unit-z rays in the optical frame, so the ray parameter at a hit IS the depth.
    xn = ((np.arange(width) - spec.cx_px) / spec.fx_px).astype(np.float32)
    yn = ((np.arange(height) - spec.cy_px) / spec.fy_px).astype(np.float32)
    rot32 = rot.astype(np.float32)
    dirs = []
    for a in range(3):
        d = (rot32[a, 0] * xn)[None, :] + (rot32[a, 1] * yn)[:, None] + rot32[a, 2]
        # Exactly axis-parallel rays would divide by zero; nudge them so they never hit.
        d[np.abs(d) < 1e-9] = 1e-9
        dirs.append(d)
    inv = [np.float32(1.0) / d for d in dirs]
    positive = [d > 0 for d in dirs]

    # Room: exit of the slab [0, size] along each axis; the first axis to exit is hit.
    t_axis = [
        np.where(positive[a], room[a] - origin[a], -origin[a]).astype(np.float32) * inv[a]
        for a in range(3)
    ]
    axis = np.where(t_axis[1] < t_axis[2], np.int8(1), np.int8(2))
    t_hit = np.minimum(t_axis[1], t_axis[2])
    axis[t_axis[0] <= t_hit] = 0
    np.minimum(t_hit, t_axis[0], out=t_hit)

    # Blocks: slab entry, tested only inside each block's projected rectangle.
    box_id = np.full((height, width), -1, np.int16)
    for index, box in enumerate(spec.boxes):
        rect = _box_rect(box, np.asarray(origin), rot, spec)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        t_near = t_far = near_axis = None
        for a in range(3):
            ia = inv[a][v0:v1, u0:u1]
            t1 = (box.lo_m[a] - origin[a]) * ia
            t2 = (box.hi_m[a] - origin[a]) * ia
            tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
            if t_near is None:
                t_near, t_far, near_axis = tmin, tmax, np.zeros(tmin.shape, np.int8)
            else:
                near_axis[tmin > t_near] = a
                t_near, t_far = np.maximum(t_near, tmin), np.minimum(t_far, tmax)
        t_view = t_hit[v0:v1, u0:u1]
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < t_view)
        t_view[hit] = t_near[hit]
        axis[v0:v1, u0:u1][hit] = near_axis[hit]
        box_id[v0:v1, u0:u1][hit] = index
    # Surface ids: the room surface along the hit axis unless a block was hit.
    on_x, on_y = axis == 0, axis == 1
    facing_pos = np.where(on_x, positive[0], np.where(on_y, positive[1], positive[2]))
    room_ids = np.array(
        [[WALL_X0_ID, WALL_X1_ID], [FLOOR_ID, CEILING_ID], [WALL_Z0_ID, WALL_Z1_ID]], np.int16
    )
    sid = room_ids[axis, facing_pos.view(np.int8)]
    hit_box = box_id >= 0
    sid[hit_box] = box_id[hit_box] + FIRST_BOX_ID

    # Hit points and 2-D surface coordinates on the hit face.
    px, py, pz = (origin[a] + t_hit * dirs[a] for a in range(3))
    s1 = np.where(on_x, pz, px)
    s2 = np.where(on_y, pz, py)

    materials = list(spec.surface_materials) + [box.material for box in spec.boxes]
    swap_lut = np.array([m.swap_axes for m in materials], bool)
    if swap_lut.any():
        swap = swap_lut[sid]
        s1, s2 = np.where(swap, s2, s1), np.where(swap, s1, s2)
    flat_sid = sid.ravel()
    pattern_lut = np.array([PATTERNS.index(m.pattern) for m in materials], np.intp)
    scale_lut = np.array([m.scale_m for m in materials], np.float32)
    mix = _pattern_values(
        pattern_lut[flat_sid], s1.ravel(), s2.ravel(), scale_lut[flat_sid], flat_sid
    )

    # Lambertian shading from a lamp, plus ambient light.
    lx, ly, lz = (spec.light_position_m[a] - p for a, p in enumerate((px, py, pz)))
    dist2 = lx * lx + ly * ly + lz * lz
    along = np.where(on_x, lx, np.where(on_y, ly, lz))
    along = np.where(facing_pos, -along, along)  # the normal faces back along the ray
    cos_term = np.maximum(along, 0.0) / (np.sqrt(dist2) + np.float32(1e-6))
    shade = (0.35 + 0.9 * cos_term / (1.0 + 0.04 * dist2)).ravel()

    color_a = np.array([m.color_a for m in materials], np.float32)
    color_d = np.array([m.color_b for m in materials], np.float32) - color_a
    rgb = np.empty((height * width, 3), np.float32)
    if spec.noise_std > 0:
        # Uniform noise of the requested standard deviation: sensor grain, cheap to draw.
        noise_rng = np.random.default_rng([spec.seed if noise_seed is None else noise_seed, 1])
        noise = noise_rng.random((height * width, 3), np.float32) - np.float32(0.5)
        noise *= np.float32(spec.noise_std * math.sqrt(12.0))
    for c in range(3):
        channel = (color_a[:, c][flat_sid] + color_d[:, c][flat_sid] * mix) * shade
        if spec.noise_std > 0:
            channel += noise[:, c]
        rgb[:, c] = channel
    rgb_u8 = np.clip(rgb * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8).reshape(height, width, 3)

    depth = t_hit
    depth[(depth < depth_range_m[0]) | (depth > depth_range_m[1])] = 0.0
    cam_to_world = np.eye(4)
    cam_to_world[:3, :3] = rot
    cam_to_world[:3, 3] = origin
    return SceneSample(
        rgb=rgb_u8,
        depth_m=depth,
        K=spec.K,
        camera_info=camera_info_dict(spec),
        cam_to_world=cam_to_world,
        labels=sid,
        spec=spec,
    )


def supersampled_spec(spec: SceneSpec, factor: int) -> SceneSpec:
    """Return the same view on a grid ``factor`` times finer (factor^2 rays per pixel).

    Fine pixel centre ``uf`` lies at coarse coordinate ``(uf + 0.5) / factor - 0.5``, so the
    principal point becomes ``factor * (c + 0.5) - 0.5``. The noise scales by ``factor``
    so that the block mean keeps the requested per-pixel noise.
    """
    return dataclasses.replace(
        spec,
        width=spec.width * factor,
        height=spec.height * factor,
        fx_px=spec.fx_px * factor,
        fy_px=spec.fy_px * factor,
        cx_px=factor * (spec.cx_px + 0.5) - 0.5,
        cy_px=factor * (spec.cy_px + 0.5) - 0.5,
        noise_std=spec.noise_std * factor,
    )


def render_supersampled(spec: SceneSpec, factor: int) -> SceneSample:
    """Render ``spec`` with ``factor`` x ``factor`` rays per pixel for the colour.

    A camera integrates light over each pixel's area; one ray per pixel instead aliases
    fine textures (planks, tiles, stripes) into noise at small sizes, unlike images that
    the node downsamples with area averaging. The RGB is the block mean of a ``factor``
    times finer render; depth and labels stay exact at the pixel centres (a plain render).
    """
    if not isinstance(factor, int) or factor < 1:
        raise ConfigError(f'supersample factor must be a positive integer, got {factor!r}')
    sample = render(spec)
    if factor == 1:
        return sample
    fine = render(supersampled_spec(spec, factor))
    blocks = fine.rgb.reshape(spec.height, factor, spec.width, factor, 3).astype(np.float32)
    mean = blocks.mean(axis=(1, 3))
    sample.rgb = np.clip(mean + 0.5, 0.0, 255.0).astype(np.uint8)
    return sample


def render_scene(
    seed: int,
    width: int = 640,
    height: int = 480,
    *,
    hfov_deg: float | tuple[float, float] | None = None,
    supersample: int = 1,
    camera_height_m: tuple[float, float] = CAMERA_HEIGHT_RANGE_M,
    lens_sampling: str = 'angle',
) -> SceneSample:
    """Render the scene of ``seed`` at ``width`` x ``height`` (deterministic).

    ``supersample`` > 1 anti-aliases the colour (``render_supersampled``);
    ``camera_height_m`` is the range the camera height is drawn from (``sample_scene``).
    """
    spec = sample_scene(
        seed,
        width,
        height,
        hfov_deg=hfov_deg,
        camera_height_m=camera_height_m,
        lens_sampling=lens_sampling,
    )
    return render_supersampled(spec, supersample)
