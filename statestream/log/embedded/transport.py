"""``EmbeddedTransport``: the embedded log's transport and its admin.

Part of the embedded log (see :mod:`statestream.log.embedded`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from statestream.config import options_from_strings
from statestream.errors import ConfigurationError, LogError, TransactionError
from statestream.log.base import (
    Admin,
    IsolationLevel,
    PartitionAssignor,
    ResetPolicy,
    TopicDescription,
    TopicSpec,
    Transport,
)
from statestream.log.embedded.cleaner import cleanup
from statestream.log.embedded.clients import EmbeddedFetcher, EmbeddedGroupMember
from statestream.log.embedded.local_socket import LocalLogServer
from statestream.log.embedded.meta import EmbeddedOptions
from statestream.log.embedded.producer import EmbeddedProducer
from statestream.log.embedded.storage import EmbeddedLog
from statestream.types import TopicPartition

if TYPE_CHECKING:
    from statestream.log import TransportURL

__all__ = [
    "EmbeddedAdmin",
    "EmbeddedOptions",
    "EmbeddedTransport",
    "open_embedded",
]

_logger = logging.getLogger(__name__)

_ISOLATION_LEVELS = ("read_uncommitted", "read_committed")


def open_embedded(url: TransportURL) -> EmbeddedTransport:
    """Open the embedded log named by ``url`` (``embedded:///dir?option=value``)."""
    path = url.local_path()
    options = options_from_strings(EmbeddedOptions, url.options, f"broker URL {url.raw!r}")
    return EmbeddedTransport(path, options, url=url.raw)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EmbeddedAdmin(Admin):
    """Topic administration of one embedded log. Thread-safe."""

    def __init__(self, log: EmbeddedLog) -> None:
        self._log = log

    def describe_topic(self, name: str) -> TopicDescription | None:
        self._log.check_open()
        topic = self._log.find_topic(name)
        return None if topic is None else topic.describe()

    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic; its config must use Kafka topic setting names.

        Raises :class:`~statestream.errors.TopicExistsError` if it exists and
        :class:`~statestream.errors.ConfigurationError` for an unknown setting
        or a value that does not parse.
        """
        self._log.create_topic(spec)

    def delete_topic(self, name: str) -> None:
        """Delete the topic, its records and its groups' committed offsets.

        Done when this returns; a topic created again under the name starts at offset 0.
        """
        with self._log.cleaner_lock:
            topic = self._log.drop_topic(name)
            if topic is not None:
                self._log.purge_records(topic.topic_id)

    def committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """Return the group's committed offset of each partition (``None``: none)."""
        return {
            TopicPartition(*tp): self._log.committed(group_id, TopicPartition(*tp))
            for tp in partitions
        }

    def list_topics(self) -> set[str]:
        self._log.check_open()
        return {topic.name for topic in self._log.topics()}


class EmbeddedTransport(Transport):
    """Makes clients of one embedded log directory. Thread-safe.

    Owns two daemon threads: the cleaner (retention and compaction every
    ``cleanup_interval_ms``) and the auto-flusher (writes what producers
    buffered for ``auto_flush_ms``). While open it also serves the log to
    other processes on its local socket, ``statestream.sock`` in the
    directory (:class:`~statestream.log.embedded.local_socket.LocalLogServer`,
    daemon threads of its own). :meth:`close` stops serving (requests in
    progress finish first), stops the threads, closes every client it made
    (producers flush; group members leave without running their listener,
    since that belongs to their poll thread) and releases the directory.
    """

    def __init__(
        self, path: str, options: EmbeddedOptions | None = None, *, url: str | None = None
    ) -> None:
        self.path = os.path.abspath(path)
        self.url = url if url is not None else f"embedded://{self.path}"
        self.options = options if options is not None else EmbeddedOptions()
        self._log = EmbeddedLog(self.path, self.options)
        self._lock = threading.Lock()
        self._clients: set[Any] = set()
        self._transactional: dict[str, EmbeddedProducer] = {}
        self._closed = False
        self._stop = threading.Event()
        self._flush_cv = threading.Condition()
        self._flush_due: dict[EmbeddedProducer, float] = {}
        self._threads: list[threading.Thread] = []
        if self.options.cleanup_interval_ms > 0:
            self._start_thread(self._run_cleaner, "cleaner")
        if self.options.auto_flush_ms > 0:
            self._start_thread(self._run_flusher, "flusher")
        # After the directory's lock is ours: a socket file found there is stale.
        self._server = LocalLogServer.start(self, self.path)

    def _start_thread(self, target: Any, role: str) -> None:
        thread = threading.Thread(
            target=target, name=f"statestream-embedded-{role}:{self.path}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def __repr__(self) -> str:
        return f"EmbeddedTransport({self.url!r})"

    def __enter__(self) -> EmbeddedTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- clients -----------------------------------------------------------------

    def _register(self, client: Any) -> None:
        with self._lock:
            if self._closed:
                raise LogError(f"the embedded transport for {self.path!r} is closed")
            self._clients.add(client)

    def _forget(self, client: Any) -> None:
        with self._lock:
            self._clients.discard(client)
            if isinstance(client, EmbeddedProducer):
                for tid, producer in list(self._transactional.items()):
                    if producer is client:
                        del self._transactional[tid]
        with self._flush_cv:
            self._flush_due.pop(client, None)

    def admin(self) -> EmbeddedAdmin:
        self._log.check_open()
        return EmbeddedAdmin(self._log)

    def producer(self, *, transactional_id: str | None = None) -> EmbeddedProducer:
        """Return a producer (see :class:`EmbeddedProducer`).

        A new producer with the ``transactional_id`` of an open one fences the
        old one, as in Kafka: its open transaction is aborted and its further
        transactional calls raise :class:`~statestream.errors.TransactionError`.
        """
        if transactional_id is not None and (
            not isinstance(transactional_id, str) or not transactional_id
        ):
            raise ConfigurationError(
                f"transactional_id must be a non-empty string, got {transactional_id!r}"
            )
        producer = EmbeddedProducer(
            self._log,
            transactional_id=transactional_id,
            schedule_flush=self._schedule_flush if self.options.auto_flush_ms > 0 else None,
            on_close=self._forget,
        )
        self._register(producer)
        if transactional_id is not None:
            with self._lock:
                previous = self._transactional.get(transactional_id)
                self._transactional[transactional_id] = producer
            if previous is not None:
                previous.fence()
        return producer

    def fetcher(
        self,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        reset: ResetPolicy = "error",
    ) -> EmbeddedFetcher:
        if isolation_level not in _ISOLATION_LEVELS:
            raise ConfigurationError(
                f"isolation_level must be one of {', '.join(_ISOLATION_LEVELS)}, "
                f"got {isolation_level!r}"
            )
        fetcher = EmbeddedFetcher(self._log, reset, self._forget)
        self._register(fetcher)
        return fetcher

    def group_member(
        self,
        group_id: str,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        reset: ResetPolicy = "earliest",
        client_id: str | None = None,
        assignor: PartitionAssignor | None = None,
        instance_id: str | None = None,
    ) -> EmbeddedGroupMember:
        """Return the group's member (see :class:`EmbeddedGroupMember`).

        Every isolation level reads the same records (transactions are written
        only when they commit); ``client_id`` names nothing here and is ignored.
        A group has one member, so ``instance_id`` changes nothing (no other
        member could take its partitions); ``assignor`` is run for a group
        of one at every assignment.
        """
        if isolation_level not in _ISOLATION_LEVELS:
            raise ConfigurationError(
                f"isolation_level must be one of {', '.join(_ISOLATION_LEVELS)}, "
                f"got {isolation_level!r}"
            )
        member = EmbeddedGroupMember(
            self._log, group_id, reset, self._forget, assignor, instance_id
        )
        self._register(member)
        return member

    @property
    def group_of_one(self) -> bool:
        """One process owns the log, so a group has one member."""
        return True

    @property
    def supports_transactions(self) -> bool:
        return True

    # -- cleaning ------------------------------------------------------------------

    def compact(self, now_ms: int | None = None) -> int:
        """Compact every compacted topic now; return the number of records removed.

        Ignores ``min.cleanable.dirty.ratio``. A tombstone gets its horizon
        (``now + delete.retention.ms``) on the first compaction that sees it and
        is removed by the first compaction at or after the horizon (with
        ``delete.retention.ms=0``: by the first). ``now_ms`` (default: the
        clock) lets tests move time.
        """
        self._log.check_open()
        now = _now_ms() if now_ms is None else now_ms
        return cleanup(self._log, now, retention=False, force=True)

    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply ``retention.ms`` now; return the number of records removed.

        Removes the oldest records of ``delete`` and ``compact,delete`` topics
        while their timestamp is before ``now - retention.ms`` and moves the
        low watermark past them. ``now_ms`` (default: the clock) lets tests move time.
        """
        self._log.check_open()
        now = _now_ms() if now_ms is None else now_ms
        return cleanup(self._log, now, compaction=False)

    def _run_cleaner(self) -> None:
        interval = self.options.cleanup_interval_ms / 1000
        while not self._stop.wait(interval):
            try:
                cleanup(self._log, _now_ms())
            except Exception:
                if self._log.closing:
                    return
                # A failed pass must not end the thread; the next pass retries.
                _logger.exception("retention/compaction of %s failed", self.path)

    # -- auto flush ------------------------------------------------------------------

    def _schedule_flush(self, producer: EmbeddedProducer) -> None:
        with self._flush_cv:
            if producer not in self._flush_due:
                self._flush_due[producer] = time.monotonic() + self.options.auto_flush_ms / 1000
                if len(self._flush_due) == 1:
                    self._flush_cv.notify()

    def _run_flusher(self) -> None:
        while True:
            with self._flush_cv:
                while True:
                    if self._stop.is_set():
                        return
                    now = time.monotonic()
                    due = [p for p, at in self._flush_due.items() if at <= now]
                    if due:
                        for producer in due:
                            del self._flush_due[producer]
                        break
                    wait = min(self._flush_due.values()) - now if self._flush_due else None
                    self._flush_cv.wait(wait)
            for producer in due:
                try:
                    producer.background_flush()
                except Exception:
                    _logger.exception("background flush to %s failed", self.path)

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Stop the threads, close every client and release the directory. Idempotent.

        Raises the first error a client raised while closing (for example a
        producer whose last flush failed), after closing everything else.
        """
        if self._server is not None:
            # First, so other processes' requests in progress finish on an open log.
            self._server.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = list(self._clients)
        self._log.closing = True
        self._stop.set()
        with self._flush_cv:
            self._flush_cv.notify_all()
        for thread in self._threads:
            thread.join()
        errors: list[BaseException] = []
        for client in clients:
            try:
                if isinstance(client, EmbeddedGroupMember):
                    client.abandon()
                else:
                    client.close()
            except (LogError, TransactionError) as exc:
                errors.append(exc)
        self._log.close()
        if errors:
            raise errors[0]
