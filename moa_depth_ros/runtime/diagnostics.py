"""Rate and latency statistics for /diagnostics (and the bag tool's summary).

What an integrator wants to see on ``rqt_runtime_monitor`` or Foxglove: how fast images come
in, how fast depth goes out, where the time goes (decode, preprocess, network, postprocess,
cloud, publish), how many frames were dropped because inference was busy, how many failed,
and which backend runs the network. The node turns ``DiagnosticsSnapshot`` into a
``diagnostic_msgs/DiagnosticStatus``; nothing here imports ROS.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Callable, Deque, Mapping

# Transport loss is judged over this window: /diagnostics is OK again this long after a
# lossy moment ends (plus one diagnostics period).
LOSS_WINDOW_S = 3.0
# Levels, mapped by the node onto DiagnosticStatus.OK / WARN / ERROR / STALE.
OK = 'ok'
WARN = 'warn'
ERROR = 'error'
STALE = 'stale'


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._window_s = float(window_s)
        self._clock = clock
        self._times: Deque[float] = collections.deque()
        self._last: float | None = None
        self.count = 0

    def tick(self) -> None:
        """Record one event now."""
        now = self._clock()
        self._times.append(now)
        self._last = now
        self.count += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()

    def in_window(self) -> int:
        """Events in the window."""
        self._trim(self._clock())
        return len(self._times)

    def rate_hz(self) -> float:
        """Events per second in the window (0 with fewer than two events)."""
        now = self._clock()
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span_s = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span_s if span_s > 0.0 else 0.0

    def seconds_since_last(self) -> float:
        """Seconds since the last event (inf if none)."""
        # Not from the window: an event that left it still happened.
        return math.inf if self._last is None else self._clock() - self._last


class WindowedCount:
    """A total and the part of it counted within a sliding time window."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.window_s = float(window_s)
        self._clock = clock
        self._events: Deque[tuple[float, int]] = collections.deque()
        self.total = 0

    def add(self, count: int = 1) -> None:
        now = self._clock()
        self._events.append((now, count))
        self.total += count
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()

    def in_window(self) -> int:
        self._trim(self._clock())
        return sum(count for _, count in self._events)


class LatencyStats:
    """Per-stage latency in milliseconds over the last ``window`` frames."""

    def __init__(self, window: int = 100) -> None:
        self._window = int(window)
        self._samples: dict[str, Deque[float]] = {}

    def add(self, timings_ms: Mapping[str, float]) -> None:
        """Record one frame's stage timings (stage -> ms)."""
        total = 0.0
        for stage, ms in timings_ms.items():
            self._samples.setdefault(stage, collections.deque(maxlen=self._window)).append(ms)
            total += ms
        self._samples.setdefault('total', collections.deque(maxlen=self._window)).append(total)

    def summary(self) -> dict[str, tuple[float, float]]:
        """Stage -> (mean ms, max ms) over the window; 'total' sums the stages."""
        return {
            stage: (sum(values) / len(values), max(values))
            for stage, values in self._samples.items()
            if values
        }


@dataclasses.dataclass(frozen=True)
class DiagnosticsSnapshot:
    """One diagnostic status: a level, a one-line message, and key/value pairs."""

    level: str
    message: str
    values: list[tuple[str, str]]


