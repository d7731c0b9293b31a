"""A state machine over the commit coordinator: rounds, crashes, rebalances and zombies.

Two source partitions, each a deterministic stream of operations on one table
(offset n of partition p -> ``ops[p][n]``). Rules process records, commit
rounds of any subset of the partitions (a partition left out of a round keeps
its work for a later one), crash between any two steps of a round, restart
with or without the local stores, and hand the partitions to a new owner at
a newer group generation, optionally after the old owner froze with
uncommitted work and wakes up to write it (a zombie whose offset commit the
group rejects). After every restart or hand-over the table must equal a dict
model of each partition's committed operations applied exactly once, and so
must a rebuild from the changelog alone.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statestream.errors import CommitError, GroupError
from statestream.log import Transport, open_transport
from statestream.tables import Table, TableManager
from statestream.tables.commit import CommitCoordinator, CommitRequest
from statestream.types import TopicPartition
from tests.tables.helpers import SOURCE, Crash

PARTITIONS = (0, 1)
KEYS = [f"k{i}" for i in range(3)]
Op = tuple[str, str, int]
ops_strategy = st.tuples(
    st.sampled_from(["put", "add", "del"]), st.sampled_from(KEYS), st.integers(0, 9)
)


def apply_op(state: dict[str, int], op: Op) -> None:
    kind, key, value = op
    if kind == "put":
        state[key] = value
    elif kind == "add":
        state[key] = state.get(key, 0) + value
    else:
        state.pop(key, None)


def model(ops: list[Op], end: int) -> dict[str, int]:
    state: dict[str, int] = {}
    for op in ops[:end]:
        apply_op(state, op)
    return state


class Owner:
    """One member's table manager over both partitions."""

    def __init__(
        self,
        transport: Transport,
        store_dir: Path,
        app_id: str,
        committed: Mapping[int, int | None],
        generation: int,
        claim: bool = True,
    ) -> None:
        self.table: Table[str, int] = Table("state")
        self.manager = TableManager(app_id, [self.table], transport, f"leveldb://{store_dir}")
        self.manager.ensure_changelogs(len(PARTITIONS))
        for p in PARTITIONS:
            self.manager.open_partition(p)
            self.manager.restore_partition(
                p, {SOURCE: committed[p]}, generation=generation, claim=claim
            )
        self.coordinator = CommitCoordinator(self.manager, self.manager.producer)

    def state(self, p: int) -> dict[str, int]:
        with self.table.bound_to(self.manager.shard("state", p)):
            return dict(self.table.items())

    def close(self) -> None:
        self.manager.close()


class CoordinatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ss-cm-"))
        self.transport = open_transport(f"embedded://{self.tmp}/log")
        self.app_id = f"cm{self.tmp.name[-6:]}".replace("_", "")
        self.ops: dict[int, list[Op]] = {p: [] for p in PARTITIONS}
        self.committed: dict[int, int | None] = dict.fromkeys(PARTITIONS)
        self.processed = dict.fromkeys(PARTITIONS, 0)
        self.generation = 1
        self.wipes = 0
        self.owner = self._new_owner()
        # A member that lost the partitions, frozen with uncommitted work.
        self.zombie: Owner | None = None
        self.zombie_positions: dict[int, int] = {}

    # -- helpers -----------------------------------------------------------------

    def _new_owner(self, *, wipe: bool = False) -> Owner:
        # Three members take turns (one per generation), each with its own
        # stores, so the owner, a frozen zombie and the next owner never share
        # a directory; a wipe loses every local store.
        if wipe:
            self.wipes += 1
        return Owner(
            self.transport,
            self.tmp / f"member{self.generation % 3}-{self.wipes}",
            self.app_id,
            self.committed,
            self.generation,
        )

    def _check(self, owner: Owner) -> None:
        for p in PARTITIONS:
            expected = model(self.ops[p], self.committed[p] or 0)
            assert owner.state(p) == expected, (p, owner.state(p), expected)

    def _resume(self) -> None:
        self.processed = {p: self.committed[p] or 0 for p in PARTITIONS}
        self._check(self.owner)

    def _request(self, p: int) -> CommitRequest:
        return CommitRequest(p, {TopicPartition(SOURCE, p): self.processed[p]})

    def _commit_source(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self.committed[tp.partition] = offset

    # -- rules -------------------------------------------------------------------

    @rule(p=st.sampled_from(PARTITIONS), op=ops_strategy)
    def process(self, p: int, op: Op) -> None:
        n = self.processed[p]
        if n < len(self.ops[p]):
            op = self.ops[p][n]
        else:
            self.ops[p].append(op)
        manager = self.owner.manager
        shard = manager.shard("state", p)
        manager.begin_record(p, SOURCE, n)
        kind, key, value = op
        if kind == "put":
            shard.set(key, value)
        elif kind == "add":
            shard.set(key, (shard.get(key) or 0) + value)
        else:
            shard.delete(key)
        self.processed[p] = n + 1

    @rule(parts=st.sets(st.sampled_from(PARTITIONS), min_size=1))
    def commit_round(self, parts: set[int]) -> None:
        requests = [self._request(p) for p in sorted(parts)]
        self.owner.coordinator.commit(requests, self._commit_source)

    @rule(
        parts=st.sets(st.sampled_from(PARTITIONS), min_size=1),
        step=st.sampled_from([1, 2, 3]),
        wipe=st.booleans(),
    )
    def crash_in_round(self, parts: set[int], step: int, wipe: bool) -> None:
        manager = self.owner.manager

        def crash(*_args: Any) -> None:
            raise Crash(f"after step {step}")

        def source(offsets: Mapping[TopicPartition, int]) -> None:
            if step == 2:
                crash()
            self._commit_source(offsets)

        if step == 1:
            manager.send_changelogs = crash  # type: ignore[method-assign]
        elif step == 3:
            manager.apply = crash  # type: ignore[method-assign]
        with contextlib.suppress(Crash):
            self.owner.coordinator.commit([self._request(p) for p in sorted(parts)], source)
        self.owner.close()
        self.owner = self._new_owner(wipe=wipe)
        self._resume()

    @rule(p=st.sampled_from(PARTITIONS), frozen=st.lists(ops_strategy, min_size=1, max_size=4))
    def hand_over(self, p: int, frozen: list[Op]) -> None:
        """The owner processes ``frozen`` on ``p`` and freezes with that work
        uncommitted; the next member takes the partitions at a newer generation
        (from its own, possibly old, stores)."""
        for op in frozen:
            self.process(p, op)
        self._drop_zombie()
        self.zombie, self.zombie_positions = self.owner, dict(self.processed)
        self.generation += 1
        self.owner = self._new_owner()
        self._resume()

    @rule(late=st.booleans(), ahead=st.lists(ops_strategy, min_size=1, max_size=4))
    def zombie_wakes(self, late: bool, ahead: list[Op]) -> None:
        """The frozen member wakes up: its round writes its old changelog records
        (after whatever the new owner did meanwhile); the group rejects its
        offset commit. ``late``: the new owner first processed past the
        zombie's work (``ahead`` more records) and committed."""
        zombie = self.zombie
        if zombie is None:
            return
        if late:
            for p, end in self.zombie_positions.items():
                while self.processed[p] < end:
                    self.process(p, ahead[0])
            for i, op in enumerate(ahead):
                self.process(PARTITIONS[i % len(PARTITIONS)], op)
            self.commit_round(set(PARTITIONS))

        def rejected(offsets: Mapping[TopicPartition, int]) -> None:
            raise GroupError("the group rebalanced")

        requests = [
            CommitRequest(p, {TopicPartition(SOURCE, p): n})
            for p, n in self.zombie_positions.items()
        ]
        with contextlib.suppress(CommitError):
            zombie.coordinator.commit(requests, rejected)
        self._drop_zombie()
        # Its records now follow the new owner's: every restore must skip them.
        self.rebuild_from_changelog()

    def _drop_zombie(self) -> None:
        if self.zombie is not None:
            self.zombie.close()
            self.zombie = None

    @rule()
    def restart_keeping_stores(self) -> None:
        self.owner.close()
        self.owner = self._new_owner()
        self._resume()

    @rule()
    def rebuild_from_changelog(self) -> None:
        rebuilt = Owner(
            self.transport,
            self.tmp / "rebuild",
            self.app_id,
            self.committed,
            generation=0,
            claim=False,  # a third member claiming would fence the owner
        )
        try:
            self._check(rebuilt)
        finally:
            rebuilt.close()
            shutil.rmtree(self.tmp / "rebuild", ignore_errors=True)

    @invariant()
    def offsets_consistent(self) -> None:
        for p in PARTITIONS:
            assert (self.committed[p] or 0) <= self.processed[p] <= len(self.ops[p])

    def teardown(self) -> None:
        try:
            self._drop_zombie()
            self.owner.close()
            self.transport.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


CoordinatorMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)
TestCoordinatorMachine = CoordinatorMachine.TestCase
