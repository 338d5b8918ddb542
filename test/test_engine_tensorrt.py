"""The TensorRT builder and runtime against fake ``tensorrt`` 10 and 11; the real one on a GPU.

The fakes (fake_tensorrt.py) model both API surfaces: TensorRT 10 builds weakly typed FP16
with builder flags and layer precisions; TensorRT 11 has neither and builds the types its
ONNX states. Their engines emulate FP16 through the layers (rounding, overflow to inf, the
sum of squares behind a ReduceL2), so the accuracy check after every build can fail here as
it fails on a GPU. Tests marked ``tensorrt`` and ``gpu`` build and run a real engine and
skip elsewhere; test/gpu_acceptance.sh is the longer check for a GPU machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import threading
import types

from fake_tensorrt import INSPECTOR_SPELLINGS, FakeCuda, make_fake_tensorrt
import numpy as np
import pytest
from test_engine_support import TinyDepthNet, random_image
import torch
import torch.nn.functional as F

from moa_depth_ros.engine import cache, load_engine, tensorrt_backend, tensorrt_builder
from moa_depth_ros.engine.onnx_backend import read_onnx_metadata
from moa_depth_ros.engine.tensorrt_backend import TensorRTEngine
from moa_depth_ros.errors import ConfigError, EngineError, ModelMetadataError
from training import build_engine as build_engine_cli
from training import export

GPU = 'NVIDIA Fake GPU'
FP16_TOLERANCE = 2e-3  # relative to the output's peak; FP16 has an 11-bit mantissa
VERSIONS = ('10.3.0', '11.0.0')
REPO = pathlib.Path(__file__).resolve().parents[1]


class NormalizedLogitNet(torch.nn.Module):
    """DepthCLIP's head in miniature: wide features, F.normalize, cosine x logit scale, bins.

    With ``feature_gain`` 10 the features' RMS is far past 5.7, so the sum of squares behind
    F.normalize overflows FP16; a ``logit_scale`` past 65504 overflows whatever is pinned.
    """

    model_name = 'normalized_logits'

    def __init__(self, channels=512, feature_gain=10.0, logit_scale=100.0, bins=7, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.input_hw = (24, 32)
        self.logit_scale = logit_scale
        self.stem = torch.nn.Conv2d(3, channels, 3, padding=1)
        with torch.no_grad():
            self.stem.weight.copy_(
                torch.randn(self.stem.weight.shape, generator=generator) * feature_gain
            )
            self.stem.bias.zero_()
        text = F.normalize(torch.randn(bins, channels, generator=generator), dim=1)
        self.register_buffer('text', text[:, :, None, None])
        self.register_buffer('bin_centers_m', torch.linspace(1.0, 3.0, bins).view(1, -1, 1, 1))

    def forward(self, image):
        x = F.normalize(torch.relu(self.stem(image - 0.5)), dim=1)
        prob = torch.softmax(F.conv2d(x, self.text) * self.logit_scale, dim=1)
        depth = (prob * self.bin_centers_m).sum(dim=1, keepdim=True)
        return depth, prob.amax(dim=1, keepdim=True)

    def describe(self):
        h, w = self.input_hw
        return {
            'model_name': self.model_name,
            'input_height': str(h),
            'input_width': str(w),
            'min_depth_m': '1.0',
            'max_depth_m': '3.0',
            'config_json': json.dumps({'logit_scale': self.logit_scale}),
            'config_digest': 'normalized-logits',
        }


class MaskedLogitNet(NormalizedLogitNet):
    """The same with a boolean unary layer (Not), which no precision pin may touch."""

    def forward(self, image):
        x = self.stem(image - 0.5)
        x = F.normalize(torch.where(~(x > 0), torch.zeros_like(x), x), dim=1)
        prob = torch.softmax(F.conv2d(x, self.text) * self.logit_scale, dim=1)
        depth = (prob * self.bin_centers_m).sum(dim=1, keepdim=True)
        return depth, prob.amax(dim=1, keepdim=True)


class ZeroNormNet(NormalizedLogitNet):
    """F.normalize of an all-zero feature map: FP32 gives 0 / eps = 0; an eps of 0 gives NaN."""

    model_name = 'zero_norm'

    def forward(self, image):
        silent = (image.mean() > 2).float()  # always 0, not folded by the exporter
        x = F.normalize(torch.relu(self.stem(image - 0.5)) * silent, dim=1)
        prob = torch.softmax(F.conv2d(x, self.text) * self.logit_scale, dim=1)
        depth = (prob * self.bin_centers_m).sum(dim=1, keepdim=True)
        return depth, prob.amax(dim=1, keepdim=True)


class CancellingConfidenceNet(TinyDepthNet):
    """TinyDepthNet's depth, and a confidence that FP16 alone gets wrong.

    (a + 3000) - (a + 2999.5) is 0.5 in FP32 and 0 in FP16 (spacing 2 at 3000), so the
    sigmoid gives 0.5 instead of 0.62 while the depth is unharmed.
    """

    model_name = 'cancelling_confidence'

    def forward(self, image):
        depth, _ = super().forward(image)
        a = image.mean(dim=1, keepdim=True) * 1e-3
        confidence = torch.sigmoid((a + 3000.0) - (a + 2999.5))
        return depth, confidence


class TinyDepthClip(TinyDepthNet):
    model_name = 'depthclip'


@pytest.fixture(scope='module')
def onnx_files(tmp_path_factory):
    model = TinyDepthNet()
    root = tmp_path_factory.mktemp('trt')
    export.export_onnx(model, root / 'static.onnx')
    export.export_onnx(model, root / 'dynamic.onnx', dynamic_batch=True)
    return root / 'static.onnx', root / 'dynamic.onnx'


@pytest.fixture(scope='module')
def risky_onnx(tmp_path_factory):
    """(overflowing normalize, logits past FP16's range), both as ONNX files."""
    root = tmp_path_factory.mktemp('risky')
    export.export_onnx(NormalizedLogitNet().eval(), root / 'overflow.onnx')
    export.export_onnx(NormalizedLogitNet(logit_scale=1e5).eval(), root / 'hopeless.onnx')
    return root / 'overflow.onnx', root / 'hopeless.onnx'


def _install(monkeypatch, version='10.3.0', cuda=None, **kwargs):
    cuda = cuda or FakeCuda(GPU)
    trt = make_fake_tensorrt(version, cuda=cuda, **kwargs)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setattr(tensorrt_backend, 'default_cuda_api', lambda device='auto': cuda)
    return types.SimpleNamespace(trt=trt, cuda=cuda, monkeypatch=monkeypatch)


@pytest.fixture(params=VERSIONS)
def fake(request, monkeypatch):
    """Install the fake TensorRT, once as 10.3 (weakly typed), once as 11.0 (strongly typed)."""
    return _install(monkeypatch, request.param)


@pytest.fixture
def fake10(monkeypatch):
    return _install(monkeypatch, '10.3.0')


def _ort(path, image):
    return load_engine(path, backend='onnxruntime').infer(image)


def _fp16_options(**changes):
    return tensorrt_builder.BuildOptions(precision='fp16', **changes)


def test_fp16_on_tensorrt_10_is_weakly_typed_and_pins_nothing(fake10, onnx_files, tmp_path):
    trt = fake10.trt
    engine_path = tmp_path / 'm.engine'
    sidecar = tensorrt_builder.build_engine(
        onnx_files[0], engine_path, _fp16_options(workspace_bytes=1 << 28)
    )
    network, config = trt.builds[-1]
    assert config.pool_limits == {trt.MemoryPoolType.WORKSPACE: 1 << 28}
    assert trt.BuilderFlag.FP16 in config.flags
    assert trt.BuilderFlag.TF32 not in config.flags
    assert config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED  # for the inspector
    # The parser computes LayerNorm in FP32 already: pinning it would be redundant.
    assert trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS not in config.flags
    assert not any(layer.precision_was_set for layer in network.layers)
    assert sidecar.typing == 'weakly_typed' and sidecar.precision == 'fp16'
    assert sidecar.fp32_layer_names == ('/norm/LayerNormalization',) and sidecar.fp32_layers == 1
    assert config.profiles == []  # static batch: no optimisation profile
    assert sidecar.batch_profile is None and sidecar.tensorrt_version == '10.3.0'
    assert sidecar.gpu == fake10.cuda.device_info()
    assert sidecar.onnx_sha256 == cache.file_sha256(onnx_files[0])
    assert sidecar.engine_sha256 == cache.file_sha256(engine_path)
    assert sidecar.package_version and sidecar.build_options['precision'] == 'fp16'
    assert cache.read_sidecar(engine_path) == sidecar


def test_fp16_on_tensorrt_11_builds_a_strongly_typed_fp16_graph(monkeypatch, onnx_files, tmp_path):
    fake = _install(monkeypatch, '11.0.0')
    sidecar = tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'm.engine', _fp16_options())
    network, config = fake.trt.builds[-1]
    assert network.strongly_typed and sidecar.typing == 'strongly_typed'
    assert fake.trt.BuilderFlag.TF32 not in config.flags
    graph = network.model.graph
    # Compute in FP16 (weights converted), I/O and LayerNorm in FP32, casts between.
    assert any(t.data_type == 10 for t in graph.initializer)
    assert all(v.type.tensor_type.elem_type == 1 for v in (*graph.input, *graph.output))
    assert any(node.op_type == 'Cast' for node in graph.node)
    assert sidecar.fp32_layer_names == ('/norm/LayerNormalization',)
    assert sidecar.parity['passed'] and sidecar.precision == 'fp16'


