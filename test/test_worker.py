"""The latest-frame worker: newest frame wins, drops are counted, failures cost one frame."""

from __future__ import annotations

import threading
import time

import pytest

from moa_depth_ros.errors import ConfigError, InvalidImageError
from moa_depth_ros.runtime.worker import LatestFrameWorker


class RecordingLog:
    def __init__(self):
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def warning(self, message):
        self.warnings.append(message)

    def error(self, message):
        self.errors.append(message)


class Gate:
    """A process callback that blocks on the first frame until released."""

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.frames: list[object] = []

    def __call__(self, frame):
        self.started.set()
        self.release.wait(5.0)
        self.frames.append(frame)


@pytest.fixture
def stop_after():
    workers = []
    yield workers.append
    for worker in workers:
        worker.stop(1.0)


def test_frames_arriving_while_busy_replace_each_other_and_count_as_drops(stop_after):
    gate = Gate()
    worker = LatestFrameWorker(gate, log=RecordingLog())
    stop_after(worker)
    worker.start()
    assert worker.submit('f0') is False
    assert gate.started.wait(5.0)  # f0 is being processed: the slot is empty again
    assert worker.submit('f1') is False
    assert worker.submit('f2') is True
    assert worker.submit('f3') is True
    gate.release.set()
    assert worker.wait_idle(5.0)
    assert gate.frames == ['f0', 'f3']
    stats = worker.stats
    assert (stats.submitted, stats.processed, stats.dropped, stats.failed) == (4, 2, 2, 0)


def test_a_failing_frame_is_logged_and_the_worker_keeps_going(stop_after):
    log = RecordingLog()
    done = []

    def process(frame):
        if frame == 'bad-encoding':
            raise InvalidImageError("Image.encoding 'weird' is not supported")
        if frame == 'bug':
            raise ZeroDivisionError('division by zero')
        done.append(frame)

    worker = LatestFrameWorker(process, log=log)
    stop_after(worker)
    worker.start()
    for frame in ('bad-encoding', 'bug', 'good'):
        worker.submit(frame)
        assert worker.wait_idle(5.0)
    assert done == ['good']
    assert log.warnings == [
        "skipped a frame: InvalidImageError: Image.encoding 'weird' is not supported"
    ]
    (error,) = log.errors
    assert 'worker keeps running' in error and 'Traceback' in error
    assert 'ZeroDivisionError' in error
    stats = worker.stats
    assert (stats.processed, stats.failed) == (1, 2)
    assert stats.last_error == 'ZeroDivisionError: division by zero'
    assert worker.is_alive


def test_repeated_failures_are_logged_once_per_period_with_a_count():
    now = [100.0]
    log = RecordingLog()

    def process(frame):
        raise InvalidImageError('step too small')

    worker = LatestFrameWorker(process, log=log, log_throttle_s=5.0, clock=lambda: now[0])
    worker.start()
    try:
        for t in (100.0, 101.0, 102.0, 106.0):
            now[0] = t
            worker.submit(t)
            assert worker.wait_idle(5.0)
    finally:
        worker.stop(1.0)
    assert log.warnings == [
        'skipped a frame: InvalidImageError: step too small',
        'skipped a frame: InvalidImageError: step too small (2 more like this in the last 6 s)',
    ]


def test_max_rate_spaces_frame_starts(stop_after):
    starts: list[float] = []
    worker = LatestFrameWorker(lambda f: starts.append(time.monotonic()), log=RecordingLog())
    worker.set_max_rate(20.0)
    stop_after(worker)
    worker.start()
    for i in range(4):
        worker.submit(i)
        deadline = time.monotonic() + 5.0
        while len(starts) < i + 1:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.04  # 50 ms apart, less scheduling jitter
    worker.set_max_rate(0.0)  # back to unlimited


@pytest.mark.parametrize('rate', [-1.0, float('nan'), float('inf')])
def test_invalid_max_rate_is_refused(rate):
    with pytest.raises(ConfigError, match='max_rate_hz'):
        LatestFrameWorker(lambda f: None, log=RecordingLog(), max_rate_hz=rate)


