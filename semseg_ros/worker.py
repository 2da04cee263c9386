"""Inference worker thread: latest-frame or every-frame scheduling (no ROS types here).

Latest-frame mode keeps one slot: a new frame replaces a waiting one (the replaced frame is counted
as dropped), and a frame is taken out of the slot before it is processed, so it is never run twice.
Latency therefore stays bounded by about two inference times however fast the camera is.

Every-frame mode keeps a bounded FIFO of ``queue_size`` frames, processed in order. ``submit`` never
blocks: when the FIFO is full the new frame is refused and counted (``dropped_queue_full``). Blocking the
caller instead looks like back-pressure but is not: the caller is the node's one executor thread, and while
it waits the middleware's subscription history (a few messages) overflows and discards frames that nobody
can count. A publisher that wants every frame processed paces itself by the outputs (``semseg-replay``
waits for each answer) or keeps at most ``queue_size`` frames in flight.
"""
from __future__ import annotations

import collections
import threading
import traceback
from typing import Any, Callable, Optional


class FrameWorker:
    def __init__(self, process: Callable[[Any], None], every_frame: bool = False, queue_size: int = 30,
                 on_error: Optional[Callable[[BaseException, str], None]] = None,
                 on_start: Optional[Callable[[], None]] = None, name: str = "semseg-inference"):
        self._process = process
        self._every_frame = bool(every_frame)
        self._queue_size = max(1, int(queue_size))
        self._on_error = on_error
        self._on_start = on_start
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.submitted = 0
        self.processed = 0
        self.dropped = 0             # all frames not processed: replaced (latest-frame) or refused (FIFO full)
        self.dropped_queue_full = 0  # every-frame mode: refused because the FIFO was full
        self.discarded_at_stop = 0   # queued when stop() was called
        self.failed = 0

    @property
    def every_frame(self) -> bool:
        return self._every_frame

    @property
    def queue_size(self) -> int:
        return self._queue_size

    def start(self) -> FrameWorker:
        self._thread.start()
        return self

    def submit(self, frame: Any) -> bool:
        """Hand a frame to the worker without waiting; False if it (or a waiting older one) was dropped."""
        with self._cond:
            if self._stopping:
                return False
            self.submitted += 1
            if not self._every_frame:
                replaced = bool(self._queue)
                if replaced:
                    self._queue.clear()
                    self.dropped += 1
                self._queue.append(frame)
                self._cond.notify_all()
                return not replaced
            if len(self._queue) >= self._queue_size:
                self.dropped += 1
                self.dropped_queue_full += 1
                return False
            self._queue.append(frame)
            self._cond.notify_all()
            return True

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until every submitted frame has been processed (or dropped)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the frame in progress; frames still queued are discarded, counted in ``dropped`` and
        ``discarded_at_stop``."""
        with self._cond:
            self._stopping = True
            self.discarded_at_stop += len(self._queue)
            self.dropped += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception as error:  # a failed set-up (thread count) is reported, frames still run
                self._report(error)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._queue)
                if self._stopping:
                    return
                frame = self._queue.popleft()
                self._busy = True
                self._cond.notify_all()  # wakes wait_idle
            try:
                self._process(frame)
                ok = True
            except Exception as error:  # keep serving frames; report and count the failure
                ok = False
                self._report(error)
            with self._cond:
                self._busy = False
                if ok:
                    self.processed += 1
                else:
                    self.failed += 1
                self._cond.notify_all()

    def _report(self, error: BaseException) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(error, traceback.format_exc())
        except Exception:  # the reporter itself failing must not end the worker
            traceback.print_exc()