def test_fp16_on_tensorrt_11_without_onnx_is_a_clear_refusal(monkeypatch, onnx_files, tmp_path):
    _install(monkeypatch, '11.0.0')
    monkeypatch.setitem(sys.modules, 'onnx', None)
    with pytest.raises(EngineError, match=r'FP16 ONNX graph, which needs the `onnx` package'):
        tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'm.engine', _fp16_options())
    options = tensorrt_builder.BuildOptions(precision='fp32')
    assert tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'm.engine', options).parity


def test_fp16_graph_keeps_normalize_eps_nonzero(monkeypatch, tmp_path):
    """F.normalize's eps (1e-12) flushed to FP16 zero made a zero-norm vector 0/0 = NaN."""
    from fake_tensorrt import emulate_fp16, strongly_typed_emulation
    import onnx
    import onnxruntime as ort

    from moa_depth_ros.engine import fp16_onnx

    onnx_path = tmp_path / 'zero_norm.onnx'
    export.export_onnx(ZeroNormNet(feature_gain=0.1).eval(), onnx_path)
    converted, _ = fp16_onnx.convert_to_fp16(onnx.load(onnx_path))
    model, fp16_nodes = strongly_typed_emulation(converted)
    model = emulate_fp16(model, fp16_nodes, round_inputs=False)
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    image = random_image((24, 32), seed=3)
    depth, confidence = session.run(['depth', 'confidence'], {'image': image})
    assert np.isfinite(depth).all() and np.isfinite(confidence).all()
    np.testing.assert_allclose(depth, 2.0, rtol=1e-3)  # uniform bins: their mean
    # The whole build: FP16 on the first attempt, no retry, no FP32 fallback.
    _install(monkeypatch, '11.0.0')
    sidecar = tensorrt_builder.build_engine(onnx_path, tmp_path / 'z.engine', _fp16_options())
    assert sidecar.precision == 'fp16' and len(sidecar.parity['attempts']) == 1


def test_fp16_constants_raise_only_small_tiny_values():
    from moa_depth_ros.engine import fp16_onnx

    eps = fp16_onnx.fp16_constant(np.array([1e-12, -1e-9, 0.0, 0.5], np.float32))
    assert eps.dtype == np.float16 and eps.tolist() == [2.0**-14, -(2.0**-14), 0.0, 0.5]
    weights = np.full(fp16_onnx.SMALL_CONSTANT_SIZE + 1, 1e-12, np.float32)
    assert not fp16_onnx.fp16_constant(weights).any()  # weights round as FP16 rounds them


def test_the_tensorrt_11_fake_has_no_weak_typing_surface(monkeypatch):
    trt = _install(monkeypatch, '11.0.0').trt
    for name in ('FP16', 'INT8', 'OBEY_PRECISION_CONSTRAINTS', 'PREFER_PRECISION_CONSTRAINTS'):
        assert not hasattr(trt.BuilderFlag, name)
    assert hasattr(trt.BuilderFlag, 'TF32')
    builder = trt.Builder(trt.Logger())
    assert not hasattr(builder, 'platform_has_fast_fp16')
    layer = trt.Layer11('conv', trt.LayerType.CONVOLUTION, 1, 'conv')
    with pytest.raises(AttributeError):
        layer.precision = trt.float32
    with pytest.raises(AttributeError):
        layer.set_output_type(0, trt.float32)
    assert not tensorrt_backend.has_weak_typing(trt)


