"""The node's behaviour under load, without ROS: a 60 Hz camera and a slower network.

A producer (this thread) makes a new rgb8 message every 1/rate seconds on an absolute
schedule, stamps it with the capture time and submits it to the node's
``LatestFrameWorker``; the worker runs what the node runs per frame (pipeline with a camera
model, then encoding and serializing the depth, confidence and cloud messages) and records
the publish time. ``frames_in_flight`` is the node's parameter: 2 (its default) runs the
network on one thread and the outputs on another (``DepthPipeline.infer_msg`` / ``finish``),
1 both in series on one thread. Reported: produced and delivered rates, drops (frames replaced
in the one-slot mailbox before the worker took them) as a count and a ratio,
capture-to-publish latency (median, p90, max) and the resident set size sampled every
``rss_every`` produced frames: memory is flat when the last sample minus the first is
within ``rss_bound_mib``.

The network is either a real model file on a backend (the default of ``make bench``)
or ``SleepNetwork``, a calibrated sleep that costs wall time but no CPU (the tests, and a
way to separate the worker's behaviour from this machine's speed). A run can go in a
child process (``python -m tools.bench.load SPEC_JSON``) so its memory is its own.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any, Sequence

import numpy as np

from moa_depth_ros.bench.measure import (
    current_rss_mib,
    peak_rss_mib,
    rgb8_message,
    serialize_outputs,
    synthetic_camera,
    synthetic_rgb,
)
from moa_depth_ros.errors import ConfigError

# Flat memory: the last RSS sample may exceed the first by at most this much. Allocator
# noise (glibc arenas, numpy's cache of freed blocks) stays within a few MiB; a leak of even
# one 640x480 float32 map per frame would add ~12 GiB over 10,000 frames.
DEFAULT_RSS_BOUND_MIB = 16.0


class SleepNetwork:
    """A stand-in estimator whose ``infer`` sleeps ``network_ms`` and returns a depth ramp."""

    def __init__(
        self,
        network_ms: float,
        input_hw: tuple[int, int] = (224, 224),
        range_m: tuple[float, float] = (0.1, 10.0),
    ) -> None:
        if not network_ms >= 0:
            raise ConfigError(f'network_ms must be >= 0, got {network_ms!r}')
        self.network_ms = float(network_ms)
        self.input_hw = tuple(input_hw)
        self.depth_range_m = tuple(range_m)
        h, w = self.input_hw
        rows = np.linspace(0.5, 6.0, h, dtype=np.float32)[:, None]
        self._depth = np.ascontiguousarray(np.broadcast_to(rows, (h, w)))[None, None]
        self._confidence = np.full((1, 1, h, w), 0.8, dtype=np.float32)

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sleep for the network time; a new output each call, as a real engine returns."""
        time.sleep(self.network_ms / 1e3)
        return self._depth.copy(), self._confidence.copy()


@dataclasses.dataclass
class _Frame:
    index: int
    capture_s: float
    msg: Any


