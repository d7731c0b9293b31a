"""The listener API on a real worker: which events, in which order, on which thread."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from statestream import App, Processor, Table
from statestream.context import Context, Message
from statestream.listeners import (
    LISTENER_METHODS,
    BatchRestored,
    CommitDone,
    ListenerSet,
    PartitionsAssigned,
    PartitionsRevoked,
    RestoreEnded,
    RestoreStarted,
)
from statestream.types import TopicPartition
from tests.worker_thread import (
    POLL_THREAD,
    changelog_records,
    high_watermarks,
    produce,
    running,
    settings,
    wait_for,
    wait_processed,
)

SOURCE = "items"


class Keep(Processor):
    topics = (SOURCE,)
    values: Table[str, Any] = Table("values")

    def process(self, message: Message, ctx: Context) -> None:
        self.values[message.key] = message.value


class Recorder:
    """Keeps every event with the name of the thread that delivered it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str, Any]] = []

    def _add(self, method: str, event: Any) -> None:
        with self._lock:
            self.events.append((method, threading.current_thread().name, event))

    def on_assigned(self, event: PartitionsAssigned) -> None:
        self._add("on_assigned", event)

    def on_revoked(self, event: PartitionsRevoked) -> None:
        self._add("on_revoked", event)

    def on_restore_start(self, event: RestoreStarted) -> None:
        self._add("on_restore_start", event)

    def on_batch_restored(self, event: BatchRestored) -> None:
        self._add("on_batch_restored", event)

    def on_restore_end(self, event: RestoreEnded) -> None:
        self._add("on_restore_end", event)

    def on_commit(self, event: CommitDone) -> None:
        self._add("on_commit", event)

    def of(self, method: str, partition: int | None = None) -> list[tuple[str, Any]]:
        """``(thread, event)`` of ``method``, for ``partition`` if given (restore events)."""
        with self._lock:
            return [
                (thread, event)
                for name, thread, event in self.events
                if name == method and (partition is None or event.partition == partition)
            ]


class Faulty:
    """Raises from every listener method."""

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, event: object) -> None:
        self.calls += 1
        raise RuntimeError(f"listener bug on {type(event).__name__}")

    on_assigned = on_revoked = on_restore_start = on_batch_restored = _fail
    on_restore_end = on_commit = _fail


def ready(worker: Any) -> bool:
    status = worker.status()
    return bool(status.partitions == status.ready == [0, 1])


def fill_changelog(tmp: Path, app_id: str, sizes: dict[int, int]) -> None:
    produce(
        tmp,
        f"{app_id}-values-changelog",
        [(p, f"old-{i}", i) for p, n in sizes.items() for i in range(n)],
        cleanup_policy="compact",
    )