def test_every_build_records_its_parity_with_onnxruntime(fake, onnx_files, tmp_path):
    sidecar = tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'm.engine', _fp16_options())
    parity = sidecar.parity
    assert parity['passed'] and parity['reference'].startswith('onnxruntime fp32')
    assert set(parity['inputs']) == {'random', 'zero', 'saturated'}
    for result in parity['inputs'].values():
        assert result['passed'] and result['finite']
        assert 0 < result['mean_rel_err'] < 1e-3 and result['delta1_agreement'] == 1.0
    assert parity['attempts'] == [
        {'precision': 'fp16', 'fp32_layers': 1, 'sensitive_fp32': False, 'passed': True},
    ]


def test_fp32_is_fp32_without_tf32_unless_asked(fake, onnx_files, tmp_path):
    options = tensorrt_builder.BuildOptions(precision='fp32')
    sidecar = tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'a.engine', options)
    flags = fake.trt.builds[-1][1].flags
    assert fake.trt.BuilderFlag.TF32 not in flags and not sidecar.tf32
    assert not hasattr(fake.trt.BuilderFlag, 'FP16') or fake.trt.BuilderFlag.FP16 not in flags
    assert sidecar.precision == 'fp32' and sidecar.fp32_layers == 0
    assert sidecar.parity['inputs']['random']['mean_rel_err'] < 1e-6
    options = dataclasses.replace(options, tf32=True)
    sidecar = tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'b.engine', options)
    assert fake.trt.BuilderFlag.TF32 in fake.trt.builds[-1][1].flags and sidecar.tf32


def test_depthclip_builds_in_fp32_by_default(fake, tmp_path):
    onnx_path = tmp_path / 'depthclip.onnx'
    export.export_onnx(TinyDepthClip(), onnx_path)
    sidecar = tensorrt_builder.build_engine(onnx_path, tmp_path / 'd.engine')
    assert sidecar.precision == sidecar.requested_precision == 'fp32' and not sidecar.tf32
    assert fake.trt.builds[-1][0].model.graph.initializer[0].data_type == 1  # no FP16 graph
    other = tmp_path / 'other.onnx'
    export.export_onnx(TinyDepthNet(), other)
    assert tensorrt_builder.build_engine(other, tmp_path / 'o.engine').precision == 'fp16'


def test_fp16_overflow_is_rebuilt_with_the_sensitive_layers_in_fp32(fake, risky_onnx, tmp_path):
    engine_path = tmp_path / 'n.engine'
    sidecar = tensorrt_builder.build_engine(risky_onnx[0], engine_path, _fp16_options())
    first, second = sidecar.parity['attempts']
    assert not first['passed'] and second['passed'] and second['sensitive_fp32']
    assert len(fake.trt.builds) == 2
    network, config = fake.trt.builds[-1]
    if tensorrt_backend.has_weak_typing(fake.trt):
        reduce = [layer for layer in network.layers if layer.type == fake.trt.LayerType.REDUCE]
        assert reduce and all(layer.precision == fake.trt.float32 for layer in reduce)
        assert reduce[0].output_types == {0: fake.trt.float32}
        assert fake.trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS in config.flags
    else:
        node = next(n for n in network.model.graph.node if n.op_type == 'ReduceL2')
        assert node.name in sidecar.fp32_layer_names
    assert any('Reduce' in name for name in sidecar.fp32_layer_names)
    engine = TensorRTEngine(engine_path)
    image = np.ones((1, 3, 24, 32), np.float32)  # saturated: where FP16 overflows first
    errors = export.parity_errors(_ort(risky_onnx[0], image), engine.infer(image))
    assert errors['depth_rel'] < 1e-2
    engine.close()


def test_the_retry_pins_only_floating_point_layers(fake10, tmp_path):
    onnx_path = tmp_path / 'masked.onnx'
    export.export_onnx(MaskedLogitNet().eval(), onnx_path)
    sidecar = tensorrt_builder.build_engine(onnx_path, tmp_path / 'm.engine', _fp16_options())
    assert [a['passed'] for a in sidecar.parity['attempts']] == [False, True]
    layers = fake10.trt.builds[-1][0].layers
    unary = [layer for layer in layers if layer.type == fake10.trt.LayerType.UNARY]
    boolean = [layer for layer in unary if layer.output_dtypes == [fake10.trt.DataType.BOOL]]
    assert boolean and not any(layer.precision_was_set for layer in boolean)
    assert all(layer.name not in sidecar.fp32_layer_names for layer in boolean)


@pytest.mark.parametrize('spelling', sorted(INSPECTOR_SPELLINGS))
@pytest.mark.parametrize('version', VERSIONS)
def test_engine_inspector_reports_layer_precisions(
    monkeypatch, risky_onnx, tmp_path, version, spelling
):
    """Every key NVIDIA's own readers take the type from (Polygraphy, trt-perf-analysis)."""
    _install(monkeypatch, version, inspector_spelling=spelling)
    engine_path = tmp_path / 'n.engine'
    sidecar = tensorrt_builder.build_engine(risky_onnx[0], engine_path, _fp16_options())
    engine = TensorRTEngine(engine_path)
    counts = tensorrt_backend.layer_precisions(engine.layer_information())
    engine.close()
    assert counts['fp32'] >= sidecar.fp32_layers >= 1 and counts['fp16'] >= 1
    assert set(counts) == {'fp16', 'fp32'}
    assert tensorrt_backend.layer_precisions({'Layers': ['a', 'b']}) == {'unknown': 2}


def test_inspector_type_strings_are_read_as_whole_words():
    read = tensorrt_backend.tensor_precision
    assert read({'Datatype': 'bf16'}) == read({'Format/Datatype': 'BFloat16'}) == 'bf16'
    assert read({'Format/Datatype': 'Channel major FP16 format where channel % 8 == 0'}) == 'fp16'
    assert read({'Datatype': 'float16'}) == 'fp16' and read({'Datatype': 'Float'}) == 'fp32'
    assert read({'Format/Datatype': 'Row major linear Int32 format'}) == 'int'
    assert read({'Datatype': 'fp8'}) == 'fp8' and read({'Format/Datatype': 'N/A'}) == 'other'


def test_the_overflow_is_real_in_the_emulation(fake10, risky_onnx):
    # Without the retry's pins the saturated input gives a wrong depth: the fake emulates
    # FP16 through the layers, not by rounding the outputs.
    build = tensorrt_builder._build_once(
        fake10.trt,
        os.fspath(risky_onnx[0]),
        read_onnx_metadata(risky_onnx[0]),
        _fp16_options(),
        'fp16',
        sensitive_fp32=False,
    )
    fake10.cuda.activate()
    engine = fake10.trt.Runtime(fake10.trt.Logger()).deserialize_cuda_engine(build.data)
    image = np.ones((1, 3, 24, 32), np.float32)
    depth = engine.session.run(['depth'], {'image': image})[0]
    reference = _ort(risky_onnx[0], image)[0]
    assert np.abs(depth - reference).mean() / reference.mean() > 0.01


