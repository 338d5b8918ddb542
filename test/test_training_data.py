"""Training data: synthetic rooms, dataset readers on tiny fixtures, augmentations, bags."""

from __future__ import annotations

import dataclasses
import os
import time

import cv2
import h5py
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
import torch
from torch.utils.data import DataLoader

from moa_depth_ros.errors import ConfigError
from training.data import (
    AugmentConfig,
    DataConfig,
    KITTIEigen,
    MissingDataError,
    NYUDepthV2,
    NYULabeled,
    SyntheticRooms,
    augment,
    build_dataset,
    render,
    render_scene,
    sample_scene,
)
from training.data.splits import read_indices, synthetic_scene_seeds
from training.data.synthetic import (
    DEPTH_RANGE_M,
    FLOOR_ID,
    WALL_Z1_ID,
    render_supersampled,
    supersampled_spec,
)
from training.data.synthetic_bag import write_synthetic_bag

# ----------------------------------------------------------------------------- synthetic


def test_supersampled_colour_is_the_block_mean_of_a_finer_render_and_depth_stays_exact():
    spec = sample_scene(11, 40, 30)
    plain = render(spec)
    smooth = render_supersampled(spec, 3)
    np.testing.assert_array_equal(smooth.depth_m, plain.depth_m)
    np.testing.assert_array_equal(smooth.labels, plain.labels)
    fine = render(supersampled_spec(spec, 3))
    expected = fine.rgb.reshape(30, 3, 40, 3, 3).astype(np.float32).mean(axis=(1, 3))
    assert np.abs(smooth.rgb.astype(np.float32) - expected).max() <= 0.5
    np.testing.assert_array_equal(render_supersampled(spec, 1).rgb, plain.rgb)
    with pytest.raises(ConfigError, match='supersample'):
        render_supersampled(spec, 0)


def test_supersampled_spec_puts_fine_pixels_inside_their_coarse_pixel():
    spec = sample_scene(4, 64, 48)
    fine = supersampled_spec(spec, 2)
    point = np.array([0.3, -0.2, 2.5])  # optical frame
    u, v = (spec.K @ point)[:2] / point[2]
    uf, vf = (fine.K @ point)[:2] / point[2]
    assert (uf + 0.5) / 2 - 0.5 == pytest.approx(u)
    assert (vf + 0.5) / 2 - 0.5 == pytest.approx(v)
    assert fine.noise_std == pytest.approx(2 * spec.noise_std)


def test_synthetic_dataset_passes_supersampling_camera_heights_and_fov():
    cfg = DataConfig(
        synthetic_hw=(24, 32),
        synthetic_sizes={'test': 1},
        synthetic_supersample=2,
        synthetic_camera_height_m=(1.2, 1.6),
        synthetic_hfov_deg=60.0,
    )
    dataset = build_dataset(cfg, 'test')
    seed = dataset.scene_seeds[0]
    expected = render_scene(seed, 32, 24, supersample=2, camera_height_m=(1.2, 1.6), hfov_deg=60.0)
    np.testing.assert_array_equal(dataset.scene(0).rgb, expected.rgb)
    assert dataset.scene(0).spec == expected.spec


def test_camera_height_range_is_respected_and_validated():
    heights = [sample_scene(s, 16, 12).camera_position_m[1] for s in range(40)]
    assert 1.0 <= min(heights) and max(heights) <= 1.8
    narrow = [sample_scene(s, 16, 12, camera_height_m=(1.3, 1.4)) for s in range(40)]
    assert all(1.3 <= n.camera_position_m[1] <= 1.4 for n in narrow)
    # Only the height changes: the same draws make the same room.
    assert narrow[5].room_size_m == sample_scene(5, 16, 12).room_size_m
    for bad in ((1.5, 1.4), (0.0, 1.0), (1.0, 2.6)):
        with pytest.raises(ConfigError, match='camera_height_m'):
            sample_scene(0, 16, 12, camera_height_m=bad)


