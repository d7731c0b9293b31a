"""Window assignment of all four kinds, against brute force and the reference model.

Every event lands in exactly the windows that contain it: checked on the pure
functions of ``statestream.tables.windows`` and through a ``WindowedTable``
(each event appends its id, so a window's value names the events in it).
Sessions merge like the model (and like connected components of "within
gap"); sliding windows are the spec's set, with values merged from point
aggregates. No event is late here (grace is huge): lateness has its own tests.
"""

from __future__ import annotations

import operator

from hypothesis import given, settings
from hypothesis import strategies as st

from statestream.log import Transport
from statestream.tables import Table
from statestream.tables.windows import hopping_windows, tumbling_window
from tests.tables.window_model import (
    WindowModel,
    brute_force_hopping,
    brute_force_tumbling,
    sessions_of,
    sliding_windows_of,
)
from tests.tables.windowed_harness import Feeder, as_tuple, open_manager, windows

NO_LATENESS = 10**12  # a grace no stream time in these tests reaches
TIMES = st.integers(-(10**12), 10**12)
SIZES = st.integers(1, 5000)
KEYS = st.sampled_from(["a", "b", "ab"])  # "a" is a prefix of "ab"
EVENTS = st.lists(st.tuples(KEYS, st.integers(0, 400)), min_size=1, max_size=25)
SETTINGS = settings(max_examples=40, deadline=None)


# -- the pure functions ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(TIMES, SIZES)
def test_tumbling_window_is_the_only_aligned_window_containing_t(t: int, size: int) -> None:
    assert tumbling_window(t, size) == brute_force_tumbling(t, size)


@settings(max_examples=300, deadline=None)
@given(TIMES, st.integers(1, 300), st.data())
def test_hopping_windows_are_exactly_the_windows_containing_t(
    t: int, size: int, data: st.DataObject
) -> None:
    step = data.draw(st.integers(1, size), label="step")  # divisor of size or not
    assert hopping_windows(t, size, step) == brute_force_hopping(t, size, step)


# -- through the table ---------------------------------------------------------------


def _run(
    transport: Transport,
    table: Table,  # type: ignore[type-arg]
    model: WindowModel,
    events: list[tuple[str, int]],
    amount: object = None,
) -> None:
    """Write each event (``+= [its index]`` unless ``amount``) to table and model alike."""
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for i, (key, t) in enumerate(events):
            feeder.begin(key, t, i)
            x = [i] if amount is None else amount
            table[key] += x
            outcome = model.write(key, t, lambda v, x=x: v + x)
            assert not outcome.late
            assert table.stream_time() == model.stream_time == max(t for _, t in events[: i + 1])
        for key in sorted({k for k, _ in events}):
            assert windows(table, key) == model.all(key), key
    finally:
        manager.close()


@SETTINGS
@given(EVENTS, st.integers(1, 60), st.data())
def test_tumbling_and_hopping_events_land_in_exactly_their_windows(
    transport: Transport, events: list[tuple[str, int]], size: int, data: st.DataObject
) -> None:
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    step = data.draw(st.sampled_from(divisors), label="step")
    hopping = data.draw(st.booleans(), label="hopping")
    base = Table("assign", default=list)
    if hopping:
        table = base.hopping(size, step, grace=NO_LATENESS)
        model = WindowModel("hopping", size=size, step=step, grace=NO_LATENESS, default=list)
    else:
        table = base.tumbling(size, grace=NO_LATENESS)
        model = WindowModel("tumbling", size=size, grace=NO_LATENESS, default=list)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for i, (key, t) in enumerate(events):
            feeder.begin(key, t, i)
            table[key] += [i]
            model.write(key, t, lambda v, i=i: [*v, i])
        for key in sorted({k for k, _ in events}):
            stored = windows(table, key)
            assert stored == model.all(key), key
            # Brute force, without the model: each window holds exactly its events.
            for start, end, ids in stored:
                assert end - start == size
                assert start % (step if hopping else size) == 0
                inside = [i for i, (k, t) in enumerate(events) if k == key and start <= t < end]
                if hopping:  # slices merge in time order: ids by step, then as written
                    inside.sort(key=lambda i: events[i][1] - events[i][1] % step)
                assert ids == inside, (key, start, end)
            assert {(s, e) for s, e, _ in stored} == {
                w
                for k, t in events
                if k == key
                for w in (
                    brute_force_hopping(t, size, step)
                    if hopping
                    else [brute_force_tumbling(t, size)]
                )
            }
            for i, (k, t) in enumerate(events):
                if k != key:
                    continue
                at = [tuple(w) for w in table[key].windows_at(t)]
                assert at == model.windows_at(key, t)
                assert all(i in ids for _, _, ids in at)
                assert as_tuple(table[key].at(t)) == model.at(key, t)
    finally:
        manager.close()


