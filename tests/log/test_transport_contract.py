"""The transport contract: the embedded log and Kafka behave the same.

Every test runs on both transports (see ``conftest.py``).
"""

from __future__ import annotations

import time

import pytest

from statestream.errors import (
    ConfigurationError,
    OffsetOutOfRangeError,
    StateStreamError,
    TopicExistsError,
    TopicMismatchError,
    UnknownTransportSchemeError,
)
from statestream.log import Transport, open_transport
from statestream.log.base import Delivery, RebalanceListener, TopicSpec
from statestream.log.partitioner import default_partition
from statestream.types import Record, TopicPartition
from tests.log.helpers import read_partition, wait_for

# Topic settings that let Kafka's log cleaner act within seconds.
FAST_COMPACTION = {
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
}


def produce(transport: Transport, topic: str, items: list[tuple[bytes | None, bytes | None]],
            partition: int | None = None) -> list[Delivery]:  # fmt: skip
    producer = transport.producer()
    try:
        deliveries = [producer.send(topic, k, v, partition=partition) for k, v in items]
        producer.flush()
        return deliveries
    finally:
        producer.close()


# -- admin ---------------------------------------------------------------------


def test_ensure_topic_creates_then_validates(transport: Transport, topic_name: str) -> None:
    admin = transport.admin()
    assert admin.describe_topic(topic_name) is None
    spec = TopicSpec(topic_name, partitions=4, cleanup_policy="compact")
    created = admin.ensure_topic(spec)
    assert (created.partitions, created.cleanup_policy) == (4, "compact")
    assert topic_name in admin.list_topics()
    again = admin.ensure_topic(spec)  # idempotent
    assert again.partitions == 4
    described = admin.describe_topic(topic_name)
    assert described is not None
    assert described.cleanup_policy == "compact"
    with pytest.raises(TopicExistsError):
        admin.create_topic(spec)


def test_ensure_topic_refuses_wrong_partitions_or_policy(
    transport: Transport, topic_name: str
) -> None:
    admin = transport.admin()
    admin.create_topic(TopicSpec(topic_name, partitions=2, cleanup_policy="compact"))
    with pytest.raises(TopicMismatchError, match="2 partitions, expected 3") as info:
        admin.ensure_topic(TopicSpec(topic_name, partitions=3, cleanup_policy="compact"))
    assert "recreate it" in str(info.value)
    with pytest.raises(TopicMismatchError, match=r"cleanup\.policy=compact, expected delete"):
        admin.ensure_topic(TopicSpec(topic_name, partitions=2, cleanup_policy="delete"))


def test_delete_topic(transport: Transport, topic_name: str) -> None:
    admin = transport.admin()
    admin.create_topic(TopicSpec(topic_name, partitions=1))
    admin.delete_topic(topic_name)
    wait_for(lambda: admin.describe_topic(topic_name) is None, 30, "topic deletion")
    admin.delete_topic(topic_name)  # absent: no error


# -- produce and fetch ---------------------------------------------------------


def test_round_trip_keys_values_headers_timestamps(transport: Transport, topic_name: str) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=2))
    producer = transport.producer()
    # Recent timestamps: records older than retention.ms (7 days by default)
    # may be deleted by the broker before they are read back.
    now = int(time.time() * 1000) - 10_000
    sent = [
        (b"k1", b"v1", (("source-offset", b"\x00\x01"), ("trace", b"x")), now),
        (b"k2", None, (), now + 1),  # tombstone
        (None, b"no key", (("dup", b"1"), ("dup", b"2")), now + 2),
        (b"", b"", (), now + 3),
    ]
    deliveries = [
        producer.send(topic_name, k, v, partition=1, headers=h, timestamp=ts)
        for k, v, h, ts in sent
    ]
    producer.flush()
    producer.close()
    assert [d.offset for d in deliveries] == [0, 1, 2, 3]
    assert all(d.done and d.partition == 1 for d in deliveries)
    records = read_partition(transport, TopicPartition(topic_name, 1))
    got = [(r.key, r.value, r.headers, r.timestamp) for r in records]
    assert got == [(k, v, tuple(h), ts) for k, v, h, ts in sent]
    assert [r.offset for r in records] == [0, 1, 2, 3]
    assert all(r.topic == topic_name and r.partition == 1 for r in records)
    assert records[2].header("dup") == b"2"
    assert read_partition(transport, TopicPartition(topic_name, 0)) == []


