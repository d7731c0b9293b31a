"""``WindowedTable`` on one partition: declaring, and writes, reads, lateness,
closing and rollback case by case (each with its expected values worked out
from the spec in the comments).

The model-driven sequence properties are in ``test_windowed_sequences.py``,
what the store is asked for in ``test_windowed_scans.py``, commits, crashes
and restores in ``test_windowed_restore.py``.
"""

from __future__ import annotations

import logging
import operator
from datetime import timedelta
from typing import Any

import pytest

import statestream
from statestream.errors import ConfigurationError, TableError
from statestream.log import Transport
from statestream.tables import Table, TableManager, windowed
from statestream.tables.windowed import WindowedTable
from tests.tables.windowed_harness import (
    SOURCE,
    Feeder,
    as_tuple,
    open_manager,
    unique_app_id,
    windows,
)

# -- declaring -----------------------------------------------------------------------


def test_each_call_returns_a_new_windowed_table_like_its_base() -> None:
    base: Table[str, int] = Table(
        "per-minute", default=int, key_codec="str", store_url="memory://", cache_size=7
    )
    made = [
        base.tumbling(60_000, grace=5_000, retention=3_600_000),
        base.hopping(size=10_000, step=1_000),
        base.sliding(10_000),
        base.session(gap=30_000),
    ]
    for table in made:
        assert isinstance(table, WindowedTable)
        assert isinstance(table, Table)
        assert table is not base
        assert table.name == "per-minute"
        assert table.default is int
        assert table.key_codec is base.key_codec
        assert table.value_codec is base.value_codec
        assert table.store_url == "memory://"
    assert len({id(t) for t in made}) == 4
    assert not isinstance(base, WindowedTable), "the base table is unchanged"


def test_durations_may_be_timedeltas() -> None:
    table = Table("td", default=int).tumbling(
        timedelta(minutes=1), grace=timedelta(seconds=5), retention=timedelta(hours=1)
    )
    assert isinstance(table, WindowedTable)
    Table("td2").hopping(size=timedelta(seconds=10), step=timedelta(seconds=1))
    Table("td3").session(gap=timedelta(seconds=30))
    Table("td4").sliding(timedelta(seconds=10))


def test_windowed_names_are_exported() -> None:
    for name in ("WindowedTable", "WindowedValue", "ClosedWindow", "LateRecord"):
        assert getattr(statestream, name) is getattr(windowed, name), name
    assert statestream.WindowedValue(1, 2, 3) == (1, 2, 3)
    assert statestream.WindowedValue(1, 2, 3).start == 1
    assert statestream.ClosedWindow("t", 1, 2).table == "t"


BAD = [
    (lambda t: t.tumbling(0), "size"),
    (lambda t: t.tumbling(-5), "size"),
    (lambda t: t.tumbling(timedelta(0)), "size"),
    (lambda t: t.hopping(size=0, step=1), "size"),
    (lambda t: t.hopping(size=10, step=0), "step"),
    (lambda t: t.hopping(size=10, step=-1), "step"),
    (lambda t: t.hopping(size=10, step=11), "step"),
    (lambda t: t.sliding(0), "size"),
    (lambda t: t.session(gap=0), "gap"),
    (lambda t: t.session(gap=-1), "gap"),
    (lambda t: t.tumbling(10, grace=-1), "grace"),
    (lambda t: t.tumbling(10, grace=timedelta(seconds=-1)), "grace"),
    (lambda t: t.hopping(size=10, step=5, retention=-1), "retention"),
    (lambda t: t.session(gap=10, retention=-1), "retention"),
    (lambda t: t.sliding(10, grace=-3), "grace"),
    (lambda t: t.tumbling(10, event_time=5), "event_time"),
    (lambda t: t.tumbling(10, on_late="log"), "on_late"),
    (lambda t: t.sliding(10, merge=0), "merge"),
    (lambda t: t.session(gap=10, merge="add"), "merge"),
]


