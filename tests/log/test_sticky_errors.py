"""Producer errors are sticky: the first failed delivery fails everything after it.

Whichever thread sent the failed record, and however the failure was
learned (a flush, a background flush of the embedded log), every later
``send``, ``send_batch`` and ``flush`` on every thread raises
``ProduceError`` for it, with the original error as ``__cause__``, until
the producer is closed; ``close`` releases the producer and raises it too.
A commit can therefore never follow a lost record, whichever partition
thread commits next.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kafka.errors as kerrors
import pytest
from kafka.structs import TopicPartition as KafkaTopicPartition

from statestream.errors import LogError, ProduceError
from statestream.log import Producer, open_transport
from statestream.log.base import TopicSpec
from statestream.log.embedded import EmbeddedTransport
from statestream.log.kafka import KafkaTransport
from statestream.log.kafka.producer import KafkaRecordProducer
from statestream.types import TopicPartition
from tests.log.test_split_batches import EmulatedKafkaProducer, FakeTransport

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _on_another_thread(calls: list[Callable[[], Any]]) -> list[BaseException | None]:
    """Run ``calls`` on a new thread; return what each raised (None: nothing)."""
    raised: list[BaseException | None] = []

    def run() -> None:
        for call in calls:
            try:
                call()
            except BaseException as exc:  # reported to the test thread
                raised.append(exc)
            else:
                raised.append(None)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return raised


def _every_call_raises(producer: Producer, topic: str, where: str, cause: BaseException) -> None:
    """Every producing call, on this thread and on a fresh one, raises for ``cause``."""
    calls: list[Callable[[], Any]] = [
        producer.flush,
        lambda: producer.send(topic, b"later", b"v", partition=0),
        lambda: producer.send_batch(topic, 0, [(b"later", b"v", ())]),
        producer.flush,
    ]
    for call in calls:
        with pytest.raises(ProduceError, match=re.escape(where)) as info:
            call()
        assert info.value.__cause__ is cause
    for error in _on_another_thread(calls):
        assert isinstance(error, ProduceError), error
        assert where in str(error)
        assert error.__cause__ is cause


# ---------------------------------------------------------------------- Kafka


def test_kafka_the_first_failed_delivery_fails_every_later_call_until_close() -> None:
    transport, kp = FakeTransport(), EmulatedKafkaProducer()
    producer = KafkaRecordProducer(transport, kp, None)  # type: ignore[arg-type]
    cause = kerrors.NotEnoughReplicasError("1 of 3 replicas in sync")
    kp.reject[KafkaTopicPartition("t", 1)] = cause
    producer.send("t", b"fine", b"v", partition=0)
    producer.flush()
    # Sent by another thread; this one never sent anything.
    assert _on_another_thread([lambda: producer.send_batch("t", 1, [(b"k", b"v", ())])]) == [None]
    with pytest.raises(ProduceError, match=r"t\[1\].*1 of 3 replicas in sync") as info:
        producer.flush()
    assert info.value.__cause__ is cause
    _every_call_raises(producer, "t", "t[1]", cause)
    with pytest.raises(ProduceError, match=r"t\[1\]"):
        producer.close()
    assert kp._closed
    assert transport.forgotten == [producer]
    producer.close()  # closed: nothing more to report


def test_kafka_a_failure_found_by_one_thread_stops_the_sends_of_the_others() -> None:
    transport, kp = FakeTransport(), EmulatedKafkaProducer()
    producer = KafkaRecordProducer(transport, kp, None)  # type: ignore[arg-type]
    cause = kerrors.NotLeaderForPartitionError("leader moved")
    kp.reject[KafkaTopicPartition("t", 0)] = cause
    producer.send("t", b"k", b"v", partition=0)
    [flushed] = _on_another_thread([producer.flush])
    assert isinstance(flushed, ProduceError)
    # The sending thread learns it from its next send, before any flush.
    with pytest.raises(ProduceError, match=r"t\[0\].*leader moved"):
        producer.send("t", b"k", b"v", partition=1)
    with pytest.raises(ProduceError):
        producer.close()


@pytest.fixture
def kafka_transport(kafka_bootstrap: str) -> Iterator[KafkaTransport]:
    opened = open_transport(f"kafka://{kafka_bootstrap}")
    assert isinstance(opened, KafkaTransport)
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.kafka
def test_kafka_a_record_the_broker_refuses_fails_every_later_call(
    kafka_transport: KafkaTransport, unique_topic: str
) -> None:
    # Compacted topics refuse records without key: a failure the broker reports.
    spec = TopicSpec(unique_topic, 1, cleanup_policy="compact")
    kafka_transport.admin().create_topic(spec)
    producer = kafka_transport.producer()
    producer.send(unique_topic, b"key", b"fine")
    producer.flush()
    [sent] = _on_another_thread([lambda: producer.send(unique_topic, None, b"no key")])
    assert sent is None
    with pytest.raises(ProduceError, match=rf"{unique_topic}\[0\]") as info:
        producer.flush()
    cause = info.value.__cause__
    assert isinstance(cause, kerrors.KafkaError)
    _every_call_raises(producer, unique_topic, f"{unique_topic}[0]", cause)
    with pytest.raises(ProduceError, match=rf"{unique_topic}\[0\]"):
        producer.close()
    assert producer._kp._closed
    assert producer not in kafka_transport._clients


# ---------------------------------------------------------------- embedded log


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedTransport]:
    opened = open_transport(f"embedded://{tmp_path}/log?auto_flush_ms=0&cleanup_interval_ms=0")
    assert isinstance(opened, EmbeddedTransport)
    opened.admin().create_topic(TopicSpec("t", 2))
    try:
        yield opened
    finally:
        opened.close()


def _high(transport: EmbeddedTransport, topic: str, partition: int) -> int:
    fetcher = transport.fetcher()
    try:
        return fetcher.watermarks(TopicPartition(topic, partition))[1]
    finally:
        fetcher.close()


def test_embedded_a_failed_background_flush_fails_every_later_call(
    embedded: EmbeddedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = embedded.producer()
    producer.send("t", b"k", b"v", partition=1)
    cause = LogError("no space left on device")

    def failing_append(*args: Any, **kwargs: Any) -> None:
        raise cause

    log = producer._log
    monkeypatch.setattr(log, "append", failing_append)
    producer.background_flush()  # what the transport's flusher thread runs
    monkeypatch.undo()  # the log works again; the producer still refuses
    with pytest.raises(ProduceError, match=r"t\[1\].*no space left on device") as info:
        producer.flush()
    assert info.value.__cause__ is cause
    _every_call_raises(producer, "t", "t[1]", cause)
    with pytest.raises(ProduceError, match=r"t\[1\]"):
        producer.close()
    assert producer not in embedded._clients
    producer.close()  # closed: nothing more to report
    assert _high(embedded, "t", 0) == _high(embedded, "t", 1) == 0


def test_embedded_a_failed_flush_fails_every_later_call(embedded: EmbeddedTransport) -> None:
    admin = embedded.admin()
    admin.create_topic(TopicSpec("gone", 1))
    producer = embedded.producer()
    producer.send("gone", b"k", b"v", partition=0)
    admin.delete_topic("gone")
    with pytest.raises(ProduceError, match=r"gone\[0\].*deleted") as info:
        producer.flush()
    cause = info.value.__cause__
    assert isinstance(cause, ProduceError)
    _every_call_raises(producer, "t", "gone[0]", cause)
    with pytest.raises(ProduceError, match=r"gone\[0\]"):
        producer.close()
    assert _high(embedded, "t", 0) == 0
