"""How often the worker rebuilds a damaged partition in place before it gives up.

A partition whose store is found damaged while the worker runs (its data
gone under it: :class:`~statestream.errors.StoreCorruptedError`, for example
after an Aerospike server restart that lost an in-memory namespace) has its
stores deleted by its task, and the poll thread starts a new task that
restores them from the changelogs and resumes from the committed source
offsets. Damage that comes back at once (a server restarting in a loop, a
second owner writing the same records) would make that a loop: after
``limit`` rebuilds of one partition within ``window`` seconds the worker
stops with the error instead.

Thread ownership: the poll thread only.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["RebuildBudget"]


class RebuildBudget:
    """Counts in-place rebuilds per partition over a sliding window."""

    def __init__(self, limit: int = 3, window: float = 600.0) -> None:
        self.limit = limit
        self.window = window
        self._times: dict[int, deque[float]] = {}

    def take(self, partition: int, now: float | None = None) -> bool:
        """Count one rebuild of ``partition``; ``False`` if over the limit (not counted)."""
        now = time.monotonic() if now is None else now
        times = self._times.setdefault(partition, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True

    def count(self, partition: int) -> int:
        """Rebuilds of ``partition`` still inside the window (as of the last take)."""
        return len(self._times.get(partition, ()))