def test_lens_settings_are_validated_whatever_the_field_of_view():
    with pytest.raises(ConfigError, match='lens_sampling'):
        sample_scene(0, 16, 12, hfov_deg=60.0, lens_sampling='angel')  # fixed lens: still checked
    for bad in ([50.0], (40.0, 60.0, 80.0)):
        with pytest.raises(ConfigError, match=r'\[low, high\]'):
            sample_scene(0, 16, 12, hfov_deg=bad)


def test_render_is_deterministic_by_seed_and_varies_across_seeds():
    a, b, c = render_scene(7, 96, 64), render_scene(7, 96, 64), render_scene(8, 96, 64)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    assert not np.array_equal(a.depth_m, c.depth_m)


@pytest.mark.parametrize('seed', range(6))
def test_scene_depth_is_in_the_indoor_range_and_rgb_is_textured(seed):
    s = render_scene(seed, 80, 60)
    assert s.rgb.shape == (60, 80, 3) and s.rgb.dtype == np.uint8
    assert s.depth_m.shape == (60, 80) and s.depth_m.dtype == np.float32
    valid = s.depth_m > 0
    assert valid.mean() > 0.99
    assert s.depth_m[valid].min() >= DEPTH_RANGE_M[0]
    assert s.depth_m.max() <= DEPTH_RANGE_M[1]
    assert s.rgb.std() > 10.0
    assert len(np.unique(s.rgb.reshape(-1, 3), axis=0)) > 200


def test_camera_info_matches_the_intrinsics():
    s = render_scene(3, 128, 96)
    info = s.camera_info
    assert (info['width'], info['height']) == (128, 96)
    np.testing.assert_allclose(np.reshape(info['K'], (3, 3)), s.K)
    assert info['distortion_model'] == 'plumb_bob' and info['D'] == [0.0] * 5
    # Realistic indoor camera: 56-66 degrees horizontal field of view.
    hfov = np.degrees(2 * np.arctan(64 / s.K[0, 0]))
    assert 55.0 < hfov < 67.0


def _backproject_world(s):
    h, w = s.depth_m.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    k = s.K
    cam = np.stack(
        [(u - k[0, 2]) / k[0, 0] * s.depth_m, (v - k[1, 2]) / k[1, 1] * s.depth_m, s.depth_m], -1
    )
    return cam @ s.cam_to_world[:3, :3].T + s.cam_to_world[:3, 3]


@pytest.mark.parametrize('seed', [0, 5, 11])
def test_floor_pixels_backproject_onto_the_floor_plane(seed):
    s = render_scene(seed, 96, 72)
    floor = (s.labels == FLOOR_ID) & (s.depth_m > 0)
    assert floor.sum() > 50
    world = _backproject_world(s)
    np.testing.assert_allclose(world[floor][:, 1], 0.0, atol=2e-3)


def test_depth_is_the_optical_z_distance_to_a_known_plane():
    spec = sample_scene(2, 64, 48, hfov_deg=60.0)
    width_m, _, length_m = spec.room_size_m
    empty = dataclasses.replace(spec, boxes=())
    # Level camera 1.5 m high, looking along +z at the far wall from z = 1.
    s = render(empty.with_camera((width_m / 2, 1.5, 1.0), yaw_rad=0.0))
    wall = s.labels == WALL_Z1_ID
    assert wall.sum() > 100
    np.testing.assert_allclose(s.depth_m[wall], length_m - 1.0, rtol=1e-5)
    floor_rows = np.nonzero((s.labels == FLOOR_ID).any(axis=1))[0]
    v = floor_rows[-1]  # bottom row: depth = camera height / normalised image y
    expected = 1.5 / ((v - spec.cy_px) / spec.fy_px)
    np.testing.assert_allclose(s.depth_m[v, s.labels[v] == FLOOR_ID], expected, rtol=1e-5)


