"""A state machine over the commit protocol: crash at every step, restore exactly.

The source is a deterministic stream of operations on one table (offset n ->
``ops[n]``; an offset drawn once keeps its operation, as a real topic would).
Rules process records, commit, crash after step 1, 2 or 3 of the commit
protocol, restart with or without the local store, and read. Right after
every restart the table must equal a dict model of ops ``0..committed-1``
applied exactly once; while processing, reads see the uncommitted writes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from statestream.log import Transport, open_transport
from statestream.tables import Table
from tests.tables.helpers import SOURCE, Node, crash_commit

KEYS = [f"k{i}" for i in range(4)]
Op = tuple[str, str, int]
ops_strategy = st.tuples(
    st.sampled_from(["put", "append", "del"]), st.sampled_from(KEYS), st.integers(0, 99)
)


def apply_op(state: dict[str, list[int]], op: Op) -> None:
    kind, key, value = op
    if kind == "put":
        state[key] = [value]
    elif kind == "append":
        state.setdefault(key, []).append(value)
    else:
        state.pop(key, None)


def model_at(ops: list[Op], offset: int) -> dict[str, list[int]]:
    state: dict[str, list[int]] = {}
    for op in ops[:offset]:
        apply_op(state, op)
    return state


class CommitProtocolMachine(RuleBasedStateMachine):
    """Drives one partition of one table through processing, commits and crashes."""

    transport_url: str | None = None  # None: a fresh embedded log per example

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ss-sm-"))
        url = self.transport_url or f"embedded://{self.tmp}/log"
        self.transport: Transport = open_transport(url)
        app_id = f"sm{id(self)}-{self.tmp.name[-6:]}".replace("_", "")
        self.node = Node(
            self.transport,
            self.tmp / "stores",
            lambda: [Table("state", default=list)],
            app_id=app_id,
        )
        self.ops: list[Op] = []  # the source topic: ops[n] is record n
        self.committed: int | None = None
        self.processed = 0  # next offset to process
        self.live: dict[str, list[int]] = {}
        self.restarts = 0
        self.node.start({SOURCE: None})

    # -- helpers -------------------------------------------------------------------

    @property
    def table(self) -> Table[str, list[int]]:
        return self.node.table("state")

    @property
    def committed_offset(self) -> int:
        return self.committed or 0

    def restart(self, wipe: bool) -> None:
        self.node.crash(wipe=wipe)
        self.node.start({SOURCE: self.committed})
        self.restarts += 1
        # Processing resumes at the committed offset; uncommitted work is redone.
        self.processed = self.committed_offset
        self.live = model_at(self.ops, self.processed)
        expected = model_at(self.ops, self.committed_offset)
        actual = dict(self.table.items())
        assert actual == expected, (
            f"after restart (wipe={wipe}) at committed={self.committed}: {actual} != {expected}"
        )
        assert len(self.table) == len(expected)

    def commit_source(self) -> None:
        self.committed = self.processed

    # -- rules ---------------------------------------------------------------------

    @rule(op=ops_strategy)
    def process(self, op: Op) -> None:
        n = self.processed
        if n < len(self.ops):
            op = self.ops[n]  # the source is deterministic: same record, same op
        else:
            self.ops.append(op)
        manager = self.node.manager
        assert manager is not None
        manager.begin_record(0, SOURCE, n)
        kind, key, value = op
        if kind == "put":
            self.table[key] = [value]
        elif kind == "append":
            self.table[key].append(value)  # default=list; in-place mutation
        elif key in self.table:
            del self.table[key]
        apply_op(self.live, op)
        self.processed = n + 1
        # Read-your-writes, for the key and for scans merging buffer over store.
        assert self.table.get(key) == self.live.get(key)
        assert (key in self.table) == (key in self.live)
        assert dict(self.table.items()) == self.live

    @rule()
    def commit(self) -> None:
        assert self.node.manager is not None
        self.node.manager.commit(0, self.commit_source)

    @rule(step=st.sampled_from([1, 2, 3]), wipe=st.booleans())
    def crash_during_commit(self, step: int, wipe: bool) -> None:
        assert self.node.manager is not None
        crash_commit(self.node.manager, 0, step, self.commit_source)
        self.restart(wipe)

    @rule()
    def restart_keeping_store(self) -> None:
        self.restart(wipe=False)

    @rule()
    def restart_wiping_store(self) -> None:
        self.restart(wipe=True)

    @rule(key=st.sampled_from(KEYS))
    def read(self, key: str) -> None:
        assert self.table.get(key) == self.live.get(key)
        assert (key in self.table) == (key in self.live)

    @precondition(lambda self: self.processed > 0)
    @rule()
    def scan(self) -> None:
        assert dict(self.table.items()) == self.live
        # Forward only: reverse scans have their own test in test_table_api.py.
        assert [k for k, _ in self.table.range()] == sorted(self.live)
        assert len(self.table) == len(self.live)

    @invariant()
    def offsets_consistent(self) -> None:
        assert self.committed_offset <= self.processed <= len(self.ops)

    def teardown(self) -> None:
        try:
            self.node.crash()
            self.transport.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


CommitProtocolMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestCommitProtocolEmbedded = CommitProtocolMachine.TestCase


@pytest.mark.kafka
def test_commit_protocol_kafka(kafka_bootstrap: str) -> None:
    class KafkaMachine(CommitProtocolMachine):
        transport_url = f"kafka://{kafka_bootstrap}"

    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        KafkaMachine, settings=settings(max_examples=5, stateful_step_count=25, deadline=None)
    )