def test_stop_joins_and_later_frames_are_ignored():
    processed = []
    worker = LatestFrameWorker(processed.append, log=RecordingLog())
    assert worker.stop() is True  # never started: nothing to join
    worker = LatestFrameWorker(processed.append, log=RecordingLog())
    worker.start()
    with pytest.raises(RuntimeError, match='already started'):
        worker.start()
    assert worker.stop(1.0) is True
    assert not worker.is_alive
    assert worker.submit('late') is False
    assert processed == []


def test_stop_gives_up_on_a_frame_that_does_not_finish():
    gate = Gate()
    log = RecordingLog()

    def process(frame):
        gate(frame)
        raise RuntimeError('publisher destroyed')  # what a frame cut short by shutdown meets

    worker = LatestFrameWorker(process, log=log)
    worker.start()
    worker.submit('slow')
    assert gate.started.wait(5.0)
    assert worker.wait_idle(0.05) is False
    assert worker.stop(0.05) is False
    gate.release.set()
    assert worker.stop(5.0) is True
    assert worker.stats.failed == 1 and log.errors == []  # counted, not logged


def test_failures_with_distinct_messages_share_one_throttle_entry_per_kind():
    # The defect: the throttle was keyed by the message, which carries per-frame byte counts,
    # so every corrupt frame of another size logged again and kept an entry for good.
    now = [100.0]
    log = RecordingLog()

    def process(frame):
        if frame % 2:
            raise InvalidImageError(f'{frame} bytes is fewer than step*height')
        raise RuntimeError(f'bug at byte {frame}')

    worker = LatestFrameWorker(process, log=log, log_throttle_s=5.0, clock=lambda: now[0])
    worker.start()
    try:
        for frame in range(200):
            worker.submit(frame)
            assert worker.wait_idle(5.0)
    finally:
        worker.stop(1.0)
    assert len(log.warnings) == 1 and len(log.errors) == 1, (log.warnings, log.errors[:2])
    assert len(worker._log_state) == 2
    assert worker.stats.failed == 200


# -- two stages (finish): the network of one frame overlaps the outputs of the previous --


def test_with_finish_the_next_frame_runs_while_the_previous_one_is_finished(stop_after):
    finishing = Gate()
    processed: list[str] = []
    second_processed = threading.Event()

    def process(frame):
        processed.append(frame)
        if frame == 'f1':
            second_processed.set()
        return f'{frame}-inferred'

    worker = LatestFrameWorker(process, finish=finishing, frames_in_flight=2, log=RecordingLog())
    stop_after(worker)
    assert worker.frames_in_flight == 2
    worker.start()
    worker.submit('f0')
    assert finishing.started.wait(5.0)  # f0's outputs are being made, and held there
    worker.submit('f1')
    # f1 went through the network while f0 was still being finished: two frames in flight.
    assert second_processed.wait(5.0)
    assert not worker.wait_idle(0.05)
    finishing.release.set()
    assert worker.wait_idle(5.0)
    assert finishing.frames == ['f0-inferred', 'f1-inferred']  # in order, none lost
    assert worker.stats.processed == 2 and worker.stats.dropped == 0


def test_a_slow_finish_holds_one_result_and_newer_frames_replace_each_other(stop_after):
    finishing = Gate()
    processed: list[str] = []
    worker = LatestFrameWorker(
        lambda frame: processed.append(frame) or frame,
        finish=finishing,
        frames_in_flight=2,
        log=RecordingLog(),
    )
    stop_after(worker)
    worker.start()
    worker.submit('f0')
    assert finishing.started.wait(5.0)
    worker.submit('f1')  # processed, then its result waits for the finisher
    deadline = time.monotonic() + 5.0
    while processed != ['f0', 'f1'] and time.monotonic() < deadline:
        time.sleep(0.005)
    # No frame starts while a result waits: these replace each other in the mailbox.
    for frame in ('f2', 'f3', 'f4'):
        worker.submit(frame)
    time.sleep(0.05)
    assert processed == ['f0', 'f1']
    finishing.release.set()
    assert worker.wait_idle(5.0)
    assert finishing.frames == ['f0', 'f1', 'f4']
    stats = worker.stats
    assert (stats.submitted, stats.processed, stats.dropped) == (5, 3, 2)


