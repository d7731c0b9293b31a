"""The embedded log's producer: sends buffer in memory, a flush is one WriteBatch."""

from __future__ import annotations

import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from statestream.errors import ConfigurationError, LogError, ProduceError, TransactionError
from statestream.log.base import Producer
from statestream.log.embedded.codec import encode_keyed_batch, encode_record
from statestream.log.embedded.meta import EmbeddedDelivery, Partition, Topic
from statestream.log.embedded.storage import EmbeddedLog
from statestream.log.partitioner import default_partition
from statestream.types import Headers, TopicPartition

__all__ = ["EmbeddedProducer", "OnClose", "check_offsets"]

#: Called with a client when it closes (the transport forgets it).
OnClose = Callable[[Any], None]


def _as_bytes(data: object, what: str) -> bytes | None:
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise ProduceError(f"record {what} must be bytes or None, got {type(data).__name__}")


def _check_headers(headers: Headers) -> Headers:
    checked = tuple(headers)
    for item in checked:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], bytes)
        ):
            raise ProduceError(f"record headers must be (str, bytes) pairs, got {item!r}")
    return checked


#: Records sent and not yet written, by partition.
_Buffer = defaultdict[Partition, list[tuple[bytes, EmbeddedDelivery]]]

#: Keys whose partition a producer remembers per topic (murmur2 in Python costs
#: microseconds; changelog and source keys repeat).
_ROUTE_CACHE_KEYS = 100_000


class _Route:
    """A producer's view of one topic incarnation: its partitions and a key cache."""

    __slots__ = ("cache", "count", "next_round_robin", "topic")

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.count = len(topic.partitions)
        self.cache: dict[bytes, int] = {}
        self.next_round_robin = 0

    def learn(self, key: bytes) -> int:
        """Return (and remember) the partition Kafka's default partitioner gives ``key``."""
        partition = default_partition(key, self.count)
        if len(self.cache) >= _ROUTE_CACHE_KEYS:
            self.cache.clear()
        self.cache[key] = partition
        return partition


def _bad_partition(t: Topic, partition: object) -> ProduceError:
    return ProduceError(
        f"topic {t.name!r} has partitions 0 to {len(t.partitions) - 1}; "
        f"cannot send to {partition!r}"
    )


def _group_id(group: Any) -> str:
    if isinstance(group, str) and group:
        return group
    group_id = getattr(group, "group_id", None)
    if isinstance(group_id, str) and group_id:
        return group_id
    raise TransactionError(
        f"send_offsets_to_transaction needs GroupMember.group_metadata() (or a group id), "
        f"got {group!r}"
    )


def _failed_partition(pending: _Buffer) -> TopicPartition:
    """A partition whose records a failed append did not write (the first one)."""
    for part, items in pending.items():
        if items and items[0][1]._offset < 0:
            return part.tp
    return next(iter(pending)).tp


def check_offsets(log: EmbeddedLog, offsets: Mapping[TopicPartition, int]) -> None:
    """Raise unless every partition exists and every offset is an int >= 0."""
    for tp, offset in offsets.items():
        log.partition(TopicPartition(*tp))
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ConfigurationError(f"offset for {tp} must be an int >= 0, got {offset!r}")


