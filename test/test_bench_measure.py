"""``moa_depth_ros.bench.measure``: the timer, frame timing, memory and the machine."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from moa_depth_ros.bench import measure
from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig
from tools.bench import load


def test_time_frames_reports_every_stage_and_the_whole_frame():
    pipeline = DepthPipeline(load.SleepNetwork(2.0, input_hw=(24, 32)), PipelineConfig())
    msg = measure.rgb8_message(measure.synthetic_rgb(160, 120))
    start = time.perf_counter()
    result = measure.time_frames(
        pipeline, msg, measure.synthetic_camera(160, 120), frames=10, warmup=1
    )
    elapsed_s = time.perf_counter() - start
    assert set(result['stages']) == set(measure.STAGES)
    assert result['stages']['network']['median_ms'] >= 2.0
    assert (
        result['stages']['cloud']['median_ms'] > 0
        and result['stages']['serialize']['median_ms'] > 0
    )
    stage_sum = sum(s['median_ms'] for s in result['stages'].values())
    assert result['total']['median_ms'] >= 0.9 * stage_sum
    assert 10 / elapsed_s < result['fps'] <= 1e3 / 2.0
    # depth + confidence (float32) and the organized xyz+rgb cloud (16 bytes per point)
    # depth + confidence (32FC1) + an organized rgb cloud, plus headers and the CameraInfo
    payload = 160 * 120 * (4 + 4 + 16)
    assert payload < result['output_bytes'] < payload + 2048


def test_peak_rss_is_this_process_and_at_least_the_current_rss():
    before = measure.peak_rss_mib()
    block = np.ones(64 << 20, dtype=np.uint8)  # touch 64 MiB
    assert measure.peak_rss_mib() >= measure.current_rss_mib() > 0
    assert measure.peak_rss_mib() >= before
    del block


def test_time_frames_declines_a_run_that_would_exceed_its_time_limit():
    pipeline = DepthPipeline(load.SleepNetwork(5.0, input_hw=(24, 32)), PipelineConfig())
    msg = measure.rgb8_message(measure.synthetic_rgb(64, 48))
    start = time.perf_counter()
    result = measure.time_frames(
        pipeline, msg, measure.synthetic_camera(64, 48), frames=10_000, warmup=3, max_seconds=1.0
    )
    assert result['over_budget'] and result['warmup_frame_ms'] >= 5.0
    assert time.perf_counter() - start < 1.0  # it stopped after the warm-up


def test_time_call_runs_warmup_then_at_least_iters_and_fills_min_seconds():
    calls = []
    timing = measure.time_call(lambda: calls.append(time.sleep(0.001)), warmup=2, iters=5)
    assert len(calls) == 7 and timing['iters'] == 5
    assert 1.0 <= timing['min_ms'] <= timing['median_ms'] <= timing['p90_ms'] <= timing['max_ms']
    assert timing['throughput_fps'] == pytest.approx(1e3 / timing['mean_ms'])
    filled = measure.time_call(lambda: time.sleep(0.002), warmup=0, iters=1, min_seconds=0.05)
    assert filled['iters'] >= 10
    with pytest.raises(ConfigError, match='iters >= 1'):
        measure.time_call(lambda: None, iters=0)
    with pytest.raises(ConfigError, match='no durations'):
        measure.stats_ms([])


def test_copy_floor_reads_and_writes_every_byte():
    small, large = measure.copy_ms(1 << 16, iters=5), measure.copy_ms(64 << 20, iters=3)
    assert 0 < small['median_ms'] < large['median_ms']
    with pytest.raises(ConfigError, match='nbytes'):
        measure.copy_ms(0)


def test_the_machine_is_described_without_loading_a_gpu_runtime():
    code = (
        'import sys, json; from moa_depth_ros.bench import measure; '
        'm = measure.machine_description(); '
        "print(json.dumps([m, 'torch' in sys.modules]))"
    )
    import json
    import subprocess

    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    machine, torch_loaded = json.loads(out.stdout)
    assert not torch_loaded
    assert machine['cores_available'] >= 1 and machine['ram_gib'] > 0 and machine['cpu']
    assert machine['gpu'] and machine['versions']['numpy'] == np.__version__
    assert machine['versions']['moa_depth_ros'] and machine['date_utc'].endswith('UTC')


def test_moa_depth_bench_times_a_model_file_as_the_node_runs_it(tmp_path, capsys):
    import json

    from tiny_model import write_tiny_onnx

    from moa_depth_ros import cli

    model = write_tiny_onnx(tmp_path / 'tiny.onnx')
    out = tmp_path / 'bench.json'
    args = ['bench', model, '--frames', '5', '--warmup', '1', '--width', '64', '--height', '48']
    assert cli.main([*args, '--backend', 'onnxruntime', '--json', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'tiny_test_model via onnxruntime' in text and 'frames/s' in text
    for stage in measure.STAGES:
        assert f'  {stage} ' in text
    results = json.loads(out.read_text())
    frames = results['frames']
    assert frames['frames'] == 5 and frames['backend'] == 'onnxruntime'
    assert frames['device'] == 'cpu' and frames['peak_rss_mib'] > 0
    assert set(frames['stages']) == set(measure.STAGES) and 'live' not in results
    assert 'compared' not in results and 'side by side' not in text
    assert results['machine']['cores_available'] >= 1


@pytest.mark.openvino
def test_moa_depth_bench_times_other_backends_and_peers_beside_the_model(tmp_path, capsys):
    import json

    from tiny_model import write_tiny_onnx

    from moa_depth_ros import cli

    model = write_tiny_onnx(tmp_path / 'tiny.onnx')
    peer = write_tiny_onnx(tmp_path / 'peer.onnx', model_name='tiny_peer')
    out = tmp_path / 'bench.json'
    args = ['bench', model, '--backend', 'onnxruntime', '--compare', 'openvino']
    args += ['--peer', peer, '--frames', '4', '--warmup', '1', '--width', '64', '--height', '48']
    assert cli.main([*args, '--json', str(out)]) == 0
    text = capsys.readouterr().out
    table = text[text.index('side by side') :].splitlines()[2:]
    rows = [line.split() for line in table if line.startswith('  ')]
    # The first row is the reference (ratio 1.00); then the other backend, then the peer
    # on both backends, each with its network and frame ratios to the first row.
    assert [row[:2] for row in rows] == [
        ['tiny_test_model', 'onnxruntime'],
        ['tiny_test_model', 'openvino'],
        ['tiny_peer', 'onnxruntime'],
        ['tiny_peer', 'openvino'],
    ]
    assert rows[0][2] == 'fp32' and rows[1][2] in ('fp32', 'bf16', 'fp16')
    assert rows[0][4] == rows[0][6] == '1.00'
    compared = json.loads(out.read_text())['compared']
    assert [(c['model_name'], c['backend']) for c in compared] == [
        (row[0], row[1]) for row in rows[1:]
    ]
    first = json.loads(out.read_text())['frames']['stages']['network']['median_ms']
    for row, run in zip(rows[1:], compared):
        net = run['stages']['network']['median_ms']
        assert float(row[4]) == pytest.approx(net / first, abs=0.006)
        assert row[2] == run['precision']


def test_moa_depth_bench_refuses_bad_counts_and_missing_files(tmp_path, capsys):
    from moa_depth_ros import cli

    assert cli.main(['bench', str(tmp_path / 'none.onnx'), '--frames', '0']) == 2
    assert '--frames >= 1' in capsys.readouterr().err
    assert cli.main(['bench', str(tmp_path / 'none.onnx')]) == 2
    assert 'does not exist' in capsys.readouterr().err
