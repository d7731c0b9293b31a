"""The garbage collector's pace while a worker runs (statestream.worker.collector)."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statestream import App, Processor, Table
from statestream.config import AppConfig
from statestream.errors import ConfigurationError
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.tables.commit import CommitCoordinator
from statestream.worker import Worker, WorkerStatus
from statestream.worker.collector import DEFAULT_GC_THRESHOLD, CollectorPace


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """The interpreter's thresholds, put back after the test whatever it did."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


def test_the_pace_holds_inside_and_the_previous_one_comes_back(
    thresholds: tuple[int, int, int],
) -> None:
    with CollectorPace(25_000):
        assert gc.get_threshold() == (25_000, 10, 10)
    assert gc.get_threshold() == thresholds
    with pytest.raises(RuntimeError), CollectorPace(25_000):
        raise RuntimeError("the worker failed")
    assert gc.get_threshold() == thresholds


def test_zero_leaves_the_interpreter_alone(thresholds: tuple[int, int, int]) -> None:
    with CollectorPace(0):
        gc.set_threshold(1234, 5, 6)  # the application's own choice, kept
    assert gc.get_threshold() == (1234, 5, 6)


def test_a_pause_holds_the_collector_off_until_the_last_one_ends() -> None:
    pace = CollectorPace(25_000)
    assert gc.isenabled()
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with pace.paused():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    try:
        with pace.paused():
            assert not gc.isenabled()
            thread.start()
            assert entered.wait(10)
        assert not gc.isenabled(), "the other thread's pause still holds"
    finally:
        leave.set()
        thread.join(10)
    assert gc.isenabled()
    with pytest.raises(RuntimeError), pace.paused():
        raise RuntimeError("the commit failed")
    assert gc.isenabled()


def test_a_pause_leaves_a_disabled_collector_disabled_and_zero_does_nothing() -> None:
    gc.disable()
    try:
        with CollectorPace(25_000).paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the application's choice, kept"
    finally:
        gc.enable()
    with CollectorPace(0).paused():
        assert gc.isenabled()


def test_the_setting_comes_from_the_app_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AppConfig.resolve("gc").gc_threshold == DEFAULT_GC_THRESHOLD
    assert AppConfig.resolve("gc", gc_threshold=0).gc_threshold == 0
    monkeypatch.setenv("STATESTREAM_GC_THRESHOLD", "7000")
    assert AppConfig.resolve("gc").gc_threshold == 7000
    with pytest.raises(ConfigurationError, match="gc_threshold must be >= 0"):
        AppConfig.resolve("gc", gc_threshold=-1)
    monkeypatch.setenv("STATESTREAM_GC_THRESHOLD", "often")
    with pytest.raises(ConfigurationError, match="'gc_threshold' must be an integer"):
        AppConfig.resolve("gc")


def test_a_worker_runs_at_its_pace_and_restores_the_default(
    tmp_path: Path, thresholds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []

    class Count(Processor):
        topics = ("gc-words",)
        counts = Table("counts", default=int)

        def process(self, message: Any, ctx: Any) -> None:
            seen.append(gc.get_threshold())
            self.counts[message.value] += 1

    url = f"embedded://{tmp_path}/log"
    transport = open_transport(url)
    admin = transport.admin()
    admin.ensure_topic(TopicSpec("gc-words", 1))
    admin.close()
    producer = transport.producer()
    for word in ("a", "b", "a"):
        producer.send("gc-words", json.dumps(word).encode(), json.dumps(word).encode())
    producer.flush()
    producer.close()
    app = App(
        "gc-app",
        [Count],
        broker_url=url,
        store_url=f"leveldb://{tmp_path}/stores",
        data_dir=str(tmp_path),
        gc_threshold=30_000,
        commit_interval=0.05,
    )

    committing: list[bool] = []  # whether the collector ran, at each commit
    deadline = time.monotonic() + 30

    def on_status(status: WorkerStatus) -> None:
        rounds = False in committing  # a commit round ran (commit_interval 0.05 s)
        if status.counters.get("processed", 0) >= 3 and (rounds or time.monotonic() > deadline):
            worker.request_stop()

    commit = CommitCoordinator.commit

    def watched(self: CommitCoordinator, *args: Any, **kwargs: Any) -> Any:
        committing.append(gc.isenabled())
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(CommitCoordinator, "commit", watched)
    worker = Worker(app, transport=transport, on_status=on_status, status_interval=0.05)
    assert worker.run() == 0
    transport.close()
    assert seen == [(30_000, 10, 10)] * 3
    assert gc.get_threshold() == thresholds
    # The poll thread's commit rounds run with the collector held off; a
    # partition's own last commit (it stops) runs as any code does.
    assert committing, "no commit ran"
    assert False in committing
    assert gc.isenabled()
