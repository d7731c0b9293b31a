"""Commit rounds: every parked partition is committed by one coordinator call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from statestream import App, Processor, Table
from statestream.context import Context, Message
from statestream.errors import CommitError, DamagedStoresError, OffsetRecordChangedError
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.serde import JsonCodec
from statestream.tables.commit import CommitRequest
from statestream.types import TopicPartition
from statestream.worker import Worker, WorkerStatus
from statestream.worker.rounds import CommitTicket, TicketState, run_round


class Log:
    """Records the order of what tasks and the poll thread did."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()

    def add(self, event: str) -> None:
        with self.lock:
            self.events.append(event)


def task(ticket: CommitTicket, log: Log, delay: float = 0.0) -> threading.Thread:
    """A partition thread: parks after ``delay``, waits for the round, takes its shards back."""

    def run() -> None:
        time.sleep(delay)
        request = CommitRequest(ticket.partition, {TopicPartition("src", ticket.partition): 10})
        if not ticket.park(request):
            log.add(f"p{ticket.partition} left out")
            return
        log.add(f"p{ticket.partition} parked")
        try:
            ticket.wait_done()
        except BaseException:  # the round's error, whatever it is
            log.add(f"p{ticket.partition} round failed")
            return
        log.add(f"p{ticket.partition} resumed")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def drive(
    tickets: list[CommitTicket],
    log: Log,
    *,
    take_timeout: float = 5.0,
    alive: Callable[[int], bool] = lambda p: True,
    error: BaseException | None = None,
) -> list[CommitTicket]:
    def commit(requests: Sequence[CommitRequest]) -> None:
        log.add(f"commit {sorted(r.partition for r in requests)}")
        if error is not None:
            raise error

    return run_round(
        tickets, alive=alive, commit=commit, idle=lambda: None, take_timeout=take_timeout
    )


def test_every_parked_partition_is_committed_in_one_coordinator_call() -> None:
    log = Log()
    tickets = [CommitTicket(p) for p in range(3)]
    threads = [task(t, log, delay=0.01 * t.partition) for t in tickets]
    done = drive(tickets, log)
    for thread in threads:
        thread.join(5)
    assert done == tickets
    commits = [e for e in log.events if e.startswith("commit")]
    assert commits == ["commit [0, 1, 2]"]
    commit_at = log.events.index(commits[0])
    for p in range(3):
        assert log.events.index(f"p{p} parked") < commit_at < log.events.index(f"p{p} resumed")
    assert all(t.state is TicketState.DONE for t in tickets)


def test_a_partition_that_does_not_park_in_time_is_left_out() -> None:
    log = Log()
    quick, slow = CommitTicket(0), CommitTicket(1)
    threads = [task(quick, log), task(slow, log, delay=0.5)]
    done = drive([quick, slow], log, take_timeout=0.1)
    for thread in threads:
        thread.join(5)
    assert done == [quick]
    assert "commit [0]" in log.events
    assert "p1 left out" in log.events
    assert slow.state is TicketState.CANCELLED


def test_a_dead_partition_thread_is_left_out_at_once() -> None:
    log = Log()
    ticket = CommitTicket(0)
    started = time.monotonic()
    done = drive([ticket], log, take_timeout=10, alive=lambda p: False)
    assert done == []
    assert time.monotonic() - started < 1
    assert log.events == []
    assert not ticket.park(CommitRequest(0, {}))


def test_a_failed_commit_fails_every_partition_of_the_round_and_is_raised() -> None:
    log = Log()
    tickets = [CommitTicket(p) for p in range(2)]
    threads = [task(t, log) for t in tickets]
    with pytest.raises(CommitError):
        drive(tickets, log, error=CommitError("broker said no"))
    for thread in threads:
        thread.join(5)
    assert sorted(e for e in log.events if "round failed" in e) == [
        "p0 round failed",
        "p1 round failed",
    ]
    assert all(isinstance(t.error, CommitError) for t in tickets)


def test_a_damaged_partition_fails_alone_and_the_others_committed() -> None:
    log = Log()
    tickets = [CommitTicket(p) for p in range(3)]
    threads = [task(t, log) for t in tickets]
    damage = OffsetRecordChangedError("the offset record of t/1 is gone")
    committed = drive(tickets, log, error=DamagedStoresError("step 4", {1: damage}))
    for thread in threads:
        thread.join(5)
    assert [t.partition for t in committed] == [0, 2]
    assert tickets[1].error is damage
    assert tickets[0].error is None
    assert tickets[2].error is None
    assert sorted(e for e in log.events if "resumed" in e or "failed" in e) == [
        "p0 resumed",
        "p1 round failed",
        "p2 resumed",
    ]


