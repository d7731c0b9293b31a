"""``GlobalTable`` and its copy: the reader's global mode, restore edges, reads, threads.

Copies are driven as the worker's global reader thread drives them
(:func:`tests.tables.global_helpers.catch_up`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statestream.errors import TableContextError, TableError
from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.stores.registry import open_store
from statestream.tables.globaltable import GlobalCopy, GlobalTable
from statestream.tables.headers import pack_epoch, source_headers
from statestream.tables.recovery import (
    ChangelogReader,
    global_offset_name,
    stored_global_offset,
)
from statestream.types import Record, TopicPartition
from tests.tables.global_helpers import (
    PARTITIONS,
    TOPIC,
    Harness,
    delete_topic,
    j,
    make_topic,
    send,
)


@pytest.fixture
def harness(embedded: Transport, tmp_path: Path) -> Iterator[Harness]:
    make_topic(embedded)
    made = Harness(embedded, f"leveldb://{tmp_path}/stores")
    yield made
    made.shutdown()


# -- the reader's global mode ----------------------------------------------------------


def test_global_mode_applies_every_record_and_keeps_the_offset_in_metadata(
    embedded: Transport, tmp_path: Path
) -> None:
    make_topic(embedded, partitions=1)
    tp = TopicPartition(TOPIC, 0)
    # Headers a restore would fence on (an old epoch) or skip (uncommitted
    # work): a global table's topic is written by anyone, so they mean nothing.
    send(embedded, [(0, b"a", b"1")], headers=(("statestream-epoch", pack_epoch(9)),))
    send(embedded, [(0, b"b", b"2")], headers=(("statestream-epoch", pack_epoch(1)),))
    send(embedded, [(0, b"c", b"3")], headers=source_headers("src", 50))
    send(embedded, [(0, b"a", None)])  # a delete
    with open_store(f"leveldb://{tmp_path}/s", "g", 0) as store:
        reader = ChangelogReader(store, tp, {}, mode="global")
        fetcher = embedded.fetcher(reset="earliest")
        fetcher.assign([tp])
        records: list[Record] = []
        while fetcher.position(tp) < 4:
            records.extend(fetcher.poll(timeout=0.1))
        fetcher.close()
        # A record without a key (a compacted topic refuses them, another may not).
        records.insert(3, Record(TOPIC, 0, 3, None, b"no key", 0))
        records[-1] = records[-1]._replace(offset=4)
        reader.take(records)
        reader.flush()
        assert dict(store.iterate()) == {b"b": b"2", b"c": b"3"}
        assert (reader.applied, reader.skipped) == (4, 1)
        assert store.offset() is None  # one store holds every partition: offsets are per partition
        assert stored_global_offset(store, 0) == 4
        assert store.meta(global_offset_name(0)) is not None
        assert reader.outcome(None, True).offset == 4
        # A new reader continues from the stored offset.
        assert ChangelogReader(store, tp, {}, mode="global").written == 4


def test_global_mode_batches_by_batch_size(embedded: Transport, tmp_path: Path) -> None:
    tp = TopicPartition(TOPIC, 2)
    with open_store(f"leveldb://{tmp_path}/s", "g", 0) as store:
        reader = ChangelogReader(store, tp, {}, batch_size=3, mode="global")
        reader.take([Record(TOPIC, 2, i, f"k{i}".encode(), b"v", 0) for i in range(4)])
        # The batch reached its size and was written with its offset, without a flush call.
        assert stored_global_offset(store, 2) == 3
        assert store.count() == 4


# -- restore, restart, delta -------------------------------------------------------------


def test_copy_holds_every_partition_and_a_restart_reads_only_the_delta(harness: Harness) -> None:
    send(harness.transport, [(p, j(f"k{p}-{i}"), j(i)) for p in range(3) for i in range(5)])
    harness.open()
    assert harness.sync() == 15
    table = harness.table
    assert len(table) == 15
    assert table["k2-4"] == 4
    assert harness.copy is not None
    assert harness.copy.offsets() == {0: 4, 1: 4, 2: 4}
    harness.close()
    send(harness.transport, [(1, j("k1-0"), j("new")), (2, j("k2-9"), j(9)), (0, j("k0-1"), None)])
    harness.open()
    # Each partition is read from its own offset + 1: three records, not eighteen.
    assert harness.sync() == 3
    assert table["k1-0"] == "new"
    assert table["k2-9"] == 9
    assert "k0-1" not in table
    assert len(table) == 15
    assert harness.copy.offsets() == {0: 5, 1: 5, 2: 5}


def test_empty_topic_restores_nothing_and_lag_is_zero(harness: Harness) -> None:
    copy = harness.open()
    assert harness.sync() == 0
    assert len(harness.table) == 0
    assert copy.offsets() == {0: None, 1: None, 2: None}
    assert copy.lag() == {0: 0, 1: 0, 2: 0}


def test_lag_per_partition(harness: Harness) -> None:
    send(harness.transport, [(0, b"a", j(1)), (0, b"b", j(2)), (1, b"c", j(3))])
    copy = harness.open()
    harness.sync()
    assert copy.lag() == {0: 0, 1: 0, 2: 0}
    send(harness.transport, [(0, b"d", j(4)), (0, b"e", j(5)), (2, b"f", j(6))])
    copy.set_highs({tp: harness.fetcher.watermarks(tp)[1] for tp in copy.topic_partitions()})
    assert copy.lag() == {0: 2, 1: 0, 2: 1}


def test_recreated_topic_clears_and_rebuilds_with_a_warning(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    send(harness.transport, [(p, j(f"old{p}{i}"), j(i)) for p in range(3) for i in range(4)])
    harness.open()
    harness.sync()
    harness.close()
    delete_topic(harness.transport)
    make_topic(harness.transport)
    send(harness.transport, [(1, j("new"), j("x"))])
    harness.open()
    with caplog.at_level(logging.WARNING, logger="statestream.globals"):
        assert harness.sync() == 1
    assert dict(harness.table.items()) == {"new": "x"}
    assert any("recreated" in r.getMessage() for r in caplog.records)
    # No rebuild loop: the next start neither clears nor reads anything.
    harness.close()
    harness.open()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="statestream.globals"):
        assert harness.sync() == 0
    assert not caplog.records
    assert dict(harness.table.items()) == {"new": "x"}


def test_offset_below_the_low_watermark_clears_and_rebuilds(
    embedded: Transport, tmp_path: Path
) -> None:
    admin = embedded.admin()
    admin.create_topic(TopicSpec(TOPIC, 2, cleanup_policy="compact,delete", retention_ms=1000))
    admin.close()
    harness = Harness(embedded, f"leveldb://{tmp_path}/stores", partitions=2)
    try:
        producer = embedded.producer()
        producer.send(TOPIC, j("gone"), j(1), partition=0, timestamp=1_000)
        producer.send(TOPIC, j("keep"), j(2), partition=1, timestamp=int(time.time() * 1000))
        producer.flush()
        harness.open()
        harness.sync()
        harness.close()
        # Records the copy never saw, then retention removes everything old.
        producer.send(TOPIC, j("gone"), None, partition=0, timestamp=1_000)
        producer.send(TOPIC, j("mid"), j(3), partition=0, timestamp=1_000)
        producer.send(TOPIC, j("new"), j(4), partition=0, timestamp=int(time.time() * 1000))
        producer.flush()
        producer.close()
        embedded.enforce_retention()  # type: ignore[attr-defined]
        assert harness.fetcher.watermarks(TopicPartition(TOPIC, 0)) == (3, 4)
        harness.open()
        harness.sync()
        # "gone" was deleted by a record retention removed: only a rebuild drops it.
        assert dict(harness.table.items()) == {"keep": 2, "new": 4}
    finally:
        harness.shutdown()


def test_store_of_another_topic_is_rebuilt(harness: Harness, tmp_path: Path) -> None:
    with open_store(harness.store_url, "lookup", 0) as store:
        # What a regular table's store of partition 0 would hold.
        store.write({b'"stale"': b"1"}, 7)
    send(harness.transport, [(0, b'"fresh"', j(1))])
    harness.open()
    harness.sync()
    assert dict(harness.table.items()) == {"fresh": 1}


def test_changed_partition_count_rebuilds(embedded: Transport, tmp_path: Path) -> None:
    make_topic(embedded, partitions=3)
    send(embedded, [(2, b'"p2"', j(2))])
    old = Harness(embedded, f"leveldb://{tmp_path}/stores", partitions=3)
    old.open()
    old.sync()
    old.shutdown()
    delete_topic(embedded)
    make_topic(embedded, partitions=2)
    send(embedded, [(0, b'"a"', j(0)), (1, b'"b"', j(1))])
    new = Harness(embedded, f"leveldb://{tmp_path}/stores", partitions=2)
    try:
        new.open()
        new.sync()
        # Partition 2's key is gone with its partition: the store was rebuilt.
        assert dict(new.table.items()) == {"a": 0, "b": 1}
    finally:
        new.shutdown()


def test_gaps_and_the_end_of_the_log_count_as_read(harness: Harness) -> None:
    send(harness.transport, [(0, b'"a"', j(i)) for i in range(5)])
    send(harness.transport, [(0, b'"b"', j(1))])
    harness.transport.compact()  # type: ignore[attr-defined]
    copy = harness.open()
    assert harness.sync() == 2  # the latest "a" and "b"
    assert copy.offsets()[0] == 5
    assert copy.lag()[0] == 0


# -- the mapping API ---------------------------------------------------------------------


def test_reads(harness: Harness) -> None:
    keys = ["apple", "apricot", "banana", "blueberry", "cherry"]
    send(harness.transport, [(i % 3, j(k), j(len(k))) for i, k in enumerate(keys)])
    harness.open(page_size=2)  # several pages per iteration
    harness.sync()
    table = harness.table
    assert table["banana"] == 6
    with pytest.raises(KeyError):
        table["durian"]
    assert table.get("durian") is None
    assert table.get("durian", 0) == 0
    assert "cherry" in table
    assert "durian" not in table
    assert len(table) == 5
    assert list(table) == keys
    assert list(table.keys()) == keys
    assert list(table.values()) == [len(k) for k in keys]
    assert [k for k, _ in table.items()] == keys
    assert [k for k, _ in table.range("apricot", "cherry")] == ["apricot", "banana", "blueberry"]
    assert [k for k, _ in table.range("b", reverse=True)] == ["cherry", "blueberry", "banana"]
    assert [k for k, _ in table.prefix("ap")] == ["apple", "apricot"]
    assert [k for k, _ in table.prefix("b", reverse=True)] == ["blueberry", "banana"]
    assert list(table.range("z", "a")) == []
    assert dict(table) == {k: len(k) for k in keys}


def test_iteration_pages_cover_every_key_once(harness: Harness) -> None:
    keys = [f"k{i:03d}" for i in range(50)]
    send(harness.transport, [(i % 3, j(k), j(i)) for i, k in enumerate(keys)])
    for page in (1, 7, 50, 51):
        harness.open(page_size=page)
        harness.sync()
        assert [k for k, _ in harness.table.items()] == keys
        assert [k for k, _ in harness.table.range(reverse=True)] == keys[::-1]
        assert [k for k, _ in harness.table.range("k010", "k020")] == keys[10:20]
        harness.close()


def test_iterating_does_not_hold_the_lock(harness: Harness) -> None:
    send(harness.transport, [(0, j(f"k{i}"), j(i)) for i in range(10)])
    copy = harness.open(page_size=4)
    harness.sync()
    items = harness.table.items()
    next(items)
    # Between two pairs the caller's code runs without the lock: the reader
    # thread (here, this thread) can apply a batch.
    got = copy._lock.acquire(timeout=1)
    assert got
    copy._lock.release()


def test_writes_go_through_the_topic(harness: Harness) -> None:
    table = harness.table
    with pytest.raises(TableError, match=r"ctx\.send\('lookup', key, value\).*None value deletes"):
        table["k"] = 1
    harness.open()
    with pytest.raises(TableError, match=r"ctx\.send\('lookup'"):
        del table["k"]
    default: GlobalTable[str, int] = GlobalTable("countries")
    with pytest.raises(TableError, match="<app id>-countries-changelog"):
        default["k"] = 1


def test_reads_without_a_copy_raise_and_one_copy_per_table(harness: Harness) -> None:
    table = harness.table
    with pytest.raises(TableContextError, match="no local copy"):
        table.get("k")
    with pytest.raises(TableContextError):
        list(table.items())
    copy = harness.open()
    other = GlobalCopy("lookup", TOPIC, PARTITIONS, open_store("memory://", "lookup", 0))
    with pytest.raises(TableError, match="another worker"):
        table.attach(other)
    other.close()
    harness.close()
    assert copy.store.closed
    with pytest.raises(TableContextError):
        len(table)


def test_global_table_is_not_a_table() -> None:
    from statestream.tables.table import Table

    table: GlobalTable[str, int] = GlobalTable("g")
    assert not isinstance(table, Table)
    assert table == table
    assert table != GlobalTable("g")
    with pytest.raises(Exception, match="topic"):
        GlobalTable("g", topic="bad topic")


# -- threads: reads never see part of a batch --------------------------------------------


def test_reads_never_see_half_a_batch(embedded: Transport) -> None:
    """Every batch moves amounts between keys, keeping their sum: readers always see it.

    The store is a memory store, which applies a batch key by key: only the
    copy's lock keeps readers from seeing a batch half written.
    """
    make_topic(embedded)
    keys = [f"k{i:03d}" for i in range(300)]
    total = 1000 * len(keys)
    send(embedded, [(i % 3, j(k), j(1000)) for i, k in enumerate(keys)])
    harness = Harness(embedded, "memory://")
    copy = harness.open(page_size=10_000)
    harness.sync()
    table = harness.table
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            try:
                values = list(table.values())
            except Exception as exc:  # a store iterated while written
                problems.append(repr(exc))
                return
            seen.append(len(values))
            if sum(values) != total or len(values) != len(keys):
                problems.append(f"{len(values)} keys summing to {sum(values)}")
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    rng = random.Random(7)
    values = dict.fromkeys(keys, 1000)
    try:
        for _ in range(60):
            # One partition's batch: its keys all change, their sum does not.
            p = rng.randrange(3)
            mine = keys[p::3]
            shift = rng.randint(1, 50)
            for a, b in zip(mine[::2], mine[1::2], strict=False):
                values[a] -= shift
                values[b] += shift
            offset = (copy.offsets()[p] or 0) + 1
            batch = [
                Record(TOPIC, p, offset + i, j(k), j(values[k]), 0) for i, k in enumerate(mine)
            ]
            copy.apply({p: batch})
    finally:
        stop.set()
        for thread in readers:
            thread.join()
        harness.shutdown()
    assert not problems, problems[:3]
    assert len(seen) > 10


# -- a property: the copy equals a dict model across restarts and wipes ------------------

KEYS = [f"key{i}" for i in range(8)]

operation = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("sync"), st.none(), st.none()),
    st.tuples(st.just("restart"), st.none(), st.none()),
    st.tuples(st.just("wipe"), st.none(), st.none()),
    st.tuples(st.just("compact"), st.none(), st.none()),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(operation, max_size=40))
def test_copy_equals_a_dict_model(tmp_path: Path, ops: list[tuple[str, Any, Any]]) -> None:
    base = tmp_path / f"run{time.monotonic_ns()}"
    transport = open_transport(f"embedded://{base}/log")
    try:
        make_topic(transport)
        harness = Harness(transport, f"leveldb://{base}/stores")
        harness.open()
        model: dict[str, int] = {}
        unread = 0  # records written since the copy last caught up
        wiped = False
        for kind, key, value in ops:
            # Each key lives on one partition, as a key-hashing producer does.
            partition = KEYS.index(key) % PARTITIONS if key is not None else 0
            if kind == "put":
                send(transport, [(partition, j(key), j(value))])
                model[key] = value
                unread += 1
            elif kind == "delete":
                send(transport, [(partition, j(key), None)])
                model.pop(key, None)
                unread += 1
            elif kind == "compact":
                transport.compact()  # type: ignore[attr-defined]
            elif kind == "sync":
                applied = harness.sync()
                if not wiped:
                    assert applied <= unread  # never reads again what it already has
                unread, wiped = 0, False
                assert dict(harness.table.items()) == model
            elif kind == "restart":
                harness.close()
                harness.open()
            else:
                harness.wipe()
                harness.open()
                wiped = True
        harness.sync()
        assert dict(harness.table.items()) == model
        assert len(harness.table) == len(model)
        harness.shutdown()
    finally:
        transport.close()
