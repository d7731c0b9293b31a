"""``StandbyThread``: keeps this worker's standby copies of other members' partitions warm.

One per worker process. It has its own fetcher, manually assigned the
changelog partitions of its standby tasks (partition ``p`` of every table
with a local store), and applies them to local stores laid out exactly as
active ones (:class:`~statestream.tables.standby.StandbyReplica`, the
changelog reader's standby mode). It never processes source records. Every
half second it reads how far the group has committed the tasks' source
partitions, which is what lets a replica apply records of work the active
owner has committed, and only those.

When a standby task becomes active here, :meth:`StandbyThread.release`
hands its open stores to the new partition task, whose restore then reads
only the changelog past them (for a memory store, the hand-over is what
keeps the copy at all).

A standby is a help, not a duty: a log error is logged and retried, a
store error drops the copy (the task is restored from the changelog if it
ever becomes active here); neither stops the worker.

Thread ownership: the standby thread owns the fetcher, the replicas and
their stores; the poll thread calls :meth:`assign` and :meth:`release`
(which wait for the standby thread); :meth:`status` is for any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any

from statestream.errors import LogError, OffsetOutOfRangeError, StateStreamError, StoreError
from statestream.log.base import Admin, Fetcher, Transport
from statestream.stores.base import Store
from statestream.stores.registry import destroy_store
from statestream.tables.manager import TableManager
from statestream.tables.standby import StandbyReplica
from statestream.tables.table import Table
from statestream.types import Record, TopicPartition

__all__ = ["ReplicaStatus", "StandbyThread"]

log = logging.getLogger("statestream.standby")

#: Seconds between reads of the group's committed source offsets.
_COMMITTED_INTERVAL = 0.5
#: Seconds between reads of the changelogs' high watermarks (for lag reports).
_LAG_INTERVAL = 2.0
#: Seconds to wait after a log error before trying again.
_BACKOFF = 1.0
_POLL_TIMEOUT = 0.2
_POLL_RECORDS = 5000


@dataclass(frozen=True)
class ReplicaStatus:
    """One standby copy, for status displays."""

    table: str
    partition: int
    offset: int | None
    lag: int | None
    waiting: bool


class StandbyThread:
    """Tails the changelogs of this member's standby tasks (see the module docstring)."""

    def __init__(
        self,
        manager: TableManager,
        transport: Transport,
        group_id: str,
        source_topics: Sequence[str],
        tables: Sequence[Table[Any, Any]],
    ) -> None:
        self.manager = manager
        self.transport = transport
        self.group_id = group_id
        self.source_topics = tuple(source_topics)
        #: The tables with local stores: the ones a standby copies.
        self.tables = tuple(tables)
        self._commands: SimpleQueue[tuple[str, frozenset[int], Future[Any]]] = SimpleQueue()
        self._replicas: dict[TopicPartition, StandbyReplica] = {}
        self._tasks: frozenset[int] = frozenset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: dict[TopicPartition, ReplicaStatus] = {}
        self._status_lock = threading.Lock()
        self._highs: dict[TopicPartition, int] = {}
        # Replicas whose position was set by StandbyReplica.start.
        self._started: set[TopicPartition] = set()

    # -- the poll thread ---------------------------------------------------------

    def start(self) -> None:
        """Start the thread (it idles until :meth:`assign` gives it tasks)."""
        self._thread = threading.Thread(target=self._run, name="statestream-standby", daemon=True)
        self._thread.start()

    def assign(self, tasks: Iterable[int], timeout: float = 60.0) -> None:
        """Make ``tasks`` this member's standby tasks; wait until the change is made."""
        self._call("assign", frozenset(tasks), timeout)

    def release(self, tasks: Iterable[int], timeout: float = 60.0) -> dict[int, dict[str, Store]]:
        """Stop copying ``tasks`` and return their open stores (per task, per table).

        Called before the tasks become active on this member: their partition
        tasks take the stores over, with everything applied so far written.
        """
        wanted = frozenset(tasks)
        if not wanted & self._tasks:
            return {}
        result: dict[int, dict[str, Store]] = self._call("release", wanted, timeout)
        return result

    def stop(self) -> None:
        """Stop the thread and close every copy's store (waits for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def status(self) -> list[ReplicaStatus]:
        """Every standby copy's offset and lag (any thread)."""
        with self._status_lock:
            return sorted(self._status.values(), key=lambda s: (s.partition, s.table))

    def query_store(self, changelog: TopicPartition) -> tuple[Store, int | None] | None:
        """The standby copy of ``changelog`` and its lag, for a query (any thread).

        The store may close under the caller (the task moved): its reader
        then raises StoreClosedError, which the query reports as moving.
        """
        replica = self._replicas.get(changelog)  # one dict read: atomic
        if replica is None:
            return None
        with self._status_lock:
            status = self._status.get(changelog)
        return replica.store, None if status is None else status.lag

    def _call(self, kind: str, tasks: frozenset[int], timeout: float) -> Any:
        if self._thread is None or not self._thread.is_alive():
            raise StateStreamError("the standby thread is not running")
        future: Future[Any] = Future()
        self._commands.put((kind, tasks, future))
        return future.result(timeout=timeout)

    # -- the standby thread --------------------------------------------------------

    def _run(self) -> None:
        fetcher = self.transport.fetcher(isolation_level="read_committed", reset="error")
        admin = self.transport.admin()
        try:
            self._loop(fetcher, admin)
        except BaseException as exc:
            log.error("the standby thread stopped: %s", exc)
        finally:
            self._close_all()
            for client in (fetcher, admin):
                try:
                    client.close()
                except StateStreamError as exc:
                    log.debug("closing a standby client failed: %s", exc)

    def _loop(self, fetcher: Fetcher, admin: Admin) -> None:
        next_committed = next_lag = 0.0
        while not self._stop.is_set():
            self._serve(fetcher, wait=not self._replicas)
            if not self._replicas:
                continue
            now = time.monotonic()
            try:
                if now >= next_committed:
                    next_committed = now + _COMMITTED_INTERVAL
                    self._refresh_committed(fetcher, admin)
                if now >= next_lag:
                    next_lag = now + _LAG_INTERVAL
                    self._refresh_highs(fetcher)
                records = fetcher.poll(timeout=_POLL_TIMEOUT, max_records=_POLL_RECORDS)
            except OffsetOutOfRangeError as exc:
                log.warning("standby: %s; checking every copy against its changelog", exc)
                self._restart_all(fetcher)
                continue
            except LogError as exc:
                log.warning("standby: %s; trying again in %.0f s", exc, _BACKOFF)
                self._stop.wait(_BACKOFF)
                continue
            self._apply(records, fetcher)

    def _serve(self, fetcher: Fetcher, wait: bool) -> None:
        while True:
            try:
                kind, tasks, future = self._commands.get(timeout=0.2 if wait else 0)
            except Empty:
                return
            wait = False
            try:
                if kind == "assign":
                    self._assign(tasks, fetcher)
                    future.set_result(None)
                else:
                    future.set_result(self._release(tasks, fetcher))
            except BaseException as exc:
                future.set_exception(exc)

    def _assign(self, tasks: frozenset[int], fetcher: Fetcher) -> None:
        for tp in [tp for tp in self._replicas if tp.partition not in tasks]:
            self._drop(tp, close=True)
        self._tasks = tasks
        committed = self._committed_by_task(tasks, None)
        for task in sorted(tasks):
            for table in self.tables:
                changelog = TopicPartition(self.manager.changelog_topic(table), task)
                if changelog not in self._replicas:
                    self._open(table, task, changelog, committed.get(task, {}))
        fetcher.assign(list(self._replicas))
        for tp, replica in list(self._replicas.items()):
            if tp not in self._started:
                self._start(replica, fetcher)

    def _open(
        self,
        table: Table[Any, Any],
        task: int,
        changelog: TopicPartition,
        committed: dict[str, int | None],
    ) -> None:
        try:
            store = self.manager.open_local_store(table, task)
        except StoreError as exc:
            log.warning(
                "standby of table %r partition %d not kept: %s",
                table.name,
                task,
                exc,
                extra={"table": table.name, "partition": task},
            )
            return
        self._replicas[changelog] = StandbyReplica(
            table.name, task, store, changelog, committed, derive=table.derive()
        )

    def _start(self, replica: StandbyReplica, fetcher: Fetcher) -> None:
        replica.start(fetcher)
        self._started.add(replica.changelog)
        self._report(replica)

    def _release(self, tasks: frozenset[int], fetcher: Fetcher) -> dict[int, dict[str, Store]]:
        handed: dict[int, dict[str, Store]] = {}
        for tp in [tp for tp in self._replicas if tp.partition in tasks]:
            replica = self._replicas[tp]
            handed.setdefault(tp.partition, {})[replica.table] = replica.store
            self._drop(tp, close=False)
        self._tasks = self._tasks - tasks
        fetcher.assign(list(self._replicas))
        return handed

    def _drop(self, tp: TopicPartition, *, close: bool) -> None:
        replica = self._replicas.pop(tp)
        self._started.discard(tp)
        with self._status_lock:
            self._status.pop(tp, None)
        if close:
            if not replica.store.persistent:
                self.manager.local.forget(tp)
            try:
                replica.store.close()
            except StateStreamError as exc:
                log.warning("closing the standby store of %s failed: %s", tp, exc)

    def _close_all(self) -> None:
        for tp in list(self._replicas):
            self._drop(tp, close=True)

    def _committed_by_task(
        self, tasks: Iterable[int], admin: Admin | None
    ) -> dict[int, dict[str, int | None]]:
        result: dict[int, dict[str, int | None]] = {}
        if admin is None:
            # Until the first read, nothing counts as committed: the
            # replicas wait instead of applying work that may be redone.
            return {task: dict.fromkeys(self.source_topics) for task in tasks}
        wanted = [TopicPartition(t, task) for task in tasks for t in self.source_topics]
        found = admin.committed_offsets(self.group_id, wanted)
        for tp, offset in found.items():
            result.setdefault(tp.partition, {})[tp.topic] = offset
        return result

    def _refresh_committed(self, fetcher: Fetcher, admin: Admin) -> None:
        committed = self._committed_by_task(self._tasks, admin)
        for replica in self._replicas.values():
            replica.committed_moved(committed.get(replica.partition, {}), fetcher)

    def _refresh_highs(self, fetcher: Fetcher) -> None:
        for tp, replica in self._replicas.items():
            self._highs[tp] = fetcher.watermarks(tp)[1]
            self._report(replica)

    def _restart_all(self, fetcher: Fetcher) -> None:
        for replica in self._replicas.values():
            low, high = fetcher.watermarks(replica.changelog)
            position = fetcher.position(replica.changelog)
            if not low <= position <= high:
                self._start(replica, fetcher)

    def _apply(self, records: list[Record], fetcher: Fetcher) -> None:
        by_tp: dict[TopicPartition, list[Record]] = {}
        for record in records:
            by_tp.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        for tp, batch in by_tp.items():
            replica = self._replicas.get(tp)
            if replica is None:
                continue  # released meanwhile
            try:
                replica.apply(batch, fetcher)
            except StoreError as exc:
                log.error(
                    "standby copy of %s dropped: %s",
                    tp,
                    exc,
                    extra={"table": replica.table, "partition": tp.partition},
                )
                self._drop(tp, close=True)
                self._discard_store(replica)
                fetcher.assign(list(self._replicas))
                continue
            self.manager.local.set(tp, replica.offset())
            self._report(replica)

    def _discard_store(self, replica: StandbyReplica) -> None:
        table = next(t for t in self.tables if t.name == replica.table)
        try:
            destroy_store(table.store_url or self.manager.store_url, table.name, replica.partition)
        except StateStreamError as exc:
            log.warning("deleting the standby store of %s failed: %s", replica.changelog, exc)
        self.manager.local.forget(replica.changelog)

    def _report(self, replica: StandbyReplica) -> None:
        high = self._highs.get(replica.changelog)
        status = ReplicaStatus(
            replica.table,
            replica.partition,
            replica.offset(),
            None if high is None else replica.lag(high),
            replica.waiting,
        )
        with self._status_lock:
            self._status[replica.changelog] = status
