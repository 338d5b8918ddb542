"""``python -m training eval``: the papers' table on a tiny synthetic set, checkpoint and ONNX."""

from __future__ import annotations

import json

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
    assert main(['eval', '--model', str(onnx_path), *common]) == 0
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
