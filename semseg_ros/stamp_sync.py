"""A small approximate-time matcher (message_filters has no wheel here).

Depth and camera_info messages are kept in short buffers keyed by their stamp; after inference the
worker asks for the one closest to the colour image's stamp. Asking after inference, not before,
gives a depth image that arrives a little later than its colour image the whole inference time
to show up, without any waiting.
"""
from __future__ import annotations

import bisect
import threading
from typing import Any, List, Optional


def stamp_to_ns(stamp: Any) -> int:
    """A ROS ``builtin_interfaces/Time`` (anything with ``sec`` and ``nanosec``) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class StampBuffer:
    """The last ``capacity`` items ordered by stamp (nanoseconds); thread-safe."""

    def __init__(self, capacity: int = 30):
        self._capacity = max(1, int(capacity))
        self._stamps: List[int] = []
        self._items: List[Any] = []
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, item: Any) -> None:
        with self._lock:
            index = bisect.bisect_right(self._stamps, stamp_ns)
            self._stamps.insert(index, stamp_ns)
            self._items.insert(index, item)
            if len(self._stamps) > self._capacity:  # forget the oldest
                del self._stamps[0]
                del self._items[0]

    def closest(self, stamp_ns: int, tolerance_ns: int) -> Optional[Any]:
        """The item whose stamp is nearest ``stamp_ns`` and within ``tolerance_ns``, else None."""
        with self._lock:
            if not self._stamps:
                return None
            index = bisect.bisect_left(self._stamps, stamp_ns)
            best = None
            for candidate in (index - 1, index):
                if 0 <= candidate < len(self._stamps):
                    gap = abs(self._stamps[candidate] - stamp_ns)
                    if gap <= tolerance_ns and (best is None or gap < best[0]):
                        best = (gap, self._items[candidate])
            return None if best is None else best[1]

    def latest(self) -> Optional[Any]:
        with self._lock:
            return self._items[-1] if self._items else None

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)