def test_render_is_fast():
    render_scene(0, 128, 128)
    start = time.perf_counter()
    for seed in range(5):
        render_scene(seed, 128, 128)
    per_scene_s = (time.perf_counter() - start) / 5
    assert per_scene_s < 0.05  # a few ms on a laptop core; loose for shared CI machines


def test_synthetic_splits_never_share_a_scene():
    train = set(synthetic_scene_seeds('train', 5000, seed=123))
    val = set(synthetic_scene_seeds('val', 5000, seed=0))
    test = set(synthetic_scene_seeds('test', 5000, seed=7))
    assert not (train & val) and not (train & test) and not (val & test)
    with pytest.raises(ConfigError, match='does not fit'):
        synthetic_scene_seeds('val', 200_000)


def test_synthetic_rooms_batches_samples_in_the_common_format():
    ds = SyntheticRooms(4, (48, 64), seed=0, split='val')
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch['image'].shape == (4, 3, 48, 64) and batch['image'].dtype == torch.float32
    assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
    assert batch['depth_m'].shape == (4, 1, 48, 64) and batch['depth_m'].dtype == torch.float32
    assert batch['K'].shape == (4, 3, 3) and batch['focal_px'].shape == (4,)
    assert batch['name'][0].startswith('synthetic_val_')
    names = {ds[i]['name'] for i in range(4)}
    train_names = {SyntheticRooms(4, (48, 64), split='train')[i]['name'] for i in range(4)}
    assert not names & train_names