def test_send_batch_writes_records_in_order(transport: Transport, topic_name: str) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=2))
    producer = transport.producer()
    try:
        assert producer.send_batch(topic_name, 1, []) is None
        first = [(b"k%d" % i, b"v%d" % i, (("n", str(i).encode()),)) for i in range(700)]
        second = [(b"k1", None, ()), (b"x", b"", (("a", b"1"), ("b", b"2")))]
        one = producer.send_batch(topic_name, 1, first)
        producer.send(topic_name, b"between", b"!", partition=1)
        two = producer.send_batch(topic_name, 1, second)
        producer.flush()
    finally:
        producer.close()
    assert one is not None
    assert two is not None
    # The delivery is the last record's: its offset is the batch's highest.
    assert (one.partition, one.offset) == (1, 699)
    assert (two.partition, two.offset) == (1, 702)
    records = read_partition(transport, TopicPartition(topic_name, 1))
    expected = [*first, (b"between", b"!", ()), *second]
    assert [(r.key, r.value, r.headers) for r in records] == [
        (k, v, tuple(h)) for k, v, h in expected
    ]
    assert [r.offset for r in records] == list(range(703))
    assert read_partition(transport, TopicPartition(topic_name, 0)) == []


def test_send_batch_refuses_a_partition_that_does_not_exist(
    transport: Transport, topic_name: str
) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=2))
    producer = transport.producer()
    try:
        with pytest.raises(StateStreamError, match=rf"{topic_name}.*2|2.*{topic_name}"):
            producer.send_batch(topic_name, 2, [(b"k", b"v", ())])
        producer.flush()
    finally:
        producer.close()
    assert read_partition(transport, TopicPartition(topic_name, 0)) == []
    assert read_partition(transport, TopicPartition(topic_name, 1)) == []


def test_keyed_partitioning_matches_kafka_default(transport: Transport, topic_name: str) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=5))
    keys = [f"user-{i}".encode() for i in range(60)]
    deliveries = produce(transport, topic_name, [(k, b"x") for k in keys])
    for key, delivery in zip(keys, deliveries, strict=True):
        assert delivery.partition == default_partition(key, 5), key
    for partition in range(5):
        records = read_partition(transport, TopicPartition(topic_name, partition))
        assert [r.key for r in records] == [k for k in keys if default_partition(k, 5) == partition]
    assert transport.producer().partitions_for(topic_name) == 5


def test_watermarks_and_positions(transport: Transport, topic_name: str) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=1))
    tp = TopicPartition(topic_name, 0)
    fetcher = transport.fetcher()
    try:
        fetcher.assign([tp])
        assert fetcher.assignment() == {tp}
        assert fetcher.watermarks(tp) == (0, 0)
        produce(transport, topic_name, [(b"k", str(i).encode()) for i in range(7)], partition=0)
        assert fetcher.watermarks(tp) == (0, 7)
        fetcher.seek(tp, 4)
        assert fetcher.position(tp) == 4
        got: list[Record] = []
        deadline = time.monotonic() + 20
        while fetcher.position(tp) < 7 and time.monotonic() < deadline:
            got.extend(fetcher.poll(timeout=0.5))
        assert [r.value for r in got] == [b"4", b"5", b"6"]
        assert fetcher.position(tp) == 7
        fetcher.seek_to_beginning(tp)
        assert fetcher.position(tp) == 0
        fetcher.seek_to_end(tp)
        assert fetcher.position(tp) == 7
        assert fetcher.poll(timeout=0.2) == []
    finally:
        fetcher.close()


def test_fetch_waits_for_new_records(transport: Transport, topic_name: str) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=1))
    tp = TopicPartition(topic_name, 0)
    fetcher = transport.fetcher()
    try:
        fetcher.assign([tp])
        fetcher.seek(tp, 0)
        assert fetcher.poll(timeout=0.1) == []
        produce(transport, topic_name, [(b"a", b"1")], partition=0)
        got: list[Record] = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = fetcher.poll(timeout=1.0)
        assert [r.value for r in got] == [b"1"]
    finally:
        fetcher.close()


