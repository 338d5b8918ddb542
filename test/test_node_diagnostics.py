"""What /diagnostics tells an integrator: rates, latency per stage, drops, and the status level."""

from __future__ import annotations

import pytest

from moa_depth_ros.runtime import diagnostics


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def test_rate_meter_counts_events_per_second_in_a_sliding_window():
    clock = Clock()
    meter = diagnostics.RateMeter(window_s=2.0, clock=clock)
    assert meter.rate_hz() == 0.0 and meter.seconds_since_last() == float('inf')
    meter.tick()
    assert meter.rate_hz() == 0.0  # one event is no rate
    for _ in range(10):
        clock.t += 0.1
        meter.tick()
    assert meter.rate_hz() == pytest.approx(10.0)
    clock.t += 0.5
    assert meter.seconds_since_last() == pytest.approx(0.5)
    clock.t += 5.0  # everything left the window
    assert meter.rate_hz() == 0.0
    assert meter.seconds_since_last() == pytest.approx(5.5)  # but it did happen
    assert meter.count == 11
    same_time = diagnostics.RateMeter(clock=Clock(3.0))
    same_time.tick()
    same_time.tick()
    assert same_time.rate_hz() == 0.0


def test_latency_stats_keep_mean_and_max_per_stage_and_a_total():
    stats = diagnostics.LatencyStats(window=2)
    stats.add({'decode': 1.0, 'network': 10.0})
    stats.add({'decode': 3.0, 'network': 30.0})
    stats.add({'decode': 5.0, 'network': 20.0})  # the first frame leaves the window
    summary = stats.summary()
    assert summary['decode'] == (4.0, 5.0)
    assert summary['network'] == (25.0, 30.0)
    assert summary['total'] == (29.0, 33.0)


def _stats(clock):
    return diagnostics.NodeStatistics(
        backend='onnxruntime', model='tiny', stale_after_s=2.0, clock=clock
    )


def test_status_levels_follow_what_the_node_is_doing():
    clock = Clock(10.0)
    stats = _stats(clock)
    snap = stats.snapshot(dropped=0, failed=0)
    assert (snap.level, snap.message) == (diagnostics.STALE, 'no image received yet')

    stats.input_frame()
    snap = stats.snapshot(dropped=0, failed=1, last_error='InvalidImageError: bad')
    assert snap.level == diagnostics.ERROR and 'InvalidImageError: bad' in snap.message

    stats.output_frame({'network': 5.0})
    snap = stats.snapshot(dropped=0, failed=1, last_error='x')
    assert snap.level == diagnostics.WARN and snap.message == 'frames failing: x'

    clock.t += 0.1
    stats.input_frame()
    stats.output_frame({'network': 7.0})
    snap = stats.snapshot(dropped=3, failed=0)
    assert snap.level == diagnostics.WARN and 'no camera_info' in snap.message
    assert stats.snapshot(dropped=3, failed=0, cloud_enabled=False).level == diagnostics.OK

    stats.camera_info_received()
    stats.set_note('point cloud', 'waiting')
    stats.set_note('point cloud', '')
    stats.set_note('camera_info problem', 'fx is 0')
    snap = stats.snapshot(dropped=3, failed=0)
    assert snap.level == diagnostics.OK
    assert snap.message == '10.0 Hz depth from 10.0 Hz images'
    values = dict(snap.values)
    assert values['backend'] == 'onnxruntime'
    assert values['frames dropped (busy)'] == '3'
    assert values['latency network (ms)'] == 'mean 6.0, max 7.0'
    assert values['camera_info problem'] == 'fx is 0'
    assert 'point cloud' not in values

    clock.t += 3.0
    snap = stats.snapshot(dropped=3, failed=0)
    assert snap.level == diagnostics.STALE and snap.message == 'no image for 3.0 s'
