"""The Aerospike store beyond the contract: layout, offset record, errors, client sharing.

Tests taking the ``backend`` fixture run against the in-process fake of the
client always, and against a real server when ``STATESTREAM_TEST_AEROSPIKE``
is ``host:port`` (namespace ``STATESTREAM_TEST_AEROSPIKE_NAMESPACE``, default
``test``). The others need the fake (fault injection, a clock, namespace
settings). The backends, and the openers through which the Aerospike store
joins the contract suite, are in ``aerospike_openers.py``.

Runs against a real server use set names unique to the run, empty each set
before a test first uses it, and truncate them all when the run ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aerospike
import pytest
from aerospike import exception as ex

from statestream.config import AerospikeOptions
from statestream.errors import (
    ConfigurationError,
    InvalidKeyError,
    NamespaceNotFoundError,
    RecordTooLargeError,
    StateStreamError,
    StoreConnectionError,
    StoreCorruptedError,
    StoreError,
    StoreTimeoutError,
    StoreWriteRejectedError,
)
from statestream.stores.aerospike import AerospikeStore, ClientPool, parse_hosts
from statestream.stores.aerospike import batching as aerospike_batching
from statestream.stores.registry import StoreRegistry, destroy_store, open_store
from tests.fakes.aerospike import FakeNamespace, FakeServer
from tests.stores.aerospike_openers import FAKE_HOSTS, REAL_ADDRESS, Backend

REAL_SKIP = (
    "no real Aerospike server: set STATESTREAM_TEST_AEROSPIKE=host:port (namespace from "
    "STATESTREAM_TEST_AEROSPIKE_NAMESPACE, default 'test') to run these tests against one"
)

real_only = pytest.mark.skipif(not REAL_ADDRESS, reason=REAL_SKIP)


@pytest.fixture(params=["fake", pytest.param("real", marks=real_only)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    opened = Backend(request.param)
    yield opened
    opened.close()


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def fake(server: FakeServer) -> Iterator[Backend]:
    opened = Backend("fake", server)
    yield opened
    opened.close()


# -- layout ---------------------------------------------------------------------


def test_one_set_per_table_keyed_by_partition_with_keys_sent(backend: Backend) -> None:
    store = backend.open("orders", 7, set_prefix=backend.prefix + "app.")
    assert store.set_name == backend.prefix + "app.orders"
    store.write({b"k": b"value", b"": b"empty key"}, 41)
    records = {bytes(key): bins for key, bins in backend.records(store.set_name)}
    partition = (7).to_bytes(4, "big")
    assert records == {
        partition + b"dk": {"v": b"value", "p": 7, "k": int.from_bytes(b"k" + bytes(6), "big")},
        partition + b"d": {"v": b"empty key", "p": 7, "k": 0},
        partition + b"o": {"o": 41},
    }


def test_partitions_share_the_set_and_never_collide(backend: Backend) -> None:
    zero, one = backend.open("t", 0), backend.open("t", 1)
    zero.write({b"k": b"zero", b"\x00\x00\x00\x01dk": b"lookalike"}, 5)
    one.write({b"k": b"one"}, 9)
    assert zero.set_name == one.set_name
    assert len(backend.records(zero.set_name)) == 5  # three data records, two offset records
    assert list(zero.iterate()) == [(b"\x00\x00\x00\x01dk", b"lookalike"), (b"k", b"zero")]
    assert list(one.iterate()) == [(b"k", b"one")]
    zero.clear()
    assert (zero.count(), zero.offset()) == (0, None)
    assert (one.count(), one.offset(), one.get(b"k")) == (1, 9, b"one")
    left = sorted(bytes(key) for key, _ in backend.records(one.set_name))
    assert left == [b"\x00\x00\x00\x01dk", b"\x00\x00\x00\x01o"]


def test_a_new_owner_reads_the_offset_record(backend: Backend) -> None:
    first = backend.open("t", 3)
    first.write({b"a": b"1"}, 100)
    first.close()
    # Another worker, with its own client: no standby, no restore, just the offset.
    pool = ClientPool(backend.server.client) if backend.kind == "fake" else ClientPool()
    options = AerospikeOptions(set_prefix=backend.prefix)
    with AerospikeStore(backend.hosts, backend.namespace, "t", 3, options, pool=pool) as owner:
        assert owner.offset() == 100
        assert owner.get(b"a") == b"1"
    assert pool.open_clients() == 0


def test_batches_are_split_and_every_record_counts(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aerospike_batching, "MAX_BATCH_KEYS", 3)
    store = backend.open()
    keys = [b"%02d" % n for n in range(10)]
    store.write({key: key * 2 for key in keys}, 1)
    assert store.get_many([*keys, b"missing"]) == [key * 2 for key in keys] + [None]
    store.write(dict.fromkeys(keys[:7]), 2)
    assert [key for key, _ in store.iterate()] == keys[7:]
    store.clear()
    assert store.count() == 0


# -- the offset record ------------------------------------------------------------


def test_offset_record_is_written_after_the_data(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    server.calls.clear()
    store.write({b"a": b"1", b"b": None}, 3)
    assert [method for method, _ in server.calls] == ["batch_write", "operate"]


def test_failed_data_write_leaves_the_offset_so_replay_is_safe(
    fake: Backend, server: FakeServer
) -> None:
    store = fake.open()
    store.write({b"a": b"1", b"b": b"1"}, 10)
    server.fail("batch_write", ex.DeviceOverload, key=b"b")
    with pytest.raises(StoreError) as info:
        store.write({b"a": b"2", b"b": b"2"}, 11)
    assert "key b'b'" in str(info.value)
    assert "table 't' partition 0" in str(info.value)
    assert "code 18" in str(info.value)
    # Part of the batch may be applied; the offset is not, in memory or on the server.
    assert store.offset() == 10
    assert fake.open().offset() == 10
    store.write({b"a": b"2", b"b": b"2"}, 11)  # the replay
    assert (dict(store.iterate()), store.offset()) == ({b"a": b"2", b"b": b"2"}, 11)


def test_failed_offset_write_keeps_the_old_offset(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    store.write({b"a": b"1"}, 4)
    server.fail("operate", ex.TimeoutError)
    with pytest.raises(StoreTimeoutError):
        store.write({b"a": b"2"}, 5)
    assert store.offset() == 4
    assert fake.open().offset() == 4
    assert store.get(b"a") == b"2"  # the data ran ahead of the offset, never the reverse


def test_per_record_results_are_checked_even_when_the_batch_says_ok(
    server: FakeServer,
) -> None:
    def zero_results(config: dict[str, Any]) -> Any:
        client = server.client(config)
        batch_write = client.batch_write

        def lying_batch_write(batch: Any, policy_batch: Any = None) -> Any:
            result = batch_write(batch, policy_batch)
            result.result = 0
            return result

        client.batch_write = lying_batch_write
        return client

    store = AerospikeStore(FAKE_HOSTS, "test", "t", 0, pool=ClientPool(zero_results))
    server.fail("batch_write", ex.RecordTooBig, key=b"x")
    with pytest.raises(RecordTooLargeError):
        store.write({b"x": b"1"}, 1)
    assert store.offset() is None
    store.close()


def test_malformed_offset_record_is_a_corrupted_store(fake: Backend, server: FakeServer) -> None:
    fake.open().write({}, 1)
    client = server.client({"hosts": FAKE_HOSTS})
    client.put(("test", "t", bytearray(b"\x00\x00\x00\x00o")), {"o": "one"})
    with pytest.raises(StoreCorruptedError, match="offset record"):
        fake.open()


# -- metadata ---------------------------------------------------------------------

EPOCH = (3).to_bytes(8, "big")


def _offset_record(backend: Backend, store: AerospikeStore) -> dict[str, Any]:
    key = store.partition.to_bytes(4, "big") + b"o"
    records = {bytes(k): bins for k, bins in backend.records(store.set_name)}
    bins = records[key]
    if "m" in bins:
        bins["m"] = {name: bytes(value) for name, value in bins["m"].items()}
    return bins


def test_metadata_lives_in_the_offset_record(backend: Backend) -> None:
    store = backend.open("t", 2)
    store.write({b"k": b"v"}, 5, {"epoch": EPOCH, "stream_time": b""})
    assert _offset_record(backend, store) == {"o": 5, "m": {"epoch": EPOCH, "stream_time": b""}}
    store.write({b"k": b"w"}, 6)
    store.write({}, None, {"epoch": b"4"})
    assert _offset_record(backend, store) == {"o": 6, "m": {"epoch": b"4", "stream_time": b""}}
    # No data record carries metadata, and no query of the partition sees it.
    assert len(backend.records(store.set_name)) == 2
    assert list(store.iterate()) == [(b"k", b"w")]


def test_metadata_is_written_with_the_offset_after_the_data(
    fake: Backend, server: FakeServer
) -> None:
    store = fake.open()
    server.calls.clear()
    store.write({b"a": b"1"}, 3, {"epoch": EPOCH})
    assert [method for method, _ in server.calls] == ["batch_write", "operate"]
    server.calls.clear()
    store.write({b"a": b"2"}, None, {"epoch": EPOCH})
    assert [method for method, _ in server.calls] == ["batch_write", "operate"]
    server.calls.clear()
    store.write({b"a": b"3"}, None)
    assert [method for method, _ in server.calls] == ["batch_write"]


def test_metadata_before_any_offset(fake: Backend) -> None:
    store = fake.open()
    store.write({}, None, {"epoch": EPOCH})
    assert _offset_record(fake, store) == {"m": {"epoch": EPOCH}}
    reopened = fake.open()
    assert (reopened.offset(), reopened.meta("epoch")) == (None, EPOCH)


def test_failed_offset_write_keeps_the_old_metadata(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    store.write({b"a": b"1"}, 4, {"epoch": b"old"})
    server.fail("operate", ex.TimeoutError)
    with pytest.raises(StoreTimeoutError):
        store.write({b"a": b"2"}, 5, {"epoch": b"new"})
    assert (store.offset(), store.meta("epoch")) == (4, b"old")
    reopened = fake.open()
    assert (reopened.offset(), reopened.meta("epoch")) == (4, b"old")


@pytest.mark.parametrize(
    "bins",
    [{"o": 1, "m": "epoch"}, {"o": 1, "m": {"epoch": 5}}, {"o": 1, "m": {"bad name": b"x"}}],
    ids=["not-a-map", "not-bytes", "bad-name"],
)
def test_malformed_metadata_is_a_corrupted_store(
    fake: Backend, server: FakeServer, bins: dict[str, Any]
) -> None:
    fake.open().write({}, 1)
    client = server.client({"hosts": FAKE_HOSTS})
    client.put(("test", "t", bytearray(b"\x00\x00\x00\x00o")), bins)
    with pytest.raises(StoreCorruptedError, match="offset record"):
        fake.open()


# -- destroy --------------------------------------------------------------------------


def test_destroy_removes_the_partition_and_nothing_else(backend: Backend) -> None:
    doomed, neighbour = backend.open("t", 0), backend.open("t", 1)
    doomed.write({b"a": b"1", b"b": b"2"}, 7, {"epoch": EPOCH})
    neighbour.write({b"a": b"other"}, 9, {"epoch": b"n"})
    doomed.close()
    backend.destroy("t", 0)
    left = sorted(bytes(key) for key, _ in backend.records(neighbour.set_name))
    assert left == [b"\x00\x00\x00\x01da", b"\x00\x00\x00\x01o"]
    rebuilt = backend.open("t", 0)
    assert (rebuilt.count(), rebuilt.offset(), rebuilt.meta("epoch")) == (0, None, None)


def test_destroy_works_on_a_malformed_offset_record(fake: Backend, server: FakeServer) -> None:
    fake.open().write({b"a": b"1"}, 1)
    client = server.client({"hosts": FAKE_HOSTS})
    client.put(("test", "t", bytearray(b"\x00\x00\x00\x00o")), {"o": "one"})
    with pytest.raises(StoreCorruptedError):
        fake.open()
    fake.destroy("t", 0)
    assert server.set_records("test", "t") == []
    assert fake.open().offset() is None


def test_destroy_store_by_url(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ClientPool, "_shared", ClientPool(server.client))
    url = "aerospike://127.0.0.1:3000/test?set_prefix=app."
    with open_store(url, "t", 0) as store:
        store.write({b"a": b"1"}, 3, {"epoch": EPOCH})
    with open_store(url, "t", 1) as store:
        store.write({b"a": b"1"}, 3)
    destroy_store(url, "t", 0)
    with open_store(url, "t", 0) as store:
        assert (store.count(), store.offset(), store.meta("epoch")) == (0, None, None)
    assert len(server.set_records("test", "app.t")) == 2
    assert ClientPool.shared().open_clients() == 0


def test_records_written_without_their_key_are_reported(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    client = server.client({"hosts": FAKE_HOSTS})
    client.put(("test", "t", "foreign"), {"p": 0, "v": b"x"})  # digest only
    with pytest.raises(StoreCorruptedError, match="POLICY_KEY_SEND"):
        list(store.iterate())


# -- TTL --------------------------------------------------------------------------


def test_ttl_is_rejected_by_a_namespace_without_nsup(fake: Backend) -> None:
    store = fake.open(ttl=60)
    with pytest.raises(StoreWriteRejectedError, match="nsup-period"):
        store.write({b"a": b"1"}, 1)
    assert store.offset() is None
    assert fake.open(ttl=-1).write({b"a": b"1"}, 1) is None  # never-expire needs no nsup


def test_ttl_expires_data_but_never_the_offset_record() -> None:
    server = FakeServer(namespaces={"test": FakeNamespace(allow_ttl=True)})
    backend = Backend("fake", server)
    store = backend.open(ttl=60)
    store.write({b"a": b"1"}, 7)
    server.advance(30)
    assert store.get(b"a") == b"1"
    server.advance(31)
    assert (store.get(b"a"), store.count()) == (None, 0)
    assert backend.open(ttl=60).offset() == 7
    backend.close()


# -- bad input and failures --------------------------------------------------------


def test_unreachable_hosts_name_every_host_tried(server: FakeServer) -> None:
    hosts = [("10.9.9.1", 3000), ("10.9.9.2", 3100)]
    with pytest.raises(StoreConnectionError) as info:
        AerospikeStore(hosts, "test", "t", 0, pool=ClientPool(server.client))
    assert "10.9.9.1:3000, 10.9.9.2:3100" in str(info.value)
    assert isinstance(info.value.__cause__, ex.ConnectionError)


def test_refused_connection_with_the_real_client_is_fast_and_typed() -> None:
    # A bound but not listening socket: connecting to it is refused at once.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreConnectionError) as info:
            open_store(f"aerospike://127.0.0.1:{port}/test", "t", 0)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert time.monotonic() - started < 10
    assert ClientPool.shared().open_clients() == 0


def test_missing_namespace_is_a_typed_configuration_error(backend: Backend) -> None:
    backend.namespace = "statestream_no_such_namespace"
    with pytest.raises(NamespaceNotFoundError) as info:
        backend.open()
    assert isinstance(info.value, ConfigurationError)
    assert "statestream_no_such_namespace" in str(info.value)
    assert backend.pool.open_clients() == (1 if backend.kind == "real" else 0)


@pytest.mark.parametrize(
    ("table", "options", "match"),
    [
        ("x" * 60, {"set_prefix": "abcd."}, "at most 63|1-63"),
        ("t", {"set_prefix": "bad:prefix"}, "set_prefix"),
    ],
)
def test_set_names_are_checked_before_connecting(
    fake: Backend, server: FakeServer, table: str, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        fake.open(table, **options)
    assert server.clients == []


def test_record_over_the_size_limit(backend: Backend) -> None:
    store = backend.open("t", 2)
    store.write({b"small": b"1"}, 1)
    with pytest.raises(RecordTooLargeError) as info:
        store.write({b"huge": b"x" * (9 << 20)}, 2)
    message = str(info.value)
    assert "table 't' partition 2" in message
    assert "huge" in message
    assert "max-record-size" in message
    assert store.offset() == 1
    store.write({b"after": b"2"}, 2)
    assert store.get(b"after") == b"2"


def test_non_bytes_keys_never_reach_the_server(fake: Backend, server: FakeServer) -> None:
    store = fake.open()
    server.calls.clear()
    for call in (lambda: store.get("a"), lambda: store.get_many([b"a", 1])):  # type: ignore[arg-type, list-item]
        with pytest.raises(InvalidKeyError):
            call()
    with pytest.raises(InvalidKeyError):
        store.write({"a": b"1"}, 1)  # type: ignore[dict-item]
    assert server.calls == []


@pytest.mark.parametrize(
    ("aerospike_error", "statestream_error"),
    [
        (ex.TimeoutError, StoreTimeoutError),
        (ex.ConnectionError, StoreConnectionError),
        (ex.ClusterError, StoreConnectionError),
        (ex.InvalidCredential, StoreConnectionError),
        (ex.RecordTooBig, RecordTooLargeError),
        (ex.ForbiddenError, StoreWriteRejectedError),
        (ex.NamespaceNotFound, NamespaceNotFoundError),
        (ex.DeviceOverload, StoreError),
        (ex.ParamError, StoreError),
        (ex.ServerError, StoreError),
    ],
)
def test_every_aerospike_error_is_wrapped(
    fake: Backend,
    server: FakeServer,
    aerospike_error: type[ex.AerospikeError],
    statestream_error: type[StoreError],
) -> None:
    store = fake.open()
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get(b"key"),
        "batch_read": lambda: store.get_many([b"key"]),
        "batch_write": lambda: store.write({b"key": b"1"}, None),
        "query": store.count,
        "batch_remove": store.clear,
    }
    for method, call in calls.items():
        store.write({b"key": b"0"}, None)
        server.fail(method, aerospike_error)
        with pytest.raises(statestream_error) as info:
            call()
        assert isinstance(info.value, StateStreamError)
        assert isinstance(info.value.__cause__, aerospike_error), method
        assert "table 't' partition 0" in str(info.value)


def test_timeouts_are_passed_through_and_bound_every_call(
    fake: Backend, server: FakeServer
) -> None:
    store = fake.open(total_timeout=50, socket_timeout=20, max_retries=1, query_timeout=80)
    store.write({b"a": b"1"}, 1)
    for method, policy in server.calls:
        expected = 80 if method == "query" else 50
        assert (policy["total_timeout"], policy["socket_timeout"], policy["max_retries"]) == (
            expected,
            20,
            1,
        ), method
    server.latency_ms = 60_000
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: store.get(b"a"), "get .*total_timeout=50 ms"),
        (lambda: store.get_many([b"a"]), "batch read .*total_timeout=50 ms"),
        (lambda: store.write({b"a": b"2"}, 2), "batch write .*total_timeout=50 ms"),
        (lambda: list(store.iterate()), "query .*query_timeout=80 ms"),
    ]
    for call, match in calls:
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError, match=match):
            call()
        assert time.monotonic() - started < 5
    assert store.offset() == 1


# -- clients: configuration, sharing, closing --------------------------------------


def test_connection_options_reach_the_client_config(server: FakeServer) -> None:
    server.users = {"app": "s3cret"}
    options = AerospikeOptions(
        user="app",
        password="s3cret",
        tls_name="db.example",
        tls_cafile="/ca.pem",
        connect_timeout=250,
    )
    store = AerospikeStore(FAKE_HOSTS, "test", "t", 0, options, pool=ClientPool(server.client))
    config = server.clients[0].config
    assert config["hosts"] == [("127.0.0.1", 3000, "db.example")]
    assert (config["user"], config["password"], config["connect_timeout"]) == ("app", "s3cret", 250)
    assert config["tls"] == {"enable": True, "cafile": "/ca.pem"}
    assert "s3cret" not in repr(options)
    store.close()
    with pytest.raises(StoreConnectionError, match="password"):
        AerospikeStore(
            FAKE_HOSTS, "test", "t", 0, AerospikeOptions(user="app"), pool=ClientPool(server.client)
        )


def test_one_client_per_config_closed_with_its_last_store(
    fake: Backend, server: FakeServer
) -> None:
    stores = [fake.open("t", 0), fake.open("t", 1), fake.open("u", 0)]
    assert len(server.clients) == 1
    other = fake.open("t", 2, connect_timeout=500)  # other connection settings: own client
    assert (len(server.clients), fake.pool.open_clients()) == (2, 2)
    other.close()
    other.close()
    assert fake.pool.open_clients() == 1
    stores[0].close()
    stores[1].close()
    assert server.clients[0].is_connected()
    stores[2].close()
    assert (server.open_clients(), fake.pool.open_clients()) == (0, 0)
    fake.open().write({b"a": b"1"}, 1)  # a later store connects again
    assert len(server.clients) == 3


def test_pool_is_thread_safe(fake: Backend, server: FakeServer) -> None:
    errors: list[BaseException] = []

    def churn(partition: int) -> None:
        try:
            for _ in range(20):
                store = AerospikeStore(FAKE_HOSTS, "test", "t", partition, pool=fake.pool)
                store.write({b"k": b"%d" % partition}, 1)
                store.close()
        except BaseException as exc:
            errors.append(exc)

    keeper = fake.open("t", 99)
    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(server.clients) == 1  # the keeper's lease kept the one client open
    keeper.close()
    assert fake.pool.open_clients() == 0


def test_a_forked_process_gets_its_own_client(fake: Backend, server: FakeServer) -> None:
    parent = fake.open("t", 0)
    fake.pool._pid = -1  # as if the pool had been inherited through fork()
    child = fake.open("t", 1)
    assert len(server.clients) == 2
    parent.close()  # a parent's client is not the child's to close
    assert server.clients[0].is_connected()
    child.close()
    assert not server.clients[1].is_connected()


def test_stores_opened_by_url_share_the_process_pool(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.hosts = {"db1:3000", "db2:3100"}
    monkeypatch.setattr(ClientPool, "_shared", ClientPool(server.client))
    assert StoreRegistry().store_class("aerospike") is AerospikeStore
    url = "aerospike://db1,db2:3100/test?set_prefix=app.&total_timeout=300&ttl=-1"
    first, second = open_store(url, "t", 0), open_store(url, "t", 1)
    assert isinstance(first, AerospikeStore)
    assert first.hosts == (("db1", 3000), ("db2", 3100))
    assert (first.set_name, first.options.total_timeout, first.options.ttl) == ("app.t", 300, -1)
    assert len(server.clients) == 1
    first.close()
    second.close()
    assert ClientPool.shared().open_clients() == 0


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("aerospike:///test", "at least one host"),
        ("aerospike://db1:3000", "namespace"),
        ("aerospike://db1:3000/a/b", "namespace"),
        ("aerospike://db1:99999/test", "port"),
        ("aerospike://user:pw@db1/test", "credentials"),
        ("aerospike://db1/test?colour=red", "unknown option"),
        ("aerospike://db1/test?total_timeout=0", "total_timeout"),
        ("aerospike://db1/test?ttl=-2", "ttl"),
        ("aerospike://db1/test?password=x", "user"),
        ("aerospike://db1/" + "n" * 32, "namespace"),
    ],
)
def test_bad_urls_fail_before_connecting(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        open_store(url, "t", 0)


def test_parse_hosts() -> None:
    assert parse_hosts(["a", "b:3100", "[::1]", "[fe80::1]:4000"]) == (
        ("a", 3000),
        ("b", 3100),
        ("::1", 3000),
        ("fe80::1", 4000),
    )


def test_the_real_client_accepts_our_user_keys() -> None:
    # The digest is computed client-side: a bytearray key works, bytes does not.
    key = bytearray(b"\x00\x00\x00\x00dk")
    assert len(aerospike.calc_digest("test", "t", key)) == 20
    with pytest.raises(TypeError):
        aerospike.calc_digest("test", "t", bytes(key))
