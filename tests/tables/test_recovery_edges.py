"""One test per edge case of recovery (see ``statestream/tables/recovery.py``).

Each would hang (the restore loop never reaching the high watermark) or
leave wrong state without its handling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from statestream.errors import RestoreError
from statestream.log import Transport, open_transport
from statestream.log.base import Fetcher, TopicSpec
from statestream.stores.base import Store
from statestream.stores.registry import open_store
from statestream.tables import RestoreProgress, Table, restore
from statestream.tables.headers import source_headers
from statestream.types import Record, TopicPartition
from tests.tables.helpers import SOURCE, Node, crash_commit

CHANGELOG = TopicPartition("cl", 0)
ALL_COMMITTED = {SOURCE: 1_000_000}


def make_topic(transport: Transport, name: str = "cl", **spec: object) -> None:
    admin = transport.admin()
    try:
        admin.create_topic(TopicSpec(name, 1, **spec))  # type: ignore[arg-type]
    finally:
        admin.close()


def produce(
    transport: Transport,
    items: Iterable[tuple[bytes, bytes | None]],
    topic: str = "cl",
    source_start: int = 0,
    timestamp: int | None = None,
) -> None:
    producer = transport.producer()
    try:
        for i, (key, value) in enumerate(items):
            producer.send(
                topic,
                key,
                value,
                partition=0,
                headers=source_headers(SOURCE, source_start + i),
                timestamp=timestamp,
            )
        producer.flush()
    finally:
        producer.close()


def contents(store: Store) -> dict[bytes, bytes]:
    return dict(store.iterate(None, None, None, False))


@pytest.fixture
def store(tmp_path: Path) -> Iterable[Store]:
    opened = open_store(f"leveldb://{tmp_path}/stores", "t", 0)
    yield opened
    opened.close()


def run_restore(transport: Transport, store: Store, **options: object) -> object:
    fetcher = transport.fetcher(isolation_level="read_committed", reset="earliest")
    try:
        options.setdefault("stall_timeout", 10.0)
        options.setdefault("poll_timeout", 0.05)
        return restore(store, fetcher, CHANGELOG, ALL_COMMITTED, **options)  # type: ignore[arg-type]
    finally:
        fetcher.close()


# -- empty changelog ---------------------------------------------------------------


def test_empty_changelog_restores_nothing_and_ends(embedded: Transport, store: Store) -> None:
    make_topic(embedded, cleanup_policy="compact")
    outcome = run_restore(embedded, store, stall_timeout=2.0)
    assert outcome.completed
    assert outcome.applied == 0
    assert outcome.cleared is None
    assert store.count() == 0
    assert store.offset() is None


def test_changelog_emptied_by_retention_keeps_an_up_to_date_store(
    embedded: Transport, store: Store
) -> None:
    make_topic(embedded, cleanup_policy="delete", retention_ms=1000)
    produce(embedded, [(b"a", b"1"), (b"b", b"2")], timestamp=1_000)
    run_restore(embedded, store)
    assert store.offset() == 1
    embedded.enforce_retention(now_ms=10_000_000)  # type: ignore[attr-defined]
    fetcher = embedded.fetcher()
    assert fetcher.watermarks(CHANGELOG) == (2, 2)
    fetcher.close()
    outcome = run_restore(embedded, store, stall_timeout=2.0)
    assert outcome.completed
    assert outcome.cleared is None
    assert contents(store) == {b"a": b"1", b"b": b"2"}


def test_empty_changelog_through_the_manager(embedded: Transport, tmp_path: Path) -> None:
    node = Node(embedded, tmp_path / "stores", lambda: [Table("t")])
    started = time.monotonic()
    manager = node.start({SOURCE: None}, stall_timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert len(node.table("t")) == 0
    manager.close()


# -- compaction gaps -----------------------------------------------------------------


def test_compaction_gaps_including_a_trailing_gap(embedded: Transport, store: Store) -> None:
    make_topic(embedded, cleanup_policy="compact", config={"delete.retention.ms": "0"})
    items: list[tuple[bytes, bytes | None]] = []
    for round_ in range(10):
        items += [(f"k{i}".encode(), f"{round_}".encode()) for i in range(5)]
    # The last records are tombstones: compaction removes them (and what they
    # delete), so the partition ends in a gap no record covers.
    items += [(b"k3", None), (b"k4", None)]
    produce(embedded, items)
    removed = embedded.compact()  # type: ignore[attr-defined]
    assert removed > 0
    fetcher = embedded.fetcher(reset="earliest")
    fetcher.assign([CHANGELOG])
    low, high = fetcher.watermarks(CHANGELOG)
    fetcher.close()
    assert (low, high) == (0, len(items))
    started = time.monotonic()
    outcome = run_restore(embedded, store, stall_timeout=3.0, batch_size=2)
    assert time.monotonic() - started < 3.0
    assert outcome.completed  # type: ignore[attr-defined]
    assert contents(store) == {b"k0": b"9", b"k1": b"9", b"k2": b"9"}
    assert store.offset() == high - 1
    # A second restore has nothing to do.
    again = run_restore(embedded, store, stall_timeout=2.0)
    assert again.applied == 0
    assert again.cleared is None


def test_compaction_must_not_lose_a_committed_value_superseded_by_an_uncommitted_one(
    embedded: Transport, tmp_path: Path
) -> None:
    """Crash after step 2, restore, compaction, full restore: the committed value survives.

    The uncommitted record (source offset >= committed) is skipped by the
    restore, but it is the latest record of its key, so compaction would keep it
    and drop the committed one. The changelog's min.compaction.lag.ms keeps the
    committed record until the restore rewrites it after the skipped one.
    """
    node = Node(embedded, tmp_path / "stores", lambda: [Table("t")])
    manager = node.start({SOURCE: None}, compaction_lag_ms=1000)
    table = node.table("t")
    manager.begin_record(0, SOURCE, 0)
    table["a"] = "committed"
    committed: dict[str, int | None] = {SOURCE: None}
    manager.commit(0, lambda: committed.update({SOURCE: 1}))
    manager.begin_record(0, SOURCE, 1)
    table["a"] = "uncommitted"
    crash_commit(manager, 0, after_step=2)
    node.crash(wipe=True)
    embedded.compact()  # type: ignore[attr-defined]  # the lag protects the committed record
    node.start(committed)
    assert dict(node.table("t").items()) == {"a": "committed"}
    node.crash(wipe=True)
    time.sleep(1.2)  # past the lag: now compaction may drop superseded records
    embedded.compact()  # type: ignore[attr-defined]
    node.start(committed)
    assert dict(node.table("t").items()) == {"a": "committed"}
    node.crash()


# -- store offset below the low watermark ----------------------------------------------


def test_store_offset_below_low_watermark_clears_and_rebuilds(
    embedded: Transport, store: Store
) -> None:
    make_topic(embedded, cleanup_policy="delete", retention_ms=1000)
    produce(embedded, [(f"old{i}".encode(), b"x") for i in range(5)], timestamp=1_000)
    run_restore(embedded, store)
    assert store.offset() == 4
    # More history the store never sees, then retention removes everything old.
    produce(embedded, [(f"mid{i}".encode(), b"y") for i in range(5)], timestamp=1_000)
    now = int(time.time() * 1000)
    produce(
        embedded, [(f"new{i}".encode(), b"z") for i in range(3)], source_start=10, timestamp=now
    )
    embedded.enforce_retention(now_ms=now)  # type: ignore[attr-defined]
    fetcher = embedded.fetcher()
    assert fetcher.watermarks(CHANGELOG) == (10, 13)
    fetcher.close()
    outcome = run_restore(embedded, store)
    assert outcome.completed  # type: ignore[attr-defined]
    assert "low watermark" in (outcome.cleared or "")  # type: ignore[attr-defined]
    assert contents(store) == {f"new{i}".encode(): b"z" for i in range(3)}
    assert store.offset() == 12


class ScriptedFetcher(Fetcher):
    """A fetcher over a fixed list of records and watermarks (or none, to stall)."""

    def __init__(self, records: list[Record], low: int, high: int) -> None:
        self.records = records
        self.low, self.high = low, high
        self.pos = low
        self.seeks: list[int] = []

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.tps = set(partitions)

    def assignment(self) -> set[TopicPartition]:
        return self.tps

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.pos = max(offset, self.low)

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.pos = self.low

    def seek_to_end(self, tp: TopicPartition) -> None:
        self.pos = self.high

    def position(self, tp: TopicPartition) -> int:
        return self.pos

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        out = [r for r in self.records if r.offset >= self.pos][:max_records]
        if not out:
            time.sleep(timeout)
            return []
        self.pos = out[-1].offset + 1
        return out

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        return self.low, self.high

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        pass

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        pass


def record(offset: int, key: bytes, value: bytes | None) -> Record:
    return Record("cl", 0, offset, key, value, 0, source_headers(SOURCE, offset))


def test_store_offset_below_low_watermark_with_a_fake_fetcher(store: Store) -> None:
    store.write({b"stale": b"1", b"k": b"old"}, 3)
    fetcher = ScriptedFetcher([record(8, b"k", b"new"), record(9, b"j", b"v")], low=8, high=10)
    outcome = restore(store, fetcher, CHANGELOG, ALL_COMMITTED, stall_timeout=2.0)
    assert outcome.cleared is not None
    assert outcome.completed
    assert fetcher.seeks == [8]
    assert contents(store) == {b"k": b"new", b"j": b"v"}
    assert store.offset() == 9


def test_store_offset_just_below_low_watermark_is_not_cleared(store: Store) -> None:
    store.write({b"k": b"old"}, 7)
    fetcher = ScriptedFetcher([record(8, b"j", b"v")], low=8, high=9)
    outcome = restore(store, fetcher, CHANGELOG, ALL_COMMITTED, stall_timeout=2.0)
    assert outcome.cleared is None
    assert contents(store) == {b"k": b"old", b"j": b"v"}


# -- store offset above the high watermark ----------------------------------------------


def test_recreated_changelog_clears_store_with_a_warning(
    embedded: Transport, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    make_topic(embedded, cleanup_policy="compact")
    produce(embedded, [(f"k{i}".encode(), b"v1") for i in range(10)])
    run_restore(embedded, store)
    assert store.offset() == 9
    admin = embedded.admin()
    admin.delete_topic("cl")
    admin.close()
    make_topic(embedded, cleanup_policy="compact")
    produce(embedded, [(b"x", b"1"), (b"y", b"2"), (b"k1", b"v2")])
    with caplog.at_level(logging.WARNING, logger="statestream.recovery"):
        outcome = run_restore(embedded, store, stall_timeout=2.0)
    assert outcome.completed
    assert "recreated" in (outcome.cleared or "")
    assert any(
        r.levelno == logging.WARNING and "recreated" in r.getMessage() for r in caplog.records
    )
    assert contents(store) == {b"x": b"1", b"y": b"2", b"k1": b"v2"}
    assert store.offset() == 2
    # No crash loop: the next restore neither clears nor fails.
    again = run_restore(embedded, store, stall_timeout=2.0)
    assert again.cleared is None
    assert again.completed
    assert contents(store) == {b"x": b"1", b"y": b"2", b"k1": b"v2"}


def test_recreated_empty_changelog_clears_store(embedded: Transport, store: Store) -> None:
    make_topic(embedded, cleanup_policy="compact")
    produce(embedded, [(b"a", b"1")])
    run_restore(embedded, store)
    admin = embedded.admin()
    admin.delete_topic("cl")
    admin.close()
    make_topic(embedded, cleanup_policy="compact")
    outcome = run_restore(embedded, store, stall_timeout=2.0)
    assert outcome.cleared is not None
    assert outcome.completed
    assert store.count() == 0


# -- revoke mid-restore ------------------------------------------------------------


def test_cancel_mid_restore_keeps_progress_and_resumes(embedded: Transport, store: Store) -> None:
    make_topic(embedded, cleanup_policy="compact")
    items = [(f"k{i:03}".encode(), f"{i}".encode()) for i in range(100)]
    produce(embedded, items)
    cancel = threading.Event()
    reports: list[RestoreProgress] = []

    def progress(report: RestoreProgress) -> None:
        reports.append(report)
        cancel.set()  # a revoke arrives after the first batch

    first = run_restore(
        embedded, store, batch_size=10, cancel=cancel, progress=progress, progress_interval=0.0
    )
    assert not first.completed  # type: ignore[attr-defined]
    assert first.offset is not None
    assert 0 <= first.offset < 99
    assert store.offset() == first.offset  # type: ignore[attr-defined]
    assert store.count() == first.offset + 1  # type: ignore[attr-defined]
    resumed = run_restore(embedded, store, batch_size=10)
    assert resumed.completed
    assert resumed.cleared is None
    assert resumed.applied == 99 - first.offset  # type: ignore[attr-defined]
    assert contents(store) == dict(items)


def test_cancel_through_the_manager_leaves_partition_restoring(
    embedded: Transport, tmp_path: Path
) -> None:
    node = Node(embedded, tmp_path / "stores", lambda: [Table("t")])
    manager = node.start({SOURCE: None})
    for i in range(30):
        manager.begin_record(0, SOURCE, i)
        node.table("t")[f"k{i}"] = i
    manager.commit(0, lambda: None)
    manager.close()
    cancel = threading.Event()
    cancel.set()
    from statestream.tables import PartitionState, TableManager

    manager = TableManager("app", [Table("t")], embedded, f"leveldb://{tmp_path}/stores2")
    manager.open_partition(0)
    outcomes = manager.restore_partition(0, {SOURCE: 30}, cancel=cancel)
    assert [o.completed for o in outcomes] == [False]
    assert manager.states() == {("t", 0): PartitionState.RESTORING}
    outcomes = manager.restore_partition(0, {SOURCE: 30})
    assert outcomes[0].completed
    assert outcomes[0].applied == 30
    assert manager.states() == {("t", 0): PartitionState.READY}
    manager.close()


# -- stall ---------------------------------------------------------------------------


def test_stalled_restore_raises_naming_the_partition(store: Store) -> None:
    fetcher = ScriptedFetcher([], low=0, high=10)
    started = time.monotonic()
    with pytest.raises(RestoreError) as info:
        restore(
            store,
            fetcher,
            TopicPartition("app-t-changelog", 3),
            ALL_COMMITTED,
            stall_timeout=0.3,
            poll_timeout=0.05,
        )
    assert time.monotonic() - started < 5
    assert "app-t-changelog" in str(info.value)
    assert "3" in str(info.value)


# -- progress ------------------------------------------------------------------------


def test_progress_reports_done_remaining_rate_and_eta(embedded: Transport, store: Store) -> None:
    make_topic(embedded, cleanup_policy="compact")
    produce(embedded, [(f"k{i:03}".encode(), b"v") for i in range(50)])
    reports: list[RestoreProgress] = []
    outcome = run_restore(
        embedded, store, batch_size=10, progress=reports.append, progress_interval=0.0
    )
    assert outcome.completed  # type: ignore[attr-defined]
    assert len(reports) >= 2
    assert all(r.changelog == CHANGELOG for r in reports)
    dones = [r.done for r in reports]
    assert dones == sorted(dones)
    assert dones[-1] == 50
    remaining = [r.remaining for r in reports]
    assert remaining == sorted(remaining, reverse=True)
    assert remaining[-1] == 0
    assert remaining[0] > 0
    assert all(r.rate > 0 for r in reports)
    first = reports[0]
    assert first.eta is not None
    assert first.eta > 0
    assert reports[-1].eta == 0


def test_skipped_uncommitted_records_count_as_done(embedded: Transport, store: Store) -> None:
    make_topic(embedded, cleanup_policy="compact")
    produce(embedded, [(f"k{i}".encode(), b"v") for i in range(10)])
    fetcher = embedded.fetcher(isolation_level="read_committed", reset="earliest")
    outcome = restore(store, fetcher, CHANGELOG, {SOURCE: 6}, poll_timeout=0.05)
    fetcher.close()
    assert (outcome.applied, outcome.skipped) == (6, 4)
    assert contents(store) == {f"k{i}".encode(): b"v" for i in range(6)}


# -- transaction markers (Kafka) -------------------------------------------------------


@pytest.mark.kafka
def test_transaction_markers_and_aborts(kafka_bootstrap: str, tmp_path: Path) -> None:
    from tests.plugins.kafka import make_topic_name

    transport = open_transport(f"kafka://{kafka_bootstrap}")
    name = make_topic_name("txn-changelog")
    tp = TopicPartition(name, 0)
    try:
        make_topic(transport, name, cleanup_policy="compact")
        producer = transport.producer(transactional_id=make_topic_name("txn"))
        expected: dict[bytes, bytes] = {}
        for round_ in range(4):
            producer.begin_transaction()
            for i in range(3):
                key, value = f"k{i}".encode(), f"{round_}".encode()
                producer.send(name, key, value, partition=0, headers=source_headers(SOURCE, 0))
            producer.flush()
            if round_ % 2:
                producer.abort_transaction()
            else:
                producer.commit_transaction()
                expected.update({f"k{i}".encode(): f"{round_}".encode() for i in range(3)})
        producer.close()
        store = open_store(f"leveldb://{tmp_path}/stores", "t", 0)
        fetcher = transport.fetcher(isolation_level="read_committed", reset="earliest")
        fetcher.assign([tp])
        _low, high = fetcher.watermarks(tp)
        assert high > 12  # records plus commit/abort markers
        started = time.monotonic()
        outcome = restore(store, fetcher, tp, ALL_COMMITTED, stall_timeout=20.0)
        fetcher.close()
        assert time.monotonic() - started < 20
        assert outcome.completed
        assert contents(store) == expected
        assert store.offset() == high - 1
        store.close()
    finally:
        transport.close()
