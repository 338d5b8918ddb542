"""The OpenVINO backend on this CPU, against ONNX Runtime on the same files; ``backend='auto'``.

What a user would notice: OpenVINO gives ONNX Runtime's depth on the same ``.onnx`` file
(static and dynamic batch), a device or precision the machine cannot run is refused with the
reason, a reduced precision that moves the depth is not used silently, a second start loads
the compiled model from the cache and a replaced model file is compiled again, and ``auto``
picks a backend by rule or by a measurement that it remembers.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

ov = pytest.importorskip('openvino')

from test_engine_support import TinyDepthNet, random_image  # noqa: E402
from tiny_model import write_tiny_onnx  # noqa: E402

from moa_depth_ros.engine import choice, load_engine  # noqa: E402
from moa_depth_ros.engine.accuracy import parity_errors  # noqa: E402
from moa_depth_ros.engine.base import DepthEngine, ModelMetadata  # noqa: E402
from moa_depth_ros.engine.openvino_backend import OpenVinoEngine, openvino_device  # noqa: E402
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError  # noqa: E402
from training import export  # noqa: E402

PARITY = 1e-5  # both run the same FP32 graph; observed differences are ~1e-7


def _capabilities():
    return ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


@pytest.fixture(scope='module')
def onnx_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('openvino')
    model = TinyDepthNet()
    export.export_onnx(model, root / 'static.onnx')
    export.export_onnx(model, root / 'dynamic.onnx', dynamic_batch=True)
    return root / 'static.onnx', root / 'dynamic.onnx'


def _cancelling_onnx(path, input_hw=(24, 32)):
    """Write a network whose depth is 2 m + 0.3 m * red, as 1000.3 * red - 1000 * green.

    On grey input the two large terms cancel; rounded to bf16 (8-bit mantissa) 1000.3
    becomes 1000, so a bf16 build loses the 0.3 m term and noise on random input: the
    accuracy bar must refuse it.
    """
    import onnx
    from onnx import TensorProto, helper

    h, w = input_hw
    graph = helper.make_graph(
        [
            helper.make_node('Conv', ['image', 'weight', 'bias'], ['depth']),
            helper.make_node('Sigmoid', ['depth'], ['confidence']),
        ],
        'cancelling',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, h, w])],
        [
            helper.make_tensor_value_info('depth', TensorProto.FLOAT, [1, 1, h, w]),
            helper.make_tensor_value_info('confidence', TensorProto.FLOAT, [1, 1, h, w]),
        ],
        [
            helper.make_tensor('weight', TensorProto.FLOAT, [1, 3, 1, 1], [1000.3, -1000.0, 0]),
            helper.make_tensor('bias', TensorProto.FLOAT, [1], [2.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 8
    meta = ModelMetadata('cancelling', h, w, 0.1, 10.0, package_version='test')
    helper.set_model_props(model, meta.to_dict())
    onnx.save(model, os.fspath(path))
    return path


@pytest.mark.parametrize('which', [0, 1], ids=['static batch', 'dynamic batch'])
def test_openvino_gives_onnxruntimes_depth_on_the_same_file(onnx_files, tmp_path, which):
    path = onnx_files[which]
    engine = load_engine(path, backend='openvino', precision='fp32', cache_dir=tmp_path)
    reference = load_engine(path, backend='onnxruntime')
    assert isinstance(engine, OpenVinoEngine) and engine.backend == 'openvino'
    assert engine.input_hw == (24, 32) and engine.depth_range_m == (0.25, 8.0)
    assert 'OpenVINO CPU fp32]' in engine.describe()
    for batch in (1, 3):  # a static batch of 1 runs a batch of 3 one image at a time
        image = random_image(engine.input_hw, batch=batch, seed=batch)
        depth, confidence = engine.infer(image)
        assert depth.shape == confidence.shape == (batch, 1, 24, 32)
        assert depth.dtype == confidence.dtype == np.float32
        errors = parity_errors(reference.infer(image), (depth, confidence))
        assert errors['depth_rel'] < PARITY and errors['confidence_rel'] < PARITY, errors
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match='closed'):
        engine.infer(image)


def test_the_nodes_device_names_map_onto_openvino_devices():
    devices = ['CPU', 'GPU.0', 'GPU.1', 'NPU']
    assert openvino_device('auto', devices) == openvino_device('cpu', devices) == 'CPU'
    assert openvino_device('gpu', devices) == 'GPU'  # OpenVINO's default GPU
    assert openvino_device('gpu:1', devices) == 'GPU.1'
    assert openvino_device('npu', devices) == 'NPU'
    assert openvino_device('gpu', ['CPU', 'GPU']) == 'GPU'
    with pytest.raises(EngineError, match=r"no GPU.2 device on this machine \(it has \['CPU'"):
        openvino_device('gpu:2', devices[:2])
    with pytest.raises(EngineError, match='no NPU device'):
        openvino_device('npu', ['CPU'])
    with pytest.raises(ConfigError, match='NVIDIA GPU'):
        openvino_device('cuda:0', devices)
    with pytest.raises(ConfigError, match='must be auto, cpu, gpu'):
        openvino_device('tpu', devices)


def test_a_device_or_precision_this_machine_lacks_is_refused(onnx_files, tmp_path):
    if 'NPU' not in ov.Core().available_devices:
        with pytest.raises(EngineError, match='no NPU device'):
            load_engine(onnx_files[0], backend='openvino', device='npu', cache_dir=tmp_path)
    with pytest.raises(ConfigError, match='NVIDIA GPU'):
        load_engine(onnx_files[0], backend='openvino', device='cuda', cache_dir=tmp_path)
    with pytest.raises(ConfigError, match='precision must be auto, int8 or one of'):
        load_engine(onnx_files[0], backend='openvino', precision='int4', cache_dir=tmp_path)
    with pytest.raises(ConfigError, match='spin_wait is an ONNX Runtime setting'):
        load_engine(onnx_files[0], backend='openvino', spin_wait=True, cache_dir=tmp_path)
    if 'FP16' not in _capabilities():
        with pytest.raises(ConfigError, match=r'CPU cannot run fp16 \(it offers .*FP32'):
            load_engine(onnx_files[0], backend='openvino', precision='fp16', cache_dir=tmp_path)


def test_files_openvino_cannot_run_are_refused_with_the_reason(tmp_path, onnx_files):
    truncated = tmp_path / 'truncated.onnx'
    truncated.write_bytes(onnx_files[0].read_bytes()[:-2000])
    with pytest.raises(EngineError, match='not a valid ONNX file'):
        OpenVinoEngine(truncated, cache_dir=tmp_path)
    with pytest.raises(EngineError, match='openvino backend runs .onnx and INT8 .xml files'):
        weights = tmp_path / 'model.safetensors'
        weights.write_bytes(b'{}')
        load_engine(weights, backend='openvino')

    import onnx

    renamed = onnx.load(os.fspath(onnx_files[0]))
    renamed.graph.output[1].name = 'certainty'
    for node in renamed.graph.node:
        node.output[:] = ['certainty' if o == 'confidence' else o for o in node.output]
    onnx.save(renamed, os.fspath(tmp_path / 'renamed.onnx'))
    with pytest.raises(ModelMetadataError, match=r"outputs \['depth', 'confidence'\]"):
        OpenVinoEngine(tmp_path / 'renamed.onnx', cache_dir=tmp_path)
    unknown = onnx.load(os.fspath(onnx_files[0]))
    unknown.graph.node[0].op_type = 'NoSuchOperator'
    onnx.save(unknown, os.fspath(tmp_path / 'unknown.onnx'))
    with pytest.raises(EngineError, match='OpenVINO cannot read or compile the model'):
        OpenVinoEngine(tmp_path / 'unknown.onnx', cache_dir=tmp_path)
    bare = onnx.load(os.fspath(onnx_files[0]))
    del bare.metadata_props[:]
    onnx.save(bare, os.fspath(tmp_path / 'bare.onnx'))
    with pytest.raises(ModelMetadataError, match='metadata lacks'):
        OpenVinoEngine(tmp_path / 'bare.onnx', cache_dir=tmp_path)


def test_a_reduced_precision_that_moves_the_depth_runs_fp32_and_says_why(tmp_path, caplog):
    if 'BF16' not in _capabilities():
        pytest.skip('this CPU has no bf16 in OpenVINO (no AVX512-BF16 / AMX)')
    path = _cancelling_onnx(tmp_path / 'cancelling.onnx')
    engine = OpenVinoEngine(path, precision='bf16', cache_dir=tmp_path)
    assert engine.precision == 'fp32'
    assert engine.precision_note.startswith('bf16 refused: its depth differs from fp32 by')
    assert engine.precision_note in engine.describe() and engine.precision_note in caplog.text
    assert engine.precision_check['mean_rel_err'] > 0.01
    # ... and what runs is the fp32 network: 2 m + 0.3 m on a saturated image.
    depth, _ = engine.infer(np.ones((1, 3, 24, 32), np.float32))
    np.testing.assert_allclose(depth, 2.3, rtol=1e-5)


def test_a_reduced_precision_within_the_bar_is_kept(onnx_files, tmp_path):
    if 'BF16' not in _capabilities():
        pytest.skip('this CPU has no bf16 in OpenVINO (no AVX512-BF16 / AMX)')
    engine = OpenVinoEngine(onnx_files[0], precision='bf16', cache_dir=tmp_path)
    assert engine.precision == 'bf16' and engine.precision_note == ''
    # Compared with a real FP32 run, and within the bar.
    assert 0 < engine.precision_check['mean_rel_err'] <= 0.01
    # The FP32 reference and the bf16 model were compiled into directories of their own:
    # OpenVINO 2026.4 keys a file's blob without the precision hint, and loading the fp32
    # blob for a bf16 compile crashed on Depth-Anything-V2 (SIGSEGV).
    blobs = sorted(engine.cache_dir.rglob('*.blob'))
    assert sorted(blob.parent.name for blob in blobs) == ['bf16', 'fp32']
    assert engine.precision_check['delta1_agreement'] >= 0.99
    assert 'OpenVINO CPU bf16' in engine.describe()
    image = random_image(engine.input_hw)
    reference = load_engine(onnx_files[0], backend='onnxruntime').infer(image)
    assert parity_errors(reference, engine.infer(image))['depth_rel'] < 0.05


def _preferred():
    hint = ov.Core().get_property('CPU', 'INFERENCE_PRECISION_HINT').to_string()
    return {'f32': 'fp32', 'bf16': 'bf16', 'f16': 'fp16'}[hint]


def test_auto_precision_is_the_devices_own_kept_only_within_the_bar(onnx_files, tmp_path):
    engine = OpenVinoEngine(onnx_files[0], cache_dir=tmp_path)  # precision auto
    assert engine.requested_precision == 'auto' and engine.precision == _preferred()
    assert f'OpenVINO CPU {engine.precision} (auto)' in engine.describe()
    if engine.precision == 'fp32':
        pytest.skip('this CPU prefers fp32 (no AMX / AVX512-BF16): nothing to verify')
    assert engine.precision_check['mean_rel_err'] <= 0.01 and engine.precision_note == ''
    # A network its preferred precision breaks runs fp32 and says so.
    cancelling = OpenVinoEngine(_cancelling_onnx(tmp_path / 'c.onnx'), cache_dir=tmp_path)
    assert cancelling.precision == 'fp32'
    assert cancelling.precision_note.startswith(f"{_preferred()} (the device's default) refused")


def test_the_compiled_model_is_cached_and_a_replaced_file_is_compiled_again(tmp_path):
    path = tmp_path / 'model.onnx'
    export.export_onnx(TinyDepthNet(seed=0), path)
    cache = tmp_path / 'cache' / 'openvino'
    first = OpenVinoEngine(path, precision='fp32', cache_dir=tmp_path / 'cache')
    blobs = sorted(cache.rglob('*.blob'))
    assert blobs, 'OpenVINO wrote no compiled model to its cache'
    image = random_image(first.input_hw)
    again = OpenVinoEngine(path, precision='fp32', cache_dir=tmp_path / 'cache')
    assert sorted(cache.rglob('*.blob')) == blobs  # reused
    assert again.cache_dir == first.cache_dir
    np.testing.assert_array_equal(first.infer(image)[0], again.infer(image)[0])

    # New weights at the same path (OpenVINO alone would key them by the path and hand out
    # the old compiled model): compiled again, and the old version's blobs are gone.
    export.export_onnx(TinyDepthNet(seed=1), path)
    replaced = OpenVinoEngine(path, precision='fp32', cache_dir=tmp_path / 'cache')
    reference = load_engine(path, backend='onnxruntime').infer(image)
    assert parity_errors(reference, replaced.infer(image))['depth_rel'] < PARITY
    assert not np.allclose(replaced.infer(image)[0], first.infer(image)[0])
    assert not first.cache_dir.exists() and replaced.cache_dir.parent == first.cache_dir.parent
    assert sorted(cache.rglob('*.blob')) and not set(cache.rglob('*.blob')) & set(blobs)


def test_an_unwritable_cache_costs_the_cache_not_the_engine(onnx_files, tmp_path, caplog):
    blocked = tmp_path / 'file'
    blocked.write_text('not a directory')
    engine = OpenVinoEngine(onnx_files[0], cache_dir=blocked)
    assert engine.infer(random_image(engine.input_hw))[0].shape == (1, 1, 24, 32)
    assert 'OpenVINO model cache disabled' in caplog.text


# ------------------------------------------------------------------- backend='auto'


@pytest.mark.parametrize(
    ('device', 'precision', 'spin_wait', 'expected'),
    [
        ('cuda', None, False, 'onnxruntime'),
        ('cuda:1', None, False, 'onnxruntime'),
        ('gpu', None, False, 'openvino'),
        ('npu', None, False, 'openvino'),
        ('cpu', 'bf16', False, 'openvino'),
        ('auto', 'fp16', False, 'openvino'),
        ('cpu', None, True, 'onnxruntime'),
        ('cpu', None, False, None),  # measured
        ('auto', 'fp32', False, None),  # this onnxruntime has no CUDA provider
    ],
)
def test_auto_decides_by_rule_where_a_rule_applies(device, precision, spin_wait, expected):
    assert choice.rule_based_choice(device, precision, spin_wait) == expected


def test_auto_without_openvino_is_onnxruntime(monkeypatch):
    monkeypatch.setattr(choice, 'openvino_installed', lambda: False)
    assert choice.rule_based_choice('cpu', None, False) == 'onnxruntime'


class _Timed(DepthEngine):
    """An engine that takes ``ms`` per run and returns ``depth_m`` everywhere."""

    def __init__(self, backend, ms, depth_m=2.0):
        super().__init__(ModelMetadata('fake', 8, 8, 0.1, 10.0))
        self.backend, self.ms, self.depth_m, self.closed = backend, ms, depth_m, False

    def infer(self, image):
        time.sleep(self.ms / 1e3)
        out = np.full((image.shape[0], 1, 8, 8), self.depth_m, np.float32)
        return out, np.full_like(out, 0.5)

    def close(self):
        self.closed = True


def _openvino(ms, depth_m):
    engine = _Timed('openvino', ms, depth_m)
    engine.precision = 'fp32' if depth_m in (2.0, 2.5) else 'bf16'
    return engine


def _loader(engines, loads):
    def load(name):
        loads.append(name)
        return engines[name]()

    return load


@pytest.mark.parametrize(
    ('ort_ms', 'ov_ms', 'ov_depth_m', 'expected', 'reason'),
    [
        (40.0, 5.0, 2.0, 'openvino', 'x faster than ONNX Runtime'),
        (5.0, 40.0, 2.0, 'onnxruntime', 'OpenVINO not 1.1x faster'),
        (40.0, 5.0, 2.5, 'onnxruntime', 'OpenVINO outputs differ from ONNX Runtime'),
        # Running its preferred bf16, OpenVINO must meet the accuracy bar against ONNX
        # Runtime's FP32 (1 %), not FP32 parity: 0.5 % off is kept, 3 % is not.
        (40.0, 5.0, 2.01, 'openvino', 'OpenVINO bf16 '),
        (40.0, 5.0, 2.06, 'onnxruntime', 'bf16: depth mean rel err 3.00%'),
    ],
)
def test_auto_measures_once_and_remembers(tmp_path, ort_ms, ov_ms, ov_depth_m, expected, reason):
    model = tmp_path / 'model.onnx'
    model.write_bytes(b'stand-in')
    made = {}

    def engines():
        return {
            'onnxruntime': lambda: made.setdefault('onnxruntime', _Timed('onnxruntime', ort_ms)),
            'openvino': lambda: made.setdefault('openvino', _openvino(ov_ms, ov_depth_m)),
        }

    loads = []
    engine = choice.choose(model, _loader(engines(), loads), threads=None, cache_dir=tmp_path)
    assert engine.backend == expected and loads == ['onnxruntime', 'openvino']
    assert reason in engine.selection and 'measured now' in engine.selection
    loser = made['openvino' if expected == 'onnxruntime' else 'onnxruntime']
    assert loser.closed and not engine.closed
    (verdict_file,) = (tmp_path / 'backend-choice').glob('model-*.json')
    verdict = json.loads(verdict_file.read_text())
    assert verdict['backend'] == expected and verdict['onnxruntime_ms'] >= ort_ms

    made.clear()
    loads = []
    again = choice.choose(model, _loader(engines(), loads), threads=None, cache_dir=tmp_path)
    assert loads == [expected] and again.backend == expected  # no second measurement
    assert reason in again.selection and verdict['measured_at'] in again.selection

    # Another thread or precision setting, or a replaced model file, is measured again.
    loads = []
    choice.choose(model, _loader(engines(), loads), threads=1, cache_dir=tmp_path)
    assert loads == ['onnxruntime', 'openvino']
    loads = []
    choice.choose(
        model, _loader(engines(), loads), threads=None, cache_dir=tmp_path, precision='fp32'
    )
    assert loads == ['onnxruntime', 'openvino']
    model.write_bytes(b'a different stand-in')
    loads = []
    choice.choose(model, _loader(engines(), loads), threads=None, cache_dir=tmp_path)
    assert loads == ['onnxruntime', 'openvino']


def test_a_damaged_verdict_is_measured_again_and_a_failed_openvino_load_runs_ort(tmp_path, caplog):
    model = tmp_path / 'model.onnx'
    model.write_bytes(b'stand-in')
    path = choice.choice_path(model, None, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "moa_depth_ros.backend_choice", "backend": "tensorflow"}')
    loads = []
    engines = {
        'onnxruntime': lambda: _Timed('onnxruntime', 1.0),
        'openvino': lambda: _Timed('openvino', 1.0),
    }
    assert choice.choose(model, _loader(engines, loads), threads=None, cache_dir=tmp_path)
    assert loads == ['onnxruntime', 'openvino']

    ort = _Timed('onnxruntime', 1.0)

    def broken():
        raise EngineError('OpenVINO cannot compile the model')

    path.unlink()
    engine = choice.choose(
        model,
        _loader({'onnxruntime': lambda: ort, 'openvino': broken}, []),
        threads=None,
        cache_dir=tmp_path,
    )
    assert engine is ort and not ort.closed
    assert (
        engine.selection == 'auto: OpenVINO cannot run it (EngineError: OpenVINO cannot '
        'compile the model)'
    )
    assert engine.selection in caplog.text and not path.exists()  # not remembered


def test_auto_on_a_real_file_loads_the_measured_backend(tmp_path):
    model = write_tiny_onnx(tmp_path / 'tiny.onnx')
    engine = load_engine(model, device='cpu', cache_dir=tmp_path)
    assert engine.backend in ('onnxruntime', 'openvino')
    assert engine.selection.startswith('auto: ') and engine.selection in engine.describe()
    (verdict_file,) = (tmp_path / 'backend-choice').glob('tiny-*.json')
    assert json.loads(verdict_file.read_text())['backend'] == engine.backend
    # Rules skip the measurement: a reduced precision is OpenVINO's.
    assert load_engine(model, precision='fp32', backend='onnxruntime').backend == 'onnxruntime'
    assert load_engine(model, device='cpu', spin_wait=True).backend == 'onnxruntime'
