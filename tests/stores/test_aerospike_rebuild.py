"""A worker on the Aerospike store when the server restarts and loses its data.

The server (the fake) keeps an in-memory namespace: a restart empties it
while a worker holds open stores whose offset record it read earlier. The
store must refuse to write its cached offset back
(:class:`~statestream.errors.OffsetRecordChangedError`); the worker deletes
the partition's records with a warning and stops, and the next worker
rebuilds the partition from the changelog: the state is exact.
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


def _run(data_dir: Path, records: int, until: Callable[[], bool] | None = None) -> Worker:
    """A worker that stops after ``records`` records, or once ready and ``until()``."""
    app = poison_app.app.with_settings(
        data_dir=str(data_dir), partitions=1, commit_interval=0.1, store_url=STORE_URL
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
def test_a_server_restart_that_lost_the_data_is_rebuilt_from_the_changelog(
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
    # write: in its restore, or in its first commit.
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
    worker = _run(tmp_path, len(first) + len(second))
    with (
        caplog.at_level(logging.WARNING, logger="statestream"),
        pytest.raises(OffsetRecordChangedError, match="is gone"),
    ):
        worker.run()
    assert restarted
    assert "deleting its damaged stores" in caplog.text
    # No store claims an offset over data it does not hold.
    for table in ("totals", "seen"):
        store = AerospikeStore(
            FAKE_HOSTS, "test", table, 0, OPTIONS, pool=ClientPool(server.client)
        )
        assert store.offset() is None
        store.close()

    # The next worker rebuilds the partition from the changelog: exact state.
    monkeypatch.setattr(AerospikeStore, "write", real_write)
    expected = {"a": 14, "b": 6, "c": 5}
    assert _run(tmp_path, 0, until=lambda: _totals(server) == expected).run() == 0
    assert _totals(server) == expected
