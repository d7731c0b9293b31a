"""The time index's bucket rows (statestream.tables.window_layout).

A tumbling or hopping table's commit indexes the windows it created as one
row per due time, not one per window; closes and expiry read those rows and
take each window's value from its own key, so a window deleted with its key
in between is neither reported nor deleted twice. Sessions and sliding
windows keep one row per window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statestream.log import Transport
from statestream.tables import Table, TableManager
from statestream.tables.window_layout import (
    BUCKET,
    BUCKET_BYTES,
    EMPTY_STORED,
    INDEX,
    bucket_rows,
    unpack_bucket,
)
from tests.stores.aerospike_openers import Backend
from tests.tables.windowed_harness import Feeder, open_manager, windows


def index_rows(manager: TableManager, table: str) -> list[tuple[bytes, list[bytes] | None]]:
    """The stored index rows of ``table``: (key, the windows a bucket lists, or None)."""
    store = manager.shard(table, 0).store
    return [
        (kb, unpack_bucket(bytes(raw)) if kb[9:13] == BUCKET else None)
        for kb, raw in store.iterate(prefix=INDEX)
    ]


def commit(manager: TableManager) -> None:
    manager.commit(0, lambda: None)


def closed(feeder: Feeder, table: str) -> list[tuple[Any, int, int, Any]]:
    return sorted((key, w.start, w.end, value) for w, key, value in feeder.take_closed(table))


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
def test_a_commit_indexes_its_new_windows_of_one_due_time_in_one_row(
    transport: Transport, kind: str
) -> None:
    base = Table(f"bucket-{kind}", default=int)
    table = base.tumbling(10) if kind == "tumbling" else base.hopping(10, step=10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 1)
        for i in range(100):
            table[f"k{i}"] += i
        commit(manager)
        rows = index_rows(manager, table.name)
        assert len(rows) == 1
        assert rows[0][1] is not None
        assert len(rows[0][1]) == 100
        feeder.begin("k", 5)
        for i in range(100, 150):
            table[f"k{i}"] += i
        table["k0"] += 1000  # an existing window: listed already
        commit(manager)
        assert [len(listed or ()) for _, listed in index_rows(manager, table.name)] == [100, 50]
        feeder.begin("k", 10)  # stream time reaches the windows' end: all close
        table["later"] += 1
        want = [(f"k{i}", 0, 10, i + (1000 if i == 0 else 0)) for i in range(150)]
        assert closed(feeder, table.name) == sorted(want)
    finally:
        manager.close()


@pytest.mark.parametrize("kind", ["sliding", "session"])
def test_sliding_and_session_windows_keep_a_row_each(transport: Transport, kind: str) -> None:
    base = Table(f"rows-{kind}", default=int)
    table = base.sliding(10) if kind == "sliding" else base.session(gap=5)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 1)
        for i in range(20):
            table[f"k{i}"] += 1
        commit(manager)
        rows = index_rows(manager, table.name)
        assert all(listed is None for _, listed in rows)
        assert len(rows) == 20
    finally:
        manager.close()


def test_a_window_deleted_with_its_key_is_neither_closed_nor_expired_again(
    transport: Transport,
) -> None:
    table = Table("bucket-deleted", default=int).tumbling(10, retention=10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 1)
        table["a"] += 1
        table["b"] += 2
        commit(manager)
        feeder.begin("k", 2)
        del table["a"]  # its bucket still names its window
        table["c"] += 3  # created in this interval, then deleted with its key
        del table["c"]
        table["c"] += 4  # and created again: listed twice, reported once
        commit(manager)
        feeder.begin("k", 12)
        table["later"] += 1
        assert closed(feeder, table.name) == [("b", 0, 10, 2), ("c", 0, 10, 4)]
        feeder.begin("k", 25)  # past retention: [0, 10) expires
        table["later"] += 1
        closed(feeder, table.name)
        commit(manager)
        assert windows(table, "a") == []
        assert windows(table, "b") == []
        assert windows(table, "c") == []
        store = manager.shard(table.name, 0).store
        # Left: the index rows of the windows still kept ([10, 20) and [20, 30)).
        listed = [w for _, names in index_rows(manager, table.name) for w in names or ()]
        assert len(listed) == 2
        assert all(store.get(b"w" + rest) is not None for rest in listed)
    finally:
        manager.close()


def test_buckets_kept_in_a_store_close_their_windows_after_a_restart(
    transport: Transport, tmp_path: Path
) -> None:
    def open_it() -> tuple[Any, TableManager]:
        table = Table("bucket-restart", default=int).tumbling(10)
        manager = open_manager(
            transport, [table], store_url=f"leveldb://{tmp_path}/stores", app_id="bucket-restart"
        )
        return table, manager

    table, manager = open_it()
    try:
        feeder = Feeder(manager)
        for offset, key in enumerate(("a", "b", "a")):
            feeder.begin(key, 3 + offset, offset=offset)
            table[key] += 1
            commit(manager)
    finally:
        manager.close()
    table, manager = open_it()
    try:
        assert len(index_rows(manager, table.name)) == 2  # one per commit that created one
        feeder = Feeder(manager)
        feeder.begin("z", 10, offset=3)
        table["z"] += 1
        assert closed(feeder, table.name) == [("a", 0, 10, 2), ("b", 0, 10, 1)]
    finally:
        manager.close()


def rest(key: bytes, start: int) -> bytes:
    """A window's ``K start end`` for ``key`` (a length, the key, two 8-byte times)."""
    return (
        len(key).to_bytes(4, "big")
        + key
        + start.to_bytes(8, "big")
        + (start + 1).to_bytes(8, "big")
    )