class NodeStatistics:
    """Everything /diagnostics reports, updated from the subscription and worker threads."""

    def __init__(
        self,
        *,
        backend: str,
        model: str,
        window_s: float = 5.0,
        stale_after_s: float = 5.0,
        loss_window_s: float = LOSS_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.model = model
        self._stale_after_s = float(stale_after_s)
        self._lock = threading.Lock()
        self._input = RateMeter(window_s, clock)
        # Loss is judged over its own, shorter window: a lossy moment (a camera matched
        # best effort for a moment) must not keep the status at WARN long after.
        self._loss_inputs = RateMeter(loss_window_s, clock)
        self._lost = WindowedCount(loss_window_s, clock)
        self._idle = 0
        self._output = RateMeter(window_s, clock)
        self._latency = LatencyStats()
        self._camera_info = False
        self.notes: dict[str, str] = {}

    def input_frame(self) -> None:
        """Count an arriving image."""
        with self._lock:
            self._input.tick()
            self._loss_inputs.tick()

    def idle_frame(self) -> None:
        """Count an image left unprocessed because no output has a subscriber."""
        with self._lock:
            self._idle += 1

    def frames_lost(self, count: int) -> None:
        """Count images the middleware reported lost before they reached the node."""
        with self._lock:
            self._lost.add(count)

    def output_frame(self, timings_ms: Mapping[str, float]) -> None:
        """Count a published depth image; ``timings_ms`` maps stage -> ms."""
        with self._lock:
            self._output.tick()
            self._latency.add(timings_ms)

    def camera_info_received(self) -> None:
        """Note that a CameraInfo arrived (the cloud becomes possible)."""
        with self._lock:
            self._camera_info = True

    def set_note(self, key: str, value: str) -> None:
        """Report an extra key/value (e.g. why there is no cloud)."""
        with self._lock:
            if value:
                self.notes[key] = value
            else:
                self.notes.pop(key, None)

    def snapshot(
        self,
        *,
        dropped: int,
        failed: int,
        last_error: str = '',
        cloud_enabled: bool = True,
        worker_stopped: str = '',
        loss_reported: bool = True,
        listened: bool = True,
    ) -> DiagnosticsSnapshot:
        """Build the status; drop/failure counters come from the worker.

        ``worker_stopped`` is why the inference thread ended ('' while it runs): an error,
        since no depth comes out any more. ``loss_reported``: whether the middleware reports
        images lost before they reached the node. ``listened``: whether any output has a
        subscriber (without one, frames are counted and not processed).
        """
        with self._lock:
            in_hz = self._input.rate_hz()
            out_hz = self._output.rate_hz()
            since_input_s = self._input.seconds_since_last()
            received = self._input.count
            published = self._output.count
            latency = self._latency.summary()
            camera_info = self._camera_info
            notes = dict(self.notes)
            lost_total = self._lost.total
            lost_recent = self._lost.in_window()
            received_recent = self._loss_inputs.in_window()
            idle = self._idle
        values = [
            ('backend', self.backend),
            ('model', self.model),
            ('input rate (Hz)', f'{in_hz:.2f}'),
            ('output rate (Hz)', f'{out_hz:.2f}'),
            ('frames received', str(received)),
            ('frames published', str(published)),
            ('frames dropped (busy)', str(dropped)),
            ('frames failed', str(failed)),
            (
                'frames lost in transport',
                str(lost_total) if loss_reported else 'not reported by the middleware',
            ),
            ('frames not processed (no subscriber)', str(idle)),
            ('camera_info received', 'yes' if camera_info else 'no'),
        ]
        for stage, (mean_ms, max_ms) in latency.items():
            values.append((f'latency {stage} (ms)', f'mean {mean_ms:.1f}, max {max_ms:.1f}'))
        if last_error:
            values.append(('last error', last_error))
        values.extend(sorted(notes.items()))

        if worker_stopped:
            values.append(('inference thread', f'stopped: {worker_stopped}'))
            level, message = ERROR, f'inference thread stopped: {worker_stopped}'
        elif not listened:
            level, message = (
                OK,
                'idle: no subscriber on any output (image not subscribed, no inference)',
            )
        elif received == 0:
            level, message = STALE, 'no image received yet'
        elif since_input_s > self._stale_after_s:
            level, message = STALE, f'no image for {since_input_s:.1f} s'
        elif published == 0 and failed > 0:
            level, message = ERROR, f'every frame fails: {last_error}'
        elif failed > 0 and out_hz == 0.0:
            level, message = WARN, f'frames failing: {last_error}'
        elif lost_recent > 0.05 * (received_recent + lost_recent):
            share = 100.0 * lost_recent / (received_recent + lost_recent)
            level, message = (
                WARN,
                (
                    f'{share:.0f} % of images lost before reaching the node in the last '
                    f'{self._lost.window_s:g} s (a best-effort subscription to a reliable '
                    f'camera? see input_reliability)'
                ),
            )
        elif cloud_enabled and not camera_info:
            level, message = WARN, f'{out_hz:.1f} Hz depth, no camera_info (no point cloud)'
        else:
            level, message = OK, f'{out_hz:.1f} Hz depth from {in_hz:.1f} Hz images'
        return DiagnosticsSnapshot(level=level, message=message, values=values)
