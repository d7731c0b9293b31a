"""``GlobalTablesThread``: keeps this worker's copies of the app's global tables.

One per worker process (when the app declares global tables). It opens one
store per global table (:class:`~statestream.tables.globaltable.GlobalCopy`),
attaches it to its table so every partition thread reads it, and runs a
thread with its own fetcher, manually assigned every partition of every
global table's topic. The thread first restores each copy to the topic's
high watermarks as they were when it started; :meth:`wait_ready` blocks the
worker until then, so no record is processed against a partial copy (a
long restore logs its progress per topic partition every few seconds, as
partition restores do: :mod:`statestream.worker.restore_log`). Then it
tails the topics for as long as the worker runs, applying what it reads in
batches (the changelog reader's global mode).

Errors: a log error is retried (with a warning at most every
:data:`WARN_INTERVAL` seconds); a restore that makes no progress for
``stall_timeout`` seconds fails with a
:class:`~statestream.errors.RestoreError`; a store error, or anything else
unexpected, ends the thread with :attr:`GlobalTablesThread.failure` set,
which the worker's poll thread turns into a fatal error (the worker stops).
A copy whose fetch position went out of range (the topic was truncated or
recreated) is checked against the topic again, and rebuilt if it must be.

Thread ownership: the poll thread calls :meth:`start`, :meth:`wait_ready`
and :meth:`stop`; the reader thread owns the fetcher and writes the copies;
:meth:`status` and :attr:`failure` are for any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statestream.app import App
from statestream.errors import (
    ConfigurationError,
    LogError,
    OffsetOutOfRangeError,
    RestoreError,
    StateStreamError,
    StoreCorruptedError,
)
from statestream.log.base import Admin, Fetcher, TopicSpec, Transport
from statestream.stores.base import Store
from statestream.stores.registry import StoreRegistry, destroy_store, open_store
from statestream.tables.globaltable import GlobalCopy, GlobalTable
from statestream.tables.recovery import ProgressCallback
from statestream.tables.restore_events import RestoreTracker
from statestream.types import Record, TopicPartition
from statestream.worker.restore_log import RestoreLog

__all__ = [
    "WARN_INTERVAL",
    "GlobalStatus",
    "GlobalTablesThread",
    "check_global_stores",
    "ensure_global_topics",
]

log = logging.getLogger("statestream.globals")

#: Seconds between two warnings about log errors of the reader thread.
WARN_INTERVAL = 30.0
#: Seconds between reads of the topics' high watermarks (for lag reports).
_LAG_INTERVAL = 2.0
#: Seconds to wait after a log error before trying again.
_BACKOFF = 1.0
_POLL_TIMEOUT = 0.2
_POLL_RECORDS = 5000


@dataclass(frozen=True)
class GlobalStatus:
    """One topic partition of one global table's copy, for status displays."""

    table: str
    topic: str
    partition: int
    offset: int | None
    lag: int | None


def check_global_stores(app: App) -> None:
    """Refuse global tables whose store URL is bad or names a shared (remote) store.

    Every worker keeps its own copy, so a store every worker shares would be
    written by all of them at once.
    """
    registry = StoreRegistry()
    for table in app.global_tables():
        url = table.store_url or app.config.store_url
        registry.check(url)
        if registry.is_shared(url):
            raise ConfigurationError(
                f"global table {table.name!r} needs a local store (every worker keeps its own "
                f"copy), but its store is shared by every worker; give it "
                "store_url='leveldb:///path' or 'memory://'"
            )


def ensure_global_topics(admin: Admin, app: App, partitions: int) -> None:
    """Create the global tables' topics that are missing (compacted).

    A default topic (``<app id>-<name>-changelog``) is validated like a
    changelog: ``partitions`` partitions, compacted. A topic the user named
    is used as it is when it exists.
    """
    for table in app.global_tables():
        topic = app.global_topic(table)
        spec = TopicSpec(topic, partitions, cleanup_policy="compact")
        # ensure_topic also validates an existing topic: only the default one's.
        if table.topic is None or admin.describe_topic(topic) is None:
            admin.ensure_topic(spec)


