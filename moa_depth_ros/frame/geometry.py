"""Camera geometry: the camera model from CameraInfo, ray tables, back-projection, clouds.

``CameraModel`` is the pinhole camera of one image as sensor_msgs/CameraInfo describes it
(K, D, distortion model plumb_bob / rational_polynomial / equidistant, binning and ROI folded
in the way image_geometry's PinholeCameraModel does). A depth pixel (u, v) with depth Z along
the optical axis is the point Z * ray(u, v), where ray = (x/z, y/z, 1) is the undistorted
direction of that pixel. The rays of a camera are computed once (OpenCV's iterative
undistortion, then checked against the closed-form forward model) and cached, keyed by the
camera model and decimation, so each frame costs two multiplies and an interleave. The cache
(``ByteBoundedCache``) is bounded in bytes, not entries: a 4K table weighs what a hundred
QVGA ones do, and a node fed by a zooming or re-calibrating camera must not grow.
``CameraModelCache`` keeps the model of the newest CameraInfo, converted once per calibration,
for the node's worker and the bag tool alike.

Points are in the optical frame (REP 103): z forward, x right, y down, metres.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import sys
import threading
from typing import Any, Callable, Hashable

import cv2
import numpy as np

from moa_depth_ros.errors import CameraInfoError, ConfigError, InvalidImageError

_IDENTITY_3X3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

# distortion kind -> number of coefficients OpenCV expects for it.
_DISTORTION_LENGTHS = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}
_DISTORTION_ALIASES = {'': 'plumb_bob', 'none': 'plumb_bob', 'fisheye': 'equidistant'}

# A pixel's ray is kept only if the forward model maps it back to within this many pixels;
# elsewhere the iterative inverse did not converge (outside the calibrated field of view).
_MAX_REPROJECTION_ERROR_PX = 0.01
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


def _floats(values: Any, field: str, length: int | None = None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as e:
        raise CameraInfoError(f'CameraInfo.{field} must be numbers, got {values!r}') from e
    if length is not None and len(out) != length:
        raise CameraInfoError(
            f'CameraInfo.{field} must have {length} values, got {len(out)}: {list(out)}'
        )
    for i, value in enumerate(out):
        if not math.isfinite(value):
            raise CameraInfoError(f'CameraInfo.{field}[{i}] must be finite, got {value}')
    return out


def _msg_field(msg: Any, name: str) -> Any:
    """Read a CameraInfo field (``k``, ``d``, ``r``, ``p``), or say which one is missing."""
    try:
        return getattr(msg, name)
    except AttributeError:
        raise CameraInfoError(f'CameraInfo has no field {name!r}') from None


def _pinhole_p(fx: float, fy: float, cx: float, cy: float) -> tuple[float, ...]:
    return (fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclasses.dataclass(frozen=True)
class CameraModel:
    """Intrinsics of the image a depth map is aligned with (after binning and ROI).

    ``d`` holds the distortion coefficients in ROS / OpenCV order: plumb_bob
    (k1, k2, p1, p2, k3), rational_polynomial (k1, k2, p1, p2, k3, k4, k5, k6), equidistant
    (k1, k2, k3, k4). ``r`` and ``p`` are kept only to publish a matching CameraInfo. The skew
    term K[0, 1] is ignored, as image_geometry and OpenCV's undistortion do.
    """

    width: int
    height: int
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    distortion_model: str = 'plumb_bob'
    d: tuple[float, ...] = ()
    r: tuple[float, ...] = _IDENTITY_3X3
    p: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ('width', 'height'):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise CameraInfoError(f'camera {name} must be a positive integer, got {value}')
            object.__setattr__(self, name, int(value))
        for name in ('fx_px', 'fy_px', 'cx_px', 'cy_px'):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise CameraInfoError(f'camera {name} must be finite, got {value}')
            object.__setattr__(self, name, value)
        for name in ('fx_px', 'fy_px'):
            if getattr(self, name) <= 0:
                raise CameraInfoError(
                    f'camera {name} (focal length) must be > 0, got {getattr(self, name)}; '
                    'a zero K means the camera is not calibrated'
                )
        object.__setattr__(self, 'd', _floats(self.d, 'd'))
        object.__setattr__(self, 'r', _floats(self.r, 'r', 9))
        p = _floats(self.p, 'p') if len(self.p) else ()
        if not any(p):  # an all-zero P (uncalibrated driver) is rebuilt from K
            p = _pinhole_p(self.fx_px, self.fy_px, self.cx_px, self.cy_px)
        object.__setattr__(self, 'p', _floats(p, 'p', 12))
        object.__setattr__(self, 'distortion_model', str(self.distortion_model))
        self._coefficients()  # validates the model name and the number of coefficients

    # ---------------------------------------------------------------------------- construction

    @classmethod
    def from_camera_info(cls, msg: Any) -> CameraModel:
        """Build the model of the image a sensor_msgs/CameraInfo describes.

        ``width`` x ``height`` in CameraInfo is the calibrated (full) resolution; the image
        itself is the ROI (full-resolution pixel coordinates, all zeros meaning "everything")
        divided by the binning (0 meaning 1), and K and P are adjusted to match, as
        image_geometry's PinholeCameraModel does. Raises CameraInfoError naming the field.
        """
        full_w, full_h = int(msg.width), int(msg.height)
        if full_w <= 0 or full_h <= 0:
            raise CameraInfoError(
                f'CameraInfo width x height must be positive, got {full_w}x{full_h}; '
                'the camera driver publishes no calibration'
            )
        k = _floats(_msg_field(msg, 'k'), 'k', 9)
        if k[0] <= 0 or k[4] <= 0:
            raise CameraInfoError(
                f'CameraInfo.k focal lengths must be > 0, got fx=k[0]={k[0]} fy=k[4]={k[4]}; '
                'a zero K means the camera is not calibrated'
            )
        d = _floats(_msg_field(msg, 'd'), 'd')
        r = _floats(_msg_field(msg, 'r'), 'r', 9) if len(_msg_field(msg, 'r')) else _IDENTITY_3X3
        if not any(r):  # an all-zero R is an unset field, not a degenerate rotation
            r = _IDENTITY_3X3
        p_raw = _msg_field(msg, 'p')
        p = _floats(p_raw, 'p', 12) if len(p_raw) else ()
        if not any(p):
            p = _pinhole_p(k[0], k[4], k[2], k[5])

        binning_x = int(getattr(msg, 'binning_x', 0) or 0) or 1
        binning_y = int(getattr(msg, 'binning_y', 0) or 0) or 1
        if binning_x < 1 or binning_y < 1:
            raise CameraInfoError(
                f'CameraInfo binning must be >= 0, got binning_x={binning_x} binning_y={binning_y}'
            )
        roi = getattr(msg, 'roi', None)
        x_off = int(getattr(roi, 'x_offset', 0) or 0)
        y_off = int(getattr(roi, 'y_offset', 0) or 0)
        roi_w = int(getattr(roi, 'width', 0) or 0)
        roi_h = int(getattr(roi, 'height', 0) or 0)
        if roi_w == 0 or roi_h == 0:
            x_off, y_off, roi_w, roi_h = 0, 0, full_w, full_h
        if x_off < 0 or y_off < 0 or x_off + roi_w > full_w or y_off + roi_h > full_h:
            raise CameraInfoError(
                f'CameraInfo.roi (x_offset={x_off}, y_offset={y_off}, width={roi_w}, '
                f'height={roi_h}) does not fit in the {full_w}x{full_h} calibrated image'
            )
        width, height = roi_w // binning_x, roi_h // binning_y
        if width == 0 or height == 0:
            raise CameraInfoError(
                f'CameraInfo.roi {roi_w}x{roi_h} binned by {binning_x}x{binning_y} is empty'
            )
        # Pixel (u, v) of the binned ROI image is pixel (u*bx + x_off, v*by + y_off) of the full
        # image, so the principal point shifts by the offset and both scale by the binning.
        fx, fy = k[0] / binning_x, k[4] / binning_y
        cx, cy = (k[2] - x_off) / binning_x, (k[5] - y_off) / binning_y
        p_adj = list(p)
        p_adj[2] -= x_off
        p_adj[6] -= y_off
        for i in range(4):
            p_adj[i] /= binning_x
            p_adj[4 + i] /= binning_y
        return cls(
            width=width,
            height=height,
            fx_px=fx,
            fy_px=fy,
            cx_px=cx,
            cy_px=cy,
            distortion_model=str(getattr(msg, 'distortion_model', '') or ''),
            d=d,
            r=r,
            p=tuple(p_adj),
        )

    def scaled(self, width: int, height: int) -> CameraModel:
        """Return this camera for the image resized to ``width`` x ``height`` (cv2.resize).

        cv2.resize maps pixel centres, x' = (x + 0.5) * s - 0.5, so the principal point moves
        by that rule and focal lengths scale by s; distortion coefficients are unitless and
        stay as they are.
        """
        if int(width) != width or int(height) != height or width <= 0 or height <= 0:
            raise CameraInfoError(f'scaled size must be positive integers, got {width}x{height}')
        width, height = int(width), int(height)
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        p = list(self.p)
        for f, c, t, s in ((0, 2, 3, sx), (5, 6, 7, sy)):
            # P rows are [fx, 0, cx, Tx] and [0, fy, cy, Ty]: f and T scale, c moves like cx.
            p[f] *= s
            p[t] *= s
            p[c] = (p[c] + 0.5) * s - 0.5
        return dataclasses.replace(
            self,
            width=width,
            height=height,
            fx_px=self.fx_px * sx,
            fy_px=self.fy_px * sy,
            cx_px=(self.cx_px + 0.5) * sx - 0.5,
            cy_px=(self.cy_px + 0.5) * sy - 0.5,
            p=tuple(p),
        )

    # ---------------------------------------------------------------------------- properties

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return (self.width, self.height)

    @property
    def k(self) -> np.ndarray:
        """The 3x3 intrinsic matrix K (float64)."""
        return np.array(
            [[self.fx_px, 0.0, self.cx_px], [0.0, self.fy_px, self.cy_px], [0.0, 0.0, 1.0]]
        )

    @property
    def distortion_kind(self) -> str:
        """'none' (all-zero D), 'plumb_bob', 'rational_polynomial' or 'equidistant'."""
        return self._coefficients()[0]

    def _coefficients(self) -> tuple[str, tuple[float, ...]]:
        name = _DISTORTION_ALIASES.get(self.distortion_model.lower(), self.distortion_model)
        if not any(self.d):
            return 'none', ()
        if name not in _DISTORTION_LENGTHS:
            raise CameraInfoError(
                f'CameraInfo.distortion_model {self.distortion_model!r} is not supported; '
                f'supported: {", ".join(_DISTORTION_LENGTHS)}'
            )
        n = _DISTORTION_LENGTHS[name]
        coeffs = self.d[:n] + (0.0,) * (n - len(self.d))
        if any(self.d[n:]) or (name != 'equidistant' and len(self.d) < 4):
            raise CameraInfoError(
                f'CameraInfo.d has {len(self.d)} coefficients {list(self.d)}, which '
                f'{name!r} does not define (it takes {n})'
            )
        return name, coeffs

    def check_size(self, width: int, height: int, what: str = 'image') -> None:
        """Raise CameraInfoError unless the camera describes a ``width`` x ``height`` image."""
        if (int(width), int(height)) != (self.width, self.height):
            raise CameraInfoError(
                f'camera info is for a {self.width}x{self.height} image but the {what} is '
                f'{int(width)}x{int(height)} (check binning, ROI and the camera_info topic)'
            )

    # ---------------------------------------------------------------------------- projection

    def distort_normalized(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form lens model: undistorted (x/z, y/z) -> distorted normalized coordinates."""
        kind, c = self._coefficients()
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if kind == 'none':
            return x, y
        if kind == 'equidistant':
            r = np.hypot(x, y)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
            with np.errstate(invalid='ignore', divide='ignore'):
                scale = np.where(r > 1e-12, theta_d / r, 1.0)
            return x * scale, y * scale
        k1, k2, p1, p2, k3 = c[:5]
        k4, k5, k6 = c[5:8] if kind == 'rational_polynomial' else (0.0, 0.0, 0.0)
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xy = x * y
        xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy
        return xd, yd

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project optical-frame points [..., 3] to pixels [..., 2]; NaN for z <= 0."""
        points = np.asarray(points, dtype=np.float64)
        z = points[..., 2]
        with np.errstate(invalid='ignore', divide='ignore'):
            inv_z = np.where(z > 0, 1.0 / z, np.nan)
        xd, yd = self.distort_normalized(points[..., 0] * inv_z, points[..., 1] * inv_z)
        return np.stack([self.fx_px * xd + self.cx_px, self.fy_px * yd + self.cy_px], axis=-1)

    def ray_planes(self, decimation: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Return cached (x/z, y/z, valid) float32 planes of every ``decimation``-th ray.

        The third plane is None when every ray is valid; otherwise it is 1 where the ray is
        valid and NaN where it is not, so that multiplying depth by it blanks those points.
        Arrays are shared between callers and read-only.
        """
        return _ray_planes(self, _check_decimation(decimation))

    def to_camera_info_fields(self) -> dict[str, Any]:
        """Field values for a sensor_msgs/CameraInfo describing this (binned/cropped) image."""
        kind = self.distortion_kind
        model = self.distortion_model or 'plumb_bob'
        if kind != 'none':
            model = kind
        return {
            'height': self.height,
            'width': self.width,
            'distortion_model': model,
            'd': list(self.d),
            'k': self.k.reshape(-1).tolist(),
            'r': list(self.r),
            'p': list(self.p),
            'binning_x': 0,
            'binning_y': 0,
            'roi': {'x_offset': 0, 'y_offset': 0, 'height': 0, 'width': 0, 'do_rectify': False},
        }


