"""Fatal errors, lost partitions and stop requests: the worker stops promptly and
commits nothing it should not."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from statestream import App, Processor, Table
from statestream.context import Context, Message
from statestream.errors import CommitError, ConfigurationError, GroupError, TopicMismatchError
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.serde import JsonCodec
from statestream.types import TopicPartition
from statestream.worker import Worker, WorkerStatus
from tests.worker.conftest import PARTITIONS as CLUSTER_PARTITIONS
from tests.worker.conftest import Cluster
from tests.worker.helpers import produce, wait_for

SOURCE = "events"
RECORDS = 3000
PARTITIONS = 2


class _Member:
    """A group member that records commits and can fail or lose its partitions on cue."""

    def __init__(self, member: Any, test: _Script) -> None:
        self._member = member
        self._test = test

    def subscribe(self, topics: Sequence[str], listener: Any = None) -> None:
        self._test.listener = listener
        self._member.subscribe(topics, listener)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._test.on_commit(dict(offsets))
        self._member.commit(offsets)

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> Any:
        self._test.on_poll(self._member)
        return self._member.poll(timeout, max_records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._member, name)


class _Transport:
    def __init__(self, transport: Any, test: _Script) -> None:
        self._transport = transport
        self._test = test

    def group_member(self, *args: Any, **kwargs: Any) -> Any:
        return _Member(self._transport.group_member(*args, **kwargs), self._test)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Script:
    """What the wrapped member does; subclassed per test."""

    listener: Any = None

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    def on_commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    def on_poll(self, member: Any) -> None:
        pass

    def all_committed(self) -> bool:
        """Whether every record of the source has been committed."""
        last: dict[TopicPartition, int] = {}
        for offsets in self.commits:
            last.update(offsets)
        ends = {TopicPartition(SOURCE, p): RECORDS // PARTITIONS for p in range(PARTITIONS)}
        return last == ends


counts: Table[str, int] = Table("counts", default=int)
#: Seconds to sleep every 100 records (so that commit rounds happen mid-stream).
PAUSE = {"seconds": 0.0}


class Count(Processor):
    topics = (SOURCE,)
    table = counts

    def process(self, message: Message, ctx: Context) -> None:
        self.table[message.value] += 1
        if PAUSE["seconds"] and message.offset % 100 == 0:
            time.sleep(PAUSE["seconds"])


def _setup(tmp_path: Path, commit_interval: float = 0.05) -> tuple[App, Any]:
    url = f"embedded://{tmp_path}/log"
    app = App(
        "shutdown",
        [Count],
        broker_url=url,
        store_url=f"leveldb://{tmp_path}/s",
        commit_interval=commit_interval,
    )
    transport = open_transport(url)
    transport.admin().create_topic(TopicSpec(SOURCE, PARTITIONS))
    producer = transport.producer()
    codec = JsonCodec()
    for i in range(RECORDS):
        producer.send(SOURCE, None, codec.encode(f"k{i % 5}"), partition=i % PARTITIONS)
    producer.close()
    return app, transport


def _run(app: App, transport: Any, script: _Script, stop_when_done: bool = True) -> Worker:
    def on_status(status: WorkerStatus) -> None:
        if stop_when_done and script.all_committed():
            worker.request_stop()

    worker = Worker(
        app, on_status=on_status, status_interval=0.02, transport=_Transport(transport, script)
    )
    guard = threading.Timer(60, worker.request_stop)  # a hung worker fails the test
    guard.start()
    try:
        worker.run()
    finally:
        fired = not guard.is_alive()
        guard.cancel()
    assert not fired, "the worker did not stop on its own"
    return worker


def _counts(transport: Any, tmp_path: Path) -> dict[str, int]:
    """Counts rebuilt from the changelog alone, as of the committed offsets."""
    from tests.worker.helpers import committed_offsets, read_tables

    committed = committed_offsets(transport, "shutdown", SOURCE, PARTITIONS)
    rebuild = f"leveldb://{tmp_path}/rebuild"
    tables = read_tables(transport, "shutdown", [counts], rebuild, SOURCE, committed)
    total: dict[str, int] = {}
    for partition_tables in tables.values():
        for key, n in partition_tables["counts"].items():
            total[key] = total.get(key, 0) + n
    return total


def test_a_rejected_offset_commit_stops_the_worker_at_once_and_commits_nothing_more(
    tmp_path: Path,
) -> None:
    class RejectFirst(_Script):
        def on_commit(self, offsets: dict[TopicPartition, int]) -> None:
            super().on_commit(offsets)
            if len(self.commits) == 1:
                raise GroupError("the group has rebalanced (injected)")

    app, transport = _setup(tmp_path)
    script = RejectFirst()
    try:
        with pytest.raises(CommitError, match="step 3"):
            _run(app, transport, script, stop_when_done=False)
    finally:
        transport.close()
    assert len(script.commits) == 1  # nothing after the rejected one (not even at shutdown)


def test_lost_partitions_are_dropped_without_flush_or_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PAUSE, "seconds", 0.05)

    class LoseOnce(_Script):
        lost_at_commit: int | None = None
        commits_after_lost = -1
        last_commit = 0.0

        def on_commit(self, offsets: dict[TopicPartition, int]) -> None:
            super().on_commit(offsets)
            self.last_commit = time.monotonic()

        def on_poll(self, member: Any) -> None:
            # Well after a round (commit interval 0.2 s): there is uncommitted work.
            since = time.monotonic() - self.last_commit
            if self.lost_at_commit is None and self.commits and since > 0.08:
                assignment = sorted(member.assignment())
                self.lost_at_commit = len(self.commits)
                self.listener.on_lost(assignment)
                self.commits_after_lost = len(self.commits)
                self.listener.on_assigned(assignment)

    app, transport = _setup(tmp_path, commit_interval=0.2)
    script = LoseOnce()
    try:
        worker = _run(app, transport, script)
        assert script.lost_at_commit is not None
        assert script.commits_after_lost == script.lost_at_commit  # dropped, not committed
        assert worker.counters()["processed"] >= RECORDS
        expected = {f"k{i}": RECORDS // 5 for i in range(5)}
        assert _counts(transport, tmp_path) == expected
    finally:
        transport.close()


def test_a_bad_store_option_is_refused_before_topics_are_created_or_the_group_joined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"embedded://{tmp_path}/log"
    app = App("badstore", [Count], broker_url=url, store_url=f"leveldb://{tmp_path}/s?sinc=1")
    with (
        caplog.at_level(logging.INFO, logger="statestream"),
        pytest.raises(ConfigurationError, match="sinc"),
    ):
        Worker(app).run()
    assert "stopped" not in caplog.text
    transport = open_transport(url)
    try:
        assert transport.admin().list_topics() == set()
    finally:
        transport.close()


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_during_a_group_join_exits_0_within_seconds(kafka_cluster: Cluster) -> None:
    """A member joining a group waits until every member has rejoined; a stop
    request must not wait with it."""
    cluster = kafka_cluster
    with cluster.log() as transport:
        produce(transport, cluster.source, [(None, "a b c")] * 40, partitions=CLUSTER_PARTITIONS)
    # The first worker spends 30 s on every record: when the second one joins,
    # it finishes its current record before it gives up its partitions, and
    # the join waits for it (it keeps heartbeating meanwhile).
    first = cluster.worker("first", delay=30)
    wait_for(first.partitions, 60, "the first worker's assignment")
    time.sleep(1)  # into its first record
    second = cluster.worker("second")
    wait_for(lambda: "started" in second.log(), 60, "the second worker to start")
    time.sleep(3)  # into its join
    assert not second.partitions(), second.log()
    second.send(signal.SIGTERM)
    assert second.wait(10) == 0, second.log()
    assert "statestream: error" not in second.log()
    first.kill()


def test_a_source_topic_whose_partition_count_changes_stops_the_worker(tmp_path: Path) -> None:
    """Tables are sharded by source partition: a resized source topic must stop
    the worker with a clear error, not run on state routed the old way."""

    class _ResizingAdmin:
        def __init__(self, admin: Any, transport: _ResizingTransport) -> None:
            self._admin = admin
            self._transport = transport

        def describe_topic(self, name: str) -> Any:
            described = self._admin.describe_topic(name)
            if described is not None and name == SOURCE and self._transport.resized:
                return dataclasses.replace(described, partitions=described.partitions + 1)
            return described

        def __getattr__(self, name: str) -> Any:
            return getattr(self._admin, name)

    class _ResizingTransport(_Transport):
        resized = False

        def admin(self) -> Any:
            return _ResizingAdmin(self._transport.admin(), self)

    app, transport = _setup(tmp_path)
    script = _Script()
    wrapped = _ResizingTransport(transport, script)
    worker = Worker(app, transport=wrapped, topic_check_interval=0.05)  # type: ignore[arg-type]

    def resize_once_committed(status: WorkerStatus) -> None:
        if script.all_committed():
            wrapped.resized = True

    worker.on_status = resize_once_committed
    worker.status_interval = 0.02
    guard = threading.Timer(60, worker.request_stop)
    guard.start()
    try:
        with pytest.raises(
            TopicMismatchError, match="now has 3 partitions; the worker started with 2"
        ):
            worker.run()
    finally:
        guard.cancel()
        transport.close()


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_partitions_added_to_a_source_topic_stop_the_worker_within_seconds(
    kafka_cluster: Cluster,
) -> None:
    from kafka.admin import KafkaAdminClient, NewPartitions

    cluster = kafka_cluster
    with cluster.log() as transport:
        produce(transport, cluster.source, [(None, "a b c")] * 100, partitions=CLUSTER_PARTITIONS)
    worker = cluster.worker("w")
    wait_for(lambda: len(worker.partitions()) == CLUSTER_PARTITIONS, 60, "the assignment")
    bootstrap = cluster.broker_url.removeprefix("kafka://")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_partitions({cluster.source: NewPartitions(total_count=CLUSTER_PARTITIONS + 2)})
    finally:
        admin.close()
    # The worker checks every 10 s; the group client alone would take 300 s.
    assert worker.wait(40) == 1, worker.log()
    assert f"now has {CLUSTER_PARTITIONS + 2} partitions" in worker.log()
