"""``moa-depth info``: what a model file is, its metadata and backend, from headers only."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest
from safetensors.torch import save_file
from test_engine_support import TinyDepthNet
import torch

from moa_depth_ros import cli
from moa_depth_ros.engine import cache
from moa_depth_ros.engine.base import ModelMetadata
from moa_depth_ros.engine.info import (
    describe_model_file,
    format_description,
    read_safetensors_header,
)
from moa_depth_ros.errors import EngineError
from training.onnx_export import export_onnx


@pytest.fixture(scope='module')
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('info') / 'tiny.onnx'
    export_onnx(TinyDepthNet(), path)
    return path


def test_onnx_info_text(onnx_file, capsys):
    assert cli.main(['info', str(onnx_file)]) == 0
    out = capsys.readouterr().out
    assert 'ONNX model -> backend onnxruntime' in out
    assert ('or openvino (backend auto' in out) == (
        importlib.util.find_spec('openvino') is not None
    )
    assert 'tiny_standin, input 32x24 (WxH), 0.25-8 m' in out
    assert 'opsets' in out and 'meta.config_digest' in out


def test_onnx_info_json(onnx_file, capsys):
    assert cli.main(['info', '--json', '--no-sha256', str(onnx_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['model'] == {
        'name': 'tiny_standin',
        'input_hw': [24, 32],
        'depth_range_m': [0.25, 8.0],
        'package_version': info['metadata']['package_version'],
        'canonical_focal_px': None,  # a stand-in exported without a canonical camera
        'canonical_camera': '',
    }
    assert info['onnx']['opsets'][''] == 17 and info['problems'] == []
    assert 'sha256' not in info


def test_checkpoint_info_reads_the_safetensors_header(tmp_path):
    model = TinyDepthNet()
    meta = {
        **model.describe(),
        'format': 'moa_depth_ros.checkpoint',
        'package_version': '0.1.0',
        'input_name': 'image',
        'output_names': 'depth,confidence',
    }
    path = tmp_path / 'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata=meta)
    info = describe_model_file(path)
    assert info['backend'] == 'torch' and info['kind'].startswith('PyTorch checkpoint')
    assert info['checkpoint']['parameters'] == sum(t.numel() for t in model.state_dict().values())
    assert info['model']['name'] == 'tiny_standin' and info['problems'] == []
    header_meta, tensors = read_safetensors_header(path)
    assert header_meta['format'] == 'moa_depth_ros.checkpoint' and 'stem.weight' in tensors


def test_engine_info_from_sidecar_and_without_one(tmp_path, capsys):
    engine = tmp_path / 'model.engine'
    engine.write_bytes(b'serialized engine')
    assert cli.main(['info', str(engine)]) == 2
    assert 'PROBLEM' in capsys.readouterr().out
    metadata = ModelMetadata('tiny_standin', 24, 32, 0.25, 8.0, package_version='0.1.0')
    sidecar = cache.EngineSidecar(
        tensorrt_version='10.3.0',
        gpu_name='NVIDIA Jetson Orin',
        precision='fp16',
        onnx_sha256='a' * 64,
        engine_sha256=cache.file_sha256(engine),
        metadata=metadata,
    )
    cache.write_sidecar(engine, sidecar)
    info = describe_model_file(engine)
    assert info['tensorrt']['gpu_name'] == 'NVIDIA Jetson Orin'
    assert info['tensorrt']['precision'] == 'fp16' and info['problems'] == []
    assert info['model']['input_hw'] == [24, 32]
    assert 'parity                 not recorded' in format_description(info)
    parity = {
        'passed': True,
        'reference': 'onnxruntime fp32 (CPU)',
        'inputs': {'random': {'mean_rel_err': 2e-4}, 'saturated': {'mean_rel_err': 5e-4}},
        'attempts': [{'passed': False}, {'passed': True}],
    }
    names = tuple(f'/blocks.{i}/norm' for i in range(12))
    cache.write_sidecar(
        engine, dataclasses.replace(sidecar, parity=parity, fp32_layer_names=names)
    )
    text = format_description(describe_model_file(engine))
    assert 'passed against onnxruntime fp32 (CPU): worst mean relative depth error 0.050%' in text
    assert '(saturated input), 2 build(s)' in text and '... (12 in all)' in text
    # A sidecar from a build that judged confidence too says its worst confidence error.
    parity['inputs']['random']['confidence_mean_abs_err'] = 0.0031
    parity['inputs']['saturated']['confidence_mean_abs_err'] = 0.0007
    cache.write_sidecar(engine, dataclasses.replace(sidecar, parity=parity))
    text = format_description(describe_model_file(engine))
    assert '(saturated input), worst mean confidence error 0.0031, 2 build(s)' in text
    engine.write_bytes(b'replaced')
    assert 'sha256' in describe_model_file(engine)['problems'][0]


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_onnx_without_metadata_is_a_problem(tmp_path, capsys):
    path = tmp_path / 'bare.onnx'
    model = TinyDepthNet()
    torch.onnx.export(
        model, (torch.zeros(1, 3, 24, 32),), str(path), dynamo=False, opset_version=17
    )
    assert cli.main(['info', str(path)]) == 2
    out = capsys.readouterr().out
    assert 'PROBLEM' in out and 'lacks model_name' in out


def test_bad_files(tmp_path, capsys):
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'\xff' * 32)
    with pytest.raises(EngineError, match='not a safetensors file'):
        describe_model_file(junk)
    assert cli.main(['info', str(tmp_path / 'missing.onnx')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert cli.main(['info', str(tmp_path / 'model.tflite')]) == 2