def test_a_frame_failing_in_either_stage_costs_that_frame_only(stop_after):
    log = RecordingLog()
    finished: list[str] = []

    def process(frame):
        if frame == 'bad-network':
            raise InvalidImageError('bad encoding')
        return frame

    def finish(frame):
        if frame == 'bad-outputs':
            raise ValueError('a bug in publishing')
        finished.append(frame)

    worker = LatestFrameWorker(process, finish=finish, frames_in_flight=2, log=log)
    stop_after(worker)
    worker.start()
    for frame in ('bad-network', 'ok-1', 'bad-outputs', 'ok-2'):
        worker.submit(frame)
        assert worker.wait_idle(5.0)
    assert finished == ['ok-1', 'ok-2']
    stats = worker.stats
    assert (stats.processed, stats.failed) == (2, 2)
    assert stats.last_error == 'ValueError: a bug in publishing'
    assert any('bad encoding' in w for w in log.warnings)
    assert any('a bug in publishing' in e for e in log.errors)
    assert worker.is_alive


def test_a_finish_thread_that_dies_says_why_and_stops_the_worker(stop_after):
    class Fatal(BaseException):
        pass

    def finish(frame):
        raise Fatal('interpreter going away')

    log = RecordingLog()
    worker = LatestFrameWorker(lambda frame: frame, finish=finish, frames_in_flight=2, log=log)
    stop_after(worker)
    worker.start()
    worker.submit('f0')
    deadline = time.monotonic() + 5.0
    while not worker.stats.stopped and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.stats.stopped == 'Fatal: interpreter going away'
    assert any('the output thread stopped: Fatal' in e for e in log.errors)
    # The network thread does not wait forever on a handover nobody takes.
    assert worker.submit('f1') is False
    assert worker.stop(5.0)
    assert not worker.is_alive


def test_stop_joins_both_stages_and_drops_a_waiting_result():
    finishing = Gate()
    processed: list[str] = []
    worker = LatestFrameWorker(
        lambda frame: processed.append(frame) or frame,
        finish=finishing,
        frames_in_flight=2,
        log=RecordingLog(),
    )
    worker.start()
    worker.submit('f0')
    assert finishing.started.wait(5.0)
    worker.submit('f1')
    deadline = time.monotonic() + 5.0
    while processed != ['f0', 'f1'] and time.monotonic() < deadline:
        time.sleep(0.005)  # f1 went through the network and its result waits for the finisher
    assert not worker.stop(0.05)  # f0 is held in finish: stop gives up on it for now
    finishing.release.set()
    assert worker.stop(5.0)
    assert not worker.is_alive
    assert finishing.frames == ['f0']  # the waiting result was dropped, never finished


def test_with_one_frame_in_flight_finish_runs_after_process_on_the_same_thread(stop_after):
    threads: list[tuple[str, str]] = []

    def process(frame):
        if frame == 'bad-network':
            raise InvalidImageError('bad encoding')
        return frame, threading.current_thread().name

    def finish(result):
        frame, process_thread = result
        if frame == 'bad-outputs':
            raise ValueError('a bug in publishing')
        threads.append((process_thread, threading.current_thread().name))

    worker = LatestFrameWorker(process, finish=finish, log=RecordingLog())
    stop_after(worker)
    assert worker.frames_in_flight == 1
    worker.start()
    for frame in ('ok-1', 'bad-network', 'bad-outputs', 'ok-2'):
        worker.submit(frame)
        assert worker.wait_idle(5.0)
    assert len(threads) == 2 and all(a == b for a, b in threads)
    stats = worker.stats
    assert (stats.processed, stats.failed) == (2, 2)  # each failing frame counted once


@pytest.mark.parametrize(('finish', 'frames_in_flight'), [(None, 2), (print, 3), (print, 0)])
def test_two_frames_in_flight_need_a_finish_step(finish, frames_in_flight):
    with pytest.raises(ConfigError, match='frames_in_flight must be 1, or 2 with a finish'):
        LatestFrameWorker(
            lambda frame: frame,
            finish=finish,
            frames_in_flight=frames_in_flight,
            log=RecordingLog(),
        )
