"""``Store.reader()``: reads of committed batches from other threads, for every store type.

Contract (statestream.stores.reading): a reader sees what ``write`` applied;
a local store's read (get, lookup, scan) sees whole batches only, checked by
a thread that reads while the owner writes batches whose keys must agree; a
store's ``close()`` waits for the reads in flight, and a read after it raises
StoreClosedError; a LevelDB ``clear()`` keeps reads out while it swaps the
database.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from statestream.errors import StoreClosedError
from statestream.stores.base import Store
from statestream.stores.reading import SharedReader
from tests.stores.conftest import StoreFactory


def test_a_reader_sees_what_write_applied(store: Store) -> None:
    reader = store.reader()
    assert reader.get(b"a") is None
    assert reader.lookup(b"a") == (None, None)
    store.write({b"a": b"1", b"b": b"2", b"c": b"3"}, 7)
    assert reader.get(b"a") == b"1"
    assert reader.lookup(b"b") == (b"2", 7)
    assert reader.offset() == 7
    assert reader.scan() == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert reader.scan(start=b"b") == [(b"b", b"2"), (b"c", b"3")]
    assert reader.scan(end=b"b") == [(b"a", b"1")]
    assert reader.scan(prefix=b"c") == [(b"c", b"3")]
    assert reader.scan(reverse=True, limit=2) == [(b"c", b"3"), (b"b", b"2")]
    assert reader.scan(limit=1) == [(b"a", b"1")]
    store.write({b"a": None}, 8)
    assert reader.get(b"a") is None
    assert reader.scan() == [(b"b", b"2"), (b"c", b"3")]


def test_reads_from_another_thread_never_see_half_a_batch(
    store_kind: StoreFactory, store: Store
) -> None:
    if store_kind.name.startswith("aerospike"):
        # A remote store keeps no snapshot across keys (docs/queries.md says
        # so): its reads go through the store itself.
        assert type(store.reader()) is SharedReader
        return
    keys = [b"k%04d" % i for i in range(500)]
    reader = store.reader()
    stop = threading.Event()
    torn: list[object] = []
    reads = [0]

    def check() -> None:
        try:
            check_reads()
        except BaseException as exc:  # a reader that breaks fails the test
            torn.append(exc)

    def check_reads() -> None:
        while not stop.is_set():
            rows = reader.scan(prefix=b"k")
            values = {v for _, v in rows}
            if len(values) > 1 or (rows and len(rows) != len(keys)):
                torn.append(rows)
            value, offset = reader.lookup(b"k00")
            if value is not None and offset is not None and int(value) != offset:
                torn.append((value, offset))
            reads[0] += 1

    thread = threading.Thread(target=check)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads interleave within a write and a read
    thread.start()
    try:
        # Every batch sets every key to its offset: a read mixing batches
        # shows two values, or a value that is not the offset it came with.
        for offset in range(200):
            store.write(dict.fromkeys(keys, b"%d" % offset), offset)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert reads[0] > 0
    assert torn == []


def test_close_waits_for_a_read_in_flight_and_later_reads_raise(store: Store) -> None:
    store.write({b"a": b"1"}, 1)
    reader = store.reader()
    inside = threading.Event()
    release = threading.Event()
    closed = threading.Event()

    def slow_read() -> None:
        with reader.gate.reading():
            inside.set()
            release.wait(5)
            assert reader._get(b"a") == b"1"  # the store is still open here

    thread = threading.Thread(target=slow_read)
    thread.start()
    assert inside.wait(5)
    closer = threading.Thread(target=lambda: (store.close(), closed.set()))
    closer.start()
    time.sleep(0.2)
    assert not closed.is_set(), "close() returned while a read was in flight"
    release.set()
    thread.join(5)
    closer.join(5)
    assert closed.is_set()
    with pytest.raises(StoreClosedError, match="ask again"):
        reader.get(b"a")
    with pytest.raises(StoreClosedError):
        store.reader()


def test_clear_keeps_reads_out_while_it_swaps_the_engine(store: Store) -> None:
    store.write({b"a": b"1"}, 1)
    reader = store.reader()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                value = reader.get(b"a")
                assert value in (None, b"1", b"2")
            except BaseException as exc:  # a reader that breaks fails the test
                errors.append(exc)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(20):
            store.clear()
            store.write({b"a": b"2"}, 2)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert reader.get(b"a") == b"2"
