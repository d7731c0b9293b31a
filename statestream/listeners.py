"""The listener API: what a running worker tells an application, and on which thread.

A **listener** is any object with some of these methods, each taking one
event (a frozen dataclass below); methods it lacks are not called::

    class Watch:
        def on_batch_restored(self, event: BatchRestored) -> None:
            print(f"{event.table}[{event.partition}] {event.done}/{event.done + event.remaining}")

    app = App("wordcount", processors=[WordCount], listeners=[Watch()])
    # or: app.add_listener(Watch())

* ``on_assigned(PartitionsAssigned)``: the poll thread, in the rebalance
  callback, after the new partitions' threads started (they may still be
  restoring);
* ``on_revoked(PartitionsRevoked)``: the poll thread, after the partitions'
  threads committed (unless the partitions were lost), closed their stores
  and exited; also at shutdown, for the partitions held then;
* ``on_restore_start(RestoreStarted)``, ``on_batch_restored(BatchRestored)``
  (after each batch read) and ``on_restore_end(RestoreEnded)``: the
  partition thread that restores the table partition
  (``statestream-partition-N``);
* ``on_commit(CommitDone)``: the thread that ran the commit: the poll thread
  for a round of every ready partition, a partition thread for a commit of
  its partition alone (revoke, stop, a missed round).

A listener runs on statestream's threads: it should return quickly (a slow
``on_commit`` delays every partition's next records; a slow
``on_batch_restored`` slows that restore) and must be thread-safe if it
keeps state, since restore events of several partitions arrive on several
threads at once. An exception raised by a listener is logged (on
``statestream.listeners``: the first one of each method with its traceback,
then a line at most every minute with how many more) and never stops the
worker; the other listeners still hear of the event.

Restore events concern the tables of the partitions the worker processes
(standby copies and global tables are not reported). Each
restore that has changelog records to replay gets exactly one
``on_restore_start``, any number of ``on_batch_restored`` whose
``position`` never moves back, and exactly one ``on_restore_end``
(``completed`` is False if it was cancelled by a revocation or failed); the
last batch of a completed restore has ``position == end``. A partition
with nothing to replay gets no restore events.

This module is the whole API: :class:`ListenerSet` is how statestream calls
listeners (tests and tools may use it too).

Thread ownership: events are immutable; a :class:`ListenerSet` is built
before the worker starts and then only read, from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from statestream.types import TopicPartition

__all__ = [
    "LISTENER_METHODS",
    "BatchRestored",
    "CommitDone",
    "ListenerSet",
    "PartitionsAssigned",
    "PartitionsRevoked",
    "RestoreEnded",
    "RestoreEvents",
    "RestoreStarted",
]

log = logging.getLogger("statestream.listeners")

#: The methods a listener may have, in the order of a partition's life.
LISTENER_METHODS = (
    "on_assigned",
    "on_restore_start",
    "on_batch_restored",
    "on_restore_end",
    "on_commit",
    "on_revoked",
)

#: Seconds between two log lines about the same failing listener method.
_FAILURE_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class PartitionsAssigned:
    """Partitions this worker starts to own (``on_assigned``)."""

    #: The partition numbers newly assigned (sorted).
    partitions: tuple[int, ...]
    #: The group generation of the assignment.
    generation: int


@dataclass(frozen=True)
class PartitionsRevoked:
    """Partitions this worker no longer owns (``on_revoked``)."""

    #: The partition numbers given up (sorted).
    partitions: tuple[int, ...]
    #: True when their uncommitted work was dropped, not committed: they were
    #: lost (this member was out of the group), or the worker stopped on an
    #: error after which it commits nothing (a failed commit, a store error...).
    lost: bool = False


@dataclass(frozen=True)
class RestoreStarted:
    """A table partition starts replaying its changelog (``on_restore_start``)."""

    table: str
    partition: int
    changelog: TopicPartition
    #: The first changelog offset to read.
    start: int
    #: The changelog's high watermark: the restore reads every offset below it.
    end: int
    #: Why the store was cleared first (rebuilt from the changelog), if it was.
    cleared: str | None = None


@dataclass(frozen=True)
class BatchRestored:
    """A batch of changelog records was read (``on_batch_restored``).

    Progress is counted in changelog offsets (compaction gaps and transaction
    markers count as done once passed), so ``done + remaining`` is the
    restore's whole range.
    """

    table: str
    partition: int
    changelog: TopicPartition
    start: int
    #: Every offset below it is done; never moves back during one restore.
    position: int
    #: The offset the restore ends at. It may grow once, by the few records
    #: written while the restore ran (the partition's claim marker among them).
    end: int
    #: Changelog records applied or skipped in this batch.
    records: int
    #: Seconds since the restore started.
    elapsed: float

    @property
    def done(self) -> int:
        """Offsets done: ``position - start``."""
        return self.position - self.start

    @property
    def remaining(self) -> int:
        """Offsets left: ``end - position``."""
        return max(self.end - self.position, 0)

    @property
    def rate(self) -> float:
        """Offsets done per second since the start."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at :attr:`rate` (``None`` before any progress)."""
        rate = self.rate
        return self.remaining / rate if rate > 0 else None


