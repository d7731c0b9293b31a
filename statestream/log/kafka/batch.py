"""Appending a batch of records for one partition to kafka-python's accumulator.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.

Why: the changelog writer produces one record per dirty key every commit
interval, tens of thousands of records per second for a busy worker.
``KafkaProducer.send`` costs about 13 µs per record, half of it checks that
are the same for every record of a batch (topic metadata, partition, header
types, serializers) and a wake-up of the sender thread (a socket write) for
nearly every record once batches queue up. Appending to the producer's
record accumulator directly costs half as much and wakes the sender once
per batch. The records still go through kafka-python's own batching,
idempotence (sequence numbers are assigned when batches are drained),
transactions, retries and flush, so delivery guarantees are unchanged.

Where the batch a record went into is still open, the records after it
are written straight into that batch by
:class:`~statestream.log.kafka.record_writer.RecordWriter` (which checks
itself against kafka-python's encoder before it is used).

This reaches into private members of ``KafkaProducer`` (``_accumulator``
and ``_sender``) and of its accumulator. :func:`accumulator_appender`
checks they look as expected and returns ``None`` otherwise (telling the
transport, which logs why), in which case the caller falls back to
``send`` for every record; the fast path is tested against the installed
kafka-python on a real broker.

Tracking one future per batch needs :class:`SplitWatch`: when the broker
refuses a batch as too large, kafka-python splits it and moves each
record's future to its new batch, but a part holding none of the tracked
futures would succeed or fail unseen.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import kafka.errors as kerrors
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from statestream.errors import ProduceError
from statestream.log.kafka._common import Disabled, _not_told
from statestream.log.kafka.record_writer import UNWATCHED, RecordWriter, record_writer
from statestream.types import Headers

__all__ = [
    "AccumulatorAppender",
    "BatchRecords",
    "SplitWatch",
    "accumulator_appender",
    "watch_splits",
]

log = logging.getLogger("statestream.log.kafka")

BatchRecords = Sequence[tuple[bytes | None, bytes | None, Headers]]

_APPEND_PARAMETERS = ("tp", "timestamp_ms", "key", "value", "headers", "now")


_APPENDER_OFF = "send_batch sends record by record with KafkaProducer.send (much slower)"


def accumulator_appender(producer: Any, report: Disabled = _not_told) -> AccumulatorAppender | None:
    """Return a batch appender for ``producer`` (a ``KafkaProducer``), or ``None``
    (after telling ``report`` why) if its internals are not the ones this was
    written against."""
    accumulator = getattr(producer, "_accumulator", None)
    sender = getattr(producer, "_sender", None)
    append = getattr(accumulator, "append", None)
    wakeup = getattr(sender, "wakeup", None)
    config = getattr(producer, "config", None)
    why = None
    if append is None or wakeup is None or not isinstance(config, dict):
        why = "KafkaProducer has no _accumulator.append or _sender.wakeup"
    else:
        try:
            parameters = tuple(inspect.signature(append).parameters)
        except (TypeError, ValueError):
            parameters = ()
        max_request_size = config.get("max_request_size")
        if parameters[: len(_APPEND_PARAMETERS)] != _APPEND_PARAMETERS:
            why = f"the accumulator's append takes {parameters or 'unknown parameters'}"
        elif not isinstance(max_request_size, int):
            why = "KafkaProducer.config has no max_request_size"
        else:
            return AccumulatorAppender(producer, accumulator, max_request_size, report)
    report("the send_batch fast path", f"{why}; {_APPENDER_OFF}")
    return None


class AccumulatorAppender:
    """Appends records for one partition to a ``KafkaProducer``'s accumulator.

    Thread-safe like ``KafkaProducer.send``: the accumulator's partition lock
    guards every batch it writes to.
    """

    def __init__(
        self, producer: Any, accumulator: Any, max_request_size: int, report: Disabled = _not_told
    ) -> None:
        self._producer = producer
        self._accumulator = accumulator
        self._append = accumulator.append
        self._wakeup = producer._sender.wakeup
        # Records whose key and value are this small cannot exceed the request
        # size whatever their headers; bigger ones get kafka-python's own check.
        self._cheap_limit = max_request_size // 2
        self.writer = _direct_writer(accumulator, producer.config, max_request_size, report)

    def __call__(self, topic: str, partition: int, records: BatchRecords) -> list[Any]:
        """Queue ``records`` for ``topic[partition]``; return the futures to track:
        one per accumulator batch touched (a batch succeeds or fails as a
        whole), the last record's future last."""
        producer = self._producer
        if getattr(producer, "_closed", False):
            raise ProduceError("the producer is closed")
        ktp = KafkaTopicPartition(topic, partition)
        futures: list[Any] = []
        try:
            transactions = getattr(producer, "_transaction_manager", None)
            if transactions is not None and transactions.is_transactional():
                transactions.maybe_add_partition_to_transaction(ktp)
            self._append_all(ktp, records, futures)
        except kerrors.KafkaError as exc:
            raise ProduceError(f"cannot send records to {topic}[{partition}]: {exc}") from exc
        except (ValueError, TypeError, ProduceError) as exc:
            raise ProduceError(f"records for {topic}[{partition}] rejected: {exc}") from exc
        finally:
            if futures:
                self._wakeup()
        return futures

    def _append_all(self, ktp: Any, records: BatchRecords, futures: list[Any]) -> None:
        producer, append, writer = self._producer, self._append, self.writer
        timestamp_ms = int(time.time() * 1000)
        now = time.monotonic()
        header_blocks: dict[int, bytes] = {}
        index, end = 0, len(records)
        while index < end:
            # One record the ordinary way: the accumulator picks or opens the
            # batch (and handles a record too big for any batch).
            key, value, headers = records[index]
            header_list = [(name, bytes(raw)) for name, raw in headers] if headers else []
            if (0 if key is None else len(key)) + (0 if value is None else len(value)) > (
                self._cheap_limit
            ):
                producer._ensure_valid_record_size(
                    producer._estimate_size_in_bytes(key, value, header_list)
                )
            if key is None and value is None:
                raise ProduceError("a record has no key and no value")
            future = append(ktp, timestamp_ms, key, value, header_list, now=now)[0]
            _track(futures, future)
            index += 1
            if writer is not None and index < end:
                # The following ones straight into that batch while they fit.
                written, last = self._fill_open_batch(
                    ktp, future, records, index, timestamp_ms, now, header_blocks
                )
                if written:
                    index += written
                    _track(futures, last)

    def _fill_open_batch(
        self,
        ktp: Any,
        future: Any,
        records: BatchRecords,
        index: int,
        timestamp_ms: int,
        now: float,
        header_blocks: dict[int, bytes],
    ) -> tuple[int, Any]:
        """Write ``records[index:]`` into the batch ``future`` went into, if still open."""
        accumulator, writer = self._accumulator, self.writer
        assert writer is not None
        accumulator._appends_in_progress.increment()
        try:
            with accumulator._tp_lock(ktp):
                dq = accumulator._batches.get(ktp)
                if not dq or accumulator._closed:
                    return 0, None
                batch = dq[-1]
                if batch.produce_future is not future._produce_future or batch.records._closed:
                    return 0, None  # drained by the sender meanwhile
                return writer.fill(batch, records, index, timestamp_ms, now, header_blocks)
        finally:
            accumulator._appends_in_progress.decrement()


