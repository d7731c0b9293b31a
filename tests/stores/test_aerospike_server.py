"""The Aerospike store against what a real server does under trouble.

Each test here is a behaviour seen on a real Aerospike CE 8.0 server and
modelled by the fake (``tests/fakes/aerospike.py``): a frozen server
(per-record -15 results from batches, queries waiting their socket timeout),
the 128 MiB message limit (the server drops the connection), a restart that
loses an in-memory namespace, a second writer of a partition, and a
partition too large to sort in memory. Tests taking ``backend`` also run
against a real server (``STATESTREAM_TEST_AEROSPIKE=host:port``); the rest
need the fake to freeze or restart the server.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aerospike import exception as ex

from statestream.errors import (
    OffsetRecordChangedError,
    RecordTooLargeError,
    StoreCorruptedError,
    StoreError,
    StoreTimeoutError,
)
from statestream.stores.aerospike import AerospikeStore, ClientPool
from tests.fakes.aerospike import FakeServer
from tests.fakes.aerospike import error as fake_error
from tests.stores.aerospike_openers import FAKE_HOSTS, REAL_ADDRESS, Backend

REAL_SKIP = "no real Aerospike server: set STATESTREAM_TEST_AEROSPIKE=host:port"
real_only = pytest.mark.skipif(not REAL_ADDRESS, reason=REAL_SKIP)


@pytest.fixture(params=["fake", pytest.param("real", marks=real_only)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    opened = Backend(request.param)
    yield opened
    opened.close()


@pytest.fixture
def server() -> FakeServer:
    fake = FakeServer()
    fake.sleep = lambda seconds: None  # waits are logged in server.waits, not slept
    return fake


@pytest.fixture
def fake(server: FakeServer) -> Iterator[Backend]:
    opened = Backend("fake", server)
    yield opened
    opened.close()


# -- 1. timeouts -------------------------------------------------------------------


def test_a_frozen_server_is_a_timeout_for_batches_reported_per_record(
    fake: Backend, server: FakeServer
) -> None:
    store = fake.open("t", 4)
    store.write({b"a": b"1"}, 1)
    server.frozen = True
    calls: dict[str, Callable[[], object]] = {
        "batch read": lambda: store.get_many([b"a", b"b"]),
        "batch write": lambda: store.write({b"a": b"2"}, 2),
    }
    for action, call in calls.items():
        with pytest.raises(StoreTimeoutError) as info:
            call()
        message = str(info.value)
        assert f"Aerospike {action} for table 't' partition 4 key b'a'" in message
        assert "total_timeout=1000 ms" in message
        assert "code -15" in message
        assert isinstance(info.value.__cause__, ex.NoResponse)
    server.frozen = False
    assert store.offset() == 1
    assert fake.open("t", 4).offset() == 1


def test_queries_on_a_frozen_server_fail_within_seconds_by_default(
    fake: Backend, server: FakeServer
) -> None:
    store = fake.open()
    store.write({b"a": b"1"}, 1)
    server.frozen = True
    for call in (store.count, lambda: list(store.iterate()), store.clear):
        with pytest.raises(StoreTimeoutError, match="query_timeout=5000 ms") as info:
            call()
        assert isinstance(info.value.__cause__, ex.TimeoutError)
    assert server.waits
    assert max(ms for _, ms in server.waits) <= 5000  # not the client's 30 s socket default


def test_query_timeouts_are_configurable(fake: Backend, server: FakeServer) -> None:
    store = fake.open(query_timeout=1500, socket_timeout=800)
    server.frozen = True
    with pytest.raises(StoreTimeoutError, match="query_timeout=1500 ms"):
        store.count()
    assert server.waits == [("query", 800)]


# -- 2. batches sized by bytes ----------------------------------------------------------


def test_a_batch_over_the_servers_message_limit_is_split_by_size(backend: Backend) -> None:
    # 150 values of 900 kB: 135 MB, over the server's 128 MiB request limit.
    store = backend.open()
    value = b"v" * 900_000
    keys = [b"k%03d" % n for n in range(150)]
    store.write(dict.fromkeys(keys, value), 1)
    assert store.offset() == 1
    assert store.count() == 150
    assert store.get(keys[0]) == value
    assert store.get(keys[-1]) == value


def test_batches_stay_under_max_batch_bytes(fake: Backend, server: FakeServer) -> None:
    store = fake.open(max_batch_bytes=100_000)
    server.calls.clear()
    store.write({b"k%02d" % n: b"x" * 30_000 for n in range(10)}, 1)
    writes = [method for method, _ in server.calls if method == "batch_write"]
    assert len(writes) == 4  # 3 + 3 + 3 + 1 records of about 30 kB
    assert store.count() == 10


def test_a_record_too_large_is_refused_before_anything_is_sent(
    fake: Backend, server: FakeServer
) -> None:
    store = fake.open("t", 3)
    store.write({b"small": b"1"}, 1)
    server.calls.clear()
    with pytest.raises(RecordTooLargeError) as info:
        store.write({b"a": b"1", b"huge": b"x" * (2 << 20)}, 2)
    message = str(info.value)
    assert "table 't' partition 3 key b'huge'" in message
    assert f"value of {2 << 20} bytes" in message
    assert "max_record_size=1048576" in message
    assert server.calls == []
    assert (store.get(b"a"), store.offset()) == (None, 1)


# -- 3. errors chained, first failing key named ------------------------------------------


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("batch_write", lambda store: store.write({b"a": b"2", b"b": b"2", b"c": b"2"}, 2)),
        ("batch_read", lambda store: store.get_many([b"a", b"b", b"c"])),
        ("batch_remove", lambda store: store.clear()),
    ],
    ids=["write", "get_many", "clear"],
)
def test_a_per_record_failure_names_its_key_and_code_and_chains_the_client_error(
    fake: Backend, server: FakeServer, method: str, call: Callable[[AerospikeStore], object]
) -> None:
    store = fake.open()
    store.write({b"a": b"1", b"b": b"1", b"c": b"1"}, 1)
    server.fail(method, ex.DeviceOverload, key=b"b")
    with pytest.raises(StoreError) as info:
        call(store)
    message = str(info.value)
    assert "table 't' partition 0 key b'b'" in message
    assert "code 18" in message
    assert isinstance(info.value.__cause__, ex.DeviceOverload)
    assert info.value.__cause__.code == 18


def test_a_lost_connection_says_so_in_the_servers_terms(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    server.fail("batch_write", ex.ConnectionError)
    with pytest.raises(StoreError) as info:
        store.write({b"a": b"1"}, 1)
    assert "message limit" in str(info.value)
    assert isinstance(info.value.__cause__, ex.ConnectionError)


# -- 4. the offset record vanished or changed -------------------------------------------------


def test_a_restart_that_lost_the_data_is_detected_not_overwritten(
    fake: Backend, server: FakeServer
) -> None:
    store = fake.open("t", 2)
    store.write({b"a": b"1", b"b": b"2"}, 7544)
    server.restart(lose_data=True)
    with pytest.raises(OffsetRecordChangedError) as info:
        store.write({b"c": b"3"}, 7545)
    assert isinstance(info.value, StoreCorruptedError)  # a worker rebuilds the partition
    message = str(info.value)
    assert "table 't' partition 2" in message
    assert "is gone" in message
    assert "offset 7544" in message
    assert isinstance(info.value.__cause__, ex.RecordNotFound)
    # The old offset was not written back over the empty set.
    assert fake.open("t", 2).offset() is None


def test_metadata_writes_are_checked_too(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    store.write({}, 3, {"epoch": b"1"})
    server.restart(lose_data=True)
    with pytest.raises(OffsetRecordChangedError):
        store.write({}, None, {"epoch": b"2"})
    assert fake.open().meta("epoch") is None


def test_another_writer_of_the_partition_is_detected(backend: Backend) -> None:
    first = backend.open("t", 1)
    first.write({b"a": b"1"}, 10)
    second = backend.open("t", 1)  # a second owner of the partition
    second.write({b"a": b"2"}, 11)
    with pytest.raises(OffsetRecordChangedError, match="another writer") as info:
        first.write({b"a": b"3"}, 12)
    assert isinstance(info.value.__cause__, ex.RecordGenerationError)
    assert backend.open("t", 1).offset() == 11


def test_a_record_created_by_another_writer_is_detected(backend: Backend) -> None:
    first, second = backend.open("t", 5), backend.open("t", 5)
    second.write({b"a": b"2"}, 3)
    with pytest.raises(OffsetRecordChangedError, match="another writer") as info:
        first.write({b"a": b"1"}, 4)
    assert isinstance(info.value.__cause__, ex.RecordExistsError)


def test_clear_starts_the_offset_record_afresh(backend: Backend) -> None:
    store = backend.open()
    store.write({b"a": b"1"}, 4)
    store.clear()
    store.write({b"a": b"1"}, 0)
    store.write({b"a": b"2"}, 1)
    assert backend.open().offset() == 1


def _landing_then_failing(server: FakeServer, error: type[ex.AerospikeError]) -> Any:
    """A client whose next offset write lands on the server and then reports ``error``."""

    def connect(config: dict[str, Any]) -> Any:
        client = server.client(config)
        operate = client.operate
        armed = {"left": 0}

        def flaky(key: Any, operations: Any, meta: Any = None, policy: Any = None) -> Any:
            result = operate(key, operations, meta, policy)
            if armed["left"]:
                armed["left"] -= 1
                raise fake_error(error, "injected after the write landed", in_doubt=True)
            return result

        client.operate = flaky
        client.arm = lambda: armed.update(left=1)
        return client

    return connect


@pytest.mark.parametrize(
    "error", [ex.TimeoutError, ex.RecordGenerationError], ids=["in-doubt", "retried"]
)
def test_an_offset_write_that_landed_but_failed_is_not_a_conflict(
    server: FakeServer, error: type[ex.AerospikeError]
) -> None:
    pool = ClientPool(_landing_then_failing(server, error))
    store = AerospikeStore(FAKE_HOSTS, "test", "t", 0, pool=pool)
    store.write({b"a": b"1"}, 1)
    store._client.arm()
    if error is ex.TimeoutError:
        with pytest.raises(StoreTimeoutError):
            store.write({b"a": b"2"}, 2)  # it landed, but the client could not tell
    else:
        store.write({b"a": b"2"}, 2)  # a retry found its own first attempt: done
    store.write({b"a": b"3"}, 3)
    other = AerospikeStore(FAKE_HOSTS, "test", "t", 0, pool=pool)
    assert (other.offset(), other.get(b"a")) == (3, b"3")
    other.close()
    store.close()


# -- 5. iteration in bounded memory -----------------------------------------------------------


def test_iteration_holds_a_bounded_amount_in_memory(fake: Backend) -> None:
    store = fake.open(iterate_buffer_bytes=1 << 20)
    value = b"x" * 1024
    keys = [b"%05d" % n for n in range(8000)]  # 8 MiB of values
    for start in range(0, len(keys), 1000):
        store.write(dict.fromkeys(keys[start : start + 1000], value), start)
    tracemalloc.start()
    try:
        pairs = store.iterate()
        first = next(pairs)
        _, peak = tracemalloc.get_traced_memory()
        rest = [key for key, _ in pairs]
    finally:
        tracemalloc.stop()
    assert first == (keys[0], value)
    assert [first[0], *rest] == keys
    assert peak < 4 << 20, f"iterate held {peak} bytes at once for 8 MiB of values"


def test_bounded_iteration_keeps_order_bounds_and_reverse(backend: Backend) -> None:
    store = backend.open(iterate_buffer_bytes=4096)
    data = {b"%04d" % n: b"%d" % n * 20 for n in range(0, 600, 3)}
    store.write(data, 1)
    ordered = sorted(data.items())
    assert list(store.iterate()) == ordered
    assert list(store.iterate(reverse=True)) == ordered[::-1]
    assert list(store.iterate(start=b"0100", end=b"0200")) == [
        (k, v) for k, v in ordered if b"0100" <= k < b"0200"
    ]
    assert list(store.iterate(prefix=b"05", reverse=True)) == [
        (k, v) for k, v in ordered[::-1] if k.startswith(b"05")
    ]


def test_a_key_range_is_filtered_on_the_server(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    store.write({b"%04d" % n: b"v" for n in range(1000)}, 1)
    server.query_rows = 0
    assert [key for key, _ in store.iterate(prefix=b"05")] == [b"%04d" % n for n in range(500, 600)]
    assert server.query_rows == 100  # not the partition's 1000 records
    server.query_rows = 0
    assert len(list(store.iterate(start=b"0990"))) == 10
    assert len(list(store.iterate(end=b"0010", reverse=True))) == 10
    assert server.query_rows == 21  # ranks are inclusive: b"0010" comes too, dropped here


def test_key_ranges_still_find_records_without_a_rank(fake: Backend, server: FakeServer) -> None:
    # A record as written before ranks existed: value and partition bins only.
    store = fake.open()
    store.write({b"ab1": b"new"}, 1)
    client = server.client({"hosts": FAKE_HOSTS})
    client.put(
        ("test", "t", bytearray(b"\x00\x00\x00\x00dab0")),
        {"v": b"old", "p": 0},
        policy={"key": 1},  # POLICY_KEY_SEND
    )
    assert list(store.iterate(prefix=b"ab")) == [(b"ab0", b"old"), (b"ab1", b"new")]


def test_an_abandoned_iteration_leaves_no_files(fake: Backend) -> None:
    store = fake.open(iterate_buffer_bytes=4096)
    store.write({b"%04d" % n: b"v" * 100 for n in range(500)}, 1)
    pairs = store.iterate()
    assert next(pairs)[0] == b"0000"
    pairs.close()
    store.close()