def test_restore_commit_and_rebalance_events(tmp_path: Path) -> None:
    fill_changelog(tmp_path, "listening", {0: 30_000, 1: 2})
    items = [(0, f"new-{i}", i) for i in range(3)] + [(1, f"new-{i}", i) for i in range(2)]
    produce(tmp_path, SOURCE, items)
    recorder = Recorder()
    app = App("listening", processors=[Keep], listeners=[recorder], **settings(tmp_path))
    with running(app) as worker:
        wait_for(lambda: ready(worker), 60, "both partitions restored")
        wait_processed(worker, len(items))
    highs = high_watermarks(tmp_path, "listening-values-changelog")

    for partition, size in ((0, 30_000), (1, 2)):
        (thread, start), *more = recorder.of("on_restore_start", partition)
        assert not more
        assert thread == f"statestream-partition-{partition}"
        assert (start.table, start.start, start.end) == ("values", 0, size)
        assert start.changelog == TopicPartition("listening-values-changelog", partition)
        batches = [e for t, e in recorder.of("on_batch_restored", partition)]
        assert {t for t, _ in recorder.of("on_batch_restored", partition)} == {thread}
        positions = [b.position for b in batches]
        assert positions == sorted(positions)
        assert [b.done for b in batches] == [p - 0 for p in positions]
        # The restore ends at the high watermark: every record, and the
        # claim marker written after them.
        assert batches[-1].position == batches[-1].end == size + 1
        assert batches[-1].remaining == 0
        (end_thread, end), *more = recorder.of("on_restore_end", partition)
        assert not more
        assert end_thread == thread
        assert (end.completed, end.applied, end.position) == (True, size, size + 1)
        # Start, batches and end in that order.
        names = [n for n, _, e in recorder.events if getattr(e, "partition", None) == partition]
        assert names == [
            "on_restore_start",
            *["on_batch_restored"] * len(batches),
            "on_restore_end",
        ]
    assert len(recorder.of("on_batch_restored", 0)) >= 3  # batches of at most 10,000

    assigned = recorder.of("on_assigned")
    assert {t for t, _ in assigned} == {POLL_THREAD}
    assert sorted(p for _, e in assigned for p in e.partitions) == [0, 1]
    revoked = recorder.of("on_revoked")
    assert [(t, e.partitions, e.lost) for t, e in revoked] == [(POLL_THREAD, (0, 1), False)]

    commits = [e for _, e in recorder.of("on_commit")]
    assert {t for t, _ in recorder.of("on_commit")} <= {
        POLL_THREAD,
        "statestream-partition-0",
        "statestream-partition-1",
    }
    last: dict[TopicPartition, int] = {}
    for commit in commits:
        last.update(commit.offsets)
        assert commit.seconds >= 0
        assert set(commit.partitions) == {tp.partition for tp in commit.offsets}
    assert last == {TopicPartition(SOURCE, 0): 3, TopicPartition(SOURCE, 1): 2}
    written: dict[int, int] = {0: 0, 1: 0}
    for commit in commits:
        for (table, partition), count in commit.changelog_records.items():
            assert table == "values"
            written[partition] += count
    on_log = changelog_records(tmp_path, "listening-values-changelog")
    assert written == {0: on_log[0] - 30_000, 1: on_log[1] - 2} == {0: 3, 1: 2}
    assert highs == {0: 30_001 + 3, 1: 3 + 2}


def test_a_raising_listener_does_not_stop_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill_changelog(tmp_path, "faulty", {0: 25_000, 1: 10})
    items = [(i % 2, f"k{i}", i) for i in range(200)]
    produce(tmp_path, SOURCE, items)
    faulty, recorder = Faulty(), Recorder()
    app = App("faulty", processors=[Keep], listeners=[faulty, recorder], **settings(tmp_path))
    with caplog.at_level(logging.ERROR, logger="statestream.listeners"), running(app) as worker:
        wait_processed(worker, len(items))
    # The worker ran through (running() checks run() returned 0) and the
    # listener after the faulty one heard of everything.
    assert faulty.calls >= 6
    assert len(recorder.of("on_batch_restored", 0)) >= 3
    assert recorder.of("on_commit")
    assert recorder.of("on_revoked")
    failures = [r for r in caplog.records if r.name == "statestream.listeners"]
    methods = {m for r in failures for m in LISTENER_METHODS if f"Faulty.{m} " in r.getMessage()}
    assert methods == set(LISTENER_METHODS)
    # One line per method (the first failure, with its traceback), not one per call.
    assert len(failures) == len(LISTENER_METHODS)
    assert all(r.exc_info is not None for r in failures)


def test_listeners_follow_the_app_through_settings() -> None:
    first, second = Recorder(), object()
    app = App("copied", processors=[Keep], listeners=[first])
    app.add_listener(second)
    copy = app.with_settings(commit_interval=3.0)
    assert copy.listeners == (first, second)
    assert copy.config.commit_interval == 3.0


def test_listener_set_calls_only_the_methods_a_listener_has() -> None:
    class Partial:
        on_commit = "not callable"

        def __init__(self) -> None:
            self.assigned: list[PartitionsAssigned] = []

        def on_assigned(self, event: PartitionsAssigned) -> None:
            self.assigned.append(event)

    partial = Partial()
    listeners = ListenerSet([partial, object()])
    event = PartitionsAssigned((1, 2), 7)
    listeners.on_assigned(event)
    listeners.on_commit(CommitDone((1,), {}))
    assert partial.assigned == [event]
    assert listeners.wants("on_assigned")
    assert not listeners.wants("on_commit")
    assert not ListenerSet([object()])