class GlobalTablesThread:
    """Restores, then tails, this worker's global table copies (see the module docstring)."""

    def __init__(
        self,
        app: App,
        transport: Transport,
        *,
        progress: ProgressCallback | None = None,
        stall_timeout: float = 60.0,
        batch_size: int = 10_000,
        restore_log: RestoreLog | None = None,
    ) -> None:
        self.app = app
        self.transport = transport
        self.progress = progress
        self.stall_timeout = stall_timeout
        self.batch_size = batch_size
        #: Why the thread stopped on its own (read by the poll thread).
        self.failure: BaseException | None = None
        self._tables: list[GlobalTable[Any, Any]] = app.global_tables()
        self._copies: dict[str, GlobalCopy] = {}  # by topic
        # The high watermark each partition is restored to before processing.
        self._targets: dict[TopicPartition, int] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_warning = 0.0
        # Logs restore progress every few seconds (statestream.worker.restore_log).
        self._restore_log = restore_log or RestoreLog()

    # -- the poll thread ---------------------------------------------------------

    def start(self) -> None:
        """Open the copies' stores, attach them to their tables, start the thread."""
        admin = self.transport.admin()
        try:
            counts = {}
            for table in self._tables:
                topic = self.app.global_topic(table)
                described = admin.describe_topic(topic)
                if described is None:
                    raise RestoreError(
                        f"topic {topic!r} of global table {table.name!r} does not exist; the "
                        "worker creates it at start: check that nothing deleted it, then restart"
                    )
                counts[table.name] = described.partitions
        finally:
            admin.close()
        try:
            for table in self._tables:
                topic = self.app.global_topic(table)
                store = self._open(table)
                copy = GlobalCopy(
                    table.name,
                    topic,
                    counts[table.name],
                    store,
                    batch_size=self.batch_size,
                    progress=self.progress,
                )
                self._copies[topic] = copy
                table.attach(copy)
        except BaseException:
            self._close_copies()
            raise
        self._thread = threading.Thread(target=self._run, name="statestream-globals", daemon=True)
        self._thread.start()

    def _open(self, table: GlobalTable[Any, Any]) -> Store:
        url = table.store_url or self.app.config.store_url
        try:
            return open_store(url, table.name, 0)
        except StoreCorruptedError as exc:
            log.warning(
                "the store of global table %r is damaged (%s); deleting it and rebuilding it "
                "from its topic",
                table.name,
                exc,
            )
            destroy_store(url, table.name, 0)
            return open_store(url, table.name, 0)

    def wait_ready(self, stop: threading.Event, poll: float = 0.1) -> bool:
        """Block until every copy is restored (True) or ``stop`` is set (False).

        Raises the thread's failure (a :class:`RestoreError` when a restore
        cannot finish).
        """
        while not self._ready.wait(poll):
            if self.failure is not None:
                raise self.failure
            if stop.is_set():
                return False
        return True

    def stop(self) -> None:
        """Stop and join the thread, detach the copies and close their stores."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close_copies()

    def _close_copies(self) -> None:
        errors: list[StateStreamError] = []
        for table in self._tables:
            copy = self._copies.pop(self.app.global_topic(table), None)
            if copy is None:
                continue
            table.detach(copy)
            try:
                copy.close()
            except StateStreamError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def status(self) -> list[GlobalStatus]:
        """Every copy's offset and lag per topic partition (any thread)."""
        found: list[GlobalStatus] = []
        for copy in list(self._copies.values()):
            lags = copy.lag()
            for partition, offset in copy.offsets().items():
                found.append(
                    GlobalStatus(copy.name, copy.topic, partition, offset, lags.get(partition))
                )
        return found

    def status_document(self) -> dict[str, Any]:
        """:meth:`status` as the worker's status file holds it (see ``write_status``)."""
        document: dict[str, Any] = {}
        for entry in self.status():
            table = document.setdefault(entry.table, {"topic": entry.topic, "partitions": {}})
            table["partitions"][str(entry.partition)] = {"offset": entry.offset, "lag": entry.lag}
        return document

    # -- the reader thread -------------------------------------------------------

    def _run(self) -> None:
        fetcher: Fetcher | None = None
        try:
            fetcher = self.transport.fetcher(isolation_level="read_committed", reset="error")
            self._restore(fetcher)
            self._ready.set()
            self._tail(fetcher)
        except BaseException as exc:
            self.failure = exc
            log.error("the global tables reader stopped: %s", exc)
        finally:
            if fetcher is not None:
                try:
                    fetcher.close()
                except StateStreamError as exc:
                    log.debug("closing the global tables fetcher failed: %s", exc)

    def _all(self) -> list[TopicPartition]:
        return [tp for copy in self._copies.values() for tp in copy.topic_partitions()]

    def _restore(self, fetcher: Fetcher) -> None:
        began = time.monotonic()
        self._retry(lambda: self._start_copies(fetcher))
        # The same progress lines as partition restores, per topic partition.
        trackers = {
            tp: RestoreTracker(self._restore_log, self._copies[tp.topic].name, tp)
            for tp in self._targets
        }
        for tp, tracker in trackers.items():
            tracker.begin(fetcher.position(tp), self._targets[tp], None)
        last_progress = time.monotonic()
        applied = 0
        while not self._stop.is_set():
            targets = self._targets
            left = {tp: high for tp, high in targets.items() if fetcher.position(tp) < high}
            if not left:
                break
            if time.monotonic() - last_progress > self.stall_timeout:
                shown = ", ".join(
                    f"{tp} at {fetcher.position(tp)} of {high}" for tp, high in left.items()
                )
                raise RestoreError(
                    f"restoring global tables made no progress for {self.stall_timeout:g} s "
                    f"({shown}); check the broker, then restart: the copies keep what was applied"
                )
            records = self._poll(fetcher)
            if records is None:
                continue
            if records:
                last_progress = time.monotonic()
                applied += self._apply(records)
            read = Counter(TopicPartition(r.topic, r.partition) for r in records)
            for tp, high in left.items():
                position = fetcher.position(tp)
                self._copies[tp.topic].report(tp, max(high - position, 0))
                trackers[tp].batch(position, read[tp])
        if self._stop.is_set():
            for tracker in trackers.values():
                tracker.end(0, 0, 0, completed=False)
            return
        for tp in self._targets:
            copy = self._copies[tp.topic]
            copy.advance(tp, fetcher.position(tp))
            copy.report(tp, 0, force=True)
            trackers[tp].end(0, 0, 0, completed=True)
        log.info(
            "global tables %s restored: %d records applied in %.1f s",
            sorted(c.name for c in self._copies.values()),
            applied,
            time.monotonic() - began,
        )

    def _start_copies(self, fetcher: Fetcher) -> None:
        fetcher.assign(self._all())
        for copy in self._copies.values():
            self._targets.update(copy.start(fetcher))

    def _tail(self, fetcher: Fetcher) -> None:
        next_lag = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + _LAG_INTERVAL
                self._retry(lambda: self._refresh(fetcher), once=True)
            records = self._poll(fetcher)
            if records:
                self._apply(records)

    def _refresh(self, fetcher: Fetcher) -> None:
        """Read the high watermarks (for the lag) and count gaps already read past."""
        for copy in self._copies.values():
            highs = {tp: fetcher.watermarks(tp)[1] for tp in copy.topic_partitions()}
            for tp in highs:
                copy.advance(tp, fetcher.position(tp))
            copy.set_highs(highs)

    def _poll(self, fetcher: Fetcher) -> list[Record] | None:
        """Poll once; ``None`` after a log error (logged, and waited out)."""
        try:
            return fetcher.poll(timeout=_POLL_TIMEOUT, max_records=_POLL_RECORDS)
        except OffsetOutOfRangeError as exc:
            self._warn(f"{exc}; checking every copy against its topic")
            self._retry(lambda: self._recheck(fetcher), once=True)
        except LogError as exc:
            self._warn(f"{exc}; trying again in {_BACKOFF:.0f} s")
            self._stop.wait(_BACKOFF)
        return None

    def _recheck(self, fetcher: Fetcher) -> None:
        for copy in self._copies.values():
            tps = copy.topic_partitions()
            marks = {tp: fetcher.watermarks(tp) for tp in tps}
            if any(not low <= fetcher.position(tp) <= high for tp, (low, high) in marks.items()):
                self._targets.update(copy.start(fetcher))

    def _apply(self, records: list[Record]) -> int:
        by_topic: dict[str, dict[int, list[Record]]] = {}
        for record in records:
            by_topic.setdefault(record.topic, {}).setdefault(record.partition, []).append(record)
        applied = 0
        for topic, batches in by_topic.items():
            copy = self._copies.get(topic)
            if copy is not None:
                applied += copy.apply(batches)  # a StoreError ends the thread: the worker stops
        return applied

    def _retry(self, call: Callable[[], None], once: bool = False) -> None:
        """Run ``call``, retrying log errors until it succeeds or the thread stops
        (``once``: no retry, the caller's loop calls it again later)."""
        began = time.monotonic()
        while not self._stop.is_set():
            try:
                call()
                return
            except LogError as exc:
                if once:
                    self._warn(f"{exc}; trying again later")
                    return
                if time.monotonic() - began > self.stall_timeout:
                    raise RestoreError(
                        f"global tables: their topics cannot be read ({exc}); check the broker, "
                        "then restart"
                    ) from exc
                self._warn(f"{exc}; trying again in {_BACKOFF:.0f} s")
                self._stop.wait(_BACKOFF)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + WARN_INTERVAL
            log.warning("global tables: %s", message)
        else:
            log.debug("global tables: %s", message)
