"""``SyntheticRooms``: the procedural scenes of ``training.data.synthetic`` as a Dataset.

Scenes render on the fly (a 128x128 frame in a few milliseconds) and are optionally kept
in memory. Each split draws its scene seeds from its own range
(``training.data.splits.SYNTHETIC_SEED_RANGES``), so val/test scenes are never trained on.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from training.data.augment import AugmentConfig, augment
from training.data.base import make_sample
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
        hfov_deg: fixed horizontal field of view; None draws 56-66 deg per scene.
        supersample: colour rays per pixel along each axis (anti-aliasing; depth exact).
        camera_height_m: range of the camera's height above the floor (metres).
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
        hfov_deg: float | None = None,
        supersample: int = 1,
        camera_height_m: tuple[float, float] = CAMERA_HEIGHT_RANGE_M,
    ) -> None:
        self.scene_seeds = synthetic_scene_seeds(split, int(n), int(seed))
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.seed = int(seed)
        self.split = split
        self.augment_cfg = augment_cfg
        self.hfov_deg = hfov_deg
        self.supersample = int(supersample)
        self.camera_height_m = (float(camera_height_m[0]), float(camera_height_m[1]))
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
        sample = render_scene(
            scene_seed,
            w,
            h,
            hfov_deg=self.hfov_deg,
            supersample=self.supersample,
            camera_height_m=self.camera_height_m,
        )
        if self._cache is not None:
            self._cache[scene_seed] = sample
        return sample

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(index)
        image = scene.rgb.astype(np.float32) / np.float32(255.0)
        depth, K = scene.depth_m, scene.K
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, depth, K = augment(image, depth, K, self.augment_cfg, rng)
        return make_sample(image, depth, K, f'synthetic_{self.split}_{self.scene_seeds[index]}')
