"""``KafkaRecordProducer``: the shared, thread-safe producer (and its deliveries).

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import kafka.errors as kerrors
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
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
    _PENDING_PRUNE_AT,
    Disabled,
    _kafka_errors,
    _ktp,
    _translate,
)
from statestream.log.kafka.batch import accumulator_appender, watch_splits
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


def _check_producer_internals(producer: Any, report: Disabled) -> None:
    """Report the producer workarounds that cannot apply to ``producer``'s internals."""
    sender = getattr(producer, "_sender", None)
    if not all(callable(getattr(sender, name, None)) for name in ("is_alive", "force_close")):
        report(
            "stopping kafka-python's sender after a failed close",
            "KafkaProducer has no _sender.force_close; a producer whose close fails may "
            "leave kafka-python's sender thread running",
        )
    if not callable(getattr(getattr(producer, "_metadata", None), "partitions_for_topic", None)):
        report(
            "refreshing partition counts on flush",
            "KafkaProducer has no _metadata.partitions_for_topic; keyed records of a topic "
            "that gains partitions are routed by its old count until the next producer",
        )
    if "_produce_future" not in getattr(FutureRecordMetadata, "__slots__", ()) or (
        "topic_partition" not in getattr(FutureProduceResult, "__slots__", ())
    ):
        report(
            "the partition of keyless deliveries",
            "kafka-python's futures do not keep their topic partition; deliveries of "
            "records sent without key and partition report partition -1",
        )


def _describe(exc: BaseException) -> str:
    """``exc`` with its class name (kafka-python's errors already start with it)."""
    text, name = str(exc), type(exc).__name__
    if name in text:
        return text
    return f"{name}: {text}" if text else name


class KafkaRecordProducer(Producer):
    """Writes records with a ``KafkaProducer``.

    Thread-safe: shared by all partition threads. kafka-python's sender
    (I/O) thread completes the records' futures and splits batches the
    broker refuses as too large (see :class:`~statestream.log.kafka.batch.SplitWatch`);
    everything else runs on the calling thread.

    Errors are sticky, as in Kafka Streams' record collector: the first
    failed delivery that a :meth:`flush` (which waits for every record sent
    so far) or the pruning done by ``send`` finds is kept, and from then on
    every :meth:`send`, :meth:`send_batch` and :meth:`flush`, on every
    thread, raises :class:`~statestream.errors.ProduceError` for it (naming
    its partition, with the kafka-python error as ``__cause__``) until the
    producer is closed; :meth:`close` releases the producer and raises it
    too. So no thread commits past a lost record, whoever sent it and
    whichever thread flushed first. :meth:`abort_transaction` forgets the
    failure with the records of the aborted transaction, which never
    become visible. A flush that times out is not a failed delivery: it
    raises, and the next flush waits again.
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
        # The first failed delivery: (message, kafka-python's error). Set under
        # _check_lock, read without it (one attribute read per call).
        self._failure: tuple[str, BaseException] | None = None
        self._prune_at = _PENDING_PRUNE_AT
        self._closed = False
        report = transport._disabled
        _check_producer_internals(producer, report)
        self._splits = watch_splits(producer, self._pending, report)
        # None when kafka-python's internals are not the expected ones:
        # send_batch then sends record by record. Without a split watch a
        # batch split would hide the parts holding no tracked future.
        self._append_batch = (
            None if self._splits is None else accumulator_appender(producer, report)
        )

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is not None:
            raise ProduceError(failure[0]) from failure[1]

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
        if self._failure is not None:
            self._raise_failure()
        count = self._counts.get(topic)
        if count is None:
            count = self._learn_topic(topic)
        if partition is None and key is not None:
            partition = default_partition(key, count)
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
        if self._failure is not None:
            self._raise_failure()
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
        """Move finished futures out of the pending queue, keeping the first failure.

        ``finished_only`` (the pruning done by ``send``) stops at the first
        unfinished future, so it costs O(1) per record however many are in
        flight; records finish roughly in the order they were sent.
        """
        pending = self._pending
        unfinished = []
        failed = None
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
            elif future.exception is not None and (
                failed is None
                or (
                    type(failed.exception) is kerrors.KafkaError
                    and type(future.exception) is not kerrors.KafkaError
                )
            ):
                # kafka-python fails the other records of a batch that had an
                # invalid record with a plain KafkaError; the invalid record's
                # own error, if found in the same drain, says more.
                failed = future
        pending.extend(unfinished)
        self._prune_at = len(pending) + _PENDING_PRUNE_AT
        if failed is not None and self._failure is None:
            self._failure = (self._failure_message(failed), failed.exception)

    @staticmethod
    def _flush_timeout(timeout: float | None) -> ProduceError:
        return ProduceError(
            f"records were not acknowledged within {timeout} s; nothing after the first "
            "unacknowledged record may be committed"
        )

    @staticmethod
    def _failure_message(future: Any) -> str:
        tp = getattr(getattr(future, "_produce_future", None), "topic_partition", None)
        where = f"{tp[0]}[{tp[1]}]" if tp is not None else "the log"
        return (
            f"a record to {where} was not written ({_describe(future.exception)}); this "
            "producer fails every send and flush from then on: close it, and resume from "
            "the last committed offsets with a new one"
        )

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything sent is acknowledged; raise ``ProduceError`` on failure
        (also for a failure found before, see the class docstring)."""
        if self._failure is not None:
            self._raise_failure()
        deadline = None if timeout is None else time.monotonic() + timeout
        splits = self._splits
        while True:
            begun = 0 if splits is None else splits.begun
            try:
                self._kp.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except kerrors.KafkaTimeoutError as exc:
                raise self._flush_timeout(timeout) from exc
            except kerrors.UnknownError as exc:
                # kafka-python 3.0's flush raises it ("Future not done") only
                # for a batch that was split while it waited for it; the
                # parts are queued, and waiting again waits for them.
                if splits is None:
                    raise ProduceError(f"flush failed: {exc}") from exc
            except kerrors.KafkaError as exc:
                raise ProduceError(f"flush failed: {exc}") from exc
            else:
                if splits is None or (splits.begun == begun and splits.idle):
                    break
            # A split during the flush queues batches it may not have waited
            # for: once the split is done, wait for them too.
            if not splits.settle(None if deadline is None else deadline - time.monotonic()):
                raise self._flush_timeout(timeout)
        self._refresh_counts()
        with self._check_lock:
            self._drain_locked()
        self._raise_failure()

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
        """Abort the current transaction; a failed delivery is forgotten with it.

        Every record since the last commit belongs to the aborted transaction
        (a transactional producer sends only inside one) and never becomes
        visible, so its failure no longer stops this producer.
        """
        self._require_transactions("abort a transaction")
        try:
            self._kp.abort_transaction()
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "abort_transaction") from exc
        with self._check_lock:
            self._pending.clear()
            self._failure = None

    def close(self) -> None:
        """Flush (up to ``delivery_timeout_ms``) and close; raise ``ProduceError`` if
        records failed (the kept failure included). The producer is released
        either way."""
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
