"""``TableManager``: changelog topics, shards per partition, commits and recovery.

This is the Application Table Manager of the design. It owns, per assigned
partition, one :class:`TableShard` (and store) per table, drives the commit
protocol in its four steps, restores partitions from their changelogs, and
reports the state of every table partition.

The commit protocol, per partition (DESIGN.md):

1. :meth:`prepare` collects one change per dirty key from every shard;
2. :meth:`write_changelogs` produces them with their source offsets and
   flushes synchronously, keeping the changelog offsets (or, to share one
   flush between partitions, :meth:`send_changelogs`, a flush of the
   producer by the caller, then :meth:`changelogs_flushed`);
3. the caller commits the source offsets (the poll thread owns the consumer);
4. :meth:`apply` writes each shard's changes to its store together with its
   changelog offset.

:meth:`commit` runs all four in order. A crash between any two steps leaves
state equal to processing each committed source record exactly once, because
recovery skips changelog records whose source offset was not committed.

Thread ownership: partition-scoped methods run on that partition's thread;
:meth:`states` may be called from any thread (it reads a snapshot under a lock).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from statestream.errors import CommitError, ConfigurationError, LogError, TableError
from statestream.log.base import Producer, TopicSpec, Transport
from statestream.stores.registry import open_store
from statestream.tables.changelog import ChangelogWriter, SentChangelogs
from statestream.tables.recovery import ProgressCallback, RestoreOutcome, restore
from statestream.tables.shard import Change, TableShard
from statestream.tables.table import Table
from statestream.types import TopicPartition

__all__ = ["PartitionState", "PendingCommit", "TableManager"]


class PartitionState(enum.Enum):
    """Where a table partition is in its life."""

    RESTORING = "restoring"
    READY = "ready"
    STANDBY = "standby"
    CLOSED = "closed"


@dataclass
class PendingCommit:
    """One partition's commit in flight: the changes, then their changelog offsets."""

    partition: int
    changes: dict[str, list[Change]]
    changelog_offsets: dict[str, int] = field(default_factory=dict)
    #: The queued changelog records between :meth:`TableManager.send_changelogs`
    #: and :meth:`TableManager.changelogs_flushed`.
    sent: SentChangelogs | None = None


class _Partition:
    __slots__ = ("last_source", "number", "shards", "state")

    def __init__(self, number: int, shards: dict[str, TableShard]) -> None:
        self.number = number
        self.shards = shards
        self.state = PartitionState.RESTORING
        self.last_source: tuple[str, int] | None = None


