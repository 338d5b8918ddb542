"""KITTI Eigen split: raw images with the annotated depth maps (data_depth_annotated).

List lines (BTS ``eigen_train_files_with_gt.txt`` / ``eigen_test_files_with_gt.txt``):
``2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377``;
image paths are relative to the raw-data root, depth paths to the annotated-depth root.
Test lines whose depth is ``None`` have no ground truth and are skipped (and counted).

Depth PNGs are uint16, metres = value / 256, 0 = no LiDAR point. Frames are first cut to
the KITTI benchmark crop (352 x 1216, bottom centre, BTS ``do_kb_crop``), so every sample of
a split has one size. Intrinsics come from ``<date>/calib_cam_to_cam.txt`` (P_rect_02 /
P_rect_03) when the raw root has it, else the list's focal with the principal point at the
image centre (an approximation, a few pixels off).
"""

from __future__ import annotations

import functools
import os

import numpy as np
from torch.utils.data import Dataset

from moa_depth_ros.frame.pipeline import resize_to_input
from training.data.augment import AugmentConfig, augment
from training.data.base import (
    DatasetError,
    check_files_exist,
    intrinsics,
    join_root,
    make_sample,
    read_depth_png,
    read_rgb,
    shift_intrinsics,
)
from training.data.splits import read_list_file

KITTI_DEPTH_UNITS_PER_M = 256.0
KB_CROP_HW = (352, 1216)


@functools.lru_cache(maxsize=64)
def read_rect_projection(calib_path: str, camera: str) -> np.ndarray | None:
    """Read the 3x4 rectified projection ``P_rect_<camera>`` of a calib file (None if absent)."""
    if not os.path.isfile(calib_path):
        return None
    with open(calib_path, encoding='utf-8') as stream:
        for line in stream:
            key, _, values = line.partition(':')
            if key.strip() == f'P_rect_{camera}':
                try:
                    return np.array([float(v) for v in values.split()], np.float64).reshape(3, 4)
                except ValueError as e:
                    raise DatasetError(f'{calib_path}: bad P_rect_{camera} line {line!r}') from e
    return None


def kb_crop_box(height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the KITTI benchmark crop (bottom 352 rows, centred 1216 columns)."""
    if height < KB_CROP_HW[0] or width < KB_CROP_HW[1]:
        raise DatasetError(
            f'KITTI frame {height}x{width} is smaller than the benchmark crop {KB_CROP_HW}'
        )
    return height - KB_CROP_HW[0], (width - KB_CROP_HW[1]) // 2


class KITTIEigen(Dataset):
    """KITTI raw + annotated depth from a BTS-style Eigen list.

    Args:
        list_file: list of ``<image> <depth|None> <focal>`` lines.
        image_root: KITTI raw-data root (holds ``2011_09_26/...``).
        depth_root: annotated-depth root the depth paths are relative to.
        augment_cfg: augmentations (training) or None (evaluation).
        kb_crop: cut to the 352x1216 benchmark crop first (BTS ``do_kb_crop``).
        image_hw: resize the image (not the depth) to (height, width), e.g. model input.
        seed: base seed of the per-sample augmentation generator.
        check_files: stat every listed file now and report all missing ones at once.
    """

    def __init__(
        self,
        list_file: str,
        image_root: str,
        depth_root: str,
        *,
        augment_cfg: AugmentConfig | None = None,
        kb_crop: bool = True,
        image_hw: tuple[int, int] | None = None,
        seed: int = 0,
        check_files: bool = True,
    ) -> None:
        entries = read_list_file(list_file)
        self.skipped_no_depth = sum(e.depth is None for e in entries)
        self.entries = [e for e in entries if e.depth is not None]
        self.image_root = image_root
        self.depth_root = depth_root
        self.augment_cfg = augment_cfg
        self.kb_crop = kb_crop
        self.image_hw = image_hw
        self.seed = seed
        self.epoch = 0
        if check_files:
            paths = []
            for e in self.entries:
                paths += [join_root(image_root, e.image), join_root(depth_root, e.depth)]
            check_files_exist(paths, f'the KITTI list {list_file}')

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations each epoch, still reproducibly."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def _intrinsics(self, image_path: str, focal_px: float, height: int, width: int):
        parts = image_path.strip('/').split('/')
        camera = '03' if 'image_03' in parts else '02'
        p = read_rect_projection(
            join_root(self.image_root, f'{parts[0]}/calib_cam_to_cam.txt'), camera
        )
        if p is not None:
            return intrinsics(p[0, 0], p[1, 1], p[0, 2], p[1, 2])
        return intrinsics(focal_px, focal_px, (width - 1) / 2.0, (height - 1) / 2.0)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        rgb = read_rgb(join_root(self.image_root, entry.image))
        depth = read_depth_png(join_root(self.depth_root, entry.depth), KITTI_DEPTH_UNITS_PER_M)
        if rgb.shape[:2] != depth.shape:
            raise DatasetError(
                f'{entry.image}: image {rgb.shape[:2]} and depth {depth.shape} sizes differ'
            )
        h, w = depth.shape
        K = self._intrinsics(entry.image, entry.focal_px, h, w)
        if self.kb_crop:
            top, left = kb_crop_box(h, w)
            ch, cw = KB_CROP_HW
            rgb, depth = (
                rgb[top : top + ch, left : left + cw],
                depth[top : top + ch, left : left + cw],
            )
            K = shift_intrinsics(K, left, top)
        image = rgb.astype(np.float32) / np.float32(255.0)
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, depth, K = augment(image, depth, K, self.augment_cfg, rng)
        if self.image_hw is not None:
            image = resize_to_input(image, self.image_hw)
        return make_sample(image, depth, K, entry.image.lstrip('/'))