def test_fp16_that_misses_the_bar_falls_back_to_fp32_and_says_so(
    fake, risky_onnx, tmp_path, caplog
):
    engine_path = tmp_path / 'x.engine'
    sidecar = tensorrt_builder.build_engine(risky_onnx[1], engine_path, _fp16_options())
    assert sidecar.precision == 'fp32' and sidecar.requested_precision == 'fp16'
    assert [a['precision'] for a in sidecar.parity['attempts']] == ['fp16', 'fp16', 'fp32']
    assert [a['passed'] for a in sidecar.parity['attempts']] == [False, False, True]
    assert 'built in FP32 instead' in sidecar.parity['fallback']
    assert 'built in FP32 instead' in caplog.text  # never silently
    engine = TensorRTEngine(engine_path)
    assert 'fp32' in engine.describe()
    engine.close()


def test_confidence_that_misses_its_bar_fails_the_build(fake, tmp_path):
    """Depth alone met the bar: an FP16 engine publishing a wrong confidence was kept."""
    onnx_path = tmp_path / 'cancelling.onnx'
    export.export_onnx(CancellingConfidenceNet().eval(), onnx_path)
    sidecar = tensorrt_builder.build_engine(onnx_path, tmp_path / 'c.engine', _fp16_options())
    assert sidecar.precision == 'fp32' and 'confidence' in sidecar.parity['fallback']
    first = sidecar.parity['attempts'][0]
    assert first['precision'] == 'fp16' and not first['passed']
    assert all(r['confidence_passed'] for r in sidecar.parity['inputs'].values())
    refuse = _fp16_options(fallback_fp32=False)
    with pytest.raises(EngineError, match='refused.*mean confidence error 0.12'):
        tensorrt_builder.build_engine(onnx_path, tmp_path / 'r.engine', refuse)


def test_the_confidence_bar_sits_beside_the_depth_bar():
    from moa_depth_ros.engine import accuracy

    reference = np.full((1, 1, 4, 5), 0.6, np.float32)
    close = accuracy.confidence_agreement(reference, reference + 0.004)
    assert accuracy.confidence_holds(close)
    off = accuracy.confidence_agreement(reference, reference - 0.1)
    assert off['confidence_within_0_05'] == 0.0 and not accuracy.confidence_holds(off)
    broken = accuracy.confidence_agreement(reference, np.full_like(reference, np.nan))
    assert broken['confidence_mean_abs_err'] == 1.0 and not accuracy.confidence_holds(broken)
    assert set(accuracy.ACCURACY_BAR) == {'mean_rel_err', 'delta1_agreement'}  # depth's, as it was


def test_fp16_that_misses_the_bar_is_refused_when_asked(fake, risky_onnx, tmp_path):
    options = _fp16_options(fallback_fp32=False)
    with pytest.raises(EngineError, match=r'refused: the FP16 .*misses the accuracy bar.*fp32'):
        tensorrt_builder.build_engine(risky_onnx[1], tmp_path / 'x.engine', options)
    assert list(tmp_path.iterdir()) == []  # nothing served, nothing written
    assert len(fake.trt.builds) == 2  # tried again with the sensitive layers in FP32


def test_dynamic_batch_gets_an_optimisation_profile(fake, onnx_files, tmp_path):
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(2, 2, 4))
    sidecar = tensorrt_builder.build_engine(onnx_files[1], tmp_path / 'd.engine', options)
    _, config = fake.trt.builds[-1]
    assert config.profiles[0].shapes['image'] == (
        (2, 3, 24, 32),
        (2, 3, 24, 32),
        (4, 3, 24, 32),
    )
    assert sidecar.batch_profile == (2, 2, 4) and sidecar.precision == 'fp32'
    assert sidecar.parity['batch'] == 2  # checked at the profile's smallest batch


def test_gpu_without_fast_fp16_gets_fp32(monkeypatch, onnx_files, tmp_path):
    fake = _install(monkeypatch, '10.3.0', fast_fp16=False)
    sidecar = tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'e.engine', _fp16_options())
    assert sidecar.precision == 'fp32' and sidecar.requested_precision == 'fp16'
    assert fake.trt.BuilderFlag.FP16 not in fake.trt.builds[-1][1].flags


def test_timing_cache_is_written_and_reused(fake10, onnx_files, tmp_path):
    timing = tmp_path / 'timing.cache'
    options = tensorrt_builder.BuildOptions(timing_cache=timing)
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'a.engine', options)
    assert timing.read_bytes().startswith(b'TIMING:10.3.0')
    first = timing.read_bytes()
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'b.engine', options)
    assert fake10.trt.builds[-1][1].timing_cache.loaded_from == first
    timing.write_bytes(b'TIMING:9.0.0:from another release')
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'c.engine', options)
    assert fake10.trt.builds[-1][1].timing_cache.loaded_from == b''  # rejected -> fresh


def test_unreadable_timing_cache_starts_afresh(fake10, onnx_files, tmp_path, monkeypatch):
    create = fake10.trt.BuilderConfig.create_timing_cache

    def strict_create(self, data):
        # A blob TensorRT cannot read at all gives no cache object.
        return None if data and not bytes(data).startswith(b'TIMING:') else create(self, data)

    monkeypatch.setattr(fake10.trt.BuilderConfig, 'create_timing_cache', strict_create)
    timing = tmp_path / 'timing.cache'
    timing.write_bytes(b'\x00garbage from a crashed write')
    options = tensorrt_builder.BuildOptions(timing_cache=timing)
    tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'a.engine', options)
    assert fake10.trt.builds[-1][1].timing_cache.loaded_from == b''
    assert timing.read_bytes().startswith(b'TIMING:10.3.0')  # replaced by a good cache


def test_failed_build_writes_nothing(monkeypatch, onnx_files, tmp_path):
    _install(monkeypatch, fail_build=True)
    with pytest.raises(EngineError, match='failed to build'):
        tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'x.engine')
    assert list(tmp_path.iterdir()) == []


def test_unparsable_onnx_reports_parser_errors(fake, onnx_files, tmp_path, monkeypatch):
    def refuse(self, model):
        self.errors.append(fake.trt.ParserError('unsupported operator FancyOp'))
        return False

    monkeypatch.setattr(fake.trt.OnnxParser, 'parse_from_file', refuse)
    with pytest.raises(EngineError, match='cannot parse the ONNX: .*FancyOp'):
        tensorrt_builder.build_engine(onnx_files[0], tmp_path / 'x.engine')


