"""The latest-frame worker: one inference thread that never builds a backlog.

A camera delivers frames faster than a CPU can run the network, and a queue of old frames
only adds latency. The worker therefore has a one-slot mailbox: ``submit`` puts a frame
there, replacing (and counting as dropped) a frame that is still waiting. The thread takes
the newest frame, runs ``process`` on it, and goes back to wait. An optional rate limit
spaces the starts of consecutive frames; frames arriving meanwhile replace each other.

A frame that fails costs that frame only: a ``MoaDepthError`` (bad encoding, size
mismatch, ...) is logged as a skipped frame with its reason, anything else with its
traceback; the thread keeps running. Logging is throttled per call site and exception type
(not per message text, which carries per-frame numbers), so a camera that sends only bad
frames neither floods the log nor grows the throttle's memory. Should the thread end anyway
(a logger or an interpreter failure), ``stats.stopped`` says why and the node reports it as
an error.

Pure Python (threading); the node, the bag tool and the tests drive it.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import traceback
from typing import Callable, Generic, Protocol, TypeVar

from moa_depth_ros.errors import ConfigError, MoaDepthError

FrameT = TypeVar('FrameT')


class Log(Protocol):
    """What the worker needs from a logger (rclpy's and ``logging``'s both fit)."""

    def warning(self, message: str) -> object: ...

    def error(self, message: str) -> object: ...


@dataclasses.dataclass(frozen=True)
class WorkerStats:
    """Counters since the worker started."""

    submitted: int = 0
    processed: int = 0
    dropped: int = 0
    failed: int = 0
    last_error: str = ''
    stopped: str = ''  # why the thread ended unexpectedly ('' while it runs or after stop())


class LatestFrameWorker(Generic[FrameT]):
    """A thread that processes only the newest submitted frame.

    ``process(frame)`` runs on the worker thread. ``log`` receives one line per skipped or
    failed frame (at most one per ``log_throttle_s`` per call site and exception type).
    ``clock`` is a monotonic clock in seconds (replaceable in tests).
    """

    def __init__(
        self,
        process: Callable[[FrameT], object],
        *,
        log: Log,
        max_rate_hz: float = 0.0,
        name: str = 'moa_depth_worker',
        log_throttle_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process = process
        self._log = log
        self._name = name
        self._log_throttle_s = float(log_throttle_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._slot: list[FrameT] = []  # zero or one frame waiting
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._stats = WorkerStats()
        self._min_interval_s = 0.0
        self._last_start_s: float | None = None
        # (call site, exception type) -> (last time logged, occurrences suppressed since)
        self._log_state: dict[tuple[str, str], tuple[float, int]] = {}
        self.set_max_rate(max_rate_hz)

    # -- control ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (once)."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError(f'worker {self._name!r} was already started')
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Drop any waiting frame, stop the thread and join it.

        Returns False when the frame in progress did not finish within ``timeout_s`` (the
        daemon thread is then abandoned rather than blocking shutdown).
        """
        with self._cond:
            self._stopping = True
            self._slot.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def set_max_rate(self, max_rate_hz: float) -> None:
        """Limit how often frames start (0 = as fast as frames come)."""
        rate = float(max_rate_hz)
        if not rate >= 0.0 or rate == float('inf'):
            raise ConfigError(f'max_rate_hz must be a finite number >= 0, got {max_rate_hz!r}')
        with self._cond:
            self._min_interval_s = 1.0 / rate if rate > 0.0 else 0.0
            self._cond.notify_all()

    def submit(self, frame: FrameT) -> bool:
        """Offer a frame; return True if it replaced a waiting one (that one is dropped)."""
        with self._cond:
            if self._stopping:
                return False
            replaced = bool(self._slot)
            self._slot[:] = [frame]
            self._stats = dataclasses.replace(
                self._stats,
                submitted=self._stats.submitted + 1,
                dropped=self._stats.dropped + int(replaced),
            )
            self._cond.notify_all()
            return replaced

    @property
    def stats(self) -> WorkerStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return self._stats

    @property
    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Block until no frame waits and none is in progress (for tests and tools)."""
        # Real time, not ``clock``: a test's frozen clock must not make this wait forever.
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._slot or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0.0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    # -- thread -------------------------------------------------------------------------

    def _next_frame(self) -> tuple[bool, FrameT | None]:
        """Wait for a frame (and for the rate limit); (False, None) once stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return False, None
                if self._slot:
                    wait_s = 0.0
                    if self._min_interval_s > 0.0 and self._last_start_s is not None:
                        wait_s = self._last_start_s + self._min_interval_s - self._clock()
                    if wait_s <= 0.0:
                        frame = self._slot.pop()
                        self._busy = True
                        self._last_start_s = self._clock()
                        return True, frame
                    # Frames that come while we wait out the rate limit replace this one.
                    self._cond.wait(wait_s)
                else:
                    self._cond.wait()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # the thread must never end without saying why
            reason = f'{type(e).__name__}: {e}'
            with self._cond:
                self._busy = False
                self._stats = dataclasses.replace(self._stats, stopped=reason)
                self._cond.notify_all()
            self._log_error(
                f'the inference thread stopped: {reason}; no more depth until the node restarts'
                f'\n{traceback.format_exc()}'
            )

    def _loop(self) -> None:
        while True:
            ok, frame = self._next_frame()
            if not ok:
                return
            error = ''
            try:
                self._process(frame)  # type: ignore[arg-type]
            except MoaDepthError as e:
                error = f'{type(e).__name__}: {e}'
                suffix = self._throttle(('skipped', type(e).__name__))
                if suffix is not None:
                    self._log_warning(f'skipped a frame: {error}{suffix}')
            except Exception as e:  # a bug must not stop depth output for good
                error = f'{type(e).__name__}: {e}'
                suffix = self._throttle(('unexpected', type(e).__name__))
                if suffix is not None:
                    self._log_error(
                        f'unexpected error while processing a frame (frame skipped, worker keeps '
                        f'running){suffix}:\n{traceback.format_exc()}'
                    )
            with self._cond:
                self._busy = False
                if error:
                    self._stats = dataclasses.replace(
                        self._stats, failed=self._stats.failed + 1, last_error=error
                    )
                else:
                    self._stats = dataclasses.replace(
                        self._stats, processed=self._stats.processed + 1
                    )
                self._cond.notify_all()

    def _throttle(self, kind: tuple[str, str]) -> str | None:
        """None to stay quiet, else a suffix (possibly empty) counting what was held back.

        Keyed by call site and exception type, never by the message: a message carries
        per-frame values (byte counts, sizes), and a key per text would grow without bound.
        """
        if self._stopping:
            return None  # a frame cut short by shutdown (publishers gone) is not worth a log
        now = self._clock()
        last, suppressed = self._log_state.get(kind, (None, 0))
        if last is not None and now - last < self._log_throttle_s:
            self._log_state[kind] = (last, suppressed + 1)
            return None
        self._log_state[kind] = (now, 0)
        if suppressed:
            return f' ({suppressed} more like this in the last {now - last:.0f} s)'
        return ''

    # One call site per severity: rclpy's logger refuses a call site whose severity changes
    # ('Logger severity cannot be changed between calls.'), and a logger that raises must not
    # take the thread with it.

    def _log_warning(self, message: str) -> None:
        try:
            self._log.warning(message)
        except Exception as e:
            _fallback_log('WARNING', message, e)

    def _log_error(self, message: str) -> None:
        try:
            self._log.error(message)
        except Exception as e:
            _fallback_log('ERROR', message, e)


def _fallback_log(severity: str, message: str, error: Exception) -> None:
    """Write a log line to stderr when the logger itself failed."""
    try:
        sys.stderr.write(f'[{severity}] [moa_depth_worker] {message} (logger failed: {error!r})\n')
    except Exception:  # stderr closed at interpreter shutdown: nothing left to tell
        pass
