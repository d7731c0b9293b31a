"""The Kafka record writer writes exactly what kafka-python would (no broker needed)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.structs import TopicPartition

from statestream.log.kafka.record_writer import RecordWriter, record_writer
from statestream.types import Headers

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Records = list[tuple[bytes | None, bytes | None, Headers]]

records_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=40)),
        st.binary(max_size=300),
        st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=20)), max_size=3).map(tuple),
    ),
    min_size=1,
    max_size=60,
)


def _both(records: Records, batch_size: int) -> tuple[bytes, bytes, int, int, ProducerBatch]:
    """Fill one batch with kafka-python and one with the writer; return both buffers."""
    writer = record_writer()
    assert isinstance(writer, RecordWriter)
    base = int(time.time() * 1000)
    theirs = MemoryRecordsBuilder(2, 0, batch_size)
    ours = MemoryRecordsBuilder(2, 0, batch_size)
    # The accumulator writes the first record of a batch; the writer the rest.
    theirs.append(base, b"first", b"1", [])
    ours.append(base, b"first", b"1", [])
    taken = 0
    for key, value, headers in records:
        if theirs.append(base + 5, key, value, list(headers)) is None:
            break
        taken += 1
    batch = ProducerBatch(TopicPartition("t", 0), ours, now=time.monotonic())
    written, _ = writer.fill(batch, records, 0, base + 5, time.monotonic(), {})
    theirs.close()
    ours.close()
    return bytes(theirs.buffer()), bytes(ours.buffer()), taken, written, batch


def test_the_installed_kafka_python_gets_the_writer() -> None:
    # It checks itself against kafka-python at construction; None would mean
    # the fast path is silently off.
    assert record_writer() is not None


@settings(max_examples=150, deadline=None)
@given(records=records_strategy, batch_size=st.integers(200, 20_000))
def test_batches_are_byte_identical_to_kafka_pythons(records: Records, batch_size: int) -> None:
    theirs, ours, taken, written, batch = _both(records, batch_size)
    # Same records fit, same bytes (header, counts, timestamps, CRC included).
    assert written == taken
    assert ours == theirs
    # One entry per record in the batch's future list (kafka-python reads it
    # by position when it splits a batch), the first being the accumulator's.
    assert len(batch._record_futures) == written
    decoded = [r for b in MemoryRecords(ours) for r in b]
    assert [(r.key, r.value, tuple(r.headers)) for r in decoded[1:]] == [
        (k, v, tuple(h)) for k, v, h in records[:written]
    ]


def test_a_record_without_key_and_value_stops_the_fill() -> None:
    writer = record_writer()
    assert writer is not None
    builder = MemoryRecordsBuilder(2, 0, 10_000)
    builder.append(int(time.time() * 1000), b"first", b"1", [])
    batch = ProducerBatch(TopicPartition("t", 0), builder, now=time.monotonic())
    records: Records = [(b"a", b"1", ()), (None, None, ()), (b"b", b"2", ())]
    written, future = writer.fill(batch, records, 0, int(time.time() * 1000), 0.0, {})
    assert written == 1
    assert future is not None
    assert builder.next_offset() == 2
