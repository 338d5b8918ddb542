"""Every real model through every backend: torch vs onnxruntime parity and the round trip.

The towers are the model tests' tiny ones (test/model_fixtures.py), so the file runs in
seconds on a CPU; the graphs are the real MoA-DepthCLIP, SPACE-CLIP and DepthCLIP ones.
Round trip: checkpoint -> ``python -m training export`` -> load -> infer, then the same
ONNX through the TensorRT builder and runtime (the fake TensorRT here, the real one on a GPU).
"""

from __future__ import annotations

import sys

from model_fixtures import TINY, perturb_batchnorm, tiny_model
import numpy as np
import pytest
from test_engine_support import FakeCuda, make_fake_tensorrt, random_image

from moa_depth_ros.engine import load_engine, tensorrt_backend, tensorrt_builder
from moa_depth_ros.engine.torch_backend import TorchEngine
from moa_depth_ros.errors import ConfigError, EngineError
from moa_depth_ros.model import save_checkpoint
from training import export

PARITY_RTOL = 1e-4  # FP32 torch vs onnxruntime, relative to the output's scale


@pytest.fixture(scope='module', params=sorted(TINY))
def exported(request, tmp_path_factory):
    """Return a tiny model of each architecture, saved and exported by the CLI."""
    name = request.param
    model = tiny_model(name, seed=4).eval()
    perturb_batchnorm(model)  # non-degenerate outputs, so parity means something
    root = tmp_path_factory.mktemp(name)
    checkpoint = save_checkpoint(model, root / f'{name}.safetensors')
    onnx_path = root / f'{name}.onnx'
    assert export.main(['--checkpoint', str(checkpoint), '--output', str(onnx_path)]) == 0
    return name, model, checkpoint, onnx_path


@pytest.mark.parametrize(
    'backend', ['onnxruntime', pytest.param('openvino', marks=pytest.mark.openvino)]
)
def test_torch_and_the_cpu_runtimes_agree(exported, backend):
    name, _, checkpoint, onnx_path = exported
    reference = load_engine(checkpoint, device='cpu')
    candidate = load_engine(onnx_path, backend=backend, precision='fp32')
    assert (reference.backend, candidate.backend) == ('torch', backend)
    assert reference.metadata.model_name == candidate.metadata.model_name == name
    assert reference.input_hw == candidate.input_hw
    assert reference.depth_range_m == candidate.depth_range_m
    assert reference.metadata.extra['config_digest'] == candidate.metadata.extra['config_digest']
    image = random_image(reference.input_hw, batch=2, seed=1)
    errors = export.parity_errors(reference.infer(image), candidate.infer(image))
    assert errors['depth_rel'] < PARITY_RTOL, errors
    assert errors['confidence_rel'] < PARITY_RTOL, errors


def test_checkpoint_export_records_its_source(exported):
    _, _, checkpoint, onnx_path = exported
    from moa_depth_ros.engine.cache import file_sha256
    from moa_depth_ros.engine.onnx_backend import read_onnx_metadata

    meta = read_onnx_metadata(onnx_path)
    assert meta.extra['source_checkpoint_sha256'] == file_sha256(checkpoint)
    assert meta.extra['opset'] == '17' and meta.extra['config_json'].startswith('{')


def test_round_trip_through_the_tensorrt_path(exported, tmp_path, monkeypatch):
    _, _, _, onnx_path = exported
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, 'tensorrt', make_fake_tensorrt(cuda=cuda))
    monkeypatch.setattr(tensorrt_backend, 'default_cuda_api', lambda device='auto': cuda)
    engine = load_engine(onnx_path, backend='tensorrt', cache_dir=tmp_path)
    image = random_image(engine.input_hw, seed=2)
    depth, confidence = engine.infer(image)
    assert np.isfinite(depth).all() and depth.shape == (1, 1, *engine.input_hw)
    lo, hi = engine.depth_range_m
    assert (depth >= lo * (1 - 1e-3)).all() and (depth <= hi * (1 + 1e-3)).all()
    reference = load_engine(onnx_path, backend='onnxruntime')
    errors = export.parity_errors(reference.infer(image), (depth, confidence))
    assert errors['depth_rel'] < 2e-3 and errors['confidence_rel'] < 2e-3
    assert engine.sidecar.fp32_layers >= 1 or exported[0] == 'depthclip'


def test_torch_bf16_runs_close_to_fp32(exported):
    _, model, _, _ = exported
    fp32 = TorchEngine(model, device='cpu')
    bf16 = TorchEngine(model, device='cpu', precision='bf16')
    image = random_image(fp32.input_hw, seed=4)
    depth32, _ = fp32.infer(image)
    depth16, confidence16 = bf16.infer(image)
    assert depth16.dtype == np.float32 and confidence16.dtype == np.float32
    assert np.max(np.abs(depth16 - depth32)) / np.max(np.abs(depth32)) < 0.1
    assert 'bf16' in bf16.describe()


def test_corrupt_checkpoint_is_an_engine_error(tmp_path):
    path = tmp_path / 'broken.safetensors'
    path.write_bytes(b'\x00' * 64)
    with pytest.raises(EngineError, match='cannot load the checkpoint'):
        load_engine(path)
    assert export.main(['--checkpoint', str(path), '--output', str(tmp_path / 'x.onnx')]) == 2
    assert not (tmp_path / 'x.onnx').exists()


def test_torch_backend_device_and_precision_errors(exported):
    _, model, _, _ = exported
    with pytest.raises(ConfigError, match='fp16 needs a CUDA device'):
        TorchEngine(model, device='cpu', precision='fp16')
    with pytest.raises(ConfigError, match='precision must be one of'):
        TorchEngine(model, device='cpu', precision='int8')
    with pytest.raises(ConfigError, match="got 'tpu:0'"):
        TorchEngine(model, device='tpu:0')
    engine = TorchEngine(model, device='cpu')
    engine.close()
    with pytest.raises(EngineError, match='closed'):
        engine.infer(random_image(engine.input_hw))


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_round_trip(exported, tmp_path):
    _, _, _, onnx_path = exported
    sidecar = tensorrt_builder.build_engine(onnx_path, tmp_path / 'model.engine')
    engine = load_engine(tmp_path / 'model.engine')
    assert engine.sidecar == sidecar
    image = random_image(engine.input_hw, seed=5)
    errors = export.parity_errors(
        load_engine(onnx_path, backend='onnxruntime').infer(image), engine.infer(image)
    )
    assert errors['depth_rel'] < 2e-3 and errors['confidence_rel'] < 2e-2