def test_engine_runs_from_pinned_buffers_and_matches_onnxruntime(fake, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    tensorrt_builder.build_engine(onnx_files[0], engine_path, _fp16_options())
    engine = load_engine(engine_path)
    assert isinstance(engine, TensorRTEngine) and engine.backend == 'tensorrt'
    assert engine.input_hw == (24, 32) and engine.depth_range_m == (0.25, 8.0)
    image = random_image(engine.input_hw, batch=2, seed=7)
    depth, confidence = engine.infer(image)  # static batch 1: two runs
    assert depth.shape == (2, 1, 24, 32) and depth.dtype == np.float32
    again, _ = engine.infer(image)
    np.testing.assert_array_equal(depth, again)  # outputs are copies, not staging views
    errors = export.parity_errors(_ort(onnx_files[0], image), (depth, confidence))
    assert 0 < errors['depth_rel'] < FP16_TOLERANCE
    assert errors['confidence_rel'] < FP16_TOLERANCE
    assert fake.cuda.pageable_copies == 0 and fake.cuda.pinned
    assert 'fp16' in engine.describe() and GPU in engine.describe()
    engine.close()
    engine.close()
    assert fake.cuda.memory == {} and fake.cuda.pinned == {} and fake.cuda.streams == set()
    with pytest.raises(EngineError, match='closed'):
        engine.infer(image)


def test_dynamic_engine_splits_batches_beyond_the_profile(fake10, onnx_files, tmp_path):
    engine_path = tmp_path / 'd.engine'
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(1, 1, 2))
    tensorrt_builder.build_engine(onnx_files[1], engine_path, options)
    fake10.trt.executions.clear()
    engine = TensorRTEngine(engine_path, cuda=fake10.cuda)
    image = random_image(engine.input_hw, batch=5, seed=8)
    depth, confidence = engine.infer(image)
    reference = _ort(onnx_files[1], image)
    np.testing.assert_allclose(depth, reference[0], rtol=1e-6)
    np.testing.assert_allclose(confidence, reference[1], rtol=1e-6)
    assert len(fake10.trt.executions) == 3  # 2 + 2 + 1


def test_dynamic_engine_with_a_single_size_profile_still_sets_the_shape(
    fake10, onnx_files, tmp_path
):
    # `build-engine --batch 1 1 1` on a dynamic-batch ONNX: the engine's input is still
    # [-1, 3, H, W], so every run must set the input shape.
    engine_path = tmp_path / 'one.engine'
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(1, 1, 1))
    tensorrt_builder.build_engine(onnx_files[1], engine_path, options)
    engine = TensorRTEngine(engine_path, cuda=fake10.cuda)
    image = random_image(engine.input_hw, batch=3, seed=4)
    depth, _ = engine.infer(image)
    np.testing.assert_allclose(depth, _ort(onnx_files[1], image)[0], rtol=1e-6)


def test_batches_the_profile_cannot_take_are_refused(fake10, onnx_files, tmp_path):
    engine_path = tmp_path / 'two.engine'
    options = tensorrt_builder.BuildOptions(precision='fp32', batch_profile=(2, 2, 4))
    tensorrt_builder.build_engine(onnx_files[1], engine_path, options)
    engine = TensorRTEngine(engine_path, cuda=fake10.cuda)
    assert engine.infer(random_image(engine.input_hw, batch=8))[0].shape[0] == 8
    for batch in (1, 5):  # below the minimum; 4 + 1 leaves a chunk below it
        with pytest.raises(EngineError, match=f'batches of 2 to 4 .*a batch of {batch}'):
            engine.infer(random_image(engine.input_hw, batch=batch))


def test_engine_runs_from_a_worker_thread(fake10, onnx_files, tmp_path):
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


