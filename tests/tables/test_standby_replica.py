"""A standby copy applies exactly the committed work, whatever the active owner does.

The active side is a real table manager on the embedded log, committing
through the commit coordinator, crashing between steps 2 and 3 (changelog
written, source offsets not committed) and being replaced by a new owner
that restores, claims the partition and redoes the uncommitted work. The
standby side is a :class:`StandbyReplica` on its own store, tailing the
changelog the way the standby thread does (committed offsets read through
the admin). The hold-back rule must neither apply uncommitted work (a
promoted copy would count it twice) nor lose it once it is committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.serde import JsonCodec
from statestream.stores.memory import MemoryStore
from statestream.tables import Table, TableManager
from statestream.tables.commit import CommitCoordinator, CommitRequest
from statestream.tables.standby import StandbyReplica
from statestream.types import TopicPartition
from tests.tables.helpers import SOURCE, Node, crash_commit

GROUP = "g"
TP = TopicPartition(SOURCE, 0)
CHANGELOG = TopicPartition("app-counts-changelog", 0)
KEYS = ["a", "b", "c", "d"]


def _tables() -> list[Table[Any, Any]]:
    return [Table("counts", default=int)]


class Active:
    """The active owner of a source partition whose records are never lost.

    ``source`` is the source partition (key of each offset); the owner
    processes it from its position on, commits, or crashes, after which a new
    owner restores and processes again from the committed offset: the same
    records, as a real new owner reads them from the source topic again.
    """

    def __init__(self, transport: Transport, tmp: Path) -> None:
        self.transport = transport
        transport.admin().ensure_topic(TopicSpec(SOURCE, 1))
        self.member = transport.group_member(GROUP)
        self.node = Node(transport, tmp / "active", _tables)
        self.source: list[str] = []
        self.position = 0  # next source offset this owner processes
        self.committed = 0  # next source offset to process, as committed
        self.manager: TableManager = self.node.start({SOURCE: None})

    def process(self, keys: list[str] = ()) -> None:  # type: ignore[assignment]
        """Append ``keys`` to the source, then process everything not processed yet."""
        self.source.extend(keys)
        counts = self.node.table("counts")
        for offset in range(self.position, len(self.source)):
            self.manager.begin_record(0, SOURCE, offset)
            counts[self.source[offset]] += 1
        self.position = len(self.source)

    def commit(self) -> None:
        done = self.position
        self.manager.commit(0, lambda: self.member.commit({TP: done}))
        self.committed = done

    def crash_before_source_commit(self) -> None:
        """Changelog written and flushed, source offsets not committed; then a new owner."""
        crash_commit(self.manager, 0, after_step=2)
        self.node.crash()
        self.position = self.committed  # the new owner reads these again
        self.manager = self.node.start({SOURCE: self.committed or None})

    def expected(self) -> dict[str, int]:
        return dict(Counter(self.source[: self.committed]))


class Standby:
    """A standby copy of the partition's table, tailed as the standby thread does."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.fetcher = transport.fetcher(isolation_level="read_committed", reset="error")
        self.fetcher.assign([CHANGELOG])
        self.admin = transport.admin()
        self.store = MemoryStore("counts", 0)
        self.replica = StandbyReplica("counts", 0, self.store, CHANGELOG, {SOURCE: None})
        self.replica.start(self.fetcher)

    def tail(self) -> None:
        """Read as far as the committed offsets allow (to the high watermark at most)."""
        for _ in range(200):
            offsets = self.admin.committed_offsets(GROUP, [TP])
            self.replica.committed_moved({SOURCE: offsets[TP]}, self.fetcher)
            high = self.fetcher.watermarks(CHANGELOG)[1]
            if self.replica.waiting or self.fetcher.position(CHANGELOG) >= high:
                return
            self.replica.apply(self.fetcher.poll(timeout=0.05), self.fetcher)
        raise AssertionError("the standby did not catch up")

    def state(self) -> dict[str, int]:
        codec: JsonCodec[Any] = JsonCodec()
        return {
            codec.decode(k): codec.decode(v)
            for k, v in self.store.iterate()
            if not k.startswith(b"\x00")
        }

    def close(self) -> None:
        self.fetcher.close()
        self.admin.close()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Transport]:
    transport = open_transport(f"embedded://{tmp_path}/log")
    yield transport
    transport.close()


