"""``DataConfig`` and ``build_dataset(cfg, split)``: one entry point for every dataset.

Splits: 'train' reads the training list with augmentation (when ``augment``); 'val' and
'test' read the evaluation list without augmentation (as BTS/AdaBins, which validate on
the test list). The labeled NYU .mat uses the index file for 'val'/'test' and every other
frame for 'train'. Synthetic scenes have three disjoint seed ranges. A robot's RGB-D
recording (``training.data.recording``) is split in time: 'train' its training block, 'val'
its validation block, 'test' its held-out block at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os

from torch.utils.data import Dataset

from moa_depth_ros.errors import ConfigError
from training.data.augment import AugmentConfig
from training.data.kitti import KITTIEigen
from training.data.nyu import NYUDepthV2, NYULabeled
from training.data.recording import Recording, RecordingConfig, RGBDRecording, load_recording
from training.data.rooms import SyntheticRooms
from training.data.splits import SPLITS
from training.data.synthetic import CAMERA_HEIGHT_RANGE_M

DATASETS = ('synthetic', 'nyu', 'nyu_labeled', 'kitti', 'recording')

# Evaluation depth caps of the papers (BTS / AdaBins / SPACE-CLIP configs).
DEPTH_RANGES_M = {
    'synthetic': (1e-3, 10.0),
    'nyu': (1e-3, 10.0),
    'nyu_labeled': (1e-3, 10.0),
    'kitti': (1e-3, 80.0),
}


@dataclass
class DataConfig:
    """Where the data is and how to read it. Paths are '' when unused.

    ``train_*`` / ``eval_*``: list file, image root and depth root ('' = image root) of
    the BTS-style lists. ``labeled_mat`` / ``labeled_indices``: the NYU labeled .mat and
    its 1-based test indices. ``augment_cfg`` None picks the dataset's paper recipe.
    ``image_hw`` resizes the image only (e.g. to the model input); depth and ``K`` keep the
    crop's resolution, and losses/metrics resize predictions to the depth.
    """

    dataset: str = 'synthetic'
    train_list: str = ''
    train_image_root: str = ''
    train_depth_root: str = ''
    eval_list: str = ''
    eval_image_root: str = ''
    eval_depth_root: str = ''
    labeled_mat: str = ''
    labeled_indices: str = ''
    labeled_depth_key: str = 'rawDepths'  # BTS's official test pngs; 'depths' = in-painted
    augment: bool = True
    augment_cfg: AugmentConfig | None = None
    nyu_border_crop: bool = True
    kitti_kb_crop: bool = True
    image_hw: tuple[int, int] | None = None
    synthetic_hw: tuple[int, int] = (128, 128)
    synthetic_sizes: dict[str, int] = field(
        default_factory=lambda: {'train': 256, 'val': 32, 'test': 32}
    )
    synthetic_cache: bool = True
    #: Colour rays per pixel along each axis for the synthetic rooms (1: one ray, aliased).
    synthetic_supersample: int = 1
    #: Range (low, high) of the synthetic camera's height above the floor, metres.
    synthetic_camera_height_m: tuple[float, float] = CAMERA_HEIGHT_RANGE_M
    #: Horizontal field of view of the synthetic camera (degrees): fixed, a (low, high) range
    #: drawn per scene, or None for 56-66.
    synthetic_hfov_deg: float | tuple[float, float] | None = None
    #: How a synthetic_hfov_deg range is drawn: 'angle' (uniform in degrees) or 'focal'
    #: (uniform in focal length: narrow lenses, whose views carry fewer scale cues, more often).
    synthetic_lens_sampling: str = 'angle'
    #: > 1: training rooms are rendered this many times larger and each sample is a random
    #: window of up to this zoom, resized to the input: longer lenses of the same room, with
    #: K and labels to match (``SyntheticRooms``). Validation and test render at input size.
    synthetic_zoom_max: float = 1.0
    #: dataset 'recording': the rosbag2, its topics, blocks, masks (``RecordingConfig``).
    recording: RecordingConfig | None = None
    seed: int = 0
    check_files: bool = True

    @property
    def depth_range_m(self) -> tuple[float, float]:
        """Depth caps (min, max) of this dataset's training masks and evaluation."""
        if self.dataset == 'recording':
            return _recording_config(self).depth_range_m
        if self.dataset not in DEPTH_RANGES_M:
            raise ConfigError(
                f'DataConfig.dataset must be one of {DATASETS}, got {self.dataset!r}'
            )
        return DEPTH_RANGES_M[self.dataset]


