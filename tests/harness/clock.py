"""A clock the tests move by hand, for TTLs without sleeping."""

from __future__ import annotations

import threading
import time


class ManualClock:
    """Starts at the real time and moves only when told; safe to read from the daemon's threads."""

    def __init__(self) -> None:
        self._now = time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        with self._lock:
            self._now += seconds