def test_bucket_rows_split_past_their_byte_budget_and_keep_every_window_in_order() -> None:
    head = b"e" + bytes(8) + BUCKET + bytes(12)
    few = [rest(b"k%d" % i, i) for i in range(10)]
    assert [unpack_bucket(value) for _, value in bucket_rows(head, few)] == [few]
    many = [rest(b"key-%06d" % i, i) for i in range(5_000)]  # 170,000 bytes
    huge = rest(b"x" * (BUCKET_BYTES + 1), 0)  # longer than a row's budget: alone
    rows = list(bucket_rows(head, [*many[:10], huge, *many[10:]]))
    assert len({key for key, _ in rows}) == len(rows) > 5
    assert all(key.startswith(head) and len(key) == len(head) + 4 for key, _ in rows)
    listed = [unpack_bucket(value) for _, value in rows]
    assert [w for ws in listed for w in ws] == [*many[:10], huge, *many[10:]]
    assert all(
        len(value) <= len(EMPTY_STORED) + BUCKET_BYTES
        for _, value in rows
        if huge not in unpack_bucket(value)
    )


def test_a_commit_of_many_new_windows_fits_a_small_record_limit(transport: Transport) -> None:
    # One commit creates 200 KiB of windows with one due time; the store
    # refuses records over 64 KiB (as an Aerospike namespace configured so
    # would): the index takes several rows, and every window closes.
    backend = Backend("fake")
    table = Table("bucket-aerospike", default=int).tumbling(10)
    store = backend.open(table.name, 0, max_record_size=64 * 1024)
    manager = open_manager(transport, [table], stores={table.name: store})
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 1)
        keys = [f"user-{i:06d}-{'x' * 40}" for i in range(3_000)]
        for key in keys:
            table[key] += 1
        commit(manager)
        rows = index_rows(manager, table.name)
        assert len(rows) > 3
        assert sum(len(listed or ()) for _, listed in rows) == len(keys)
        feeder.begin("k", 10)
        table["later"] += 1
        assert closed(feeder, table.name) == sorted((key, 0, 10, 1) for key in keys)
    finally:
        manager.close()
        backend.close()


def test_a_failed_record_that_only_made_windows_leaves_no_trace(transport: Transport) -> None:
    # A record that only moves stream time (nothing falling due) and makes
    # windows keeps a light undo, not the whole snapshot: stream time, the
    # due times a new window lowers and its place in the commit's buckets.
    # Its rollback must put back all of them: the shard's undoable state is
    # as the record found it, and the next commit indexes no window of it.
    from statestream.tables.window_state import UNDONE

    table = Table("bucket-light", default=int).tumbling(10, grace=10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        shard = manager.windowed("bucket-light", 0)
        feeder.begin("k", 25)
        table["a"] += 1  # [20, 30), closing at 40
        commit(manager)
        for t in (15, 26):  # [10, 20) is open until 30 (grace 10), and so is [20, 30)
            found = {name: getattr(shard, name) for name in UNDONE}
            feeder.begin("k", t)
            table["b"] += 1  # a new window: [10, 20) lowers every due time
            table["c"] += 1
            assert shard._created  # (what the commit would index)
            manager.rollback_record(0)
            assert {name: getattr(shard, name) for name in UNDONE} == found
            assert not shard._created
            assert windows(table, "b") == []
            assert windows(table, "c") == []
        feeder.begin("k", 27)
        table["d"] += 1
        manager.rollback_record(0)
        feeder.begin("k", 28)
        table["e"] += 1
        commit(manager)
        listed = [w for _, ws in index_rows(manager, "bucket-light") for w in ws or ()]
        assert len(listed) == 2, listed  # a's and e's windows, not b's, c's or d's
        assert table.stream_time() == 28
        feeder.begin("k", 41)  # closes [20, 30)
        table["f"] += 1
        assert closed(feeder, "bucket-light") == [("a", 20, 30, 1), ("e", 20, 30, 1)]
    finally:
        manager.close()
