"""The ONNX Runtime backend and the exporter, on a tiny stand-in model.

What a user notices: an exported file loads by itself (sizes and range from its metadata),
agrees with PyTorch, and every broken file fails at load time with a message that says what
is wrong, not at the first frame with a shape error.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from test_engine_support import TinyDepthNet, random_image
import torch

from moa_depth_ros.engine import load_engine, onnx_backend
from moa_depth_ros.engine.base import ModelMetadata
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError
from training import export, onnx_export


@pytest.fixture(scope='module')
def model():
    return TinyDepthNet()


@pytest.fixture(scope='module')
def static_onnx(model, tmp_path_factory):
    path = tmp_path_factory.mktemp('onnx') / 'tiny.onnx'
    report = export.export_onnx(model, path)
    return path, report


def _torch_outputs(model, image):
    with torch.no_grad():
        return tuple(t.numpy() for t in model(torch.from_numpy(image)))


def test_export_writes_named_tensors_metadata_and_opset(static_onnx):
    path, report = static_onnx
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ['image']
    assert [o.name for o in proto.graph.output] == ['depth', 'confidence']
    assert max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')) >= 17
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 24, 32]
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMetadata.from_dict(props)
    assert (meta.model_name, meta.input_hw) == ('tiny_standin', (24, 32))
    assert (meta.min_depth_m, meta.max_depth_m) == (0.25, 8.0)
    assert props['config_digest'] == 'standin-digest' and props['opset'] == '17'
    assert props['package_version'] and 'config_json' in props
    assert 'LayerNormalization' in {n.op_type for n in proto.graph.node}
    assert report.verified and report.depth_rel_err < 1e-4 and report.confidence_rel_err < 1e-4
    assert 'verified' in report.summary()


def test_onnxruntime_matches_torch(model, static_onnx):
    path, _ = static_onnx
    engine = load_engine(path, backend='onnxruntime')
    assert engine.backend == 'onnxruntime'
    assert engine.providers == ['CPUExecutionProvider']
    assert engine.input_hw == (24, 32) and engine.depth_range_m == (0.25, 8.0)
    image = random_image(engine.input_hw, seed=3)
    depth, confidence = engine.infer(image)
    assert depth.dtype == np.float32 and depth.shape == (1, 1, 24, 32)
    errors = export.parity_errors(_torch_outputs(model, image), (depth, confidence))
    assert errors['depth_rel'] < 1e-4 and errors['confidence_rel'] < 1e-4
    assert 'tiny_standin via onnxruntime (32x24' in engine.describe()


def test_static_batch_model_runs_a_larger_batch_in_chunks(model, static_onnx):
    engine = load_engine(static_onnx[0], backend='onnxruntime', intra_op_threads=1)
    image = random_image(engine.input_hw, batch=3, seed=4)
    depth, _ = engine.infer(image)
    assert depth.shape == (3, 1, 24, 32)
    np.testing.assert_allclose(depth, _torch_outputs(model, image)[0], rtol=1e-4, atol=1e-5)


def test_dynamic_batch_export(model, tmp_path):
    path = tmp_path / 'dyn.onnx'
    report = export.export_onnx(model, path, dynamic_batch=True, opset=18)
    assert report.dynamic_batch and report.metadata['dynamic_batch'] == 'true'
    engine = load_engine(path, backend='onnxruntime')
    image = random_image(engine.input_hw, batch=4, seed=5)
    depth, confidence = engine.infer(image)
    errors = export.parity_errors(_torch_outputs(model, image), (depth, confidence))
    assert errors['depth_rel'] < 1e-4


def test_wrong_input_size_is_a_clear_error(static_onnx):
    engine = load_engine(static_onnx[0], backend='onnxruntime')
    with pytest.raises(EngineError, match=r'\[N, 3, 24, 32\].*got \[1, 3, 32, 24\]'):
        engine.infer(np.zeros((1, 3, 32, 24), np.float32))
    with pytest.raises(EngineError, match='numpy array'):
        engine.infer([[0.0]])


def test_corrupt_file_is_an_engine_error(tmp_path):
    path = tmp_path / 'corrupt.onnx'
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(EngineError, match='cannot load the model'):
        load_engine(path)
    with pytest.raises(EngineError, match='not a valid ONNX file'):
        onnx_backend.read_onnx_info(path)


def test_truncated_file_is_an_engine_error(static_onnx, tmp_path):
    path = tmp_path / 'truncated.onnx'
    path.write_bytes(static_onnx[0].read_bytes()[:500])
    with pytest.raises(EngineError):
        load_engine(path)


def _plain_export(model, path, output_names=('depth', 'confidence'), props=None):
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, *model.input_hw),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=['image'],
            output_names=list(output_names),
        )
    if props is not None:
        proto = onnx.load(path)
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, path)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_missing_metadata_names_the_missing_keys(model, tmp_path):
    path = tmp_path / 'bare.onnx'
    _plain_export(model, path)
    with pytest.raises(ModelMetadataError, match=r'lacks model_name.*python -m training export'):
        load_engine(path)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_outputs_not_named_as_expected(model, static_onnx, tmp_path):
    path = tmp_path / 'renamed.onnx'
    props = dict(onnx_backend.read_onnx_info(static_onnx[0]).metadata_props)
    _plain_export(model, path, output_names=('out0', 'out1'), props=props)
    with pytest.raises(ModelMetadataError, match=r"outputs \['depth', 'confidence'\].*'out0'"):
        load_engine(path)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_metadata_that_contradicts_the_graph(model, static_onnx, tmp_path):
    path = tmp_path / 'liar.onnx'
    props = dict(onnx_backend.read_onnx_info(static_onnx[0]).metadata_props)
    props['input_height'] = '48'
    _plain_export(model, path, props=props)
    with pytest.raises(ModelMetadataError, match=r"'image' has shape \[1, 3, 24, 32\].*48, 32"):
        load_engine(path)


def test_read_onnx_info_matches_onnx(static_onnx):
    info = onnx_backend.read_onnx_info(static_onnx[0])
    proto = onnx.load(static_onnx[0])
    assert info.ir_version == proto.ir_version
    assert info.opsets[''] == 17
    assert info.metadata_props == {p.key: p.value for p in proto.metadata_props}
    assert info.producer == proto.producer_name


def test_provider_choice():
    cuda, cpu = 'CUDAExecutionProvider', 'CPUExecutionProvider'
    assert onnx_backend.choose_providers('auto', [cuda, cpu]) == [cuda, cpu]
    assert onnx_backend.choose_providers('auto', [cpu]) == [cpu]
    assert onnx_backend.choose_providers('cpu', [cuda, cpu]) == [cpu]
    assert onnx_backend.choose_providers('cuda:1', [cuda, cpu]) == [cuda, cpu]
    with pytest.raises(EngineError, match='onnxruntime-gpu'):
        onnx_backend.choose_providers('cuda', [cpu])
    with pytest.raises(ConfigError, match="got 'tpu'"):
        onnx_backend.choose_providers('tpu', [cpu])


def test_loader_rejects_unknown_types_and_mismatched_backends(static_onnx, tmp_path):
    with pytest.raises(EngineError, match=r"unknown model file type '\.pt'"):
        load_engine(tmp_path / 'model.pt')
    with pytest.raises(EngineError, match='does not exist'):
        load_engine(tmp_path / 'missing.onnx')
    with pytest.raises(ConfigError, match='backend must be'):
        load_engine(static_onnx[0], backend='tflite')
    with pytest.raises(EngineError, match='torch backend runs .safetensors'):
        load_engine(static_onnx[0], backend='torch')
    with pytest.raises(ConfigError, match='int8'):
        load_engine(static_onnx[0], backend='onnxruntime', precision='bf16')


def test_opset_below_17_is_refused(model, tmp_path):
    with pytest.raises(ConfigError, match='opset must be >= 17'):
        export.export_onnx(model, tmp_path / 'old.onnx', opset=16)
    assert not list(tmp_path.iterdir())


def test_failed_verification_writes_nothing(model, tmp_path, monkeypatch):
    def wrong(path, image):
        return np.ones((1, 1, 24, 32), np.float32), np.zeros((1, 1, 24, 32), np.float32)

    monkeypatch.setattr(onnx_export, '_onnxruntime_outputs', wrong)
    with pytest.raises(EngineError, match='onnxruntime disagrees with torch'):
        export.export_onnx(model, tmp_path / 'bad.onnx')
    assert not list(tmp_path.iterdir())


def test_onnx_backend_never_imports_torch(static_onnx):
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from moa_depth_ros.engine import load_engine
        engine = load_engine({str(static_onnx[0])!r})
        engine.infer(np.zeros((1, 3, 24, 32), np.float32))
        print(sorted(m for m in ('torch', 'tensorrt', 'onnx') if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'
