"""The fake Aerospike client does what the real server was seen doing.

These talk to the fake directly, as the store's code would talk to the real
client, so a change to the fake that stops modelling the server fails here
rather than quietly making the store's tests pass.
"""

from __future__ import annotations

import aerospike
import pytest
from aerospike import exception as ex
from aerospike_helpers.batch.records import BatchRecords, Write
from aerospike_helpers.operations import operations as ops

from tests.fakes.aerospike import FakeClient, FakeServer

KEY = ("test", "s", bytearray(b"k"))


@pytest.fixture
def server() -> FakeServer:
    fake = FakeServer()
    fake.sleep = lambda seconds: None
    return fake


@pytest.fixture
def client(server: FakeServer) -> FakeClient:
    return server.client({"hosts": [("127.0.0.1", 3000)]})


def test_a_frozen_server_fails_batch_records_with_no_response(
    server: FakeServer, client: FakeClient
) -> None:
    server.frozen = True
    batch = client.batch_read([KEY, ("test", "s", bytearray(b"j"))], policy={"total_timeout": 70})
    assert [r.result for r in batch.batch_records] == [ex.NoResponse.code] * 2
    written = client.batch_write(
        BatchRecords([Write(KEY, [ops.write("v", b"1")])]), policy_batch={"total_timeout": 70}
    )
    assert written.batch_records[0].result == -15
    assert server.waits == [("batch_read", 70), ("batch_write", 70)]
    with pytest.raises(ex.TimeoutError):
        client.get(KEY, policy={"total_timeout": 70})
    server.frozen = False
    with pytest.raises(ex.RecordNotFound):
        client.get(KEY)  # nothing was applied


def test_a_frozen_query_waits_its_socket_timeout(server: FakeServer, client: FakeClient) -> None:
    server.frozen = True
    with pytest.raises(ex.TimeoutError):
        client.query("test", "s").results()  # the client's defaults: total 0, socket 30 s
    with pytest.raises(ex.TimeoutError):
        client.query("test", "s").results({"total_timeout": 2000, "socket_timeout": 0})
    assert server.waits == [("query", 30000), ("query", 2000)]
    with pytest.raises(AssertionError, match="could hang"):
        client.query("test", "s").results({"total_timeout": 0, "socket_timeout": 0})


def test_a_request_over_the_message_limit_drops_the_connection(
    server: FakeServer, client: FakeClient
) -> None:
    value = b"x" * 900_000
    records = [
        Write(("test", "s", bytearray(b"%d" % n)), [ops.write("v", value)]) for n in range(150)
    ]
    with pytest.raises(ex.ConnectionError):
        client.batch_write(BatchRecords(records))
    assert server.set_records("test", "s") == []
    client.batch_write(BatchRecords(records[:100]))  # 90 MB: under the limit
    assert len(server.set_records("test", "s")) == 100


def test_a_restart_loses_an_in_memory_namespace(server: FakeServer, client: FakeClient) -> None:
    client.put(KEY, {"v": b"1"})
    server.restart(lose_data=True)
    with pytest.raises(ex.RecordNotFound):
        client.get(KEY)
    client.put(KEY, {"v": b"2"})
    assert client.get(KEY)[1]["gen"] == 1  # generations start again


def test_operate_checks_generations_and_returns_the_new_one(client: FakeClient) -> None:
    create = {"exists": aerospike.POLICY_EXISTS_CREATE}
    _, meta, _ = client.operate(KEY, [ops.write("o", 1)], None, create)
    assert meta["gen"] == 1
    with pytest.raises(ex.RecordExistsError):
        client.operate(KEY, [ops.write("o", 2)], None, create)
    checked = {"exists": aerospike.POLICY_EXISTS_UPDATE, "gen": aerospike.POLICY_GEN_EQ}
    _, meta, _ = client.operate(KEY, [ops.write("o", 2)], {"gen": 1}, checked)
    assert meta["gen"] == 2
    with pytest.raises(ex.RecordGenerationError):
        client.operate(KEY, [ops.write("o", 3)], {"gen": 1}, checked)
    client.remove(KEY)
    with pytest.raises(ex.RecordNotFound):
        client.operate(KEY, [ops.write("o", 3)], {"gen": 2}, checked)


def test_queries_paginate_in_digest_order(client: FakeClient) -> None:
    for n in range(25):
        client.put(("test", "s", bytearray(b"%02d" % n)), {"v": n}, policy={"key": 1})
    query = client.query("test", "s")
    query.max_records = 10
    query.paginate()
    pages = []
    while True:
        pages.append([bytes(key[2]) for key, _, _ in query.results()])
        if query.is_done():
            break
    assert [len(page) for page in pages] == [10, 10, 5]
    seen = [key for page in pages for key in page]
    assert sorted(seen) == [b"%02d" % n for n in range(25)]
    assert seen != sorted(seen)  # never key order
