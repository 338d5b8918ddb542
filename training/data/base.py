"""What every dataset shares: the sample format, file checks, image and depth decoding.

A sample is a dict of tensors that torch's default collate batches as is:
``image`` float32 [3,H,W] RGB in [0,1], ``depth_m`` float32 [1,H,W] metres (0 = invalid),
``K`` float32 [3,3] intrinsics of ``depth_m``'s pixel grid, ``focal_px`` float32 scalar
(``K[0,0]``, what the BTS lists carry), ``name`` str.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame.pipeline import resize_to_input
from moa_depth_ros.frame.scale import focal_at_input_px

# How many missing paths one error message names before it only counts the rest.
MAX_LISTED_MISSING = 10


class DatasetError(ConfigError):
    """A dataset that cannot be read: a bad list line, an unreadable or corrupt file."""


class MissingDataError(DatasetError, FileNotFoundError):
    """Files named by a dataset configuration that are not on disk (all of them at once)."""

    def __init__(self, what: str, missing: Sequence[str], total: int) -> None:
        self.missing = list(missing)
        shown = '\n  '.join(self.missing[:MAX_LISTED_MISSING])
        more = len(self.missing) - MAX_LISTED_MISSING
        tail = f'\n  ... and {more} more' if more > 0 else ''
        super().__init__(
            f'{len(self.missing)} of {total} files of {what} are missing:\n  {shown}{tail}'
        )


def check_files_exist(paths: Iterable[str], what: str) -> None:
    """Raise one MissingDataError naming every missing path (first few + count)."""
    paths = list(paths)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise MissingDataError(what, missing, len(paths))


def join_root(root: str, relative: str) -> str:
    """Join a list entry to its root; BTS lists write NYU paths with a leading slash."""
    return os.path.join(root, relative.lstrip('/')) if root else relative


def read_rgb(path: str) -> np.ndarray:
    """Read an 8-bit colour image as uint8 RGB [H,W,3]."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f'cannot decode image file {path!r}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth_png(path: str, units_per_m: float) -> np.ndarray:
    """Read a 16-bit depth PNG as float32 metres (0 stays 0 = invalid)."""
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f'cannot decode depth file {path!r}')
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise DatasetError(
            f'depth file {path!r} must be a single-channel 16-bit PNG, '
            f'got dtype {raw.dtype} shape {raw.shape}'
        )
    return raw.astype(np.float32) / np.float32(units_per_m)


def intrinsics(fx_px: float, fy_px: float, cx_px: float, cy_px: float) -> np.ndarray:
    return np.array([[fx_px, 0.0, cx_px], [0.0, fy_px, cy_px], [0.0, 0.0, 1.0]], np.float64)


def shift_intrinsics(K: np.ndarray, dx_px: float, dy_px: float) -> np.ndarray:
    """Intrinsics after cropping ``dx_px`` columns and ``dy_px`` rows off the top left."""
    out = np.array(K, np.float64, copy=True)
    out[0, 2] -= dx_px
    out[1, 2] -= dy_px
    return out


def resize_batch(image: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize float images [N, 3, H, W] in [0, 1] to ``hw`` as the node does (``resize_to_input``).

    Datasets already deliver the model's input size; this is for one that does not (a
    synthetic set rendered at another size), so that the network never sees another resize.
    """
    if tuple(image.shape[-2:]) == tuple(hw):
        return image
    frames = image.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
    resized = np.stack([resize_to_input(frame, tuple(hw)) for frame in frames])
    return torch.from_numpy(resized).permute(0, 3, 1, 2).contiguous().to(image.device)


def pil_bicubic_resize(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB [H, W, 3] to ``hw`` as the official SPACE-CLIP loader does.

    ``PIL.Image.resize(..., Image.BICUBIC)`` straight to the network input: a bicubic kernel
    widened by the downscale factor (antialiased), rounded to uint8. Not the node's resize
    (``resize_to_input``: 2x box halvings, then bilinear); ``python -m training eval --resize
    pil_bicubic`` uses it to score a converted official checkpoint on the inputs it was
    trained and published with. They differ most at sharp edges (bicubic overshoots, the box
    filter blurs): on 480x640 -> 224x224, by 1.0 grey levels on average (at most 37) on the
    synthetic rooms and 0.4 (at most 2) on smooth (blurred-noise) images.
    """
    from PIL import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConfigError(f'pil_bicubic_resize needs uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}')
    h, w = (int(v) for v in hw)
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def make_sample(
    image: np.ndarray,
    depth_m: np.ndarray,
    K: np.ndarray,
    name: str,
) -> dict:
    """Pack numpy arrays into the sample dict (see module docstring).

    ``image`` is uint8 or float RGB [H,W,3] (float in [0,1]); ``depth_m`` float [H,W].
    """
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / np.float32(255.0)
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    depth = np.nan_to_num(np.asarray(depth_m, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    depth_t = torch.from_numpy(np.ascontiguousarray(depth))[None]
    k = torch.as_tensor(np.asarray(K, np.float32))
    return {
        'image': image_t.clamp_(0.0, 1.0),
        'depth_m': depth_t,
        'K': k,
        'focal_px': k[0, 0].clone(),
        'name': str(name),
    }


def canonical_scale(
    batch: dict, input_hw: tuple[int, int], canonical_focal_px: float
) -> torch.Tensor:
    """Per-sample factor from canonical to metric depth, float32 [N] (``frame.scale``).

    Each sample's focal length is taken from its ``K`` (the intrinsics of its depth grid)
    after resizing that grid to the network input, the way the runtime takes it from
    CameraInfo: labels become canonical as ``depth_m / scale`` and predictions metric as
    ``prediction * scale``. Crops and resizes change K, so they change the scale with them.
    """
    K = batch['K']
    depth_hw = tuple(batch['depth_m'].shape[-2:])
    scales = [
        focal_at_input_px(float(k[0, 0]), float(k[1, 1]), depth_hw[1], depth_hw[0], input_hw)
        / float(canonical_focal_px)
        for k in K
    ]
    return torch.tensor(scales, dtype=torch.float32)
