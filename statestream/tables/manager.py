"""``TableManager``: changelog topics, shards per partition, restores and claims.

This is the Application Table Manager of the design. It owns, per assigned
partition, one :class:`TableShard` (and store) per table and the partition's
writer epoch; it restores partitions from their changelogs, claims them for
this member (a fence marker per changelog partition, see
:mod:`statestream.tables.headers`), and provides the per-partition halves of
the commit protocol (:meth:`prepare`, :meth:`send_changelogs`,
:meth:`changelogs_flushed`, :meth:`apply`). The protocol itself, the order
of its steps and the owners of source and store offsets are in one place:
:mod:`statestream.tables.commit`.

Thread ownership: partition-scoped methods run on the thread that owns the
partition (its partition thread, or the commit coordinator's thread while
the partition thread is parked); :meth:`states` and :meth:`partitions` may
be called from any thread (they read under a lock).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from statestream.errors import (
    ConfigurationError,
    PartitionNotReadyError,
    StateStreamError,
    StoreCorruptedError,
    TableError,
)
from statestream.listeners import RestoreEvents
from statestream.log.base import Producer, TopicSpec, Transport
from statestream.stores.base import Store
from statestream.stores.registry import StoreRegistry, destroy_store, open_store
from statestream.tables.changelog import ChangelogWriter, SentChangelogs
from statestream.tables.headers import epoch_of, next_epoch, pack_epoch
from statestream.tables.local import LocalOffsets
from statestream.tables.recovery import EPOCH_META, ProgressCallback, RestoreOutcome, restore
from statestream.tables.restore_events import RestoreTracker
from statestream.tables.shard import Change, TableShard
from statestream.tables.table import Table
from statestream.tables.windowed import WindowedTable
from statestream.tables.windowed_shard import WindowedShard
from statestream.types import TopicPartition

__all__ = ["PartitionState", "PendingCommit", "TableManager"]

log = logging.getLogger("statestream.tables")


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
    #: Changelog ranges ``[first, last]`` that hold records of another writer
    #: between this member's own (found by :meth:`TableManager.changelogs_flushed`).
    foreign: dict[str, tuple[int, int]] = field(default_factory=dict)


class _Partition:
    __slots__ = (
        "epoch",
        "last_source",
        "next_offsets",
        "number",
        "previous_source",
        "shards",
        "state",
    )

    def __init__(self, number: int, shards: dict[str, TableShard]) -> None:
        self.number = number
        self.shards = shards
        self.state = PartitionState.RESTORING
        self.last_source: tuple[str, int] | None = None
        self.previous_source: tuple[str, int] | None = None
        #: This member's writer epoch for the partition (set by its claim).
        self.epoch = 0
        #: Per table, the offset this member's next changelog record should
        #: get if nobody else writes to the changelog partition.
        self.next_offsets: dict[str, int] = {}


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
        events: RestoreEvents | None = None,
        restore_batch_size: int = 10_000,
        stall_timeout: float = 60.0,
        compaction_lag_ms: int = 3_600_000,
        local: LocalOffsets | None = None,
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
        #: Told of every restore of a partition's tables (see :mod:`statestream.listeners`).
        self.events = events
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
        # Per table, how its store-only entries follow from changelog records.
        self._derive = {t.name: d for t in self.tables if (d := t.derive()) is not None}
        #: Offsets of the local stores, for the assignor (see LocalOffsets).
        self.local = local if local is not None else LocalOffsets()

    # -- topics ------------------------------------------------------------------

    def changelog_topic(self, table: Table[Any, Any] | str) -> str:
        """Return the changelog topic name of ``table``: ``{app_id}-{table}-changelog``."""
        name = table if isinstance(table, str) else table.name
        return f"{self.app_id}-{name}-changelog"

    def changelog_spec(self, table: Table[Any, Any], partitions: int) -> TopicSpec:
        """The changelog topic ``table`` needs.

        Compacted; a windowed table's is ``compact,delete`` as well, with a
        retention covering a window's whole life (size, grace, retention)
        and a day more, so expired windows leave the topic even if their
        tombstones were compacted away.
        """
        config = {"min.compaction.lag.ms": str(self.compaction_lag_ms)}
        if isinstance(table, WindowedTable):
            return TopicSpec(
                self.changelog_topic(table),
                partitions,
                cleanup_policy="compact,delete",
                retention_ms=table.changelog_retention_ms(),
                config=config,
            )
        return TopicSpec(
            self.changelog_topic(table), partitions, cleanup_policy="compact", config=config
        )

    def ensure_changelogs(self, partitions: int) -> None:
        """Create or validate every changelog topic (compacted, ``partitions`` partitions).

        A topic with another partition count or policy raises
        :class:`~statestream.errors.TopicMismatchError`: state would be
        routed to the wrong partition otherwise.
        """
        admin = self.transport.admin()
        try:
            for table in self.tables:
                admin.ensure_topic(self.changelog_spec(table, partitions))
        finally:
            admin.close()

    # -- partition lifecycle -----------------------------------------------------

    def open_partition(self, partition: int, stores: Mapping[str, Store] | None = None) -> None:
        """Open the stores of ``partition`` (state: restoring until restored).

        ``stores`` are stores already open for some tables (a promoted
        standby's, handed over by the standby thread): they are used as they
        are, so the restore starts from their offsets.
        """
        if partition in self._partitions:
            raise TableError(f"partition {partition} is already open")
        given = dict(stores or {})
        shards: dict[str, TableShard] = {}
        try:
            for table in self.tables:
                store = given.pop(table.name, None) or self._open_store(
                    table.store_url or self.store_url, table.name, partition
                )
                changelog = TopicPartition(self.changelog_topic(table), partition)
                shards[table.name] = table.make_shard(partition, store, changelog)
        except BaseException:
            for shard in shards.values():
                shard.store.close()
            for store in given.values():
                store.close()
            raise
        for store in given.values():  # tables this app no longer has
            store.close()
        with self._lock:
            self._partitions[partition] = _Partition(partition, shards)
            self._closed.discard(partition)

    def open_local_store(self, table: Table[Any, Any], partition: int) -> Store:
        """Open ``table``'s store of ``partition`` for a standby copy (the caller owns it).

        The layout is the active one's, so the store serves the partition
        unchanged when it becomes active here. A damaged store is rebuilt.
        """
        return self._open_store(table.store_url or self.store_url, table.name, partition)

    def _open_store(self, url: str, table: str, partition: int) -> Store:
        """Open a store; a damaged one is thrown away and rebuilt from the changelog."""
        try:
            return open_store(url, table, partition)
        except StoreCorruptedError as exc:
            log.warning(
                "the store of table %r partition %d is damaged (%s); deleting it and "
                "rebuilding it from the changelog",
                table,
                partition,
                exc,
            )
            destroy_store(url, table, partition)
            return open_store(url, table, partition)

    def discard_damaged(self, partition: int) -> None:
        """Delete the stores of ``partition`` after a read found one damaged.

        The partition must be closed first. The next open rebuilds the stores
        from the changelog instead of failing on the same damage again.
        """
        for table in self.tables:
            destroy_store(table.store_url or self.store_url, table.name, partition)

    def restore_partition(
        self,
        partition: int,
        committed: Mapping[str, int | None],
        cancel: threading.Event | None = None,
        *,
        generation: int = 0,
        claim: bool = True,
    ) -> list[RestoreOutcome]:
        """Restore every table of ``partition``, claim it for this member; mark it ready.

        ``committed`` maps each source topic to its committed offset for this
        partition; ``generation`` is the group generation of the assignment.
        The steps:

        1. restore each table to its changelog's high watermark;
        2. claim a writer epoch above every epoch seen (:func:`next_epoch`)
           and write its fence marker to each changelog partition: from then
           on, records of a member that lost the partition are ignored;
        3. restore again up to the marker (records written meanwhile);
        4. repair the keys of skipped records (uncommitted or fenced) by
           writing their restored values again, flushed, and only then
           move the store's offset past them (see :mod:`statestream.tables.recovery`).

        If ``cancel`` is set part way, restoring stops cleanly (the partition
        stays ``restoring``; what was applied is kept, and so is every
        repair still owed).

        With ``claim=False`` only step 1 runs: a read-only restore for tools
        that read state while no worker runs (or must not disturb one).
        Nothing is written to the changelog, repairs stay owed (the store's
        offset stays below skipped records) and the partition cannot commit.
        """
        part = self._partition(partition)
        outcomes: list[RestoreOutcome] = []
        trackers = {
            name: RestoreTracker(self.events, name, shard.changelog)
            for name, shard in part.shards.items()
            if self.events is not None
        }
        fetcher = self.transport.fetcher(isolation_level="read_committed", reset="earliest")
        try:
            for shard in part.shards.values():
                shard.discard()
                outcome = self._restore(shard, fetcher, committed, cancel, trackers)
                if not outcome.completed:
                    _end_restores(trackers, [outcome])
                    return [outcome]
                outcomes.append(outcome)
            if not claim:
                _end_restores(trackers, outcomes)
                self._set_state(part, PartitionState.READY)
                return outcomes
            seen = [o.epoch for o in outcomes if o.epoch is not None]
            epoch = next_epoch(max(seen) if seen else None, generation)
            for shard in part.shards.values():
                self.writer.write_fence(shard.changelog, epoch)
            for index, shard in enumerate(part.shards.values()):
                outcome = self._restore(shard, fetcher, committed, cancel, trackers)
                first = outcomes[index]
                merged = dataclasses.replace(
                    outcome,
                    applied=first.applied + outcome.applied,
                    skipped=first.skipped + outcome.skipped,
                    fenced=first.fenced + outcome.fenced,
                    cleared=first.cleared or outcome.cleared,
                )
                if not outcome.completed:
                    _end_restores(trackers, [*outcomes[:index], merged])
                    return [outcome]
                self._repair(shard, outcome, epoch)
                outcomes[index] = merged
                offset = shard.store.offset()
                part.next_offsets[shard.table] = 0 if offset is None else offset + 1
            part.epoch = epoch
        except BaseException:
            _end_restores(trackers, [])  # failed: every restore not ended yet ends incomplete
            raise
        finally:
            fetcher.close()
        _end_restores(trackers, outcomes)
        for shard in part.shards.values():
            self._note(shard)
        self._set_state(part, PartitionState.READY)
        return outcomes

    def _restore(
        self,
        shard: TableShard,
        fetcher: Any,
        committed: Mapping[str, int | None],
        cancel: threading.Event | None,
        trackers: Mapping[str, RestoreTracker],
    ) -> RestoreOutcome:
        return restore(
            shard.store,
            fetcher,
            shard.changelog,
            committed,
            batch_size=self.restore_batch_size,
            cancel=cancel,
            progress=self.progress,
            stall_timeout=self.stall_timeout,
            derive=self._derive.get(shard.table),
            tracker=trackers.get(shard.table),
        )

    def epoch(self, partition: int) -> int:
        """This member's writer epoch for ``partition`` (0 before it is claimed)."""
        return self._partition(partition).epoch

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
            if not shard.store.persistent:
                self.local.forget(shard.changelog)  # its state goes with the store
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
        part.previous_source, part.last_source = part.last_source, source
        for shard in part.shards.values():
            shard.begin(source)

    def rollback_record(self, partition: int) -> None:
        """Undo the table changes of the record being processed (it failed)."""
        part = self._partitions[partition]
        for shard in part.shards.values():
            shard.rollback()
        # In-place mutations found at the commit belong to an earlier record.
        part.last_source = part.previous_source

    def shard(self, table: str, partition: int) -> TableShard:
        """Return the shard of ``table`` for ``partition``."""
        return self._partition(partition).shards[table]

    def windowed(self, table: str, partition: int) -> WindowedShard:
        """Return the windowed state of windowed ``table`` for ``partition``."""
        windowed = self.shard(table, partition).windowed
        if windowed is None:
            raise TableError(f"table {table!r} is not windowed")
        return windowed

    def windowed_shards(self, partition: int) -> list[WindowedShard]:
        """The windowed states of ``partition``'s windowed tables, in table order."""
        shards = self._partition(partition).shards.values()
        return [s.windowed for s in shards if s.windowed is not None]

    def set_event_source(self, partition: int, source: Callable[[], Any]) -> None:
        """Give ``partition``'s windowed tables the message being processed.

        ``source()`` returns it (anything with a ``timestamp``): the worker
        passes its context's current message. Windowed writes take their
        event time from it.
        """
        for windowed in self.windowed_shards(partition):
            windowed.event_source = source

    # -- the halves of the commit protocol (run by statestream.tables.commit) ----

    def prepare(self, partition: int) -> PendingCommit:
        """Step 1: collect one change per dirty key of every table of ``partition``."""
        part = self._partition(partition)
        changes = {name: shard.changes(part.last_source) for name, shard in part.shards.items()}
        return PendingCommit(partition, {n: c for n, c in changes.items() if c})

    def send_changelogs(self, pending: PendingCommit) -> None:
        """Step 2, first half: queue the changes on the producer with the
        partition's epoch (the coordinator flushes)."""
        part = self._partition(pending.partition)
        batches = [
            (part.shards[name].changelog, changes) for name, changes in pending.changes.items()
        ]
        if batches:
            if not part.epoch:
                raise TableError(
                    f"partition {pending.partition} was restored without a claim "
                    "(restore_partition(claim=False)) and is read-only"
                )
            pending.sent = self.writer.send(batches, part.epoch)

    def changelogs_flushed(self, pending: PendingCommit) -> None:
        """Step 2, second half (after a flush): keep the acknowledged changelog offsets.

        Raises :class:`~statestream.errors.CommitError` if a record was not
        acknowledged. Notes changelog ranges where another writer's records
        sit between this member's (see :meth:`check_foreign_writes`).
        """
        if pending.sent is None:
            return
        part = self._partition(pending.partition)
        offsets = pending.sent.offsets()
        counts = pending.sent.counts
        for name in pending.changes:
            changelog = part.shards[name].changelog
            last = offsets[changelog]
            pending.changelog_offsets[name] = last
            expected = part.next_offsets.get(name)
            if expected is not None and last - counts[changelog] + 1 > expected:
                pending.foreign[name] = (expected, last)
            part.next_offsets[name] = last + 1

    def apply(self, pending: PendingCommit) -> None:
        """Step 4: write each table's changes with its changelog offset; clear buffers."""
        part = self._partition(pending.partition)
        for name, shard in part.shards.items():
            changes = pending.changes.get(name)
            if changes:
                shard.committed(changes, pending.changelog_offsets[name])
                self._note(shard)
            else:
                shard.committed([], None)  # nothing changed: keep the cache

    def check_foreign_writes(self, pending: PendingCommit) -> None:
        """After step 4: rewrite keys another writer wrote between this member's records.

        Another writer of a partition this member owns is a member that lost
        it (a zombie). Restores ignore its records (their epoch is older),
        but under compaction a zombie record may be the one kept for its key.
        The keys it wrote are marked dirty with their current value, so the
        next commit writes them again with this member's epoch.
        """
        if not pending.foreign:
            return
        part = self._partition(pending.partition)
        fetcher = self.transport.fetcher(isolation_level="read_committed", reset="earliest")
        try:
            for name, (first, last) in pending.foreign.items():
                shard = part.shards[name]
                keys = _foreign_keys(fetcher, shard.changelog, first, last, part.epoch)
                if keys:
                    log.warning(
                        "%s: %d records of another writer (a member that lost this partition) "
                        "between offsets %d and %d; rewriting their %d keys",
                        shard.changelog,
                        last - first + 1,
                        first,
                        last,
                        len(keys),
                    )
                    shard.rewrite(keys)
        finally:
            fetcher.close()

    def commit(self, partition: int, commit_source: Callable[[], None]) -> None:
        """Commit ``partition`` alone: a round of one of the commit coordinator.

        ``commit_source`` commits the source offsets (step 3); the positions
        are the caller's business. For tools and tests; workers use
        :class:`~statestream.tables.commit.CommitCoordinator` directly.
        """
        from statestream.tables.commit import CommitCoordinator, CommitRequest

        CommitCoordinator(self, self.producer).commit(
            [CommitRequest(partition, {})], lambda _offsets: commit_source()
        )

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

    def query_store(self, table: str, partition: int) -> Store | None:
        """The store of ``table`` in ``partition`` for a query (any thread).

        None if the partition is not open here; PartitionNotReadyError while
        it restores. The store may close right after (the partition moved):
        its reader then raises StoreClosedError.
        """
        with self._lock:
            part = self._partitions.get(partition)
            if part is None:
                return None
            shard = part.shards.get(table)
            if shard is None:
                return None
            if part.state is not PartitionState.READY:
                raise PartitionNotReadyError(
                    f"table {table!r} partition {partition} is {part.state.value} on this "
                    "worker; ask again once it is restored (GET /health turns ready then)",
                    partition=partition,
                )
            return shard.store

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

    def _repair(self, shard: TableShard, outcome: RestoreOutcome, epoch: int) -> None:
        """Rewrite the restored values of skipped keys, then move the store's offset.

        A skipped record (uncommitted, or of a fenced writer) still sits in
        the changelog after the committed record of its key, and compaction
        would keep only the skipped one. Writing the restored (committed)
        value again, without source headers so every restore applies it,
        makes the committed value the latest record again. The topic's
        min.compaction.lag.ms keeps the committed record alive until this
        runs. Only once the repair is flushed does the store's offset move
        past the skipped records (with this member's epoch), so a crash
        before that reads them again and repairs again.
        """
        end = outcome.end
        keys = outcome.skipped_keys
        if keys:
            changes = [Change(key, shard.store.get(key), None) for key in sorted(keys)]
            offsets = self.writer.write([(shard.changelog, changes)], epoch)
            end = offsets[shard.changelog]
        if end is not None:
            shard.store.write({}, end, {EPOCH_META: pack_epoch(epoch)})

    def _note(self, shard: TableShard) -> None:
        self.local.set(shard.changelog, shard.store.offset())

    def scan_local(self, partitions: int, tables: Sequence[str]) -> None:
        """Record the offsets of the persistent local stores of ``tables`` found on disk.

        Called once at start, before the group is joined, so the first
        assignment already knows which state this process holds. A store
        another process holds, or a damaged one, counts as no copy.
        """
        registry = StoreRegistry()
        for table in self.tables:
            if table.name not in tables:
                continue
            url = table.store_url or self.store_url
            for partition in range(partitions):
                changelog = TopicPartition(self.changelog_topic(table), partition)
                if not registry.exists(url, table.name, partition):
                    continue
                try:
                    store = registry.open(url, table.name, partition)
                except StateStreamError as exc:
                    log.debug("no local copy of %s: %s", changelog, exc)
                    continue
                try:
                    if store.persistent:
                        self.local.set(changelog, store.offset())
                finally:
                    store.close()

    def _partition(self, partition: int) -> _Partition:
        part = self._partitions.get(partition)
        if part is None:
            raise TableError(f"partition {partition} is not open in this table manager")
        return part

    def _set_state(self, part: _Partition, state: PartitionState) -> None:
        with self._lock:
            part.state = state


def _end_restores(
    trackers: Mapping[str, RestoreTracker], outcomes: Sequence[RestoreOutcome]
) -> None:
    """Report the end of each table's restore: the outcomes' tables completed
    unless an outcome says otherwise; every other table's restore did not."""
    by_changelog = {o.changelog: o for o in outcomes}
    for tracker in trackers.values():
        outcome = by_changelog.get(tracker.changelog)
        if outcome is None:
            tracker.end(0, 0, 0, completed=False)
        else:
            tracker.end(
                outcome.applied, outcome.skipped, outcome.fenced, completed=outcome.completed
            )


def _foreign_keys(
    fetcher: Any, changelog: TopicPartition, first: int, last: int, epoch: int
) -> set[bytes]:
    """Keys of records in ``changelog[first..last]`` not written with ``epoch``."""
    fetcher.assign([changelog])
    fetcher.seek(changelog, first)
    keys: set[bytes] = set()
    while fetcher.position(changelog) <= last:
        records = fetcher.poll(timeout=0.5, max_records=10_000)
        if not records:
            break  # gone under us (retention): nothing left to shadow anything
        for record in records:
            if record.offset > last:
                break
            written, fence = epoch_of(record)
            if written != epoch and not fence and record.key is not None:
                keys.add(record.key)
    return keys