@pytest.mark.parametrize(("declare", "option"), BAD)
def test_bad_options_raise_configuration_errors_naming_table_and_option(
    declare: Any, option: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        declare(Table("cfg-table", default=int))
    text = str(caught.value)
    assert "cfg-table" in text, text
    assert option in text, text


def test_windowed_changelogs_are_compacted_and_deleted(transport: Transport) -> None:
    day = 86_400_000
    tables = [
        Table("plain"),
        Table("tum").tumbling(60_000, grace=5_000, retention=3_600_000),
        Table("hop").hopping(size=10_000, step=1_000, grace=7),
        Table("sli").sliding(20_000, retention=1_000),
        Table("ses").session(gap=30_000, grace=11, retention=99),
    ]
    expected = {
        "tum": 60_000 + 5_000 + 3_600_000 + day,
        "hop": 10_000 + 7 + day + day,
        "sli": 20_000 + 1_000 + day,
        "ses": 30_000 + 11 + 99 + day,
    }
    manager = open_manager(transport, tables)
    admin = transport.admin()
    try:
        plain = admin.describe_topic(manager.changelog_topic("plain"))
        assert plain is not None
        assert plain.cleanup_policy == "compact"
        for name, retention in expected.items():
            described = admin.describe_topic(manager.changelog_topic(name))
            assert described is not None
            assert described.cleanup_policy == "compact,delete", name
            assert int(described.config["retention.ms"]) == retention, name
    finally:
        admin.close()
        manager.close()


# -- deterministic behaviour -----------------------------------------------------------


def test_late_writes_are_dropped_counted_and_passed_to_on_late(transport: Transport) -> None:
    seen: list[Any] = []
    table = Table("late", default=int).tumbling(10, grace=5, on_late=seen.append)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 100)
        table["k"] += 1
        feeder.begin("k", 84)  # [80, 90): due 90, closed at 95
        message = feeder.message
        table["k"] += 10
        assert table.stream_time() == 100
        assert table.late_count() == 1
        assert feeder.late("late") == 1
        assert [tuple(w) for w in table["k"].all()] == [(100, 110, 1)]
        assert len(seen) == 1
        record = seen[0]
        assert (record.table, record.key, record.event_time, record.stream_time) == (
            "late",
            "k",
            84,
            100,
        )
        assert record.message == message
        feeder.begin("k", 95)  # [90, 100): due 100, open until 105
        table["k"] += 3
        assert table.late_count() == 1
        assert [tuple(w) for w in table["k"].all()] == [(90, 100, 3), (100, 110, 1)]
        assert table.stream_time() == 100, "an older write does not move stream time back"
    finally:
        manager.close()


def test_late_writes_are_logged_without_on_late(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    table = Table("late-log", default=int).tumbling(10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 100)
        table["k"] += 1
        with caplog.at_level(logging.WARNING):
            feeder.begin("k", 5)
            table["k"] += 1
        assert any(r.levelno == logging.WARNING for r in caplog.records)
        assert table.late_count() == 1
    finally:
        manager.close()


def test_event_time_function_decides_windows_and_stream_time(transport: Transport) -> None:
    table = Table("et", default=int).tumbling(10, event_time=lambda m: m.value["ts"])
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 999_999, {"ts": 42})  # the timestamp is not the event time
        table["k"] += 1
        assert table.stream_time() == 42
        assert [tuple(w) for w in table["k"].all()] == [(40, 50, 1)]
        assert as_tuple(table["k"].current()) == (40, 50, 1)
    finally:
        manager.close()


def test_sliding_windows_refuse_assignment(transport: Transport) -> None:
    table = Table("sl-set", default=int).sliding(10)
    manager = open_manager(transport, [table])
    try:
        Feeder(manager).begin("k", 5)
        with pytest.raises(TableError):
            table["k"] = 3
        table["k"] += 2
        table["k"] = table["k"]  # a WindowSet assigned back is a no-op
        assert [tuple(w) for w in table["k"].all()] == [(-4, 6, 2)]
    finally:
        manager.close()


def test_without_a_default_a_new_window_raises_key_error(transport: Transport) -> None:
    table = Table("nodef").tumbling(10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 5)
        with pytest.raises(KeyError):
            table["k"] += 1
        with pytest.raises(KeyError):
            table["k"].update(lambda v: v + 1)
        table["k"] = 5
        table["k"] += 1
        assert as_tuple(table["k"].current()) == (0, 10, 6)
    finally:
        manager.close()


