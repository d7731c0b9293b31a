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

This reaches into two private members of ``KafkaProducer`` (``_accumulator``
and ``_sender``). :func:`accumulator_appender` checks they look as expected
and returns ``None`` otherwise, in which case the caller falls back to
``send`` for every record; the fast path is tested against the installed
kafka-python on a real broker.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import kafka.errors as kerrors
from kafka.structs import TopicPartition as KafkaTopicPartition

from statestream.errors import ProduceError
from statestream.types import Headers

__all__ = ["BatchAppender", "BatchRecords", "accumulator_appender"]

#: Appends records to one partition; returns the futures to track (one per
#: accumulator batch touched, the last record's future last).
BatchRecords = Sequence[tuple[bytes | None, bytes | None, Headers]]
BatchAppender = Callable[[str, int, BatchRecords], list[Any]]

_APPEND_PARAMETERS = ("tp", "timestamp_ms", "key", "value", "headers", "now")


def accumulator_appender(producer: Any) -> BatchAppender | None:
    """Return a batch appender for ``producer`` (a ``KafkaProducer``), or ``None``
    if its internals are not the ones this was written against."""
    accumulator = getattr(producer, "_accumulator", None)
    sender = getattr(producer, "_sender", None)
    append = getattr(accumulator, "append", None)
    wakeup = getattr(sender, "wakeup", None)
    config = getattr(producer, "config", None)
    if append is None or wakeup is None or not isinstance(config, dict):
        return None
    try:
        parameters = tuple(inspect.signature(append).parameters)
    except (TypeError, ValueError):
        return None
    if parameters[: len(_APPEND_PARAMETERS)] != _APPEND_PARAMETERS:
        return None
    max_request_size = config.get("max_request_size")
    if not isinstance(max_request_size, int):
        return None
    # Records whose key and value are this small cannot exceed the request
    # size whatever their headers; bigger ones get kafka-python's own check.
    cheap_limit = max_request_size // 2

    def append_batch(
        topic: str,
        partition: int,
        records: BatchRecords,
    ) -> list[Any]:
        if getattr(producer, "_closed", False):
            raise ProduceError("the producer is closed")
        ktp = KafkaTopicPartition(topic, partition)
        transactions = getattr(producer, "_transaction_manager", None)
        futures: list[Any] = []
        try:
            if transactions is not None and transactions.is_transactional():
                transactions.maybe_add_partition_to_transaction(ktp)
            timestamp_ms = int(time.time() * 1000)
            now = time.monotonic()
            future = None
            for key, value, headers in records:
                header_list = [(name, bytes(raw)) for name, raw in headers] if headers else []
                if (0 if key is None else len(key)) + (
                    0 if value is None else len(value)
                ) > cheap_limit:
                    producer._ensure_valid_record_size(
                        producer._estimate_size_in_bytes(key, value, header_list)
                    )
                if key is None and value is None:
                    raise ProduceError(f"a record for {topic}[{partition}] has no key and no value")
                future, _full, new_batch, _abort = append(
                    ktp, timestamp_ms, key, value, header_list, now=now
                )
                if new_batch or not futures:
                    futures.append(future)
            if future is not None and futures[-1] is not future:
                futures.append(future)
        except kerrors.KafkaError as exc:
            raise ProduceError(f"cannot send records to {topic}[{partition}]: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ProduceError(f"records for {topic}[{partition}] rejected: {exc}") from exc
        finally:
            if futures:
                wakeup()
        return futures

    return append_batch
