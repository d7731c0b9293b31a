"""Smoke tests of the real Kafka broker harness, using kafka-python directly.

They pin down the broker behaviour the library relies on: compacted
multi-partition topics, keyed writes to explicit and hashed partitions,
reads by manual assignment + seek, offset queries, and log compaction
actually removing superseded records.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

pytestmark = pytest.mark.kafka

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[KafkaProducer]:
    # acks=all: a record counts as written only once the (single) replica
    # has it, so offsets read back right after are final.
    client = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def consumer(kafka_bootstrap: str) -> Iterator[KafkaConsumer]:
    # No group: partitions are assigned by hand, as state restoration does.
    client = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        yield client
    finally:
        client.close()


def _create_topic(
    admin: KafkaAdminClient, name: str, partitions: int, configs: dict[str, str]
) -> None:
    admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=configs)]
    )
    # Creation is acknowledged by the controller before the partition
    # leaders are known to clients; wait until metadata shows all of them.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        [described] = admin.describe_topics([name])
        leaders = [p for p in described.get("partitions", []) if p["leader_id"] >= 0]
        if described.get("error_code") == 0 and len(leaders) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} has no leaders for all {partitions} partitions after 15s")


def _topic_configs(admin: KafkaAdminClient, name: str) -> dict[str, str]:
    """The topic's explicitly set configs, as {key: value}."""
    result: Any = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    # kafka-python 3 returns {resource_type: {resource_name: {key: {value, ...}}}}.
    entries = result["topic"][name]
    return {key: entry["value"] for key, entry in entries.items()}


def _read(
    consumer: KafkaConsumer, tp: TopicPartition, start: int, timeout: float = 15.0
) -> list[tuple[int, Record]]:
    """Every record of ``tp`` from offset ``start`` up to its current end
    offset, as (offset, (key, value, headers)), in log order."""
    end = consumer.end_offsets([tp])[tp]
    consumer.assign([tp])
    consumer.seek(tp, start)
    out: list[tuple[int, Record]] = []
    deadline = time.monotonic() + timeout
    while consumer.position(tp) < end:
        if time.monotonic() >= deadline:
            raise AssertionError(f"read of {tp} stuck at {consumer.position(tp)} < end {end}")
        for records in consumer.poll(timeout_ms=500).values():
            out.extend((r.offset, (r.key, r.value, list(r.headers or []))) for r in records)
    return out


def test_compacted_topic_is_created_with_partitions_and_config(
    admin: KafkaAdminClient, unique_topic: str
) -> None:
    _create_topic(admin, unique_topic, 4, {"cleanup.policy": "compact"})

    [described] = admin.describe_topics([unique_topic])
    assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2, 3]
    assert all(p["replica_nodes"] == [p["leader_id"]] for p in described["partitions"])
    assert _topic_configs(admin, unique_topic)["cleanup.policy"] == "compact"
    assert unique_topic in admin.list_topics()


def test_keyed_records_round_trip_with_offsets(
    admin: KafkaAdminClient, producer: KafkaProducer, consumer: KafkaConsumer, unique_topic: str
) -> None:
    _create_topic(admin, unique_topic, 4, {"cleanup.policy": "compact"})
    written: dict[int, list[Record]] = {p: [] for p in range(4)}

    # Explicit partitions: partition p gets p + 2 records.
    for p in range(4):
        for i in range(p + 2):
            key, value = f"k{p}-{i}".encode(), f"explicit {p}/{i}".encode()
            headers = [("source", b"explicit"), ("seq", str(i).encode())]
            future = producer.send(unique_topic, key=key, value=value, headers=headers, partition=p)
            meta = future.get(10)
            assert meta.partition == p
            assert meta.offset == len(written[p])
            written[p].append((key, value, headers))

    # By key: the default partitioner hashes the key, so one key always
    # lands in the same partition.
    partition_of_key: dict[bytes, int] = {}
    for i in range(40):
        key = f"user-{i % 10}".encode()
        value = f"by-key {i}".encode()
        headers = [("source", b"hashed")]
        meta = producer.send(unique_topic, key=key, value=value, headers=headers).get(10)
        assert partition_of_key.setdefault(key, meta.partition) == meta.partition
        assert meta.offset == len(written[meta.partition])
        written[meta.partition].append((key, value, headers))
    assert len(set(partition_of_key.values())) > 1, "10 keys should spread over several partitions"

    tps = [TopicPartition(unique_topic, p) for p in range(4)]
    assert consumer.beginning_offsets(tps) == dict.fromkeys(tps, 0)
    assert consumer.end_offsets(tps) == {tp: len(written[tp.partition]) for tp in tps}

    for tp in tps:
        records = _read(consumer, tp, 0)
        assert [offset for offset, _ in records] == list(range(len(written[tp.partition])))
        assert [record for _, record in records] == written[tp.partition]


def test_seek_to_mid_offset_returns_exactly_the_later_records(
    admin: KafkaAdminClient, producer: KafkaProducer, consumer: KafkaConsumer, unique_topic: str
) -> None:
    _create_topic(admin, unique_topic, 4, {"cleanup.policy": "compact"})
    written: list[Record] = []
    for i in range(30):
        record: Record = (f"key-{i}".encode(), f"value-{i}".encode(), [("i", str(i).encode())])
        producer.send(unique_topic, key=record[0], value=record[1], headers=record[2], partition=1)
        written.append(record)
    producer.flush(timeout=10)

    tp = TopicPartition(unique_topic, 1)
    assert consumer.end_offsets([tp])[tp] == 30
    records = _read(consumer, tp, 17)
    assert [offset for offset, _ in records] == list(range(17, 30))
    assert [record for _, record in records] == written[17:]

    # Seeking again on the same consumer rewinds rather than continuing.
    assert [offset for offset, _ in _read(consumer, tp, 29)] == [29]


def test_compaction_removes_superseded_records(
    admin: KafkaAdminClient, producer: KafkaProducer, consumer: KafkaConsumer, unique_topic: str
) -> None:
    # Segments roll 100 ms after their first record, and the broker's
    # cleaner (backoff 500 ms) cleans any non-active segment at once.
    _create_topic(
        admin,
        unique_topic,
        1,
        {
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": "100",
        },
    )
    keys = [f"key-{k}".encode() for k in range(5)]
    versions = 20
    for v in range(versions):
        for key in keys:
            producer.send(unique_topic, key=key, value=b"%s v%d" % (key, v), partition=0)
    producer.flush(timeout=10)
    produced = versions * len(keys)
    latest = {key: b"%s v%d" % (key, versions - 1) for key in keys}

    tp = TopicPartition(unique_topic, 0)
    deadline = time.monotonic() + 60
    while True:
        # A record appended after segment.ms has passed rolls the segment
        # holding the versions, making it eligible for cleaning. The
        # "roll" key is itself compacted, so repeating this is harmless.
        time.sleep(0.3)
        producer.send(unique_topic, key=b"roll", value=b"x", partition=0).get(10)

        records = [record for _, record in _read(consumer, tp, 0)]
        per_key = Counter(key for key, _, _ in records if key in latest)
        last_value = {key: value for key, value, _ in records}
        if per_key == Counter(keys) and all(last_value[k] == v for k, v in latest.items()):
            break
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"log not compacted within 60s: {len(records)} records, "
                f"per-key counts {dict(per_key)}"
            )

    assert len(records) < produced
    # Compaction keeps offsets: the log still ends where it did.
    assert consumer.end_offsets([tp])[tp] >= produced