def test_hopping_windows_merge_their_slices_and_refuse_assignment(transport: Transport) -> None:
    table = Table("hop-set", default=int).hopping(size=10, step=5)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 12)
        table["k"] += 7
        assert [tuple(w) for w in table["k"].all()] == [(5, 15, 7), (10, 20, 7)]
        assert as_tuple(table["k"].current()) == (10, 20, 7), "the latest start"
        with pytest.raises(TableError, match=r"cannot be assigned.*update it with"):
            table["k"] = 1
        feeder.begin("k", 16)  # closes [5, 15) (grace 0)
        table["k"] += 1
        assert [tuple(w) for w in table["k"].all()] == [(5, 15, 7), (10, 20, 8), (15, 25, 1)]
        assert [(cw.start, cw.end, v) for cw, _, v in feeder.take_closed("hop-set")] == [(5, 15, 7)]
        feeder.begin("k", 14)  # [5, 15) holds 14 and closed: late, though [10, 20) is open
        table["k"] += 100
        assert table.late_count() == 1
        assert [tuple(w) for w in table["k"].all()] == [(5, 15, 7), (10, 20, 8), (15, 25, 1)]
        feeder.begin("k", 19)
        table["k"].update(lambda v: v * 10)  # applies to the slice [15, 20): 1 -> 10
        assert [tuple(w) for w in table["k"].all()] == [(5, 15, 7), (10, 20, 17), (15, 25, 10)]
    finally:
        manager.close()


def test_hopping_size_must_be_a_whole_number_of_steps() -> None:
    with pytest.raises(ConfigurationError, match=r"whole number of steps.*for example 5 ms"):
        Table("hop-bad").hopping(size=10, step=4)


def test_session_merge_is_older_then_newer_then_the_update(transport: Transport) -> None:
    table = Table("sess-m", default=list).session(gap=10, grace=100, merge=operator.add)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for t, x in ((100, "a"), (115, "b"), (118, "c")):
            feeder.begin("k", t)
            table["k"] += [x]
        assert [tuple(w) for w in table["k"].all()] == [(100, 101, ["a"]), (115, 119, ["b", "c"])]
        feeder.begin("k", 108)  # within 10 of 100 and of 115: one session now
        table["k"] += ["d"]
        assert [tuple(w) for w in table["k"].all()] == [(100, 119, ["a", "b", "c", "d"])]
        feeder.begin("k", 125)  # extends it
        table["k"] = ["set"]
        assert [tuple(w) for w in table["k"].all()] == [(100, 126, ["set"])]
    finally:
        manager.close()


def test_sliding_write_into_an_open_window_is_not_late(transport: Transport) -> None:
    # size 2, grace 0: after a record at 1 (stream time 1), [0, 2) is open
    # (due 2) and contains 0, so a record at 0 updates it; only [-1, 1) closed.
    table = Table("sl-late", default=int).sliding(2)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 1)
        table["k"] += 1
        feeder.begin("k", 0)
        table["k"] += 10
        assert table.late_count() == 0
        assert as_tuple(table["k"].at(1)) == (0, 2, 11)
        # t's right window [1, 3) exists now (the record at 1 lies in it).
        assert (1, 3, 1) in [tuple(w) for w in table["k"].all()]
    finally:
        manager.close()


def test_sliding_update_applies_to_the_point_aggregate(transport: Transport) -> None:
    # A window's value merges point aggregates: update(fn) changes the point
    # at t, not the windows' merged values.
    table = Table("sl-upd", default=int).sliding(10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 1)
        table["k"] += 5
        feeder.begin("k", 2)
        table["k"].update(lambda v: v * 2 + 1)  # point(2) = 0 * 2 + 1 = 1
        assert as_tuple(table["k"].at(2)) == (-7, 3, 6), "merge(point 1 = 5, point 2 = 1)"
        feeder.begin("k", 2)
        table["k"].update(lambda v: v * 2)  # point(2) = 2
        assert as_tuple(table["k"].at(2)) == (-7, 3, 7)
    finally:
        manager.close()


