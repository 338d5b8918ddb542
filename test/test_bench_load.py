"""The node's latest-frame worker under load (no ROS): drops, latency, flat memory."""

from __future__ import annotations

import time

import numpy as np
import pytest

from moa_depth_ros.bench import e2e, load
from moa_depth_ros.errors import ConfigError
from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig

NETWORK_MS = 20.0


@pytest.fixture(scope='module')
def overloaded():
    """Run a producer at 200 Hz into a 20 ms (50 Hz) network on a small camera."""
    return load.run_load_test(
        load.SleepNetwork(NETWORK_MS, input_hw=(24, 32)),
        frames=80,
        rate_hz=200.0,
        width=160,
        height=120,
        rss_every=20,
        warmup=1,
    )


def test_a_producer_faster_than_the_network_drops_frames_and_counts_add_up(overloaded):
    r = overloaded
    assert r['dropped'] > 0 and r['drained'] and r['failed'] == 0
    assert r['submitted'] == r['frames'] == 80
    assert r['delivered'] + r['dropped'] == r['submitted']
    assert r['drop_ratio'] == pytest.approx(r['dropped'] / 80)
    # The worker cannot deliver faster than its network allows.
    assert r['delivered_hz'] <= 1e3 / NETWORK_MS * 1.05


def test_capture_to_publish_latency_includes_the_network_time(overloaded):
    latency, network = overloaded['latency'], overloaded['network']
    assert network['min_ms'] >= NETWORK_MS * 0.95
    assert latency['min_ms'] >= NETWORK_MS
    assert latency['min_ms'] <= latency['median_ms'] <= latency['p90_ms'] <= latency['max_ms']
    # Only the newest frame waits: latency stays within about two frame times, no backlog.
    assert latency['max_ms'] < 10 * NETWORK_MS


def test_rss_is_sampled_every_n_frames_and_judged_against_the_bound(overloaded):
    samples = overloaded['rss_samples_mib']
    assert [i for i, _ in samples] == [0, 20, 40, 60, 80]
    assert all(v > 0 for _, v in samples)
    growth = samples[-1][1] - samples[0][1]
    assert overloaded['rss_growth_mib'] == pytest.approx(growth, abs=0.01)
    assert overloaded['memory_flat'] == (abs(overloaded['rss_growth_mib']) <= 16.0)


def test_run_spec_with_a_sleep_network_names_it():
    result = load.run_spec(
        {'network': 'sleep', 'network_ms': 5, 'frames': 10, 'rate_hz': 400, 'width': 64,
         'height': 48, 'rss_every': 5}
    )  # fmt: skip
    assert result['network_kind'] == 'sleep' and '5 ms' in result['network_description']
    assert result['delivered'] >= 1
    with pytest.raises(ConfigError, match='sleep'):
        load.run_spec({'network': 'magic', 'frames': 1})


def test_time_frames_reports_every_stage_and_the_whole_frame():
    pipeline = DepthPipeline(load.SleepNetwork(2.0, input_hw=(24, 32)), PipelineConfig())
    msg = e2e.rgb8_message(e2e.synthetic_rgb(160, 120))
    start = time.perf_counter()
    result = e2e.time_frames(pipeline, msg, e2e.synthetic_camera(160, 120), frames=10, warmup=1)
    elapsed_s = time.perf_counter() - start
    assert set(result['stages']) == set(e2e.STAGES)
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
    before = e2e.peak_rss_mib()
    block = np.ones(64 << 20, dtype=np.uint8)  # touch 64 MiB
    assert e2e.peak_rss_mib() >= e2e.current_rss_mib() > 0
    assert e2e.peak_rss_mib() >= before
    del block


def test_time_frames_declines_a_run_that_would_exceed_its_time_limit():
    pipeline = DepthPipeline(load.SleepNetwork(5.0, input_hw=(24, 32)), PipelineConfig())
    msg = e2e.rgb8_message(e2e.synthetic_rgb(64, 48))
    start = time.perf_counter()
    result = e2e.time_frames(
        pipeline, msg, e2e.synthetic_camera(64, 48), frames=10_000, warmup=3, max_seconds=1.0
    )
    assert result['over_budget'] and result['warmup_frame_ms'] >= 5.0
    assert time.perf_counter() - start < 1.0  # it stopped after the warm-up
