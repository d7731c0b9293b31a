"""Windowed tables across commits, crashes and restores, against the reference model.

A state machine per window kind drives one partition of a ``WindowedTable``
through a restartable ``TableManager`` (``tests.tables.helpers.Node``, on
the embedded log and LevelDB): records (key, event time in or out of order,
late ones included, amount), commits, crashes at each step of the commit
protocol, and restarts keeping or wiping the local store (then the
changelog alone restores it). The source is deterministic (offset n is
always the same record), so after a restart the table must equal the model
of records ``0 .. committed-1`` applied once; while processing, it must equal
the model of everything processed. Compared after every step: every window
of every key, stream time (which must survive restarts: expiry continues
from it), which windows exist (expired ones gone), the late count of the
incarnation, and the final results.

Final results: after each record, ``take_closed()`` must return exactly the
windows the model closed at that record, with their values (never one still
open). A report counts as delivered once a commit covering its record ran
step 3 (the source offsets); reports of uncommitted records are lost with a
crash. Invariant: every window the model closed at a committed record was
delivered at least once (at-least-once: never lost, maybe repeated).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.stores.memory import MemoryStore
from statestream.tables import TableManager
from statestream.tables.standby import StandbyReplica
from statestream.types import TopicPartition
from tests.tables.helpers import SOURCE, Node, crash_commit
from tests.tables.window_model import KINDS, WindowModel
from tests.tables.windowed_harness import (
    KEYS,
    Feeder,
    apply_op,
    as_tuple,
    build,
    check_closed,
    check_state,
    model_op,
    ops_for,
    params_for,
    table_op,
    windows,
)

NAME = "win"
#: (op, key, event time, amount): the record at one source offset.
Record = tuple[str, str, int, int]
#: A final result as delivered: (key, start, end, value).
Final = tuple[Any, int, int, Any]


class WindowedRestoreMachine(RuleBasedStateMachine):
    """One partition of one windowed table through processing, commits and crashes."""

    kind = "tumbling"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ss-wsm-"))
        self.transport: Transport = open_transport(f"embedded://{self.tmp}/log")
        self.node: Node | None = None
        self.params: dict[str, int] = {}
        self.records: list[Record] = []  # the source topic: records[n] is offset n
        self.committed: int | None = None
        self.processed = 0
        self.model = WindowModel(self.kind)
        self.late = 0  # late writes seen by this incarnation
        # Final results: delivered (a commit covered their record), and this
        # incarnation's not yet delivered ones, by the offset of their record.
        self.delivered: set[str] = set()
        self.pending: list[tuple[int, Final]] = []
        self.reported_now: set[str] = set()
        # Which offset closed each window, in the current lineage of records.
        self.closed_at: dict[tuple[Any, int, int], tuple[int, Any]] = {}

    # -- helpers -------------------------------------------------------------------

    def new_model(self) -> WindowModel:
        return build(self.kind, NAME, self.params)[1]  # type: ignore[no-any-return]

    @property
    def table(self) -> Any:
        assert self.node is not None
        return self.node.table(NAME)

    def start(self) -> None:
        assert self.node is not None
        manager = self.node.start({SOURCE: self.committed})
        self.feeder = Feeder(manager)
        self.processed = self.committed or 0
        self.model = self.new_model()
        self.closed_at = {}
        for n in range(self.processed):  # the committed records, once each
            op, key, t, amount = self.records[n]
            self._record_closings(n, model_op(self.model, op, key, t, amount))
        self.late = 0
        self.pending = []
        self.reported_now = set()

    def _record_closings(self, n: int, outcome: Any) -> None:
        if outcome is not None:
            for c in outcome.closed:
                self.closed_at[c.key, c.start, c.end] = (n, c.value)

    def restart(self, wipe: bool) -> None:
        assert self.node is not None
        self.node.crash(wipe=wipe)
        self.start()
        assert self.table.late_count() == 0
        assert self.feeder.take_closed(NAME) == [], "a restore closed windows"
        check_state(self.table, self.model, KEYS)

    def commit_source(self) -> None:
        self.committed = self.processed
        keep = []
        for offset, final in self.pending:
            if offset < self.processed:
                self.delivered.add(repr(final))
            else:
                keep.append((offset, final))
        self.pending = keep

    def draw_record(self, op: str, key: str, delta: int, amount: int) -> Record:
        """The record at the next new offset (``delta`` is relative to stream time)."""
        t = max(0, (self.model.stream_time or 0) + delta)
        if op == "del" and key not in self.model.live_keys():
            op = "add"
        return (op, key, t, amount)

    # -- rules ---------------------------------------------------------------------

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        self.params = data.draw(params_for(self.kind), label="params")
        params, kind = dict(self.params), self.kind
        self.node = Node(
            self.transport,
            self.tmp / "stores",
            lambda: [build(kind, NAME, params)[0]],
            app_id=f"wsm{id(self)}",
        )
        self.start()

    @rule(data=st.data(), count=st.integers(1, 5))
    def process(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            self.process_one(data)

    def process_one(self, data: st.DataObject) -> None:
        n = self.processed
        if n == len(self.records):
            self.records.append(self.draw_record(*data.draw(ops_for(self.kind), label="record")))
        op, key, t, amount = self.records[n]
        self.feeder.begin(key, t, amount, offset=n)
        outcome = apply_op(self.table, self.model, op, key, t, amount)
        self.processed = n + 1
        reports = self.feeder.take_closed(NAME)
        if outcome is None:
            assert reports == []
        else:
            check_closed(NAME, self.model, reports, outcome.closed)
            self.late += outcome.late
        self._record_closings(n, outcome)
        for cw, k, value in reports:
            final = (k, cw.start, cw.end, value)
            assert repr(final) not in self.reported_now, f"reported twice: {final}"
            self.reported_now.add(repr(final))
            self.pending.append((n, final))
        assert self.table.late_count() == self.late == self.feeder.late(NAME)
        check_state(self.table, self.model, KEYS)
        assert as_tuple(self.table[key].current()) == self.model.at(key, t)

    @rule(data=st.data(), count=st.integers(1, 3))
    def fail(self, data: st.DataObject, count: int) -> None:
        """A record whose processing fails after ``count`` writes: rolled back, no trace."""
        assert self.node is not None
        assert self.node.manager is not None
        op, key, t, amount = self.draw_record(*data.draw(ops_for(self.kind), label="failed"))
        self.feeder.begin(key, t, amount, offset=self.processed)
        for _ in range(count):
            table_op(self.table, op, key, amount)
            if op == "del":
                break  # a second delete of the same key raises KeyError
        self.node.manager.rollback_record(0)
        assert self.feeder.take_closed(NAME) == []
        assert self.table.late_count() == self.late == self.feeder.late(NAME)
        check_state(self.table, self.model, KEYS)

    @rule()
    def commit(self) -> None:
        assert self.node is not None
        assert self.node.manager is not None
        self.node.manager.commit(0, self.commit_source)

    @precondition(lambda self: self.processed > (self.committed or 0) or self.committed)
    @rule(step=st.sampled_from([0, 1, 2, 3]), wipe=st.booleans())
    def crash(self, step: int, wipe: bool) -> None:
        """Crash after ``step`` of a commit (0: between commits) and restart."""
        assert self.node is not None
        assert self.node.manager is not None
        if step:
            crash_commit(self.node.manager, 0, step, self.commit_source)
        self.restart(wipe)

    @rule(key=st.sampled_from(KEYS), probe=st.integers(-30, 30))
    def read(self, key: str, probe: int) -> None:
        t = max(0, (self.model.stream_time or 0) + probe)
        ws = self.table[key]
        assert as_tuple(ws.at(t)) == self.model.at(key, t)
        assert [tuple(w) for w in ws.windows_at(t)] == self.model.windows_at(key, t)
        assert [tuple(w) for w in ws.range(t - 15, t + 5)] == self.model.range(key, t - 15, t + 5)
        assert as_tuple(ws.latest()) == self.model.latest(key)

    @invariant()
    def finals_are_never_lost(self) -> None:
        committed = self.committed or 0
        for (key, start, end), (offset, value) in self.closed_at.items():
            final = repr((key, start, end, value))
            if offset < committed:
                assert final in self.delivered, f"final {final} of offset {offset} was lost"
            else:
                assert final in self.delivered or any(repr(f) == final for _, f in self.pending), (
                    f"final {final} of offset {offset} was never reported"
                )

    def teardown(self) -> None:
        try:
            if self.node is not None:
                self.node.crash()
            self.transport.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


MACHINES: dict[str, type[WindowedRestoreMachine]] = {
    kind: type(f"{kind.title()}RestoreMachine", (WindowedRestoreMachine,), {"kind": kind})
    for kind in KINDS
}


@pytest.mark.parametrize("kind", KINDS)
def test_windowed_state_survives_crashes_and_restores(kind: str) -> None:
    run_state_machine_as_test(
        MACHINES[kind],
        settings=settings(max_examples=15, stateful_step_count=30, deadline=None),
    )


def test_a_promoted_standby_keeps_stream_time_and_expires_its_windows(tmp_path: Path) -> None:
    """A standby copy (tailed as the standby thread does) serves a promotion: stream
    time, windows and the time index all came through the changelog."""
    transport = open_transport(f"embedded://{tmp_path}/log")
    params = {"size": 10, "grace": 0, "retention": 20}
    try:
        admin = transport.admin()
        admin.ensure_topic(TopicSpec(SOURCE, 1))
        member = transport.group_member("g")
        node = Node(transport, tmp_path / "active", lambda: [build("tumbling", NAME, params)[0]])
        manager = node.start({SOURCE: None})
        feeder = Feeder(manager)
        model = build("tumbling", NAME, params)[1]
        for n, (key, t) in enumerate([("k", 5), ("k", 15), ("j", 25), ("j", 3)]):
            feeder.begin(key, t, offset=n)
            apply_op(node.table(NAME), model, "add", key, t, n + 1)
        tp = TopicPartition(SOURCE, 0)
        manager.commit(0, lambda: member.commit({tp: 4}))
        node.crash()

        changelog = TopicPartition(manager.changelog_topic(NAME), 0)
        table = build("tumbling", NAME, params)[0]
        store = MemoryStore(NAME, 0)
        fetcher = transport.fetcher(isolation_level="read_committed", reset="error")
        fetcher.assign([changelog])
        replica = StandbyReplica(NAME, 0, store, changelog, {SOURCE: 4}, derive=table.derive())
        replica.start(fetcher)
        while fetcher.position(changelog) < fetcher.watermarks(changelog)[1]:
            replica.apply(fetcher.poll(timeout=0.1), fetcher)
        fetcher.close()

        promoted = TableManager("app", [table], transport, "memory://")
        promoted.open_partition(0, {NAME: store})
        promoted.restore_partition(0, {SOURCE: 4})
        promoted.bind(0)
        feeder = Feeder(promoted)
        check_state(table, model, ["k", "j"])
        assert table.stream_time() == 25
        feeder.begin("k", 45, offset=4)
        outcome = apply_op(table, model, "add", "k", 45, 1)
        check_closed(NAME, model, feeder.take_closed(NAME), outcome.closed)
        check_state(table, model, ["k", "j"])
        assert [(s, e) for s, e, _ in windows(table, "k")] == [(40, 50)], "expired"
        promoted.close()
        member.close()
        admin.close()
    finally:
        transport.close()


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
@pytest.mark.parametrize("t", [7, 5])  # after the stream time the restart found, or at it
def test_a_restarted_partition_adds_to_its_stored_windows(
    tmp_path: Path, kind: str, t: int
) -> None:
    # After a restart the shard's state is loaded at its first write. The
    # += path decides from the stream time it found whether a window can be
    # new for sure (no store read): that must be the loaded stream time, or
    # the stored window is overwritten with a fresh one.
    from statestream.tables import Table
    from tests.tables.windowed_harness import open_manager

    def table() -> Any:
        base = Table(NAME, default=int)
        return base.tumbling(10) if kind == "tumbling" else base.hopping(10, step=5)

    transport = open_transport(f"embedded://{tmp_path}/log")
    stores = f"leveldb://{tmp_path}/stores"
    try:
        first = table()
        manager = open_manager(transport, [first], store_url=stores, app_id="restart")
        feeder = Feeder(manager)
        feeder.begin("k", 5, offset=0)
        first["k"] += 1
        manager.commit(0, lambda: None)
        manager.close()
        second = table()
        manager = open_manager(transport, [second], store_url=stores, app_id="restart", committed=1)
        feeder = Feeder(manager)
        feeder.begin("k", t, offset=1)
        second["k"] += 10
        expected = [(0, 10, 11)] if kind == "tumbling" else [(0, 10, 11), (5, 15, 11)]
        assert windows(second, "k") == expected
        assert second.stream_time() == max(5, t)
        manager.close()
    finally:
        transport.close()
