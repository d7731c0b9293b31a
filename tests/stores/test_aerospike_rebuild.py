"""A worker on the Aerospike store when the server restarts and loses its data.

The server (the fake) keeps an in-memory namespace: a restart empties it
while a worker holds open stores whose offset record it read earlier. The
store must refuse to write its cached offset back
(:class:`~statestream.errors.OffsetRecordChangedError`); the worker deletes
the partition's records with a warning and rebuilds the partition from the
changelog in place, without stopping: the state is exact.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statestream.config import AerospikeOptions
from statestream.errors import OffsetRecordChangedError
from statestream.stores.aerospike import AerospikeStore, ClientPool
from statestream.worker import Worker, WorkerStatus
from tests.fakes.aerospike import FakeServer
from tests.stores.aerospike_openers import FAKE_HOSTS
from tests.worker import poison_app
from tests.worker.helpers import open_embedded, produce_raw

pytestmark = pytest.mark.timeout(120)

STORE_URL = "aerospike://127.0.0.1:3000/test?set_prefix=app."
OPTIONS = AerospikeOptions(set_prefix="app.")


def _produce(data_dir: Path, values: list[tuple[str, int]]) -> None:
    transport = open_embedded(data_dir)
    try:
        items = [(json.dumps(k).encode(), json.dumps({"n": n}).encode()) for k, n in values]
        produce_raw(transport, poison_app.SOURCE, items, 1, partition=0)
    finally:
        transport.close()


def _run(
    data_dir: Path, records: int, until: Callable[[], bool] | None = None, **settings: Any
) -> Worker:
    """A worker that stops after ``records`` records, or once ready and ``until()``."""
    app = poison_app.app.with_settings(
        data_dir=str(data_dir),
        partitions=1,
        commit_interval=0.1,
        store_url=STORE_URL,
        **settings,
    )
    worker: Worker
    deadline = time.monotonic() + 30

    def on_status(status: WorkerStatus) -> None:
        if until is not None:
            done = 0 in status.ready and until()
        else:
            done = status.counters.get("processed", 0) >= records
        if done or time.monotonic() > deadline:
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=0.05)
    return worker


def _totals(server: FakeServer) -> dict[str, Any]:
    pool = ClientPool(server.client)
    store = AerospikeStore(FAKE_HOSTS, "test", "totals", 0, OPTIONS, pool=pool)
    try:
        return {json.loads(k): json.loads(v) for k, v in store.iterate()}
    finally:
        store.close()


@pytest.mark.parametrize("when", ["restore", "commit"])
def test_a_server_restart_that_lost_the_data_is_rebuilt_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    server = FakeServer()
    monkeypatch.setattr(ClientPool, "_shared", ClientPool(server.client))
    first = [("a", 1), ("b", 2), ("a", 3), ("b", 4)]
    _produce(tmp_path, first)
    assert _run(tmp_path, len(first)).run() == 0
    assert _totals(server) == {"a": 4, "b": 6}

    # The next worker opens its stores (reading their offset records); the
    # server restarts and loses everything just before the worker's first
    # write: in its restore, or in its first commit (step 4, after the
    # changelog records and source offsets are committed).
    second = [("a", 10), ("c", 5)]
    _produce(tmp_path, second)
    real_write = AerospikeStore.write
    restarted: list[str] = []

    def write(self: AerospikeStore, changes: Any, *args: Any, **kwargs: Any) -> None:
        # The restore's first write moves the offset past the fence marker (no
        # changes); a commit's write carries the processed records' changes.
        if (changes or when == "restore") and not restarted:
            restarted.append(self.table)
            server.restart(lose_data=True)
        real_write(self, changes, *args, **kwargs)

    monkeypatch.setattr(AerospikeStore, "write", write)
    expected = {"a": 14, "b": 6, "c": 5}
    worker = _run(tmp_path, 0, until=lambda: bool(restarted) and _totals(server) == expected)
    with caplog.at_level(logging.WARNING, logger="statestream"):
        assert worker.run() == 0  # the same worker goes on: no restart needed
    assert restarted
    assert "deleting its damaged stores" in caplog.text
    assert "rebuilding it from its changelogs" in caplog.text
    assert worker.counters().get("rebuilds") == 1
    assert _totals(server) == expected
    # Every store's offset again covers exactly the data it holds: a fresh
    # worker changes nothing and processes nothing.
    monkeypatch.setattr(AerospikeStore, "write", real_write)
    again = _run(tmp_path, 0, until=lambda: True)
    assert again.run() == 0
    assert again.counters().get("processed", 0) == 0
    assert _totals(server) == expected


def test_damage_that_keeps_coming_back_stops_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that loses its data at every write: three rebuilds, then the error."""
    server = FakeServer()
    monkeypatch.setattr(ClientPool, "_shared", ClientPool(server.client))
    values = [("a", 1), ("b", 2)]
    _produce(tmp_path, values)
    assert _run(tmp_path, len(values)).run() == 0
    real_write = AerospikeStore.write

    def write(self: AerospikeStore, changes: Any, *args: Any, **kwargs: Any) -> None:
        server.restart(lose_data=True)
        real_write(self, changes, *args, **kwargs)

    monkeypatch.setattr(AerospikeStore, "write", write)
    worker = _run(tmp_path, 0, until=lambda: False)
    with (
        caplog.at_level(logging.WARNING, logger="statestream"),
        pytest.raises(OffsetRecordChangedError, match="is gone"),
    ):
        worker.run()
    assert worker.counters().get("rebuilds") == 3
    assert "damaged again after 3 rebuilds" in caplog.text
