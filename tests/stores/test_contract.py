"""The store contract: every store type runs every test here (see conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from statestream.errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidOffsetError,
    InvalidTableNameError,
    OffsetRegressionError,
    StateStreamError,
    StoreClosedError,
    StoreError,
)
from statestream.stores.base import MAX_META_NAME, MAX_META_VALUE, Store

if TYPE_CHECKING:
    from tests.stores.conftest import StoreFactory

# Keys chosen so that byte order differs from every "natural" order: the empty
# key, NUL, prefixes of one another, 0xff runs, and multi-byte UTF-8.
KEYS_IN_BYTE_ORDER = [
    b"",
    b"\x00",
    b"\x00\x00",
    b"\x01",
    b"A",
    b"a",
    b"a\x00",
    b"ab",
    b"abc",
    b"a\xff",
    b"a\xff\xff",
    b"b",
    b"\x7f",
    b"\x80",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
]


def value_of(key: bytes) -> bytes:
    return b"v:" + key


def fill(store: Store, keys: list[bytes] = KEYS_IN_BYTE_ORDER, offset: int | None = 1) -> None:
    # Insert in a scrambled order so that insertion order cannot pass for key order.
    scrambled = keys[1::2] + keys[0::2][::-1]
    assert sorted(scrambled) == sorted(keys)
    store.write({key: value_of(key) for key in scrambled}, offset)


def contents(store: Store) -> dict[bytes, bytes]:
    return dict(store.iterate())


def keys_of(pairs: Iterator[tuple[bytes, bytes]]) -> list[bytes]:
    return [key for key, _ in pairs]


class Pairs(Mapping[Any, Any]):
    """A mapping that can hold unhashable keys such as ``bytearray``."""

    def __init__(self, *pairs: tuple[Any, Any]) -> None:
        self._pairs = list(pairs)

    def __getitem__(self, key: Any) -> Any:
        for k, v in self._pairs:
            if k is key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter([k for k, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)


# -- basics -------------------------------------------------------------------


def test_factory_matches_store_class(store_factory: StoreFactory, store: Store) -> None:
    assert isinstance(store, Store)
    assert type(store).persistent is store_factory.persistent
    assert store.table == "t"
    assert store.partition == 0
    assert not store.closed


def test_new_store_is_empty(store: Store) -> None:
    assert store.get(b"a") is None
    assert store.count() == 0
    assert store.offset() is None
    assert list(store.iterate()) == []
    assert list(store.iterate(reverse=True)) == []


def test_put_get_delete(store: Store) -> None:
    store.write({b"k": b"v1"}, None)
    assert store.get(b"k") == b"v1"
    store.write({b"k": b"v2"}, None)
    assert store.get(b"k") == b"v2"
    store.write({b"k": None}, None)
    assert store.get(b"k") is None
    assert store.count() == 0


def test_get_of_missing_key_is_none(store: Store) -> None:
    store.write({b"a": b"1"}, None)
    assert store.get(b"b") is None
    assert store.get(b"") is None
    assert store.get(b"a\x00") is None
    assert store.get(b"a") == b"1"


def test_empty_value_is_not_a_missing_key(store: Store) -> None:
    store.write({b"k": b""}, None)
    assert store.get(b"k") == b""
    assert store.get_many([b"k", b"x"]) == [b"", None]
    assert store.count() == 1
    assert list(store.iterate()) == [(b"k", b"")]


def test_empty_key_and_binary_values_round_trip(store: Store) -> None:
    binary = bytes(range(256)) * 3
    store.write({b"": b"empty key", b"\x00\xff": binary}, None)
    assert store.get(b"") == b"empty key"
    assert store.get(b"\x00\xff") == binary


def test_large_value_round_trips(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    size = min(2 << 20, store_factory.max_value_size or 2 << 20)
    big = (bytes(range(256)) * 8192)[:size]
    store.write({b"big": big}, 0)
    assert store.get(b"big") == big


def test_value_over_a_declared_limit_is_a_typed_error(store_factory: StoreFactory) -> None:
    limit = store_factory.max_value_size
    store = store_factory.open()
    if limit is None:  # no limit declared: a large value must simply work
        store.write({b"huge": b"x" * (4 << 20)}, 0)
        assert store.get(b"huge") == b"x" * (4 << 20)
        return
    store.write({b"ok": b"1"}, 0)
    with pytest.raises(StoreError) as info:
        store.write({b"huge": b"x" * (limit + (1 << 20)), b"other": b"2"}, 1)
    assert "huge" in str(info.value) or "too" in str(info.value).lower()
    assert store.offset() == 0  # the offset never moves past a failed write


def test_get_many_keeps_order_and_reports_missing(store: Store) -> None:
    store.write({b"a": b"1", b"b": b"2", b"c": b"3"}, None)
    assert store.get_many([b"c", b"x", b"a", b"b", b"a", b""]) == [
        b"3",
        None,
        b"1",
        b"2",
        b"1",
        None,
    ]
    assert store.get_many([]) == []
    assert store.get_many((b"b",)) == [b"2"]


def test_batch_mixes_puts_deletes_and_overwrites(store: Store) -> None:
    store.write({b"keep": b"1", b"gone": b"2", b"over": b"3"}, 1)
    store.write(
        {b"gone": None, b"over": b"new", b"never-existed": None, b"added": b"4"},
        2,
    )
    assert contents(store) == {b"keep": b"1", b"over": b"new", b"added": b"4"}
    assert store.count() == 3
    assert store.get(b"never-existed") is None
    assert store.offset() == 2


def test_deleting_missing_keys_only_is_harmless(store: Store) -> None:
    store.write({b"a": None, b"b": None}, 3)
    assert store.count() == 0
    assert store.offset() == 3


def test_empty_batch_records_offset_and_keeps_data(store: Store) -> None:
    store.write({b"a": b"1"}, 1)
    store.write({}, 9)
    assert store.offset() == 9
    assert contents(store) == {b"a": b"1"}


# -- offsets ------------------------------------------------------------------


def test_offset_recorded_by_each_write(store: Store) -> None:
    assert store.offset() is None
    store.write({b"a": b"1"}, 0)
    assert store.offset() == 0
    store.write({b"b": b"2"}, 5)
    assert store.offset() == 5
    store.write({}, 7)
    assert store.offset() == 7


def test_offset_none_leaves_recorded_offset_unchanged(store: Store) -> None:
    store.write({b"a": b"1"}, None)
    assert store.offset() is None
    store.write({b"a": b"2"}, 4)
    store.write({b"b": b"3"}, None)
    assert store.offset() == 4
    assert contents(store) == {b"a": b"2", b"b": b"3"}


def test_equal_offset_is_allowed(store: Store) -> None:
    store.write({b"a": b"1"}, 4)
    store.write({b"a": b"2"}, 4)
    assert store.offset() == 4
    assert store.get(b"a") == b"2"


def test_lower_offset_raises_and_applies_nothing(store: Store) -> None:
    store.write({b"a": b"1", b"b": b"2"}, 10)
    with pytest.raises(OffsetRegressionError) as info:
        store.write({b"a": b"changed", b"b": None, b"c": b"new"}, 9)
    assert isinstance(info.value, StateStreamError)
    assert "backwards" in str(info.value)
    assert "10" in str(info.value)
    assert "9" in str(info.value)
    assert store.offset() == 10
    assert contents(store) == {b"a": b"1", b"b": b"2"}
    # The store is still usable and still moves forward.
    store.write({b"c": b"3"}, 11)
    assert contents(store) == {b"a": b"1", b"b": b"2", b"c": b"3"}


def test_lower_offset_is_checked_against_offsets_written_with_empty_batches(
    store: Store,
) -> None:
    store.write({}, 5)
    with pytest.raises(OffsetRegressionError):
        store.write({b"a": b"1"}, 0)
    assert store.count() == 0


@pytest.mark.parametrize("offset", [-1, -(2**63), 1.5, 3.0, "3", b"3", True, False])
def test_invalid_offset_raises_and_applies_nothing(store: Store, offset: object) -> None:
    store.write({b"a": b"1"}, 2)
    with pytest.raises(InvalidOffsetError) as info:
        store.write({b"a": b"changed", b"b": b"new"}, offset)  # type: ignore[arg-type]
    assert isinstance(info.value, StateStreamError)
    assert "offset" in str(info.value)
    assert store.offset() == 2
    assert contents(store) == {b"a": b"1"}


def test_largest_kafka_offset_round_trips(store_factory: StoreFactory) -> None:
    largest = 2**63 - 1
    store = store_factory.open("t", 0)
    store.write({b"a": b"1"}, largest)
    assert store.offset() == largest
    if store_factory.persistent:
        store.close()
        store = store_factory.open("t", 0)
        assert store.offset() == largest


def test_offset_beyond_int64_is_an_invalid_offset(store: Store) -> None:
    # Kafka offsets are signed 64-bit; every store must reject larger ones the
    # same typed way rather than store them or fail inside its engine.
    store.write({b"a": b"1"}, 1)
    with pytest.raises(InvalidOffsetError):
        store.write({b"a": b"2"}, 2**63)
    assert store.offset() == 1
    assert contents(store) == {b"a": b"1"}


# -- iterate ------------------------------------------------------------------


def test_iterate_full_order_is_byte_order(store: Store) -> None:
    fill(store)
    # Written out by hand rather than computed: this is the definition.
    expected = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x01",
        b"A",
        b"a",
        b"a\x00",
        b"ab",
        b"abc",
        b"a\xff",
        b"a\xff\xff",
        b"b",
        b"\x7f",
        b"\x80",
        b"\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
        b"\xff\xff\xff",
    ]
    assert list(store.iterate()) == [(key, value_of(key)) for key in expected]
    assert list(store.iterate(reverse=True)) == [(key, value_of(key)) for key in expected[::-1]]


# (start, end, prefix) -> keys expected in ascending order, written by hand.
ITERATE_CASES: list[tuple[bytes | None, bytes | None, bytes | None, list[bytes]]] = [
    (b"", None, None, KEYS_IN_BYTE_ORDER),
    (None, b"", None, []),
    (b"a", None, None, KEYS_IN_BYTE_ORDER[5:]),
    (b"a\x01", None, None, KEYS_IN_BYTE_ORDER[7:]),
    (None, b"a", None, KEYS_IN_BYTE_ORDER[:5]),
    (None, b"\x00", None, [b""]),
    (None, b"\xff", None, KEYS_IN_BYTE_ORDER[:16]),
    (b"\xff", None, None, [b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\xff"]),
    (b"a", b"b", None, [b"a", b"a\x00", b"ab", b"abc", b"a\xff", b"a\xff\xff"]),
    (b"a\x00", b"ab", None, [b"a\x00"]),
    (b"a\x00", b"a\xff", None, [b"a\x00", b"ab", b"abc"]),
    (b"", b"\x01", None, [b"", b"\x00", b"\x00\x00"]),
    (None, None, b"a", [b"a", b"a\x00", b"ab", b"abc", b"a\xff", b"a\xff\xff"]),
    (None, None, b"ab", [b"ab", b"abc"]),
    (None, None, b"abcd", []),
    (None, None, b"\x00", [b"\x00", b"\x00\x00"]),
    (None, None, b"a\xff", [b"a\xff", b"a\xff\xff"]),
    (None, None, b"a\xff\xff", [b"a\xff\xff"]),
    (None, None, b"\xff", [b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\xff"]),
    (None, None, b"\xff\xff", [b"\xff\xff", b"\xff\xff\xff"]),
    (None, None, b"\xff\xff\xff\xff", []),
    (None, None, b"", KEYS_IN_BYTE_ORDER),
    (None, None, b"zz", []),
    (b"a\x00", None, b"a", [b"a\x00", b"ab", b"abc", b"a\xff", b"a\xff\xff"]),
    (None, b"ab", b"a", [b"a", b"a\x00"]),
    (None, b"a\xff\xff", b"a", [b"a", b"a\x00", b"ab", b"abc", b"a\xff"]),
    (b"a\x00", b"abc", b"a", [b"a\x00", b"ab"]),
    (b"", b"zzz", b"a", [b"a", b"a\x00", b"ab", b"abc", b"a\xff", b"a\xff\xff"]),
    (b"ab", None, b"a\xff", [b"a\xff", b"a\xff\xff"]),
    (b"a\xff\x00", None, b"a\xff", [b"a\xff\xff"]),
    (b"b", None, b"a\xff", []),
    (None, b"a\xff", b"ab", [b"ab", b"abc"]),
    (None, b"ab", b"ab", []),
    (b"\x00", b"\xff\xff", b"\xff", [b"\xff", b"\xff\x00"]),
    (b"\xff\x01", None, b"\xff", [b"\xff\xff", b"\xff\xff\xff"]),
    (None, b"\xff\xff\xff", b"\xff\xff", [b"\xff\xff"]),
    (b"b", None, b"", KEYS_IN_BYTE_ORDER[11:]),
]


def _case_id(case: tuple[bytes | None, bytes | None, bytes | None, list[bytes]]) -> str:
    start, end, prefix, _ = case
    return f"start={start!r}-end={end!r}-prefix={prefix!r}"


@pytest.mark.parametrize("reverse", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("case", ITERATE_CASES, ids=[_case_id(c) for c in ITERATE_CASES])
def test_iterate_bounds(
    store: Store,
    case: tuple[bytes | None, bytes | None, bytes | None, list[bytes]],
    reverse: bool,
) -> None:
    start, end, prefix, expected = case
    # The hand-written expectation must agree with the plain definition.
    assert expected == [
        key
        for key in sorted(KEYS_IN_BYTE_ORDER)
        if (start is None or key >= start)
        and (end is None or key < end)
        and (prefix is None or key.startswith(prefix))
    ]
    fill(store)
    if reverse:
        expected = expected[::-1]
    got = list(store.iterate(start=start, end=end, prefix=prefix, reverse=reverse))
    assert got == [(key, value_of(key)) for key in expected]


@pytest.mark.parametrize("reverse", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize(
    ("start", "end"),
    [(b"b", b"b"), (b"b", b"a"), (b"\xff", b""), (b"", b""), (b"a\x00", b"a")],
)
def test_iterate_start_at_or_after_end_is_empty(
    store: Store, start: bytes, end: bytes, reverse: bool
) -> None:
    fill(store)
    assert list(store.iterate(start=start, end=end, reverse=reverse)) == []
    assert list(store.iterate(start=start, end=end, prefix=b"a", reverse=reverse)) == []


def test_reverse_iterate_yields_key_equal_to_lower_bound(store: Store) -> None:
    # The last key a reverse scan yields is often exactly its inclusive start.
    store.write({b"": b"empty", b"a": b"1", b"b": b"2"}, None)
    assert list(store.iterate(start=b"b", reverse=True)) == [(b"b", b"2")]
    assert list(store.iterate(start=b"a", end=b"b", reverse=True)) == [(b"a", b"1")]
    assert list(store.iterate(prefix=b"a", reverse=True)) == [(b"a", b"1")]
    store.write({b"a": None, b"b": None}, None)
    assert list(store.iterate(reverse=True)) == [(b"", b"empty")]


def test_iterate_positional_arguments(store: Store) -> None:
    fill(store)
    assert keys_of(store.iterate(b"a", b"b", b"ab", True)) == [b"abc", b"ab"]


def test_iterate_sees_deletes_and_overwrites(store: Store) -> None:
    fill(store)
    store.write({b"a": None, b"ab": b"new", b"a\xff\xff": None}, 2)
    assert list(store.iterate(prefix=b"a")) == [
        (b"a\x00", value_of(b"a\x00")),
        (b"ab", b"new"),
        (b"abc", value_of(b"abc")),
        (b"a\xff", value_of(b"a\xff")),
    ]


@pytest.mark.parametrize("bad", ["a", 1, bytearray(b"a"), memoryview(b"a")])
@pytest.mark.parametrize("argument", ["start", "end", "prefix"])
def test_iterate_rejects_non_bytes_bounds(store: Store, argument: str, bad: object) -> None:
    with pytest.raises(InvalidKeyError) as info:
        list(store.iterate(**{argument: bad}))
    assert "bytes" in str(info.value)
    assert argument in str(info.value)


# -- count and clear ----------------------------------------------------------


def test_count_follows_puts_overwrites_and_deletes(store: Store) -> None:
    assert store.count() == 0
    fill(store)
    assert store.count() == len(KEYS_IN_BYTE_ORDER)
    store.write({b"a": b"again", b"": b"again", b"new": b"1"}, None)
    assert store.count() == len(KEYS_IN_BYTE_ORDER) + 1
    store.write({b"a": None, b"missing": None}, None)
    assert store.count() == len(KEYS_IN_BYTE_ORDER)


def test_clear_removes_data_and_offset_and_store_stays_usable(store: Store) -> None:
    fill(store, offset=10)
    store.clear()
    assert store.count() == 0
    assert store.offset() is None
    assert list(store.iterate()) == []
    assert store.get(b"a") is None
    assert not store.closed
    # The offset was forgotten, so a lower one is accepted again.
    store.write({b"x": b"1"}, 0)
    assert contents(store) == {b"x": b"1"}
    assert store.offset() == 0
    store.clear()
    store.clear()
    assert store.count() == 0


def test_clear_is_durable(store_factory: StoreFactory) -> None:
    store = store_factory.open("t", 0)
    fill(store, offset=10)
    store.clear()
    store.write({b"after": b"1"}, 3)
    store.close()
    reopened = store_factory.open("t", 0)
    if store_factory.persistent:
        assert contents(reopened) == {b"after": b"1"}
        assert reopened.offset() == 3
    else:
        assert contents(reopened) == {}
        assert reopened.offset() is None


# -- close --------------------------------------------------------------------

AFTER_CLOSE: dict[str, Callable[[Store], object]] = {
    "get": lambda s: s.get(b"a"),
    "get_many": lambda s: s.get_many([b"a"]),
    "get_many_empty": lambda s: s.get_many([]),
    "write": lambda s: s.write({b"a": b"1"}, 5),
    "write_empty": lambda s: s.write({}, None),
    # Consumed, so a store may check lazily, on the first next().
    "iterate": lambda s: list(s.iterate()),
    "iterate_prefix": lambda s: list(s.iterate(prefix=b"a", reverse=True)),
    "offset": lambda s: s.offset(),
    "count": lambda s: s.count(),
    "clear": lambda s: s.clear(),
    "meta": lambda s: s.meta("epoch"),
    "write_meta": lambda s: s.write({}, None, {"epoch": b"1"}),
}


def test_close_is_idempotent(store: Store) -> None:
    store.write({b"a": b"1"}, 1)
    store.close()
    assert store.closed
    store.close()
    store.close()
    assert store.closed
    assert "closed" in repr(store)


@pytest.mark.parametrize("call", list(AFTER_CLOSE.values()), ids=list(AFTER_CLOSE))
def test_every_method_after_close_raises(store: Store, call: Callable[[Store], object]) -> None:
    fill(store)
    store.close()
    with pytest.raises(StoreClosedError) as info:
        call(store)
    assert isinstance(info.value, StateStreamError)
    assert "closed" in str(info.value)


@pytest.mark.parametrize("started", [False, True], ids=["unstarted", "started"])
def test_iterator_live_at_close_raises_store_closed(store: Store, started: bool) -> None:
    fill(store)
    pairs = store.iterate()
    if started:
        assert next(pairs) == (b"", value_of(b""))
    store.close()
    with pytest.raises(StoreClosedError):
        list(pairs)


def test_context_manager_closes(store_factory: StoreFactory) -> None:
    with store_factory.open("t", 0) as store:
        store.write({b"a": b"1"}, 1)
        assert not store.closed
    assert store.closed
    with pytest.raises(StoreClosedError):
        store.get(b"a")


def test_context_manager_closes_on_error(store_factory: StoreFactory) -> None:
    store = store_factory.open("t", 0)
    with pytest.raises(KeyError), store:
        raise KeyError("boom")
    assert store.closed


def test_close_and_reopen(store_factory: StoreFactory) -> None:
    store = store_factory.open("t", 0)
    fill(store, offset=41)
    store.write({b"a": None}, 42)
    store.close()
    reopened = store_factory.open("t", 0)
    if store_factory.persistent:
        expected = {key: value_of(key) for key in KEYS_IN_BYTE_ORDER if key != b"a"}
        assert contents(reopened) == expected
        assert keys_of(reopened.iterate(prefix=b"\xff\xff")) == [b"\xff\xff", b"\xff\xff\xff"]
        assert reopened.offset() == 42
        assert reopened.count() == len(expected)
        # The reopened offset still guards against regressions.
        with pytest.raises(OffsetRegressionError):
            reopened.write({b"a": b"1"}, 41)
        assert reopened.get(b"a") is None
    else:
        assert contents(reopened) == {}
        assert reopened.offset() is None
        assert reopened.count() == 0


# -- isolation ----------------------------------------------------------------


def _check_isolated(factory: StoreFactory, ids: list[tuple[str, int]]) -> None:
    stores = [factory.open(table, partition) for table, partition in ids]
    for n, store in enumerate(stores):
        store.write({b"shared": b"%d" % n, b"own-%d" % n: b"x"}, 10 + n)
    for n, store in enumerate(stores):
        assert contents(store) == {b"shared": b"%d" % n, b"own-%d" % n: b"x"}
        assert store.offset() == 10 + n
    stores[0].clear()
    assert stores[0].count() == 0
    assert stores[1].count() == 2
    assert stores[1].offset() == 11
    stores[0].write({b"again": b"0"}, 0)
    if factory.persistent:
        for store in stores:
            store.close()
        stores = [factory.open(table, partition) for table, partition in ids]
        assert contents(stores[0]) == {b"again": b"0"}
        assert stores[0].offset() == 0
        assert contents(stores[1]) == {b"shared": b"1", b"own-1": b"x"}
        assert stores[1].offset() == 11


def test_partitions_of_one_table_are_isolated(store_factory: StoreFactory) -> None:
    _check_isolated(store_factory, [("t", 0), ("t", 1)])


def test_tables_of_one_partition_are_isolated(store_factory: StoreFactory) -> None:
    # "t" and "t0" would collide under naive path or key concatenation.
    _check_isolated(store_factory, [("t", 0), ("t0", 0)])
    _check_isolated(store_factory, [("u", 10), ("u1", 0)])


# -- validation ---------------------------------------------------------------

BAD_KEYS: list[object] = ["a", 1, bytearray(b"a"), None, memoryview(b"a"), True]
BAD_VALUES: list[object] = ["v", 1, bytearray(b"v"), memoryview(b"v"), 1.5, False]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda b: type(b).__name__)
def test_get_rejects_non_bytes_key(store: Store, bad: object) -> None:
    with pytest.raises(InvalidKeyError) as info:
        store.get(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, StateStreamError)
    assert isinstance(info.value, TypeError)
    assert "bytes" in str(info.value)
    assert type(bad).__name__ in str(info.value)


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda b: type(b).__name__)
def test_get_many_rejects_non_bytes_key(store: Store, bad: object) -> None:
    store.write({b"a": b"1"}, None)
    with pytest.raises(InvalidKeyError) as info:
        store.get_many([b"a", bad])  # type: ignore[list-item]
    assert "bytes" in str(info.value)


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda b: type(b).__name__)
def test_write_with_one_bad_key_applies_nothing(store: Store, bad: object) -> None:
    store.write({b"a": b"1", b"b": b"2"}, 5)
    changes = Pairs((b"a", b"changed"), (b"b", None), (bad, b"x"), (b"c", b"3"))
    with pytest.raises(InvalidKeyError) as info:
        store.write(changes, 6)
    assert isinstance(info.value, StateStreamError)
    assert "bytes" in str(info.value)
    assert contents(store) == {b"a": b"1", b"b": b"2"}
    assert store.offset() == 5


@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda b: type(b).__name__)
def test_write_with_one_bad_value_applies_nothing(store: Store, bad: object) -> None:
    store.write({b"a": b"1", b"b": b"2"}, 5)
    with pytest.raises(InvalidKeyError) as info:
        store.write({b"a": b"changed", b"b": None, b"c": bad, b"d": b"4"}, 6)  # type: ignore[dict-item]
    assert "bytes" in str(info.value)
    assert contents(store) == {b"a": b"1", b"b": b"2"}
    assert store.offset() == 5


@pytest.mark.parametrize(
    "changes", [[(b"a", b"1")], b"a", None, {b"a", b"b"}], ids=["list", "bytes", "None", "set"]
)
def test_write_rejects_non_mapping(store: Store, changes: object) -> None:
    store.write({b"k": b"v"}, 1)
    with pytest.raises(InvalidKeyError) as info:
        store.write(changes, 2)  # type: ignore[arg-type]
    assert "mapping" in str(info.value)
    assert contents(store) == {b"k": b"v"}
    assert store.offset() == 1


BAD_TABLE_NAMES: list[object] = [
    "",
    "../x",
    "..",
    ".",
    ".hidden",
    "a/b",
    "a\\b",
    "a b",
    "a\n",
    "a\x00",
    "é",
    "x" * 201,
    None,
    5,
    b"t",
]


@pytest.mark.parametrize("name", BAD_TABLE_NAMES, ids=repr)
def test_invalid_table_name_raises(store_factory: StoreFactory, name: object) -> None:
    with pytest.raises(InvalidTableNameError) as info:
        store_factory.open(name, 0)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, StateStreamError)
    assert "table name" in str(info.value)
    assert repr(name)[:40] in str(info.value)


@pytest.mark.parametrize("name", ["x" * 200, "a.b-c_d", "-x", "_", "T0", "a..b"])
def test_valid_table_names_open(store_factory: StoreFactory, name: str) -> None:
    if len(name) > store_factory.max_table_name:
        with pytest.raises(ConfigurationError, match="table name"):
            store_factory.open(name, 0)
        return
    store = store_factory.open(name, 0)
    store.write({b"a": b"1"}, 0)
    assert store.table == name
    assert store.get(b"a") == b"1"


@pytest.mark.parametrize("partition", [-1, True, "0", 1.0, None], ids=repr)
def test_invalid_partition_raises(store_factory: StoreFactory, partition: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        store_factory.open("t", partition)  # type: ignore[arg-type]
    assert isinstance(info.value, StateStreamError)
    assert "partition" in str(info.value)


def test_large_partition_number_opens(store_factory: StoreFactory) -> None:
    store = store_factory.open("t", 4095)
    store.write({b"a": b"1"}, 0)
    assert store.partition == 4095
    assert store.get(b"a") == b"1"


# -- metadata -----------------------------------------------------------------

EPOCH = (7).to_bytes(8, "big")


def test_new_store_has_no_metadata(store: Store) -> None:
    assert store.meta("epoch") is None
    assert store.meta("stream_time") is None


def test_metadata_is_written_with_the_batch_and_offset(store: Store) -> None:
    store.write({b"a": b"1"}, 4, {"epoch": EPOCH, "stream_time": b"t1"})
    assert store.meta("epoch") == EPOCH
    assert store.meta("stream_time") == b"t1"
    assert store.offset() == 4
    assert contents(store) == {b"a": b"1"}


def test_metadata_is_not_data(store: Store) -> None:
    # Names that look like keys must not leak into get, iterate or count.
    store.write({b"k": b"v"}, 1, {"epoch": EPOCH, "d": b"x", "m": b"y", "offset": b"z"})
    assert store.count() == 1
    assert list(store.iterate()) == [(b"k", b"v")]
    assert list(store.iterate(reverse=True)) == [(b"k", b"v")]
    for key in (b"epoch", b"d", b"m", b"offset", b"mepoch", b"m:epoch", b"o"):
        assert store.get(key) is None
    assert store.get_many([b"epoch", b"k"]) == [None, b"v"]
    assert store.offset() == 1


def test_meta_none_or_empty_leaves_metadata_untouched(store: Store) -> None:
    store.write({}, 1, {"epoch": EPOCH})
    store.write({b"a": b"1"}, 2)
    store.write({b"b": b"2"}, 3, None)
    store.write({b"c": b"3"}, 4, {})
    assert store.meta("epoch") == EPOCH
    assert store.offset() == 4


def test_each_name_keeps_its_last_value(store: Store) -> None:
    store.write({}, 1, {"epoch": b"1", "stream_time": b"s1"})
    store.write({}, 2, {"epoch": b"2"})
    store.write({}, 3, {"epoch": b"3"})
    assert store.meta("epoch") == b"3"
    assert store.meta("stream_time") == b"s1"


def test_metadata_without_an_offset(store: Store) -> None:
    store.write({b"a": b"1"}, None, {"epoch": EPOCH})
    assert store.meta("epoch") == EPOCH
    assert store.offset() is None
    store.write({}, 5)
    store.write({}, None, {"epoch": b"later"})
    assert store.offset() == 5
    assert store.meta("epoch") == b"later"


def test_empty_and_largest_metadata_values(store: Store) -> None:
    largest = bytes(range(256)) * (MAX_META_VALUE // 256) + b"\xff" * (MAX_META_VALUE % 256)
    assert len(largest) == MAX_META_VALUE
    store.write({}, 0, {"empty": b"", "big": largest})
    assert store.meta("empty") == b""
    assert store.meta("big") == largest


def test_metadata_survives_close_and_reopen(store_factory: StoreFactory) -> None:
    store = store_factory.open("t", 0)
    store.write({b"a": b"1"}, 9, {"epoch": EPOCH, "stream_time": b"\x00\xff"})
    store.write({b"b": b"2"}, 10)
    store.close()
    reopened = store_factory.open("t", 0)
    if store_factory.persistent:
        assert reopened.meta("epoch") == EPOCH
        assert reopened.meta("stream_time") == b"\x00\xff"
        assert reopened.offset() == 10
        assert reopened.count() == 2
    else:
        assert reopened.meta("epoch") is None
        assert reopened.meta("stream_time") is None


def test_clear_removes_metadata(store_factory: StoreFactory) -> None:
    store = store_factory.open("t", 0)
    store.write({b"a": b"1"}, 3, {"epoch": EPOCH})
    store.clear()
    assert store.meta("epoch") is None
    store.write({}, 0, {"other": b"1"})
    store.close()
    reopened = store_factory.open("t", 0)
    assert reopened.meta("epoch") is None
    assert reopened.meta("other") == (b"1" if store_factory.persistent else None)


def test_rejected_write_applies_no_metadata(store: Store) -> None:
    store.write({b"a": b"1"}, 10, {"epoch": b"old"})
    with pytest.raises(OffsetRegressionError):
        store.write({b"a": b"2"}, 9, {"epoch": b"new"})
    with pytest.raises(InvalidKeyError):
        store.write({b"a": b"2", "bad": b"x"}, 11, {"epoch": b"new"})  # type: ignore[dict-item]
    with pytest.raises(InvalidKeyError):
        store.write({b"a": b"2", b"b": 1}, 11, {"epoch": b"new"})  # type: ignore[dict-item]
    assert store.meta("epoch") == b"old"
    assert store.offset() == 10
    assert contents(store) == {b"a": b"1"}


def test_metadata_of_stores_is_isolated(store_factory: StoreFactory) -> None:
    ids = [("t", 0), ("t", 1), ("t0", 0)]
    stores = [store_factory.open(table, partition) for table, partition in ids]
    for n, store in enumerate(stores):
        store.write({}, n, {"epoch": b"%d" % n})
    stores[0].clear()
    assert [store.meta("epoch") for store in stores] == [None, b"1", b"2"]
    if store_factory.persistent:
        for store in stores:
            store.close()
        stores = [store_factory.open(table, partition) for table, partition in ids]
        assert [store.meta("epoch") for store in stores] == [None, b"1", b"2"]


BAD_META_NAMES: list[object] = [
    "",
    "a b",
    "a-b",
    "a.b",
    "a:b",
    "1st",
    "é",
    "a\n",
    "a\x00",
    "x" * (MAX_META_NAME + 1),
    b"epoch",
    None,
    5,
]


@pytest.mark.parametrize("name", BAD_META_NAMES, ids=repr)
def test_bad_metadata_name_is_rejected_and_nothing_is_applied(store: Store, name: object) -> None:
    store.write({b"a": b"1"}, 1, {"epoch": b"old"})
    with pytest.raises(InvalidMetadataError) as info:
        store.write({b"a": b"2"}, 2, {"epoch": b"new", name: b"x"})  # type: ignore[dict-item]
    assert isinstance(info.value, StateStreamError)
    assert "metadata name" in str(info.value)
    assert repr(name)[:20] in str(info.value)
    with pytest.raises(InvalidMetadataError):
        store.meta(name)  # type: ignore[arg-type]
    assert (store.meta("epoch"), store.offset(), contents(store)) == (b"old", 1, {b"a": b"1"})


@pytest.mark.parametrize(
    "value",
    ["s", 1, None, bytearray(b"x"), memoryview(b"x"), b"x" * (MAX_META_VALUE + 1)],
    ids=lambda v: f"{type(v).__name__}{len(v) if isinstance(v, bytes) else ''}",
)
def test_bad_metadata_value_is_rejected_and_nothing_is_applied(store: Store, value: object) -> None:
    store.write({b"a": b"1"}, 1, {"epoch": b"old"})
    with pytest.raises(InvalidMetadataError) as info:
        store.write({b"a": b"2"}, 2, {"epoch": b"new", "other": value})  # type: ignore[dict-item]
    assert "metadata value" in str(info.value)
    assert "'other'" in str(info.value)
    assert (store.meta("epoch"), store.meta("other")) == (b"old", None)
    assert (store.offset(), contents(store)) == (1, {b"a": b"1"})


@pytest.mark.parametrize("meta", [[("epoch", b"1")], b"epoch", "epoch", 5], ids=repr)
def test_metadata_that_is_not_a_mapping_is_rejected(store: Store, meta: object) -> None:
    with pytest.raises(InvalidMetadataError, match="mapping"):
        store.write({b"a": b"1"}, 1, meta)  # type: ignore[arg-type]
    assert (store.offset(), store.count()) == (None, 0)


@pytest.mark.parametrize("name", ["epoch", "stream_time", "_", "A9_z", "x" * MAX_META_NAME])
def test_valid_metadata_names(store: Store, name: str) -> None:
    store.write({}, None, {name: name.encode()})
    assert store.meta(name) == name.encode()


# -- destroy ------------------------------------------------------------------


def test_destroy_removes_data_offset_and_metadata(store_factory: StoreFactory) -> None:
    store = store_factory.open("t", 0)
    fill(store, offset=12)
    store.write({}, 13, {"epoch": EPOCH})
    neighbours = [store_factory.open("t", 1), store_factory.open("t0", 0)]
    for n, neighbour in enumerate(neighbours):
        neighbour.write({b"k": b"%d" % n}, 20 + n, {"epoch": b"%d" % n})
    store.close()
    store_factory.destroy("t", 0)
    rebuilt = store_factory.open("t", 0)
    assert (rebuilt.count(), rebuilt.offset(), rebuilt.meta("epoch")) == (0, None, None)
    assert list(rebuilt.iterate()) == []
    rebuilt.write({b"new": b"1"}, 0)
    assert contents(rebuilt) == {b"new": b"1"}
    for n, neighbour in enumerate(neighbours):
        assert contents(neighbour) == {b"k": b"%d" % n}
        assert (neighbour.offset(), neighbour.meta("epoch")) == (20 + n, b"%d" % n)


def test_destroy_of_a_store_that_never_existed_is_harmless(store_factory: StoreFactory) -> None:
    store_factory.destroy("never", 3)
    store_factory.destroy("never", 3)
    store = store_factory.open("never", 3)
    assert (store.count(), store.offset()) == (0, None)


@pytest.mark.parametrize("name", ["../x", "", ".hidden", "a/b", None], ids=repr)
def test_destroy_checks_the_table_name(store_factory: StoreFactory, name: object) -> None:
    with pytest.raises(InvalidTableNameError):
        store_factory.destroy(name, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("partition", [-1, True, "0", None], ids=repr)
def test_destroy_checks_the_partition(store_factory: StoreFactory, partition: object) -> None:
    with pytest.raises(ConfigurationError, match="partition"):
        store_factory.destroy("t", partition)  # type: ignore[arg-type]
