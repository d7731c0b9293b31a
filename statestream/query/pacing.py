"""``Pacer``: queries yield to processing while the worker is busy.

Every thread of a worker shares one interpreter lock, so a reader that asks
as fast as it can takes its share of the lock from the partition threads:
unpaced, one busy reader halved the word count's throughput
(benchmarks/bench_queries.py). While the worker has records queued, the
pacer gives the queries of every thread together a budget of ``share`` of
each :data:`WINDOW` (2 ms of every 100 ms by default): once a window's
budget is spent, the next query waits for the next window. Bursts, not a
read every few hundred microseconds, because each wake-up of a waiting
thread costs the partition threads a hand-over of the lock. When the worker
is idle, queries run unpaced.

Thread ownership: any thread (one lock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["DEFAULT_SHARE", "WINDOW", "Pacer"]

#: The share of the time queries may take while the worker processes.
DEFAULT_SHARE = 0.02
#: Seconds of one budget window.
WINDOW = 0.1


class Pacer:
    """Budgets queries while ``busy()`` (see the module docstring)."""

    def __init__(
        self, busy: Callable[[], bool], share: float = DEFAULT_SHARE, window: float = WINDOW
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._busy = busy
        self._window = window
        self._budget = share * window
        self._lock = threading.Lock()
        self._ends = 0.0  # monotonic end of the current window
        self._used = 0.0  # seconds of queries in it

    @contextmanager
    def pace(self) -> Iterator[None]:
        """Wrap one read: wait for a window with budget left when busy, then book it."""
        if not self._busy():
            yield
            return
        with self._lock:
            now = time.monotonic()
            if now >= self._ends:
                self._ends, self._used = now + self._window, 0.0
            elif self._used >= self._budget:
                time.sleep(self._ends - now)
                self._ends, self._used = self._ends + self._window, 0.0
            started = time.monotonic()
            try:
                yield
            finally:
                self._used += time.monotonic() - started
