"""The embedded producer's send_batch: the same records as one send per record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestream.errors import ProduceError
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.log.embedded import EmbeddedTransport
from statestream.log.embedded.codec import encode_keyed_batch, encode_record
from statestream.types import Headers, TopicPartition
from tests.log.test_embedded import read_all

_headers = st.lists(
    st.tuples(st.text(max_size=5), st.binary(max_size=8)).map(tuple), max_size=3
).map(tuple)
_records = st.lists(
    st.tuples(st.binary(max_size=6), st.none() | st.binary(max_size=10), _headers), max_size=30
)


@given(_records, st.integers(0, 2**62), st.booleans())
def test_a_keyed_batch_encodes_each_record_as_encode_record(
    records: list[tuple[bytes, bytes | None, Headers]], timestamp: int, share: bool
) -> None:
    if share and records:
        # The changelog writer's case: records of one source share a headers object.
        shared = records[0][2]
        records = [(k, v, shared) for k, v, _ in records]
    assert encode_keyed_batch(records, timestamp) == [
        encode_record(k, v, timestamp, h) for k, v, h in records
    ]


def test_a_batch_it_cannot_encode_in_one_step_is_refused_whole() -> None:
    assert encode_keyed_batch([(b"k", b"v", ()), (None, b"v", ())], 0) is None
    assert encode_keyed_batch([(b"k", bytearray(b"v"), ())], 0) is None  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"\(str, bytes\) pairs"):
        encode_keyed_batch([(b"k", b"v", (("h", "not bytes"),))], 0)  # type: ignore[list-item]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EmbeddedTransport]:
    transport = open_transport(f"embedded://{tmp_path}/log")
    assert isinstance(transport, EmbeddedTransport)
    admin = transport.admin()
    admin.ensure_topic(TopicSpec("t", 2))
    admin.ensure_topic(TopicSpec("c", 1, "compact"))
    admin.close()
    yield transport
    transport.close()


@settings(max_examples=25, deadline=None)
@given(batches=st.lists(_records, min_size=1, max_size=4))
def test_batches_read_back_in_order_with_the_last_offset(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[bytes, bytes | None, Headers]]],
) -> None:
    path = tmp_path_factory.mktemp("batches")
    transport = open_transport(f"embedded://{path}/log")
    try:
        admin = transport.admin()
        admin.ensure_topic(TopicSpec("t", 1))
        admin.close()
        producer = transport.producer()
        deliveries = [producer.send_batch("t", 0, records) for records in batches]
        producer.flush()
        sent = [record for records in batches for record in records]
        got = read_all(transport, TopicPartition("t", 0))  # type: ignore[arg-type]
        assert [(r.key, r.value, tuple(r.headers)) for r in got] == [
            (k, v, tuple(h)) for k, v, h in sent
        ]
        ends = [d.offset if d is not None else None for d in deliveries]
        count = 0
        for records, end in zip(batches, ends, strict=True):
            count += len(records)
            assert end == (count - 1 if records else None)
        producer.close()
    finally:
        transport.close()


def test_keyless_records_take_the_per_record_path_and_its_checks(log: EmbeddedTransport) -> None:
    producer = log.producer()
    last = producer.send_batch("t", 1, [(b"a", b"1", ()), (None, b"2", ())])
    producer.flush()
    assert last is not None
    assert last.offset == 1
    assert [(r.key, r.value) for r in read_all(log, TopicPartition("t", 1))] == [
        (b"a", b"1"),
        (None, b"2"),
    ]
    with pytest.raises(ProduceError, match="compacted"):
        producer.send_batch("c", 0, [(None, b"no key", ())])
    with pytest.raises(ProduceError, match="partitions 0 to 1"):
        producer.send_batch("t", 2, [(b"a", b"1", ())])
    with pytest.raises(ProduceError, match=r"\(str, bytes\) pairs"):
        producer.send_batch("t", 0, [(b"a", b"1", (("h", 1),))])  # type: ignore[list-item]
    producer.close()
    with pytest.raises(ProduceError, match="closed"):
        producer.send_batch("t", 0, [(b"a", b"1", ())])


def test_a_failed_write_fails_the_batch_delivery(log: EmbeddedTransport) -> None:
    producer = log.producer()
    delivery = producer.send_batch("t", 0, [(b"a", b"1", ()), (b"b", b"2", ())])
    admin = log.admin()
    admin.delete_topic("t")
    admin.close()
    with pytest.raises(ProduceError, match="deleted"):
        producer.flush()
    assert delivery is not None
    assert delivery.done
    with pytest.raises(ProduceError, match="deleted"):
        delivery.offset  # noqa: B018
    with pytest.raises(ProduceError):
        producer.close()


def test_a_batch_waits_for_its_callers_flush_and_a_send_takes_it_along(
    log: EmbeddedTransport,
) -> None:
    # The changelog writer's batches are flushed by the commit right after
    # their sends; a background flush of them would run on another thread
    # while the commit goes on. A send still starts one, which writes
    # whatever is buffered, batches included.
    producer = log.producer()
    try:
        delivery = producer.send_batch("t", 0, [(b"a", b"1", ()), (b"b", b"2", ())])
        assert delivery is not None
        time.sleep(0.2)  # 20 times auto_flush_ms
        assert not delivery.done
        assert read_all(log, TopicPartition("t", 0)) == []
        producer.flush()
        assert delivery.offset == 1
        later = producer.send_batch("t", 1, [(b"c", b"3", ())])
        assert later is not None
        sent = producer.send("t", b"d", b"4", partition=1)
        deadline = time.monotonic() + 10
        while not later.done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert later.done
        assert sent.done
        assert [r.value for r in read_all(log, TopicPartition("t", 1))] == [b"3", b"4"]
    finally:
        producer.close()
