"""``KafkaRecordProducer``: the shared, thread-safe producer (and its deliveries).

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import kafka.errors as kerrors
from kafka.structs import OffsetAndMetadata

from statestream.errors import (
    ProduceError,
    TopicNotFoundError,
    TransactionError,
)
from statestream.log.base import (
    Producer,
)
from statestream.log.kafka._common import (
    _FAILURE_LOG_SIZE,
    _PENDING_PRUNE_AT,
    _kafka_errors,
    _ktp,
    _translate,
)
from statestream.log.kafka.batch import accumulator_appender
from statestream.log.partitioner import default_partition
from statestream.types import Headers, TopicPartition

if TYPE_CHECKING:  # at run time transport imports this module
    from statestream.log.kafka.transport import KafkaTransport

log = logging.getLogger("statestream.log.kafka")


class _KafkaDelivery:
    """A :class:`~statestream.log.base.Delivery` wrapping kafka-python's record future."""

    __slots__ = ("_future", "_partition")

    def __init__(self, future: Any, partition: int) -> None:
        self._future = future
        self._partition = partition

    @property
    def done(self) -> bool:
        return bool(self._future.is_done)

    @property
    def partition(self) -> int:
        return self._partition

    @property
    def offset(self) -> int:
        future = self._future
        if not future.is_done:
            raise ProduceError(
                f"record for partition {self._partition} is not acknowledged yet; call flush() "
                "before reading its offset"
            )
        if future.exception is not None:
            raise ProduceError(
                f"record for partition {self._partition} was not written: {future.exception}"
            ) from future.exception
        offset: int = future.value.offset
        return offset

    def __repr__(self) -> str:
        state = "pending" if not self._future.is_done else "failed"
        if self._future.is_done and self._future.exception is None:
            state = f"offset={self._future.value.offset}"
        return f"<KafkaDelivery partition={self._partition} {state}>"


def _force_close(producer: Any) -> None:
    """Stop a ``KafkaProducer`` whose ``close`` raised; unsent records fail."""
    sender = getattr(producer, "_sender", None)
    if sender is not None and sender.is_alive():
        sender.force_close()
        sender.join(5)
    if hasattr(producer, "_closed"):
        producer._closed = True


def _future_partition(future: Any) -> int:
    # kafka-python picks the partition inside send() and keeps it on the
    # batch's future; it is final once send() returns.
    tp = getattr(getattr(future, "_produce_future", None), "topic_partition", None)
    partition = getattr(tp, "partition", None)
    return partition if isinstance(partition, int) else -1


