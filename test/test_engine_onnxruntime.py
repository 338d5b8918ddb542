"""The ONNX Runtime backend without torch: what a robot's CPU path runs.

Models come from ``tiny_model`` (built with onnx.helper), so these tests also run in the
lanes without the training stack (``make test-compat`` on the oldest supported ONNX Runtime,
NumPy and OpenCV). Parity with torch lives in test_engine_onnx.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tiny_model import DEPTH_GAIN_M, DEPTH_OFFSET_M, write_tiny_onnx

from moa_depth_ros.engine import load_engine
from moa_depth_ros.engine.onnx_backend import read_onnx_metadata
from moa_depth_ros.errors import EngineError, ModelMetadataError


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('ort') / 'tiny.onnx', input_hw=(24, 32))


def test_runs_the_graph_and_reads_sizes_and_range_from_its_metadata(tiny):
    engine = load_engine(tiny, backend='onnxruntime', device='cpu')
    assert engine.backend == 'onnxruntime'
    assert engine.input_hw == (24, 32) and engine.depth_range_m == (0.5, 10.0)
    image = np.random.default_rng(0).random((2, 3, 24, 32), dtype=np.float32)
    depth, confidence = engine.infer(image)
    mean = image.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(depth, DEPTH_OFFSET_M + DEPTH_GAIN_M * mean, rtol=1e-5)
    np.testing.assert_allclose(confidence, mean, rtol=1e-5)
    assert 'tiny_test_model via onnxruntime' in engine.describe()
    assert read_onnx_metadata(tiny).model_name == 'tiny_test_model'


def test_threads_do_not_spin_between_frames_unless_asked(tiny):
    # ONNX Runtime's default busy-waits between runs: on a robot, a core burnt per camera.
    def spinning(engine):
        options = engine.session.get_session_options()
        return options.get_session_config_entry('session.intra_op.allow_spinning')

    assert spinning(load_engine(tiny, backend='onnxruntime', device='cpu')) == '0'
    assert spinning(load_engine(tiny, backend='onnxruntime', device='cpu', spin_wait=True)) == '1'
    engine = load_engine(tiny, backend='onnxruntime', device='cpu', intra_op_threads=1)
    assert engine.session.get_session_options().intra_op_num_threads == 1


def test_a_wrong_input_size_is_a_clear_error(tiny):
    engine = load_engine(tiny, backend='onnxruntime', device='cpu')
    with pytest.raises(EngineError, match='24'):
        engine.infer(np.zeros((1, 3, 48, 64), np.float32))


def test_truncated_and_foreign_files_are_engine_errors(tiny, tmp_path):
    data = open(tiny, 'rb').read()
    cut = tmp_path / 'cut.onnx'
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError):
        load_engine(cut, backend='onnxruntime', device='cpu')
    foreign = tmp_path / 'photo.onnx'
    foreign.write_bytes(b'\xff\xd8\xff\xe0 not a model')
    with pytest.raises(EngineError):
        load_engine(foreign, backend='onnxruntime', device='cpu')


def test_a_model_without_its_metadata_is_refused_with_the_missing_keys(tiny, tmp_path):
    model = onnx.load(tiny)
    del model.metadata_props[:]
    bare = tmp_path / 'bare.onnx'
    onnx.save(model, str(bare))
    with pytest.raises(ModelMetadataError, match='input_height'):
        load_engine(bare, backend='onnxruntime', device='cpu')