def test_declining_leaves_the_round_without_waiting() -> None:
    log = Log()
    ticket = CommitTicket(0)
    ticket.decline()
    assert drive([ticket], log) == []
    assert log.events == []
    assert not ticket.park(CommitRequest(0, {}))


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1)])
def test_interrupts_still_release_the_tasks_before_propagating(error: BaseException) -> None:
    log = Log()
    ticket = CommitTicket(0)
    thread = task(ticket, log)
    with pytest.raises(type(error)):
        drive([ticket], log, error=error)
    thread.join(5)
    assert not thread.is_alive()
    assert ticket.error is error


# -- a worker commits its partitions in rounds ------------------------------------


class _RecordingMember:
    """A group member that records every offset commit (delegates the rest)."""

    def __init__(self, member: Any, commits: list[dict[TopicPartition, int]]) -> None:
        self._member = member
        self._commits = commits

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._commits.append(dict(offsets))
        self._member.commit(offsets)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._member, name)


class _RecordingTransport:
    def __init__(self, transport: Any, commits: list[dict[TopicPartition, int]]) -> None:
        self._transport = transport
        self._commits = commits

    def group_member(self, *args: Any, **kwargs: Any) -> Any:
        return _RecordingMember(self._transport.group_member(*args, **kwargs), self._commits)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _run_counting_worker(
    tmp_path: Path,
    process: Callable[[Table[str, int], Message], None],
    *,
    partitions: int,
    records: int,
    commit_interval: float,
) -> tuple[list[dict[TopicPartition, int]], list[int]]:
    """Count ``records`` keys on the embedded log with a worker whose group
    member records its offset commits; stop once all are processed.

    Returns every offset commit, and how many there were at each status
    report while records were still being processed.
    """
    source = "events"
    counts: Table[str, int] = Table("counts", default=int)

    class Count(Processor):
        topics = (source,)
        table = counts

        def process(self, message: Message, ctx: Context) -> None:
            process(self.table, message)

    url = f"embedded://{tmp_path}/log"
    app = App(
        "rounds", [Count], broker_url=url, store_url=f"leveldb://{tmp_path}/s",
        commit_interval=commit_interval,
    )  # fmt: skip
    commits: list[dict[TopicPartition, int]] = []
    while_running: list[int] = []
    transport = open_transport(url)
    try:
        transport.admin().create_topic(TopicSpec(source, partitions))
        producer = transport.producer()
        codec = JsonCodec()
        for i in range(records):
            producer.send(source, None, codec.encode(f"k{i % 7}"), partition=i % partitions)
        producer.flush()
        producer.close()

        def on_status(status: WorkerStatus) -> None:
            if status.counters.get("processed", 0) < records:
                while_running.append(len(commits))
            else:
                worker.request_stop()

        worker = Worker(
            app, on_status=on_status, status_interval=0.05,
            transport=_RecordingTransport(transport, commits),  # type: ignore[arg-type]
        )  # fmt: skip
        guard = threading.Timer(60, worker.request_stop)
        guard.start()
        try:
            worker.run()
        finally:
            guard.cancel()
        assert worker.counters()["processed"] == records
    finally:
        transport.close()
    return commits, while_running


def test_a_worker_commits_all_its_partitions_with_one_offset_commit(tmp_path: Path) -> None:
    def count(table: Table[str, int], message: Message) -> None:
        table[message.value] += 1
        if message.offset % 100 == 0:
            time.sleep(0.005)  # long enough for rounds to happen mid-stream

    partitions, records = 4, 20_000
    commits, _ = _run_counting_worker(
        tmp_path, count, partitions=partitions, records=records, commit_interval=0.05
    )
    # Rounds: offset commits that cover several partitions at once, and the
    # last commit of every partition covers all of its records.
    assert any(len(offsets) == partitions for offsets in commits), commits
    last: dict[TopicPartition, int] = {}
    for offsets in commits:
        last.update(offsets)
    assert last == {TopicPartition("events", p): records // partitions for p in range(partitions)}


def test_a_partition_left_out_of_rounds_still_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every round goes on without the partition (as when each of its records
    # outlasts the round's wait): it must then commit on its own rather than
    # wait until it stops.
    def too_late(self: CommitTicket, request: CommitRequest) -> bool:
        self.cancel()
        return False

    def slow_count(table: Table[str, int], message: Message) -> None:
        table[message.value] += 1
        time.sleep(0.02)

    monkeypatch.setattr(CommitTicket, "park", too_late)
    records = 40
    commits, while_running = _run_counting_worker(
        tmp_path, slow_count, partitions=1, records=records, commit_interval=0.1
    )
    assert while_running
    assert max(while_running) >= 2, while_running
    assert commits[-1] == {TopicPartition("events", 0): records}