def test_synthetic_augmentation_is_reproducible_per_epoch():
    ds = SyntheticRooms(3, (40, 40), seed=1, augment_cfg=AugmentConfig.synthetic())
    first = [ds[i]['image'] for i in range(3)]
    again = [ds[i]['image'] for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ds.set_epoch(1)
    assert any(not torch.equal(a, ds[i]['image']) for i, a in enumerate(first))


# ----------------------------------------------------------------------------- augment


def _ramp_pair(h=30, w=40):
    """Make an image whose red channel encodes the depth, so alignment can be checked."""
    depth = np.tile(np.linspace(1.0, 5.0, w, dtype=np.float32), (h, 1))
    depth += np.linspace(0.0, 2.0, h, dtype=np.float32)[:, None]
    image = np.zeros((h, w, 3), np.float32)
    image[..., 0] = depth / 8.0
    image[..., 1] = 0.5
    return image, depth


def test_flip_moves_image_depth_and_principal_point_together():
    image, depth = _ramp_pair()
    k = np.array([[50.0, 0, 12.0], [0, 50.0, 15.0], [0, 0, 1]])
    cfg = AugmentConfig(hflip_prob=1.0, photometric_prob=0.0)
    img2, dep2, k2 = augment(image, depth, k, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(dep2, depth[:, ::-1])
    np.testing.assert_allclose(img2[..., 0] * 8.0, dep2, rtol=1e-6)
    assert k2[0, 2] == pytest.approx(39 - 12.0) and k2[1, 2] == 15.0
    assert dep2[0, 0] > dep2[0, -1]  # the asymmetric ramp really turned round


def test_rotation_keeps_alignment_and_marks_new_pixels_invalid():
    image, depth = _ramp_pair(60, 80)
    cfg = AugmentConfig(hflip_prob=0.0, photometric_prob=0.0, rotate_deg=2.5)
    img2, dep2, _ = augment(image, depth, np.eye(3), cfg, np.random.default_rng(3))
    assert (dep2 == 0).any()  # corners rotated in from outside the frame
    assert set(np.unique(dep2[dep2 > 0])) <= set(np.unique(depth))  # nearest: no blending
    inner = np.zeros_like(dep2, bool)
    inner[5:-5, 5:-5] = True
    np.testing.assert_allclose(img2[..., 0][inner] * 8.0, dep2[inner], atol=0.12)


def test_crop_and_photometric_jitter_as_bts():
    image, depth = _ramp_pair(60, 80)
    cfg = AugmentConfig(hflip_prob=0.0, photometric_prob=1.0, crop_hw=(32, 48))
    k = np.array([[50.0, 0, 40.0], [0, 50.0, 30.0], [0, 0, 1]])
    img2, dep2, k2 = augment(image, depth, k, cfg, torch.Generator().manual_seed(4))
    assert img2.shape == (32, 48, 3) and dep2.shape == (32, 48)
    left, top = int(round(40.0 - k2[0, 2])), int(round(30.0 - k2[1, 2]))
    np.testing.assert_array_equal(dep2, depth[top : top + 32, left : left + 48])
    # Gamma, brightness and colour gains change colours within the BTS ranges only.
    green = img2[..., 1]
    assert not np.allclose(green, 0.5)
    assert 0.5**1.1 * 0.75 * 0.9 - 1e-6 <= green.min() <= green.max() <= 0.5**0.9 * 1.25 * 1.1
    with pytest.raises(ConfigError, match='larger than'):
        augment(image, depth, k, AugmentConfig(crop_hw=(100, 100)), 0)


# ----------------------------------------------------------------------------- readers


def _write_nyu(root, scenes=('kitchen_0028b', 'office_0004'), size=(480, 640)):
    rng = np.random.default_rng(0)
    lines = []
    truth = {}
    for i, scene in enumerate(scenes):
        os.makedirs(root / scene, exist_ok=True)
        rgb = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        depth_mm = rng.integers(500, 9000, size, dtype=np.uint16)
        depth_mm[:10] = 0
        cv2.imwrite(str(root / scene / f'rgb_{i:05d}.jpg'), rgb[..., ::-1])
        cv2.imwrite(str(root / scene / f'sync_depth_{i:05d}.png'), depth_mm)
        lines.append(f'/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png 518.8579')
        truth[scene] = (rgb, depth_mm)
    list_file = root / 'nyu_list.txt'
    list_file.write_text('\n'.join(lines) + '\n')
    return str(list_file), truth


def test_nyu_sync_reader_gives_metres_rgb_and_intrinsics(tmp_path):
    list_file, truth = _write_nyu(tmp_path)
    ds = NYUDepthV2(list_file, str(tmp_path))
    assert len(ds) == 2
    sample = ds[0]
    rgb, depth_mm = truth['kitchen_0028b']
    np.testing.assert_allclose(sample['depth_m'][0].numpy(), depth_mm / 1000.0, rtol=1e-6)
    assert (sample['depth_m'][0, :10] == 0).all()
    # JPEG is lossy: compare the mean colour, which survives compression.
    np.testing.assert_allclose(
        sample['image'].mean((1, 2)).numpy(), rgb.mean((0, 1)) / 255, atol=0.02
    )
    assert sample['K'][0, 0].item() == pytest.approx(518.8579)
    assert sample['name'] == 'kitchen_0028b/rgb_00000.jpg'


def test_images_reach_the_network_through_the_nodes_resize(tmp_path):
    """Training data, training batches and the node share one resize (resize_to_input)."""
    from moa_depth_ros.frame.pipeline import preprocess, resize_to_input
    from training.data.base import resize_batch

    list_file, _ = _write_nyu(tmp_path)
    full = NYUDepthV2(list_file, str(tmp_path))[0]
    small = NYUDepthV2(list_file, str(tmp_path), image_hw=(48, 64))[0]
    frame = full['image'].permute(1, 2, 0).numpy()
    expected = resize_to_input(frame, (48, 64))
    np.testing.assert_allclose(small['image'].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert small['depth_m'].shape == full['depth_m'].shape  # labels keep their resolution
    batch = resize_batch(full['image'][None], (48, 64))
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert resize_batch(batch, (48, 64)) is batch  # already the input size: untouched
    # The node: the same resize of the uint8 camera frame, to within 8-bit rounding per step.
    node = preprocess(np.round(frame * 255).astype(np.uint8), (48, 64))[0].transpose(1, 2, 0)
    np.testing.assert_allclose(node, expected, atol=2.0 / 255)


def test_nyu_training_split_crops_border_and_random_crop(tmp_path):
    list_file, _ = _write_nyu(tmp_path)
    cfg = DataConfig(dataset='nyu', train_list=list_file, train_image_root=str(tmp_path))
    sample = build_dataset(cfg, 'train')[1]
    assert sample['image'].shape == (3, 416, 544)
    assert sample['depth_m'].shape == (1, 416, 544)


def test_missing_files_are_listed_in_one_error(tmp_path):
    lines = [f'/scene/rgb_{i:05d}.jpg /scene/sync_depth_{i:05d}.png 518.8579' for i in range(15)]
    (tmp_path / 'list.txt').write_text('\n'.join(lines))
    with pytest.raises(MissingDataError) as info:
        NYUDepthV2(str(tmp_path / 'list.txt'), str(tmp_path))
    err = info.value
    assert len(err.missing) == 30
    assert '30 of 30 files' in str(err) and 'and 20 more' in str(err)
    assert 'rgb_00000.jpg' in str(err) and 'sync_depth_00000.png' in str(err)
    assert isinstance(err, FileNotFoundError) and isinstance(err, ConfigError)


def _write_labeled_mat(path, n=4, h=48, w=64):
    """Write a tiny .mat in the official v7.3 layout: images [N,3,W,H], depths [N,W,H] m.

    ``rawDepths`` has holes (0) where the in-painted ``depths`` is dense, as the real file.
    """
    rng = np.random.default_rng(1)
    images_hw = rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    raw_hw = rng.uniform(0.7, 9.0, (n, h, w)).astype(np.float32)
    raw_hw[:, :5] = 0.0
    inpainted_hw = raw_hw.copy()
    inpainted_hw[:, :5] = 3.0
    with h5py.File(path, 'w') as f:
        f['images'] = images_hw.transpose(0, 3, 2, 1)
        f['rawDepths'] = raw_hw.transpose(0, 2, 1)
        f['depths'] = inpainted_hw.transpose(0, 2, 1)
    return images_hw, raw_hw, inpainted_hw


def test_nyu_labeled_mat_is_transposed_back_and_indexed_from_one(tmp_path):
    images, depths, _ = _write_labeled_mat(tmp_path / 'labeled.mat')
    (tmp_path / 'test_idx.txt').write_text('2 4\n')
    ds = NYULabeled.from_index_file(str(tmp_path / 'labeled.mat'), str(tmp_path / 'test_idx.txt'))
    assert len(ds) == 2
    sample = ds[1]  # index 4 -> frame 3 (0-based)
    assert sample['image'].shape == (3, 48, 64)
    np.testing.assert_allclose(sample['depth_m'][0].numpy(), depths[3])
    np.testing.assert_allclose(
        sample['image'].permute(1, 2, 0).numpy(), images[3] / 255, atol=1e-6
    )
    assert sample['name'] == 'nyu_labeled_0004'
    train = NYULabeled.from_index_file(
        str(tmp_path / 'labeled.mat'), str(tmp_path / 'test_idx.txt'), complement=True
    )
    assert train.indices.tolist() == [1, 3]


def test_nyu_labeled_scores_raw_depths_as_the_bts_test_pngs(tmp_path):
    # BTS's extract_official_train_test_set_from_mat.py writes the official_splits/test
    # pngs from 'rawDepths' (holes = 0), not the in-painted 'depths'.
    _, raw, inpainted = _write_labeled_mat(tmp_path / 'labeled.mat')
    (tmp_path / 'test_idx.txt').write_text('2 4\n')
    ds = NYULabeled.from_index_file(str(tmp_path / 'labeled.mat'), str(tmp_path / 'test_idx.txt'))
    np.testing.assert_allclose(ds[0]['depth_m'][0].numpy(), raw[1])
    assert (ds[0]['depth_m'][0, :5] == 0).all()
    cfg = DataConfig(
        dataset='nyu_labeled',
        labeled_mat=str(tmp_path / 'labeled.mat'),
        labeled_indices=str(tmp_path / 'test_idx.txt'),
    )
    assert cfg.labeled_depth_key == 'rawDepths'
    np.testing.assert_allclose(build_dataset(cfg, 'test')[1]['depth_m'][0].numpy(), raw[3])
    dense = NYULabeled.from_index_file(
        str(tmp_path / 'labeled.mat'), str(tmp_path / 'test_idx.txt'), depth_key='depths'
    )
    np.testing.assert_allclose(dense[0]['depth_m'][0].numpy(), inpainted[1])


def test_index_file_must_be_one_based_integers(tmp_path):
    (tmp_path / 'idx.txt').write_text('0 1 2')
    with pytest.raises(ConfigError, match='1-based'):
        read_indices(str(tmp_path / 'idx.txt'))
    (tmp_path / 'v5.mat').write_bytes(b'MATLAB 5.0 MAT-file' + bytes(200))
    with pytest.raises(ConfigError, match='scipy'):
        read_indices(str(tmp_path / 'v5.mat'))


def _write_kitti(root, with_calib=True):
    date, drive = '2011_09_26', '2011_09_26_drive_0002_sync'
    image_rel = f'{date}/{drive}/image_02/data/0000000069.png'
    depth_rel = f'{drive}/proj_depth/groundtruth/image_02/0000000069.png'
    rng = np.random.default_rng(2)
    h, w = 375, 1242
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = np.zeros((h, w), np.uint16)
    depth[200:, ::7] = rng.integers(256, 80 * 256, (h - 200, len(range(0, w, 7))), dtype=np.uint16)
    os.makedirs(root / 'raw' / os.path.dirname(image_rel))
    os.makedirs(root / 'gt' / os.path.dirname(depth_rel))
    cv2.imwrite(str(root / 'raw' / image_rel), rgb[..., ::-1])
    cv2.imwrite(str(root / 'gt' / depth_rel), depth)
    if with_calib:
        (root / 'raw' / date / 'calib_cam_to_cam.txt').write_text(
            'P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 '
            '7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 '
            '2.745884e-03\n'
        )
    lines = [
        f'{image_rel} {depth_rel} 721.5377',
        f'{date}/{drive}/image_02/data/0000000070.png None 721.5377',
    ]
    (root / 'eigen.txt').write_text('\n'.join(lines) + '\n')
    return rgb, depth


def test_kitti_reader_crops_to_the_benchmark_size_and_reads_calibration(tmp_path):
    rgb, depth = _write_kitti(tmp_path)
    ds = KITTIEigen(str(tmp_path / 'eigen.txt'), str(tmp_path / 'raw'), str(tmp_path / 'gt'))
    assert len(ds) == 1 and ds.skipped_no_depth == 1
    sample = ds[0]
    top, left = 375 - 352, (1242 - 1216) // 2
    assert sample['depth_m'].shape == (1, 352, 1216)
    np.testing.assert_allclose(
        sample['depth_m'][0].numpy(), depth[top:, left : left + 1216] / 256.0, rtol=1e-6
    )
    k = sample['K'].numpy()
    assert k[0, 0] == pytest.approx(721.5377)
    assert k[0, 2] == pytest.approx(609.5593 - left, rel=1e-6)
    assert k[1, 2] == pytest.approx(172.854 - top, rel=1e-6)


def test_kitti_training_split_uses_the_bts_crop(tmp_path):
    _write_kitti(tmp_path, with_calib=False)
    cfg = DataConfig(
        dataset='kitti',
        train_list=str(tmp_path / 'eigen.txt'),
        train_image_root=str(tmp_path / 'raw'),
        train_depth_root=str(tmp_path / 'gt'),
    )
    sample = build_dataset(cfg, 'train')[0]
    assert sample['image'].shape == (3, 352, 704) and sample['depth_m'].shape == (1, 352, 704)


def test_build_dataset_rejects_bad_configuration(tmp_path):
    with pytest.raises(ConfigError, match='dataset'):
        build_dataset(DataConfig(dataset='imagenet'), 'train')
    with pytest.raises(ConfigError, match='split'):
        build_dataset(DataConfig(), 'holdout')
    with pytest.raises(ConfigError, match='eval_list'):
        build_dataset(DataConfig(dataset='nyu'), 'test')
    test_ds = build_dataset(DataConfig(synthetic_sizes={'train': 2, 'val': 2, 'test': 3}), 'test')
    assert len(test_ds) == 3


# ----------------------------------------------------------------------------- rosbag


def _read_bag(path):
    store = get_typestore(Stores.ROS2_HUMBLE)
    by_topic = {}
    with Reader(path) as reader:
        for conn, stamp, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append(
                (stamp, store.deserialize_cdr(raw, conn.msgtype))
            )
    return by_topic


def test_synthetic_bag_round_trips_through_rosbags(tmp_path):
    info = write_synthetic_bag(
        tmp_path / 'cam',
        n_frames=6,
        width=48,
        height=32,
        encodings=('rgb8', 'bgr8', 'yuv422'),
        compressed=True,
        write_depth=True,
        rate_hz=15.0,
    )
    topics = _read_bag(tmp_path / 'cam')
    assert set(topics) == {
        '/camera/image_raw',
        '/camera/camera_info',
        '/camera/image_raw/compressed',
        '/camera/depth_gt',
    }
    images = topics['/camera/image_raw']
    assert len(images) == 6 and all(len(v) == 6 for v in topics.values())
    stamps = [s for s, _ in images]
    assert np.all(np.diff(stamps) == round(1e9 / 15.0))
    header_ns = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in images]
    assert header_ns == stamps == info.stamps_ns
    assert [m.encoding for _, m in images] == ['rgb8', 'bgr8', 'yuv422'] * 2
    assert all(m.header.frame_id == 'camera_optical_frame' for _, m in images)
    assert images[0][1].step == 48 * 3 and images[2][1].step == 48 * 2
    for _, cam in topics['/camera/camera_info']:
        np.testing.assert_allclose(cam.k.reshape(3, 3), info.K)
        assert (cam.width, cam.height) == (48, 32)
    # rgb8 and bgr8 carry the same picture in swapped channel order.
    frame0 = images[0][1].data.reshape(32, 48, 3)
    jpeg = topics['/camera/image_raw/compressed'][0][1]
    decoded = cv2.imdecode(jpeg.data, cv2.IMREAD_COLOR)[..., ::-1]
    assert np.abs(decoded.astype(int) - frame0).mean() < 12
    depth = topics['/camera/depth_gt'][0][1]
    assert depth.encoding == '32FC1'
    depth_m = depth.data.view('<f4').reshape(32, 48)
    assert np.nanmin(depth_m) >= DEPTH_RANGE_M[0] and np.nanmax(depth_m) <= DEPTH_RANGE_M[1]
    # The camera moves: consecutive frames differ.
    assert not np.array_equal(images[0][1].data, images[3][1].data)


def test_synthetic_bag_in_sqlite3_and_refuses_to_overwrite(tmp_path):
    info = write_synthetic_bag(
        tmp_path / 'db', n_frames=2, width=32, height=24, storage='sqlite3', hfov_deg=60.0
    )
    # A fixed field of view, as the quickstart's training rooms may use.
    assert info.K[0, 0] == pytest.approx(16.0 / np.tan(np.radians(30.0)))
    assert (tmp_path / 'db' / 'db.db3').is_file()
    assert len(_read_bag(tmp_path / 'db')['/camera/image_raw']) == 2
    with pytest.raises(ConfigError, match='exists'):
        write_synthetic_bag(tmp_path / 'db', n_frames=1, width=32, height=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['db']  # no staging left behind