def _track(futures: list[Any], future: Any) -> None:
    # Keep one future per batch: a later record of the same batch replaces it.
    if futures and futures[-1]._produce_future is future._produce_future:
        futures[-1] = future
    else:
        futures.append(future)


def _direct_writer(
    accumulator: Any, config: dict[str, Any], max_request_size: int, report: Disabled
) -> RecordWriter | None:
    """The record writer, if the accumulator has what it needs and records that
    fit a batch also fit a request (so they need no size check of their own)."""
    batch_size = config.get("batch_size")
    if not isinstance(batch_size, int) or batch_size > max_request_size:
        report(
            "the record writer",
            f"batch_size ({batch_size}) is above max_request_size ({max_request_size}); "
            "send_batch appends every record through kafka-python's accumulator (slower)",
        )
        return None
    needed = ("_tp_lock", "_batches", "_closed", "_appends_in_progress")
    missing = [name for name in needed if not hasattr(accumulator, name)]
    if missing:
        report(
            "the record writer",
            f"kafka-python's accumulator has no {', '.join(missing)}; send_batch appends every "
            "record through kafka-python's accumulator (slower)",
        )
        return None
    return record_writer(report)


# ----------------------------------------------------------------- split batches


class SplitWatch:
    """Gives every batch kafka-python splits off a too-large one a tracked future.

    Installed as the accumulator's ``split_and_reenqueue`` (kafka-python's
    sender looks it up on the instance), it runs on kafka-python's sender
    thread. After the split, the last entry of each new batch's per-record
    future list is appended to ``pending`` (the producer's futures to
    check), after replacing it with a real future where it is the record
    writer's placeholder. Those futures are in the batches' lists, so a
    further split moves them on like any other; the old batch is never
    completed, and the futures tracked for it have been moved too.

    ``begun`` counts the splits begun, :attr:`idle` says whether one is
    under way and :meth:`settle` waits for it, for the producer's flush (see
    :meth:`~statestream.log.kafka.producer.KafkaRecordProducer.flush`).
    """

    def __init__(self, accumulator: Any, split: Any, pending: collections.deque[Any]) -> None:
        self._accumulator = accumulator
        self._split = split
        self._pending = pending
        self._changed = threading.Condition()
        self.begun = 0
        self._finished = 0

    def __call__(self, batch: Any, now: float | None = None) -> Any:
        # Counted before: the split wakes up a flush waiting for the batch
        # (when it moves the first future) before it queues the new batches.
        with self._changed:
            self.begun += 1
        try:
            count = self._split(batch, now)
            try:
                self._watch(batch.topic_partition, count)
            except Exception:  # never break the sender thread; the split itself is done
                log.exception(
                    "cannot watch the batches split from one to %s: their failures may go unseen",
                    batch.topic_partition,
                )
        finally:
            with self._changed:
                self._finished += 1
                self._changed.notify_all()
        return count

    @property
    def idle(self) -> bool:
        """True when no split is under way."""
        return self._finished == self.begun

    def settle(self, timeout: float | None) -> bool:
        """Wait until no split is under way; False if ``timeout`` (seconds) ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: self._finished == self.begun, timeout)

    def _watch(self, tp: Any, count: int) -> None:
        accumulator = self._accumulator
        # The split put its batches at the head of the partition's queue,
        # which only the sender thread (this one) takes from.
        with accumulator._tp_lock(tp):
            parts = list(itertools.islice(accumulator._batches[tp], count))
        pending = self._pending
        for part in parts:
            futures = part._record_futures
            if not futures:
                continue
            last = futures[-1]
            if last is UNWATCHED:
                last = futures[-1] = FutureRecordMetadata(
                    part.produce_future, len(futures) - 1, -1, None, -1, -1, -1
                )
            pending.append(last)


_SPLIT_PARAMETERS = ("batch", "now")


def watch_splits(
    producer: Any, pending: collections.deque[Any], report: Disabled = _not_told
) -> SplitWatch | None:
    """Install a :class:`SplitWatch` on ``producer``'s accumulator; ``None`` (after
    telling ``report``) if its internals are not the expected ones."""
    accumulator = getattr(producer, "_accumulator", None)
    split = getattr(accumulator, "split_and_reenqueue", None)
    parameters: tuple[str, ...] = ()
    if split is not None:
        with contextlib.suppress(TypeError, ValueError):
            parameters = tuple(inspect.signature(split).parameters)
    if (
        accumulator is None
        or parameters != _SPLIT_PARAMETERS
        or not all(hasattr(accumulator, name) for name in ("_tp_lock", "_batches"))
    ):
        report(
            "watching split batches",
            "kafka-python's accumulator has no split_and_reenqueue(batch, now), _tp_lock or "
            f"_batches; {_APPENDER_OFF}, so that every record keeps its own future, and a "
            "flush that a batch split interrupts fails",
        )
        return None
    watch = SplitWatch(accumulator, split, pending)
    accumulator.split_and_reenqueue = watch
    return watch
