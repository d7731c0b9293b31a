"""What only the embedded log has to prove: its directory, durability, cleaner and options.

The behaviour it shares with Kafka is in ``test_transport_contract.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from statestream.errors import (
    ConfigurationError,
    GroupError,
    LogError,
    LogLockedError,
    OffsetOutOfRangeError,
    ProduceError,
    TopicNotFoundError,
    TransactionError,
)
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.log.embedded import EmbeddedOptions, EmbeddedTransport
from statestream.types import Record, TopicPartition

T0 = 1_700_000_000_000  # a fixed "now" for records with explicit timestamps


def open_log(path: Path, **options: object) -> EmbeddedTransport:
    """Open the embedded log at ``path`` through its URL; background threads off by default."""
    settings = {"cleanup_interval_ms": 0, "auto_flush_ms": 0, **options}
    query = "&".join(f"{k}={v}" for k, v in settings.items())
    transport = open_transport(f"embedded://{path}?{query}")
    assert isinstance(transport, EmbeddedTransport)
    return transport


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def log(log_dir: Path) -> Iterator[EmbeddedTransport]:
    transport = open_log(log_dir)
    yield transport
    transport.close()


def read_all(
    transport: EmbeddedTransport, tp: TopicPartition, start: int | None = None
) -> list[Record]:
    """Read ``tp`` from ``start`` (default: low watermark) to the high watermark."""
    fetcher = transport.fetcher()
    try:
        fetcher.assign([tp])
        low, high = fetcher.watermarks(tp)
        fetcher.seek(tp, low if start is None else start)
        records: list[Record] = []
        while fetcher.position(tp) < high:
            records += fetcher.poll()
        return records
    finally:
        fetcher.close()


def send_all(
    transport: EmbeddedTransport,
    topic: str,
    items: Sequence[tuple[bytes | None, bytes | None]],
    partition: int = 0,
    timestamp: int | None = None,
) -> list[int]:
    producer = transport.producer()
    deliveries = [
        producer.send(topic, k, v, partition=partition, timestamp=timestamp) for k, v in items
    ]
    producer.close()
    return [d.offset for d in deliveries]


def pairs(records: list[Record]) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(r.offset, r.key, r.value) for r in records]


# -- URL and options -----------------------------------------------------------


def test_options_from_the_url(tmp_path: Path) -> None:
    transport = open_log(tmp_path / "a", sync="true", retention_ms=-1, buffer_bytes="1m")
    try:
        assert transport.options == EmbeddedOptions(
            sync=True, retention_ms=-1, buffer_bytes=1 << 20, cleanup_interval_ms=0,
            auto_flush_ms=0,
        )  # fmt: skip
        assert transport.path == str(tmp_path / "a")
    finally:
        transport.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("colour=red", "unknown option.*colour.*known options:.*sync"),
        ("sync=maybe", "'sync' must be true or false"),
        ("retention_ms=-5", "retention_ms must be -1"),
        ("cleanup_interval_ms=soon", "'cleanup_interval_ms' must be an integer"),
        ("min_cleanable_dirty_ratio=2", "between 0 and 1"),
        ("buffer_bytes=0", "buffer_bytes must be positive"),
    ],
)
def test_bad_options_are_rejected(tmp_path: Path, query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_transport(f"embedded://{tmp_path}/x?{query}")
    assert not (tmp_path / "x").exists()  # refused before touching the disk


def test_url_must_name_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="name a directory, not a host"):
        open_transport("embedded://somehost/dir")
    with pytest.raises(ConfigurationError, match="needs a directory"):
        open_transport("embedded:///")
    monkeypatch.chdir(tmp_path)
    transport = open_transport("embedded://./rel/log?cleanup_interval_ms=0")
    try:
        assert (tmp_path / "rel" / "log" / "CURRENT").exists()
    finally:
        transport.close()


# -- ownership of the directory ------------------------------------------------------


def test_second_open_in_process_is_refused(log: EmbeddedTransport, log_dir: Path) -> None:
    with pytest.raises(LogLockedError, match=str(log_dir)) as info:
        open_log(log_dir)
    assert "another directory" in str(info.value)
    log.close()
    open_log(log_dir).close()  # released by close


def test_second_process_is_refused_with_the_path(log: EmbeddedTransport, log_dir: Path) -> None:
    code = (
        "import sys\n"
        "from statestream.log import open_transport\n"
        "try:\n"
        "    open_transport(sys.argv[1])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, f"embedded://{log_dir}"],
        capture_output=True, text=True, timeout=60, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.stdout.startswith("LogLockedError"), result.stdout + result.stderr
    assert str(log_dir) in result.stdout
    assert "stop the other process" in result.stdout


# -- durability across reopen ----------------------------------------------------------


def test_reopen_keeps_topics_records_watermarks_and_commits(log_dir: Path) -> None:
    spec = TopicSpec("t", partitions=3, cleanup_policy="compact", config={"segment.ms": "100"})
    with open_log(log_dir) as first:
        first.admin().create_topic(spec)
        producer = first.producer()
        headers = (("h", b"\x00\xff"), ("h", b""))
        sent = [producer.send("t", b"k%d" % i, b"v%d" % i, headers=headers) for i in range(30)]
        producer.flush()
        member = first.group_member("g")
        member.commit({TopicPartition("t", 1): 2})
        member.close()
    with open_log(log_dir) as second:
        assert second.admin().describe_topic("t") == first_description(spec)
        for partition in range(3):
            tp = TopicPartition("t", partition)
            expected = [d.offset for d in sent if d.partition == partition]
            records = read_all(second, tp)
            assert [r.offset for r in records] == expected
            assert all(r.headers == headers for r in records)
        assert second.group_member("g").committed(TopicPartition("t", 1)) == 2
        # Offsets continue where they were: nothing is ever numbered twice.
        producer = second.producer()
        delivery = producer.send("t", b"new", b"x", partition=0)
        producer.flush()
        assert delivery.offset == sum(1 for d in sent if d.partition == 0)


def first_description(spec: TopicSpec) -> object:
    from statestream.log.base import TopicDescription

    return TopicDescription(spec.name, spec.partitions, spec.cleanup_policy, spec.topic_config())


def test_offsets_never_repeat_after_compaction_removes_the_tail(log_dir: Path) -> None:
    spec = TopicSpec("t", 1, "compact", config={"delete.retention.ms": "0"})
    tp = TopicPartition("t", 0)
    with open_log(log_dir) as transport:
        transport.admin().create_topic(spec)
        assert send_all(transport, "t", [(b"a", b"1"), (b"a", None)]) == [0, 1]
        assert transport.compact() == 2  # the value, then the expired tombstone
        assert read_all(transport, tp) == []
        fetcher = transport.fetcher()
        fetcher.assign([tp])
        assert fetcher.watermarks(tp) == (0, 2)  # compaction leaves the log start alone
    with open_log(log_dir) as transport:
        assert send_all(transport, "t", [(b"b", b"2")]) == [2]


def test_deleted_topic_comes_back_empty_at_offset_zero(log_dir: Path) -> None:
    with open_log(log_dir) as transport:
        admin = transport.admin()
        admin.create_topic(TopicSpec("t", 2))
        send_all(transport, "t", [(b"k", b"old")] * 5)
        member = transport.group_member("g")
        member.commit({TopicPartition("t", 0): 5})
        admin.delete_topic("t")
        assert "t" not in admin.list_topics()
        with pytest.raises(TopicNotFoundError, match="create it first"):
            transport.producer().send("t", b"k", b"v")
        admin.create_topic(TopicSpec("t", 1))
        assert send_all(transport, "t", [(b"k", b"new")]) == [0]
        assert member.committed(TopicPartition("t", 0)) is None
        member.close()
    with open_log(log_dir) as transport:
        assert pairs(read_all(transport, TopicPartition("t", 0))) == [(0, b"k", b"new")]
        assert transport._log.orphan_topic_ids() == []  # the old records are gone from disk


def test_flushed_records_are_visible_and_unflushed_ones_are_not(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 1))
    producer = log.producer()
    delivery = producer.send("t", b"k", b"v", partition=0)
    assert not delivery.done
    with pytest.raises(ProduceError, match="call flush"):
        _ = delivery.offset
    assert read_all(log, TopicPartition("t", 0)) == []  # auto_flush_ms=0: only flush writes
    producer.flush()
    assert delivery.done
    assert delivery.offset == 0
    assert len(read_all(log, TopicPartition("t", 0))) == 1


def test_auto_flush_makes_sends_visible_without_flush(tmp_path: Path) -> None:
    with open_log(tmp_path / "log", auto_flush_ms=20) as transport:
        transport.admin().create_topic(TopicSpec("t", 1))
        delivery = transport.producer().send("t", b"k", b"v", partition=0)
        deadline = time.monotonic() + 10
        while not delivery.done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert delivery.offset == 0


def test_a_full_buffer_flushes_inside_send(tmp_path: Path) -> None:
    with open_log(tmp_path / "log", buffer_bytes=1000) as transport:
        transport.admin().create_topic(TopicSpec("t", 1))
        producer = transport.producer()
        deliveries = [producer.send("t", None, b"x" * 100, partition=0) for _ in range(20)]
        assert deliveries[0].done  # written without flush(), as Kafka's buffer.memory bounds
        producer.flush()


def test_close_flushes_producers_and_stops_clients(log_dir: Path) -> None:
    transport = open_log(log_dir)
    transport.admin().create_topic(TopicSpec("t", 1))
    delivery = transport.producer().send("t", b"k", b"v", partition=0)
    fetcher = transport.fetcher()
    fetcher.assign([TopicPartition("t", 0)])
    transport.close()
    assert delivery.offset == 0
    with pytest.raises(LogError, match="closed"):
        fetcher.poll()
    with pytest.raises(LogError, match="closed"):
        transport.producer()
    transport.close()  # idempotent
    with open_log(log_dir) as again:
        assert len(read_all(again, TopicPartition("t", 0))) == 1


# -- producers, fetchers and groups -----------------------------------------------------


def test_concurrent_producers_get_distinct_contiguous_offsets(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 2))
    shared = log.producer()
    results: dict[int, list[tuple[int, int, int]]] = {}

    def work(n: int) -> None:
        own = log.producer()
        mine = []
        for i in range(300):
            producer = shared if i % 2 else own
            mine.append((i, producer.send("t", b"%d" % n, b"%d:%d" % (n, i), partition=i % 2)))
            if i % 37 == 0:
                producer.flush()
        shared.flush()
        own.flush()
        results[n] = [(i, d.partition, d.offset) for i, d in mine]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for partition in (0, 1):
        records = read_all(log, TopicPartition("t", partition))
        assert [r.offset for r in records] == list(range(6 * 150))
        by_offset = {r.offset: r.value for r in records}
        for n, sent in results.items():
            for i, p, offset in sent:
                if p == partition:
                    assert by_offset[offset] == b"%d:%d" % (n, i)
        values = [r.value or b"" for r in records]
        # Each thread sends partition 1 through the shared producer and
        # partition 0 through its own: either way its order must hold.
        for n in results:
            own = [int(v.split(b":")[1]) for v in values if v.startswith(b"%d:" % n)]
            assert own == sorted(own)


def test_poll_is_woken_by_a_flush(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 1))
    tp = TopicPartition("t", 0)
    fetcher = log.fetcher(reset="latest")
    fetcher.assign([tp])
    got: list[Record] = []
    waiting = threading.Thread(target=lambda: got.extend(fetcher.poll(timeout=30)))
    waiting.start()
    time.sleep(0.2)
    started = time.monotonic()
    send_all(log, "t", [(b"k", b"v")])
    waiting.join(30)
    assert time.monotonic() - started < 5
    assert [r.value for r in got] == [b"v"]


def test_keyless_records_go_round_robin(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 3))
    producer = log.producer()
    partitions = [producer.send("t", None, b"x").partition for _ in range(6)]
    producer.close()
    assert partitions == [0, 1, 2, 0, 1, 2]


def test_bad_sends_are_refused(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 2))
    log.admin().create_topic(TopicSpec("c", 1, "compact"))
    producer = log.producer()
    with pytest.raises(ProduceError, match="partitions 0 to 1; cannot send to 2"):
        producer.send("t", b"k", b"v", partition=2)
    with pytest.raises(ProduceError, match="records need a key"):
        producer.send("c", None, b"v")
    with pytest.raises(ProduceError, match="must be bytes"):
        producer.send("t", "text", b"v")  # type: ignore[arg-type]
    with pytest.raises(ProduceError, match=r"\(str, bytes\) pairs"):
        producer.send("t", b"k", b"v", headers=(("h", "text"),))  # type: ignore[arg-type]
    with pytest.raises(TopicNotFoundError):
        producer.send("missing", b"k", b"v")
    assert producer.send("t", bytearray(b"k"), memoryview(b"v"), partition=0)  # type: ignore[arg-type]
    producer.close()


def test_unknown_topic_config_is_refused(log: EmbeddedTransport) -> None:
    admin = log.admin()
    with pytest.raises(ConfigurationError, match=r"unknown topic config 'retention\.mss'"):
        admin.create_topic(TopicSpec("t", 1, config={"retention.mss": "5"}))
    with pytest.raises(ConfigurationError, match=r"retention\.ms must be an integer"):
        admin.create_topic(TopicSpec("t", 1, retention_ms=None, config={"retention.ms": "x"}))
    assert admin.list_topics() == set()
    admin.create_topic(
        TopicSpec("t", 1, config={"segment.bytes": "1024", "min.insync.replicas": "2"})
    )


def test_out_of_range_message_gives_the_valid_range(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 1))
    send_all(log, "t", [(b"k", b"v")] * 3)
    tp = TopicPartition("t", 0)
    fetcher = log.fetcher()
    fetcher.assign([tp])
    with pytest.raises(OffsetOutOfRangeError, match="no position"):
        fetcher.poll()
    fetcher.seek(tp, 9)
    with pytest.raises(OffsetOutOfRangeError, match=r"position 9 of t\[0\].*offsets 0 .* to 3"):
        fetcher.poll()


def test_one_member_per_group(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 2))
    first = log.group_member("g")
    first.subscribe(["t"])
    second = log.group_member("g")
    with pytest.raises(GroupError, match="already has a member"):
        second.subscribe(["t"])
    with pytest.raises(GroupError, match="only it may commit"):
        second.commit({TopicPartition("t", 0): 1})
    log.group_member("other").subscribe(["t"])  # other groups are independent
    first.close()
    second.subscribe(["t"])
    second.poll()
    assert second.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}


def test_member_follows_topic_creation_and_committed_positions(log: EmbeddedTransport) -> None:
    events: list[tuple[str, list[TopicPartition]]] = []

    class Listener:
        def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
            events.append(("assigned", list(partitions)))

        def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
            events.append(("revoked", list(partitions)))

    log.admin().create_topic(TopicSpec("a", 1))
    send_all(log, "a", [(b"k", b"%d" % i) for i in range(5)])
    member = log.group_member("g", reset="error")
    member.commit({TopicPartition("a", 0): 3})
    member.subscribe(["a", "b"], Listener())
    assert [r.offset for r in member.poll()] == [3, 4]
    log.admin().create_topic(TopicSpec("b", 1))
    send_all(log, "b", [(b"k", b"x")])
    with pytest.raises(OffsetOutOfRangeError, match=r"b\[0\] has no position"):
        member.poll(timeout=1)  # b has nothing committed and reset is "error"
    a0, b0 = TopicPartition("a", 0), TopicPartition("b", 0)
    member.seek(b0, 0)
    got = member.poll(timeout=1)
    assert sorted((r.topic, r.offset) for r in got) == [("a", 3), ("a", 4), ("b", 0)]
    member.commit({a0: 5})
    log.admin().delete_topic("b")
    # Deleting a subscribed topic rebalances; positions restart from the commits.
    assert member.poll(timeout=0.1) == []
    assert member.assignment() == {a0}
    member.close()
    assert events == [
        ("assigned", [a0]),
        ("revoked", [a0]),
        ("assigned", [a0, b0]),
        ("revoked", [a0, b0]),
        ("assigned", [a0]),
        ("revoked", [a0]),
    ]


# -- transactions ------------------------------------------------------------------------


def test_transaction_writes_records_and_offsets_atomically(log_dir: Path) -> None:
    with open_log(log_dir) as transport:
        transport.admin().create_topic(TopicSpec("in", 1))
        transport.admin().create_topic(TopicSpec("out", 2))
        member = transport.group_member("g")
        producer = transport.producer(transactional_id="tx")
        producer.begin_transaction()
        deliveries = [producer.send("out", b"k", b"%d" % i, partition=i % 2) for i in range(4)]
        producer.send_offsets_to_transaction({TopicPartition("in", 0): 7}, member.group_metadata())
        producer.flush()  # nothing is written before the commit
        assert not deliveries[0].done
        assert member.committed(TopicPartition("in", 0)) is None
        assert read_all(transport, TopicPartition("out", 0)) == []
        producer.commit_transaction()
        assert [d.offset for d in deliveries] == [0, 0, 1, 1]
        assert member.committed(TopicPartition("in", 0)) == 7
        fetcher = transport.fetcher(isolation_level="read_committed")
        fetcher.assign([TopicPartition("out", 0)])
        assert fetcher.watermarks(TopicPartition("out", 0)) == (0, 3)  # 2 records + the marker

        producer.begin_transaction()
        aborted = producer.send("out", b"k", b"gone", partition=0)
        producer.send_offsets_to_transaction({TopicPartition("in", 0): 9}, "g")
        producer.abort_transaction()
        with pytest.raises(ProduceError, match="aborted"):
            _ = aborted.offset
        assert member.committed(TopicPartition("in", 0)) == 7
        producer.close()
        member.close()
    with open_log(log_dir) as transport:
        records = read_all(transport, TopicPartition("out", 0))
        assert [(r.offset, r.value) for r in records] == [(0, b"0"), (1, b"2")]
        assert transport.group_member("g").committed(TopicPartition("in", 0)) == 7


def test_transactional_misuse_and_fencing(log: EmbeddedTransport) -> None:
    log.admin().create_topic(TopicSpec("t", 1))
    with pytest.raises(TransactionError, match="needs a transactional producer"):
        log.producer().begin_transaction()
    old = log.producer(transactional_id="tx")
    with pytest.raises(TransactionError, match="outside a transaction"):
        old.send("t", b"k", b"v")
    old.begin_transaction()
    with pytest.raises(TransactionError, match="already open"):
        old.begin_transaction()
    lost = old.send("t", b"k", b"v")
    new = log.producer(transactional_id="tx")  # fences the old one, aborting its transaction
    with pytest.raises(TransactionError, match="fenced"):
        old.commit_transaction()
    with pytest.raises(ProduceError, match="fenced"):
        _ = lost.offset
    new.begin_transaction()
    assert new.send("t", b"k", b"v").partition == 0
    new.commit_transaction()
    assert [r.value for r in read_all(log, TopicPartition("t", 0))] == [b"v"]


# -- compaction and retention ---------------------------------------------------------------


def test_compaction_keeps_the_latest_per_key_at_its_offset(log_dir: Path) -> None:
    tp = TopicPartition("t", 0)
    with open_log(log_dir) as transport:
        transport.admin().create_topic(TopicSpec("t", 1, "compact"))
        items = [(b"k%d" % (i % 4), b"v%d" % i) for i in range(12)]
        send_all(transport, "t", items)
        assert transport.compact() == 8
        assert pairs(read_all(transport, tp)) == [
            (8 + i, b"k%d" % i, b"v%d" % (8 + i)) for i in range(4)
        ]
        fetcher = transport.fetcher()
        fetcher.assign([tp])
        assert fetcher.watermarks(tp) == (0, 12)
        fetcher.seek(tp, 3)  # inside the gap: valid, reads on from the next kept record
        assert [r.offset for r in fetcher.poll()] == [8, 9, 10, 11]
        send_all(transport, "t", [(b"k0", b"new")])
    with open_log(log_dir) as transport:  # the checkpoint survives; new records compact old ones
        assert transport.compact() == 1
        assert [r.offset for r in read_all(transport, tp)] == [9, 10, 11, 12]
        assert transport.compact() == 0


def test_tombstones_live_for_delete_retention_ms_after_first_compaction(
    log: EmbeddedTransport,
) -> None:
    spec = TopicSpec("t", 1, "compact", config={"delete.retention.ms": "1000"})
    log.admin().create_topic(spec)
    tp = TopicPartition("t", 0)
    send_all(log, "t", [(b"a", b"1"), (b"b", b"2"), (b"a", None)])
    now = T0
    assert log.compact(now_ms=now) == 1  # the superseded value goes at once
    assert pairs(read_all(log, tp)) == [(1, b"b", b"2"), (2, b"a", None)]
    assert log.compact(now_ms=now + 999) == 0  # the tombstone is kept...
    assert log.compact(now_ms=now + 1000) == 1  # ...until its horizon
    assert pairs(read_all(log, tp)) == [(1, b"b", b"2")]


def test_a_bounded_key_map_compacts_over_several_passes(
    log: EmbeddedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statestream.log.embedded import cleaner as embedded_cleaner

    monkeypatch.setattr(embedded_cleaner, "MAX_MAP_KEYS", 3)
    log.admin().create_topic(TopicSpec("t", 1, "compact"))
    items = [(b"k%d" % (i * 7 % 10), b"v%d" % i) for i in range(60)]
    send_all(log, "t", items)
    latest = {key: offset for offset, (key, _) in enumerate(items)}
    passes: list[list[int]] = []
    real_pass = embedded_cleaner._compact_pass

    def observed_pass(*args: Any) -> int:
        removed = real_pass(*args)
        passes.append([r.offset for r in read_all(log, TopicPartition("t", 0))])
        return removed

    monkeypatch.setattr(embedded_cleaner, "_compact_pass", observed_pass)
    assert log.compact() == 50  # one call runs as many bounded passes as it needs
    assert len(passes) > 1
    for offsets in passes:
        assert set(latest.values()) <= set(offsets)  # no pass ever drops a latest record
    assert passes[-1] == sorted(latest.values())


def test_min_compaction_lag_keeps_young_records(log: EmbeddedTransport) -> None:
    spec = TopicSpec("t", 1, "compact", config={"min.compaction.lag.ms": "1000"})
    log.admin().create_topic(spec)
    send_all(log, "t", [(b"a", b"old")], timestamp=T0)
    send_all(log, "t", [(b"a", b"young")], timestamp=T0 + 5000)
    assert log.compact(now_ms=T0 + 5500) == 0
    assert log.compact(now_ms=T0 + 6000) == 1
    assert [r.value for r in read_all(log, TopicPartition("t", 0))] == [b"young"]


def test_retention_removes_old_records_and_moves_the_low_watermark(log_dir: Path) -> None:
    tp = TopicPartition("t", 0)
    with open_log(log_dir) as transport:
        transport.admin().create_topic(TopicSpec("t", 1, retention_ms=1000))
        transport.admin().create_topic(TopicSpec("forever", 1, retention_ms=-1))
        for i, ts in enumerate([T0, T0 + 100, T0 + 50, T0 + 2000, T0 + 10]):
            send_all(transport, "t", [(b"k", b"%d" % i)], timestamp=ts)
        send_all(transport, "forever", [(b"k", b"v")], timestamp=0)
        # Records older than now - retention.ms go, as a prefix (like whole segments).
        assert transport.enforce_retention(now_ms=T0 + 1101) == 3
        assert [r.offset for r in read_all(transport, tp)] == [3, 4]
        fetcher = transport.fetcher()
        fetcher.assign([tp])
        assert fetcher.watermarks(tp) == (3, 5)
        fetcher.seek(tp, 1)
        with pytest.raises(OffsetOutOfRangeError, match=r"offsets 3 .* to 5"):
            fetcher.poll()
        earliest = transport.fetcher(reset="earliest")
        earliest.assign([tp])
        earliest.seek(tp, 1)
        assert [r.offset for r in earliest.poll()] == [3, 4]
    with open_log(log_dir) as transport:
        fetcher = transport.fetcher()
        fetcher.assign([tp])
        assert fetcher.watermarks(tp) == (3, 5)
        assert transport.enforce_retention(now_ms=T0 + 10_000) == 2
        assert fetcher.watermarks(tp) == (5, 5)
        assert len(read_all(transport, TopicPartition("forever", 0))) == 1


def test_compact_delete_topics_get_both(log: EmbeddedTransport) -> None:
    spec = TopicSpec("t", 1, "compact,delete", retention_ms=1000)
    log.admin().create_topic(spec)
    send_all(log, "t", [(b"a", b"1"), (b"b", b"1")], timestamp=T0)
    send_all(log, "t", [(b"a", b"2")], timestamp=T0 + 5000)
    assert log.compact(now_ms=T0 + 5000) == 1
    assert log.enforce_retention(now_ms=T0 + 5000) == 1
    tp = TopicPartition("t", 0)
    assert pairs(read_all(log, tp)) == [(2, b"a", b"2")]
    fetcher = log.fetcher()
    fetcher.assign([tp])
    assert fetcher.watermarks(tp) == (2, 3)


def test_background_cleaner_compacts_on_its_own(tmp_path: Path) -> None:
    with open_log(
        tmp_path / "log", cleanup_interval_ms=20, min_cleanable_dirty_ratio=0
    ) as transport:
        transport.admin().create_topic(TopicSpec("t", 1, "compact"))
        send_all(transport, "t", [(b"k", b"%d" % i) for i in range(10)])
        deadline = time.monotonic() + 20
        while len(read_all(transport, TopicPartition("t", 0))) > 1:
            assert time.monotonic() < deadline, "the background cleaner never compacted"
            time.sleep(0.02)


def test_dirty_ratio_gates_the_background_cleaner_only(log: EmbeddedTransport) -> None:
    from statestream.log.embedded.cleaner import cleanup

    spec = TopicSpec("t", 1, "compact", config={"min.cleanable.dirty.ratio": "0.5"})
    log.admin().create_topic(spec)
    send_all(log, "t", [(b"k%d" % i, b"v") for i in range(10)])
    assert log.compact() == 0  # 10 live records, now clean
    send_all(log, "t", [(b"k0", b"w")] * 3)  # 3 dirty of 13: below the ratio
    assert cleanup(log._log, T0) == 0
    assert log.compact() == 3


def test_deleting_a_big_topic_purges_it(log: EmbeddedTransport, log_dir: Path) -> None:
    log.admin().create_topic(TopicSpec("t", 2))
    send_all(log, "t", [(None, b"x" * 100)] * 25_000)
    log.admin().delete_topic("t")
    assert log._log.orphan_topic_ids() == []
    assert os.path.isdir(log_dir)
