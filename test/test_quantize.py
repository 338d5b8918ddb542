"""INT8 for CPUs: ``export --int8`` and the INT8 model wherever a model file runs.

``export --int8`` is NNCF post-training quantization (``training.quantize``). Tested: the
INT8 model (an OpenVINO IR with its metadata) in ``load_engine``, the bag tool and the
backend choice, and the refusals (``precision int8`` on an FP32 file, an IR without a
record, a model that misses the accuracy bar).
"""

from __future__ import annotations

import json
import os
import time

import cv2
from model_fixtures import tiny_model
import numpy as np
import pytest
from test_engine_support import random_image
from tiny_model import write_tiny_onnx

from moa_depth_ros import cli
from moa_depth_ros.engine import choice, load_engine
from moa_depth_ros.engine.accuracy import accuracy_holds, depth_agreement
from moa_depth_ros.engine.cache import file_sha256
from moa_depth_ros.engine.openvino_backend import (
    int8_ir_path,
    is_int8,
    read_ir_metadata,
)
from moa_depth_ros.errors import ConfigError, ModelMetadataError
from moa_depth_ros.model import save_checkpoint
from training import __main__ as training_main
from training import quantize

pytestmark = pytest.mark.openvino
pytest.importorskip('nncf')


def _image_folder(path, count=10, hw=(120, 160)):
    """Blurred noise photos: structure at several scales, as camera frames have."""
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        noise = (rng.random((*hw, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(path / f'frame{i:02d}.png'), cv2.GaussianBlur(noise, (9, 9), 3))
    return path


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Export a tiny MoA-DepthCLIP with --int8, calibrated on a folder of images."""
    root = tmp_path_factory.mktemp('int8')
    checkpoint = save_checkpoint(tiny_model('moa_depthclip'), root / 'moa.safetensors')
    frames = _image_folder(root / 'frames')
    onnx_path = root / 'moa.onnx'
    args = ['export', '--checkpoint', str(checkpoint), '--output', str(onnx_path)]
    status = training_main.main([*args, '--int8', '--calibration', str(frames)])
    return status, onnx_path, frames


def test_export_int8_writes_a_verified_ir_with_its_record(exported, capsys):
    status, onnx_path, frames = exported
    assert status == 0
    int8 = int8_ir_path(onnx_path)
    assert int8.name == 'moa.int8.xml' and int8.with_suffix('.bin').is_file()
    meta = read_ir_metadata(int8)
    extra = meta.extra
    # The FP32 file's contract travels unchanged...
    fp32 = load_engine(onnx_path, backend='onnxruntime').metadata
    assert (meta.model_name, meta.input_hw, meta.min_depth_m, meta.max_depth_m) == (
        fp32.model_name,
        fp32.input_hw,
        fp32.min_depth_m,
        fp32.max_depth_m,
    )
    # ...plus what was quantized, on what, and the measured error.
    assert is_int8(meta) and extra['quantization'].startswith('int8 static (NNCF')
    assert extra['int8_source_sha256'] == file_sha256(onnx_path)
    assert extra['int8_calibration'] == '8 of 10 frames of image folder frames'
    assert extra['int8_check_frames'] == '2'
    assert float(extra['int8_mean_rel_err']) <= 0.01 and 'int8_worst_frame_mean_rel_err' in extra
    assert float(extra['int8_delta1_agreement']) >= 0.99
    # `moa-depth info` reads the record without OpenVINO's runtime.
    assert cli.main(['info', str(int8)]) == 0
    out = capsys.readouterr().out
    assert 'OpenVINO INT8 model' in out and 'int8_source_sha256' in out


def test_the_layer_reading_the_image_and_the_head_stay_float(exported):
    import openvino as ov

    _, onnx_path, _ = exported
    core = ov.Core()
    layers = quantize.image_layers(core.read_model(str(onnx_path)))
    # The tiny MoA-DepthCLIP's patch embedding: the one convolution every pixel goes through
    # first (the image size reaches the head's resize too, through ShapeOf: not a reader).
    assert len(layers) == 1 and 'conv1' in layers[0]
    quantized = core.read_model(str(int8_ir_path(onnx_path)))
    by_name = {op.get_friendly_name(): op for op in quantized.get_ops()}
    fed_by = {
        by_name[layers[0]].input_value(i).get_node().get_type_name()
        for i in range(by_name[layers[0]].get_input_size())
    }
    assert 'FakeQuantize' not in fed_by  # float input, float weights
    quantized_ops = [
        op.get_friendly_name()
        for op in quantized.get_ops()
        if op.get_type_name() == 'FakeQuantize'
    ]
    assert quantized_ops and not [name for name in quantized_ops if '/head/' in name]
    extra = read_ir_metadata(int8_ir_path(onnx_path)).extra
    assert layers[0] in extra['int8_kept_float'] and '/head/' in extra['int8_kept_float']
    assert extra['quantization'] == quantize.QUANTIZATION


def test_the_int8_model_keeps_the_depth_contract_of_fp32(exported):
    _, onnx_path, _ = exported
    int8 = load_engine(int8_ir_path(onnx_path), precision='int8')
    fp32 = load_engine(onnx_path, backend='onnxruntime')
    assert int8.backend == 'openvino' and int8.precision == 'int8'
    assert f'int8, rest {int8.rest_precision}' in int8.describe()
    assert int8.metadata.extra['int8_check_rest_precision'] == int8.rest_precision
    image = random_image(fp32.input_hw, seed=5)
    (depth, confidence), (ref_depth, ref_confidence) = int8.infer(image), fp32.infer(image)
    assert depth.shape == ref_depth.shape and depth.dtype == np.float32
    assert confidence.shape == ref_confidence.shape
    assert accuracy_holds(depth_agreement(ref_depth, depth))
    # precision auto on an INT8 file runs it as INT8 too.
    assert load_engine(int8_ir_path(onnx_path)).precision == 'int8'


def test_precision_int8_on_an_fp32_file_names_the_int8_model(exported, tmp_path):
    _, onnx_path, _ = exported
    for backend in ('auto', 'onnxruntime', 'openvino'):
        with pytest.raises(ConfigError, match='its INT8 model is .*moa.int8.xml'):
            load_engine(onnx_path, backend=backend, precision='int8')
    lonely = write_tiny_onnx(tmp_path / 'plain.onnx')
    with pytest.raises(ConfigError, match='export --checkpoint CKPT .* --int8 --calibration'):
        load_engine(lonely, precision='int8')
    with pytest.raises(ConfigError, match='is an INT8 model: precision must be auto or int8'):
        load_engine(int8_ir_path(onnx_path), precision='fp32')
    with pytest.raises(Exception, match='backend:=openvino or auto'):
        load_engine(int8_ir_path(onnx_path), backend='onnxruntime')


def test_an_ir_without_the_record_is_refused(exported, tmp_path):
    import openvino as ov

    _, onnx_path, _ = exported
    plain = tmp_path / 'plain.xml'
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(plain))
    with pytest.raises(ModelMetadataError, match='export --int8'):
        load_engine(plain)


def test_a_model_that_misses_the_bar_is_not_written(tmp_path, monkeypatch, capsys):
    checkpoint = save_checkpoint(tiny_model('moa_depthclip'), tmp_path / 'm.safetensors')
    frames = _image_folder(tmp_path / 'frames', count=5)
    # A bar no quantized model meets: nothing may be written, and the status says so.
    monkeypatch.setattr(quantize, 'accuracy_holds', lambda numbers: numbers['max_rel_err'] == 0)
    args = ['export', '--checkpoint', str(checkpoint), '--output', str(tmp_path / 'm.onnx')]
    assert training_main.main([*args, '--int8', '--calibration', str(frames)]) == 3
    assert (
        'INT8 model refused (accuracy below the bar), nothing written' in capsys.readouterr().out
    )
    assert not (tmp_path / 'm.int8.xml').exists() and not (tmp_path / 'm.int8.bin').exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.m.int8')]


def test_int8_needs_calibration_frames(tmp_path, capsys):
    args = ['export', '--checkpoint', 'c.safetensors', '--output', str(tmp_path / 'm.onnx')]
    with pytest.raises(SystemExit) as e:
        training_main.main([*args, '--int8'])
    assert e.value.code == 2 and '--int8 needs --calibration' in capsys.readouterr().err
    with pytest.raises(ConfigError, match='has no images'):
        quantize.calibration_frames(tmp_path, (32, 32))
    with pytest.raises(ConfigError, match='does not exist'):
        quantize.calibration_frames(tmp_path / 'missing', (32, 32))


def test_calibration_frames_from_a_recording_and_a_recipe(tmp_path):
    from training.data.synthetic_bag import write_synthetic_bag

    bag = tmp_path / 'bag'
    write_synthetic_bag(bag, n_frames=7, width=64, height=48, seed=3)
    frames = quantize.calibration_frames(bag, (24, 32), count=6)
    # Spread over the recording, decoded as the node decodes, resized to the input.
    assert (len(frames.calibration), len(frames.check)) == (5, 1)
    assert frames.source == '6 frames of recording bag'
    assert all(f.shape == (1, 3, 24, 32) and f.dtype == np.float32 for f in frames.calibration)
    assert all(0.0 <= f.min() and f.max() <= 1.0 for f in frames.calibration)
    assert len({f.tobytes() for f in frames.calibration + frames.check}) == 6
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text(
        json.dumps(
            {'data': {'dataset': {'dataset': 'synthetic', 'synthetic_sizes': {'train': 4}}}}
        )
    )
    frames = quantize.calibration_frames(recipe, (24, 32), count=10)
    assert (len(frames.calibration), len(frames.check)) == (3, 1)
    assert frames.source == '4 frames of training recipe recipe.yaml'


def test_the_bag_tool_runs_the_int8_model_with_the_fp32_depth_contract(tmp_path):
    from test_bag import _read_rosbags, _settings, write_input_bag

    from moa_depth_ros.bag import process as bag
    from moa_depth_ros.frame import msgs

    onnx_path = write_tiny_onnx(tmp_path / 'tiny.onnx', range_m=(0.5, 10.0))
    frames = quantize.split_frames(
        [random_image((24, 32), seed=s) for s in range(10)], '10 random frames'
    )
    report = quantize.quantize_openvino_int8(onnx_path, frames)
    assert report.path == tmp_path / 'tiny.int8.xml'
    write_input_bag(tmp_path / 'in', 'mcap')
    outputs = {}
    for name, model, precision in (
        ('fp32', onnx_path, 'fp32'),
        ('int8', report.path, 'int8'),
    ):
        settings = _settings(str(model), backend='openvino', precision=precision)
        summary = bag.process_bag(
            tmp_path / 'in', tmp_path / name, settings=settings, progress=False
        )
        assert (summary['processed'], summary['skipped']) == (6, 1)
        outputs[name] = _read_rosbags(tmp_path / name)
    assert 'int8' in summary['model']
    fp32, int8 = outputs['fp32'], outputs['int8']
    assert {t: len(v) for t, v in fp32.items()} == {t: len(v) for t, v in int8.items()}
    for (t_a, a), (t_b, b) in zip(
        fp32['/camera/depth/image_rect'], int8['/camera/depth/image_rect']
    ):
        assert (
            t_a == t_b
            and a.header == b.header
            and (a.encoding, a.width)
            == (
                b.encoding,
                b.width,
            )
        )
        ref, got = msgs.decode_depth(a), msgs.decode_depth(b)
        finite = np.isfinite(ref)
        assert (np.isfinite(got) == finite).all()
        assert accuracy_holds(depth_agreement(ref[finite], got[finite]))


class _Timed:
    """An engine whose infer takes ``ms`` (rule 5's timing logic, without real networks)."""

    backend = 'openvino'

    def __init__(self, ms, precision, metadata=None):
        self.ms, self.precision, self.closed = ms, precision, False
        self.input_hw = (8, 8)
        self.metadata = metadata

    def infer(self, image):
        time.sleep(self.ms / 1e3)
        return np.ones((1, 1, 8, 8), np.float32), np.ones((1, 1, 8, 8), np.float32)

    def close(self):
        self.closed = True


def test_backend_auto_prefers_a_verified_int8_model_only_when_it_is_faster(exported):
    _, onnx_path, _ = exported
    int8_path = int8_ir_path(onnx_path)
    meta = read_ir_metadata(int8_path)
    assert choice.int8_candidate(onnx_path, 'auto', None) == int8_path
    assert choice.int8_candidate(onnx_path, 'auto', 'fp32') is None
    assert choice.int8_candidate(onnx_path, 'gpu', None) is None
    for int8_ms, expected in ((2.0, choice.INT8_CHOICE), (9.6, 'openvino')):
        winner, candidate = _Timed(10.0, 'bf16'), _Timed(int8_ms, 'int8', meta)
        verdict = {'backend': 'openvino', 'reason': 'OpenVINO bf16 4x faster'}
        chosen, verdict = choice._measure_int8(
            onnx_path, int8_path, winner, verdict, lambda name, c=candidate: c
        )
        assert verdict['backend'] == expected
        assert (chosen is candidate) == (expected == choice.INT8_CHOICE)
        assert (winner.closed, candidate.closed) == (chosen is candidate, chosen is winner)
    assert (
        'x faster than openvino bf16'
        in choice._measure_int8(
            onnx_path, int8_path, _Timed(10.0, 'bf16'), {}, lambda n: _Timed(2.0, 'int8', meta)
        )[1]['reason']
    )


def test_an_int8_model_of_another_file_version_is_not_chosen(exported, tmp_path):
    _, onnx_path, _ = exported
    other = tmp_path / 'moa.onnx'
    other.write_bytes(onnx_path.read_bytes() + b'\0')  # another version, same name
    os.link(int8_ir_path(onnx_path), tmp_path / 'moa.int8.xml')
    os.link(int8_ir_path(onnx_path).with_suffix('.bin'), tmp_path / 'moa.int8.bin')
    winner = _Timed(10.0, 'bf16')
    chosen, verdict = choice._measure_int8(
        other, tmp_path / 'moa.int8.xml', winner, {}, lambda name: pytest.fail('loaded')
    )
    assert chosen is winner and 'made from another version of moa.onnx' in verdict['int8']


def test_eval_prints_int8_next_to_fp32_on_the_same_frames(exported, capsys):
    _, onnx_path, _ = exported
    int8 = int8_ir_path(onnx_path)
    args = ['eval', '--model', str(onnx_path), '--backend', 'onnxruntime', '--int8', str(int8)]
    args += ['--dataset', 'synthetic', '--num-scenes', '3', '--synthetic-hw', '48', '64']
    assert training_main.main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(str(onnx_path))]
    assert len(rows) == 1 and f'{int8} (int8)' in out
    assert 'INT8 depth against' in out and 'on the same 3 frames' in out
    assert 'within the accuracy bar' in out
