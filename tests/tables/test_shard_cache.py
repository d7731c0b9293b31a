"""The shard keeps committed values decoded across commits, bounded, and coherent."""

from __future__ import annotations

from statestream.serde import JsonCodec
from statestream.stores.memory import MemoryStore
from statestream.tables.shard import TableShard
from statestream.types import TopicPartition


class CountingStore(MemoryStore):
    """A MemoryStore that counts reads."""

    def __init__(self) -> None:
        super().__init__("t", 0)
        self.reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return super().get(key)


def make(cache_size: int) -> tuple[TableShard, CountingStore]:
    store = CountingStore()
    shard = TableShard(
        "t", 0, store, JsonCodec(), JsonCodec(), TopicPartition("c", 0), cache_size=cache_size
    )
    return shard, store


def commit(shard: TableShard, offset: int) -> None:
    shard.committed(shard.changes(("s", offset)), offset)


def test_committed_values_are_served_without_store_reads() -> None:
    shard, store = make(cache_size=100)
    shard.begin(("s", 0))
    shard.set("a", 1)
    commit(shard, 0)
    reads = store.reads
    for i in range(1, 6):
        shard.begin(("s", i))
        shard.set("a", shard.get("a") + 1)
        commit(shard, i)
    assert store.reads == reads
    assert store.get(b'"a"') == b"6"


def test_cache_is_bounded_and_evicted_values_come_back_from_the_store() -> None:
    shard, store = make(cache_size=3)
    shard.begin(("s", 0))
    for i in range(10):
        shard.set(f"k{i}", i)
    commit(shard, 0)
    reads = store.reads
    assert [shard.get(f"k{i}") for i in range(10)] == list(range(10))
    assert store.reads - reads == 7  # three stayed cached, seven were evicted


def test_in_place_mutation_of_a_cached_value_is_still_detected() -> None:
    shard, store = make(cache_size=100)
    shard.begin(("s", 0))
    shard.set("l", [1])
    commit(shard, 0)
    shard.begin(("s", 1))
    shard.get("l").append(2)
    changes = shard.changes(("s", 1))
    assert [(c.key, c.value) for c in changes] == [(b'"l"', b"[1,2]")]
    shard.committed(changes, 1)
    assert store.get(b'"l"') == b"[1,2]"
    shard.begin(("s", 2))
    assert shard.changes(("s", 2)) == []  # nothing touched since


def test_untouched_cached_keys_still_appear_in_scans() -> None:
    shard, _ = make(cache_size=100)
    shard.begin(("s", 0))
    shard.set("a", 1)
    shard.set("b", 2)
    commit(shard, 0)
    shard.begin(("s", 1))
    shard.set("c", 3)
    assert list(shard.iterate()) == [("a", 1), ("b", 2), ("c", 3)]
    assert list(shard.iterate(reverse=True)) == [("c", 3), ("b", 2), ("a", 1)]
    assert len(shard) == 3


def test_discard_drops_uncommitted_and_cached_values() -> None:
    shard, _ = make(cache_size=100)
    shard.begin(("s", 0))
    shard.set("a", 1)
    commit(shard, 0)
    shard.begin(("s", 1))
    shard.set("a", 99)
    shard.discard()
    assert shard.get("a") == 1
