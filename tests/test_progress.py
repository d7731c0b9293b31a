"""Restore progress a person can watch: the tracker's events, the log lines, the bar."""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from statestream import App, GlobalTable, Processor
from statestream.context import Context, Message
from statestream.listeners import BatchRestored, RestoreEnded, RestoreStarted
from statestream.log import open_transport
from statestream.tables.restore_events import RestoreTracker
from statestream.types import TopicPartition
from statestream.worker.globals import GlobalTablesThread
from statestream.worker.restore_log import RestoreLog, describe_progress, format_seconds
from tests.worker_thread import produce, settings

REPO_ROOT = Path(__file__).resolve().parents[1]
CHANGELOG = TopicPartition("app-values-changelog", 2)


class Events:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_restore_start(self, event: RestoreStarted) -> None:
        self.seen.append(event)

    def on_batch_restored(self, event: BatchRestored) -> None:
        self.seen.append(event)

    def on_restore_end(self, event: RestoreEnded) -> None:
        self.seen.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the tracker: one restore reported across the manager's two passes -------------------


def test_two_passes_are_one_restore_that_never_moves_back() -> None:
    events, clock = Events(), Clock()
    tracker = RestoreTracker(events, "values", CHANGELOG, clock)
    tracker.begin(0, 100, None)
    clock.now += 1
    tracker.batch(40, 40)
    tracker.reached(100)
    # The second pass re-reads from below a skipped record, up to the claim marker.
    tracker.begin(30, 101, None)
    tracker.batch(70, 40)
    tracker.batch(101, 31)
    tracker.end(95, 5, 0, completed=True)
    start, *batches, end = events.seen
    assert isinstance(start, RestoreStarted)
    assert (start.start, start.end) == (0, 100)
    assert all(isinstance(b, BatchRestored) for b in batches)
    assert [b.position for b in batches] == [40, 100, 100, 101]
    assert [b.end for b in batches] == [100, 100, 101, 101]
    assert batches[0].done == 40
    assert batches[0].remaining == 60
    assert batches[0].rate == pytest.approx(40.0)
    assert batches[0].eta == pytest.approx(1.5)
    assert isinstance(end, RestoreEnded)
    assert (end.position, end.applied, end.skipped, end.completed) == (101, 95, 5, True)
    tracker.end(0, 0, 0, completed=False)  # a second end is ignored
    assert len(events.seen) == 6


def test_nothing_to_replay_reports_nothing() -> None:
    events = Events()
    tracker = RestoreTracker(events, "values", CHANGELOG)
    tracker.begin(7, 7, None)
    tracker.begin(7, 8, None)  # the claim marker alone
    tracker.batch(8, 0)
    tracker.reached(8)
    tracker.end(0, 0, 0, completed=True)
    assert events.seen == []


def test_a_completed_restore_ends_with_a_batch_at_the_end() -> None:
    events = Events()
    tracker = RestoreTracker(events, "values", CHANGELOG)
    tracker.begin(10, 20, "rebuilt")
    tracker.batch(15, 5)  # the rest was compaction gaps and markers
    tracker.end(5, 0, 0, completed=True)
    start, first, last, end = events.seen
    assert start.cleared == "rebuilt"
    assert (first.position, last.position, last.end, end.position) == (15, 20, 20, 20)


def test_a_cancelled_restore_ends_where_it_got_to() -> None:
    events = Events()
    tracker = RestoreTracker(events, "values", CHANGELOG)
    tracker.begin(0, 50, None)
    tracker.batch(20, 20)
    tracker.end(20, 0, 0, completed=False)
    *_, end = events.seen
    assert (end.position, end.completed) == (20, False)


# -- the log lines ------------------------------------------------------------------------


def batch(position: int, elapsed: float, end: int = 1000) -> BatchRestored:
    return BatchRestored("values", 2, CHANGELOG, 0, position, end, 10, elapsed)


