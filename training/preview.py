"""One PNG that shows what the depth pipeline made of a frame: RGB | depth | confidence | top view.

The quickstart writes it to ``runs/quickstart/preview.png`` so a user can judge the model at
a glance. Panels, left to right, all at the camera's resolution:

1. the input RGB;
2. depth (turbo colour map over the frame's 2-98 percentile, near red, far blue; invalid
   black);
3. confidence (grey, 1 = white);
4. the point cloud seen from above (optical x to the right, z up the panel, camera at the
   bottom centre), coloured by the image; ground-truth points, when given, are drawn grey
   underneath, so a scale error shows as two offset outlines.
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

_LABEL_HEIGHT_PX = 18


def colorize_depth(depth_m: np.ndarray, range_m: tuple[float, float]) -> np.ndarray:
    """Depth [H, W] -> BGR uint8 with the turbo map (near red, far blue); NaN/<=0 black."""
    lo, hi = float(range_m[0]), float(range_m[1])
    valid = np.isfinite(depth_m) & (depth_m > 0)
    # Inverse depth spreads the colours where indoor scenes have most of their pixels.
    inv = np.where(valid, 1.0 / np.maximum(depth_m, 1e-6), 0.0)
    inv_lo, inv_hi = 1.0 / hi, 1.0 / max(lo, 1e-6)
    unit = np.clip((inv - inv_lo) / max(inv_hi - inv_lo, 1e-9), 0.0, 1.0)
    # turbo maps 0 to dark blue and 1 to dark red: far blue, near red.
    colored = cv2.applyColorMap((unit * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    colored[~valid] = 0
    return colored


def colorize_confidence(confidence: np.ndarray) -> np.ndarray:
    grey = (np.clip(np.nan_to_num(confidence, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def top_view(
    points_xyz: np.ndarray,
    colors_rgb: np.ndarray | None,
    size_hw: tuple[int, int],
    max_range_m: float,
    gt_points_xyz: np.ndarray | None = None,
) -> np.ndarray:
    """Bird's-eye view of optical-frame points [N, 3]: x right, z forward (up the panel)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    canvas = np.full((h, w, 3), 24, np.uint8)
    scale = (h - 4) / max(max_range_m, 1e-6)  # pixels per metre; z = max_range at the top
    # Range rings every metre help read distances.
    for r_m in range(1, int(max_range_m) + 1):
        cv2.circle(canvas, (w // 2, h - 2), int(r_m * scale), (60, 60, 60), 1)

    def draw(xyz: np.ndarray, bgr: np.ndarray) -> None:
        good = np.isfinite(xyz).all(axis=1) & (xyz[:, 2] > 0)
        xyz, bgr = xyz[good], bgr[good]
        u = np.round(w / 2 + xyz[:, 0] * scale).astype(np.int64)
        v = np.round(h - 2 - xyz[:, 2] * scale).astype(np.int64)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        canvas[v[inside], u[inside]] = bgr[inside]

    if gt_points_xyz is not None:
        gt = gt_points_xyz.reshape(-1, 3)
        draw(gt, np.full((len(gt), 3), 150, np.uint8))
    pts = points_xyz.reshape(-1, 3)
    if colors_rgb is None:
        bgr = np.full((len(pts), 3), (80, 220, 255), np.uint8)
    else:
        bgr = np.ascontiguousarray(colors_rgb.reshape(-1, 3)[:, ::-1])
    draw(pts, bgr)
    cv2.drawMarker(canvas, (w // 2, h - 3), (255, 255, 255), cv2.MARKER_TRIANGLE_UP, 8, 1)
    return canvas


def _labelled(panel: np.ndarray, text: str) -> np.ndarray:
    bar = np.zeros((_LABEL_HEIGHT_PX, panel.shape[1], 3), np.uint8)
    cv2.putText(bar, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return np.vstack([bar, panel])


def make_preview(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    confidence: np.ndarray,
    points_xyz: np.ndarray,
    *,
    range_m: tuple[float, float],
    gt_points_xyz: np.ndarray | None = None,
    min_panel_height_px: int = 240,
) -> np.ndarray:
    """Compose the four labelled panels into one BGR uint8 image."""
    h, w = rgb.shape[:2]
    # Small model inputs make tiny images: scale panels up (nearest) to stay readable.
    zoom = max(1, int(np.ceil(min_panel_height_px / h)))
    size = (w * zoom, h * zoom)

    def up(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)

    finite = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if finite.size:
        # Colour over this frame's own depths: the model's range would wash everything out.
        near_m, far_m = (float(v) for v in np.percentile(finite, [2, 98]))
        near_m, far_m = max(near_m, float(range_m[0])), max(far_m, near_m + 0.1)
    else:
        near_m, far_m = float(range_m[0]), float(range_m[1])
    view_m = far_m
    if gt_points_xyz is not None:
        gt_z = gt_points_xyz[..., 2]
        gt_z = gt_z[np.isfinite(gt_z)]
        if gt_z.size:
            view_m = max(view_m, float(np.percentile(gt_z, 98)))
    colors = rgb if points_xyz.shape[:2] == rgb.shape[:2] else None
    panels = [
        _labelled(up(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), 'RGB'),
        _labelled(
            up(colorize_depth(depth_m, (near_m, far_m))),
            f'depth {near_m:.1f} (red) - {far_m:.1f} m (blue)',
        ),
        _labelled(up(colorize_confidence(confidence)), 'confidence'),
        _labelled(
            top_view(points_xyz, colors, (size[1], size[0]), 1.1 * view_m, gt_points_xyz),
            'top view (grey: ground truth)' if gt_points_xyz is not None else 'top view',
        ),
    ]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.hstack(row)


def write_png(path: str | os.PathLike, image_bgr: np.ndarray) -> pathlib.Path:
    """Encode and write a PNG atomically."""
    path = pathlib.Path(path)
    ok, buffer = cv2.imencode('.png', image_bgr)
    if not ok:
        raise OSError(f'cv2 could not encode a PNG of shape {image_bgr.shape}')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    tmp.write_bytes(buffer.tobytes())
    os.replace(tmp, path)
    return path
