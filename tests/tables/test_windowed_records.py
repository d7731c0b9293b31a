"""Records of several writes against the reference model: the per-record fast paths.

A record's first ``+=`` on a tumbling or hopping table checks its event time;
its later writes skip the check, and a key new to the record's window is made
there without the checks again (statestream.tables.window_writes,
``_add_in_fast``). The sequence tests give every record one write, so they
never take those paths; these give records several writes of random keys,
fail some of them (the rollback must leave no trace), commit between records
at random and keep the buffer small (evictions make the fast path let go of
its entries). After every record: every window, key set, stream time and the
windows the record closed equal the model's.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestream.log import Transport
from statestream.tables.window_state import UNDONE
from tests.tables.windowed_harness import (
    Feeder,
    build,
    check_closed,
    check_state,
    model_op,
    open_manager,
    params_for,
    table_op,
)

#: More keys than the buffer of the small-cache runs holds.
RECORD_KEYS = ["a", "b", "ab", "c", "d"]

_write = st.tuples(
    st.sampled_from(["add", "add", "add", "add", "sub", "update", "del"]),
    st.sampled_from(RECORD_KEYS),
    st.integers(-3, 9),
)
_record = st.tuples(
    # Event time relative to stream time: mostly ahead, else out of order or late.
    st.integers(0, 20) | st.integers(0, 3) | st.integers(-30, -1),
    st.lists(_write, min_size=1, max_size=6),
    st.booleans() | st.just(False),  # fails after its writes (rolled back)
    st.booleans(),  # commit after it
)


def undoable(shard: Any) -> dict[str, Any]:
    """The windowed state a rollback puts back, and the windows the next commit indexes."""
    state = {name: getattr(shard, name) for name in UNDONE}
    state["created"] = {due: list(windows) for due, windows in shard._created.items()}
    return state


def run_records(
    transport: Transport,
    kind: str,
    params: dict[str, int],
    records: list[tuple[int, list[tuple[str, str, int]], bool, bool]],
    cache_size: int,
) -> None:
    table, model = build(kind, "recs", params, cache_size=cache_size)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        shard = manager.windowed("recs", 0)
        for delta, writes, fails, commit in records:
            t = max(0, (model.stream_time or 0) + delta)
            before = copy.deepcopy(model)
            found = undoable(shard)
            feeder.begin("r", t)
            closed: list[Any] = []
            for drawn, key, amount in writes:
                op = "add" if drawn == "del" and key not in model.live_keys() else drawn
                table_op(table, op, key, amount)
                outcome = model_op(model, op, key, t, amount)
                if outcome is not None:
                    closed += outcome.closed
            if fails:
                manager.rollback_record(0)
                model = before
                closed = []
                # What the commit would index and when the shard next looks
                # for closes: as the record found them.
                assert undoable(shard) == found
            check_closed("recs", model, feeder.take_closed("recs"), closed)
            check_state(table, model, RECORD_KEYS)
            if commit:
                manager.commit(0, lambda: None)
                check_state(table, model, RECORD_KEYS)
    finally:
        manager.close()


@pytest.mark.parametrize("cache_size", [50_000, 2])
@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_records_of_several_writes_match_the_model(
    transport: Transport, kind: str, cache_size: int, data: st.DataObject
) -> None:
    params = data.draw(params_for(kind))
    records = data.draw(st.lists(_record, min_size=1, max_size=25))
    run_records(transport, kind, params, records, cache_size)


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
def test_keys_new_to_a_window_after_a_failed_record_and_an_eviction(
    transport: Transport, kind: str
) -> None:
    # A record makes windows of new keys on its later writes, fails, and the
    # next records make them again; an eviction then drops the fast path's
    # entries while the windows it made stay listed as made.
    params = {"size": 10, "step": 5, "grace": 0, "retention": 100}
    records = [
        (1, [("add", "a", 1), ("add", "b", 2), ("add", "c", 3)], True, False),
        (1, [("add", "a", 1), ("add", "b", 2), ("add", "c", 3)], False, False),
        (1, [("add", "c", 1), ("add", "d", 4), ("add", "a", 5)], False, True),
        (1, [("add", "a", 1), ("add", "b", 1), ("add", "d", 1)], False, True),
        (0, [("add", "ab", 1), ("del", "b", 0), ("add", "b", 7)], False, False),
        (6, [("add", "a", 1), ("add", "b", 1), ("add", "ab", 1)], False, True),
    ]
    run_records(transport, kind, params, records, cache_size=2)
