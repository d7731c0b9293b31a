"""Per-record rollback of a table shard, against a dict model.

A record whose processing fails is rolled back: every assignment, delete and
default it made disappears, everything before it stays, and commits write
exactly the model's state. Entries are updated in place and the undo log
keeps snapshots, so this checks that a snapshot is taken before the first
change of every record and restored whole.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from statestream.serde import JsonCodec
from statestream.stores.memory import MemoryStore
from statestream.tables.shard import TableShard
from statestream.types import TopicPartition

KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.lists(st.integers(0, 2), max_size=2))


class ShardRollback(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore("t", 0)
        self.codec = JsonCodec()
        self.shard = TableShard(
            "t", 0, self.store, self.codec, self.codec, TopicPartition("cl", 0), cache_size=2
        )
        self.model: dict[str, Any] = {}
        self.committed_model: dict[str, Any] = {}
        self.before_record: dict[str, Any] = {}
        self.offset = 0
        self.changelog_offset = 0
        self.in_record = False

    @rule()
    def begin_record(self) -> None:
        self.offset += 1
        self.shard.begin(("src", self.offset))
        self.before_record = dict(self.model)
        self.in_record = True

    @precondition(lambda self: self.in_record)
    @rule(key=KEYS, value=VALUES)
    def assign(self, key: str, value: Any) -> None:
        self.shard.set(key, value)
        self.model[key] = value

    @precondition(lambda self: self.in_record)
    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.shard.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @precondition(lambda self: self.in_record)
    @rule(key=KEYS)
    def get_or_default(self, key: str) -> None:
        assert self.shard.get_or_create(key, int) == self.model.setdefault(key, 0)

    @precondition(lambda self: self.in_record)
    @rule(key=KEYS)
    def read(self, key: str) -> None:
        assert self.shard.get(key, "missing") == self.model.get(key, "missing")
        assert self.shard.contains(key) == (key in self.model)

    @precondition(lambda self: self.in_record)
    @rule()
    def fail_record(self) -> None:
        self.shard.rollback()
        self.model = dict(self.before_record)
        self.in_record = False

    @rule()
    def commit(self) -> None:
        changes = self.shard.changes(("src", self.offset))
        self.changelog_offset += len(changes)
        self.shard.committed(changes, self.changelog_offset if changes else None)
        self.committed_model = dict(self.model)
        self.in_record = False
        stored = {self.codec.decode(k): self.codec.decode(v) for k, v in self.store.iterate()}
        assert stored == self.committed_model

    @invariant()
    def reads_and_length_match_the_model(self) -> None:
        assert dict(self.shard.iterate()) == self.model
        assert len(self.shard) == len(self.model)


TestShardRollback = ShardRollback.TestCase
TestShardRollback.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