class KafkaRecordProducer(Producer):
    """Writes records with a ``KafkaProducer``. Thread-safe: shared by all partition threads.

    :meth:`flush` waits for every record sent so far and raises
    :class:`~statestream.errors.ProduceError` if any record failed that the
    calling thread has not been told about yet: each failure is reported
    once to every thread that sent on this producer before it was detected.
    A thread therefore never commits past a failed record, whoever sent it.
    """

    def __init__(self, transport: KafkaTransport, producer: Any, transactional_id: str | None):
        self._transport = transport
        self._kp = producer
        self._transactional_id = transactional_id
        # Partition count per topic, for routing keys. Refreshed from the
        # client's metadata on every flush(), so a topic that grows is routed
        # by its new count from the next commit on (kafka-python itself only
        # notices new partitions when its metadata is refreshed).
        self._counts: dict[str, int] = {}
        self._pending: collections.deque[Any] = collections.deque()
        self._check_lock = threading.Lock()
        self._failures: list[tuple[int, Any]] = []
        self._failure_seq = 0
        self._prune_at = _PENDING_PRUNE_AT
        self._threads = threading.local()
        self._closed = False
        # None when kafka-python's internals are not the expected ones:
        # send_batch then sends record by record.
        self._append_batch = accumulator_appender(producer)

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers = (),
        timestamp: int | None = None,
    ) -> _KafkaDelivery:
        """Queue one record; a keyed record without partition goes where Kafka's
        default partitioner puts it (computed here, sent explicitly)."""
        count = self._counts.get(topic)
        if count is None:
            count = self._learn_topic(topic)
        if partition is None and key is not None:
            partition = default_partition(key, count)
        threads = self._threads
        if not hasattr(threads, "seen"):
            threads.seen = self._failure_seq
        try:
            future = self._kp.send(
                topic,
                value=value,
                key=key,
                headers=list(headers) if headers else None,
                partition=partition,
                timestamp_ms=timestamp,
            )
        except kerrors.KafkaError as exc:
            raise ProduceError(f"cannot send a record to {topic}[{partition}]: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ProduceError(f"record for {topic}[{partition}] rejected: {exc}") from exc
        pending = self._pending
        pending.append(future)
        if len(pending) > self._prune_at:
            with self._check_lock:
                self._drain_locked(finished_only=True)
        return _KafkaDelivery(future, _future_partition(future) if partition is None else partition)

    def send_batch(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
    ) -> _KafkaDelivery | None:
        """Queue records for one partition straight into kafka-python's accumulator
        (see :mod:`statestream.log.kafka.batch`); the last record's delivery."""
        if not records:
            return None
        if self._append_batch is None:
            delivery = super().send_batch(topic, partition, records)
            assert delivery is None or isinstance(delivery, _KafkaDelivery)
            return delivery
        count = self._counts.get(topic)
        if count is None:
            count = self._learn_topic(topic)
        if type(partition) is not int or not 0 <= partition < count:
            raise ProduceError(
                f"partition {partition!r} of topic {topic!r} does not exist (it has {count})"
            )
        threads = self._threads
        if not hasattr(threads, "seen"):
            threads.seen = self._failure_seq
        futures = self._append_batch(topic, partition, records)
        pending = self._pending
        pending.extend(futures)
        if len(pending) > self._prune_at:
            with self._check_lock:
                self._drain_locked(finished_only=True)
        return _KafkaDelivery(futures[-1], partition)

    def _learn_topic(self, topic: str) -> int:
        # kafka-python would wait max_block_ms for metadata of a missing
        # topic; the admin client answers at once.
        if not self._transport.topic_exists(topic):
            raise TopicNotFoundError(
                f"topic {topic!r} does not exist; create it first (Admin.ensure_topic)"
            )
        with _kafka_errors(f"fetching metadata of topic {topic!r}", self._transport._where):
            count = len(self._kp.partitions_for(topic))
        self._counts[topic] = count
        return count

    def _refresh_counts(self) -> None:
        # The client's cached metadata, read without waiting (partitions_for
        # would block for a topic that disappeared).
        cluster = getattr(self._kp, "_metadata", None)
        if cluster is None:
            return
        for topic in list(self._counts):
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                self._counts[topic] = len(partitions)
            else:
                self._counts.pop(topic, None)  # looked up afresh by the next send

    def _drain_locked(self, *, finished_only: bool = False) -> None:
        """Move finished futures out of the pending queue, logging failures.

        ``finished_only`` (the pruning done by ``send``) stops at the first
        unfinished future, so it costs O(1) per record however many are in
        flight; records finish roughly in the order they were sent.
        """
        pending = self._pending
        unfinished = []
        while True:
            try:
                future = pending.popleft()
            except IndexError:
                break
            if not future.is_done:
                if finished_only:
                    pending.appendleft(future)
                    break
                unfinished.append(future)
            elif future.exception is not None:
                self._failure_seq += 1
                self._failures.append((self._failure_seq, future))
        pending.extend(unfinished)
        self._prune_at = len(pending) + _PENDING_PRUNE_AT
        if len(self._failures) > _FAILURE_LOG_SIZE:
            del self._failures[:-_FAILURE_LOG_SIZE]

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything sent is acknowledged; raise ``ProduceError`` on failure."""
        try:
            self._kp.flush(timeout)
        except kerrors.KafkaTimeoutError as exc:
            raise ProduceError(
                f"records were not acknowledged within {timeout} s; nothing after the first "
                "unacknowledged record may be committed"
            ) from exc
        except kerrors.KafkaError as exc:
            raise ProduceError(f"flush failed: {exc}") from exc
        self._refresh_counts()
        threads = self._threads
        with self._check_lock:
            seen = getattr(threads, "seen", self._failure_seq)
            self._drain_locked()
            unseen = [future for seq, future in self._failures if seq > seen]
            threads.seen = self._failure_seq
        if unseen:
            first = unseen[0]
            tp = getattr(getattr(first, "_produce_future", None), "topic_partition", None)
            where = f"{tp[0]}[{tp[1]}]" if tp is not None else "the log"
            raise ProduceError(
                f"{len(unseen)} record(s) were not written; the first, to {where}, failed "
                f"with: {first.exception}"
            ) from first.exception

    def partitions_for(self, topic: str) -> int:
        """Return the topic's partition count (``TopicNotFoundError`` if missing)."""
        if topic not in self._counts:
            return self._learn_topic(topic)
        with _kafka_errors(f"fetching metadata of topic {topic!r}", self._transport._where):
            count = len(self._kp.partitions_for(topic))
        self._counts[topic] = count
        return count

    # -- transactions

    def _require_transactions(self, what: str) -> None:
        if self._transactional_id is None:
            raise TransactionError(
                f"cannot {what}: this producer has no transactional id; create it with "
                "transport.producer(transactional_id=...)"
            )

    def _transaction_error(self, exc: BaseException, what: str) -> TransactionError:
        error = _translate(exc, what, self._transport._where)
        if isinstance(error, TransactionError):
            return error
        return TransactionError(
            f"{what} failed: {exc}; abort the transaction and reprocess from the committed offsets"
        )

    def begin_transaction(self) -> None:
        """Start a transaction."""
        self._require_transactions("begin a transaction")
        try:
            self._kp.begin_transaction()
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "begin_transaction") from exc

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: Any
    ) -> None:
        """Commit ``offsets`` for ``group`` (``GroupMember.group_metadata()`` or a group
        id) as part of the current transaction."""
        self._require_transactions("send offsets to a transaction")
        converted = {_ktp(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
        try:
            self._kp.send_offsets_to_transaction(converted, group)
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "send_offsets_to_transaction") from exc

    def commit_transaction(self) -> None:
        """Commit the current transaction (its records are flushed first)."""
        self._require_transactions("commit a transaction")
        try:
            self._kp.commit_transaction()
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "commit_transaction") from exc
        with self._check_lock:
            self._drain_locked()

    def abort_transaction(self) -> None:
        """Abort the current transaction; failures of its records are forgotten."""
        self._require_transactions("abort a transaction")
        try:
            self._kp.abort_transaction()
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "abort_transaction") from exc
        with self._check_lock:
            self._pending.clear()
            self._failures.clear()

    def close(self) -> None:
        """Flush (up to ``delivery_timeout_ms``) and close; raise ``ProduceError`` if
        records failed."""
        if self._closed:
            return
        self._closed = True
        timeout = self._transport.options.delivery_timeout_ms / 1000
        flush_failed = True
        try:
            self.flush(timeout)
            flush_failed = False
        finally:
            try:
                # kafka-python's close flushes again and raises what the
                # flush above already reported; only a new failure matters.
                self._kp.close(timeout=timeout)
            except kerrors.KafkaError as exc:
                # kafka-python 3.0 gives up closing when that flush raises,
                # leaving its sender thread running (and retrying the close
                # from __del__): stop it the way its own timeout path does.
                _force_close(self._kp)
                if not flush_failed:
                    raise ProduceError(f"closing the producer failed: {exc}") from exc
                log.warning("closing the producer after a failed flush: %s", exc)
            finally:
                self._transport._forget(self)


# --------------------------------------------------------------------- fetcher
