"""Error policies for bad records (a processor that raises, a value that is not json).

``stop`` runs the CLI in a subprocess (exit code and message); ``skip`` and
``dead_letter`` run a :class:`Worker` in this process to read its counters.
All on the embedded log.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from statestream.app import App
from statestream.types import TopicPartition
from statestream.worker import Worker, WorkerStatus
from tests.worker import poison_app
from tests.worker.helpers import (
    WorkerProcess,
    committed_offsets,
    open_embedded,
    produce_raw,
    read_tables,
    read_topic,
)

pytestmark = pytest.mark.timeout(60)

POISON_AT = 5
RECORDS = 10
KINDS = ["raises", "undecodable"]


def write_input(data_dir: Path, kind: str) -> tuple[int, int]:
    """Write ten records to ``events`` partition 0, a bad one at offset 5.

    Return the expected (total of key "a", total of key "b") without it.
    """
    items: list[tuple[bytes | None, bytes | None]] = []
    totals = {"a": 0, "b": 0}
    for i in range(RECORDS):
        key = "a" if i % 2 == 0 else "b"
        if i == POISON_AT:
            value = b'{"n": 1000, "poison": tr' if kind == "undecodable" else None
            items.append(
                (json.dumps(key).encode(), value or b'{"n": 1000, "poison": true}'),
            )
            continue
        items.append((json.dumps(key).encode(), json.dumps({"n": i + 1}).encode()))
        totals[key] += i + 1
    transport = open_embedded(data_dir)
    try:
        produce_raw(transport, poison_app.SOURCE, items, 1, partition=0)
    finally:
        transport.close()
    return totals["a"], totals["b"]


def read_state(data_dir: Path) -> tuple[int | None, dict[str, Any], dict[str, Any]]:
    """(committed offset, totals, seen) of partition 0, once the worker is gone."""
    transport = open_embedded(data_dir)
    try:
        committed = committed_offsets(transport, poison_app.APP_ID, poison_app.SOURCE, 1)
        tables = read_tables(
            transport,
            poison_app.APP_ID,
            [poison_app.Totals.totals, poison_app.Totals.seen],
            f"leveldb://{data_dir}/{poison_app.APP_ID}",
            poison_app.SOURCE,
            committed,
        )
    finally:
        transport.close()
    return committed[0], tables[0]["totals"], tables[0]["seen"]


def run_in_process(app: App, records: int = RECORDS) -> dict[str, int]:
    """Run a worker until it processed ``records`` records; return its counters."""
    worker: Worker

    def on_status(status: WorkerStatus) -> None:
        if status.counters.get("processed", 0) >= records:
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=0.05)
    assert worker.run() == 0
    return worker.counters()


def settings(data_dir: Path, policy: str) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "partitions": 1,
        "commit_interval": 0.2,
        "error_policy": policy,
    }


@pytest.mark.parametrize("kind", KINDS)
def test_stop_exits_1_naming_the_record_and_commits_what_came_before(
    tmp_path: Path, kind: str
) -> None:
    write_input(tmp_path, kind)
    worker = WorkerProcess(
        "tests.worker.poison_app:app",
        ["--data-dir", str(tmp_path), "--partitions", "1", "--error-policy", "stop"],
        tmp_path / "worker.log",
    )
    try:
        assert worker.wait(30) == 1, worker.log()
    finally:
        worker.ensure_stopped()
    output = worker.log()
    assert "statestream: error:" in output
    assert f"topic 'events' partition 0 offset {POISON_AT}" in output
    assert "Traceback" not in output
    committed, totals, seen = read_state(tmp_path)
    # The records before the bad one were processed: they are committed,
    # and the bad one is where a restart begins.
    assert committed == POISON_AT, f"committed offset {committed}, expected {POISON_AT}"
    assert totals == {"a": 1 + 3 + 5, "b": 2 + 4}
    assert seen == {"records": POISON_AT}


@pytest.mark.parametrize("kind", KINDS)
def test_skip_continues_rolls_back_and_counts(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    total_a, total_b = write_input(tmp_path, kind)
    app = poison_app.app.with_settings(**settings(tmp_path, "skip"))
    with caplog.at_level(logging.WARNING, logger="statestream.worker"):
        counters = run_in_process(app)
    assert counters.get("skipped") == 1
    assert counters.get("processed") == RECORDS
    assert f"skipping the record at topic 'events' partition 0 offset {POISON_AT}" in caplog.text
    committed, totals, seen = read_state(tmp_path)
    assert committed == RECORDS
    # The poison record added 1000 to "b" and counted itself before raising:
    # both changes were rolled back.
    assert totals == {"a": total_a, "b": total_b}
    assert seen == {"records": RECORDS - 1}


@pytest.mark.parametrize("kind", KINDS)
def test_dead_letter_sends_the_record_with_the_error_in_headers(tmp_path: Path, kind: str) -> None:
    total_a, total_b = write_input(tmp_path, kind)
    app = poison_app.app.with_settings(**settings(tmp_path, "dead_letter"))
    counters = run_in_process(app)
    assert counters.get("dead_lettered") == 1
    committed, totals, seen = read_state(tmp_path)
    assert committed == RECORDS
    assert totals == {"a": total_a, "b": total_b}
    assert seen == {"records": RECORDS - 1}
    assert seen == {"records": RECORDS - 1}
    transport = open_embedded(tmp_path)
    try:
        source = read_topic(transport, poison_app.SOURCE, 1)[0]
        dead = read_topic(transport, poison_app.DEAD_LETTERS, 1)[0]
    finally:
        transport.close()
    assert len(dead) == 1
    record, original = dead[0], source[POISON_AT]
    assert (record.key, record.value) == (original.key, original.value)
    headers = dict(record.headers)
    assert headers["statestream-error-origin"] == f"events:0:{POISON_AT}".encode()
    error = headers["statestream-error"].decode()
    if kind == "raises":
        assert error.startswith("PoisonError: poison record for b"), error
    else:
        assert error.startswith("DecodeError: the record's value could not be decoded"), error
        assert "json codec cannot decode" in error
    assert TopicPartition(poison_app.DEAD_LETTERS, 0) == record.tp


def test_a_store_read_error_is_not_skipped_under_skip_the_partition_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged store is not a bad record: no policy may skip records because of it.

    The read fails on record 1; the worker deletes the partition's stores,
    rebuilds them from the changelog in place and processes every record
    again from the committed offset: only the poison record is skipped.
    """
    from statestream.errors import StoreCorruptedError
    from statestream.stores.leveldb import LevelDBStore

    total_a, total_b = write_input(tmp_path, "raises")
    real_get = LevelDBStore.get
    calls = {"n": 0}

    def damaged_get(self: LevelDBStore, key: bytes) -> bytes | None:
        calls["n"] += 1
        if calls["n"] == 3:  # totals["b"], read by record 1
            raise StoreCorruptedError(f"{self.path}: corrupted block (injected)")
        return real_get(self, key)

    monkeypatch.setattr(LevelDBStore, "get", damaged_get)
    app = poison_app.app.with_settings(**settings(tmp_path, "skip"))
    worker: Worker
    deadline = time.monotonic() + 30

    def on_status(status: WorkerStatus) -> None:
        # Record 0 was processed before the damage, then all ten again.
        again = status.counters.get("processed", 0) >= RECORDS + 1
        if (status.counters.get("rebuilds") and again) or time.monotonic() > deadline:
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=0.05)
    assert worker.run() == 0
    assert calls["n"] > 3
    counters = worker.counters()
    assert counters.get("rebuilds") == 1
    assert counters.get("skipped") == 1  # the poison record, nothing for the damage
    monkeypatch.setattr(LevelDBStore, "get", real_get)
    committed, totals, seen = read_state(tmp_path)
    assert committed == RECORDS
    assert totals == {"a": total_a, "b": total_b}
    assert seen == {"records": RECORDS - 1}


def test_a_decode_error_says_whether_the_key_or_the_value_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items: list[tuple[bytes | None, bytes | None]] = [
        (b'"a"', b'{"n": 1}'),
        (b'"a', b'{"n": 2}'),  # the key is not json
        (b'"b"', b'{"n": '),  # the value is not json
        (b'"b"', b'{"n": 4}'),
    ]
    transport = open_embedded(tmp_path)
    try:
        produce_raw(transport, poison_app.SOURCE, items, 1, partition=0)
    finally:
        transport.close()
    app = poison_app.app.with_settings(**settings(tmp_path, "skip"))
    with caplog.at_level(logging.WARNING, logger="statestream.worker"):
        counters = run_in_process(app, records=len(items))
    assert counters.get("skipped") == 2
    assert "offset 1: DecodeError: the record's key could not be decoded" in caplog.text
    assert "offset 2: DecodeError: the record's value could not be decoded" in caplog.text
    _, totals, _ = read_state(tmp_path)
    assert totals == {"a": 1, "b": 4}