def test_seek_past_end_raises_with_reset_error(transport: Transport, topic_name: str) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=1))
    produce(transport, topic_name, [(b"k", b"v")] * 3, partition=0)
    tp = TopicPartition(topic_name, 0)
    fetcher = transport.fetcher(reset="error")
    try:
        fetcher.assign([tp])
        fetcher.seek(tp, 10)

        def poll_for_a_while() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                fetcher.poll(timeout=0.5)

        with pytest.raises(OffsetOutOfRangeError) as info:
            poll_for_a_while()
        assert topic_name in str(info.value)
        assert isinstance(info.value, StateStreamError)
    finally:
        fetcher.close()


@pytest.mark.parametrize(("reset", "expected"), [("earliest", 0), ("latest", 3)])
def test_seek_past_end_resets_when_configured(
    transport: Transport, topic_name: str, reset: str, expected: int
) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=1))
    produce(transport, topic_name, [(b"k", b"v")] * 3, partition=0)
    tp = TopicPartition(topic_name, 0)
    fetcher = transport.fetcher(reset=reset)  # type: ignore[arg-type]
    try:
        fetcher.assign([tp])
        fetcher.seek(tp, 10)
        got: list[Record] = []
        deadline = time.monotonic() + 20
        while fetcher.position(tp) != 3 and time.monotonic() < deadline:
            got.extend(fetcher.poll(timeout=0.5))
        if reset == "earliest":
            assert [r.offset for r in got] == [0, 1, 2]
        else:
            assert got == []
        assert fetcher.position(tp) == 3
    finally:
        fetcher.close()


def test_pause_and_resume(transport: Transport, topic_name: str) -> None:
    transport.admin().create_topic(TopicSpec(topic_name, partitions=2))
    produce(transport, topic_name, [(b"a", b"0")], partition=0)
    produce(transport, topic_name, [(b"b", b"1")], partition=1)
    tp0, tp1 = TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)
    fetcher = transport.fetcher()
    try:
        fetcher.assign([tp0, tp1])
        fetcher.seek(tp0, 0)
        fetcher.seek(tp1, 0)
        fetcher.pause([tp0])
        got: list[Record] = []
        deadline = time.monotonic() + 20
        while fetcher.position(tp1) < 1 and time.monotonic() < deadline:
            got.extend(fetcher.poll(timeout=0.5))
        got.extend(fetcher.poll(timeout=0.3))
        assert [r.partition for r in got] == [1]
        fetcher.resume([tp0])
        while fetcher.position(tp0) < 1 and time.monotonic() < deadline:
            got.extend(fetcher.poll(timeout=0.5))
        assert sorted(r.partition for r in got) == [0, 1]
    finally:
        fetcher.close()


# -- compaction ----------------------------------------------------------------


def _compact_now(transport: Transport) -> None:
    """Ask the transport to compact if it can be asked (the embedded log can)."""
    compact = getattr(transport, "compact", None)
    if compact is not None:
        compact()


def test_compaction_removes_superseded_records(transport: Transport, topic_name: str) -> None:
    spec = TopicSpec(topic_name, partitions=1, cleanup_policy="compact", config=FAST_COMPACTION)
    transport.admin().create_topic(spec)
    tp = TopicPartition(topic_name, 0)
    items = [(f"k{i % 5}".encode(), f"v{i}".encode()) for i in range(200)]
    produce(transport, topic_name, items, partition=0)
    latest = dict(items)
    rolls = 0

    def compacted() -> bool:
        # Kafka only cleans rolled segments: keep writing so segments roll.
        nonlocal rolls
        time.sleep(0.3)
        produce(transport, topic_name, [(b"roll", b"x")], partition=0)
        rolls += 1
        _compact_now(transport)
        return len(read_partition(transport, tp)) < 50

    wait_for(compacted, 90, "compaction of superseded records")
    records = read_partition(transport, tp)
    survivors = {r.key: r.value for r in records if r.key != b"roll"}
    assert survivors == latest
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)
    # Compaction never renumbers: the next offset still counts every record written.
    fetcher = transport.fetcher()
    fetcher.assign([tp])
    assert fetcher.watermarks(tp)[1] == 200 + rolls
    fetcher.close()


