"""The commit coordinator: the four steps in order, and nothing after a failed one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from statestream.errors import (
    CommitError,
    DamagedStoresError,
    GroupError,
    OffsetRecordChangedError,
    ProduceError,
)
from statestream.listeners import CommitDone
from statestream.log import Transport
from statestream.log.base import Delivery, Producer
from statestream.tables import Table, TableManager
from statestream.tables.commit import CommitCoordinator, CommitRequest
from statestream.types import Headers, TopicPartition
from tests.tables.helpers import SOURCE


class _Unacknowledged:
    """A delivery whose record was rejected although ``flush()`` returned."""

    done = True
    partition = 0

    @property
    def offset(self) -> int:
        raise ProduceError("record for partition 0 was not written: injected failure")


class LyingProducer(Producer):
    """Wraps a real producer; the next ``send_batch`` delivery fails after a clean flush."""

    def __init__(self, inner: Producer) -> None:
        self.inner = inner
        self.fail_next_batch = False
        self.events: list[str] = []

    def send(self, topic: str, key: Any, value: Any, **kw: Any) -> Delivery:
        return self.inner.send(topic, key, value, **kw)

    def send_batch(
        self, topic: str, partition: int, records: Sequence[tuple[Any, Any, Headers]]
    ) -> Delivery | None:
        delivery = self.inner.send_batch(topic, partition, records)
        if self.fail_next_batch:
            self.fail_next_batch = False
            return _Unacknowledged()
        return delivery

    def flush(self, timeout: float | None = None) -> None:
        self.events.append("flush")
        self.inner.flush(timeout)

    def partitions_for(self, topic: str) -> int:
        return self.inner.partitions_for(topic)

    def begin_transaction(self) -> None:
        raise NotImplementedError

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: Any
    ) -> None:
        raise NotImplementedError

    def commit_transaction(self) -> None:
        raise NotImplementedError

    def abort_transaction(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.inner.close()


def manager_on(transport: Transport, tmp_path: Path, producer: Producer) -> TableManager:
    manager = TableManager(
        "app", [Table("t"), Table("u")], transport, f"leveldb://{tmp_path}/s", producer=producer
    )
    manager.ensure_changelogs(2)
    for partition in (0, 1):
        manager.open_partition(partition)
        manager.restore_partition(partition, {SOURCE: None})
    return manager


def write(manager: TableManager, partition: int, offset: int, value: str) -> None:
    manager.begin_record(partition, SOURCE, offset)
    manager.shard("t", partition).set("k", value)
    manager.shard("u", partition).set("k", value)


def test_a_delivery_that_fails_after_a_clean_flush_stops_the_commit_before_step_3(
    embedded: Transport, tmp_path: Path
) -> None:
    producer = LyingProducer(embedded.producer())
    manager = manager_on(embedded, tmp_path, producer)
    write(manager, 0, 0, "v")
    producer.fail_next_batch = True
    committed: list[Mapping[TopicPartition, int]] = []
    with pytest.raises(CommitError, match="step 2"):
        CommitCoordinator(manager, producer).commit(
            [CommitRequest(0, {TopicPartition(SOURCE, 0): 1})], committed.append
        )
    assert committed == []
    assert manager.shard("t", 0).store.offset() is not None  # the claim's marker only
    assert manager.shard("t", 0).store.get(b'"k"') is None
    manager.close()


def test_an_unacknowledged_output_record_stops_the_commit_before_step_3(
    embedded: Transport, tmp_path: Path
) -> None:
    producer = LyingProducer(embedded.producer())
    manager = manager_on(embedded, tmp_path, producer)
    write(manager, 0, 0, "v")
    committed: list[Mapping[TopicPartition, int]] = []
    with pytest.raises(CommitError, match="output record"):
        CommitCoordinator(manager, producer).commit(
            [CommitRequest(0, {TopicPartition(SOURCE, 0): 1}, (_Unacknowledged(),))],
            committed.append,
        )
    assert committed == []
    manager.close()


def test_a_failed_source_commit_leaves_the_stores_untouched(
    embedded: Transport, tmp_path: Path
) -> None:
    producer = LyingProducer(embedded.producer())
    manager = manager_on(embedded, tmp_path, producer)
    before = manager.shard("t", 0).store.offset()
    write(manager, 0, 0, "v")

    def rejected(offsets: Mapping[TopicPartition, int]) -> None:
        raise GroupError("rebalanced")

    with pytest.raises(CommitError, match="step 3"):
        CommitCoordinator(manager, producer).commit(
            [CommitRequest(0, {TopicPartition(SOURCE, 0): 1})], rejected
        )
    assert manager.shard("t", 0).store.offset() == before
    assert manager.shard("t", 0).store.get(b'"k"') is None
    manager.close()


def test_a_round_of_several_partitions_flushes_and_commits_once(
    embedded: Transport, tmp_path: Path
) -> None:
    producer = LyingProducer(embedded.producer())
    manager = manager_on(embedded, tmp_path, producer)
    write(manager, 0, 5, "p0")
    write(manager, 1, 7, "p1")
    producer.events.clear()
    commits: list[dict[TopicPartition, int]] = []
    CommitCoordinator(manager, producer).commit(
        [
            CommitRequest(0, {TopicPartition(SOURCE, 0): 6}),
            CommitRequest(1, {TopicPartition(SOURCE, 1): 8}),
        ],
        lambda offsets: commits.append(dict(offsets)),
    )
    assert producer.events == ["flush"]
    assert commits == [{TopicPartition(SOURCE, 0): 6, TopicPartition(SOURCE, 1): 8}]
    for partition, value in ((0, b'"p0"'), (1, b'"p1"')):
        for table in ("t", "u"):
            assert manager.shard(table, partition).store.get(b'"k"') == value
    manager.close()


def test_a_store_damaged_in_step_4_does_not_stop_the_other_partitions(
    embedded: Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partition 0's store finds its data gone in step 4; partition 1 still commits."""
    producer = LyingProducer(embedded.producer())
    manager = manager_on(embedded, tmp_path, producer)
    write(manager, 0, 5, "p0")
    write(manager, 1, 7, "p1")
    damaged_store = manager.shard("t", 0).store
    real_write = type(damaged_store).write

    def write_store(self: Any, *args: Any, **kwargs: Any) -> None:
        if self is damaged_store:
            raise OffsetRecordChangedError("the offset record of t/0 is gone")
        real_write(self, *args, **kwargs)

    monkeypatch.setattr(type(damaged_store), "write", write_store)
    commits: list[dict[TopicPartition, int]] = []
    done: list[CommitDone] = []
    with pytest.raises(DamagedStoresError, match=r"partitions \[0\] are damaged") as raised:
        CommitCoordinator(manager, producer, on_commit=done.append).commit(
            [
                CommitRequest(0, {TopicPartition(SOURCE, 0): 6}),
                CommitRequest(1, {TopicPartition(SOURCE, 1): 8}),
            ],
            lambda offsets: commits.append(dict(offsets)),
        )
    assert set(raised.value.damaged) == {0}
    assert isinstance(raised.value.damaged[0], OffsetRecordChangedError)
    assert raised.value.__cause__ is raised.value.damaged[0]
    # Steps 2 and 3 covered both partitions; step 4 completed for partition 1.
    assert commits == [{TopicPartition(SOURCE, 0): 6, TopicPartition(SOURCE, 1): 8}]
    for table in ("t", "u"):
        assert manager.shard(table, 1).store.get(b'"k"') == b'"p1"'
    assert [(d.partitions, dict(d.offsets)) for d in done] == [
        ((1,), {TopicPartition(SOURCE, 1): 8})
    ]
    monkeypatch.setattr(type(damaged_store), "write", real_write)
    manager.close()
