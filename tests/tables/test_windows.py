"""Window arithmetic and the windowed store-key layout (``statestream.tables.windows``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestream.stores.memory import MemoryStore
from statestream.tables.windows import (
    decode_window_key,
    encode_window_key,
    hopping_windows,
    key_range,
    tumbling_window,
)

TIMES = st.integers(-(10**15), 10**15)
SIZES = st.integers(1, 10**7)
KEYS = st.binary(max_size=12)


@given(KEYS, TIMES, st.integers(0, 10**9))
def test_window_keys_round_trip(key: bytes, start: int, length: int) -> None:
    assert decode_window_key(encode_window_key(key, (start, start + length))) == (
        key,
        (start, start + length),
    )


@given(KEYS, st.lists(st.tuples(TIMES, st.integers(0, 10**6)), min_size=2, max_size=20))
def test_a_keys_windows_sort_by_start_numerically(
    key: bytes, windows: list[tuple[int, int]]
) -> None:
    bounds = [(s, s + n) for s, n in windows]
    by_bytes = sorted(bounds, key=lambda w: encode_window_key(key, w))
    assert by_bytes == sorted(bounds)


@given(
    st.lists(KEYS, min_size=1, max_size=6, unique=True),
    st.lists(TIMES, min_size=1, max_size=8),
    st.data(),
)
def test_range_scans_find_exactly_one_keys_windows(
    keys: list[bytes], starts: list[int], data: st.DataObject
) -> None:
    # Keys that are prefixes of one another (b"a", b"ab") must not mix.
    store = MemoryStore("w", 0)
    for key in keys:
        store.write({encode_window_key(key, (s, s + 10)): b"v" for s in starts}, None)
    key = data.draw(st.sampled_from(keys))
    lo_t = data.draw(st.none() | TIMES)
    hi_t = data.draw(st.none() | TIMES)
    low, high = key_range(key, lo_t, hi_t)
    found = [decode_window_key(k) for k, _ in store.iterate(start=low, end=high)]
    expected = sorted(
        {
            (key, (s, s + 10))
            for s in starts
            if (lo_t is None or s >= lo_t) and (hi_t is None or s < hi_t)
        }
    )
    assert found == expected


@given(TIMES, SIZES)
def test_the_tumbling_window_contains_t_and_is_aligned(t: int, size: int) -> None:
    start, end = tumbling_window(t, size)
    assert start <= t < end
    assert end - start == size
    assert start % size == 0


@given(TIMES, SIZES, st.data())
def test_hopping_windows_are_every_aligned_window_containing_t(
    t: int, size: int, data: st.DataObject
) -> None:
    step = data.draw(st.integers(1, size))
    windows = hopping_windows(t, size, step)
    assert windows, "t is in at least one window"
    for start, end in windows:
        assert start <= t < end
        assert end - start == size
        assert start % step == 0
    starts = [s for s, _ in windows]
    assert starts == sorted(starts)
    # None missed: the windows just before the first and after the last exclude t.
    assert not (starts[0] - step <= t < starts[0] - step + size)
    assert not (starts[-1] + step <= t)
    if size % step == 0:
        assert len(windows) == size // step


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        tumbling_window(5, 0)
    with pytest.raises(ValueError, match="must not exceed"):
        hopping_windows(5, 10, 20)
    with pytest.raises(ValueError, match="before its start"):
        encode_window_key(b"k", (10, 5))
    with pytest.raises(ValueError, match="not a windowed store key"):
        decode_window_key(b"\x00\x00\x00\x05ab")
