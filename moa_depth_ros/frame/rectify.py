"""Rectification: the one rectified pinhole grid every output of the package describes.

ROS consumers of a depth image (depth_image_proc's ``point_cloud_xyz``, RViz's DepthCloud,
depthimage_to_laserscan) take fx, fy, cx, cy from the camera_info's P and ignore D: they
assume a *rectified* image (image_pipeline's ``depth_image_proc/src/point_cloud_xyz.cpp`` and
``include/depth_image_proc/conversions.hpp``). So the package publishes depth, confidence and
points on the rectified camera of its input:

- ``rectified_camera(camera)``: the pinhole camera image_proc's ``rectify`` produces,
  K = P[:3, :3], D = 0, R = I, P kept (at the camera's own size; ``CameraModel.scaled``
  resizes it).
- ``Rectifier``: the maps from that grid back into a raw image (the model of
  ``cv2.initUndistortRectifyMap``: rectified pixel -> P[:3, :3]^-1 -> R^T -> distortion D
  -> K), built once per calibration with the closed-form lens model of
  ``CameraModel.distort_normalized`` (plumb_bob, rational_polynomial, equidistant) and
  cached in ``RECTIFY_MAP_CACHE``, bounded in bytes. ``rectify_image`` resamples a colour
  image bilinearly (OpenCV's fixed-point maps, as image_proc); ``rectify_depth`` takes the
  nearest raw pixel (depth is never blended across an edge). A rectified pixel whose ray
  leaves the raw image, or lies beyond the fold of the lens model, sees nothing: black in
  the image, NaN in the depth, ``invalid`` in the mask.
- ``input_rectified=True`` declares an image that is already rectified (image_proc's
  ``image_rect`` with its camera's camera_info, D still non-zero): then nothing is resampled
  and P is the camera, D ignored, as every ROS consumer does.

The node and the bag tool (through ``pipeline.DepthPipeline``) and training on RGB-D
recordings use these functions, so a network sees the same rectified image everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from moa_depth_ros.errors import InvalidImageError
from moa_depth_ros.frame import geometry
from moa_depth_ros.frame.geometry import CameraModel

_IDENTITY_3X3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_ZERO_PLUMB_BOB = (0.0, 0.0, 0.0, 0.0, 0.0)

#: Maps of recent calibrations: 15-19 B per pixel (float and fixed-point maps, a mask), so
#: 160 MiB holds a 4K camera's maps or a dozen VGA ones.
RECTIFY_MAP_CACHE = geometry.ByteBoundedCache(160 * 1024 * 1024, 'rectification map cache')


def rectified_camera(camera: CameraModel) -> CameraModel:
    """Return the rectified pinhole camera of ``camera``: K = P[:3, :3], D = 0, R = I.

    The image size stays the camera's; P (with its Tx, Ty for a stereo pair) is kept, so a
    consumer reading K or P gets the same focal lengths and principal point.
    """
    p = camera.p
    return CameraModel(
        width=camera.width,
        height=camera.height,
        fx_px=p[0],
        fy_px=p[5],
        cx_px=p[2],
        cy_px=p[6],
        distortion_model='plumb_bob',
        d=_ZERO_PLUMB_BOB,
        r=_IDENTITY_3X3,
        p=p,
    )


def _is_identity(camera: CameraModel) -> bool:
    """Say whether the raw image already is its rectified image (no D, R = I, P[:3,:3] = K)."""
    p = camera.p
    return (
        camera.distortion_kind == 'none'
        and camera.r == _IDENTITY_3X3
        and (p[0], p[1], p[2], p[5], p[6])
        == (camera.fx_px, 0.0, camera.cx_px, camera.fy_px, camera.cy_px)
        and (p[4], p[8], p[9], p[10]) == (0.0, 0.0, 0.0, 1.0)
    )


@dataclasses.dataclass(frozen=True)
class RectifyMaps:
    """Where each rectified pixel samples the raw image.

    ``map_x``, ``map_y``: float32 [H, W] raw pixel coordinates (cv2.remap's maps);
    ``invalid``: bool [H, W], True where the rectified pixel sees no raw pixel (None: none);
    ``depth_factor``: float32 [H, W], rectified z over raw z along each pixel's ray (None when
    R = I, where an undistortion leaves z as it is).
    """

    map_x: np.ndarray
    map_y: np.ndarray
    invalid: np.ndarray | None
    depth_factor: np.ndarray | None = None
    fixed: tuple[np.ndarray, np.ndarray] | None = None


def _compute_maps(camera: CameraModel) -> RectifyMaps:
    h, w = camera.height, camera.width
    p = camera.p
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    # Rectified pixel -> ray in the rectified frame -> ray in the raw camera's frame (R^T).
    x_rect = (u - p[2]) / p[0]
    y_rect = (v - p[6]) / p[5]
    r = np.asarray(camera.r, dtype=np.float64).reshape(3, 3)
    x = r[0, 0] * x_rect + r[1, 0] * y_rect + r[2, 0]
    y = r[0, 1] * x_rect + r[1, 1] * y_rect + r[2, 1]
    z = r[0, 2] * x_rect + r[1, 2] * y_rect + r[2, 2]
    ahead = z > 1e-12
    with np.errstate(invalid='ignore', divide='ignore'):
        x = np.where(ahead, x / z, 0.0)
        y = np.where(ahead, y / z, 0.0)
    kind, coeffs = camera._coefficients()
    limit = math.inf if kind == 'none' else geometry._radial_limit(camera, kind, coeffs)
    xd, yd = camera.distort_normalized(x, y)
    map_x = camera.fx_px * xd + camera.cx_px
    map_y = camera.fy_px * yd + camera.cy_px
    # Inside the raw image (cv2.remap's nearest takes round(map), bilinear needs both
    # neighbours), in front of the camera, and where the lens model is still one-to-one.
    with np.errstate(invalid='ignore'):
        valid = (
            ahead
            & (np.hypot(x, y) < limit)
            & (map_x >= 0)
            & (map_x <= w - 1)
            & (map_y >= 0)
            & (map_y <= h - 1)
        )
    # Outside: a coordinate remap's BORDER_CONSTANT turns black (image) / NaN (depth).
    map_x = np.where(valid, map_x, -1.0).astype(np.float32)
    map_y = np.where(valid, map_y, -1.0).astype(np.float32)
    invalid = None if valid.all() else ~valid
    # The raw ray (x, y, 1) is R^T (x_rect, y_rect, 1) / z: a raw depth Z is Z / z along the
    # rectified axis.
    depth_factor = None
    if camera.r != _IDENTITY_3X3:
        with np.errstate(invalid='ignore', divide='ignore'):
            depth_factor = np.where(ahead, 1.0 / z, np.nan).astype(np.float32)
    # Bilinear remapping of images runs ~30 % faster on fixed-point maps (1/32 px steps).
    fixed = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
    for a in (map_x, map_y, invalid, depth_factor, *fixed):
        if a is not None:
            a.setflags(write=False)
    return RectifyMaps(map_x, map_y, invalid, depth_factor, tuple(fixed))


def _maps(camera: CameraModel) -> RectifyMaps:
    return RECTIFY_MAP_CACHE.get(camera, functools.partial(_compute_maps, camera))


class Rectifier:
    """Resample images of ``camera`` onto its rectified grid (``output``).

    ``input_rectified``: the images are already rectified (image_proc's image_rect): nothing
    is resampled and ``output`` is the pinhole camera of P, D ignored. ``identity`` says
    whether images pass through unchanged (rectified input, or a raw camera without
    distortion whose P equals K).
    """

    def __init__(self, camera: CameraModel, input_rectified: bool = False) -> None:
        if not isinstance(camera, CameraModel):
            raise TypeError(f'camera must be a CameraModel, got {type(camera).__name__}')
        self.source = camera
        self.input_rectified = bool(input_rectified)
        self.output = rectified_camera(camera)
        self.identity = self.input_rectified or _is_identity(camera)

    @property
    def maps(self) -> RectifyMaps | None:
        """The (cached) remap tables, None when images pass through unchanged."""
        return None if self.identity else _maps(self.source)

    @property
    def invalid(self) -> np.ndarray | None:
        """Mask (bool [H, W]) of the rectified grid: True where no raw pixel is seen, or None."""
        maps = self.maps
        return None if maps is None else maps.invalid

    def invalid_at(self, width: int, height: int) -> np.ndarray | None:
        """``invalid`` resized to a ``width`` x ``height`` output (nearest pixel centre)."""
        invalid = self.invalid
        if invalid is None or invalid.shape == (height, width):
            return invalid
        resized = cv2.resize(
            invalid.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST_EXACT
        )
        return resized.astype(bool)

    def _check(self, image: np.ndarray, what: str) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
            raise InvalidImageError(f'{what} must be [H, W] or [H, W, C], got {image.shape}')
        self.source.check_size(image.shape[1], image.shape[0], what=what)
        return image

    def rectify_image(self, image: np.ndarray) -> np.ndarray:
        """Return the rectified image (bilinear; black where no raw pixel is seen).

        ``image`` is [H, W] or [H, W, C] of any dtype cv2.remap takes (uint8 RGB, float32);
        returned unchanged (not copied) when ``identity``.
        """
        image = self._check(image, 'image')
        maps = self.maps
        if maps is None:
            return image
        return cv2.remap(
            image,
            *maps.fixed,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def rectify_depth(self, depth_m: np.ndarray) -> np.ndarray:
        """Return the rectified depth map, float32 metres (nearest raw pixel; NaN where unseen).

        Depth is not blended: each rectified pixel takes the depth of the raw pixel nearest
        to where it samples, so edges do not smear into phantom points. Invalid raw depth
        (NaN, as ``msgs.decode_depth`` gives for 16UC1's 0) stays invalid. Depth along the
        optical axis is unchanged by a pure undistortion (R = I); with a stereo rotation R it
        is converted to the rectified camera's axis.
        """
        depth = self._check(depth_m, 'depth map')
        if depth.ndim == 3:
            if depth.shape[2] != 1:
                raise InvalidImageError(f'depth map must be [H, W], got {depth.shape}')
            depth = depth[..., 0]
        depth = np.ascontiguousarray(depth, dtype=np.float32)
        maps = self.maps
        if maps is None:
            return depth
        out = cv2.remap(
            depth,
            maps.map_x,
            maps.map_y,
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float('nan'),
        )
        if maps.depth_factor is not None:
            out = cv2.multiply(out, maps.depth_factor)
        return out


def rectifier(camera: CameraModel, input_rectified: bool = False) -> Rectifier:
    """Return the ``Rectifier`` of ``camera`` (its maps are shared through the byte cache)."""
    return Rectifier(camera, input_rectified)
