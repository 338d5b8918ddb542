"""Which samples belong to which split: BTS/AdaBins list files, NYU indices, synthetic seeds.

List files (BTS, AdaBins, SPACE-CLIP ``train_test_inputs/*.txt``) hold one sample per line:
``<image path> <depth path | None> <focal px>``, paths relative to configured roots, e.g.
``/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579``.

The official NYU Depth V2 test split is the 654 1-based indices ``testNdxs`` of
``splits.mat`` (http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat). That
file is MATLAB v5, which h5py cannot read; convert it once with scipy::

    python -c "import scipy.io; print(*scipy.io.loadmat('splits.mat')['testNdxs'].ravel())" \
        > nyu_test_indices.txt

Synthetic scenes are split by disjoint ranges of scene seeds, so a held-out scene can
never also be a training scene whatever ``n`` and ``seed`` a user picks.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
import re

import h5py
import numpy as np

from training.data.base import DatasetError, MissingDataError

SPLITS = ('train', 'val', 'test')

# [start, stop) of the scene seeds of each synthetic split.
SYNTHETIC_SEED_RANGES = {
    'train': (0, 1_000_000),
    'val': (1_000_000, 1_100_000),
    'test': (1_100_000, 1_200_000),
}


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file; ``depth`` is None where the list says ``None`` (no GT)."""

    image: str
    depth: str | None
    focal_px: float
    line_number: int


def read_list_file(path: str) -> list[ListEntry]:
    """Parse a BTS-style list file; blank lines and ``#`` comments are skipped."""
    if not os.path.isfile(path):
        raise MissingDataError('the dataset list', [path], 1)
    entries = []
    with open(path, encoding='utf-8') as stream:
        for number, raw in enumerate(stream, start=1):
            line = raw.strip()
            if not line or line.startswith('#'):
                continue
            fields = line.split()
            if len(fields) != 3:
                raise DatasetError(
                    f'{path}:{number}: expected "<image> <depth|None> <focal_px>", got {line!r}'
                )
            try:
                focal = float(fields[2])
            except ValueError as e:
                raise DatasetError(
                    f'{path}:{number}: focal length must be a number, got {fields[2]!r}'
                ) from e
            depth = None if fields[1] == 'None' else fields[1]
            entries.append(ListEntry(fields[0], depth, focal, number))
    if not entries:
        raise DatasetError(f'list file {path!r} has no entries')
    return entries


def read_indices(path: str, key: str = 'testNdxs') -> np.ndarray:
    """Read 1-based sample indices: a text file of integers, or an HDF5 (v7.3) .mat file."""
    if not os.path.isfile(path):
        raise MissingDataError('the NYU split indices', [path], 1)
    if h5py.is_hdf5(path):
        with h5py.File(path, 'r') as mat:
            if key not in mat:
                raise DatasetError(f'{path!r} has no dataset {key!r}; keys: {sorted(mat.keys())}')
            values = np.asarray(mat[key]).ravel()
    else:
        with open(path, 'rb') as stream:
            head = stream.read(128)
        if head.startswith(b'MATLAB'):
            raise DatasetError(
                f'{path!r} is a MATLAB v5 file, which needs scipy; convert it once with '
                f'python -c "import scipy.io; '
                f"print(*scipy.io.loadmat('{path}')['{key}'].ravel())\" > indices.txt"
            )
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
        tokens = [t for t in re.split(r'[\s,]+', text) if t]
        try:
            values = np.array([int(float(t)) for t in tokens])
        except ValueError as e:
            raise DatasetError(f'{path!r} must hold integers, got {tokens[:5]!r}...') from e
    indices = values.astype(np.int64)
    if indices.size == 0 or indices.min() < 1:
        raise DatasetError(f'{path!r} must hold 1-based indices (MATLAB), got min {indices.min()}')
    return indices


def synthetic_scene_seeds(split: str, n: int, seed: int = 0) -> list[int]:
    """Scene seeds of a synthetic split: ``n`` consecutive seeds from ``start + seed``."""
    if split not in SYNTHETIC_SEED_RANGES:
        raise DatasetError(f'split must be one of {SPLITS}, got {split!r}')
    start, stop = SYNTHETIC_SEED_RANGES[split]
    if n < 1 or seed < 0 or start + seed + n > stop:
        raise DatasetError(
            f'synthetic {split} split holds seeds [{start}, {stop}): n={n} with seed={seed} '
            f'does not fit (need n >= 1, seed >= 0, seed + n <= {stop - start})'
        )
    return list(range(start + seed, start + seed + n))