@dataclass(frozen=True)
class RestoreEnded:
    """A table partition's restore ended (``on_restore_end``)."""

    table: str
    partition: int
    changelog: TopicPartition
    start: int
    #: Every offset below it was done.
    position: int
    #: Records applied to the store.
    applied: int
    #: Records skipped as uncommitted work (redone by processing).
    skipped: int
    #: Records skipped because their writer had lost the partition.
    fenced: int
    #: False when the restore was cancelled (the partition was revoked) or failed.
    completed: bool
    #: Seconds the restore took.
    elapsed: float


@dataclass(frozen=True)
class CommitDone:
    """A commit finished: all four steps of the commit protocol (``on_commit``)."""

    #: The partitions committed together (sorted).
    partitions: tuple[int, ...]
    #: The source offsets committed (the next offset to process per source partition).
    offsets: Mapping[TopicPartition, int]
    #: Changelog records written, per ``(table, partition)`` that wrote any.
    changelog_records: Mapping[tuple[str, int], int] = field(default_factory=dict)
    #: Seconds the commit took, from collecting the changes to applying them.
    seconds: float = 0.0


class RestoreEvents(Protocol):
    """What the table manager tells of restores (a :class:`ListenerSet` is one)."""

    def on_restore_start(self, event: RestoreStarted) -> None: ...

    def on_batch_restored(self, event: BatchRestored) -> None: ...

    def on_restore_end(self, event: RestoreEnded) -> None: ...


class _Failures:
    """When a listener method last failed, for the log lines (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (listener id, method) -> [failures not logged yet, when the last line was logged]
        self._seen: dict[tuple[int, str], list[float]] = {}

    def report(self, listener: object, method: str, exc: Exception) -> None:
        now = time.monotonic()
        key = (id(listener), method)
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = [0, now]
                first = True
            else:
                seen[0] += 1
                if now - seen[1] < _FAILURE_LOG_INTERVAL:
                    return
                more, seen[0], seen[1] = int(seen[0]), 0, now
                first = False
        name = f"{type(listener).__name__}.{method}"
        if first:
            log.error(
                "listener %s failed (the worker goes on; later failures of it are counted "
                "in a line at most every %.0f s): %s: %s",
                name,
                _FAILURE_LOG_INTERVAL,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        else:
            log.error(
                "listener %s failed %d more times, the last with %s: %s",
                name,
                more,
                type(exc).__name__,
                exc,
            )


class ListenerSet:
    """Calls every listener that has a method for an event, catching what they raise.

    Each method of a listener is looked up once, when the listener is
    added; so add listeners before the worker starts.
    """

    def __init__(self, listeners: Iterable[object] = ()) -> None:
        self._calls: dict[str, list[tuple[object, Callable[[Any], object]]]] = {
            name: [] for name in LISTENER_METHODS
        }
        self._failures = _Failures()
        for listener in listeners:
            self.add(listener)

    def add(self, listener: object) -> None:
        """Add ``listener``: its methods named in :data:`LISTENER_METHODS` will be called."""
        for name, calls in self._calls.items():
            method = getattr(listener, name, None)
            if callable(method):
                calls.append((listener, method))

    def __bool__(self) -> bool:
        return any(self._calls.values())

    def wants(self, name: str) -> bool:
        """Whether any listener has method ``name`` (to skip building unwanted events)."""
        return bool(self._calls[name])

    def _call(self, name: str, event: object) -> None:
        for listener, method in self._calls[name]:
            try:
                method(event)
            except Exception as exc:  # a listener never stops the worker
                self._failures.report(listener, name, exc)

    def on_assigned(self, event: PartitionsAssigned) -> None:
        self._call("on_assigned", event)

    def on_revoked(self, event: PartitionsRevoked) -> None:
        self._call("on_revoked", event)

    def on_restore_start(self, event: RestoreStarted) -> None:
        self._call("on_restore_start", event)

    def on_batch_restored(self, event: BatchRestored) -> None:
        self._call("on_batch_restored", event)

    def on_restore_end(self, event: RestoreEnded) -> None:
        self._call("on_restore_end", event)

    def on_commit(self, event: CommitDone) -> None:
        self._call("on_commit", event)
