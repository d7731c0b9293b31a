"""A partition whose store is found damaged in a commit is rebuilt in place.

Two partitions commit in the same rounds. The first commit that writes
partition 0's records finds its store damaged (an injected
:class:`~statestream.errors.OffsetRecordChangedError`, what a remote store
raises when its data vanished under it). The worker must not stop:
partition 1 goes on untouched, partition 0's stores are deleted and
restored from the changelogs by a new task, and the tables end exact.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from statestream.errors import OffsetRecordChangedError
from statestream.stores.leveldb import LevelDBStore
from statestream.worker import Worker, WorkerStatus
from tests.worker import poison_app
from tests.worker.helpers import committed_offsets, open_embedded, produce_raw, read_tables

pytestmark = pytest.mark.timeout(120)

PER_PARTITION = 5000


def _produce(data_dir: Path) -> dict[int, dict[str, int]]:
    """Write records to both partitions; return the expected totals per partition."""
    transport = open_embedded(data_dir)
    expected: dict[int, dict[str, int]] = {0: {}, 1: {}}
    try:
        for partition in (0, 1):
            items = []
            for i in range(PER_PARTITION):
                key = f"k{partition}-{i % 7}"
                items.append((json.dumps(key).encode(), json.dumps({"n": i}).encode()))
                expected[partition][key] = expected[partition].get(key, 0) + i
            produce_raw(transport, poison_app.SOURCE, items, 2, partition=partition)
    finally:
        transport.close()
    return expected


def _read(data_dir: Path) -> dict[int, dict[str, Any]]:
    transport = open_embedded(data_dir)
    try:
        committed = committed_offsets(transport, poison_app.APP_ID, poison_app.SOURCE, 2)
        tables = read_tables(
            transport,
            poison_app.APP_ID,
            [poison_app.Totals.totals],
            f"leveldb://{data_dir}/{poison_app.APP_ID}",
            poison_app.SOURCE,
            committed,
        )
    finally:
        transport.close()
    return {p: t["totals"] for p, t in tables.items()}


def test_a_store_damaged_in_a_commit_is_rebuilt_while_the_other_partition_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected = _produce(tmp_path)
    real_write = LevelDBStore.write
    damaged: list[int] = []
    after: dict[int, int] = {0: 0, 1: 0}  # commits' writes after the damage

    def write(self: LevelDBStore, changes: Any, *args: Any, **kwargs: Any) -> None:
        if changes and self.table == "totals":
            if damaged:
                after[self.partition] += 1
            elif self.partition == 0:
                damaged.append(self.partition)
                raise OffsetRecordChangedError(
                    f"the offset record of {self.table}/{self.partition} is gone (injected)"
                )
        real_write(self, changes, *args, **kwargs)

    monkeypatch.setattr(LevelDBStore, "write", write)
    app = poison_app.app.with_settings(data_dir=str(tmp_path), partitions=2, commit_interval=0.02)
    worker: Worker
    deadline = time.monotonic() + 60

    def on_status(status: WorkerStatus) -> None:
        done = status.counters.get("processed", 0) >= 2 * PER_PARTITION
        rebuilt = bool(status.counters.get("rebuilds")) and status.ready == [0, 1]
        if (done and rebuilt) or time.monotonic() > deadline:
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=0.05)
    with caplog.at_level(logging.INFO, logger="statestream"):
        assert worker.run() == 0
    assert damaged == [0]
    assert worker.counters().get("rebuilds") == 1
    rebuilt = [
        line
        for line in worker.metrics.render().decode().splitlines()
        if line.startswith("statestream_partition_rebuilds_total{")
    ]
    assert rebuilt == ['statestream_partition_rebuilds_total{partition="0"} 1.0']
    # Both kept committing after partition 0's damage.
    assert after[0] > 0
    assert after[1] > 0
    assert "partition 0: deleting its damaged stores" in caplog.text
    assert "partition 0: the offset record of totals/0 is gone (injected); rebuilding" in (
        caplog.text
    )
    # Partition 1 was never restarted: one "ready" line for it, two for 0.
    assert caplog.text.count("partition 1 ready") == 1
    assert caplog.text.count("partition 0 ready") == 2
    monkeypatch.setattr(LevelDBStore, "write", real_write)
    assert _read(tmp_path) == expected
