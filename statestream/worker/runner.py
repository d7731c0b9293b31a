"""``Worker``: the poll thread, the partition threads, rebalances and shutdown.

The thread that calls :meth:`Worker.run` is the **poll thread**: the only
thread that touches the group consumer. It polls, hands records to one
:class:`~statestream.worker.partition.PartitionTask` per assigned partition,
pauses partitions whose queue is full (and partitions still restoring),
commits source offsets when a task asks, and runs the rebalance callbacks:

* on assignment, it reads the committed offsets and starts a task, which
  restores the partition's tables before processing (other partitions keep
  processing meanwhile);
* on revocation, it asks the tasks to finish their current record, commit and
  close their stores, serving their commit requests until they have exited,
  so revoked stores are closed before the callback returns;
* on a **lost** assignment (the group went on without this member, e.g. it
  was frozen past its session timeout), it drops the tasks without flushing
  or committing anything: another member owns those partitions now, and has
  fenced this member's changelog records (:mod:`statestream.tables.headers`).

Applications hear of assignments, restores, commits and revocations
through the listener API (:mod:`statestream.listeners`): the app's
listeners and those given to the worker. ``worker.metrics``
(:mod:`statestream.worker.metrics`) holds the worker's Prometheus metrics.

An app with global tables has them restored first, before the group is
joined (:mod:`statestream.worker.globals`), and kept up to date by their
own thread for as long as the worker runs.

Every commit goes through the commit coordinator
(:mod:`statestream.tables.commit`): every interval one round of all ready
partitions (:mod:`statestream.worker.rounds`), run on this thread.

``request_stop()`` (SIGTERM/SIGINT in the CLI) ends the loop the same way:
finish the current record, commit, close stores, leave the group. A fatal
error on any thread (a failed commit, a store, produce or group error) stops
the worker at once without committing anything more; :meth:`Worker.run`
raises it.

While it runs, the garbage collector runs less often than Python's default,
and not during commit rounds (``gc_threshold``, :mod:`statestream.worker.collector`).
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Any

from statestream.app import App
from statestream.assignor import AssignmentInfo, StateAssignor
from statestream.errors import (
    CommitError,
    ConfigurationError,
    LogError,
    ProcessingError,
    StateStreamError,
    StoreCorruptedError,
    TopicMismatchError,
    TopicNotFoundError,
    WorkerError,
)
from statestream.listeners import ListenerSet, PartitionsAssigned, PartitionsRevoked
from statestream.log import Transport, open_transport
from statestream.log.base import Admin, Fetcher, GroupMember, Producer, TopicSpec
from statestream.query import QueryService
from statestream.query.running import register as register_queries
from statestream.query.running import unregister as unregister_queries
from statestream.secrets import redact_url
from statestream.stores.base import Store
from statestream.stores.registry import StoreRegistry
from statestream.tables.commit import CommitCoordinator, CommitRequest
from statestream.tables.local import status_path, write_status
from statestream.tables.manager import TableManager
from statestream.tables.recovery import RestoreProgress
from statestream.tables.table import Table
from statestream.types import Record, TopicPartition
from statestream.web import Routes, WebServer
from statestream.worker.collector import CollectorPace
from statestream.worker.globals import (
    GlobalTablesThread,
    check_global_stores,
    ensure_global_topics,
)
from statestream.worker.lag import SourceWatermarks
from statestream.worker.metrics import WorkerMetrics
from statestream.worker.partition import PartitionTask
from statestream.worker.queries import WorkerStores
from statestream.worker.rebuilds import RebuildBudget
from statestream.worker.restore_log import RestoreLog
from statestream.worker.rounds import run_round
from statestream.worker.standby import StandbyThread

__all__ = ["Worker", "WorkerStatus"]

#: Seconds a worker counts as busy after it last processed records.
_BUSY_FOR = 0.5

log = logging.getLogger("statestream.worker")

_COMMIT_TIMEOUT = 120.0
#: Longest a poll blocks: commit rounds, status and stop requests wait at most this long.
_POLL_TIMEOUT = 0.05
#: Records taken per poll: each poll costs a hand-over to the consumer's
#: helper thread and a queue hand-over per partition, so bigger is cheaper
#: (a word count ran 10-15% faster with 2000 than with 500).
_POLL_RECORDS = 2000

_partition_of = operator.attrgetter("partition")


@dataclass
class WorkerStatus:
    """A snapshot for progress displays."""

    partitions: list[int]
    ready: list[int]
    counters: dict[str, int] = field(default_factory=dict)
    restoring: dict[str, RestoreProgress] = field(default_factory=dict)


class Worker:
    """Runs an :class:`~statestream.app.App` until stopped or a fatal error."""

    def __init__(
        self,
        app: App,
        *,
        on_status: Callable[[WorkerStatus], None] | None = None,
        status_interval: float = 2.0,
        transport: Transport | None = None,
        topic_check_interval: float = 10.0,
        listeners: Sequence[object] = (),
        lag_interval: float = 5.0,
    ) -> None:
        """``listeners`` hear of the worker's events after the app's own
        (:mod:`statestream.listeners`); ``lag_interval`` is the seconds between
        reads of the source partitions' high watermarks (consumer lag metric)."""
        self.app = app
        #: This worker's Prometheus metrics (``worker.metrics.registry``, ``.render()``).
        self.metrics = WorkerMetrics(self)
        self._listeners = ListenerSet([self.metrics, RestoreLog(), *app.listeners, *listeners])
        self._lag = SourceWatermarks(lag_interval)
        #: Seconds between checks of the source topics' partition counts.
        self.topic_check_interval = topic_check_interval
        self._partitions = 0
        # A transport given by the caller is shared (e.g. with a producer
        # thread of the same process) and left open at shutdown.
        self._given_transport = transport
        self.on_status = on_status
        self.status_interval = status_interval
        # The collector's pace while run() runs, and its pause in commit rounds.
        self._pace = CollectorPace(app.config.gc_threshold)
        self._stop = threading.Event()
        self._tasks: dict[int, PartitionTask] = {}
        self._requests: Queue[tuple[Mapping[TopicPartition, int], Future[None]]] = Queue()
        self._paused: set[TopicPartition] = set()
        # Set by partition threads whose queue drained to the resume mark.
        self._drained = threading.Event()
        self._counters: dict[str, int] = {}
        self._counter_lock = threading.Lock()
        self._restoring: dict[str, RestoreProgress] = {}
        self._fatal: BaseException | None = None
        # In-place rebuilds of damaged partitions (poll thread).
        self._rebuilds = RebuildBudget()
        self._transport: Transport | None = None
        self._producer: Producer | None = None
        self._manager: TableManager | None = None
        self._coordinator: CommitCoordinator | None = None
        self._member: GroupMember | None = None
        self._started = False
        self._standby: StandbyThread | None = None
        self._globals: GlobalTablesThread | None = None
        # The latest assignment the assignor received (group client thread)
        # and the last one applied to the standby thread (poll thread).
        self._info_lock = threading.Lock()
        self._info: AssignmentInfo | None = None
        self._applied_info: AssignmentInfo | None = None
        self._probe_at: float | None = None
        self._marks_fetcher: Fetcher | None = None
        self._local_tables: list[Table[Any, Any]] = []
        self._applied_standbys: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
        self._warned_tables: set[str] = set()
        # Set by the poll thread while a commit round runs, for waiting_for().
        self._committing = False
        #: Answers app.query and the HTTP endpoint while the worker runs (any thread).
        self.queries: QueryService | None = None
        self._stores: WorkerStores | None = None
        self._web: WebServer | None = None
        self._worked_at = 0.0  # monotonic time records were last processed
        #: This worker's HTTP endpoint URL, advertised to the group (None: none runs).
        self.endpoint: str | None = None

    # -- control -----------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop gracefully (safe from signal handlers and other threads)."""
        self._stop.set()
        member = self._member
        if member is not None:
            member.interrupt()  # a poll waiting for a group join returns at once

    def count(self, name: str, amount: int) -> None:
        """Add to a counter (any thread)."""
        with self._counter_lock:
            self._counters[name] = self._counters.get(name, 0) + amount
        if name == "processed":
            self._worked_at = time.monotonic()  # one float store: read by _busy

    def counters(self) -> dict[str, int]:
        """Return a copy of the counters (any thread)."""
        with self._counter_lock:
            return dict(self._counters)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(Any thread) Ready when started, in the group and every active partition restored."""
        member = self._member
        tasks = dict(self._tasks)
        restoring = sorted(p for p, t in tasks.items() if not t.ready.is_set())
        in_group = self._started and member is not None and member.generation() >= 0
        stopping = self._stop.is_set() or self._fatal is not None
        ready = in_group and not restoring and not stopping
        return ready, {
            "status": "ready" if ready else "not ready",
            "in_group": in_group,
            "stopping": stopping,
            "partitions": sorted(tasks),
            "restoring": restoring,
        }

    def _busy(self) -> bool:
        """(Any thread) Whether records were processed in the last moment, are queued, or
        a partition restores (queries are paced then: statestream.query.pacing)."""
        if time.monotonic() - self._worked_at < _BUSY_FOR:
            return True
        return any(t.queued() or not t.ready.is_set() for t in list(self._tasks.values()))

    def _stop_serving(self) -> None:
        """No new queries (those in flight finish first: a store's close waits for them)."""
        if self.queries is not None:
            self.app.attach_queries(None)
            unregister_queries(self.app.config.app_id, self.queries)
        if self._web is not None:
            self._web.stop()
            self._web = None

    def _start_web(self) -> None:
        """Start the HTTP endpoint if the app asks for one (before joining: it is advertised)."""
        config = self.app.config
        if config.web_port is None or self.queries is None:
            return
        metrics = getattr(self, "metrics", None)
        routes = Routes(
            self.queries,
            self.health,
            None if metrics is None else metrics.render,
            token=config.web_token,
        )
        self._web = WebServer(routes, config.web_host, config.web_port, token=config.web_token)
        self._web.start()
        self.endpoint = config.web_url or self._web.url

    def waiting_for(self) -> str:
        """What the worker needs the broker for right now, in a few words (any thread).

        Shown in the "brokers unreachable" line (:mod:`statestream.logs`).
        """
        tasks = dict(self._tasks)
        restoring = sorted(p for p, t in tasks.items() if not t.ready.is_set())
        if not self._started:
            return "the worker waits to start (topics, changelogs, global tables, group)"
        if self._committing:
            return (
                f"the worker waits to commit partitions {sorted(tasks)} (changelog and "
                "output records are flushed and acknowledged first)"
            )
        if not tasks:
            return "the worker waits to join the group (it holds no partitions)"
        if restoring:
            return f"the worker waits to restore partitions {restoring} from their changelogs"
        return f"the worker waits to fetch records of partitions {sorted(tasks)}"

    # -- the poll thread -----------------------------------------------------------

    def run(self) -> int:
        """Run on the calling thread until stopped; return an exit code (0 = clean).

        A fatal error is re-raised after a clean shutdown so the caller can
        report it.
        """
        with self._pace:
            try:
                self._start()
                if self._member is not None:  # None: stopped while global tables restored
                    self._loop()
            finally:
                self._shutdown()
        if self._fatal is not None:
            raise self._fatal
        return 0

    def _start(self) -> None:
        config = self.app.config
        self._check_store_urls()
        self._transport = self._given_transport or open_transport(config.broker_url)
        if config.num_standby_replicas and self._transport.group_of_one:
            raise ConfigurationError(
                f"num_standby_replicas={config.num_standby_replicas} needs Kafka: the embedded "
                "log serves one worker process, so there is no other member to keep a standby "
                "copy; set it to 0, or run the workers on Kafka (--broker-url kafka://...)"
            )
        admin = self._transport.admin()
        try:
            partitions = self._ensure_topics(admin)
        finally:
            admin.close()
        self._partitions = partitions
        self._producer = self._transport.producer()
        self._manager = TableManager(
            config.app_id,
            self.app.tables(),
            self._transport,
            config.store_url,
            producer=self._producer,
            progress=self._on_progress,
            events=self._listeners,
        )
        self._coordinator = CommitCoordinator(
            self._manager, self._producer, on_commit=self._listeners.on_commit
        )
        self._stores = WorkerStores(
            self._manager, lambda: self._partitions, lambda: self._standby, self._busy
        )
        self.queries = QueryService(
            self.app.tables(), self.app.global_tables(), self._stores, share=config.query_share
        )
        self.app.attach_queries(self.queries)
        register_queries(config.app_id, self.queries)
        self._start_web()
        self._manager.ensure_changelogs(partitions)
        if self.app.global_tables():
            # Every global table is complete before anything is processed.
            self._globals = GlobalTablesThread(
                self.app, self._transport, progress=self._on_progress
            )
            self._globals.start()
            if not self._globals.wait_ready(self._stop):
                return
        self._member = self._join_group(partitions)
        self._member.subscribe(self.app.source_topics(), self)
        self._lag.start(self._transport)
        self._started = True
        log.info(
            "worker for %r started: %d partitions, broker %s, store %s",
            config.app_id,
            partitions,
            redact_url(config.broker_url),
            redact_url(config.store_url),
        )

    def _join_group(self, partitions: int) -> GroupMember:
        """Make the group member, with the state-aware assignor and the standby thread."""
        assert self._transport is not None
        assert self._manager is not None
        config = self.app.config
        manager = self._manager
        names = [t.name for t in self._local_tables]
        manager.scan_local(partitions, names)
        self._marks_fetcher = self._transport.fetcher(isolation_level="read_committed")
        assignor = StateAssignor(
            self.app.source_topics(),
            [manager.changelog_topic(t) for t in self._local_tables],
            manager.local,
            self._watermarks,
            self._on_info,
            num_standbys=config.num_standby_replicas,
            acceptable_recovery_lag=config.acceptable_recovery_lag,
            endpoint=self.endpoint,
        )
        # A group of one never gets standby or warm-up tasks: no thread for them.
        if self._local_tables and not self._transport.group_of_one:
            self._standby = StandbyThread(
                manager,
                self._transport,
                config.app_id,
                self.app.source_topics(),
                self._local_tables,
            )
            self._standby.start()
        return self._transport.group_member(
            config.app_id, reset="earliest", assignor=assignor, instance_id=config.instance_id
        )

    def _watermarks(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """(Group client thread, leader only) The changelogs' watermarks, for the assignor."""
        fetcher = self._marks_fetcher
        assert fetcher is not None
        return {tp: fetcher.watermarks(tp) for tp in tps}

    def _on_info(self, info: AssignmentInfo) -> None:
        """(Group client thread) Keep the new assignment for the poll thread."""
        with self._info_lock:
            self._info = info
        if self._stores is not None:
            self._stores.set_owners(info.owners)

    def _apply_info(self, promoting: Sequence[int] = ()) -> dict[int, dict[str, Store]]:
        """(Poll thread) Give the standby thread the latest standby tasks.

        Returns the open stores of ``promoting`` (standby tasks that became
        active here), which their partition tasks take over.
        """
        with self._info_lock:
            info = self._info
        handed: dict[int, dict[str, Store]] = {}
        standby = self._standby
        try:
            if standby is not None and promoting:
                handed = standby.release(promoting)
            if info is None or info is self._applied_info:
                return handed
            self._applied_info = info
            if standby is not None:
                standby.assign(info.standby - info.active)
        except (StateStreamError, TimeoutError) as exc:
            # Standbys are a help: without them partitions restore in full.
            log.error("standby copies unavailable: %s", exc)
            self._standby = None
        if info is None:
            return handed
        previous = self._applied_standbys
        if info.standby != previous[0] or info.warmup != previous[1]:
            log.info(
                "standby partitions %s (warm-up %s)", sorted(info.standby), sorted(info.warmup)
            )
        self._applied_standbys = (info.standby, info.warmup)
        if info.probe:
            # Move warm-ups that caught up to their targets (a probing rebalance).
            self._probe_at = time.monotonic() + self.app.config.probing_rebalance_interval
        elif info.warmup == frozenset():
            self._probe_at = None
        return handed

    def _check_store_urls(self) -> None:
        """Refuse bad store URLs before any topic is created or the group joined."""
        registry = StoreRegistry()
        config = self.app.config
        for url in sorted({t.store_url or config.store_url for t in self.app.tables()}):
            registry.check(url)
        check_global_stores(self.app)
        self._local_tables = [
            t for t in self.app.tables() if not registry.is_shared(t.store_url or config.store_url)
        ]

    def _ensure_topics(self, admin: Admin) -> int:
        config = self.app.config
        counts: dict[str, int] = {}
        internal = set(self.app.repartition_topics())
        for topic in self.app.source_topics():
            if topic in internal:
                continue  # created below, with the other sources' partition count
            described = admin.describe_topic(topic)
            if described is None:
                if config.partitions is None:
                    raise TopicNotFoundError(
                        f"source topic {topic!r} does not exist; create it, or set partitions "
                        "(--partitions or STATESTREAM_PARTITIONS) to let statestream create it"
                    )
                described = admin.ensure_topic(TopicSpec(topic, config.partitions))
            counts[topic] = described.partitions
        if len(set(counts.values())) > 1:
            raise TopicMismatchError(
                f"source topics must have the same partition count (tables are sharded by "
                f"partition), got {counts}"
            )
        if not counts:
            raise ConfigurationError(
                "every source topic is a repartition stream; at least one processor must read "
                "an input topic (repartition streams are fed by ctx.group_by)"
            )
        partitions = next(iter(counts.values()))
        ensure_global_topics(admin, self.app, partitions)
        for topic in internal:
            # Re-keyed records: kept a week like Kafka's default, not compacted
            # (every record counts, not only the latest per key).
            admin.ensure_topic(TopicSpec(topic, partitions, cleanup_policy="delete"))
        extra = list(self.app.output_topics())
        if config.error_policy == "dead_letter" or any(
            p.error_policy == "dead_letter" for p in self.app.processors
        ):
            extra.append(config.dead_letter_topic)
        for topic in extra:
            if admin.describe_topic(topic) is None:
                admin.ensure_topic(TopicSpec(topic, partitions))
        return partitions

    def _loop(self) -> None:
        assert self._member is not None
        next_status = time.monotonic() + self.status_interval
        interval = self.app.config.commit_interval
        next_commit = time.monotonic() + interval
        next_topic_check = time.monotonic() + self.topic_check_interval
        while not self._stop.is_set():
            self._serve_commits()
            now = time.monotonic()
            if now >= next_commit:
                self._commit_round()
                next_commit = max(next_commit + interval, time.monotonic() + interval / 2)
            if now >= next_topic_check:
                next_topic_check = now + self.topic_check_interval
                self._check_partition_counts()
                if self._stop.is_set():
                    break
            records = self._member.poll(timeout=self._poll_timeout(), max_records=_POLL_RECORDS)
            self._apply_info()
            if self._probe_at is not None and time.monotonic() >= self._probe_at:
                self._probe_at = None
                log.info("probing rebalance: moving caught-up warm-ups to their targets")
                self._member.request_rebalance()
            batches: dict[int, list[Record]] = {}
            # Polls return records in runs of one partition: group by run
            # (C-level iteration) rather than record by record.
            for partition, run in itertools.groupby(records, _partition_of):
                batches.setdefault(partition, []).extend(run)
            for partition, batch in batches.items():
                task = self._tasks.get(partition)
                if task is None:
                    raise WorkerError(f"received records of unassigned partition {partition}")
                task.enqueue(batch)
            self._backpressure()
            self._check_tasks()
            if self._globals is not None and self._globals.failure is not None:
                self._fail(self._globals.failure)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_interval
                self._write_status()
                if self.on_status is not None:
                    self.on_status(self.status())

    def _check_partition_counts(self) -> None:
        """Stop the worker if a source topic's partition count changed.

        Tables are sharded by source partition: with another count, keys would
        go to other partitions than their state (and the group client would
        ignore the new partitions until its metadata refresh). The worker
        stops with a :class:`~statestream.errors.TopicMismatchError`, without
        committing, instead of running on wrong state.
        """
        assert self._transport is not None
        admin = self._transport.admin()
        try:
            for topic in self.app.source_topics():
                described = admin.describe_topic(topic)
                count = None if described is None else described.partitions
                if count != self._partitions:
                    now = "no longer exists" if count is None else f"now has {count} partitions"
                    self._fail(
                        TopicMismatchError(
                            f"source topic {topic!r} {now}; the worker started with "
                            f"{self._partitions}. Tables are sharded by source partition, so "
                            "their state would no longer match the keys routed to each "
                            "partition: restore the topic's partition count, or move to a new "
                            "app id (new tables) fed from the resized topic"
                        )
                    )
                    return
        except LogError as exc:
            # A broker outage is the group client's to report; check again later.
            log.debug("checking partition counts failed: %s", exc)
        finally:
            admin.close()

    def _poll_timeout(self) -> float:
        """How long the next poll may block.

        While every partition is paused (queues full, or restoring) a poll
        returns nothing and kafka-python sleeps for its whole timeout, so
        wait for a queue to drain instead, resume it, and poll at once.
        """
        tasks = self._tasks
        if not tasks or any(self._tps(p)[0] not in self._paused for p in tasks):
            return _POLL_TIMEOUT
        self._drained.wait(_POLL_TIMEOUT)
        self._drained.clear()
        self._backpressure()
        return 0.0 if all(self._tps(p)[0] in self._paused for p in tasks) else _POLL_TIMEOUT

    def status(self) -> WorkerStatus:
        """A snapshot of partitions and counters."""
        tasks = dict(self._tasks)
        return WorkerStatus(
            sorted(tasks),
            sorted(p for p, t in tasks.items() if t.ready.is_set()),
            self.counters(),
            dict(self._restoring),
        )

    # -- what the metrics read at scrape time (any thread) ---------------------------

    def partition_states(self) -> dict[int, str]:
        """Each active partition's state: ``"restoring"`` or ``"processing"``."""
        tasks = dict(self._tasks)
        return {p: "processing" if t.ready.is_set() else "restoring" for p, t in tasks.items()}

    def consumer_lags(self) -> dict[TopicPartition, int]:
        """Per source partition held: its high watermark minus the position reached.

        The position is the next offset to process (the committed offset
        before the first record, the log start without one); the high
        watermark is the last one read (every ``lag_interval`` seconds).
        """
        tasks = dict(self._tasks)
        lags: dict[TopicPartition, int] = {}
        for tp, (low, high) in self._lag.marks().items():
            task = tasks.get(tp.partition)
            if task is not None:
                position = task.position(tp)
                lags[tp] = max(high - max(low if position is None else position, low), 0)
        return lags

    def standby_lags(self) -> list[tuple[str, int, int]]:
        """``(table, partition, lag)`` of every standby copy whose lag is known."""
        standby = self._standby
        if standby is None:
            return []
        return [(s.table, s.partition, s.lag) for s in standby.status() if s.lag is not None]

    def _write_status(self) -> None:
        """Write the status file ``statestream tables`` reads (roles, offsets, lags)."""
        assert self._manager is not None
        local = self._manager.local
        tables = self.app.tables()
        partitions: dict[int, dict[str, Any]] = {}
        for number, task in self._tasks.items():
            role = "active" if task.ready.is_set() else "restoring"
            entry: dict[str, Any] = {}
            for table in tables:
                changelog = TopicPartition(self._manager.changelog_topic(table), number)
                progress = self._restoring.get(str(changelog))
                lag = progress.remaining if progress is not None and role == "restoring" else 0
                entry[table.name] = {"offset": local.get(changelog), "lag": lag}
            partitions[number] = {"role": role, "tables": entry}
        warmups = self._applied_standbys[1]
        if self._standby is not None:
            for replica in self._standby.status():
                role = "warm-up" if replica.partition in warmups else "standby"
                entry = partitions.setdefault(replica.partition, {"role": role, "tables": {}})
                entry["tables"][replica.table] = {"offset": replica.offset, "lag": replica.lag}
        global_tables = None if self._globals is None else self._globals.status_document()
        try:
            write_status(
                status_path(self.app.config.data_dir, self.app.app_id),
                partitions,
                global_tables,
                endpoint=self.endpoint,
            )
        except OSError as exc:
            log.debug("cannot write the status file: %s", exc)

    def _serve_commits(self, wait: float = 0.0) -> None:
        if self._member is None:  # start-up failed before joining: nothing to commit
            return
        while True:
            try:
                offsets, future = (
                    self._requests.get(timeout=wait) if wait else self._requests.get_nowait()
                )
            except Empty:
                return
            wait = 0.0
            try:
                self._member.commit(offsets)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

    def _commit_round(self) -> None:
        """Commit every partition with one flush and one offset commit (see
        :mod:`statestream.worker.rounds`)."""
        assert self._member is not None
        assert self._coordinator is not None
        tickets = [t for t in (task.request_commit() for task in self._tasks.values()) if t]
        if not tickets:
            return
        tasks = self._tasks
        member = self._member
        coordinator = self._coordinator
        paused = self._pace.paused

        def commit(requests: Sequence[CommitRequest]) -> None:
            with paused():  # a round frees what it builds: no collections meanwhile
                coordinator.commit(requests, member.commit)

        def alive(partition: int) -> bool:
            task = tasks.get(partition)
            return task is not None and task.is_alive()

        self._committing = True
        try:
            run_round(
                tickets,
                alive=alive,
                commit=commit,
                idle=self._serve_commits,
                take_timeout=max(self.app.config.commit_interval, 0.1),
            )
        except CommitError as exc:
            # Every task of the round raises it too; stop now, commit nothing more.
            self._fail(exc)
        finally:
            self._committing = False

    def _fail(self, exc: BaseException) -> None:
        """Stop the worker on a fatal error (the first one is kept)."""
        if self._fatal is None:
            self._fatal = exc
        self.request_stop()

    def _commit_source(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Called on a partition thread: have the poll thread commit, and wait."""
        future: Future[None] = Future()
        self._requests.put((offsets, future))
        future.result(timeout=_COMMIT_TIMEOUT)

    def _tps(self, partition: int) -> list[TopicPartition]:
        return [TopicPartition(t, partition) for t in self.app.source_topics()]

    def _backpressure(self) -> None:
        assert self._member is not None
        limit = self.app.config.max_queued
        for partition, task in self._tasks.items():
            tps = self._tps(partition)
            should_pause = not task.ready.is_set() or task.queued() >= limit
            paused = tps[0] in self._paused
            if should_pause and not paused:
                self._member.pause(tps)
                self._paused.update(tps)
            elif paused and task.ready.is_set() and task.queued() < limit // 2 + 1:
                self._member.resume(tps)
                self._paused.difference_update(tps)

    def _check_tasks(self) -> None:
        for partition, task in list(self._tasks.items()):
            if not task.is_alive() and task.failure is not None:
                failure = task.failure
                if (
                    isinstance(failure, StoreCorruptedError)
                    and not self._stop.is_set()
                    and self._rebuild(task, failure)
                ):
                    continue  # its stores were deleted; a new task restores them
                self._fail(failure)
                return
            if not task.is_alive() and not self._stop.is_set():
                # Ended without being asked (revoked while restoring ends it too,
                # but then it is no longer in _tasks).
                self._tasks.pop(partition, None)

    def _on_progress(self, progress: RestoreProgress) -> None:
        self._restoring[str(progress.changelog)] = progress
        if progress.remaining == 0:
            self._restoring.pop(str(progress.changelog), None)

    # -- rebalance callbacks (poll thread, inside poll) ----------------------------

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Start a task per newly assigned partition (it restores, then processes)."""
        assert self._member is not None
        assert self._manager is not None
        assert self._producer is not None
        assert self._coordinator is not None
        self.metrics.rebalances.inc()
        numbers = sorted({tp.partition for tp in partitions} - set(self._tasks))
        generation = self._member.generation() if numbers else 0
        handed = self._apply_info(numbers)
        for number in numbers:
            self._start_task(number, generation, handed.pop(number, None))
        if numbers:
            log.info(
                "assigned partitions %s (generation %d)",
                numbers,
                generation,
                extra={"partitions": numbers},
            )
            self._watch_lag()
            self._listeners.on_assigned(PartitionsAssigned(tuple(numbers), generation))

    def _start_task(
        self, number: int, generation: int, stores: Mapping[str, Store] | None = None
    ) -> None:
        """(Poll thread) Start partition ``number``'s task: it restores, then processes
        from the committed source offsets."""
        assert self._member is not None
        assert self._manager is not None
        assert self._producer is not None
        committed = {
            topic: self._member.committed(TopicPartition(topic, number))
            for topic in self.app.source_topics()
        }
        task = PartitionTask(
            self.app,
            number,
            self._manager,
            self._producer,
            committed,
            self._commit_source,
            self.count,
            self._drained.set,
            coordinator=self._coordinator,
            generation=generation,
            stores=stores,
            metrics=self.metrics.partition(number),
        )
        task.warned_tables = self._warned_tables  # one key-guard warning per table
        tps = self._tps(number)
        for tp in tps:
            # A partition revoked and assigned back (or rebuilt) keeps its
            # fetch position, which may be past records its task had queued
            # but not processed: always resume from the committed offset
            # (0 when none: the reset policy then picks the log start).
            self._member.seek(tp, committed[tp.topic] or 0)
        self._member.pause(tps)  # until restored
        self._paused.update(tps)
        self._tasks[number] = task
        task.start()

    def _rebuild(self, task: PartitionTask, damage: StoreCorruptedError) -> bool:
        """(Poll thread) Start a new task for ``task``'s partition, whose damaged
        stores its task deleted (see :mod:`statestream.worker.rebuilds`).

        ``False`` when the partition was rebuilt too often lately: the
        caller stops the worker with the error.
        """
        number = task.partition
        if not self._rebuilds.take(number):
            log.error(
                "partition %d: damaged again after %d rebuilds in %.0f s; stopping",
                number,
                self._rebuilds.limit,
                self._rebuilds.window,
                extra={"partition": number},
            )
            return False
        log.warning(
            "partition %d: %s; rebuilding it from its changelogs (rebuild %d)",
            number,
            damage,
            self._rebuilds.count(number),
            extra={"partition": number},
        )
        self.count("rebuilds", 1)
        self.metrics.rebuilds.labels(partition=str(number)).inc()
        assert self._member is not None
        self._start_task(number, self._member.generation())
        return True

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Finish, commit and close revoked partitions before returning."""
        numbers = sorted({tp.partition for tp in partitions} & set(self._tasks))
        self._stop_tasks(numbers)
        if numbers:
            log.info("revoked partitions %s", numbers, extra={"partitions": numbers})
            self._revoked(numbers, lost=False)

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Drop lost partitions: no flush, no commit (another member owns them now)."""
        numbers = sorted({tp.partition for tp in partitions} & set(self._tasks))
        if numbers:
            log.warning(
                "lost partitions %s (this member was out of the group); dropping their "
                "uncommitted work, which their new owner redoes",
                numbers,
                extra={"partitions": numbers},
            )
        self._stop_tasks(numbers, commit=False)
        if numbers:
            self._revoked(numbers, lost=True)

    def _revoked(self, numbers: Sequence[int], *, lost: bool) -> None:
        """(Poll thread) Tell the listeners; stop watching the partitions' lag."""
        self._watch_lag()
        self._listeners.on_revoked(PartitionsRevoked(tuple(numbers), lost))

    def _watch_lag(self) -> None:
        self._lag.watch(tp for number in self._tasks for tp in self._tps(number))

    def _stop_tasks(self, numbers: Sequence[int], *, commit: bool = True) -> None:
        tasks = [self._tasks[n] for n in numbers if n in self._tasks]
        for task in tasks:
            task.stop(commit=commit)
        while any(task.is_alive() for task in tasks):
            self._serve_commits(wait=0.05)
        self._serve_commits()
        for task in tasks:
            self._tasks.pop(task.partition, None)
            self._paused.difference_update(self._tps(task.partition))
            if isinstance(task.failure, StoreCorruptedError):
                # Found in its last commit: its stores are deleted (the task
                # said so) and the next owner rebuilds them; nothing is lost.
                continue
            if task.failure is not None:
                self._fail(task.failure)

    # -- shutdown --------------------------------------------------------------------

    def _shutdown(self) -> None:
        errors: list[BaseException] = []
        self._stop_serving()
        # After a fatal error nothing more is committed (a bad record under
        # the stop policy is the exception: work before it is committed).
        commit = self._fatal is None or isinstance(self._fatal, ProcessingError)
        held = sorted(self._tasks)

        def stop_tasks() -> None:
            self._stop_tasks(held, commit=commit)
            if held:
                self._revoked(held, lost=not commit)

        steps: list[Callable[[], None]] = [stop_tasks, self._lag.stop]
        if self._member is not None:
            steps.append(self._member.close)
        if self._globals is not None:
            steps.append(self._globals.stop)
        if self._standby is not None:
            steps.append(self._standby.stop)
        if self._marks_fetcher is not None:
            steps.append(self._marks_fetcher.close)
        if self._manager is not None:
            steps.append(self._manager.close)
        if self._producer is not None:
            steps.append(self._producer.close)
        if self._transport is not None and self._given_transport is None:
            steps.append(self._transport.close)
        for step in steps:
            try:
                step()
            except (StateStreamError, ConfigurationError, OSError) as exc:
                errors.append(exc)
                log.error("shutdown step failed: %s", exc)
        if errors and self._fatal is None:
            self._fatal = errors[0]
        if self._started:
            log.info("worker for %r stopped", self.app.app_id)
