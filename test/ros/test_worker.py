"""Scheduling of the inference worker: latest-frame and every-frame modes."""
import threading
import time

from semseg_ros.stamp_sync import StampBuffer
from semseg_ros.worker import FrameWorker


class Recorder:
    def __init__(self, delay_s=0.0):
        self.seen = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, frame):
        self.gate.wait(5)
        time.sleep(self.delay_s)
        self.seen.append(frame)


def test_latest_frame_mode_skips_stale_frames_and_never_repeats():
    recorder = Recorder()
    recorder.gate.clear()                  # hold the worker on frame 0
    worker = FrameWorker(recorder).start()
    worker.submit(0)
    deadline = time.monotonic() + 5
    while worker.pending() != 1 or worker._queue:  # frame 0 taken, nothing waiting
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for frame in range(1, 6):
        worker.submit(frame)
    recorder.gate.set()
    assert worker.wait_idle(5)
    worker.stop()
    assert recorder.seen == [0, 5]
    assert worker.dropped == 4 and worker.processed == 2 and worker.submitted == 6


def test_every_frame_mode_processes_all_in_order_when_the_queue_has_room():
    recorder = Recorder(delay_s=0.002)
    worker = FrameWorker(recorder, every_frame=True, queue_size=3).start()
    for frame in range(40):
        while worker.pending() >= 3:       # a publisher pacing itself by the queue
            time.sleep(0.001)
        assert worker.submit(frame)
    assert worker.wait_idle(10)
    worker.stop()
    assert recorder.seen == list(range(40)) and worker.dropped == 0


def test_every_frame_mode_never_blocks_and_counts_what_the_full_queue_refuses():
    recorder = Recorder()
    recorder.gate.clear()                  # the model is stuck on frame 0
    worker = FrameWorker(recorder, every_frame=True, queue_size=3).start()
    worker.submit(0)
    deadline = time.monotonic() + 5
    while worker._queue:                   # frame 0 taken
        assert time.monotonic() < deadline
        time.sleep(0.001)
    started = time.monotonic()
    accepted = [worker.submit(frame) for frame in range(1, 11)]
    assert time.monotonic() - started < 1.0, "submit must not wait for the model"
    assert accepted == [True] * 3 + [False] * 7
    assert worker.dropped == 7 and worker.dropped_queue_full == 7
    recorder.gate.set()
    assert worker.wait_idle(5)
    worker.stop()
    assert recorder.seen == [0, 1, 2, 3]
    assert worker.submitted == worker.processed + worker.dropped == 11


def test_frames_queued_at_stop_are_counted():
    recorder = Recorder()
    recorder.gate.clear()
    worker = FrameWorker(recorder, every_frame=True, queue_size=5).start()
    for frame in range(4):
        worker.submit(frame)
    deadline = time.monotonic() + 5
    while len(worker._queue) != 3:         # frame 0 in the model, 1..3 waiting
        assert time.monotonic() < deadline
        time.sleep(0.001)
    threading.Timer(0.2, recorder.gate.set).start()  # frame 0 finishes while stop() waits for it
    assert worker.stop(5)
    assert worker.discarded_at_stop == 3 and worker.dropped == 3 and recorder.seen == [0]


def test_a_failing_frame_is_reported_and_the_worker_goes_on():
    errors, seen = [], []

    def process(frame):
        if frame == 1:
            raise ValueError("bad frame")
        seen.append(frame)

    worker = FrameWorker(process, every_frame=True, on_error=lambda e, tb: errors.append(e)).start()
    for frame in range(3):
        worker.submit(frame)
    assert worker.wait_idle(5)
    worker.stop()
    assert seen == [0, 2] and worker.failed == 1 and str(errors[0]) == "bad frame"


def test_stop_joins_the_thread():
    worker = FrameWorker(Recorder()).start()
    assert worker.stop(5)
    assert not worker.submit(1)


def test_stamp_buffer_matches_within_tolerance():
    buffer = StampBuffer(capacity=3)
    for stamp in (300, 100, 200, 400):     # out of order; capacity drops the oldest (100)
        buffer.add(stamp, f"m{stamp}")
    assert len(buffer) == 3
    assert buffer.closest(210, 20) == "m200"
    assert buffer.closest(260, 20) is None
    assert buffer.closest(100, 5) is None
    assert buffer.closest(390, 50) == "m400"
    assert buffer.latest() == "m400"
