"""NYU Depth V2: the BTS/AdaBins "sync" layout and the official labeled .mat file.

Sync layout (training, 24k BTS / 50k AdaBins lists): ``<scene>/rgb_XXXXX.jpg`` and
``<scene>/sync_depth_XXXXX.png`` (uint16 millimetres, 0 = no measurement). The common
``official_splits/test`` folder (654 images, same list format) reads the same way.

Labeled file ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read with h5py): MATLAB
stores column-major, so h5py sees ``images`` as [N, 3, W, H] uint8 and ``rawDepths`` /
``depths`` as [N, W, H] float32 metres; both are transposed back to [H, W(, 3)] here. The
default depth is ``rawDepths``, as BTS's extraction script (the source of the standard test
pngs); ``depths`` is the in-painted variant. The official test
split is chosen by a file of 1-based indices (see ``training.data.splits``); the training
split of the labeled set is every other index (795 images).

Intrinsics: the NYU toolbox's RGB camera (fx 518.86, fy 519.47, cx 325.58, cy 253.74 px);
a list's focal column replaces fx and fy so a list written for another camera still works.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
from torch.utils.data import Dataset

from moa_depth_ros.frame.pipeline import resize_to_input
from training.data.augment import AugmentConfig, augment
from training.data.base import (
    DatasetError,
    MissingDataError,
    check_files_exist,
    intrinsics,
    join_root,
    make_sample,
    read_depth_png,
    read_rgb,
    shift_intrinsics,
)
from training.data.splits import read_indices, read_list_file

NYU_FX_PX, NYU_FY_PX, NYU_CX_PX, NYU_CY_PX = 518.8579, 519.4696, 325.5824, 253.7362
NYU_DEPTH_UNITS_PER_M = 1000.0
# BTS trains on x in [43, 608), y in [45, 472): the white border of the registered frames.
NYU_BORDER_CROP = (45, 43, 427, 565)  # top, left, height, width


def nyu_intrinsics(focal_px: float | None = None) -> np.ndarray:
    fx = NYU_FX_PX if focal_px is None else focal_px
    fy = NYU_FY_PX if focal_px is None else focal_px
    return intrinsics(fx, fy, NYU_CX_PX, NYU_CY_PX)


class NYUDepthV2(Dataset):
    """NYU Depth V2 in the sync layout, from a BTS-style list file.

    Args:
        list_file: list of ``<rgb> <depth> <focal>`` lines.
        image_root: folder the rgb paths are relative to.
        depth_root: folder the depth paths are relative to ('' = ``image_root``).
        augment_cfg: augmentations (training) or None (evaluation).
        border_crop: cut the white border first, as BTS does for training.
        image_hw: resize the image (not the depth) to (height, width), e.g. model input.
        seed: base seed of the per-sample augmentation generator.
        check_files: stat every listed file now and report all missing ones at once.
    """

    def __init__(
        self,
        list_file: str,
        image_root: str,
        depth_root: str = '',
        *,
        augment_cfg: AugmentConfig | None = None,
        border_crop: bool = False,
        image_hw: tuple[int, int] | None = None,
        seed: int = 0,
        check_files: bool = True,
    ) -> None:
        self.entries = read_list_file(list_file)
        self.image_root = image_root
        self.depth_root = depth_root or image_root
        # Lines without ground truth cannot be trained or scored; count them for the log.
        self.skipped_no_depth = sum(e.depth is None for e in self.entries)
        self.entries = [e for e in self.entries if e.depth is not None]
        self.augment_cfg = augment_cfg
        self.border_crop = border_crop
        self.image_hw = image_hw
        self.seed = seed
        self.epoch = 0
        if check_files:
            paths = []
            for e in self.entries:
                paths += [join_root(image_root, e.image), join_root(self.depth_root, e.depth)]
            check_files_exist(paths, f'the NYU list {list_file}')

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations each epoch, still reproducibly."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        rgb = read_rgb(join_root(self.image_root, entry.image))
        depth = read_depth_png(join_root(self.depth_root, entry.depth), NYU_DEPTH_UNITS_PER_M)
        if rgb.shape[:2] != depth.shape:
            raise DatasetError(
                f'{entry.image}: image {rgb.shape[:2]} and depth {depth.shape} sizes differ'
            )
        K = nyu_intrinsics(entry.focal_px)
        if self.border_crop:
            top, left, h, w = NYU_BORDER_CROP
            rgb, depth = rgb[top : top + h, left : left + w], depth[top : top + h, left : left + w]
            K = shift_intrinsics(K, left, top)
        image = rgb.astype(np.float32) / np.float32(255.0)
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, depth, K = augment(image, depth, K, self.augment_cfg, rng)
        if self.image_hw is not None:
            image = resize_to_input(image, self.image_hw)
        return make_sample(image, depth, K, entry.image.lstrip('/'))


class NYULabeled(Dataset):
    """The official ``nyu_depth_v2_labeled.mat`` (1449 frames), a subset by 1-based index.

    Args:
        mat_path: path of ``nyu_depth_v2_labeled.mat``.
        indices: 1-based indices to use (e.g. ``read_indices('nyu_test_indices.txt')``).
        depth_key: ``'rawDepths'`` (the Kinect depth with holes = 0: what BTS's
            ``extract_official_train_test_set_from_mat.py`` writes as the 654
            ``official_splits/test`` pngs every paper scores on) or ``'depths'`` (the
            colourisation in-painted maps, dense but not the standard ground truth).
        augment_cfg: augmentations (training on the 795 labeled frames) or None.
        border_crop: cut the white border first, as BTS does for training.
        image_hw: resize the image (not the depth) to (height, width).
        seed: base seed of the per-sample augmentation generator.
    """

    def __init__(
        self,
        mat_path: str,
        indices: np.ndarray | list[int],
        *,
        depth_key: str = 'rawDepths',
        augment_cfg: AugmentConfig | None = None,
        border_crop: bool = False,
        image_hw: tuple[int, int] | None = None,
        seed: int = 0,
    ) -> None:
        if not os.path.isfile(mat_path):
            raise MissingDataError('the NYU labeled dataset', [mat_path], 1)
        self.mat_path = mat_path
        self.depth_key = depth_key
        self.augment_cfg = augment_cfg
        self.border_crop = border_crop
        self.image_hw = image_hw
        self.seed = seed
        self.epoch = 0
        try:
            with h5py.File(mat_path, 'r') as mat:
                n_images = int(mat['images'].shape[0])
                shapes = (mat['images'].shape, mat[depth_key].shape)
        except (OSError, KeyError) as e:
            raise DatasetError(
                f'{mat_path!r} is not the NYU labeled .mat (HDF5 with images, {depth_key})'
            ) from e
        if len(shapes[0]) != 4 or shapes[0][1] != 3 or shapes[1][1:] != shapes[0][2:]:
            raise DatasetError(
                f'{mat_path!r}: expected images [N,3,W,H] and {depth_key} [N,W,H], got {shapes}'
            )
        self.indices = np.asarray(indices, np.int64).ravel()
        if self.indices.size and (self.indices.min() < 1 or self.indices.max() > n_images):
            raise DatasetError(
                f'indices must be 1-based in [1, {n_images}], got '
                f'[{self.indices.min()}, {self.indices.max()}]'
            )
        self._file: h5py.File | None = None
        self._pid = -1

    @classmethod
    def from_index_file(
        cls, mat_path: str, index_file: str, *, complement: bool = False, **kwargs
    ) -> NYULabeled:
        """Read indices from a file; ``complement`` takes every other frame (train split)."""
        indices = read_indices(index_file)
        if complement:
            if not os.path.isfile(mat_path):
                raise MissingDataError('the NYU labeled dataset', [mat_path], 1)
            with h5py.File(mat_path, 'r') as mat:
                n_images = int(mat['images'].shape[0])
            indices = np.setdiff1d(np.arange(1, n_images + 1), indices)
        return cls(mat_path, indices, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations each epoch, still reproducibly."""
        self.epoch = int(epoch)

    def _mat(self) -> h5py.File:
        # HDF5 handles do not survive fork: each DataLoader worker opens its own.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.mat_path, 'r')
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int) -> dict:
        frame = int(self.indices[index])
        mat = self._mat()
        rgb = np.asarray(mat['images'][frame - 1]).transpose(2, 1, 0)  # [3,W,H] -> [H,W,3]
        depth = np.asarray(mat[self.depth_key][frame - 1], np.float32).T  # [W,H] -> [H,W]
        K = nyu_intrinsics()
        if self.border_crop:
            top, left, h, w = NYU_BORDER_CROP
            rgb, depth = rgb[top : top + h, left : left + w], depth[top : top + h, left : left + w]
            K = shift_intrinsics(K, left, top)
        image = rgb.astype(np.float32) / np.float32(255.0)
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, depth, K = augment(image, depth, K, self.augment_cfg, rng)
        if self.image_hw is not None:
            image = resize_to_input(image, self.image_hw)
        return make_sample(image, depth, K, f'nyu_labeled_{frame:04d}')

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_file'] = None  # an open HDF5 handle cannot be sent to a worker
        return state