# -------------------------------------------------------------------------------- ray tables


def decimation_for_budget(width: int, height: int, point_step: int, budget_bytes: int) -> int:
    """Return the smallest decimation whose organized cloud fits in ``budget_bytes``.

    A cloud of every n-th pixel is ceil(W/n) x ceil(H/n) points of ``point_step`` bytes (12
    for x, y, z; 16 with rgb). Used to keep ``points`` within what a best-effort reader of
    Fast DDS's default shared-memory transport (512 KiB segment) receives whole.
    """
    if budget_bytes < point_step:
        raise ConfigError(
            f'a cloud budget of {budget_bytes} bytes holds no {point_step}-byte point'
        )
    n = 1
    while -(-width // n) * -(-height // n) * point_step > budget_bytes:
        n += 1
    return n


def _check_decimation(decimation: int) -> int:
    if isinstance(decimation, bool) or int(decimation) != decimation or decimation < 1:
        raise ConfigError(f'decimation must be an integer >= 1, got {decimation!r}')
    return int(decimation)


def _radial_limit(camera: CameraModel, kind: str, coeffs: tuple[float, ...]) -> float:
    """Largest undistorted radius (r = |(x, y)|/z) up to which the lens model is one-to-one.

    Past the first fold of the radial polynomial two rays land on the same pixel and the
    iterative inverse may return the wrong one, so rays beyond it are marked invalid.
    """
    if kind == 'equidistant':
        theta = np.linspace(0.0, math.pi / 2, 20001)[:-1]
        t2 = theta * theta
        c = coeffs
        g = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
        folds = np.nonzero(np.diff(g) <= 0)[0]
        theta_max = theta[folds[0]] if folds.size else theta[-1]
        return float(math.tan(theta_max))
    r = np.linspace(0.0, 20.0, 40001)
    zero = np.zeros_like(r)
    xd, _ = CameraModel.distort_normalized(
        dataclasses.replace(camera, d=(coeffs[0], coeffs[1], 0.0, 0.0) + coeffs[4:]), r, zero
    )
    folds = np.nonzero(np.diff(xd) <= 0)[0]
    return float(r[folds[0]]) if folds.size else math.inf


def _undistort_points(
    pixels: np.ndarray, k: np.ndarray, dist: np.ndarray, *, fisheye: bool
) -> np.ndarray:
    """Pixels [N, 1, 2] -> normalized undistorted (x/z, y/z), iterating to convergence.

    The Python spelling differs by OpenCV version, and ROS installs the distribution's OpenCV
    (Ubuntu 22.04: 4.5.4, 24.04: 4.6): in 4.x the iterative form of undistortPoints is
    ``undistortPointsIter(src, K, D, R, P, criteria)`` and plain undistortPoints takes no
    criteria (5 fixed iterations); OpenCV 5 merged them. fisheye.undistortPoints takes
    criteria from 4.6 on; before that its own 10 Newton steps are used, and the reprojection
    check of the caller drops any ray that did not converge.
    """
    if fisheye:
        try:
            return cv2.fisheye.undistortPoints(pixels, k, dist, criteria=_UNDISTORT_CRITERIA)
        except TypeError:  # OpenCV < 4.6: no criteria keyword
            return cv2.fisheye.undistortPoints(pixels, k, dist)
    iterative = getattr(cv2, 'undistortPointsIter', None)
    if iterative is not None:  # OpenCV 3.3.1 - 4.x
        return iterative(pixels, k, dist, None, None, _UNDISTORT_CRITERIA)
    return cv2.undistortPoints(pixels, k, dist, criteria=_UNDISTORT_CRITERIA)


def _compute_rays(camera: CameraModel) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h, w = camera.height, camera.width
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    kind, coeffs = camera._coefficients()
    if kind == 'none':
        x = (u - camera.cx_px) / camera.fx_px
        y = (v - camera.cy_px) / camera.fy_px
        return x.astype(np.float32), y.astype(np.float32), None
    pixels = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    dist = np.asarray(coeffs, dtype=np.float64)
    und = _undistort_points(pixels, camera.k, dist, fisheye=kind == 'equidistant')
    und = und.reshape(h, w, 2)
    x, y = und[..., 0], und[..., 1]
    # Keep a ray only where the closed-form forward model maps it back onto its own pixel, and
    # the lens model is still one-to-one at its radius.
    xd, yd = camera.distort_normalized(x, y)
    error_px = np.hypot(camera.fx_px * xd + camera.cx_px - u, camera.fy_px * yd + camera.cy_px - v)
    with np.errstate(invalid='ignore'):
        valid = (error_px < _MAX_REPROJECTION_ERROR_PX) & (
            np.hypot(x, y) < _radial_limit(camera, kind, coeffs)
        )
    if valid.all():
        return x.astype(np.float32), y.astype(np.float32), None
    x = np.where(valid, x, np.nan).astype(np.float32)
    y = np.where(valid, y, np.nan).astype(np.float32)
    return x, y, np.where(valid, 1.0, np.nan).astype(np.float32)


def _read_only(*arrays: np.ndarray | None) -> None:
    for a in arrays:
        if a is not None:
            a.setflags(write=False)


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if dataclasses.is_dataclass(value):
        return sum(_nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


class ByteBoundedCache:
    """A thread-safe LRU cache of numpy tables whose total size stays under ``max_bytes``.

    Entries are weighed by the bytes of the arrays they hold (arrays in nested tuples and
    dataclasses; anything else weighs nothing). The least recently used entries are evicted
    until a new one fits; an entry larger than the whole budget is returned to its caller but
    not kept. Values are computed outside the lock (a second thread asking for the same key
    computes it too, and the first one stored wins), so a slow table never blocks lookups of
    the others.
    """

    def __init__(self, max_bytes: int, name: str = 'cache') -> None:
        if isinstance(max_bytes, bool) or int(max_bytes) != max_bytes or max_bytes < 0:
            raise ConfigError(f'{name} max_bytes must be an integer >= 0, got {max_bytes!r}')
        self.max_bytes = int(max_bytes)
        self.name = name
        self._entries: collections.OrderedDict[Hashable, tuple[Any, int]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the cached value of ``key``, computing and storing it when missing."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit[0]
        value = compute()
        size = _nbytes(value)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                return hit[0]
            if size > self.max_bytes:
                return value
            while self._entries and self._bytes + size > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
            self._entries[key] = (value, size)
            self._bytes += size
        return value

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


#: Ray tables of recent cameras: 12 B per pixel at most (x, y and the validity plane), so
#: 64 MiB holds a 1080p table with its decimated copies and a few VGA ones.
RAY_TABLE_CACHE = ByteBoundedCache(64 * 1024 * 1024, 'ray table cache')


def _ray_planes(
    camera: CameraModel, decimation: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    return RAY_TABLE_CACHE.get(
        (camera, decimation), functools.partial(_build_ray_planes, camera, decimation)
    )


def _build_ray_planes(
    camera: CameraModel, decimation: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if decimation == 1:
        planes = _compute_rays(camera)
    else:
        # Decimated tables are every n-th ray of the full table (same pixels as depth[::n, ::n]),
        # copied once so that per-frame OpenCV calls get contiguous arrays.
        planes = tuple(
            None if p is None else np.ascontiguousarray(p[::decimation, ::decimation])
            for p in _ray_planes(camera, 1)
        )
    _read_only(*planes)
    return planes  # type: ignore[return-value]


def camera_info_key(msg: Any) -> tuple:
    """Return what makes two CameraInfo messages (rclpy or rosbags) describe the same camera."""
    roi = msg.roi
    return (
        int(msg.height),
        int(msg.width),
        str(msg.distortion_model),
        tuple(float(v) for v in msg.d),
        tuple(float(v) for v in msg.k),
        tuple(float(v) for v in msg.r),
        tuple(float(v) for v in msg.p),
        int(msg.binning_x),
        int(msg.binning_y),
        (int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width)),
    )


class CameraModelCache:
    """The camera model of the newest CameraInfo, converted only when the calibration changes.

    Drivers repeat the same CameraInfo with every frame; building the model (and its ray
    table) once per calibration instead of once per frame is what keeps the cloud cheap.
    Used from one thread (the worker, or the bag tool's loop).
    """

    def __init__(self) -> None:
        self._source: Any = None
        self._key: tuple | None = None
        self._model: CameraModel | None = None
        self.error = ''

    def update(self, info: Any) -> tuple[CameraModel | None, str]:
        """Return ``(model, new_error)`` for ``info`` (None: no camera).

        ``new_error`` is the CameraInfoError text the first time a calibration fails (to log
        once), else ''; ``model`` is None for a calibration that cannot be used.
        """
        if info is None or info is self._source:
            return (None if info is None else self._model), ''
        self._source = info
        key = camera_info_key(info)
        if key == self._key:
            return self._model, ''
        self._key = key
        try:
            self._model = CameraModel.from_camera_info(info)
            self.error = ''
        except CameraInfoError as e:
            self._model = None
            self.error = str(e)
            return None, self.error
        return self._model, ''


# -------------------------------------------------------------------------------- back-projection


def _depth_plane(depth_m: np.ndarray, camera: CameraModel) -> np.ndarray:
    depth = np.asarray(depth_m)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise InvalidImageError(f'depth_m must be [H, W], got shape {depth.shape}')
    camera.check_size(depth.shape[1], depth.shape[0], what='depth map')
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    # REP 117's +Inf (nothing within range) and -Inf (too close) are no point: NaN points in
    # an organized cloud, as depth_image_proc's point_cloud_xyz makes of them.
    infinite = np.isinf(depth)
    if infinite.any():
        depth = np.where(infinite, np.float32(np.nan), depth)
    return depth


def _points(
    depth: np.ndarray, camera: CameraModel, decimation: int, rgb_packed: np.ndarray | None = None
) -> np.ndarray:
    """Return [h, w, 3] points, or [h, w, 4] with packed rgb as the fourth channel."""
    x_ray, y_ray, valid = camera.ray_planes(decimation)
    z = depth if valid is None else cv2.multiply(depth, valid)
    planes = [cv2.multiply(x_ray, z), cv2.multiply(y_ray, z), z]
    if rgb_packed is not None:
        planes.append(rgb_packed)
    # Multiplies and one interleaving pass in OpenCV; numpy's broadcast multiply into
    # [H, W, 3] is ~4x slower.
    return cv2.merge(planes).reshape(depth.shape + (len(planes),))


def backproject(depth_m: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Back-project a depth map [H, W] (metres along z) to optical-frame points [H, W, 3].

    Invalid depth (NaN, and REP 117's +-Inf) and pixels without a lens ray give NaN points.
    """
    return _points(_depth_plane(depth_m, camera), camera, 1)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack uint8 RGB [..., 3] into float32 [...] the way depth_image_proc does.

    The 32 bits are ``(r << 16) | (g << 8) | b`` with a zero top byte, reinterpreted as float32
    (PointCloud2 field ``rgb``, datatype FLOAT32), which is what RViz and PCL read.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.shape[-1:] != (3,):
        raise InvalidImageError(f'rgb must be [..., 3], got {rgb.shape}')
    lead = rgb.shape[:-1]
    # cvtColor wants an image; a single row keeps its per-row overhead out of [N, 3] inputs.
    image = rgb if rgb.ndim == 3 else rgb.reshape(1, -1, 3)
    # In little-endian memory (r << 16) | (g << 8) | b is the byte sequence b, g, r, 0; a
    # big-endian host reads those bytes reversed, so it swaps them before the alpha byte
    # (which cvtColor sets to 255) is masked off.
    packed = cv2.cvtColor(image, cv2.COLOR_RGB2BGRA).view(np.uint32).reshape(lead)
    if sys.byteorder == 'big':
        packed = packed.byteswap()
    packed &= np.uint32(0x00FFFFFF)
    return packed.view(np.float32)


def unpack_rgb(rgb_packed: np.ndarray) -> np.ndarray:
    """Invert ``pack_rgb``: float32 (or uint32) [...] -> uint8 RGB [..., 3]."""
    bits = np.asarray(rgb_packed)
    bits = bits.view(np.uint32) if bits.dtype.itemsize == 4 else bits.astype(np.uint32)
    out = np.empty(bits.shape + (3,), dtype=np.uint8)
    out[..., 0] = (bits >> 16) & 0xFF
    out[..., 1] = (bits >> 8) & 0xFF
    out[..., 2] = bits & 0xFF
    return out


@dataclasses.dataclass
class PointCloud:
    """Points in the optical frame, organized [h, w, 3] or compact [n, 3], with optional RGB.

    ``packed``, when set (``make_cloud`` sets it for coloured clouds), is float32 [..., 4]
    holding x, y, z and the packed rgb of each point, and ``xyz`` is a view into it; the
    PointCloud2 encoder then sends it without another interleaving pass.
    """

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    organized: bool = True
    packed: np.ndarray | None = dataclasses.field(default=None, repr=False)


def make_cloud(
    depth_m: np.ndarray,
    camera: CameraModel,
    rgb: np.ndarray | None = None,
    decimation: int = 1,
    organized: bool = True,
) -> PointCloud:
    """Build a point cloud from a depth map aligned with ``camera``.

    Every ``decimation``-th pixel in both directions is kept (rows 0, n, 2n, ...), so an
    organized cloud is ceil(H/n) x ceil(W/n). Invalid depth (NaN, and the +-Inf REP 117 uses
    for depth outside the range) becomes NaN points (organized) or is dropped (unorganized,
    which keeps finite points only). ``rgb`` is uint8 [H, W, 3] aligned with
    the depth map.
    """
    n = _check_decimation(decimation)
    depth = _depth_plane(depth_m, camera)
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != depth.shape + (3,) or rgb.dtype != np.uint8:
            raise InvalidImageError(
                f'rgb must be uint8 {list(depth.shape + (3,))} to colour the cloud, '
                f'got {rgb.dtype} {list(rgb.shape)}'
            )
    if n > 1:
        depth = np.ascontiguousarray(depth[::n, ::n])
        if rgb is not None:
            rgb = rgb[::n, ::n]
    if rgb is None:
        xyz = _points(depth, camera, n)
        if organized:
            return PointCloud(xyz=xyz, organized=True)
        return PointCloud(xyz=xyz[np.isfinite(xyz[..., 2])], organized=False)
    rgb = np.ascontiguousarray(rgb)
    packed = _points(depth, camera, n, pack_rgb(rgb))
    if organized:
        return PointCloud(xyz=packed[..., :3], rgb=rgb, organized=True, packed=packed)
    keep = np.isfinite(packed[..., 2])
    packed = packed[keep]
    return PointCloud(xyz=packed[:, :3], rgb=rgb[keep], organized=False, packed=packed)
