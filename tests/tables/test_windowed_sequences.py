"""Sequence properties: a ``WindowedTable`` and the reference model, write by write.

Both get the same writes (add, subtract, update, assign, delete) at event
times in and out of order, late ones included, for every window kind and
random sizes, grace and retention. After every write: every window of every
key, the key set and items, stream time, the late count (table and shard),
``current()``/``at()``/``windows_at()``/``range()``/``latest()``, and the
windows ``take_closed()`` reports (exactly those the model closed at that
write, with their values, in due order).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestream.log import Transport
from tests.tables.window_model import KINDS, WindowModel
from tests.tables.windowed_harness import (
    KEYS,
    Feeder,
    apply_op,
    as_tuple,
    build,
    check_closed,
    check_state,
    open_manager,
    ops_for,
    params_for,
)

# -- sequence properties against the model -------------------------------------------


def run_sequence(
    transport: Transport, kind: str, params: dict[str, int], ops: list[tuple[str, str, int, int]]
) -> WindowModel:
    table, model = build(kind, "seq", params)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        late = 0
        for drawn, key, delta, amount in ops:
            t = max(0, (model.stream_time or 0) + delta)
            op = "add" if drawn == "del" and key not in model.live_keys() else drawn
            feeder.begin(key, t, amount)
            outcome = apply_op(table, model, op, key, t, amount)
            reports = feeder.take_closed("seq")
            if outcome is None:
                assert reports == []
            else:
                check_closed("seq", model, reports, outcome.closed)
                late += outcome.late
            assert table.late_count() == late == model.late
            assert feeder.late("seq") == late
            check_state(table, model, KEYS)
            assert as_tuple(table[key].current()) == model.at(key, t)
            for probe in (t - 7, t, t + 3):
                assert as_tuple(table[key].at(probe)) == model.at(key, probe)
                assert [tuple(w) for w in table[key].windows_at(probe)] == model.windows_at(
                    key, probe
                )
            assert [tuple(w) for w in table[key].range(t - 10, t + 4)] == model.range(
                key, t - 10, t + 4
            )
            assert as_tuple(table[key].latest()) == model.latest(key)
    finally:
        manager.close()
    return model


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_writes_reads_lateness_and_closing_match_the_model(
    transport: Transport, kind: str, data: st.DataObject
) -> None:
    params = data.draw(params_for(kind), label="params")
    ops = data.draw(st.lists(ops_for(kind), max_size=30), label="ops")
    run_sequence(transport, kind, params, ops)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_window_is_reported_once_when_it_closes(
    transport: Transport, kind: str, data: st.DataObject
) -> None:
    # In order-ish input and then one far write: every window closes; the
    # per-write check in run_sequence makes each report exact and timely, so
    # here: each window the model closed was reported exactly once overall.
    params = data.draw(params_for(kind), label="params")
    ops = data.draw(st.lists(ops_for(kind), max_size=20), label="ops")
    table, model = build(kind, "fin", params)
    manager = open_manager(transport, [table])
    reported: list[tuple[Any, int, int, Any]] = []
    try:
        feeder = Feeder(manager)
        for drawn, key, delta, amount in [*ops, ("add", "zz", 10**6, 1)]:
            t = max(0, (model.stream_time or 0) + delta)
            feeder.begin(key, t)
            apply_op(table, model, "add" if drawn == "del" else drawn, key, t, amount)
            for cw, k, value in feeder.take_closed("fin"):
                assert model.is_closed((cw.start, cw.end), model.stream_time)
                reported.append((k, cw.start, cw.end, value))
    finally:
        manager.close()
    assert len(reported) == len(set(map(repr, reported))), "a window was reported twice"
    assert sorted(reported, key=repr) == sorted(
        ((k, s, e, v) for (k, s, e), v in model.closed.items()), key=repr
    )
    everything = [(k, w) for k, mine in model.windows.items() for w in mine if k != "zz"]
    assert all(model.is_closed(w, model.stream_time) for _, w in everything)