class TableManager:
    """Owns the shards of every table for the partitions assigned to this worker."""

    def __init__(
        self,
        app_id: str,
        tables: Sequence[Table[Any, Any]],
        transport: Transport,
        store_url: str,
        *,
        producer: Producer | None = None,
        progress: ProgressCallback | None = None,
        restore_batch_size: int = 10_000,
        stall_timeout: float = 60.0,
        compaction_lag_ms: int = 3_600_000,
    ) -> None:
        names = [t.name for t in tables]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigurationError(f"table names must be unique; repeated: {duplicates}")
        self.app_id = app_id
        self.tables = list(tables)
        self.transport = transport
        self.store_url = store_url
        self._own_producer = producer is None
        self.producer = producer if producer is not None else transport.producer()
        self.writer = ChangelogWriter(self.producer)
        self.progress = progress
        self.restore_batch_size = restore_batch_size
        self.stall_timeout = stall_timeout
        #: min.compaction.lag.ms of changelog topics: how long a crashed
        #: partition may wait for its restore before an uncommitted record
        #: could let compaction remove the committed one it supersedes.
        self.compaction_lag_ms = compaction_lag_ms
        self._partitions: dict[int, _Partition] = {}
        # Partitions this manager held and closed (reported as CLOSED).
        self._closed: set[int] = set()
        self._lock = threading.Lock()

    # -- topics ------------------------------------------------------------------

    def changelog_topic(self, table: Table[Any, Any] | str) -> str:
        """Return the changelog topic name of ``table``: ``{app_id}-{table}-changelog``."""
        name = table if isinstance(table, str) else table.name
        return f"{self.app_id}-{name}-changelog"

    def ensure_changelogs(self, partitions: int) -> None:
        """Create or validate every changelog topic (compacted, ``partitions`` partitions).

        A topic with another partition count or policy raises
        :class:`~statestream.errors.TopicMismatchError`: state would be
        routed to the wrong partition otherwise.
        """
        admin = self.transport.admin()
        try:
            for table in self.tables:
                admin.ensure_topic(
                    TopicSpec(
                        self.changelog_topic(table),
                        partitions,
                        cleanup_policy="compact",
                        config={"min.compaction.lag.ms": str(self.compaction_lag_ms)},
                    )
                )
        finally:
            admin.close()

    # -- partition lifecycle -----------------------------------------------------

    def open_partition(self, partition: int) -> None:
        """Open the stores of ``partition`` (state: restoring until restored)."""
        if partition in self._partitions:
            raise TableError(f"partition {partition} is already open")
        shards: dict[str, TableShard] = {}
        try:
            for table in self.tables:
                store = open_store(table.store_url or self.store_url, table.name, partition)
                changelog = TopicPartition(self.changelog_topic(table), partition)
                shards[table.name] = TableShard(
                    table.name,
                    partition,
                    store,
                    table.key_codec,
                    table.value_codec,
                    changelog,
                    cache_size=table.cache_size,
                )
        except BaseException:
            for shard in shards.values():
                shard.store.close()
            raise
        with self._lock:
            self._partitions[partition] = _Partition(partition, shards)
            self._closed.discard(partition)

    def restore_partition(
        self,
        partition: int,
        committed: Mapping[str, int | None],
        cancel: threading.Event | None = None,
    ) -> list[RestoreOutcome]:
        """Restore every table of ``partition`` from its changelog; mark it ready.

        ``committed`` maps each source topic to its committed offset for this
        partition. If ``cancel`` is set part way, restoring stops cleanly (the
        partition stays ``restoring``; what was applied is kept).
        """
        part = self._partition(partition)
        outcomes = []
        fetcher = self.transport.fetcher(isolation_level="read_committed", reset="earliest")
        try:
            for shard in part.shards.values():
                shard.discard()
                outcome = restore(
                    shard.store,
                    fetcher,
                    shard.changelog,
                    committed,
                    batch_size=self.restore_batch_size,
                    cancel=cancel,
                    progress=self.progress,
                    stall_timeout=self.stall_timeout,
                )
                outcomes.append(outcome)
                if not outcome.completed:
                    return outcomes
                if outcome.skipped_keys:
                    self._repair(shard, outcome.skipped_keys)
        finally:
            fetcher.close()
        self._set_state(part, PartitionState.READY)
        return outcomes

    def close_partition(self, partition: int) -> None:
        """Discard uncommitted changes and close the stores of ``partition``.

        Stores release their files before this returns, so another worker (or
        another thread) may open them at once.
        """
        with self._lock:
            part = self._partitions.pop(partition, None)
            if part is not None:
                self._closed.add(partition)
        if part is None:
            return
        part.state = PartitionState.CLOSED
        errors: list[BaseException] = []
        for shard in part.shards.values():
            shard.discard()
            try:
                shard.store.close()
            except Exception as exc:
                errors.append(exc)
        for table in self.tables:
            table.release(part.shards[table.name])
        if errors:
            raise errors[0]

    # -- processing --------------------------------------------------------------

    def bind(self, partition: int) -> None:
        """Bind the shards of ``partition`` to the calling (partition) thread."""
        part = self._partition(partition)
        if part.state is not PartitionState.READY:
            raise TableError(f"partition {partition} is {part.state.value}, not ready")
        for table in self.tables:
            table.bind(part.shards[table.name])

    def begin_record(self, partition: int, topic: str, offset: int) -> None:
        """Note the source record about to be processed (changes will name it)."""
        part = self._partitions[partition]
        source = (topic, offset)
        part.last_source = source
        for shard in part.shards.values():
            shard.begin(source)

    def rollback_record(self, partition: int) -> None:
        """Undo the table changes of the record being processed (it failed)."""
        for shard in self._partitions[partition].shards.values():
            shard.rollback()

    def shard(self, table: str, partition: int) -> TableShard:
        """Return the shard of ``table`` for ``partition``."""
        return self._partition(partition).shards[table]

    # -- the commit protocol -----------------------------------------------------

    def prepare(self, partition: int) -> PendingCommit:
        """Step 1: collect one change per dirty key of every table of ``partition``."""
        part = self._partition(partition)
        changes = {name: shard.changes(part.last_source) for name, shard in part.shards.items()}
        return PendingCommit(partition, {n: c for n, c in changes.items() if c})

    def write_changelogs(self, pending: PendingCommit) -> None:
        """Step 2: produce the changes and flush synchronously; keep their offsets."""
        self.send_changelogs(pending)
        if pending.sent is None:
            return
        try:
            self.producer.flush()
        except LogError as exc:
            raise CommitError(
                f"writing {pending.sent.records} changelog records of partition "
                f"{pending.partition} failed ({exc}); source offsets were not committed, so "
                "the records will be reprocessed"
            ) from exc
        self.changelogs_flushed(pending)

    def send_changelogs(self, pending: PendingCommit) -> None:
        """Step 2, first half: queue the changes on the producer (no flush).

        The caller flushes the producer (one flush may serve many partitions)
        and then calls :meth:`changelogs_flushed`.
        """
        part = self._partition(pending.partition)
        batches = [
            (part.shards[name].changelog, changes) for name, changes in pending.changes.items()
        ]
        if batches:
            pending.sent = self.writer.send(batches)

    def changelogs_flushed(self, pending: PendingCommit) -> None:
        """Step 2, second half (after a successful flush): keep the changelog offsets.

        Raises :class:`~statestream.errors.CommitError` if a record was not written.
        """
        if pending.sent is None:
            return
        part = self._partition(pending.partition)
        offsets = pending.sent.offsets()
        for name in pending.changes:
            pending.changelog_offsets[name] = offsets[part.shards[name].changelog]

    def apply(self, pending: PendingCommit) -> None:
        """Step 4: write each table's changes with its changelog offset; clear buffers."""
        part = self._partition(pending.partition)
        for name, shard in part.shards.items():
            changes = pending.changes.get(name)
            if changes:
                shard.committed(changes, pending.changelog_offsets[name])
            else:
                shard.committed([], None)  # nothing changed: keep the cache

    def commit(self, partition: int, commit_source: Callable[[], None]) -> PendingCommit:
        """Run the whole commit protocol for ``partition``.

        ``commit_source`` commits the source offsets (step 3); it runs only
        after the changelog flush succeeded, and the stores are written only
        after it returns.
        """
        pending = self.prepare(partition)
        self.write_changelogs(pending)
        try:
            commit_source()
        except Exception as exc:
            raise CommitError(
                f"committing source offsets of partition {partition} failed ({exc}); the "
                "stores were not updated, so a restart restores exact state"
            ) from exc
        self.apply(pending)
        return pending

    # -- reporting and shutdown --------------------------------------------------

    def states(self) -> dict[tuple[str, int], PartitionState]:
        """Return the state of every (table, partition) this manager holds or held."""
        with self._lock:
            states = {
                (table.name, number): PartitionState.CLOSED
                for number in self._closed
                for table in self.tables
            }
            states.update(
                {
                    (name, part.number): part.state
                    for part in self._partitions.values()
                    for name in part.shards
                }
            )
            return states

    def partitions(self) -> list[int]:
        """Return the partitions currently open."""
        with self._lock:
            return sorted(self._partitions)

    def close(self) -> None:
        """Close every partition and, if this manager made it, the producer."""
        for partition in self.partitions():
            self.close_partition(partition)
        if self._own_producer:
            self.producer.close()

    # -- internals ---------------------------------------------------------------

    def _repair(self, shard: TableShard, keys: frozenset[bytes]) -> None:
        """Rewrite the restored values of ``keys`` after skipped uncommitted records.

        A skipped record (a change whose source offset was never committed)
        still sits in the changelog after the committed record of its key,
        and compaction would keep only the skipped one. Writing the restored
        (committed) value again, without source headers so every restore
        applies it, makes the committed value the latest record again. The
        topic's min.compaction.lag.ms keeps the committed record alive until
        this runs.
        """
        changes = [Change(key, shard.store.get(key), None) for key in sorted(keys)]
        offsets = self.writer.write([(shard.changelog, changes)])
        shard.store.write({}, offsets[shard.changelog])

    def _partition(self, partition: int) -> _Partition:
        part = self._partitions.get(partition)
        if part is None:
            raise TableError(f"partition {partition} is not open in this table manager")
        return part

    def _set_state(self, part: _Partition, state: PartitionState) -> None:
        with self._lock:
            part.state = state
