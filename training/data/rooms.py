"""``SyntheticRooms``: the procedural scenes of ``training.data.synthetic`` as a Dataset.

Scenes render on the fly (a 128x128 frame in a few milliseconds) and are optionally kept
in memory. Each split draws its scene seeds from its own range
(``training.data.splits.SYNTHETIC_SEED_RANGES``), so val/test scenes are never trained on.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from torch.utils.data import Dataset

from moa_depth_ros.frame.pipeline import resize_to_input
from training.data.augment import AugmentConfig, augment
from training.data.base import DatasetError, make_sample
from training.data.splits import synthetic_scene_seeds
from training.data.synthetic import CAMERA_HEIGHT_RANGE_M, SceneSample, render_scene


class SyntheticRooms(Dataset):
    """``n`` procedural rooms of one split at ``size_hw`` = (height, width).

    Args:
        n: number of scenes.
        size_hw: rendered size (height, width); render at the model input size.
        seed: offset of the first scene inside the split's seed range (and augment seed).
        split: 'train', 'val' or 'test'.
        augment_cfg: augmentations applied on top (training) or None.
        cache: keep rendered scenes in memory (per DataLoader worker).
        hfov_deg: horizontal field of view: fixed, a (low, high) range drawn per scene, or
            None for 56-66 deg.
        supersample: colour rays per pixel along each axis (anti-aliasing; depth exact).
        camera_height_m: range of the camera's height above the floor (metres).
        lens_sampling: how an ``hfov_deg`` range is drawn: 'angle' or 'focal' (uniform in
            focal length: narrow lenses more often).
        zoom_max: > 1 renders each room at ``zoom_max`` times ``size_hw`` and makes every
            sample a random window of it, up to ``zoom_max`` times narrower, resized to
            ``size_hw``: the same room through a longer lens, with K (and so the canonical
            labels) to match. A window is never narrower than the low end of an ``hfov_deg``
            range, and never smaller than ``size_hw`` (no upsampling blur).
    """

    def __init__(
        self,
        n: int,
        size_hw: tuple[int, int] = (128, 128),
        seed: int = 0,
        *,
        split: str = 'train',
        augment_cfg: AugmentConfig | None = None,
        cache: bool = True,
        hfov_deg: float | tuple[float, float] | None = None,
        supersample: int = 1,
        camera_height_m: tuple[float, float] = CAMERA_HEIGHT_RANGE_M,
        lens_sampling: str = 'angle',
        zoom_max: float = 1.0,
    ) -> None:
        self.scene_seeds = synthetic_scene_seeds(split, int(n), int(seed))
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.seed = int(seed)
        self.split = split
        self.augment_cfg = augment_cfg
        self.hfov_deg = hfov_deg
        self.supersample = int(supersample)
        self.camera_height_m = (float(camera_height_m[0]), float(camera_height_m[1]))
        self.lens_sampling = lens_sampling
        if not 1.0 <= float(zoom_max) <= 4.0:
            raise DatasetError(f'zoom_max must lie in [1, 4], got {zoom_max!r}')
        self.zoom_max = float(zoom_max)
        self.epoch = 0
        self._cache: dict[int, SceneSample] | None = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations each epoch, still reproducibly."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.scene_seeds)

    def scene(self, index: int) -> SceneSample:
        """Return the rendered scene behind sample ``index`` (before augmentation)."""
        scene_seed = self.scene_seeds[index]
        if self._cache is not None and scene_seed in self._cache:
            return self._cache[scene_seed]
        h, w = self.size_hw
        if self.zoom_max > 1.0:
            h, w = round(h * self.zoom_max), round(w * self.zoom_max)
        sample = render_scene(
            scene_seed,
            w,
            h,
            hfov_deg=self.hfov_deg,
            supersample=self.supersample,
            camera_height_m=self.camera_height_m,
            lens_sampling=self.lens_sampling,
        )
        if self._cache is not None:
            self._cache[scene_seed] = sample
        return sample

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(index)
        image = scene.rgb.astype(np.float32) / np.float32(255.0)
        depth, K = scene.depth_m, scene.K
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.zoom_max > 1.0:
            image, depth, K = self._window(image, depth, K, rng)
        if self.augment_cfg is not None:
            image, depth, K = augment(image, depth, K, self.augment_cfg, rng)
        return make_sample(image, depth, K, f'synthetic_{self.split}_{self.scene_seeds[index]}')

    def _window(self, image, depth, K, rng):
        """Cut a random window of the large render, resized to ``size_hw`` (``zoom_max``)."""
        big_h, big_w = depth.shape
        h, w = self.size_hw
        narrowest = self.hfov_deg[0] if isinstance(self.hfov_deg, (tuple, list)) else None
        min_w = float(w)
        if narrowest is not None:  # the window's field of view stays inside the range
            min_w = max(min_w, 2.0 * K[0, 0] * math.tan(math.radians(narrowest) / 2.0))
        win_w = big_w
        if min_w < big_w:
            win_w = int(round(math.exp(rng.uniform(math.log(min_w), math.log(big_w)))))
        win_h = min(big_h, max(h, int(round(win_w * h / w))))
        x0 = int(rng.integers(0, big_w - win_w + 1))
        y0 = int(rng.integers(0, big_h - win_h + 1))
        rx, ry = w / win_w, h / win_h
        # The image as a camera frame reaches the network: the node's resize.
        image = resize_to_input(image[y0 : y0 + win_h, x0 : x0 + win_w], (h, w))
        depth = cv2.resize(
            depth[y0 : y0 + win_h, x0 : x0 + win_w],
            (w, h),
            interpolation=cv2.INTER_NEAREST_EXACT,
        )
        # Pixel centres map as (u' + 0.5) = (u - x0 + 0.5) * rx.
        K = np.array(
            [
                [K[0, 0] * rx, 0.0, (K[0, 2] - x0 + 0.5) * rx - 0.5],
                [0.0, K[1, 1] * ry, (K[1, 2] - y0 + 0.5) * ry - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )
        return image, depth, K