class EmbeddedProducer(Producer):
    """Buffers sends in memory; :meth:`flush` writes them in one LevelDB WriteBatch.

    Thread-safe: shared by every partition thread; the transport's flusher
    thread calls :meth:`background_flush`. ``send`` only encodes the
    record and appends it to a buffer; offsets are assigned when the buffer
    is written (by :meth:`flush`, by the transport's background flush after
    ``auto_flush_ms``, or inside ``send`` once ``buffer_bytes`` are buffered).
    A flushed record is durable (it survives kill -9) and visible to fetchers.

    Errors are sticky: the first write that fails (a flush by any thread,
    or a background flush) is kept, and from then on every :meth:`send`,
    :meth:`send_batch` and :meth:`flush`, on every thread, raises
    :class:`~statestream.errors.ProduceError` for it (naming a partition it
    was writing to, with the log's error as ``__cause__``) until the
    producer is closed; records still buffered are dropped and their
    deliveries fail. :meth:`close` releases the producer and raises it too.
    So no thread commits past a lost record, whoever sent it.

    Keyed records without a partition go where Kafka's default partitioner
    sends them (murmur2). Keyless ones go round-robin over the topic's
    partitions (per producer and topic): Kafka's sticky partitioner only
    exists to fill network batches, which the embedded log does not have.

    With a ``transactional_id``, records may only be sent inside a
    transaction; they stay buffered until :meth:`commit_transaction` writes
    them together with the offsets from :meth:`send_offsets_to_transaction`
    in one WriteBatch, so they become visible (and durable) atomically, and
    their offsets are known after the commit (a ``flush()`` inside a
    transaction writes nothing). An abort discards them; nothing of an
    aborted transaction is ever written, so every fetcher reads committed
    data only. As in Kafka, each commit also takes one offset per partition
    written (the commit marker's), leaving a gap. Creating another producer
    with the same transactional id fences this one.
    """

    def __init__(
        self,
        log: EmbeddedLog,
        *,
        transactional_id: str | None,
        schedule_flush: Callable[[EmbeddedProducer], None] | None,
        on_close: OnClose,
    ) -> None:
        self._log = log
        self._transactional_id = transactional_id
        self._schedule_flush = schedule_flush
        self._on_close = on_close
        self._buffer_limit = log.options.buffer_bytes
        #: Guards the buffer and the transaction state (held briefly).
        self._lock = threading.Lock()
        #: Held while a buffer is written: a flush returns only after every
        #: earlier flush (which may have taken this caller's records) is done.
        self._flush_lock = threading.Lock()
        self._pending: _Buffer = defaultdict(list)
        self._pending_bytes = 0
        # Whether a send since the buffer was last taken started the background
        # flush (send_batch starts none: see there).
        self._flush_started = False
        self._routes: dict[str, _Route] = {}
        #: The first failed write: (message, the log's error). Set under
        #: _lock, read without it (one attribute read per send).
        self._failure: tuple[str, LogError] | None = None
        self._in_transaction = False
        self._txn_offsets: dict[tuple[str, TopicPartition], int] = {}
        self._fenced = False
        self._closed = False

    # -- producing -------------------------------------------------------------

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers = (),
        timestamp: int | None = None,
    ) -> EmbeddedDelivery:
        route = self._routes.get(topic)
        if route is None or route.topic.deleted:
            route = self._routes[topic] = _Route(self._log.topic(topic))
        if (key is not None and type(key) is not bytes) or (
            value is not None and type(value) is not bytes
        ):
            key, value = _as_bytes(key, "key"), _as_bytes(value, "value")
        if key is None:
            partition = self._keyless(route, partition)
        elif partition is None:
            partition = route.cache.get(key)
            if partition is None:
                partition = route.learn(key)
        elif type(partition) is not int or not 0 <= partition < route.count:
            raise _bad_partition(route.topic, partition)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        if headers:
            headers = _check_headers(headers)
        try:
            raw = encode_record(key, value, timestamp, headers)
        except (struct.error, UnicodeEncodeError, TypeError) as exc:
            raise ProduceError(f"cannot encode record for {topic!r}: {exc}") from exc
        delivery = EmbeddedDelivery(partition)
        part = route.topic.partitions[partition]
        with self._lock:
            if self._closed or self._failure is not None or self._transactional_id is not None:
                self._check_sendable()
            self._pending[part].append((raw, delivery))
            start_flush = not self._flush_started
            self._flush_started = True
            self._pending_bytes += len(raw)
            full = self._pending_bytes >= self._buffer_limit
        if full and self._transactional_id is None:
            self.flush()
        elif start_flush and self._schedule_flush is not None and self._transactional_id is None:
            self._schedule_flush(self)
        return delivery

    def send_batch(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
    ) -> EmbeddedDelivery | None:
        """Queue ``records`` for one partition as :meth:`send` would, in one step.

        One timestamp, one lock and one delivery for the batch (each record's
        offset is not asked for: the delivery's is the batch's last), and
        headers shared by records encoded once. Batches with a keyless record,
        or a key or value that is not bytes, go record by record.

        Unlike :meth:`send`, a batch does not start the background flush
        (``auto_flush_ms``): its caller flushes, as the commit coordinator
        does right after the changelog writer's batches of a commit. A
        background flush would write part of them meanwhile, on another
        thread contending for the interpreter with the commit. A full buffer
        is still written at once, and a flush that runs anyway (started by
        a :meth:`send`) writes batches too.
        """
        if not records:
            return None
        route = self._routes.get(topic)
        if route is None or route.topic.deleted:
            route = self._routes[topic] = _Route(self._log.topic(topic))
        if type(partition) is not int or not 0 <= partition < route.count:
            raise _bad_partition(route.topic, partition)
        try:
            raws = encode_keyed_batch(records, time.time_ns() // 1_000_000)
        except TypeError as exc:
            raise ProduceError(f"cannot encode a record for {topic!r}: {exc}") from exc
        if raws is None:
            return super().send_batch(topic, partition, records)  # type: ignore[return-value]
        delivery = EmbeddedDelivery(partition)
        # One delivery for every record: the log gives its items offsets in
        # order, so it ends with the last record's.
        items = [(raw, delivery) for raw in raws]
        size = sum(map(len, raws))
        part = route.topic.partitions[partition]
        with self._lock:
            if self._closed or self._failure is not None or self._transactional_id is not None:
                self._check_sendable()
            self._pending[part] += items
            self._pending_bytes += size
            full = self._pending_bytes >= self._buffer_limit
        if full and self._transactional_id is None:
            self.flush()
        return delivery

    def _check_sendable(self) -> None:
        if self._closed:
            raise ProduceError("the producer is closed")
        self._raise_failure()
        if self._transactional_id is not None:
            self._check_transaction("send")

    def _keyless(self, route: _Route, partition: int | None) -> int:
        topic = route.topic
        if topic.compact:
            raise ProduceError(
                f"topic {topic.name!r} is compacted (cleanup.policy={topic.policy}): "
                "records need a key"
            )
        if partition is None:
            partition = route.next_round_robin
            route.next_round_robin = (partition + 1) % route.count
        elif type(partition) is not int or not 0 <= partition < route.count:
            raise _bad_partition(topic, partition)
        return partition

    def _take_pending(self) -> _Buffer:
        pending = self._pending
        self._pending = defaultdict(list)
        self._pending_bytes = 0
        self._flush_started = False
        return pending

    def flush(self, timeout: float | None = None) -> None:
        """Write every record sent so far in one batch; raise ``ProduceError`` on failure.

        Also raises for a write that failed before, here or in a background
        flush (see the class docstring). ``timeout`` bounds the wait for a
        flush running in another thread.
        """
        if not self._flush_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise ProduceError(f"flush did not finish within {timeout}s")
        try:
            if self._failure is None:
                with self._lock:
                    pending = None if self._in_transaction else self._take_pending()
                if pending:
                    self._write(pending)
            if self._failure is not None:
                with self._lock:
                    if not self._in_transaction:
                        self._discard("not written: an earlier write of the producer failed")
                self._raise_failure()
        finally:
            self._flush_lock.release()

    def background_flush(self) -> None:
        """Flush from the transport's thread; a failure is raised by every later call."""
        with self._flush_lock:
            with self._lock:
                if self._in_transaction or self._failure is not None:
                    return
                pending = self._take_pending()
            if pending:
                self._write(pending)

    def _write(self, pending: _Buffer) -> None:
        """Append ``pending`` to the log (flush lock held); keep the first failure."""
        try:
            self._log.append(pending)
        except LogError as exc:
            where = _failed_partition(pending)
            with self._lock:
                if self._failure is None:
                    self._failure = (
                        f"a record to {where.topic}[{where.partition}] was not written ({exc}); "
                        "this producer fails every send and flush from then on: close it, and "
                        "resume from the last committed offsets with a new one",
                        exc,
                    )

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is not None:
            raise ProduceError(failure[0]) from failure[1]

    def partitions_for(self, topic: str) -> int:
        return len(self._log.topic(topic).partitions)

    # -- transactions ----------------------------------------------------------

    def _check_transaction(self, action: str) -> None:
        if self._transactional_id is None:
            raise TransactionError(
                f"{action} needs a transactional producer: create it with "
                "transport.producer(transactional_id=...)"
            )
        if self._fenced:
            raise TransactionError(
                f"producer {self._transactional_id!r} was fenced: another producer with the "
                "same transactional id was created. Close this one"
            )
        if action != "begin_transaction" and not self._in_transaction:
            raise TransactionError(f"{action} outside a transaction: call begin_transaction()")

    def begin_transaction(self) -> None:
        with self._lock:
            if self._closed:
                raise TransactionError("the producer is closed")
            self._check_transaction("begin_transaction")
            if self._in_transaction:
                raise TransactionError("a transaction is already open")
            self._in_transaction = True
            self._txn_offsets = {}

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: Any
    ) -> None:
        group_id = _group_id(group)
        check_offsets(self._log, offsets)
        with self._lock:
            self._check_transaction("send_offsets_to_transaction")
            for tp, offset in offsets.items():
                self._txn_offsets[(group_id, TopicPartition(*tp))] = offset

    def commit_transaction(self) -> None:
        with self._flush_lock:
            with self._lock:
                self._check_transaction("commit_transaction")
                pending = self._take_pending()
                offsets = self._txn_offsets
                self._txn_offsets = {}
                self._in_transaction = False
            try:
                self._log.append(pending, group_offsets=offsets, transaction=True)
            except TransactionError:
                raise
            except LogError as exc:
                raise TransactionError(
                    f"commit failed, the transaction was aborted: {exc}"
                ) from exc

    def abort_transaction(self) -> None:
        """Discard the transaction's records; a failed write is forgotten with them."""
        with self._lock:
            self._check_transaction("abort_transaction")
            self._discard("the transaction was aborted")
            self._failure = None

    def _discard(self, reason: str) -> None:
        for items in self._take_pending().values():
            for _, delivery in items:
                delivery.fail(reason)
        self._txn_offsets = {}
        self._in_transaction = False

    def fence(self) -> None:
        """Fence this producer (another one took its transactional id); drop its transaction."""
        with self._lock:
            self._fenced = True
            self._discard("the producer was fenced by another one with the same transactional id")

    # -- closing ---------------------------------------------------------------

    def close(self) -> None:
        """Flush (or abort an open transaction) and release; raise ``ProduceError`` if a
        write failed (the producer is released either way). Idempotent."""
        if self._closed:
            return
        try:
            if self._in_transaction:
                with self._lock:
                    self._discard("the producer closed during the transaction")
            else:
                self.flush()
        finally:
            self._closed = True
            self._on_close(self)
