"""The TensorRT builder and runtime, run against a fake ``tensorrt`` here, the real one on a GPU.

The fake (test_engine_support.py) has the TensorRT 10 API surface the code uses, so every
code path beneath TensorRT executes in CI: FP16 with normalization pinned to FP32, the
workspace limit, the optimisation profile, the timing cache, the sidecar, refusing foreign
engines, and the build-once cache. Tests marked ``tensorrt`` and ``gpu`` build and run a real
engine and skip elsewhere.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import types

import numpy as np
import pytest
from test_engine_support import FakeCuda, TinyDepthNet, make_fake_tensorrt, random_image

from moa_depth_ros.engine import cache, load_engine, tensorrt_backend, tensorrt_builder
from moa_depth_ros.engine.tensorrt_backend import TensorRTEngine
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError
from training import build_engine as build_engine_cli
from training import export

GPU = 'NVIDIA Fake GPU'
FP16_TOLERANCE = 2e-3  # relative to the output's peak; FP16 has an 11-bit mantissa


@pytest.fixture(scope='module')
def onnx_files(tmp_path_factory):
    model = TinyDepthNet()
    root = tmp_path_factory.mktemp('trt')
    export.export_onnx(model, root / 'static.onnx')
    export.export_onnx(model, root / 'dynamic.onnx', dynamic_batch=True)
    return root / 'static.onnx', root / 'dynamic.onnx'


@pytest.fixture
def fake(monkeypatch):
    cuda = FakeCuda(GPU)
    trt = make_fake_tensorrt(cuda=cuda)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setattr(tensorrt_backend, 'default_cuda_api', lambda device='auto': cuda)
    return types.SimpleNamespace(trt=trt, cuda=cuda, monkeypatch=monkeypatch)


def _ort(path, image):
    return load_engine(path, backend='onnxruntime').infer(image)


def test_fp16_build_pins_normalization_to_fp32(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    options = tensorrt_builder.BuildOptions(workspace_bytes=1 << 28)
    sidecar = tensorrt_builder.build_engine(onnx_files[0], engine_path, options)
    network, config = fake.trt.builds[-1]
    trt = fake.trt
    assert config.pool_limits == {trt.MemoryPoolType.WORKSPACE: 1 << 28}
    assert {trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS} <= config.flags
    norms = [layer for layer in network.layers if layer.type == trt.LayerType.NORMALIZATION]
    assert len(norms) == 1 == sidecar.fp32_layers
    assert norms[0].precision == trt.float32 and norms[0].output_types == {0: trt.float32}
    others = [layer for layer in network.layers if layer.type != trt.LayerType.NORMALIZATION]
    assert not any(layer.precision_was_set for layer in others)
    assert config.profiles == []  # static batch: no optimisation profile
    assert sidecar.precision == 'fp16' and sidecar.batch_profile is None
    assert sidecar.gpu_name == GPU and sidecar.tensorrt_version == '10.3.0'
    assert sidecar.onnx_sha256 == cache.file_sha256(onnx_files[0])
    assert sidecar.engine_sha256 == cache.file_sha256(engine_path)
    assert cache.read_sidecar(engine_path) == sidecar


def test_dynamic_batch_gets_an_optimisation_profile(fake, onnx_files, tmp_path):
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(1, 2, 4))
    sidecar = tensorrt_builder.build_engine(onnx_files[1], tmp_path / 'd.engine', options)
    _, config = fake.trt.builds[-1]
    assert config.profiles[0].shapes['image'] == (
        (1, 3, 24, 32),
        (2, 3, 24, 32),
        (4, 3, 24, 32),
    )
    assert fake.trt.BuilderFlag.FP16 not in config.flags
    assert sidecar.batch_profile == (1, 2, 4) and sidecar.precision == 'fp32'


def test_gpu_without_fast_fp16_gets_fp32(monkeypatch, onnx_files, tmp_path):
    trt = make_fake_tensorrt(fast_fp16=False)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    sidecar = tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'e.engine', gpu='Old GPU')
    assert sidecar.precision == 'fp32' and sidecar.requested_precision == 'fp16'
    assert trt.BuilderFlag.FP16 not in trt.builds[-1][1].flags


def test_timing_cache_is_written_and_reused(fake, onnx_files, tmp_path):
    timing = tmp_path / 'timing.cache'
    options = tensorrt_builder.BuildOptions(timing_cache=timing)
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'a.engine', options)
    assert timing.read_bytes().startswith(b'TIMING:10.3.0')
    first = timing.read_bytes()
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'b.engine', options)
    assert fake.trt.builds[-1][1].timing_cache.loaded_from == first
    timing.write_bytes(b'TIMING:9.0.0:from another release')
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'c.engine', options)
    assert fake.trt.builds[-1][1].timing_cache.loaded_from == b''  # rejected -> fresh


def test_unreadable_timing_cache_starts_afresh(fake, onnx_files, tmp_path, monkeypatch):
    create = fake.trt.BuilderConfig.create_timing_cache

    def strict_create(self, data):
        # A blob TensorRT cannot read at all gives no cache object.
        return None if data and not bytes(data).startswith(b'TIMING:') else create(self, data)

    monkeypatch.setattr(fake.trt.BuilderConfig, 'create_timing_cache', strict_create)
    timing = tmp_path / 'timing.cache'
    timing.write_bytes(b'\x00garbage from a crashed write')
    options = tensorrt_builder.BuildOptions(timing_cache=timing)
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'a.engine', options)
    assert fake.trt.builds[-1][1].timing_cache.loaded_from == b''
    assert timing.read_bytes().startswith(b'TIMING:10.3.0')  # replaced by a good cache


def test_failed_build_writes_nothing(monkeypatch, onnx_files, tmp_path):
    monkeypatch.setitem(sys.modules, 'tensorrt', make_fake_tensorrt(fail_build=True))
    with pytest.raises(EngineError, match='failed to build'):
        tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'x.engine', gpu=GPU)
    assert list(tmp_path.iterdir()) == []


def test_unparsable_onnx_reports_parser_errors(fake, onnx_files, tmp_path, monkeypatch):
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(onnx_files[0].read_bytes())

    def refuse(self, model):
        self.errors.append(fake.trt.ParserError('unsupported operator FancyOp'))
        return False

    monkeypatch.setattr(fake.trt.OnnxParser, 'parse_from_file', refuse)
    with pytest.raises(EngineError, match='cannot parse the ONNX: .*FancyOp'):
        tensorrt_builder.build_engine(bad, tmp_path / 'x.engine')


def test_engine_runs_and_matches_onnxruntime(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    tensorrt_builder.build_engine(onnx_files[0], engine_path, tensorrt_builder.BuildOptions())
    engine = load_engine(engine_path)
    assert isinstance(engine, TensorRTEngine) and engine.backend == 'tensorrt'
    assert engine.input_hw == (24, 32) and engine.depth_range_m == (0.25, 8.0)
    image = random_image(engine.input_hw, batch=2, seed=7)
    depth, confidence = engine.infer(image)  # static batch 1: two runs
    assert depth.shape == (2, 1, 24, 32) and depth.dtype == np.float32
    errors = export.parity_errors(_ort(onnx_files[0], image), (depth, confidence))
    assert 0 < errors['depth_rel'] < FP16_TOLERANCE
    assert errors['confidence_rel'] < FP16_TOLERANCE
    assert len(fake.trt.executions) == 2
    assert 'fp16' in engine.describe() and GPU in engine.describe()
    engine.close()
    engine.close()
    assert fake.cuda.memory == {} and fake.cuda.streams == set()
    with pytest.raises(EngineError, match='closed'):
        engine.infer(image)


def test_dynamic_engine_splits_batches_beyond_the_profile(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'd.engine'
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(1, 1, 2))
    tensorrt_builder.build_engine(onnx_files[1], engine_path, options)
    engine = TensorRTEngine(engine_path, cuda=fake.cuda)
    image = random_image(engine.input_hw, batch=5, seed=8)
    depth, confidence = engine.infer(image)
    reference = _ort(onnx_files[1], image)
    np.testing.assert_allclose(depth, reference[0], rtol=1e-6)
    np.testing.assert_allclose(confidence, reference[1], rtol=1e-6)
    assert len(fake.trt.executions) == 3  # 2 + 2 + 1


def test_dynamic_engine_with_a_single_size_profile_still_sets_the_shape(
    fake, onnx_files, tmp_path
):
    # `build-engine --batch 1 1 1` on a dynamic-batch ONNX: the engine's input is still
    # [-1, 3, H, W], so every run must set the input shape.
    engine_path = tmp_path / 'one.engine'
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(1, 1, 1))
    tensorrt_builder.build_engine(onnx_files[1], engine_path, options)
    engine = TensorRTEngine(engine_path, cuda=fake.cuda)
    image = random_image(engine.input_hw, batch=3, seed=4)
    depth, _ = engine.infer(image)
    np.testing.assert_allclose(depth, _ort(onnx_files[1], image)[0], rtol=1e-6)


def test_batches_the_profile_cannot_take_are_refused(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'two.engine'
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(2, 2, 4))
    tensorrt_builder.build_engine(onnx_files[1], engine_path, options)
    engine = TensorRTEngine(engine_path, cuda=fake.cuda)
    assert engine.infer(random_image(engine.input_hw, batch=8))[0].shape[0] == 8
    for batch in (1, 5):  # below the minimum; 4 + 1 leaves a chunk below it
        with pytest.raises(EngineError, match=f'batches of 2 to 4 .*a batch of {batch}'):
            engine.infer(random_image(engine.input_hw, batch=batch))


def test_engine_runs_from_a_worker_thread(fake, onnx_files, tmp_path):
    # The node loads the engine on its main thread and infers on a worker thread, whose
    # current CUDA device is 0 unless the engine makes its own device current there.
    engine_path = tmp_path / 'm.engine'
    tensorrt_builder.build_engine(onnx_files[0], engine_path)
    engine = load_engine(engine_path)
    image = random_image(engine.input_hw, seed=3)
    results = []
    worker = threading.Thread(target=lambda: results.append(engine.infer(image)))
    worker.start()
    worker.join()
    assert len(results) == 1, 'inference on the worker thread failed'
    np.testing.assert_allclose(results[0][0], _ort(onnx_files[0], image)[0], rtol=2e-3)


def test_engine_from_another_gpu_or_version_is_refused(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    tensorrt_builder.build_engine(onnx_files[0], engine_path, gpu='NVIDIA Jetson AGX Orin')
    with pytest.raises(EngineError, match=r"GPU 'NVIDIA Jetson AGX Orin'.*build-engine"):
        load_engine(engine_path)
    tensorrt_builder.build_engine(onnx_files[0], engine_path)
    fake.monkeypatch.setattr(fake.trt, '__version__', '10.7.0')
    with pytest.raises(EngineError, match=r'TensorRT 10\.3\.0 \(this machine has 10\.7\.0\)'):
        load_engine(engine_path)


def test_tampered_engine_or_missing_sidecar(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    tensorrt_builder.build_engine(onnx_files[0], engine_path)
    engine_path.write_bytes(engine_path.read_bytes()[:-10])
    with pytest.raises(EngineError, match='does not match the sha256'):
        load_engine(engine_path)
    cache.sidecar_path(engine_path).unlink()
    with pytest.raises(ModelMetadataError, match='no sidecar'):
        load_engine(engine_path)


def test_engine_that_tensorrt_cannot_deserialize(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.plan'
    sidecar = tensorrt_builder.build_engine(onnx_files[0], engine_path)
    engine_path.write_bytes(b'garbage' * 10)
    sha = cache.file_sha256(engine_path)
    cache.write_sidecar(engine_path, dataclasses.replace(sidecar, engine_sha256=sha))
    with pytest.raises(EngineError, match='could not deserialize'):
        load_engine(engine_path)


def test_node_start_builds_once_then_uses_the_cache(fake, onnx_files, tmp_path):
    cache_dir = tmp_path / 'cache'
    first = load_engine(onnx_files[0], backend='tensorrt', cache_dir=cache_dir)
    assert len(fake.trt.builds) == 1
    first.close()
    second = load_engine(onnx_files[0], backend='tensorrt', cache_dir=cache_dir)
    assert len(fake.trt.builds) == 1  # cache hit: no rebuild
    assert second.path == first.path and second.path.parent == cache_dir
    assert any(p.name.startswith('timing-') for p in cache_dir.iterdir())
    load_engine(onnx_files[0], backend='tensorrt', cache_dir=cache_dir, precision='fp32')
    assert len(fake.trt.builds) == 2  # another precision is another engine
    fake.cuda.name = 'NVIDIA Other GPU'
    third = load_engine(onnx_files[0], backend='tensorrt', cache_dir=cache_dir)
    assert len(fake.trt.builds) == 3 and third.path != first.path


def test_loader_rules_for_tensorrt(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    tensorrt_builder.build_engine(onnx_files[0], engine_path)
    with pytest.raises(ConfigError, match='precision is fixed'):
        load_engine(engine_path, precision='fp32')
    with pytest.raises(EngineError, match='onnxruntime backend runs .onnx'):
        load_engine(engine_path, backend='onnxruntime')


def test_import_tensorrt_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    with pytest.raises(EngineError, match='TensorRT is not available.*onnxruntime'):
        tensorrt_backend.import_tensorrt()
    monkeypatch.setitem(sys.modules, 'tensorrt', types.ModuleType('tensorrt'))
    with pytest.raises(EngineError, match='stub'):
        tensorrt_backend.import_tensorrt()
    monkeypatch.setitem(sys.modules, 'tensorrt', make_fake_tensorrt(version='8.6.1'))
    with pytest.raises(EngineError, match='too old'):
        tensorrt_backend.import_tensorrt()


def test_cuda_device_parsing():
    assert tensorrt_backend.parse_cuda_device('auto') == 0
    assert tensorrt_backend.parse_cuda_device('cuda:2') == 2
    with pytest.raises(ConfigError, match="got 'cpu'"):
        tensorrt_backend.parse_cuda_device('cpu')


def test_build_options_validation():
    with pytest.raises(ConfigError, match='precision'):
        tensorrt_builder.BuildOptions(precision='int8')
    with pytest.raises(ConfigError, match='batch_profile'):
        tensorrt_builder.BuildOptions(batch_profile=(2, 1, 4))
    with pytest.raises(ConfigError, match='workspace'):
        tensorrt_builder.BuildOptions(workspace_bytes=10)


def test_build_engine_command_line(fake, onnx_files, tmp_path, capsys):
    out = tmp_path / 'cli.engine'
    args = ['--onnx', str(onnx_files[1]), '--output', str(out), '--batch', '1', '2', '3']
    assert build_engine_cli.main(args) == 0
    assert 'fp16' in capsys.readouterr().out
    assert cache.read_sidecar(out).batch_profile == (1, 2, 3)
    assert build_engine_cli.main(['--onnx', str(tmp_path / 'none.onnx')]) == 2
    assert 'does not exist' in capsys.readouterr().err


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_fp16_engine_matches_onnxruntime(onnx_files, tmp_path):
    engine_path = tmp_path / 'real.engine'
    sidecar = tensorrt_builder.build_engine(onnx_files[1], engine_path)
    assert sidecar.fp32_layers >= 1
    engine = load_engine(engine_path)
    image = random_image(engine.input_hw, batch=3, seed=11)
    errors = export.parity_errors(_ort(onnx_files[1], image), engine.infer(image))
    assert errors['depth_rel'] < FP16_TOLERANCE and errors['confidence_rel'] < FP16_TOLERANCE


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_cache_builds_once(onnx_files, tmp_path):
    first = load_engine(onnx_files[0], backend='tensorrt', cache_dir=tmp_path)
    stamp = first.path.stat().st_mtime_ns
    first.close()
    second = load_engine(onnx_files[0], backend='tensorrt', cache_dir=tmp_path)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