def test_log_lines_every_interval_per_table_partition(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    restore_log = RestoreLog(interval=3.0, clock=clock)
    restore_log.on_restore_start(RestoreStarted("values", 2, CHANGELOG, 0, 1000))
    with caplog.at_level(logging.INFO, logger="statestream.recovery"):
        for elapsed, position in ((1, 100), (2.5, 250), (3.5, 350), (4, 400), (6.6, 660)):
            clock.now = 100.0 + elapsed
            restore_log.on_batch_restored(batch(position, elapsed))
        restore_log.on_restore_end(
            RestoreEnded("values", 2, CHANGELOG, 0, 1000, 1000, 0, 0, True, 10)
        )
        clock.now += 10
        restore_log.on_batch_restored(batch(1000, 20))  # after the end: no line
    lines = [r for r in caplog.records if r.name == "statestream.recovery"]
    assert [r.getMessage() for r in lines] == [
        "restoring table 'values' partition 2: 350 of 1,000 offsets (35%), 100/s, ETA 6.5 s",
        "restoring table 'values' partition 2: 660 of 1,000 offsets (66%), 100/s, ETA 3.4 s",
    ]
    assert [(r.table, r.partition, r.topic) for r in lines] == [  # type: ignore[attr-defined]
        ("values", 2, CHANGELOG.topic)
    ] * 2


def test_progress_text() -> None:
    assert describe_progress(batch(0, 0.0)) == "0 of 1,000 offsets (0%), 0/s, ETA unknown"
    assert format_seconds(3.46) == "3.5 s"
    assert format_seconds(125) == "2 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"


# -- the bar: shown on a terminal, not otherwise ---------------------------------------


def _prepare(tmp: Path) -> dict[str, str]:
    produce(
        tmp,
        "progress-values-changelog",
        [(p, f"k{i}", i) for p in (0, 1) for i in range(40_000 if p == 0 else 5)],
        cleanup_policy="compact",
    )
    env = dict(os.environ)
    env.update(
        STATESTREAM_BROKER_URL=f"embedded://{tmp}/log",
        STATESTREAM_STORE_URL="memory://",
        STATESTREAM_DATA_DIR=str(tmp),
        STATESTREAM_PARTITIONS="2",
        PROGRESS_EVENTS=str(tmp / "events.jsonl"),
        COLUMNS="120",
        TERM="xterm",
    )
    return env


WORKER = [sys.executable, "-m", "statestream.cli", "worker", "tests.progress_app:app"]
READY = (b"partition 0 ready", b"partition 1 ready")


def _events(tmp: Path) -> list[dict[str, Any]]:
    lines = (tmp / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _check_events(tmp: Path) -> None:
    """The app's listener (added by the app module) heard the restore under the CLI."""
    events = [e for e in _events(tmp) if e["partition"] == 0]
    assert events[0] == {"event": "start", "partition": 0, "start": 0, "end": 40_000}
    assert events[-1] == {"event": "end", "partition": 0, "position": 40_001}
    positions = [e["position"] for e in events if e["event"] == "batch"]
    assert positions == sorted(positions)
    assert positions[-1] == 40_001


def _read_until(fd: int, wanted: tuple[bytes, ...], timeout: float) -> bytes:
    """Read ``fd`` until every ``wanted`` text was seen, or EOF, or ``timeout``."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(w in output for w in wanted):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        output += chunk
    return output


def test_bar_under_a_terminal(tmp_path: Path) -> None:
    env = _prepare(tmp_path)
    master, slave = pty.openpty()
    worker = subprocess.Popen(
        WORKER, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    try:
        output = _read_until(master, READY, 60)
        worker.send_signal(signal.SIGTERM)
        output += _read_until(master, (b"stopped",), 30)
        assert worker.wait(30) == 0, output.decode(errors="replace")
    finally:
        if worker.poll() is None:
            worker.kill()
        os.close(master)
    text = output.decode(errors="replace")
    assert all(w.decode() in text for w in READY), text
    assert "restoring values[0]" in text, text
    assert "━" in text  # the bar itself
    assert "\x1b[" in text  # drawn and removed with terminal control sequences
    _check_events(tmp_path)


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    env = _prepare(tmp_path)
    worker = subprocess.Popen(
        WORKER,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert worker.stderr is not None
        output = _read_until(worker.stderr.fileno(), READY, 60)
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=30)
        output += rest
        assert worker.returncode == 0, output.decode(errors="replace")
    finally:
        if worker.poll() is None:
            worker.kill()
    text = output.decode(errors="replace")
    assert all(w.decode() in text for w in READY), text
    assert "restoring values[" not in text
    assert "━" not in text
    assert "\x1b[" not in text
    _check_events(tmp_path)


# -- global tables log their first restore's progress too --------------------------------


class UsesRates(Processor):
    topics = ("orders",)
    rates: GlobalTable[str, float] = GlobalTable("rates")

    def process(self, message: Message, ctx: Context) -> None:
        pass


def test_a_global_table_restore_logs_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    produce(
        tmp_path,
        "progress-rates-changelog",
        [(p, f"c{i}", 1.5) for p in (0, 1) for i in range(3000)],
        cleanup_policy="compact",
    )
    app = App("progress", processors=[UsesRates], **settings(tmp_path))
    transport = open_transport(app.config.broker_url)
    reader = GlobalTablesThread(app, transport, batch_size=500, restore_log=RestoreLog(0.0))
    try:
        with caplog.at_level(logging.INFO, logger="statestream.recovery"):
            reader.start()
            assert reader.wait_ready(threading.Event())
    finally:
        reader.stop()
        transport.close()
    lines = [r for r in caplog.records if r.getMessage().startswith("restoring table 'rates'")]
    assert {r.partition for r in lines} == {0, 1}  # type: ignore[attr-defined]
    assert {r.topic for r in lines} == {"progress-rates-changelog"}  # type: ignore[attr-defined]
    last = [r.getMessage() for r in lines if r.partition == 0][-1]  # type: ignore[attr-defined]
    assert last.startswith("restoring table 'rates' partition 0: 3,000 of 3,000 offsets (100%)")
