"""``RestoreLog``: a log line per restoring table partition every few seconds.

A listener (:mod:`statestream.listeners`) the worker always has. While a
table partition restores, it logs at INFO on ``statestream.recovery``, at
most every ``interval`` seconds (the first line ``interval`` seconds after
the restore started, so short restores add no line)::

    restoring table 'counts' partition 3: 420,000 of 840,000 offsets (50%), 120,000/s, ETA 3.5 s

with the fields ``table``, ``partition`` and ``topic`` (the changelog) for
JSON logs (:mod:`statestream.logs`). The end of a restore is logged by the
restore itself (:mod:`statestream.tables.recovery`) and by the partition's
"ready" line.

Thread ownership: called on the restoring partition threads; each table
partition's timer is its own entry, written by its one restoring thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from statestream.listeners import BatchRestored, RestoreEnded, RestoreStarted

__all__ = ["RestoreLog", "describe_progress", "format_seconds"]

log = logging.getLogger("statestream.recovery")


def describe_progress(event: BatchRestored) -> str:
    """``"420,000 of 840,000 offsets (50%), 120,000/s, ETA 3.5 s"``."""
    total = event.done + event.remaining
    percent = 100 * event.done // total if total else 100
    eta = event.eta
    shown_eta = "unknown" if eta is None else format_seconds(eta)
    return f"{event.done:,} of {total:,} offsets ({percent}%), {event.rate:,.0f}/s, ETA {shown_eta}"


def format_seconds(seconds: float) -> str:
    """``"3.5 s"``, ``"2 min 05 s"``, ``"1 h 02 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RestoreLog:
    """Logs restore progress (see the module docstring)."""

    def __init__(self, interval: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # (table, partition) -> when the next line is due.
        self._due: dict[tuple[str, int], float] = {}

    def on_restore_start(self, event: RestoreStarted) -> None:
        with self._lock:
            self._due[(event.table, event.partition)] = self._clock() + self.interval

    def on_batch_restored(self, event: BatchRestored) -> None:
        key = (event.table, event.partition)
        now = self._clock()
        with self._lock:
            due = self._due.get(key)
            if due is None or now < due:
                return
            self._due[key] = now + self.interval
        log.info(
            "restoring table %r partition %d: %s",
            event.table,
            event.partition,
            describe_progress(event),
            extra={
                "table": event.table,
                "partition": event.partition,
                "topic": event.changelog.topic,
            },
        )

    def on_restore_end(self, event: RestoreEnded) -> None:
        with self._lock:
            self._due.pop((event.table, event.partition), None)
