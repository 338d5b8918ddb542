"""``python -m tools.bench engines``: latency next to FLOPs and the measured matmul rate."""

from __future__ import annotations

import math

from model_fixtures import TINY
import numpy as np
import pytest
from test_engine_support import TinyDepthNet

from moa_depth_ros.errors import ConfigError
from tools.bench import engines as bench
from training.onnx_export import accuracy_holds, depth_agreement


def test_bench_model_reports_every_backend_with_floor_and_parity():
    rates = {'fp32': 50e9, 'bf16': 100e9, 'int8': 200e9}
    result = bench.bench_model(TinyDepthNet(), warmup=1, iters=3, rates=rates, threads=1)
    assert result['model_name'] == 'tiny_standin' and result['input_hw'] == [24, 32]
    assert result['gflop'] > 0
    rows = {(r['backend'], r['precision']): r for r in result['rows']}
    openvino = {precision for backend, precision in rows if backend == 'openvino'}
    assert set(rows) - {('openvino', p) for p in openvino} == {
        ('torch', 'fp32'),
        ('torch', 'bf16'),
        ('onnxruntime', 'fp32'),
        ('onnxruntime', 'int8-dynamic'),
    }
    # OpenVINO FP32, and its default precision where this CPU prefers another (bf16 with AMX).
    assert 'fp32' in openvino and len(openvino) <= 2
    assert len(openvino) == 2 or 'openvino auto' in result['skipped']
    assert rows[('openvino', 'fp32')]['parity']['depth_rel'] < 1e-4
    assert all(rows[('openvino', p)]['accuracy_holds'] for p in openvino)
    for row in rows.values():
        assert 0 < row['median_ms'] <= row['p90_ms'] and row['throughput_fps'] > 0
        floor_ms = result['gflop'] * 1e9 / rates[row['floor_rate']] * 1e3
        assert row['compute_floor_ms'] == pytest.approx(floor_ms)
        assert row['ratio_to_floor'] == pytest.approx(row['median_ms'] / floor_ms)
    assert rows[('torch', 'fp32')]['parity']['depth_max_abs'] == 0.0
    assert rows[('onnxruntime', 'fp32')]['parity']['depth_rel'] < 1e-4
    assert rows[('onnxruntime', 'fp32')]['accuracy_holds']
    assert result['export_parity']['depth_rel'] < 1e-4
    assert 'TensorRT' in result['skipped']['tensorrt']


def test_bench_engines_measures_the_machine_in_the_same_run():
    results = bench.bench_engines(
        ['depthclip'],
        ['onnxruntime'],
        warmup=0,
        iters=2,
        variants=False,
        model_overrides={'depthclip': TINY['depthclip']},
        matmul_n=128,
        matmul_seconds=0.02,
    )
    machine = results['machine']
    assert set(machine['matmul_tflops']) >= {'fp32', 'bf16'}
    assert all(v > 0 for v in machine['matmul_tflops'].values())
    assert machine['logical_cores'] >= 1
    rows = results['models']['depthclip']['rows']
    assert [(r['backend'], r['precision']) for r in rows] == [('onnxruntime', 'fp32')]
    assert math.isfinite(rows[0]['ratio_to_floor'])
    text = bench.format_results(results)
    assert 'measured matmul: fp32' in text and 'depthclip' in text and 'x floor' in text


def test_depth_agreement_and_the_accuracy_bar():
    ref = np.full((1, 1, 4, 4), 2.0, np.float32)
    same = depth_agreement(ref, ref)
    assert same == {'mean_rel_err': 0.0, 'max_rel_err': 0.0, 'delta1_agreement': 1.0}
    assert accuracy_holds(same)
    far = depth_agreement(ref, ref * 1.3)
    assert far['delta1_agreement'] == 0.0 and not accuracy_holds(far)
    slightly = ref.copy()
    slightly[0, 0, 0, 0] = 2.02  # 1 % on one pixel: mean 1/16 %
    assert accuracy_holds(depth_agreement(ref, slightly))


def test_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match='tflite'):
        bench.bench_model(TinyDepthNet(), backends=['tflite'])
