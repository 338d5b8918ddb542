"""The node's latest-frame worker under load (no ROS): drops, latency, flat memory."""

from __future__ import annotations

import pytest

from moa_depth_ros.errors import ConfigError
from tools.bench import load

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


@pytest.mark.parametrize('frames_in_flight', [1, 2])
def test_one_or_two_frames_in_flight_deliver_or_count_every_frame(frames_in_flight):
    r = load.run_load_test(
        load.SleepNetwork(5.0, input_hw=(24, 32)),
        frames=30,
        rate_hz=400.0,
        width=64,
        height=48,
        rss_every=10,
        warmup=1,
        frames_in_flight=frames_in_flight,
    )
    assert r['frames_in_flight'] == frames_in_flight and r['drained'] and r['failed'] == 0
    assert r['delivered'] + r['dropped'] == r['submitted'] == 30
    assert r['network']['min_ms'] >= 5.0 * 0.95  # the network half ran on every delivered frame
    with pytest.raises(ConfigError, match='frames_in_flight'):
        load.run_load_test(load.SleepNetwork(1.0), frames=1, frames_in_flight=3)


def test_run_spec_with_a_sleep_network_names_it():
    result = load.run_spec(
        {'network': 'sleep', 'network_ms': 5, 'frames': 10, 'rate_hz': 400, 'width': 64,
         'height': 48, 'rss_every': 5}
    )  # fmt: skip
    assert result['network_kind'] == 'sleep' and '5 ms' in result['network_description']
    assert result['delivered'] >= 1
    with pytest.raises(ConfigError, match='sleep'):
        load.run_spec({'network': 'magic', 'frames': 1})
