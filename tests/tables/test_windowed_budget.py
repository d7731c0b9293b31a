"""One write closes and deletes a bounded number of windows; later writes finish the rest.

A write that moves stream time far ahead (a backfill's first live record,
a partition idle for a day) may make millions of windows due. Each write
closes and deletes at most ``_BUDGET`` of them (all of one due time
together), so no record stalls its partition or grows the write buffer
without bound; every write after it, late ones included, goes on where the
last stopped. Every window is reported once, none is deleted before it was
reported, and in the end exactly the live windows remain.
"""

from __future__ import annotations

import pytest

from statestream.log import Transport
from statestream.tables import Table, window_closing
from tests.tables.windowed_harness import Feeder, open_manager

SPREAD = 2_500  # windows with distinct due times: more than one budget
GRACE = 10_000_000  # nothing closes while the windows are written


def test_a_far_write_closes_and_expires_in_budgets_every_window_once(
    embedded: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = embedded
    monkeypatch.setattr(window_closing, "_BUDGET", 1_000)
    table = Table("budget", default=int).tumbling(10, grace=GRACE, retention=0)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for i in range(SPREAD):
            feeder.begin(f"k{i}", i * 10)  # one window per key, each due at its end
            table[f"k{i}"] += 1
        manager.commit(0, lambda: None)
        shard = manager.windowed("budget", 0)
        shard.take_closed()
        far = SPREAD * 10 + 2 * GRACE
        feeder.begin("live", far)
        table["live"] += 1
        reported = [(w.start, key, value) for w, key, value in shard.take_closed()]
        assert 0 < len(reported) <= 1_000 + 1, "one write closes one budget"
        assert shard.backlog
        writes = 1
        while shard.backlog:
            feeder.begin("late", 5)  # a late write: it still finishes the work
            table["late"] += 1
            reported += [(w.start, key, value) for w, key, value in shard.take_closed()]
            writes += 1
            assert writes < 100, "the backlog does not shrink"
        expected = [(i * 10, f"k{i}", 1) for i in range(SPREAD)]
        assert sorted(reported) == sorted(expected), "every window reported exactly once"
        assert writes >= SPREAD // 1_000
        manager.commit(0, lambda: None)
        left = {key: [tuple(w) for w in table[key].all()] for key in table}
        assert left == {"live": [(far - far % 10, far - far % 10 + 10, 1)]}
    finally:
        manager.close()


def test_hopping_closes_in_budgets_report_every_window_once_with_its_slices(
    embedded: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slices of one key per step, then a far write: each write reports at
    # most about a budget of slices' windows, and every window (merging up
    # to four slices) is reported once, with the sum of its slices.
    monkeypatch.setattr(window_closing, "_BUDGET", 300)
    size, step, keys, steps = 40, 10, 4, 300
    table = Table("hop-budget", default=int).hopping(size, step, grace=GRACE, retention=0)
    manager = open_manager(embedded, [table])
    try:
        feeder = Feeder(manager)
        slices: dict[tuple[str, int], int] = {}
        for i in range(steps):
            for k in range(keys):
                if (i + k) % 3:  # gaps: some windows hold fewer slices
                    key = f"k{k}"
                    feeder.begin(key, i * step + k)
                    table[key] += i + 1
                    slices[key, i * step] = i + 1
        manager.commit(0, lambda: None)
        shard = manager.windowed("hop-budget", 0)
        assert shard.take_closed() == []
        feeder.begin("live", steps * step + 2 * GRACE)
        table["live"] += 1
        reported = [(key, w.start, w.end, v) for w, key, v in shard.take_closed()]
        assert 0 < len(reported) < len(slices), "one write reports one budget"
        writes = 1
        while shard.backlog:
            feeder.begin("late", 5)
            table["late"] += 1
            reported += [(key, w.start, w.end, v) for w, key, v in shard.take_closed()]
            writes += 1
            assert writes < 200, "the backlog does not shrink"
        assert writes > 2
        expected = {}
        for (key, s), value in slices.items():
            for a in range(s - size + step, s + 1, step):
                expected[key, a, a + size] = expected.get((key, a, a + size), 0) + value
        assert len(reported) == len(set(reported)), "a window was reported twice"
        assert sorted(reported) == sorted((k, a, e, v) for (k, a, e), v in expected.items())
        dues = [end for _, _, end, _ in reported]
        assert dues == sorted(dues), "reported in due order"
    finally:
        manager.close()
