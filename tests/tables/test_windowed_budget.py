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
from statestream.tables import Table, windowed_shard
from tests.tables.windowed_harness import Feeder, open_manager

SPREAD = 2_500  # windows with distinct due times: more than one budget
GRACE = 10_000_000  # nothing closes while the windows are written


def test_a_far_write_closes_and_expires_in_budgets_every_window_once(
    embedded: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = embedded
    monkeypatch.setattr(windowed_shard, "_BUDGET", 1_000)
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
