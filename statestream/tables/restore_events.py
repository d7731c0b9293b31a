"""``RestoreTracker``: one table partition's restore, told to the restore listeners.

:meth:`TableManager.restore_partition
<statestream.tables.manager.TableManager.restore_partition>` replays a
changelog partition twice: to the high watermark, then (after writing the
partition's claim marker) up to that marker. Listeners hear of one restore,
not two: the tracker reports the first pass's start, the batches of both
passes and one end. What it guarantees (see :mod:`statestream.listeners`):

* nothing is reported when the first pass has nothing to replay (the second
  pass then reads little more than the claim marker this member just wrote);
* ``position`` never moves back: the second pass may re-read from below a
  skipped record (the store's offset is held there until the repair), and
  those offsets were done already;
* a completed restore's last batch has ``position == end``; exactly one end
  is reported, whether the restore completed, was cancelled or failed.

Thread ownership: the thread that restores the partition (its partition
thread); listeners are called on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from statestream.listeners import BatchRestored, RestoreEnded, RestoreEvents, RestoreStarted
from statestream.types import TopicPartition

__all__ = ["RestoreTracker"]


class RestoreTracker:
    """Reports one table partition's restore (see the module docstring)."""

    def __init__(
        self,
        events: RestoreEvents,
        table: str,
        changelog: TopicPartition,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.table = table
        self.changelog = changelog
        self._clock = clock
        self._passes = 0
        self._reporting = False
        self._ended = False
        self._start = 0
        self._position = 0
        self._end = 0
        self._began = 0.0

    def begin(self, start: int, end: int, cleared: str | None) -> None:
        """A pass starts reading at ``start``, up to the high watermark ``end``."""
        self._passes += 1
        if self._passes == 1:
            if start >= end:
                return  # nothing to replay: the restore stays silent
            self._reporting = True
            self._start = self._position = start
            self._end = end
            self._began = self._clock()
            self.events.on_restore_start(
                RestoreStarted(
                    self.table, self.changelog.partition, self.changelog, start, end, cleared
                )
            )
        elif self._reporting:
            self._end = max(self._end, end)

    def batch(self, position: int, records: int) -> None:
        """Everything below ``position`` was read (``records`` of it in this batch)."""
        if not self._reporting:
            return
        self._position = max(self._position, min(position, self._end))
        self.events.on_batch_restored(
            BatchRestored(
                self.table,
                self.changelog.partition,
                self.changelog,
                self._start,
                self._position,
                self._end,
                records,
                self._clock() - self._began,
            )
        )

    def reached(self, end: int) -> None:
        """A pass read everything up to ``end``: report it unless the last batch did."""
        if self._reporting and self._position < min(end, self._end):
            self.batch(end, 0)

    def end(self, applied: int, skipped: int, fenced: int, *, completed: bool) -> None:
        """The restore ended (once; later calls are ignored)."""
        if not self._reporting or self._ended:
            return
        self._ended = True
        if completed:
            self.reached(self._end)
        self.events.on_restore_end(
            RestoreEnded(
                self.table,
                self.changelog.partition,
                self.changelog,
                self._start,
                self._position,
                applied,
                skipped,
                fenced,
                completed,
                self._clock() - self._began,
            )
        )
