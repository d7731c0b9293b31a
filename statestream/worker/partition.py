"""One partition's thread: restore, then process records and commit.

Thread ownership: :class:`PartitionTask` *is* the partition thread. It owns
the partition's table shards, stores, processor instances and its queue's
consumer side, except while it is parked in a commit round, when the poll
thread holds them (:mod:`statestream.worker.rounds`). It never touches the
group consumer: when it commits alone it runs the commit coordinator
(:mod:`statestream.tables.commit`) with a ``commit_source`` that hands the
source offsets to the poll thread and waits.

Errors are routed by kind. Only decode errors and exceptions raised by user
code go through the record error policy (``stop``, ``skip``,
``dead_letter``). Store, produce, commit and group errors (and restore
errors) stop the worker whatever the policy, without committing anything:
they say nothing about the record being processed, and skipping it would
lose it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from statestream.app import App
from statestream.context import ORIGIN, Context, Message
from statestream.errors import (
    CommitError,
    ConfigurationError,
    DamagedStoresError,
    DecodeError,
    LogError,
    ProcessingError,
    RestoreError,
    StateStreamError,
    StoreCorruptedError,
    StoreError,
    WorkerError,
)
from statestream.log.base import Producer
from statestream.processor import Processor
from statestream.stores.base import Store
from statestream.tables.commit import CommitCoordinator, CommitRequest, CommitSource
from statestream.tables.keyguard import KeyGuard
from statestream.tables.manager import TableManager
from statestream.tables.shard import TableShard
from statestream.tables.windowed import WindowedTable
from statestream.tables.windowed_shard import WindowedShard
from statestream.types import Headers, Record, TopicPartition
from statestream.worker.counters import PartitionCounters
from statestream.worker.outputs import OutputBuffer
from statestream.worker.rounds import CommitTicket

__all__ = ["CommitSource", "PartitionTask"]

log = logging.getLogger("statestream.worker")


_new_tuple = tuple.__new__

#: Errors that stop the worker whatever the record error policy says.
#: A strict key guard's ConfigurationError is fatal too: the app must be fixed.
FATAL_ERRORS = (
    StoreError,
    LogError,
    CommitError,
    RestoreError,
    WorkerError,
    ConfigurationError,
)

#: Headers added to dead-lettered records.
ERROR_HEADER = "statestream-error"
ERROR_ORIGIN = "statestream-error-origin"


class _Route(NamedTuple):
    """How records of one source topic are handled on this partition."""

    tp: TopicPartition
    decode_key: Callable[[bytes], Any]
    decode_value: Callable[[bytes], Any]
    processors: tuple[Processor, ...]
    #: For a repartition topic: the shard of its table of origins applied.
    seen: TableShard | None = None


class PartitionTask(threading.Thread):
    """Restores partition ``partition`` and then processes its records."""

    def __init__(
        self,
        app: App,
        partition: int,
        manager: TableManager,
        producer: Producer,
        committed: Mapping[str, int | None],
        commit_source: CommitSource,
        counters: Callable[[str, int], None],
        on_drained: Callable[[], None] | None = None,
        *,
        coordinator: CommitCoordinator | None = None,
        generation: int = 0,
        stores: Mapping[str, Store] | None = None,
        metrics: PartitionCounters | None = None,
    ) -> None:
        super().__init__(name=f"statestream-partition-{partition}", daemon=True)
        #: This partition's metrics, kept by the worker across tasks (this
        #: thread writes them; see :mod:`statestream.worker.counters`).
        self.metrics = metrics if metrics is not None else PartitionCounters(partition)
        # Seconds spent parked in commit rounds (left out of processing time).
        self._parked = 0.0
        #: Tables warned about by the key guard, shared by the worker's tasks.
        self.warned_tables: set[str] = set()
        #: Open stores handed over by the standby thread (this task owns them now).
        self._handed = dict(stores or {})
        self.app = app
        self.partition = partition
        # The fields of this partition's log lines (statestream.logs).
        self._where = {"partition": partition}
        self.manager = manager
        self.producer = producer
        self.committed = dict(committed)
        self.commit_source = commit_source
        self.coordinator = coordinator or CommitCoordinator(manager, producer)
        self.generation = generation
        self.count = counters
        # Called when the queue falls to half of max_queued, where the poll
        # thread resumes a paused partition: it need not wait for its poll
        # timeout to notice.
        self._on_drained = on_drained
        self._low_water = app.config.max_queued // 2
        # Batches of records from one poll; handing over a list per poll, not
        # a record at a time, keeps queue locking off the per-record path.
        self.queue: queue.Queue[list[Record]] = queue.Queue()
        self._queued = 0
        self._queued_lock = threading.Lock()
        self.stopping = threading.Event()
        # Set with stopping when the partition is dropped without a commit
        # (lost to another member, or the worker stops on a fatal error).
        self._abandon = False
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        # Next offset to process per source topic partition (what we commit).
        self._positions: dict[TopicPartition, int] = {}
        self._uncommitted = False
        # The last output record (ctx.send, dead letters) sent per destination
        # partition since the last commit: each must be acknowledged before
        # source offsets move.
        self._out = OutputBuffer(producer, producer.partitions_for, self.metrics)
        self._processors: dict[str, list[Processor]] = {}
        # Per source topic, what every record of it needs (built once).
        self._routes: dict[str, _Route] = {}
        #: Set by the poll thread to ask for this partition's part of a commit
        #: round; taken by the partition thread between two records.
        self.ticket: CommitTicket | None = None
        # Windowed tables of this partition that report closes, with the
        # processor instances declaring each (they hear of its closed windows);
        # and every windowed table of it (each hears that a record ended).
        self._windowed: list[tuple[WindowedShard, WindowedTable, tuple[Processor, ...]]] = []
        self._window_shards: list[WindowedShard] = []

    # -- called from the poll thread ---------------------------------------------

    def stop(self, *, commit: bool = True) -> None:
        """Ask the task to finish its current record, commit, close and exit.

        With ``commit=False`` (a lost partition, a fatal error elsewhere) it
        commits nothing: its uncommitted work is dropped and redone by the
        next owner.
        """
        if not commit:
            self._abandon = True
        self.stopping.set()

    def request_commit(self) -> CommitTicket | None:
        """Hand the task a ticket for a commit round, if it has anything to commit."""
        if not self._uncommitted or not self.ready.is_set() or self.stopping.is_set():
            return None
        ticket = CommitTicket(self.partition)
        self.ticket = ticket
        self.queue.put([])  # wakes the task if it waits for records
        return ticket

    # -- the thread --------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported to the poll thread, which stops the worker
            self.failure = exc
            log.error("partition %d stopped: %s", self.partition, exc, extra=self._where)
        finally:
            self._close()

    def _run(self) -> None:
        handed, self._handed = self._handed, {}
        self.manager.open_partition(self.partition, handed)
        outcomes = self.manager.restore_partition(
            self.partition, self.committed, self.stopping, generation=self.generation
        )
        if not all(o.completed for o in outcomes):
            return  # revoked while restoring: what was applied is kept
        log.info(
            "partition %d ready: replayed %d changelog records%s",
            self.partition,
            sum(o.applied + o.skipped + o.fenced for o in outcomes),
            " (continuing its standby copy)" if handed else "",
            extra=self._where,
        )
        self.manager.bind(self.partition)
        self._guard_keys()
        ctx = Context(self._out.add, self.app.codecs, self._repartition)
        self.manager.set_event_source(self.partition, lambda: ctx.message)
        instances = self._start_processors()
        self.ready.set()
        while not self.stopping.is_set():
            try:
                batch = self.queue.get(timeout=0.05)
            except queue.Empty:
                batch = []
            done = 0
            began = time.perf_counter()
            parked = self._parked
            try:
                for record in batch:
                    if self.stopping.is_set():
                        break  # the rest is not committed: the next owner reads it
                    self._handle(record, ctx)
                    done += 1
                    if self.ticket is not None:
                        self._join_round()
            except ProcessingError:
                # The bad record is rolled back and not in the positions:
                # commit everything before it, then stop the worker.
                self.commit()
                raise
            finally:
                self._took(len(batch), done, began, parked)
            self._out.hand_over()  # at least every processed batch
            if self.ticket is not None:
                self._join_round()
        if self._abandon:
            self._decline_ticket()  # lost, or a fatal error: nothing is committed
        else:
            self.commit()
        for proc in instances:
            proc.on_revoked(self.partition)

    def _guard_keys(self) -> None:
        """Check the keys entering each user table (see statestream.tables.keyguard)."""
        sources = self.app.source_topics()
        partitions = self.producer.partitions_for(sources[0])
        internal = {t.name for t in (self.app.dedup_table(s) for s in sources) if t is not None}
        for table in self.app.tables():
            if table.name in internal:
                continue
            shard = self.manager.shard(table.name, self.partition)
            shard.key_guard = KeyGuard(
                table.name,
                self.partition,
                partitions,
                shard.key_codec,
                lambda topic: self.app.codecs(topic)[0],
                strict=table.strict_keys or self.app.config.strict_keys,
                warned=self.warned_tables,
            )

    def _start_processors(self) -> list[Processor]:
        """Create this partition's processor instances and routes; call on_assigned."""
        instances = [cls() for cls in self.app.processors]
        for proc in instances:
            self._bind_views(proc)
        for topic in self.app.source_topics():
            self._processors[topic] = [p for p in instances if topic in self.app.topics_of(type(p))]
            key_codec, value_codec = self.app.codecs(topic)
            dedup = self.app.dedup_table(topic)
            self._routes[topic] = _Route(
                TopicPartition(topic, self.partition),
                key_codec.decode,
                value_codec.decode,
                tuple(self._processors[topic]),
                None if dedup is None else self.manager.shard(dedup.name, self.partition),
            )
        for table in self.app.tables():
            if isinstance(table, WindowedTable):
                declaring = tuple(
                    p
                    for p in instances
                    if table in type(p).tables()
                    and type(p).on_window_close is not Processor.on_window_close
                )
                shard = self.manager.windowed(table.name, self.partition)
                self._window_shards.append(shard)
                # Nobody to tell: closing only moves the watermark (no reads).
                shard.report_closes = bool(declaring) or table.final_topic is not None
                if shard.report_closes:
                    self._windowed.append((shard, table, declaring))
        for proc in instances:
            proc.on_assigned(self.partition)
        return instances

    def _bind_views(self, proc: Processor) -> None:
        # Each instance serves this partition only: give it views of its
        # tables fixed to this partition's shards (no thread-local lookup
        # per table access). Tables reached otherwise (a module-level
        # name) still find the shard bound on this thread.
        for attribute, table in type(proc).table_attributes().items():
            view = table.view(self.manager.shard(table.name, self.partition))
            # With __slots__ or a read-only property, the class's table serves.
            with contextlib.suppress(AttributeError):
                setattr(proc, attribute, view)

    def _close(self) -> None:
        for store in self._handed.values():  # never opened: the task failed first
            store.close()
        try:
            self.manager.close_partition(self.partition)
        except StateStreamError as exc:
            log.error("closing partition %d failed: %s", self.partition, exc, extra=self._where)
            if self.failure is None:
                self.failure = exc
        if isinstance(self.failure, StoreCorruptedError):
            # Rebuilt from the changelog (by the worker at once, or by the
            # next owner) instead of failing on the same damage again.
            log.warning(
                "partition %d: deleting its damaged stores; they are rebuilt from the changelog",
                self.partition,
                extra=self._where,
            )
            try:
                self.manager.discard_damaged(self.partition)
            except StateStreamError as exc:
                log.error(
                    "deleting the damaged stores of partition %d failed: %s",
                    self.partition,
                    exc,
                    extra=self._where,
                )

    # -- processing --------------------------------------------------------------

    def _handle(self, record: Record, ctx: Context) -> None:
        topic, offset = record.topic, record.offset
        route = self._routes[topic]
        self.manager.begin_record(self.partition, topic, offset)
        if route.seen is not None and _seen_before(route.seen, record):
            self._positions[route.tp] = offset + 1
            self._uncommitted = True
            self.count("duplicates", 1)
            return
        mark = self._out.mark()
        try:
            key, value = record.key, record.value
            message = _new_tuple(  # Message(...) without its generated __new__ frame
                Message,
                (
                    topic,
                    record.partition,
                    offset,
                    None if key is None else route.decode_key(key),
                    None if value is None else route.decode_value(value),
                    record.timestamp,
                    record.headers,
                ),
            )
            ctx.message = message
            for proc in route.processors:
                proc.process(message, ctx)
            if self._windowed:
                self._window_closes(ctx)
        except FATAL_ERRORS:
            raise  # not the record's fault: the worker stops, nothing is committed
        except Exception as exc:  # the error policy decides; nothing is dropped silently
            self.manager.rollback_record(self.partition)
            self._out.rollback(mark)
            if ctx.message is None:
                exc = _decode_error(route, record, exc)
            self._on_error(record, exc)
        finally:
            ctx.message = None
            for shard in self._window_shards:
                shard.end_record()  # a write before the next record finds no record
        self._positions[route.tp] = offset + 1
        self._uncommitted = True

    def _window_closes(self, ctx: Context) -> None:
        """Hand the windows the record closed to on_window_close and the final topic.

        Part of the record's processing: its outputs commit with it, and an
        error goes through the error policy (and rolls the closing back, so
        the windows close again with a later record: at-least-once).
        """
        for shard, table, declaring in self._windowed:
            if not shard._events:  # take_closed() has nothing: most records close nothing
                continue
            closed = shard.take_closed()
            final = table.final_topic
            for window, key, value in closed:
                for proc in declaring:
                    proc.on_window_close(key, window, value)
                if final is not None:
                    ctx.send(final, key, {"start": window.start, "end": window.end, "value": value})

    def _on_error(self, record: Record, exc: Exception) -> None:
        self.metrics.failed += 1
        where = f"topic {record.topic!r} partition {record.partition} offset {record.offset}"
        policies = {type(p).error_policy for p in self._processors.get(record.topic, ())}
        policies.discard(None)
        policy = policies.pop() if len(policies) == 1 else self.app.config.error_policy
        if policy == "skip":
            log.warning(
                "skipping the record at %s: %s: %s",
                where,
                type(exc).__name__,
                exc,
                extra={"partition": self.partition, "topic": record.topic},
            )
            self.count("skipped", 1)
            return
        if policy == "dead_letter":
            headers: Headers = (
                *record.headers,
                (ERROR_HEADER, f"{type(exc).__name__}: {exc}".encode()),
                (ERROR_ORIGIN, f"{record.topic}:{record.partition}:{record.offset}".encode()),
            )
            self._out.add(
                self.app.config.dead_letter_topic,
                record.key,
                record.value,
                record.partition,
                headers,
            )
            log.warning(
                "sent the record at %s to %s: %s",
                where,
                self.app.config.dead_letter_topic,
                exc,
                extra={"partition": self.partition, "topic": record.topic},
            )
            self.count("dead_lettered", 1)
            return
        raise ProcessingError(
            f"processing the record at {where} failed: {type(exc).__name__}: {exc} "
            "(error policy 'stop'; choose 'skip' or 'dead_letter' to continue past bad records)"
        ) from exc

    def _repartition(self, name: str) -> str:
        return self.app.repartition_topic(name)

    # -- commits (the protocol itself: statestream.tables.commit) ---------------

    def _request(self) -> CommitRequest:
        self._out.hand_over()  # outputs are checked by step 2 like changelogs
        deliveries = tuple(self._out.deliveries.values())
        return CommitRequest(self.partition, dict(self._positions), deliveries)

    def _committed(self) -> None:
        self._uncommitted = False
        self._out.committed()
        self.count("commits", 1)

    def _decline_ticket(self) -> None:
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            ticket.decline()

    def _join_round(self) -> None:
        """Park in the poll thread's commit round (see :mod:`statestream.worker.rounds`)."""
        ticket, self.ticket = self.ticket, None
        if ticket is None:
            return
        began = time.perf_counter()
        try:
            self._park(ticket)
        finally:
            # Committing is not processing: the processing-time metric leaves it out.
            self._parked += time.perf_counter() - began

    def _park(self, ticket: CommitTicket) -> None:
        """Hand this partition's request to the round and wait for the round to end."""
        if not ticket.park(self._request()):
            # The round went on without this partition (a record outlasted
            # the wait). Commit alone now, or a partition whose records
            # always take that long would never commit until it stops.
            self.commit()
            return
        ticket.wait_done()  # the poll thread runs the coordinator meanwhile
        self._committed()

    def commit(self) -> None:
        """Commit this partition alone: a round of one of the commit coordinator
        (stopping, before a fatal error of a bad record, or after missing a round)."""
        self._decline_ticket()
        if not self._uncommitted:
            return
        try:
            self.coordinator.commit([self._request()], self.commit_source)
        except DamagedStoresError as exc:
            raise exc.damaged[self.partition] from exc  # the task ends; its stores are rebuilt
        self._committed()

    def enqueue(self, records: list[Record]) -> None:
        """Hand the records of one poll to this task (poll thread)."""
        with self._queued_lock:
            self._queued += len(records)
        self.queue.put(records)

    def _took(self, taken: int, processed: int, began: float, parked: float) -> None:
        """A batch is done: ``taken`` records left the queue, ``processed`` of them
        were processed from ``began`` (``perf_counter``) on, when ``_parked`` was ``parked``."""
        if processed:
            spent = time.perf_counter() - began - (self._parked - parked)
            self.metrics.batch(processed, spent)
        with self._queued_lock:
            self._queued -= taken
            drained = taken and self._queued <= self._low_water
        if drained and self._on_drained is not None:
            self._on_drained()
        if processed:
            self.count("processed", processed)

    def queued(self) -> int:
        """Records handed over and not yet taken (any thread)."""
        return self._queued

    def position(self, tp: TopicPartition) -> int | None:
        """The next offset of source partition ``tp`` to process (any thread).

        The committed offset until a record was processed; ``None`` when
        nothing was ever committed.
        """
        position = self._positions.get(tp)
        return self.committed.get(tp.topic) if position is None else position

    def describe(self) -> dict[str, Any]:
        """A small status snapshot (any thread)."""
        return {
            "partition": self.partition,
            "ready": self.ready.is_set(),
            "queued": self.queued(),
            "alive": self.is_alive(),
        }


def _decode_error(route: _Route, record: Record, exc: Exception) -> Exception:
    """Say whether the key or the value of ``record`` failed to decode (off the hot path)."""
    what = "value"
    if record.key is not None:
        try:
            route.decode_key(record.key)
        except Exception:
            what = "key"
    error = DecodeError(f"the record's {what} could not be decoded: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _seen_before(seen: TableShard, record: Record) -> bool:
    """Whether this re-keyed record was applied already; if not, note it as applied.

    Records of one origin partition reach a repartition partition in the
    order they were sent, so the last applied (offset, n) per origin is
    enough: a record at or below it was sent again after its origin's crash
    between flush and commit. The note is a table write, committed (and
    rolled back) with the record's other changes.
    """
    origin = next((v for k, v in record.headers if k == ORIGIN), None)
    if origin is None:
        return False  # not written by group_by: nothing to compare
    topic, partition, offset, n = origin.decode().rsplit(":", 3)
    where = f"{topic}:{partition}"
    position = [int(offset), int(n)]
    last = seen.get(where)
    if last is not None and position <= last:
        return True
    seen.set(where, position)
    return False
