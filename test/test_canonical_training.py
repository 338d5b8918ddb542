"""Training and evaluation in the canonical camera's space (``moa_depth_ros.frame.scale``).

Labels become ``depth * f_canonical / f_image`` with each sample's focal length after its
crop and resize to the network input; predictions go back with the same factor. On the
training camera the conversion is the identity, so NYU/KITTI numbers do not move; the
canonical camera travels from the config through the checkpoint and ONNX to the runtime.
"""

from __future__ import annotations

from model_fixtures import tiny_model
import numpy as np
import pytest
import torch

from moa_depth_ros.engine import load_engine
from moa_depth_ros.frame.scale import CanonicalCamera
from moa_depth_ros.model import load_model, save_checkpoint
from training.data import render_scene
from training.data.augment import AugmentConfig, augment
from training.data.base import canonical_scale, intrinsics, make_sample
from training.eval import evaluate_predictor
from training.metrics import MetricConfig
from training.onnx_export import export_onnx
from training.train import _to_canonical

KINECT = {'name': 'NYU Kinect', 'fx_px': 518.8579, 'fy_px': 519.4696, 'width': 640, 'height': 480}


def _kinect_sample(depth_m=2.0, crop=None):
    rng = np.random.default_rng(0)
    image = rng.random((480, 640, 3), dtype=np.float32)
    depth = np.full((480, 640), depth_m, np.float32)
    K = intrinsics(KINECT['fx_px'], KINECT['fy_px'], 325.58, 253.74)
    if crop is not None:
        image, depth, K = augment(
            image, depth, K, AugmentConfig(hflip_prob=0.0, photometric_prob=0.0, crop_hw=crop), rng
        )
    return make_sample(image, depth, K, 'kinect')


def _batch(*samples):
    return torch.utils.data.default_collate(list(samples))


def test_on_the_training_camera_the_conversion_is_the_identity():
    canonical = CanonicalCamera.from_dict(KINECT).focal_at_input_px((224, 224))
    batch = _batch(_kinect_sample(), _kinect_sample(3.0))
    scale = canonical_scale(batch, (224, 224), canonical)
    assert torch.equal(scale, torch.ones(2))
    labels = _to_canonical(batch['depth_m'], batch, (224, 224), canonical, (1e-3, 10.0))
    assert torch.equal(labels, batch['depth_m'])


def test_evaluation_numbers_on_the_training_camera_do_not_move():
    canonical = CanonicalCamera.from_dict(KINECT).focal_at_input_px((224, 224))
    dataset = [_kinect_sample(2.0), _kinect_sample(4.0)]

    def predict(image):
        return torch.full((image.shape[0], 1, 224, 224), 2.5)

    config = MetricConfig(crop='none')
    plain = evaluate_predictor(predict, dataset, input_hw=(224, 224), metric_config=config)
    converted = evaluate_predictor(
        predict, dataset, input_hw=(224, 224), metric_config=config, canonical_focal_px=canonical
    )
    assert plain.means() == converted.means()


def test_a_random_crop_zooms_in_and_its_labels_come_closer():
    # BTS's 416x544 crop of a 640x480 frame, resized to the input: objects look bigger, as if
    # closer, so the crop's label in canonical space is nearer by the same factor.
    canonical = CanonicalCamera.from_dict(KINECT).focal_at_input_px((224, 224))
    batch = _batch(_kinect_sample(crop=(416, 544)))
    (scale,) = canonical_scale(batch, (224, 224), canonical)
    assert float(scale) == pytest.approx(np.sqrt(640 / 544 * 480 / 416))
    labels = _to_canonical(batch['depth_m'], batch, (224, 224), canonical, (1e-3, 10.0))
    valid = batch['depth_m'] > 0
    torch.testing.assert_close(labels[valid], batch['depth_m'][valid] / scale)


def test_a_wider_lens_gives_farther_canonical_labels_and_caps_apply_in_metres():
    canonical = CanonicalCamera.from_hfov('rooms', 75.0, 64, 48).focal_at_input_px((48, 64))
    samples = []
    for hfov in (55.0, 90.0):
        scene = render_scene(3, 64, 48, hfov_deg=hfov)
        samples.append(make_sample(scene.rgb, scene.depth_m, scene.K, f'{hfov}'))
    batch = _batch(*samples)
    scale = canonical_scale(batch, (48, 64), canonical)
    np.testing.assert_allclose(scale.numpy(), [1.474, 0.767], atol=2e-3)
    labels = _to_canonical(batch['depth_m'], batch, (48, 64), canonical, (1e-3, 5.0))
    far = batch['depth_m'] > 5.0
    assert (labels[far] == 0).all()  # beyond the metric cap: invalid, whatever the lens
    near = (batch['depth_m'] > 0) & ~far
    assert (labels[1][near[1]] > batch['depth_m'][1][near[1]]).all()  # 90 deg: farther


def test_render_scene_draws_the_lens_from_a_range():
    for seed in range(5):
        fx = render_scene(seed, 64, 48, hfov_deg=(55.0, 90.0)).K[0, 0]
        hfov = np.degrees(2 * np.arctan(32.0 / fx))
        assert 55.0 <= hfov <= 90.0
    from moa_depth_ros.errors import ConfigError

    with pytest.raises(ConfigError, match='hfov_deg'):
        render_scene(0, 64, 48, hfov_deg=(90.0, 55.0))


def test_the_canonical_camera_travels_to_the_runtime(tmp_path):
    camera = {
        'name': 'rooms 75 deg',
        'fx_px': 41.7032,
        'fy_px': 41.7032,
        'width': 64,
        'height': 48,
    }
    model = tiny_model('moa_depthclip', canonical_camera=camera)
    expected = CanonicalCamera.from_dict(camera).focal_at_input_px(model.input_hw)
    assert model.config.canonical_focal_px() == pytest.approx(expected)
    checkpoint = save_checkpoint(model, tmp_path / 'm.safetensors')
    assert load_model(checkpoint).config.canonical_focal_px() == pytest.approx(expected)
    onnx_path = tmp_path / 'm.onnx'
    export_onnx(model.eval(), onnx_path)
    engine = load_engine(onnx_path)
    assert engine.canonical_focal_px == pytest.approx(expected)
    assert engine.metadata.canonical_camera.startswith('rooms 75 deg: fx 41.7')
    assert load_engine(checkpoint).canonical_focal_px == pytest.approx(expected)
    from moa_depth_ros.engine.info import describe_model_file, format_description

    text = format_description(describe_model_file(onnx_path))
    assert 'metric scale           depth for rooms 75 deg: fx 41.7' in text
    legacy = tiny_model('moa_depthclip')
    export_onnx(legacy.eval(), tmp_path / 'legacy.onnx')
    assert load_engine(tmp_path / 'legacy.onnx').canonical_focal_px is None
    legacy_text = format_description(describe_model_file(tmp_path / 'legacy.onnx'))
    assert 'no canonical camera recorded' in legacy_text