def test_engine_from_another_gpu_or_version_is_refused(fake10, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    agx = FakeCuda('Orin', compute_capability='8.7', sm_count=16)
    tensorrt_builder.build_engine(onnx_files[0], engine_path, cuda=agx)
    with pytest.raises(EngineError, match=r"GPU 'Orin'.*build-engine"):
        load_engine(engine_path)
    # Every Jetson Orin reports "Orin": the SM count tells an Orin Nano from an AGX Orin.
    nano = FakeCuda('Orin', compute_capability='8.7', sm_count=8)
    with pytest.raises(EngineError, match=r'a Orin with 16 SMs \(this one has 8\)'):
        TensorRTEngine(engine_path, cuda=nano)
    tensorrt_builder.build_engine(onnx_files[0], engine_path)
    fake10.monkeypatch.setattr(fake10.trt, '__version__', '10.7.0')
    with pytest.raises(EngineError, match=r'TensorRT 10\.3\.0 \(this machine has 10\.7\.0\)'):
        load_engine(engine_path)


def test_tampered_engine_or_missing_sidecar(fake10, onnx_files, tmp_path):
    engine_path = tmp_path / 'm.engine'
    tensorrt_builder.build_engine(onnx_files[0], engine_path)
    engine_path.write_bytes(engine_path.read_bytes()[:-10])
    with pytest.raises(EngineError, match='does not match the sha256'):
        load_engine(engine_path)
    cache.sidecar_path(engine_path).unlink()
    with pytest.raises(ModelMetadataError, match='no sidecar'):
        load_engine(engine_path)


def test_engine_that_tensorrt_cannot_deserialize(fake10, onnx_files, tmp_path):
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
    builds = len(fake.trt.builds)
    assert builds == 1
    first.close()
    second = load_engine(onnx_files[0], backend='tensorrt', cache_dir=cache_dir)
    assert len(fake.trt.builds) == builds  # cache hit: no rebuild
    assert second.path == first.path and second.path.parent == cache_dir
    assert any(p.name.startswith('timing-') for p in cache_dir.iterdir())
    load_engine(onnx_files[0], backend='tensorrt', cache_dir=cache_dir, precision='fp32')
    assert len(fake.trt.builds) == builds + 1  # another precision is another engine
    fake.cuda.name = 'NVIDIA Other GPU'
    third = load_engine(onnx_files[0], backend='tensorrt', cache_dir=cache_dir)
    assert len(fake.trt.builds) == builds + 2 and third.path != first.path


def test_cache_key_holds_build_options_and_gpu_facts(fake10, onnx_files, tmp_path):
    ensure = tensorrt_builder.ensure_engine
    base = ensure(onnx_files[0], cache_dir=tmp_path)
    bigger = tensorrt_builder.BuildOptions(workspace_bytes=1 << 30)
    assert ensure(onnx_files[0], cache_dir=tmp_path, options=bigger) != base
    assert ensure(onnx_files[0], cache_dir=tmp_path, precision='fp16') == base  # the default
    fake10.cuda.sm_count = 8  # same name, another GPU
    assert ensure(onnx_files[0], cache_dir=tmp_path) != base
    assert len(fake10.trt.builds) == 3


def test_a_refused_engine_is_never_cached_a_fallback_is(fake10, risky_onnx, tmp_path):
    refuse = tensorrt_builder.BuildOptions(fallback_fp32=False)
    for _ in range(2):
        with pytest.raises(EngineError, match='refused'):
            tensorrt_builder.ensure_engine(risky_onnx[1], cache_dir=tmp_path, options=refuse)
    assert not list(tmp_path.glob('*.engine'))
    first = load_engine(risky_onnx[1], backend='tensorrt', cache_dir=tmp_path, precision='fp16')
    builds = len(fake10.trt.builds)
    second = load_engine(risky_onnx[1], backend='tensorrt', cache_dir=tmp_path, precision='fp16')
    assert second.path == first.path and len(fake10.trt.builds) == builds  # not rebuilt
    assert second.sidecar.precision == 'fp32' and second.sidecar.requested_precision == 'fp16'


def test_builds_and_runs_on_the_device_it_is_given(monkeypatch, onnx_files, tmp_path):
    gpus = [FakeCuda('NVIDIA GPU Zero', index=0), FakeCuda('NVIDIA GPU One', index=1, sm_count=8)]
    trt = make_fake_tensorrt('10.3.0', cuda=gpus[0])
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setattr(
        tensorrt_backend,
        'default_cuda_api',
        lambda device='auto': gpus[tensorrt_backend.parse_cuda_device(device)],
    )
    gpus[0].activate()  # the thread's current device is 0, as in a fresh process
    path = tensorrt_builder.ensure_engine(onnx_files[0], device='cuda:1', cache_dir=tmp_path)
    sidecar = cache.read_sidecar(path)
    assert sidecar.gpu_name == 'NVIDIA GPU One' and sidecar.gpu_sm_count == 8
    engine = TensorRTEngine(path, device='cuda:1')
    image = random_image(engine.input_hw, seed=1)
    np.testing.assert_allclose(engine.infer(image)[0], _ort(onnx_files[0], image)[0], rtol=2e-3)
    engine.close()
    with pytest.raises(EngineError, match='NVIDIA GPU One'):
        TensorRTEngine(path, device='cuda:0')
    # A later start on cuda:1, through the loader as the node starts, finds the engine.
    builds = len(trt.builds)
    engine = load_engine(onnx_files[0], backend='tensorrt', device='cuda:1', cache_dir=tmp_path)
    assert engine.path == path and len(trt.builds) == builds
    engine.close()


def test_close_frees_on_the_engine_device_whatever_is_current(monkeypatch, onnx_files, tmp_path):
    """The CUDA runtime frees on the current device; close() must make it the engine's."""
    gpus = [FakeCuda('NVIDIA GPU Zero', index=0), FakeCuda('NVIDIA GPU One', index=1)]
    monkeypatch.setitem(sys.modules, 'tensorrt', make_fake_tensorrt('10.3.0', cuda=gpus[0]))
    gpus[1].activate()
    path = tmp_path / 'one.engine'
    tensorrt_builder.build_engine(onnx_files[0], path, cuda=gpus[1])
    engine = TensorRTEngine(path, cuda=gpus[1])
    engine.infer(random_image(engine.input_hw, seed=2))
    assert gpus[1].memory and gpus[1].streams
    gpus[0].activate()  # another engine (or the node's other work) made cuda:0 current
    engine.close()
    assert not gpus[1].memory and not gpus[1].streams and not gpus[1].pinned


_CHILD = """
import json, sys
from fake_tensorrt import FakeCuda, make_fake_tensorrt
cuda = FakeCuda('NVIDIA Fake GPU')
sys.modules['tensorrt'] = make_fake_tensorrt(
    sys.argv[4], cuda=cuda, build_log=sys.argv[3], build_delay_s=1.0, exit_log=True
)
from moa_depth_ros.engine import tensorrt_backend, tensorrt_builder
from moa_depth_ros.fileio import atomic_write_text
path = tensorrt_builder.ensure_engine(sys.argv[1], cache_dir=sys.argv[2], cuda=cuda)
engine = tensorrt_backend.TensorRTEngine(path, cuda=cuda)
result = {'path': str(path), 'sha256': engine.sidecar.engine_sha256}
atomic_write_text(sys.argv[5], json.dumps(result))  # stdout also carries TensorRT's log
"""


@pytest.mark.slow
@pytest.mark.parametrize('version', VERSIONS)
def test_two_processes_starting_together_build_once(onnx_files, tmp_path, version):
    log = tmp_path / 'builds.log'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), str(REPO / 'test')])}
    args = [str(onnx_files[0]), str(tmp_path / 'cache'), str(log), version]
    result_files = [tmp_path / f'child-{i}.json' for i in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, '-c', _CHILD, *args, str(result)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for result in result_files
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert '[TRT] [W]' in out.strip().splitlines()[-1]  # the logger had the last word
    results = [json.loads(path.read_text()) for path in result_files]
    assert len(log.read_text().split()) == 1  # one build; the other process waited for it
    assert results[0] == results[1]
    assert cache.file_sha256(results[0]['path']) == results[0]['sha256']


def test_loader_rules_for_tensorrt(fake10, onnx_files, tmp_path):
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
    for version in ('8.6.1', '10.2.0'):
        monkeypatch.setitem(sys.modules, 'tensorrt', make_fake_tensorrt(version=version))
        with pytest.raises(EngineError, match=r'too old.*10\.3'):
            tensorrt_backend.import_tensorrt()
    monkeypatch.setitem(sys.modules, 'tensorrt', make_fake_tensorrt(version='12.0.0'))
    with pytest.raises(EngineError, match='newer than moa_depth_ros supports'):
        tensorrt_backend.import_tensorrt()
    for version in ('10.3.0.26', '11.4.1'):
        monkeypatch.setitem(sys.modules, 'tensorrt', make_fake_tensorrt(version=version))
        assert tensorrt_backend.import_tensorrt().__version__ == version


def test_cuda_device_parsing():
    assert tensorrt_backend.parse_cuda_device('auto') == 0
    assert tensorrt_backend.parse_cuda_device('cuda:2') == 2
    with pytest.raises(ConfigError, match="got 'cpu'"):
        tensorrt_backend.parse_cuda_device('cpu')


def test_cuda_python_api_pins_host_memory_and_uses_native_handles(monkeypatch):
    # A stand-in for cuda-python's runtime module with the calls CudaPythonApi makes.
    calls = []

    class Stream:
        def __init__(self, handle):
            self.handle = handle

        def __int__(self):
            raise AssertionError('int(stream) is deprecated in cuda-bindings 13')

    blocks = {}

    def malloc_host(size):
        blocks[size] = (np.zeros(size, np.uint8),)
        return (0, blocks[size][0].ctypes.data)

    rt = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=0),
        cudaStreamNonBlocking=1,
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2),
        cudaSetDevice=lambda index: calls.append(('set', index)) or (0,),
        cudaGetDeviceProperties=lambda index: (
            0,
            types.SimpleNamespace(
                name=b'NVIDIA H200\x00\x00',
                major=9,
                minor=0,
                multiProcessorCount=132,
                totalGlobalMem=150 << 30,
            ),
        ),
        cudaMallocHost=malloc_host,
        cudaFreeHost=lambda ptr: calls.append(('free_host', ptr)) or (0,),
        cudaStreamCreateWithFlags=lambda flags: (0, Stream(0xBEEF)),
        cudaStreamDestroy=lambda stream: calls.append(('destroy', stream.handle)) or (0,),
    )
    utils = types.SimpleNamespace(get_cuda_native_handle=lambda stream: stream.handle)
    bindings = types.ModuleType('cuda.bindings')
    bindings.runtime, bindings.utils = rt, utils
    monkeypatch.setitem(sys.modules, 'cuda', types.ModuleType('cuda'))
    monkeypatch.setitem(sys.modules, 'cuda.bindings', bindings)
    monkeypatch.setitem(sys.modules, 'cuda.bindings.runtime', rt)
    monkeypatch.setitem(sys.modules, 'cuda.bindings.utils', utils)
    api = tensorrt_backend.CudaPythonApi(1)
    assert calls == [('set', 1)]
    assert api.device_info() == cache.GpuInfo('NVIDIA H200', '9.0', 132, 150 << 30)
    stream = api.create_stream()
    assert stream == 0xBEEF
    host = api.alloc_host(64)
    assert host.nbytes == 64 and host.ctypes.data == blocks[64][0].ctypes.data
    api.free_host(host)
    api.destroy_stream(stream)
    assert ('free_host', blocks[64][0].ctypes.data) in calls and ('destroy', 0xBEEF) in calls


