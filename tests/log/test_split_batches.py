"""Batches the broker refuses as too large are split by kafka-python; every part is watched.

When a produce request fails with MESSAGE_TOO_LARGE, kafka-python 3.0
splits the batch in halves (again and again, down to single records),
moves each record's future to its new batch by position, and never
completes the old batch. The Kafka producer's fast paths track one future
per batch, so the parts of a split batch must get watched futures of their
own, or the failure of a part (a record too large for the topic) would go
unnoticed while the other records land.

The unit tests drive a real kafka-python ``RecordAccumulator`` and its real
``split_and_reenqueue`` through the producer's fast paths, with a broker
emulated in the test (no network). The ``kafka`` tests do the same against
the real broker. The last section checks that every fast path or
workaround that turns itself off says so once, when the client is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import kafka
import kafka.errors as kerrors
import pytest
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition as KafkaTopicPartition

from statestream.errors import ProduceError
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.log.kafka import KafkaTransport
from statestream.log.kafka.producer import KafkaRecordProducer
from statestream.log.kafka_options import KafkaOptions
from statestream.types import Headers, TopicPartition
from tests.log.helpers import read_partition

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Records = list[tuple[bytes | None, bytes | None, Headers]]

# The emulated topic's max.message.bytes: below the batch size, so full
# batches are refused and split.
TOPIC_LIMIT = 2048


class FakeTransport:
    """What ``KafkaRecordProducer`` asks of its transport, without a cluster."""

    def __init__(self) -> None:
        self.options = KafkaOptions()
        self._where = "emulated:9092"
        self.forgotten: list[Any] = []
        self.disabled: list[tuple[str, str]] = []

    def topic_exists(self, topic: str) -> bool:
        return True

    def _forget(self, client: Any) -> None:
        self.forgotten.append(client)

    def _disabled(self, feature: str, detail: str) -> None:
        self.disabled.append((feature, detail))


class _Sender:
    def wakeup(self) -> None:
        return None


class EmulatedKafkaProducer:
    """A ``KafkaProducer`` stand-in: kafka-python's own accumulator and batches,
    and a broker emulated in :meth:`flush`.

    The broker refuses batches larger than ``TOPIC_LIMIT`` bytes with
    MESSAGE_TOO_LARGE, as Kafka does for a topic's ``max.message.bytes``;
    the "sender" then splits them with the accumulator's
    ``split_and_reenqueue`` (looked up on the instance, as kafka-python's
    sender does), or fails a batch of one record. ``reject`` can fail
    whole partitions with another error.
    """

    def __init__(self, partitions: int = 2, batch_size: int = 16_384) -> None:
        self.config: dict[str, Any] = {"max_request_size": 1 << 20, "batch_size": batch_size}
        self._accumulator = RecordAccumulator(batch_size=batch_size)
        self._sender = _Sender()
        self._transaction_manager = None
        self._closed = False
        self.partitions = partitions
        self.log: dict[KafkaTopicPartition, list[tuple[bytes | None, bytes | None]]] = {}
        self.reject: dict[KafkaTopicPartition, kerrors.KafkaError] = {}

    # -- what the producer calls
    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def send(self, topic: str, value: Any, key: Any, headers: Any, partition: Any, **_: Any) -> Any:
        tp = KafkaTopicPartition(topic, 0 if partition is None else partition)
        return self._accumulator.append(tp, 0, key, value, headers or [])[0]

    def _ensure_valid_record_size(self, size: int) -> None:
        return None

    def _estimate_size_in_bytes(self, key: Any, value: Any, headers: Any) -> int:
        return 0

    def close(self, timeout: float | None = None) -> None:
        self._closed = True

    def flush(self, timeout: float | None = None) -> None:
        accumulator = self._accumulator
        for tp, dq in list(accumulator._batches.items()):
            while dq:
                with accumulator._tp_lock(tp):
                    batch = dq.popleft()
                batch.records.close()
                self._answer(tp, batch)

    def _answer(self, tp: KafkaTopicPartition, batch: Any) -> None:
        accumulator = self._accumulator
        error = self.reject.get(tp)
        if error is None and len(batch.records.buffer()) > TOPIC_LIMIT:
            if batch.record_count > 1:
                accumulator.split_and_reenqueue(batch)
                accumulator.deallocate(batch)
                return
            error = kerrors.MessageSizeTooLargeError("the record is larger than the topic takes")
        if error is not None:
            batch.complete_exceptionally(error, lambda _, error=error: error)
        else:
            written = self.log.setdefault(tp, [])
            base = len(written)
            written.extend(
                (r.key, r.value) for b in MemoryRecords(batch.records.buffer()) for r in b
            )
            batch.complete(base, -1)
        accumulator.deallocate(batch)


def _producer(path: str) -> tuple[KafkaRecordProducer, EmulatedKafkaProducer]:
    kp = EmulatedKafkaProducer()
    producer = KafkaRecordProducer(FakeTransport(), kp, None)  # type: ignore[arg-type]
    appender = producer._append_batch
    assert appender is not None
    assert appender.writer is not None
    if path == "accumulator":
        appender.writer = None
    return producer, kp


def _records(n: int, big: int | None = None) -> Records:
    return [
        (b"key-%04d" % i, b"x" * (3 * TOPIC_LIMIT // 2 if i == big else 40), (("n", b"%d" % i),))
        for i in range(n)
    ]


@pytest.mark.parametrize("path", ["record-writer", "accumulator"])
def test_the_failure_of_one_part_of_a_split_batch_fails_flush(path: str) -> None:
    producer, kp = _producer(path)
    # Partition 0: one record in 40 is too large for the topic; the batch is
    # split down to that record, which fails while the 39 others land.
    # Partition 1: too large as a batch only; every part lands.
    bad = producer.send_batch("t", 0, _records(40, big=17))
    good = producer.send_batch("t", 1, _records(40))
    assert bad is not None
    assert good is not None
    with pytest.raises(ProduceError, match=r"t\[0\].*larger than the topic takes") as info:
        producer.flush()
    assert isinstance(info.value.__cause__, kerrors.MessageSizeTooLargeError)
    # The emulated broker split as kafka-python does: 39 of 40 landed.
    assert len(kp.log[KafkaTopicPartition("t", 0)]) == 39
    assert [k for k, _ in kp.log[KafkaTopicPartition("t", 1)]] == [k for k, _, _ in _records(40)]
    assert good.offset == 39
    with pytest.raises(ProduceError, match=r"t\[0\]"):
        producer.close()


# ---------------------------------------------------------------- real broker


@pytest.fixture
def kafka_transport(kafka_bootstrap: str) -> Iterator[KafkaTransport]:
    opened = open_transport(
        f"kafka://{kafka_bootstrap}?enable_idempotence=false&max_in_flight_requests_per_connection=1"
    )
    assert isinstance(opened, KafkaTransport)
    try:
        yield opened
    finally:
        opened.close()


def _broker_producer(transport: KafkaTransport, path: str) -> KafkaRecordProducer:
    producer = transport.producer()
    assert producer._append_batch is not None
    assert producer._append_batch.writer is not None
    if path == "accumulator":
        producer._append_batch.writer = None
    elif path == "record-by-record":
        producer._append_batch = None
    return producer


@pytest.mark.kafka
@pytest.mark.parametrize("path", ["record-writer", "accumulator", "record-by-record"])
def test_a_record_too_large_for_the_topic_fails_the_write_on_the_broker(
    kafka_transport: KafkaTransport, unique_topic: str, path: str
) -> None:
    config = {"max.message.bytes": str(TOPIC_LIMIT)}
    kafka_transport.admin().create_topic(TopicSpec(unique_topic, 1, config=config))
    producer = _broker_producer(kafka_transport, path)
    try:
        producer.send_batch(unique_topic, 0, _records(40, big=17))
        with pytest.raises(ProduceError, match=rf"{unique_topic}\[0\]"):
            producer.flush(timeout=30)
    finally:
        with pytest.raises(ProduceError):
            producer.close()
    landed = read_partition(kafka_transport, TopicPartition(unique_topic, 0))
    assert len(landed) == 39


@pytest.mark.kafka
@pytest.mark.parametrize("idempotence", ["true", "false"])
@pytest.mark.parametrize("path", ["record-writer", "accumulator", "record-by-record"])
def test_batches_split_for_the_topic_limit_land_with_exact_offsets(
    kafka_bootstrap: str, unique_topic: str, path: str, idempotence: str
) -> None:
    # kafka-python's own flush gives up ("Future not done") on a batch split
    # while it waits; the producer waits for the parts instead.
    ordered = "" if idempotence == "true" else "&max_in_flight_requests_per_connection=1"
    transport = open_transport(
        f"kafka://{kafka_bootstrap}?enable_idempotence={idempotence}{ordered}"
    )
    assert isinstance(transport, KafkaTransport)
    try:
        config = {"max.message.bytes": str(TOPIC_LIMIT)}
        transport.admin().create_topic(TopicSpec(unique_topic, 1, config=config))
        producer = _broker_producer(transport, path)
        records = _records(600)
        try:
            first = producer.send_batch(unique_topic, 0, records[:300])
            second = producer.send_batch(unique_topic, 0, records[300:])
            producer.flush(timeout=30)
            assert first is not None
            assert second is not None
        finally:
            producer.close()
        got = read_partition(transport, TopicPartition(unique_topic, 0))
        landed = {r.offset: (r.key, r.value, r.headers) for r in got}
        assert sorted(landed.values()) == sorted(records)
        # Each delivery has the offset its record landed at.
        assert (landed[first.offset], landed[second.offset]) == (records[299], records[599])
        if idempotence == "true":
            # Without idempotence kafka-python sends the parts of a split
            # batch with up to max_in_flight_requests_per_connection
            # requests at a time, so they may land out of order.
            assert [(r.key, r.value, r.headers) for r in got] == records
            assert (first.offset, second.offset) == (299, 599)
    finally:
        transport.close()


# ------------------------------------------- fast paths that turn themselves off


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "statestream.log.kafka"
    ]


def _two_producers(transport: KafkaTransport) -> list[KafkaRecordProducer]:
    producers = [transport.producer(), transport.producer()]
    for producer in producers:
        producer.close()
    return producers


@pytest.mark.kafka
def test_a_kafka_python_other_than_3_0_turns_the_record_writer_off_with_one_warning(
    kafka_transport: KafkaTransport,
    unique_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "statestream.log.kafka")
    # With the kafka-python the suite runs on, nothing turns itself off.
    kafka_transport.producer().close()
    kafka_transport.fetcher().close()
    kafka_transport.group_member(f"g-{unique_topic}").close()
    assert _warnings(caplog) == []
    monkeypatch.setattr(kafka, "__version__", "3.1.0")
    producers = _two_producers(kafka_transport)
    assert all(p._append_batch is not None for p in producers)
    assert all(p._append_batch.writer is None for p in producers if p._append_batch)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "record writer" in warnings[0]
    assert "3.1.0" in warnings[0]


@pytest.mark.kafka
def test_a_failed_record_writer_self_check_warns_once(
    kafka_transport: KafkaTransport,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from statestream.log.kafka import record_writer

    monkeypatch.setattr(record_writer, "_self_check", lambda writer: False)
    caplog.set_level(logging.WARNING, "statestream.log.kafka")
    producers = _two_producers(kafka_transport)
    assert all(p._append_batch and p._append_batch.writer is None for p in producers)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "record writer" in warnings[0]


@pytest.mark.kafka
def test_unexpected_accumulator_internals_turn_the_fast_path_off_with_one_warning(
    kafka_transport: KafkaTransport,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def append(self: Any, tp: Any, timestamp_ms: Any, key: Any, value: Any) -> Any:
        raise AssertionError("not called")

    monkeypatch.setattr(RecordAccumulator, "append", append)
    caplog.set_level(logging.WARNING, "statestream.log.kafka")
    producers = _two_producers(kafka_transport)
    assert all(p._append_batch is None for p in producers)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "send_batch fast path" in warnings[0]


@pytest.mark.kafka
def test_without_split_internals_send_batch_falls_back_to_send_with_one_warning(
    kafka_transport: KafkaTransport,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delattr(RecordAccumulator, "split_and_reenqueue")
    caplog.set_level(logging.WARNING, "statestream.log.kafka")
    producers = _two_producers(kafka_transport)
    assert all(p._append_batch is None for p in producers)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "split" in warnings[0]


def _drop_attribute(cls: type, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make instances of ``cls`` lack the instance attribute ``name``."""
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.__dict__.pop(name, None)

    monkeypatch.setattr(cls, "__init__", init)


@pytest.mark.kafka
def test_consumer_workarounds_that_cannot_apply_warn_once(
    kafka_transport: KafkaTransport,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kafka.consumer.fetcher import Fetcher

    _drop_attribute(Fetcher, "_next_partition_records", monkeypatch)
    caplog.set_level(logging.WARNING, "statestream.log.kafka")
    for _ in range(2):
        kafka_transport.fetcher().close()
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "paused" in warnings[0]