def test_uncommitted_work_waits_and_is_applied_once_committed(
    log: Transport, tmp_path: Path
) -> None:
    active = Active(log, tmp_path)
    standby = Standby(log)
    active.process(["a", "b", "a"])
    active.commit()
    active.process(["a", "c"])
    active.crash_before_source_commit()  # "a", "c" written to the changelog, not committed
    standby.tail()
    # The uncommitted records are in the changelog, but not applied.
    assert standby.replica.waiting
    assert standby.state() == {"a": 2, "b": 1}
    assert standby.state() == active.expected()
    # The new owner redoes the work and commits it: now it is applied, once.
    active.process()
    active.commit()
    standby.tail()
    assert not standby.replica.waiting
    assert standby.state() == {"a": 3, "b": 1, "c": 1} == active.expected()
    standby.close()


def test_committed_records_seen_before_their_commit_are_not_lost(
    log: Transport, tmp_path: Path
) -> None:
    active = Active(log, tmp_path)
    standby = Standby(log)
    active.process(["a", "b"])
    active.commit()
    active.process(["b", "c", "d"])
    pending = active.manager

    # Step 2 done (changelog flushed), step 3 not yet: the standby reads them now.
    def later(_offsets: object) -> None:
        standby.tail()  # between step 2 and step 3
        assert standby.replica.waiting
        assert standby.state() == {"a": 1, "b": 1}
        active.member.commit({TP: active.position})

    CommitCoordinator(pending, pending.producer).commit([CommitRequest(0, {})], later)
    active.committed = active.position
    standby.tail()
    assert standby.state() == {"a": 1, "b": 2, "c": 1, "d": 1} == active.expected()
    standby.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rounds=st.lists(
        st.tuples(
            st.lists(st.sampled_from(KEYS), min_size=1, max_size=6),
            st.sampled_from(["commit", "crash"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_standby_equals_the_committed_state_after_any_history(
    tmp_path_factory: pytest.TempPathFactory,
    rounds: list[tuple[list[str], str, bool]],
) -> None:
    tmp = tmp_path_factory.mktemp("standby")
    transport = open_transport(f"embedded://{tmp}/log")
    try:
        active = Active(transport, tmp)
        standby = Standby(transport)
        for keys, outcome, tail in rounds:
            active.process(keys)
            if outcome == "commit":
                active.commit()
            else:
                active.crash_before_source_commit()
            if tail:
                standby.tail()
                assert standby.state() == active.expected()
        active.process()  # the last owner processes and commits the whole source
        active.commit()
        standby.tail()
        assert not standby.replica.waiting
        assert standby.state() == active.expected() == dict(Counter(active.source))
        # The same as a restore from the changelog alone.
        fresh = Node(transport, tmp / "fresh", _tables)
        manager = fresh.start({SOURCE: active.committed or None})
        restored = dict(manager.shard("counts", 0).store.iterate())
        assert restored == {k: v for k, v in standby.store.iterate() if not k.startswith(b"\x00")}
        standby.close()
    finally:
        transport.close()


def test_a_zombies_records_after_the_new_owners_claim_are_never_applied(
    log: Transport, tmp_path: Path
) -> None:
    active = Active(log, tmp_path)
    standby = Standby(log)
    active.process(["a", "b"])
    active.commit()
    # A second owner claims the partition while the first still runs (frozen
    # past its session timeout, say): the first is now a zombie.
    zombie = active.manager
    zombie_counts = active.node.table("counts")
    usurper = Node(log, tmp_path / "usurper", _tables)
    manager = usurper.start({SOURCE: active.committed})
    # The zombie wakes up and commits more work; its source commit is refused
    # by the group (here: not made), but its changelog records land.
    zombie.begin_record(0, SOURCE, 2)
    zombie_counts["a"] += 100
    zombie.commit(0, lambda: None)
    standby.tail()
    assert standby.state() == {"a": 1, "b": 1}  # the zombie's a=101 is fenced
    assert standby.replica.reader.fenced >= 1
    held = standby.replica.offset()
    # The new owner's next commit finds the foreign record, and the one after
    # rewrites its key; then the standby's offset may move past the zombie's record.
    counts = usurper.table("counts")
    for offset, key in ((2, "b"), (3, "c")):
        manager.begin_record(0, SOURCE, offset)
        counts[key] += 1
        manager.commit(0, lambda done=offset + 1: active.member.commit({TP: done}))
        standby.tail()
        assert standby.replica.offset() == held or key == "c"
    assert standby.state() == {"a": 1, "b": 2, "c": 1}
    offset = standby.replica.offset()
    assert held is not None
    assert offset is not None
    assert offset > held
    standby.close()