def test_sliding_update_reaches_an_open_window_whose_first_point_is_done(
    transport: Transport,
) -> None:
    # size 2, grace 0. Records of "k" at 1 and 2 make [2, 4) (right of 1, left
    # of 3). At stream time 3 everything holding 1 has closed, but [2, 4) is
    # open (due 4): a record at 2 must update it.
    table = Table("sl-old", default=int).sliding(2, retention=100)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for key, t, x in (("k", 1, 0), ("k", 2, 0), ("other", 3, 0), ("k", 2, 1)):
            feeder.begin(key, t)
            table[key] += x
        assert table.late_count() == 0
        assert as_tuple(table["k"].at(3)) == (2, 4, 1)
        assert (1, 3, 0) in [tuple(w) for w in table["k"].all()], "closed: not updated"
    finally:
        manager.close()


def test_sliding_write_creates_an_open_right_window_of_a_done_point(
    transport: Transport,
) -> None:
    # size 4, grace 12: records at 0 and 16, then one at 3 (not late: [3, 7)
    # is open). Left of 3, [0, 4), is closed (due 4 + 12 <= 16): not created.
    # Right of 0, [1, 5), holds 3 and is open (due 5 + 12 > 16): created,
    # although every window holding 0 itself has closed.
    table = Table("sl-old2", default=int).sliding(4, grace=12, retention=100)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for t, x in ((0, 1), (16, 10), (3, 100)):
            feeder.begin("k", t)
            table["k"] += x
        assert table.late_count() == 0
        assert [tuple(w) for w in table["k"].windows_at(3)] == [(1, 5, 100)]
    finally:
        manager.close()


def test_session_write_inside_an_open_session_is_not_late(transport: Transport) -> None:
    # gap 2, grace 12: [0, 3) is due at 3 + 2 = 5 and closes at stream time 17.
    table = Table("ses-in", default=int).session(gap=2, grace=12)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for t in (0, 2, 14):
            feeder.begin("k", t)
            table["k"] += 1
        assert [tuple(w) for w in table["k"].all()] == [(0, 3, 2), (14, 15, 1)]
        feeder.begin("k", 0)  # inside the open session [0, 3)
        table["k"] += 10
        assert table.late_count() == 0
        assert [tuple(w) for w in table["k"].all()] == [(0, 3, 12), (14, 15, 1)]
    finally:
        manager.close()


def test_a_record_exactly_gap_after_a_session_joins_it(transport: Transport) -> None:
    # gap 2, grace 0: a record at 2 is within the gap of [0, 1), so it joins
    # it (a session is due at end + gap = 3), also when it moves stream time to 2.
    table = Table("ses-edge", default=int).session(gap=2)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 0)
        table["k"] += 1
        feeder.begin("k", 2)
        table["k"] += 1
        assert table.late_count() == 0
        assert table.stream_time() == 2
        assert [tuple(w) for w in table["k"].all()] == [(0, 3, 2)]
        assert feeder.take_closed("ses-edge") == []
        feeder.begin("j", 5)  # stream time 5 = end 3 + gap 2: closed now
        table["j"] += 1
        assert [(c.start, c.end, k, v) for c, k, v in feeder.take_closed("ses-edge")] == [
            (0, 3, "k", 2)
        ]
    finally:
        manager.close()


def test_stream_time_and_late_counts_are_per_partition(transport: Transport) -> None:
    table = Table("per-part", default=int).tumbling(10)
    manager = TableManager(unique_app_id(), [table], transport, "memory://")
    try:
        manager.ensure_changelogs(2)
        feeders = {}
        for p in (0, 1):
            manager.open_partition(p)
            manager.restore_partition(p, {SOURCE: None})
            feeders[p] = Feeder(manager, p)
        manager.bind(0)
        feeders[0].begin("k", 100)
        table["k"] += 1
        manager.bind(1)
        assert table.stream_time() is None
        feeders[1].begin("k", 5)  # late on partition 0, not here
        table["k"] += 2
        assert table.stream_time() == 5
        assert [tuple(w) for w in table["k"].all()] == [(0, 10, 2)]
        feeders[1].begin("k", 30)
        table["k"] += 1
        feeders[1].begin("k", 3)  # late here
        table["k"] += 1
        manager.bind(0)
        assert table.stream_time() == 100
        assert [tuple(w) for w in table["k"].all()] == [(100, 110, 1)]
        assert (feeders[0].late("per-part"), feeders[1].late("per-part")) == (0, 1)
        assert table.late_count() == 1
    finally:
        manager.close()


