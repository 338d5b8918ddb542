"""Peers in the benchmark: Depth-Anything-V2-Small's architecture behind our export contract."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('transformers')

from moa_depth_ros.engine import load_engine  # noqa: E402
from moa_depth_ros.errors import ConfigError  # noqa: E402
from tools.bench import peers  # noqa: E402
from tools.bench.__main__ import main as bench_main  # noqa: E402


def test_the_peer_has_depth_anything_v2_smalls_size():
    model = peers.build_peer('depth_anything_v2_small@392x518')
    parameters = sum(p.numel() for p in model.parameters())
    # The published model card: 24.8 M parameters (ViT-S/14 encoder and DPT decoder).
    assert 24.7e6 < parameters < 24.9e6
    assert model.input_hw == (392, 518)
    with pytest.raises(ConfigError, match='unknown peer'):
        peers.build_peer('depth_anything_v2_large@518x518')


@pytest.mark.openvino
def test_export_peer_writes_a_model_file_the_runtimes_run(tmp_path, capsys):
    out = tmp_path / 'peer.onnx'
    assert bench_main(['export-peer', 'depth_anything_v2_small@392x518', str(out)]) == 0
    assert 'depth_anything_v2_small@392x518' in capsys.readouterr().out
    image = np.random.default_rng(0).random((1, 3, 392, 518), dtype=np.float32)
    outputs = {}
    for backend in ('onnxruntime', 'openvino'):
        engine = load_engine(out, backend=backend, precision='fp32')
        assert engine.model_name == 'depth_anything_v2_small@392x518'
        assert engine.input_hw == (392, 518) and engine.depth_range_m == (0.1, 20.0)
        outputs[backend] = engine.infer(image)
        engine.close()
    depth, confidence = outputs['onnxruntime']
    assert depth.shape == confidence.shape == (1, 1, 392, 518)
    assert ((depth >= 0.1) & (depth <= 20.0)).all() and (confidence == 1).all()
    np.testing.assert_allclose(outputs['openvino'][0], depth, rtol=1e-4)
