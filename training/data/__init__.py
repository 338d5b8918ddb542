"""Training and evaluation data: NYU Depth V2, KITTI Eigen, and procedural synthetic rooms.

``build_dataset(DataConfig(...), split)`` is the entry point; each sample is a dict
``{'image', 'depth_m', 'K', 'focal_px', 'name'}`` (see ``training.data.base``).
``training.data.synthetic_bag.write_synthetic_bag`` writes a rosbag2 camera stream of a
synthetic room (imported on its own: it needs ``rosbags``).
"""

from training.data.augment import AugmentConfig, augment
from training.data.base import DatasetError, MissingDataError, make_sample
from training.data.factory import DATASETS, DEPTH_RANGES_M, DataConfig, build_dataset
from training.data.kitti import KITTIEigen
from training.data.nyu import NYUDepthV2, NYULabeled
from training.data.rooms import SyntheticRooms
from training.data.splits import SYNTHETIC_SEED_RANGES, read_indices, read_list_file
from training.data.synthetic import SceneSample, SceneSpec, render, render_scene, sample_scene

__all__ = [
    'AugmentConfig',
    'DATASETS',
    'DEPTH_RANGES_M',
    'DataConfig',
    'DatasetError',
    'KITTIEigen',
    'MissingDataError',
    'NYUDepthV2',
    'NYULabeled',
    'SYNTHETIC_SEED_RANGES',
    'SceneSample',
    'SceneSpec',
    'SyntheticRooms',
    'augment',
    'build_dataset',
    'make_sample',
    'read_indices',
    'read_list_file',
    'render',
    'render_scene',
    'sample_scene',
]