def test_a_failed_record_is_rolled_back_entirely(transport: Transport) -> None:
    tumbling = Table("rb-t", default=int).tumbling(10)
    sessions = Table("rb-s", default=int).session(gap=5, grace=10)
    manager = open_manager(transport, [tumbling, sessions])
    try:
        assert {id(s) for s in manager.windowed_shards(0)} == {
            id(manager.windowed("rb-t", 0)),
            id(manager.windowed("rb-s", 0)),
        }
        feeder = Feeder(manager)
        for t in (1, 8):
            feeder.begin("k", t)
            tumbling["k"] += 1
            sessions["k"] += 1
        assert feeder.take_closed("rb-t") == []
        feeder.begin("k", 24)  # closes [0, 10)
        tumbling["k"] += 5
        assert feeder.message is not None
        feeder.message = feeder.message._replace(timestamp=5)  # the same record
        sessions["k"] += 5  # bridges [1, 2) and [8, 9)
        assert windows(sessions, "k") == [(1, 9, 7)]
        manager.rollback_record(0)
        assert tumbling.stream_time() == 8
        assert sessions.stream_time() == 8
        assert feeder.take_closed("rb-t") == []
        assert windows(tumbling, "k") == [(0, 10, 2)]
        assert windows(sessions, "k") == [(1, 2, 1), (8, 9, 1)]
        feeder.begin("k", 24)  # processed again: it closes [0, 10) again
        tumbling["k"] += 5
        closed = feeder.take_closed("rb-t")
        assert [(c.start, c.end, v) for c, _, v in closed] == [(0, 10, 2)]
    finally:
        manager.close()


def test_a_failed_record_that_only_moved_stream_time_is_rolled_back(
    transport: Transport,
) -> None:
    # The second record's += takes the fast path (its key's window is known),
    # which keeps only stream time for a rollback: that must be enough.
    table = Table("rb-fast", default=int).tumbling(10, grace=2)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("k", 1)
        table["k"] += 1
        feeder.begin("k", 6)
        table["k"] += 10
        table["k"] += 10
        assert table.stream_time() == 6
        manager.rollback_record(0)
        assert table.stream_time() == 1
        assert windows(table, "k") == [(0, 10, 1)]
        feeder.begin("k", 11)  # closes nothing: [0, 10) is open until 12
        table["k"] += 100
        feeder.begin("k", 3)
        table["k"] += 1000
        assert windows(table, "k") == [(0, 10, 1001), (10, 20, 100)]
        assert table.stream_time() == 11
    finally:
        manager.close()