def test_build_options_validation():
    with pytest.raises(ConfigError, match='precision'):
        tensorrt_builder.BuildOptions(precision='int8')
    with pytest.raises(ConfigError, match='batch_profile'):
        tensorrt_builder.BuildOptions(batch_profile=(2, 1, 4))
    with pytest.raises(ConfigError, match='workspace'):
        tensorrt_builder.BuildOptions(workspace_bytes=10)


def test_build_engine_command_line(fake, onnx_files, risky_onnx, tmp_path, capsys):
    out = tmp_path / 'cli.engine'
    args = ['--onnx', str(onnx_files[1]), '--output', str(out), '--batch', '1', '2', '3']
    assert build_engine_cli.main(args) == 0
    printed = capsys.readouterr().out
    assert 'fp16' in printed and 'parity with ONNX Runtime FP32: passed' in printed
    assert cache.read_sidecar(out).batch_profile == (1, 2, 3)
    assert build_engine_cli.main([*args, '--precision', 'fp32', '--tf32']) == 0
    assert cache.read_sidecar(out).tf32
    capsys.readouterr()
    hopeless = ['--onnx', str(risky_onnx[1]), '--output', str(out)]
    assert build_engine_cli.main(hopeless) == 0
    assert 'built in FP32 instead' in capsys.readouterr().out
    assert build_engine_cli.main([*hopeless, '--no-fp32-fallback', '--precision', 'fp16']) == 2
    assert 'refused' in capsys.readouterr().err
    assert build_engine_cli.main(['--onnx', str(tmp_path / 'none.onnx')]) == 2
    assert 'does not exist' in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_acceptance_script_runs_against_the_fake(fake, monkeypatch, tmp_path):
    # The script is for a GPU machine; here its logic runs on the fake with tiny towers.
    import gpu_acceptance

    monkeypatch.setattr(gpu_acceptance, '_free_device_memory', lambda cuda: 1 << 30)
    monkeypatch.setattr(gpu_acceptance, '_device_count', lambda: 1)
    monkeypatch.setattr(gpu_acceptance, 'ITERATIONS', 20)
    monkeypatch.setattr(  # its children import tensorrt: test_gpu_acceptance_lock_check
        gpu_acceptance, 'concurrent_builds', lambda report, *_: report.skip('lock', 'fake')
    )
    monkeypatch.setenv('OUT', str(tmp_path / 'out'))
    assert gpu_acceptance.main(['--tiny', '--work', str(tmp_path / 'work')]) == 0
    result = json.loads((tmp_path / 'out' / 'gpu_acceptance.json').read_text())
    statuses = {check['check']: check['status'] for check in result['checks']}
    assert statuses['refusal: an FP16 engine that misses the bar'] == 'pass'
    assert statuses['cache: a second start reuses the engine'] == 'pass'
    assert statuses['MoA-DepthCLIP fp16: iterations leak no device memory'] == 'pass'
    assert statuses['tiny fp16: inspector layer precisions fit fp16'] == 'pass'
    assert result['facts']['tensorrt'] == fake.trt.__version__ and not result['failed']
    assert result['finished'] and result['tally']['fail'] == 0
    # Every build is timed: the hopeless net's fallback built three times.
    attempts = [b['attempt'] for b in result['builds'] if b['label'] == 'hopeless, fallback']
    assert attempts == [
        'build 1 (fp16)',
        'build 2 (fp16, sensitive layers in FP32)',
        'build 3 (fp32)',
    ]