def test_tombstones_are_delivered_and_eventually_removed(
    transport: Transport, topic_name: str
) -> None:
    spec = TopicSpec(topic_name, partitions=1, cleanup_policy="compact", config=FAST_COMPACTION)
    transport.admin().create_topic(spec)
    tp = TopicPartition(topic_name, 0)
    produce(transport, topic_name, [(b"gone", b"1"), (b"kept", b"2"), (b"gone", None)], 0)
    first = read_partition(transport, tp)
    assert [(r.key, r.value) for r in first] == [(b"gone", b"1"), (b"kept", b"2"), (b"gone", None)]

    def tombstone_removed() -> bool:
        time.sleep(0.3)
        produce(transport, topic_name, [(b"roll", b"x")], partition=0)
        _compact_now(transport)
        keys = [r.key for r in read_partition(transport, tp)]
        return b"gone" not in keys

    wait_for(tombstone_removed, 90, "removal of the tombstone after delete.retention.ms")
    assert {r.key: r.value for r in read_partition(transport, tp)}[b"kept"] == b"2"


# -- groups --------------------------------------------------------------------


class Recorder(RebalanceListener):
    """Records rebalance callbacks in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []

    def on_assigned(self, partitions: object) -> None:
        self.events.append(("assigned", frozenset(partitions)))  # type: ignore[arg-type]

    def on_revoked(self, partitions: object) -> None:
        self.events.append(("revoked", frozenset(partitions)))  # type: ignore[arg-type]


def _poll_until(member: object, predicate: object, timeout: float = 30.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while not predicate(got):  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"group member did not get there; got {len(got)} records")
        got.extend(member.poll(timeout=0.5))  # type: ignore[attr-defined]
    return got


def test_group_commits_survive_a_new_member(transport_url: str, topic_name: str) -> None:
    group = f"g-{topic_name}"
    transport = open_transport(transport_url)
    try:
        transport.admin().create_topic(TopicSpec(topic_name, partitions=2))
        produce(transport, topic_name, [(f"k{i}".encode(), b"v") for i in range(20)])
        listener = Recorder()
        member = transport.group_member(group)
        member.subscribe([topic_name], listener)
        got = _poll_until(member, lambda g: len(g) >= 20)
        assert len(got) == 20
        all_tps = {TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)}
        assert member.assignment() == all_tps
        assert listener.events[0] == ("assigned", frozenset(all_tps))
        ends = {}
        for r in got:
            ends[r.tp] = max(ends.get(r.tp, 0), r.offset + 1)
        half = {tp: end // 2 for tp, end in ends.items()}
        member.commit(half)
        for tp, offset in half.items():
            assert member.committed(tp) == offset
        member.close()
        assert listener.events[-1] == ("revoked", frozenset(all_tps))
    finally:
        transport.close()
    # A new transport (for the embedded log: a reopened directory) sees the commits.
    transport = open_transport(transport_url)
    try:
        member = transport.group_member(group)
        member.subscribe([topic_name], Recorder())
        expected = sum(ends[tp] - half[tp] for tp in ends)
        again = _poll_until(member, lambda g: len(g) >= expected)
        assert len(again) == expected
        for r in again:
            assert r.offset >= half[r.tp]
        for tp, offset in half.items():
            assert member.committed(tp) == offset
        member.close()
    finally:
        transport.close()


# -- transactions --------------------------------------------------------------


def test_transactions_commit_and_abort(transport: Transport, topic_name: str) -> None:
    if not transport.supports_transactions:
        pytest.skip(f"{type(transport).__name__} has no transactions")  # a declared capability
    transport.admin().create_topic(TopicSpec(topic_name, partitions=1))
    producer = transport.producer(transactional_id=f"tx-{topic_name}")
    try:
        producer.begin_transaction()
        producer.send(topic_name, b"a", b"committed", partition=0)
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(topic_name, b"b", b"aborted", partition=0)
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic_name, b"c", b"committed-2", partition=0)
        producer.commit_transaction()
    finally:
        producer.close()
    tp = TopicPartition(topic_name, 0)

    def last_commit_visible() -> bool:
        # Kafka writes commit markers after commit_transaction() returns: wait
        # until the last stable offset covers the second committed record.
        records = read_partition(transport, tp, isolation_level="read_committed")
        return b"committed-2" in [r.value for r in records]

    wait_for(last_commit_visible, 30, "the second transaction to become visible")
    records = read_partition(transport, tp, isolation_level="read_committed")
    assert [r.value for r in records] == [b"committed", b"committed-2"]


# -- bad input -----------------------------------------------------------------


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(UnknownTransportSchemeError, match="known: embedded, kafka"):
        open_transport("pulsar://localhost:6650")
    with pytest.raises(ConfigurationError, match="must look like"):
        open_transport("localhost:9092")
