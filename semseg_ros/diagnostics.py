"""Runtime statistics of the node, their diagnostic_msgs form, and the node's rate-limited error log."""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Dict, Hashable, Mapping, Optional, Tuple

import numpy as np

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header


def printable(value: Any, limit: int = 64, quote: bool = True) -> str:
    """``value`` for one log line: control and non-ASCII characters escaped, long text cut, quoted.

    Anything a peer on the graph sends (frame_id, encoding, error text built from them) goes through this, so a
    newline cannot forge a log line and a megabyte string cannot flood the log.
    """
    text = value if isinstance(value, str) else str(value)
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    more = f"... ({len(text)} characters)" if len(text) > limit else ""
    return f"'{escaped}'{more}" if quote else escaped + more


class RateLimiter:
    """At most one event per key per ``period_s``: the node logs each class of error (not each distinct text)
    at most once a second, so a stream of varied rejects cannot flood the log while a new kind still shows."""

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._period_s = float(period_s)
        self._clock = clock
        self._last = {}        # key -> time of the last admitted event
        self._held_back = collections.Counter()
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> Optional[int]:
        """None while ``key`` is muted; otherwise the number of its events held back since the last admitted."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period_s:
                self._held_back[key] += 1
                return None
            self._last[key] = now
            return self._held_back.pop(key, 0)


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0):
        self._window_s = window_s
        self._times = collections.deque()
        self._lock = threading.Lock()

    def tick(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], 1e-9)
            return (len(self._times) - 1) / span if span < self._window_s else len(self._times) / span

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()


class NodeStats:
    """Counters and recent latencies shared by the subscription callbacks and the worker."""

    def __init__(self, history: int = 300):
        self._lock = threading.Lock()
        self.input_rate = RateMeter()
        self.processed_rate = RateMeter()
        self._latencies = collections.deque(maxlen=history)
        self._inference = collections.deque(maxlen=history)
        self.counters = collections.Counter()

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def record(self, latency_s: float, inference_s: float) -> None:
        with self._lock:
            self._latencies.append(latency_s)
            self._inference.append(inference_s)

    def latency_percentiles(self) -> Tuple[float, float]:
        """(p50, p95) of stamp-to-publish latency in seconds, or (nan, nan) before any frame."""
        with self._lock:
            values = np.array(self._latencies, dtype=np.float64)
        if values.size == 0:
            return float("nan"), float("nan")
        p50, p95 = np.percentile(values, [50, 95])
        return float(p50), float(p95)

    def mean_inference_s(self) -> float:
        with self._lock:
            return float(np.mean(self._inference)) if self._inference else float("nan")

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counters)


def _ms(seconds: float) -> str:
    return "nan" if seconds != seconds else f"{seconds * 1000.0:.1f}"


def diagnostic_array(stats: NodeStats, stamp: Any, node_name: str, device: str, state: str,
                     extra: Optional[Mapping[str, str]] = None) -> DiagnosticArray:
    """One DiagnosticStatus with the node's rates, counts and latencies."""
    counters = stats.snapshot()
    p50, p95 = stats.latency_percentiles()
    input_rate, processed_rate = stats.input_rate.rate(), stats.processed_rate.rate()
    values = {
        "state": state,
        "device": device,
        "input_rate_hz": f"{input_rate:.2f}",
        "processed_rate_hz": f"{processed_rate:.2f}",
        "frames_received": str(counters.get("received", 0)),
        "frames_processed": str(counters.get("processed", 0)),
        "frames_dropped": str(counters.get("dropped", 0)),
        "frames_rejected": str(counters.get("rejected", 0)),
        "frames_failed": str(counters.get("failed", 0)),
        "frames_dropped_queue_full": str(counters.get("dropped_queue_full", 0)),
        "frames_lost_in_transport": str(counters.get("lost_in_transport", 0)),
        "callback_errors": str(counters.get("callback_errors", 0)),
        "latency_p50_ms": _ms(p50),
        "latency_p95_ms": _ms(p95),
        "inference_ms": _ms(stats.mean_inference_s()),
        "debug_images_rendered": str(counters.get("overlays", 0)),
        "depth_matched": str(counters.get("depth_matched", 0)),
        "depth_unmatched": str(counters.get("depth_unmatched", 0)),
    }
    values.update(extra or {})
    status = DiagnosticStatus(name=f"{node_name}: perception", hardware_id=device)
    if counters.get("failed", 0) or counters.get("rejected", 0) or counters.get("callback_errors", 0):
        status.level = DiagnosticStatus.WARN
        status.message = "some frames were rejected or failed; see the log"
    elif state != "active":
        status.level = DiagnosticStatus.WARN
        status.message = f"node is {state}"
    else:
        status.level = DiagnosticStatus.OK
        status.message = "ok"
    status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
