"""``python -m training eval``: the papers' table on a tiny synthetic set, checkpoint and ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import TINY_MODEL
import torch

from training.__main__ import main


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from moa_depth_ros.model import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model('moa_depthclip', **TINY_MODEL)
    path = tmp_path_factory.mktemp('eval') / 'tiny.safetensors'
    save_checkpoint(model, path)
    return path


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and not line.startswith('#')]


def test_eval_prints_the_papers_table_with_its_protocol(checkpoint, capsys, tmp_path):
    out_json = tmp_path / 'metrics.json'
    argv = ['eval', '--checkpoint', str(checkpoint), '--dataset', 'synthetic']
    assert main([*argv, '--num-scenes', '3', '--json', str(out_json)]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0]
    assert header.startswith('# ')
    for words in ('crop=none', 'median_scaling=off', 'max_depth_m=10', 'images=3'):
        assert words in header, header
    columns, values = _rows(text)
    assert columns == ['d1', 'd2', 'd3', 'AbsRel', 'SqRel', 'RMSE', 'RMSElog', 'log10', 'SILog']
    assert all(float(v) >= 0 for v in values)
    saved = json.loads(out_json.read_text())
    assert saved['abs_rel'] == pytest.approx(float(values[3]), abs=1e-4)

    assert main([*argv, '--num-scenes', '3', '--median-scaling']) == 0
    scaled = capsys.readouterr().out
    assert 'median_scaling=on' in scaled.splitlines()[0]
    # Median scaling fixes the scale of an untrained network: AbsRel must change.
    assert _rows(scaled)[1][3] != values[3]


def test_eval_of_exported_onnx_matches_the_checkpoint(checkpoint, capsys, tmp_path):
    from moa_depth_ros.model import load_model
    from training.export import export_onnx

    onnx_path = tmp_path / 'tiny.onnx'
    export_onnx(load_model(checkpoint), onnx_path)
    common = ['--dataset', 'synthetic', '--num-scenes', '2']
    assert main(['eval', '--checkpoint', str(checkpoint), *common]) == 0
    torch_values = [float(v) for v in _rows(capsys.readouterr().out)[1]]
    # Backend auto may pick OpenVINO for an .onnx file; this test is about ONNX Runtime.
    assert main(['eval', '--model', str(onnx_path), '--backend', 'onnxruntime', *common]) == 0
    text = capsys.readouterr().out
    assert 'onnxruntime' in text.splitlines()[0]
    onnx_values = [float(v) for v in _rows(text)[1]]
    assert onnx_values == pytest.approx(torch_values, rel=1e-3, abs=1e-3)


def test_eval_without_test_data_says_what_is_missing(checkpoint, capsys, tmp_path):
    argv = ['eval', '--checkpoint', str(checkpoint), '--dataset', 'nyu']
    assert main([*argv, '--data-root', str(tmp_path)]) == 2
    assert '--list' in capsys.readouterr().err


def test_eval_scores_what_the_node_publishes_for_full_size_images(checkpoint, capsys):
    """Images larger than the network go through the node's resize, as on the robot.

    Depth comes back at the ground truth's size, converted with each image's focal length.
    """
    from moa_depth_ros.engine.torch_backend import TorchEngine
    from moa_depth_ros.errors import ConfigError
    from training.config import build_data_config
    from training.data import build_dataset
    from training.eval import evaluate_pipeline, evaluation_pipeline
    from training.metrics import MetricConfig

    argv = ['eval', '--checkpoint', str(checkpoint), '--dataset', 'synthetic']
    assert main([*argv, '--num-scenes', '2', '--synthetic-hw', '48', '64']) == 0
    printed = [float(v) for v in _rows(capsys.readouterr().out)[1]]

    values = {'dataset': 'synthetic', 'augment': False, 'synthetic_hw': (48, 64)}
    dataset = build_dataset(build_data_config({**values, 'synthetic_sizes': {'test': 2}}), 'test')
    engine = TorchEngine(str(checkpoint), device='cpu')
    shapes = []
    config = MetricConfig(min_depth_m=1e-3, max_depth_m=10.0, crop='none')
    accumulator = evaluate_pipeline(
        evaluation_pipeline(engine),
        dataset,
        metric_config=config,
        on_sample=lambda sample, depth: shapes.append(tuple(depth.shape)),
    )
    assert shapes == [(1, 1, 48, 64)] * 2
    assert accumulator.means()['abs_rel'] == pytest.approx(printed[3], abs=1e-4)

    resized = dict(dataset[0], image=dataset[0]['image'][:, :32, :32])  # image != depth size
    with pytest.raises(ConfigError, match='build the dataset without image_hw'):
        evaluate_pipeline(evaluation_pipeline(engine), [resized], metric_config=config)


def _synthetic(hw, count=2):
    from training.config import build_data_config
    from training.data import build_dataset

    values = {'dataset': 'synthetic', 'augment': False, 'synthetic_hw': tuple(hw)}
    return build_dataset(build_data_config({**values, 'synthetic_sizes': {'test': count}}), 'test')


def _uint8(sample):
    return (sample['image'].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def test_flip_average_equals_a_manual_flip_and_average(checkpoint):
    """The papers' test-time flip: mirror the input, mirror the prediction back, average."""
    from moa_depth_ros.engine.torch_backend import TorchEngine
    from moa_depth_ros.model import load_model
    from training.eval import evaluate_pipeline, evaluation_pipeline
    from training.metrics import MetricConfig

    model = load_model(checkpoint).eval()
    dataset = _synthetic(model.input_hw)  # at the input size: no resize, no upsampling
    got = []
    engine = TorchEngine(str(checkpoint), device='cpu')
    evaluate_pipeline(
        evaluation_pipeline(engine, focal_correction=False, flip_average=True),
        dataset,
        metric_config=MetricConfig(min_depth_m=1e-3, max_depth_m=10.0, crop='none'),
        on_sample=lambda sample, depth: got.append(depth[0, 0]),
    )
    for sample, depth in zip(dataset, got):
        image = torch.from_numpy(_uint8(sample)).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            plain = model(image)[0][0, 0]
            mirrored = model(torch.flip(image, dims=[3]))[0][0, 0]
        want = 0.5 * (plain + torch.flip(mirrored, dims=[1]))
        want = want.clamp(model.config.min_depth_m, model.config.max_depth_m)
        torch.testing.assert_close(depth, want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(depth, plain.clamp(1e-3, 10.0), atol=1e-4)


def test_official_resize_feeds_the_network_pils_bicubic_image(checkpoint, capsys):
    from PIL import Image

    from training.eval import evaluate_pipeline, evaluation_pipeline
    from training.metrics import MetricConfig

    class Recorder:
        input_hw = (32, 32)
        depth_range_m = (1e-3, 10.0)
        canonical_focal_px = None

        def __init__(self):
            self.inputs = []

        def infer(self, image):
            self.inputs.append(image.copy())
            return np.full((1, 1, 32, 32), 2.0, np.float32), np.ones((1, 1, 32, 32), np.float32)

    dataset = _synthetic((48, 64))
    config = MetricConfig(min_depth_m=1e-3, max_depth_m=10.0, crop='none')
    official, node = Recorder(), Recorder()
    evaluate_pipeline(
        evaluation_pipeline(official), dataset, metric_config=config, resize='pil_bicubic'
    )
    evaluate_pipeline(evaluation_pipeline(node), dataset, metric_config=config)
    for sample, fed, fed_node in zip(dataset, official.inputs, node.inputs):
        want = np.asarray(Image.fromarray(_uint8(sample)).resize((32, 32), Image.BICUBIC))
        np.testing.assert_allclose(fed[0].transpose(1, 2, 0) * 255.0, want, atol=1e-3)
        assert np.abs(fed - fed_node).max() > 1.0 / 255.0  # not the node's resize

    argv = ['eval', '--checkpoint', str(checkpoint), '--dataset', 'synthetic']
    argv += ['--num-scenes', '2', '--synthetic-hw', '48', '64']
    assert main(argv) == 0
    node_text = capsys.readouterr().out
    assert 'flip_average=off resize=node' in node_text.splitlines()[0]
    assert main([*argv, '--flip-average', '--resize', 'pil_bicubic']) == 0
    text = capsys.readouterr().out
    assert 'flip_average=on resize=pil_bicubic' in text.splitlines()[0]
    assert _rows(text)[1] != _rows(node_text)[1]