def test_keys_that_compare_equal_across_types_keep_their_own_windows(
    transport: Transport,
) -> None:
    # 1, 1.0 and True are equal (and hash alike) but encode to three store
    # keys: the += fast path, which remembers keys, must not mix them up.
    table = Table("equal-keys", default=int).tumbling(10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        for t in (1, 2):
            feeder.begin("k", t)
            table[1] += 1
            table[1.0] += 10
            table[True] += 100
            table[1] += 1
        assert windows(table, 1) == [(0, 10, 4)]
        assert windows(table, 1.0) == [(0, 10, 20)]
        assert windows(table, True) == [(0, 10, 200)]
    finally:
        manager.close()


@pytest.mark.parametrize("cache_size", [50_000, 1])
def test_writes_after_commits_that_drop_entries_land_in_their_windows(
    transport: Transport, cache_size: int
) -> None:
    # A commit that applies a tombstone drops the entry from the buffer, and
    # one over cache_size drops clean entries too. The += fast path holds
    # entries across commits: a deleted one says so (its next += makes the
    # window again from the default), an evicted one must not be written
    # (the write would be lost), so evictions make it let go of them all.
    table = Table("after-drops", default=int, cache_size=cache_size).tumbling(10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        feeder.begin("r", 1)
        for key in "abc":
            table[key] += 1
        manager.commit(0, lambda: None)
        feeder.begin("r", 2)
        del table["b"]
        table["a"] += 1
        table["c"] += 1
        manager.commit(0, lambda: None)  # b's tombstone leaves the buffer
        for t in (3, 4):
            feeder.begin("r", t)
            table["a"] += 10
            table["b"] += 100
            table["c"] += 1000
            manager.commit(0, lambda: None)
        assert windows(table, "a") == [(0, 10, 22)]
        assert windows(table, "b") == [(0, 10, 200)]
        assert windows(table, "c") == [(0, 10, 2002)]
    finally:
        manager.close()


def test_reads_do_not_advance_stream_time_and_del_removes_every_window(
    transport: Transport,
) -> None:
    table = Table("reads", default=int).tumbling(10)
    manager = open_manager(transport, [table])
    try:
        feeder = Feeder(manager)
        assert table.stream_time() is None
        for t in (3, 14, 25):
            feeder.begin("k", t)
            table["k"] += t
        feeder.begin("j", 1000)
        assert [tuple(w) for w in table["k"].all()] == [(0, 10, 3), (10, 20, 14), (20, 30, 25)]
        assert as_tuple(table["k"].latest()) == (20, 30, 25)
        assert [tuple(w) for w in table["k"].range(10, 20)] == [(10, 20, 14)]
        assert [tuple(w) for w in table["k"].range(9, 21)] == [
            (0, 10, 3),
            (10, 20, 14),
            (20, 30, 25),
        ]
        assert [tuple(w) for w in table["k"].range(10, 10)] == []
        assert [tuple(w) for w in table["k"].windows_at(14)] == [(10, 20, 14)]
        assert table["k"].current() is None  # the current record is at 1000
        assert table["j"].all() == []
        assert table["j"].latest() is None
        assert table.stream_time() == 25
        assert sorted(table.keys()) == ["k"]
        del table["k"]
        assert table["k"].all() == []
        assert list(table.keys()) == []
    finally:
        manager.close()


class _FoldingCodec:
    """A key codec that folds case: what it decodes is not what it was given."""

    name = "folding"

    def encode(self, obj: Any) -> bytes:
        return str(obj).lower().encode()

    def decode(self, data: bytes) -> Any:
        return data.decode()


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
def test_closes_report_keys_as_the_key_codec_decodes_them(transport: Transport, kind: str) -> None:
    # Closes name keys without decoding them where the codec gives back what it
    # was given (json); any other codec's keys are decoded, as a read would.
    for codec, written, reported in ((None, "Ab", "Ab"), (_FoldingCodec(), "Ab", "ab")):
        base = Table(f"keys-{kind}-{codec is None}", default=int, key_codec=codec or "json")
        table = base.tumbling(10) if kind == "tumbling" else base.hopping(size=10, step=5)
        manager = open_manager(transport, [table])
        try:
            feeder = Feeder(manager)
            feeder.begin(written, 1)
            table[written] += 2
            assert feeder.take_closed(table.name) == []
            feeder.begin(written, 30)
            table[written] += 1
            closed = feeder.take_closed(table.name)
            assert closed, "the windows of time 1 closed"
            assert {key for _, key, _ in closed} == {reported}
            assert all(value == 2 for _, _, value in closed)
        finally:
            manager.close()


def test_views_of_two_partitions_write_and_read_their_own_windows(
    transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A view keeps the WindowSet of each str key it was asked for (one
    # lookup per `view[key] += x`); each view's are its own shard's, and
    # the cache starts over beyond its bound without losing a write.
    monkeypatch.setattr(windowed, "_MAX_SETS", 3)
    table = Table("two-views", default=int).tumbling(10)
    manager = TableManager(unique_app_id(), [table], transport, "memory://")
    manager.ensure_changelogs(2)
    feeders = []
    views = []
    try:
        for partition in (0, 1):
            manager.open_partition(partition)
            manager.restore_partition(partition, {SOURCE: None})
            feeders.append(Feeder(manager, partition))
            views.append(table.view(manager.shard("two-views", partition)))
        keys = ["a", "b", "c", "d", "e"]
        for t in (1, 2):
            for partition, (feeder, view) in enumerate(zip(feeders, views, strict=True)):
                feeder.begin("r", t)
                for i, key in enumerate(keys):
                    view[key] += (partition + 1) * (i + 1)
                    view[key] += 1
        for partition, view in enumerate(views):
            assert view["a"] is view["a"]
            for i, key in enumerate(keys):
                expected = 2 * ((partition + 1) * (i + 1) + 1)
                assert [tuple(w) for w in view[key].all()] == [(0, 10, expected)], (partition, key)
            assert len(view._sets) <= 3
        assert views[0]["a"] is not views[1]["a"]
    finally:
        manager.close()
