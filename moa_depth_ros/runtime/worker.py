"""The latest-frame worker: an inference thread that never builds a backlog.

A camera delivers frames faster than a CPU can run the network, and a queue of old frames
only adds latency. The worker therefore has a one-slot mailbox: ``submit`` puts a frame
there, replacing (and counting as dropped) a frame that is still waiting. The thread takes
the newest frame, runs ``process`` on it, and goes back to wait. An optional rate limit
spaces the starts of consecutive frames; frames arriving meanwhile replace each other.

With ``finish`` the work of a frame is split in two stages: ``process`` (decode, network),
then ``finish`` on what it returned (outputs, publishing). With ``frames_in_flight=1`` both
run in series on the one thread; with ``frames_in_flight=2`` ``finish`` runs on a second
thread while the inference thread already runs the network on the next frame. At most one
result waits between the stages, and the inference thread starts a frame only once none
waits: a slow ``finish`` holds the network back instead of queueing results (newer frames
keep replacing each other in the mailbox meanwhile), and results are finished in the order
they were made.

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
from typing import Any, Callable, Generic, Protocol, TypeVar

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
    processed: int = 0  # through both stages, with ``finish``
    dropped: int = 0  # replaced in the mailbox by a newer frame
    failed: int = 0  # either stage raised
    # Frames discarded by stop() (or when a thread ended) are in none of these, and frames
    # offered after that are not counted as submitted.
    last_error: str = ''
    stopped: str = ''  # why the thread ended unexpectedly ('' while it runs or after stop())


class LatestFrameWorker(Generic[FrameT]):
    """A thread that processes only the newest submitted frame.

    ``process(frame)`` runs on the worker thread; with ``finish``, ``finish(result)`` runs
    on what ``process`` returned, after it on the same thread (``frames_in_flight`` 1) or on a
    second thread (2; see the module doc). ``log`` receives
    one line per skipped or failed frame (at most one per ``log_throttle_s`` per call site
    and exception type). ``clock`` is a monotonic clock in seconds (replaceable in tests).
    """

    def __init__(
        self,
        process: Callable[[FrameT], object],
        *,
        log: Log,
        finish: Callable[[Any], object] | None = None,
        frames_in_flight: int = 1,
        max_rate_hz: float = 0.0,
        name: str = 'moa_depth_worker',
        log_throttle_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if frames_in_flight not in (1, 2) or (frames_in_flight == 2 and finish is None):
            raise ConfigError(
                f'frames_in_flight must be 1, or 2 with a finish step; got {frames_in_flight!r}'
            )
        self._process = process
        self._finish = finish
        self._frames_in_flight = frames_in_flight
        self._log = log
        self._name = name
        self._log_throttle_s = float(log_throttle_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._slot: list[FrameT] = []  # zero or one frame waiting
        self._stopping = False
        self._busy = False  # a frame is in ``process`` (and in series ``finish``)
        self._handoff: list[Any] = []  # zero or one result between process and finish
        self._finishing = False
        self._thread: threading.Thread | None = None
        self._finisher: threading.Thread | None = None
        self._stats = WorkerStats()
        self._min_interval_s = 0.0
        self._last_start_s: float | None = None
        # (call site, exception type) -> (last time logged, occurrences suppressed since)
        self._log_state: dict[tuple[str, str], tuple[float, int]] = {}
        self._log_lock = threading.Lock()  # both threads log
        self.set_max_rate(max_rate_hz)

    # -- control ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (once)."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError(f'worker {self._name!r} was already started')
            self._thread = threading.Thread(
                target=self._run,
                args=(self._loop, 'inference thread'),
                name=self._name,
                daemon=True,
            )
            self._thread.start()
            if self._frames_in_flight == 2:
                self._finisher = threading.Thread(
                    target=self._run,
                    args=(self._finish_loop, 'output thread'),
                    name=f'{self._name}_outputs',
                    daemon=True,
                )
                self._finisher.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Drop any waiting frame or result, stop the threads and join them.

        Returns False when the frame in progress did not finish within ``timeout_s`` (the
        daemon threads are then abandoned rather than blocking shutdown).
        """
        with self._cond:
            self._stopping = True
            self._slot.clear()
            self._handoff.clear()
            self._cond.notify_all()
            # A thread that failed to start (start() raised) has nothing to join.
            threads = [t for t in (self._thread, self._finisher) if t is not None and t.ident]
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

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
        """True while the thread (both threads, with ``finish``) runs."""
        threads = [self._thread, self._finisher][: self._frames_in_flight]
        return all(t is not None and t.is_alive() for t in threads)

    @property
    def frames_in_flight(self) -> int:
        """How many frames can be between the mailbox and their end (1 or 2)."""
        return self._frames_in_flight

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Block until no frame waits and none is in progress (for tests and tools)."""
        # Real time, not ``clock``: a test's frozen clock must not make this wait forever.
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._slot or self._busy or self._handoff or self._finishing:
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
                # With two stages a frame starts only once no result waits for ``finish``:
                # a slow finish holds the network back rather than queueing results.
                if self._slot and not self._handoff:
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

    def _run(self, loop: Callable[[], None], what: str) -> None:
        try:
            loop()
        except BaseException as e:  # a thread must never end without saying why
            reason = f'{type(e).__name__}: {e}'
            with self._cond:
                # Its own flag only: the other thread may still be in its stage.
                if loop == self._loop:
                    self._busy = False
                else:
                    self._finishing = False
                # The other thread ends too: a frame neither thread can finish is no output.
                self._stopping = True
                self._slot.clear()
                self._handoff.clear()
                self._stats = dataclasses.replace(self._stats, stopped=reason)
                self._cond.notify_all()
            self._log_error(
                f'the {what} stopped: {reason}; no more depth until the node restarts'
                f'\n{traceback.format_exc()}'
            )

    def _guarded(self, step: Callable[[Any], object], item: Any) -> tuple[object, str]:
        """Run one stage on one frame: (its result, '') or (None, why it failed), logged."""
        try:
            return step(item), ''
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
        return None, error

    def _count(self, error: str) -> None:
        """Count a frame's end (the lock is held)."""
        if error:
            self._stats = dataclasses.replace(
                self._stats, failed=self._stats.failed + 1, last_error=error
            )
        else:
            self._stats = dataclasses.replace(self._stats, processed=self._stats.processed + 1)

    def _loop(self) -> None:
        while True:
            ok, frame = self._next_frame()
            if not ok:
                return
            result, error = self._guarded(self._process, frame)
            if not error and self._finish is not None and self._frames_in_flight == 1:
                _, error = self._guarded(self._finish, result)
            with self._cond:
                self._busy = False
                if error or self._frames_in_flight == 1:
                    self._count(error)
                elif not self._stopping:
                    self._handoff.append(result)  # it was empty: see _next_frame
                self._cond.notify_all()

    def _finish_loop(self) -> None:
        finish = self._finish
        assert finish is not None
        while True:
            with self._cond:
                while not self._handoff and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                result = self._handoff.pop()
                self._finishing = True
                self._cond.notify_all()
            _, error = self._guarded(finish, result)
            with self._cond:
                self._finishing = False
                self._count(error)
                self._cond.notify_all()

    def _throttle(self, kind: tuple[str, str]) -> str | None:
        """None to stay quiet, else a suffix (possibly empty) counting what was held back.

        Keyed by call site and exception type, never by the message: a message carries
        per-frame values (byte counts, sizes), and a key per text would grow without bound.
        """
        if self._stopping:
            return None  # a frame cut short by shutdown (publishers gone) is not worth a log
        now = self._clock()
        with self._log_lock:
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
