"""Training augmentations of the BTS / AdaBins / SPACE-CLIP recipes, applied jointly.

Order as BTS ``dataloader.py``: random rotation, random crop, horizontal flip (p = 0.5),
then with p = 0.5 the photometric block: gamma, brightness, per-channel colour gain, clip.
Contrast and saturation jitter are extra knobs, off in the paper presets.

Geometry moves image and depth together: the image is resampled bicubically, the depth
with nearest neighbour (depth values are never blended across an edge) and pixels that
come from outside the frame are 0 = invalid. ``K`` follows crops and flips; a rotation of
a few degrees about the image centre is treated as a camera roll and leaves ``K`` as is.

Every random draw comes from the generator passed in, so a (seed, epoch, index) triple
reproduces a sample exactly, in any DataLoader worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from moa_depth_ros.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; ranges are (low, high) of a uniform draw."""

    hflip_prob: float = 0.5
    rotate_deg: float = 0.0  # angle uniform in [-rotate_deg, rotate_deg]
    photometric_prob: float = 0.5
    gamma_range: tuple[float, float] = (0.9, 1.1)
    brightness_range: tuple[float, float] = (0.75, 1.25)
    color_range: tuple[float, float] = (0.9, 1.1)  # per-channel gain
    contrast_range: tuple[float, float] = (1.0, 1.0)
    saturation_range: tuple[float, float] = (1.0, 1.0)
    crop_hw: tuple[int, int] | None = None  # random crop (height, width); None keeps size

    @classmethod
    def nyu(cls) -> AugmentConfig:
        """BTS NYU: rotation 2.5 deg, brightness 0.75-1.25, random crop 416x544."""
        return cls(rotate_deg=2.5, brightness_range=(0.75, 1.25), crop_hw=(416, 544))

    @classmethod
    def kitti(cls) -> AugmentConfig:
        """BTS KITTI: rotation 1 deg, brightness 0.9-1.1, random crop 352x704."""
        return cls(rotate_deg=1.0, brightness_range=(0.9, 1.1), crop_hw=(352, 704))

    @classmethod
    def synthetic(cls) -> AugmentConfig:
        """NYU recipe without the crop: synthetic frames are rendered at model size."""
        return cls(rotate_deg=2.5, brightness_range=(0.75, 1.25), crop_hw=None)

    @classmethod
    def recording(cls) -> AugmentConfig:
        """Return the recipe of a robot's own recording: flips and colours, no rotation or crop.

        The robot's camera is mounted level at one height: a roll or a crop would show the
        network views the robot never has (``RGBDRecording`` applies the flip and colours).
        """
        return cls(rotate_deg=0.0, brightness_range=(0.8, 1.2), crop_hw=None)


def as_numpy_rng(rng: np.random.Generator | torch.Generator | int | None) -> np.random.Generator:
    """Accept a numpy Generator, a torch Generator (one draw seeds numpy) or a seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        return np.random.default_rng(seed)
    return np.random.default_rng(rng)


def random_crop(
    image: np.ndarray,
    depth_m: np.ndarray,
    K: np.ndarray,
    crop_hw: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = depth_m.shape[:2]
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    if ch > h or cw > w:
        raise ConfigError(f'crop_hw {ch}x{cw} is larger than the sample {h}x{w}')
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    k = np.array(K, np.float64, copy=True)
    k[0, 2] -= left
    k[1, 2] -= top
    return image[top : top + ch, left : left + cw], depth_m[top : top + ch, left : left + cw], k


def hflip(
    image: np.ndarray,
    depth_m: np.ndarray,
    K: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = depth_m.shape[1]
    k = np.array(K, np.float64, copy=True)
    k[0, 2] = (w - 1) - k[0, 2]
    return image[:, ::-1], depth_m[:, ::-1], k


def rotate(
    image: np.ndarray, depth_m: np.ndarray, angle_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate both about the image centre; the image bicubic, the depth nearest, fill 0."""
    h, w = depth_m.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, 1.0)
    image_r = cv2.warpAffine(
        np.ascontiguousarray(image),
        m,
        (w, h),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    depth_r = cv2.warpAffine(
        np.ascontiguousarray(depth_m),
        m,
        (w, h),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return np.clip(image_r, 0.0, 1.0), depth_r


def photometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """BTS ``augment_image``: gamma, brightness, per-channel gain (plus optional jitter)."""
    out = np.power(np.clip(image, 0.0, 1.0), np.float32(rng.uniform(*cfg.gamma_range)))
    out = out * np.float32(rng.uniform(*cfg.brightness_range))
    if cfg.contrast_range != (1.0, 1.0):
        mean = out.mean(dtype=np.float32)
        out = (out - mean) * np.float32(rng.uniform(*cfg.contrast_range)) + mean
    if cfg.saturation_range != (1.0, 1.0):
        gray = out @ np.array([0.299, 0.587, 0.114], np.float32)
        out = gray[..., None] + (out - gray[..., None]) * np.float32(
            rng.uniform(*cfg.saturation_range)
        )
    out = out * rng.uniform(*cfg.color_range, size=3).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def augment(
    image: np.ndarray,
    depth_m: np.ndarray,
    K: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator | torch.Generator | int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one sample: image float32 RGB [H,W,3] in [0,1], depth [H,W], K [3,3].

    Returns new arrays (inputs are not modified) in the same formats.
    """
    rng = as_numpy_rng(rng)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / np.float32(255.0)
    image = image.astype(np.float32, copy=False)
    depth_m = depth_m.astype(np.float32, copy=False)
    K = np.asarray(K, np.float64)
    if image.shape[:2] != depth_m.shape[:2]:
        raise ConfigError(
            f'image {image.shape[:2]} and depth {depth_m.shape[:2]} must have the same size'
        )
    if cfg.rotate_deg > 0:
        image, depth_m = rotate(image, depth_m, rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    if cfg.crop_hw is not None:
        image, depth_m, K = random_crop(image, depth_m, K, cfg.crop_hw, rng)
    if rng.uniform() < cfg.hflip_prob:
        image, depth_m, K = hflip(image, depth_m, K)
    if rng.uniform() < cfg.photometric_prob:
        image = photometric(image, cfg, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(depth_m), K