def test_gpu_acceptance_keeps_its_result_when_stopped(fake, monkeypatch, tmp_path, capsys):
    """The JSON is on disk, in its default place, after every check: a stop loses nothing."""
    import gpu_acceptance

    monkeypatch.delenv('OUT', raising=False)
    monkeypatch.setattr(gpu_acceptance, 'DEFAULT_OUT', tmp_path / 'runs')
    monkeypatch.setattr(gpu_acceptance, '_device_count', lambda: 1)
    monkeypatch.setattr(gpu_acceptance, '_free_device_memory', lambda cuda: 1 << 30)
    seen = []

    def stopped(report, *_):
        seen.append(json.loads(report.path.read_text()))  # written before this point
        raise KeyboardInterrupt  # what `timeout --signal=INT` delivers

    monkeypatch.setattr(gpu_acceptance, 'concurrent_builds', stopped)
    assert gpu_acceptance.main(['--tiny', '--work', str(tmp_path / 'work')]) == 1
    result = json.loads((tmp_path / 'runs' / 'gpu_acceptance.json').read_text())
    assert seen and seen[0]['tally']['pass'] >= 5 and not seen[0]['finished']
    assert not result['finished'] and result['failed'] == ['run']
    assert result['tally']['pass'] == seen[0]['tally']['pass']
    out = capsys.readouterr().out
    assert 'pass, 0 fail' in out and '== 1 failed' in out  # a tally as it goes, and at the end


def test_gpu_acceptance_guards_the_budget_per_build(fake, monkeypatch, risky_onnx, tmp_path):
    """The hopeless net builds three times; the budget is asked before each build."""
    import gpu_acceptance

    clock = [1000.0]
    fake_time = types.SimpleNamespace(monotonic=lambda: clock[0], perf_counter=lambda: clock[0])
    monkeypatch.setattr(gpu_acceptance, 'time', fake_time)
    report = gpu_acceptance.Report(10.0, tmp_path / 'r.json')
    real = tensorrt_builder._build_once

    def four_seconds(*args, **kwargs):  # each build takes 4 s of the budget
        clock[0] += 4.0
        return real(*args, **kwargs)

    monkeypatch.setattr(tensorrt_builder, '_build_once', four_seconds)
    engine = gpu_acceptance.build_and_judge(
        report, 'hopeless', risky_onnx[1], tmp_path / 'cache', 'fp16', first_build_s=3.0
    )
    assert engine is None
    [check] = report.checks
    assert check['status'] == 'skip'
    assert check['why'] == 'build 3 (fp32) needs ~5 s, 2 s of budget left'
    assert [b['attempt'] for b in report.builds] == [
        'build 1 (fp16)',
        'build 2 (fp16, sensitive layers in FP32)',
    ]


_TENSORRT_SHIM = """
import sys
from fake_tensorrt import FakeCuda, make_fake_tensorrt
from moa_depth_ros.engine import tensorrt_backend
cuda = FakeCuda('NVIDIA Fake GPU')
tensorrt_backend.default_cuda_api = lambda device='auto': cuda
sys.modules[__name__] = make_fake_tensorrt(
    {version!r}, cuda=cuda, build_log={log!r}, build_delay_s=1.0, exit_log=True
)
"""


@pytest.mark.slow
@pytest.mark.parametrize('version', VERSIONS)
def test_gpu_acceptance_lock_check(onnx_files, monkeypatch, tmp_path, version):
    """Its children hand back the engine path in a file: TensorRT also logs to stdout."""
    import gpu_acceptance

    shim = tmp_path / 'shim'
    shim.mkdir()
    log = tmp_path / 'builds.log'
    (shim / 'tensorrt.py').write_text(_TENSORRT_SHIM.format(version=version, log=str(log)))
    monkeypatch.setenv('PYTHONPATH', str(shim))
    report = gpu_acceptance.Report(120.0)
    gpu_acceptance.concurrent_builds(report, onnx_files[1], tmp_path)
    [check] = report.checks
    assert check['status'] == 'pass', check
    assert check['builds'] == 1 and len(log.read_text().split()) == 1


def test_gpu_preflight_refuses_in_one_line(monkeypatch, capsys):
    import gpu_preflight

    def importer(missing, trt_module):
        def load(name):
            if name in missing:
                raise ImportError(f'No module named {name!r}')
            if name == 'tensorrt':
                return trt_module
            if name == 'cuda.bindings.runtime':
                return types.SimpleNamespace(
                    cudaError_t=types.SimpleNamespace(cudaSuccess=0),
                    cudaGetDeviceCount=lambda: (0, 1),
                )
            return types.SimpleNamespace(__version__='1.0')

        return load

    stub = types.ModuleType('tensorrt')  # the PyPI stub: no libraries
    assert gpu_preflight.main(importer({'torch', 'timm'}, stub)) == 2
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and out.startswith('gpu-acceptance: refused:')
    assert 'torch (torch' in out and 'timm' in out and 'tensorrt (a stub' in out
    fake = make_fake_tensorrt('11.1.0')
    monkeypatch.setitem(sys.modules, 'tensorrt', fake)  # what import_tensorrt checks
    assert gpu_preflight.main(importer(set(), fake)) == 0
    assert capsys.readouterr().out.startswith('gpu-acceptance: ready: numpy 1.0')


@pytest.mark.parametrize(
    ('cuda', 'trt', 'says'),
    [
        ('12.8', '', '.venv-gpu-cu12-trt11/bin/python'),  # TensorRT 11 unless asked
        ('13.0', '10', '.venv-gpu-cu13-trt10/bin/python'),
        ('11.8', '', 'needs a CUDA 12 or 13 driver'),
    ],
)
def test_gpu_acceptance_sh_refuses_without_its_environment(tmp_path, cuda, trt, says):
    """No lane venv: one line saying how to get one, never a run on whatever python3 is."""
    if pathlib.Path('/etc/nv_tegra_release').exists():
        pytest.skip('a Jetson: the lane is jetpack6 whatever nvidia-smi says')
    env = {**os.environ, 'PATH': f'{tmp_path}:{os.environ["PATH"]}', 'TRT': trt}
    for name in ('PYTHON', 'GPU_VENV'):
        env.pop(name, None)
    if not trt:
        env.pop('TRT')
    nvidia_smi = tmp_path / 'nvidia-smi'  # the header line of a driver for this CUDA
    nvidia_smi.write_text(
        f'#!/bin/sh\necho "| NVIDIA-SMI 580.65  Driver Version: 580.65  CUDA Version: {cuda} |"\n'
    )
    nvidia_smi.chmod(0o755)
    done = subprocess.run(
        ['bash', str(REPO / 'test' / 'gpu_acceptance.sh')],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('gpu-acceptance: refused:'), lines
    assert says in lines[0]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_fp16_engine_matches_onnxruntime(onnx_files, tmp_path):
    engine_path = tmp_path / 'real.engine'
    sidecar = tensorrt_builder.build_engine(onnx_files[1], engine_path, _fp16_options())
    assert sidecar.parity['passed'] and not sidecar.tf32
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