def _augment_for(cfg: DataConfig, split: str) -> AugmentConfig | None:
    if split != 'train' or not cfg.augment:
        return None
    if cfg.augment_cfg is not None:
        return cfg.augment_cfg
    if cfg.dataset == 'kitti':
        return AugmentConfig.kitti()
    if cfg.dataset == 'synthetic':
        return AugmentConfig.synthetic()
    if cfg.dataset == 'recording':
        return AugmentConfig.recording()
    return AugmentConfig.nyu()


def _recording_config(cfg: DataConfig) -> RecordingConfig:
    if cfg.recording is None or not cfg.recording.bag:
        raise ConfigError("DataConfig.recording.bag is required for dataset='recording'")
    return cfg.recording


# A recording is read once per process, whichever splits are built from it.
_RECORDINGS: dict[tuple, Recording] = {}


def recording_for(cfg: DataConfig) -> Recording:
    """Return the ``Recording`` of ``cfg`` (read on first use, then reused by every split)."""
    hw = tuple(cfg.image_hw) if cfg.image_hw else None
    if hw is None:
        raise ConfigError("DataConfig.image_hw (the network input) is needed for 'recording'")
    key = (_recording_config(cfg), hw)
    if key not in _RECORDINGS:
        _RECORDINGS.clear()  # one recording in memory at a time
        _RECORDINGS[key] = load_recording(key[0], hw)
    return _RECORDINGS[key]


def _require(value: str, name: str, cfg: DataConfig, split: str) -> str:
    if not value:
        raise ConfigError(f'DataConfig.{name} is required for dataset={cfg.dataset!r} {split}')
    return value


def build_dataset(cfg: DataConfig, split: str) -> Dataset:
    """Build the dataset of ``split`` ('train', 'val', 'test') described by ``cfg``."""
    if split not in SPLITS:
        raise ConfigError(f'split must be one of {SPLITS}, got {split!r}')
    if cfg.dataset not in DATASETS:
        raise ConfigError(f'DataConfig.dataset must be one of {DATASETS}, got {cfg.dataset!r}')
    aug = _augment_for(cfg, split)
    if cfg.dataset == 'synthetic':
        if split not in cfg.synthetic_sizes:
            raise ConfigError(f'DataConfig.synthetic_sizes has no entry for split {split!r}')
        return SyntheticRooms(
            cfg.synthetic_sizes[split],
            cfg.synthetic_hw,
            cfg.seed,
            split=split,
            augment_cfg=aug,
            cache=cfg.synthetic_cache,
            supersample=cfg.synthetic_supersample,
            camera_height_m=cfg.synthetic_camera_height_m,
            hfov_deg=cfg.synthetic_hfov_deg,
            lens_sampling=cfg.synthetic_lens_sampling,
            zoom_max=cfg.synthetic_zoom_max if split == 'train' else 1.0,
        )
    if cfg.dataset == 'recording':
        return RGBDRecording(
            recording_for(cfg),
            split,
            cfg.image_hw,
            augment_cfg=aug,
            seed=cfg.seed,
        )
    if cfg.dataset == 'nyu_labeled':
        mat = _require(cfg.labeled_mat, 'labeled_mat', cfg, split)
        indices = _require(cfg.labeled_indices, 'labeled_indices', cfg, split)
        return NYULabeled.from_index_file(
            mat,
            indices,
            complement=split == 'train',
            depth_key=cfg.labeled_depth_key,
            augment_cfg=aug,
            border_crop=cfg.nyu_border_crop and split == 'train',
            image_hw=cfg.image_hw,
            seed=cfg.seed,
        )
    if split == 'train':
        list_file = _require(cfg.train_list, 'train_list', cfg, split)
        image_root, depth_root = cfg.train_image_root, cfg.train_depth_root
    else:
        list_file = _require(cfg.eval_list, 'eval_list', cfg, split)
        image_root, depth_root = cfg.eval_image_root, cfg.eval_depth_root
    image_root = os.path.expanduser(image_root)
    depth_root = os.path.expanduser(depth_root) or image_root
    if cfg.dataset == 'nyu':
        return NYUDepthV2(
            list_file,
            image_root,
            depth_root,
            augment_cfg=aug,
            border_crop=cfg.nyu_border_crop and split == 'train',
            image_hw=cfg.image_hw,
            seed=cfg.seed,
            check_files=cfg.check_files,
        )
    return KITTIEigen(
        list_file,
        image_root,
        depth_root,
        augment_cfg=aug,
        kb_crop=cfg.kitti_kb_crop,
        image_hw=cfg.image_hw,
        seed=cfg.seed,
        check_files=cfg.check_files,
    )