def _latency_stats(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    if not latencies_ms:
        return {'median_ms': None, 'p90_ms': None, 'max_ms': None, 'min_ms': None}
    values = np.asarray(latencies_ms, dtype=np.float64)
    return {
        'median_ms': float(np.median(values)),
        'p90_ms': float(np.percentile(values, 90)),
        'max_ms': float(np.max(values)),
        'min_ms': float(np.min(values)),
    }


def run_load_test(
    estimator: Any,
    *,
    frames: int = 10_000,
    rate_hz: float = 60.0,
    width: int = 640,
    height: int = 480,
    rss_every: int = 1000,
    rss_bound_mib: float = DEFAULT_RSS_BOUND_MIB,
    warmup: int = 5,
    drain_timeout_s: float = 60.0,
    frames_in_flight: int = 2,
) -> dict[str, Any]:
    """Feed ``frames`` frames at ``rate_hz`` to a LatestFrameWorker running ``estimator``.

    ``warmup`` frames go through the worker one at a time first, so engine start-up and
    the worker thread's own allocator arena are in place before the producer starts and
    the first RSS sample is taken (start-up is not load behaviour). Returns the counters,
    rates, latency statistics and RSS samples described in the module docstring.
    """
    from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig
    from moa_depth_ros.runtime.worker import LatestFrameWorker

    if frames < 1 or not rate_hz > 0 or rss_every < 1 or warmup < 0:
        raise ConfigError(
            f'need frames >= 1, rate_hz > 0, rss_every >= 1, warmup >= 0; got {frames}, '
            f'{rate_hz}, {rss_every}, {warmup}'
        )
    pipeline = DepthPipeline(estimator, PipelineConfig())
    camera = synthetic_camera(width, height)
    rgb = synthetic_rgb(width, height)

    latencies_ms: list[float] = []
    network_ms: list[float] = []
    process_ms: list[float] = []
    publish_times: list[float] = []

    def infer(frame: _Frame) -> tuple[_Frame, float, Any]:
        return frame, time.monotonic(), pipeline.infer_msg(frame.msg, camera)

    def finish(inferred: tuple[_Frame, float, Any]) -> None:
        frame, start, half = inferred
        result = pipeline.finish(half)
        serialize_outputs(result)
        now = time.monotonic()
        # list.append is atomic under the GIL; the producer only reads after the join.
        latencies_ms.append((now - frame.capture_s) * 1e3)
        network_ms.append(result.timings_ms['network'])
        process_ms.append((now - start) * 1e3)
        publish_times.append(now)

    worker = LatestFrameWorker(
        infer,
        finish=finish,
        frames_in_flight=frames_in_flight,
        log=logging.getLogger('tools.bench.load'),
    )
    worker.start()
    for index in range(warmup):
        worker.submit(_Frame(-1 - index, time.monotonic(), rgb8_message(rgb)))
        worker.wait_idle(drain_timeout_s)
    warmup_done = worker.stats
    for values in (latencies_ms, network_ms, process_ms, publish_times):
        values.clear()
    period_s = 1.0 / rate_hz
    rss_samples: list[tuple[int, float]] = []
    late = 0
    start_s = time.monotonic()
    last_capture_s = start_s
    for index in range(frames):
        due_s = start_s + index * period_s
        wait_s = due_s - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)
        elif wait_s < -period_s:
            late += 1  # the producer itself fell a period behind (a busy machine)
        msg = rgb8_message(rgb)  # a new buffer per frame, as a camera driver publishes
        last_capture_s = time.monotonic()
        worker.submit(_Frame(index, last_capture_s, msg))
        if index % rss_every == 0:
            rss_samples.append((index, current_rss_mib()))
    drained = worker.wait_idle(drain_timeout_s)
    end_s = time.monotonic()
    rss_samples.append((frames, current_rss_mib()))
    worker.stop()
    end_stats = worker.stats
    stats = dataclasses.replace(
        end_stats,
        submitted=end_stats.submitted - warmup_done.submitted,
        processed=end_stats.processed - warmup_done.processed,
        dropped=end_stats.dropped - warmup_done.dropped,
        failed=end_stats.failed - warmup_done.failed,
    )
    delivered = len(publish_times)
    span_s = (publish_times[-1] - start_s) if publish_times else end_s - start_s
    growth = rss_samples[-1][1] - rss_samples[0][1]
    return {
        'frames': int(frames),
        'frames_in_flight': int(frames_in_flight),
        'warmup': int(warmup),
        'rate_hz': float(rate_hz),
        'width': int(width),
        'height': int(height),
        'produced_hz': (frames - 1) / (last_capture_s - start_s) if frames > 1 else None,
        'producer_late': late,
        'submitted': stats.submitted,
        'delivered': delivered,
        'dropped': stats.dropped,
        'failed': stats.failed,
        'drop_ratio': stats.dropped / max(stats.submitted, 1),
        'delivered_hz': delivered / span_s if span_s > 0 else None,
        'drained': drained,
        'latency': _latency_stats(latencies_ms),
        'network': _latency_stats(network_ms),
        'process': _latency_stats(process_ms),
        'rss_every': int(rss_every),
        'rss_samples_mib': [[i, round(v, 2)] for i, v in rss_samples],
        'rss_growth_mib': growth,
        'rss_bound_mib': float(rss_bound_mib),
        'memory_flat': abs(growth) <= rss_bound_mib,
        'peak_rss_mib': peak_rss_mib(),
        'wall_s': end_s - start_s,
    }


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run a load test from a JSON-able spec (the child process entry)."""
    network = spec.get('network', 'sleep')
    if network == 'sleep':
        estimator: Any = SleepNetwork(float(spec['network_ms']))
        description = f'calibrated sleep of {float(spec["network_ms"]):g} ms (no CPU used)'
        close = None
    elif network == 'model':
        from moa_depth_ros.bench.measure import load_pipeline

        estimator, _ = load_pipeline(spec)
        description = f'real model: {estimator.describe()}'
        close = estimator.close
    else:
        raise ConfigError(f'load network must be "sleep" or "model", got {network!r}')
    try:
        result = run_load_test(
            estimator,
            frames=int(spec['frames']),
            rate_hz=float(spec.get('rate_hz', 60.0)),
            width=int(spec.get('width', 640)),
            height=int(spec.get('height', 480)),
            rss_every=int(spec.get('rss_every', 1000)),
            rss_bound_mib=float(spec.get('rss_bound_mib', DEFAULT_RSS_BOUND_MIB)),
            frames_in_flight=int(spec.get('frames_in_flight', 2)),
        )
    finally:
        if close is not None:
            close()
    result['network_kind'] = network
    result['network_description'] = description
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: run the JSON spec in argv[0] and print the result as JSON."""
    from tools.bench.e2e import child_main

    return child_main(run_spec, 'tools.bench.load', argv)


if __name__ == '__main__':
    sys.exit(main())