@SETTINGS
@given(EVENTS, st.integers(1, 40))
def test_sessions_merge_and_stay_apart_like_the_model(
    transport: Transport, events: list[tuple[str, int]], gap: int
) -> None:
    # merge=operator.add on lists: a merged value shows merge(older, newer) order.
    table = Table("sess", default=list).session(gap=gap, grace=NO_LATENESS, merge=operator.add)
    model = WindowModel("session", gap=gap, grace=NO_LATENESS, default=list)
    _run(transport, table, model, events)
    for key in sorted({k for k, _ in events}):
        mine = [(i, t) for i, (k, t) in enumerate(events) if k == key]
        components = sessions_of([t for _, t in mine], gap)
        expected = [(s, e, sorted(mine[j][0] for j in g)) for s, e, g in components]
        got = [(s, e, sorted(ids)) for s, e, ids in model.all(key)]
        assert got == expected, "the model agrees with connected components"


@SETTINGS
@given(EVENTS, st.integers(1, 40), st.data())
def test_session_values_table_against_components(
    transport: Transport, events: list[tuple[str, int]], gap: int, data: st.DataObject
) -> None:
    table = Table("sess2", default=int).session(gap=gap, grace=NO_LATENESS)
    amounts = data.draw(st.lists(st.integers(-5, 50), min_size=len(events), max_size=len(events)))
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for i, (key, t) in enumerate(events):
            feeder.begin(key, t)
            table[key] += amounts[i]
        for key in sorted({k for k, _ in events}):
            mine = [(amounts[i], t) for i, (k, t) in enumerate(events) if k == key]
            components = sessions_of([t for _, t in mine], gap)
            expected = [(s, e, sum(mine[j][0] for j in g)) for s, e, g in components]
            assert windows(table, key) == expected
            for s, e, value in expected:
                for t in (s, e - 1):
                    assert as_tuple(table[key].at(t)) == (s, e, value)
                # Sessions are more than gap apart: just outside one is no session.
                assert table[key].at(e) is None
                assert table[key].at(s - 1) is None
    finally:
        manager.close()


@SETTINGS
@given(EVENTS, st.integers(1, 50), st.data())
def test_sliding_windows_are_the_specs_set_with_merged_point_values(
    transport: Transport, events: list[tuple[str, int]], size: int, data: st.DataObject
) -> None:
    amounts = data.draw(st.lists(st.integers(-5, 50), min_size=len(events), max_size=len(events)))
    table = Table("slide", default=int).sliding(size, grace=NO_LATENESS)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for i, (key, t) in enumerate(events):
            feeder.begin(key, t)
            table[key] += amounts[i]
        for key in sorted({k for k, _ in events}):
            mine = [(t, amounts[i]) for i, (k, t) in enumerate(events) if k == key]
            expected = sorted(
                (s, e, sum(a for t, a in mine if s <= t < e))
                for s, e in sliding_windows_of([t for t, _ in mine], size)
            )
            assert windows(table, key) == expected, key
            for t, _ in mine:
                left = (t - size + 1, t + 1)
                assert as_tuple(table[key].at(t)) == next(w for w in expected if w[:2] == left)
    finally:
        manager.close()


@SETTINGS
@given(EVENTS, st.integers(1, 50))
def test_sliding_values_hold_exactly_the_points_inside(
    transport: Transport, events: list[tuple[str, int]], size: int
) -> None:
    # Lists show which records a window merged. The spec does not say in
    # which order point aggregates merge, so the lists compare as multisets.
    table = Table("slide2", default=list).sliding(size, grace=NO_LATENESS, merge=operator.add)
    model = WindowModel("sliding", size=size, grace=NO_LATENESS, default=list)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for i, (key, t) in enumerate(events):
            feeder.begin(key, t, i)
            table[key] += [i]
            model.write(key, t, lambda v, i=i: [*v, i])
        for key in sorted({k for k, _ in events}):
            got = [(s, e, sorted(ids)) for s, e, ids in windows(table, key)]
            assert got == [(s, e, sorted(ids)) for s, e, ids in model.all(key)], key
    finally:
        manager.close()
