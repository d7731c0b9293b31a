"""Fencing: a member that lost a partition (a zombie) cannot corrupt its state.

Two table managers on one log stand for two workers: A owns partition 0,
freezes with uncommitted work, B is assigned the partition (a newer group
generation) and processes on; then A wakes up and its commit writes its old
changelog records after B's, and fails at the source-offset commit. Every
restore must ignore A's late records, and B rewrites the keys A touched so
that compaction cannot keep A's records in place of B's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statestream.errors import CommitError, GroupError
from statestream.log import Transport
from statestream.tables import Table
from statestream.tables.commit import CommitCoordinator, CommitRequest
from statestream.tables.headers import epoch_of, next_epoch
from statestream.tables.recovery import stored_epoch
from statestream.types import TopicPartition
from tests.tables.helpers import SOURCE, Crash, Node, read_all

KEYS = ["a", "b", "c"]


def counts_table() -> list[Table[Any, Any]]:
    return [Table("counts", default=int)]


def process(node: Node, start: int, end: int) -> None:
    """Count records ``start..end-1`` (record n counts key KEYS[n % 3])."""
    manager = node.manager
    assert manager is not None
    table = node.table("counts")
    for offset in range(start, end):
        manager.begin_record(0, SOURCE, offset)
        table[KEYS[offset % len(KEYS)]] += 1


def expected(end: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for offset in range(end):
        key = KEYS[offset % len(KEYS)]
        out[key] = out.get(key, 0) + 1
    return out


def commit(node: Node, committed: dict[str, int | None], position: int) -> None:
    manager = node.manager
    assert manager is not None

    def commit_source(offsets: Any) -> None:
        committed[SOURCE] = position

    CommitCoordinator(manager, manager.producer).commit(
        [CommitRequest(0, {TopicPartition(SOURCE, 0): position})], commit_source
    )


def start(node: Node, committed: dict[str, int | None], generation: int) -> None:
    tables = node.make_tables()
    node.tables = {t.name: t for t in tables}
    from statestream.tables import TableManager

    manager = TableManager(node.app_id, tables, node.transport, f"leveldb://{node.store_dir}")
    manager.ensure_changelogs(node.partitions)
    manager.open_partition(0)
    manager.restore_partition(0, dict(committed), generation=generation)
    manager.bind(0)
    node.manager = manager


def state(node: Node) -> dict[str, int]:
    return dict(node.table("counts").items())


def test_a_zombie_commit_after_a_new_owner_is_ignored_by_every_restore(
    embedded: Transport, tmp_path: Path
) -> None:
    committed: dict[str, int | None] = {SOURCE: None}
    a = Node(embedded, tmp_path / "a", counts_table)
    start(a, committed, generation=1)
    process(a, 0, 30)
    commit(a, committed, 30)
    process(a, 30, 36)  # A freezes with this work uncommitted

    b = Node(embedded, tmp_path / "b", counts_table)
    start(b, committed, generation=2)  # B is assigned the partition, claims it
    assert b.manager is not None
    assert a.manager is not None
    assert b.manager.epoch(0) > a.manager.epoch(0)
    process(b, 30, 60)
    commit(b, committed, 60)

    # A wakes up: its round flushes its old records, then its offset commit fails.
    def rejected(offsets: Any) -> None:
        raise GroupError("the group has rebalanced: commit rejected")

    with pytest.raises(CommitError, match="step 3"):
        CommitCoordinator(a.manager, a.manager.producer).commit(
            [CommitRequest(0, {TopicPartition(SOURCE, 0): 36})], rejected
        )
    a.crash()

    # A's records (counts as of offset 36) follow B's (as of 60): restores skip them.
    readonly = Node(embedded, tmp_path / "readonly", counts_table)
    tables = readonly.make_tables()
    readonly.tables = {t.name: t for t in tables}
    from statestream.tables import TableManager

    manager = TableManager("app", tables, embedded, f"leveldb://{readonly.store_dir}")
    manager.open_partition(0)
    (outcome,) = manager.restore_partition(0, dict(committed), claim=False)
    manager.bind(0)
    readonly.manager = manager
    assert outcome.fenced > 0
    assert state(readonly) == expected(60)
    readonly.crash()

    # B goes on; its next commit sees A's records among its own and rewrites their keys.
    process(b, 60, 61)
    commit(b, committed, 61)
    process(b, 61, 62)
    commit(b, committed, 62)
    assert state(b) == expected(62)
    b.crash()

    changelog = TopicPartition("app-counts-changelog", 0)
    latest: dict[bytes, int | None] = {}
    for rec in read_all(embedded, changelog):
        epoch, fence = epoch_of(rec)
        if not fence and rec.key is not None:
            latest[rec.key] = epoch
    b_epoch = max(e for e in latest.values() if e is not None)
    assert all(epoch == b_epoch for epoch in latest.values()), latest

    rebuilt = Node(embedded, tmp_path / "rebuilt", counts_table)
    start(rebuilt, committed, generation=3)
    assert state(rebuilt) == expected(62)
    rebuilt.crash()
    warm = Node(embedded, tmp_path / "b", counts_table)  # B's own store, restored on
    start(warm, committed, generation=4)
    assert state(warm) == expected(62)
    warm.crash()


def test_zombie_records_before_the_new_owners_claim_are_held_back_and_repaired(
    embedded: Transport, tmp_path: Path
) -> None:
    committed: dict[str, int | None] = {SOURCE: None}
    a = Node(embedded, tmp_path / "a", counts_table)
    start(a, committed, generation=1)
    process(a, 0, 9)
    commit(a, committed, 9)
    process(a, 9, 12)
    assert a.manager is not None

    def rejected(offsets: Any) -> None:
        raise GroupError("commit rejected")

    with pytest.raises(CommitError):
        CommitCoordinator(a.manager, a.manager.producer).commit(
            [CommitRequest(0, {TopicPartition(SOURCE, 0): 12})], rejected
        )
    a.crash()

    b = Node(embedded, tmp_path / "b", counts_table)
    start(b, committed, generation=2)
    assert state(b) == expected(9)
    process(b, 9, 20)
    commit(b, committed, 20)
    b.crash()
    rebuilt = Node(embedded, tmp_path / "rebuilt", counts_table)
    start(rebuilt, committed, generation=3)
    assert state(rebuilt) == expected(20)
    rebuilt.crash()


def test_epochs_grow_even_when_the_group_generation_starts_again(
    embedded: Transport, tmp_path: Path
) -> None:
    committed: dict[str, int | None] = {SOURCE: None}
    node = Node(embedded, tmp_path / "n", counts_table)
    epochs = []
    for generation in (7, 8, 0, 0, 1):  # a recreated group starts at 0 again
        start(node, committed, generation=generation)
        assert node.manager is not None
        epochs.append(node.manager.epoch(0))
        process(node, committed[SOURCE] or 0, (committed[SOURCE] or 0) + 3)
        commit(node, committed, (committed[SOURCE] or 0) + 3)
        node.crash()
    assert epochs == sorted(epochs)
    assert len(set(epochs)) == len(epochs)
    start(node, committed, generation=2)
    assert state(node) == expected(15)
    node.crash()


def test_next_epoch_orders_claims_from_the_same_history_by_generation() -> None:
    late_zombie = next_epoch(5 << 32 | 3, generation=4)
    new_owner = next_epoch(5 << 32 | 3, generation=5)
    assert late_zombie < new_owner
    assert next_epoch(None, 0) < next_epoch(next_epoch(None, 0), 0)


def test_repair_is_durable_a_crash_before_it_keeps_the_store_offset_below_the_skipped_record(
    embedded: Transport, tmp_path: Path
) -> None:
    """Uncommitted records skipped by a restore are repaired before the offset passes them."""
    committed: dict[str, int | None] = {SOURCE: None}
    node = Node(embedded, tmp_path / "n", counts_table)
    start(node, committed, generation=1)
    process(node, 0, 6)
    commit(node, committed, 6)
    process(node, 6, 9)
    assert node.manager is not None
    from tests.tables.helpers import crash_commit

    crash_commit(node.manager, 0, after_step=2)  # records of 6..8 in the changelog, uncommitted
    node.crash()

    # Restart; the repair write crashes (fault injected into the changelog writer).
    tables = counts_table()
    from statestream.tables import TableManager

    manager = TableManager("app", tables, embedded, f"leveldb://{tmp_path / 'n'}")
    manager.open_partition(0)
    real_write = manager.writer.write

    def failing_write(*args: Any, **kwargs: Any) -> Any:
        raise Crash("crash before the repair is written")

    manager.writer.write = failing_write  # type: ignore[method-assign]
    with pytest.raises(Crash):
        manager.restore_partition(0, dict(committed), generation=2)
    store = manager.shard("counts", 0).store
    changelog = TopicPartition("app-counts-changelog", 0)
    skipped = [
        r.offset
        for r in read_all(embedded, changelog)
        if r.headers
        and any(name == "statestream-src-offset" for name, _ in r.headers)
        and int.from_bytes(dict(r.headers)["statestream-src-offset"], "big") >= 6
    ]
    assert skipped, "the uncommitted commit left no changelog records"
    offset = store.offset()
    assert offset is not None
    assert offset < min(skipped)
    manager.writer.write = real_write  # type: ignore[method-assign]
    manager.close()

    # The next restore repairs; afterwards even a rebuild from scratch is exact
    # once compaction keeps only the latest record per key.
    start(node, committed, generation=3)
    assert state(node) == expected(6)
    node.crash()
    embedded.compact(now_ms=2**62)  # type: ignore[attr-defined]
    rebuilt = Node(embedded, tmp_path / "rebuilt", counts_table)
    start(rebuilt, committed, generation=4)
    assert state(rebuilt) == expected(6)
    assert rebuilt.manager is not None
    assert stored_epoch(rebuilt.manager.shard("counts", 0).store) == rebuilt.manager.epoch(0)
    rebuilt.crash()
