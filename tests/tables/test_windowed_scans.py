"""What a windowed table asks its store for: reads stay in their key, expiry walks the index.

A memory store that records every ``iterate`` call and the keys it yielded
serves one partition; the tests commit first, so the windows are in the
store (not only in the write buffer) when the reads and the expiry run.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest

from statestream.log import Transport
from statestream.stores.base import prefix_successor
from statestream.stores.memory import MemoryStore
from statestream.tables import Table
from tests.tables.window_model import KINDS
from tests.tables.windowed_harness import (
    Feeder,
    open_manager,
    windows,
)

# -- what the store is asked for -----------------------------------------------------


class CountingStore(MemoryStore):
    """A memory store that records every ``iterate`` call and the keys it yielded."""

    def __init__(self, table: str, partition: int) -> None:
        super().__init__(table, partition)
        self.calls: list[tuple[Any, ...]] = []
        self.yielded: list[bytes] = []

    def iterate(  # type: ignore[override]
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        self.calls.append((start, end, prefix, reverse))
        for key, value in super().iterate(start, end, prefix, reverse):
            self.yielded.append(key)
            yield key, value

    def reset(self) -> None:
        self.calls.clear()
        self.yielded.clear()


def window_prefix(key: str) -> bytes:
    """Where the spec puts ``key``'s windows: b"w" + len(key) (4 bytes) + key (json)."""
    encoded = f'"{key}"'.encode()
    return b"w" + struct.pack(">I", len(encoded)) + encoded


def _declare(kind: str, name: str, **options: Any) -> Table[Any, Any]:
    base: Table[Any, Any] = Table(name, default=int)
    if kind == "tumbling":
        return base.tumbling(10, **options)  # type: ignore[attr-defined,no-any-return]
    if kind == "hopping":
        return base.hopping(size=10, step=5, **options)  # type: ignore[attr-defined,no-any-return]
    if kind == "sliding":
        return base.sliding(10, **options)  # type: ignore[attr-defined,no-any-return]
    return base.session(gap=10, **options)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("kind", KINDS)
def test_window_reads_never_scan_other_keys(transport: Transport, kind: str) -> None:
    store = CountingStore("iso", 0)
    table = _declare(kind, "iso", grace=10**9)
    manager = open_manager(transport, [table], stores={"iso": store})
    try:
        feeder = Feeder(manager)
        # Neighbours in byte order: prefixes of "k", keys "k" is a prefix of, and more.
        others = ["", "j", "kk", "k0", "ka", "l", *[f"x{i}" for i in range(150)]]
        for i, key in enumerate(others):
            for t in (0, 30, 60, 90):
                feeder.begin(key, t + i % 3)
                table[key] += 1
        for t in (31, 62):
            feeder.begin("k", t)
            table["k"] += 5
        manager.commit(0, lambda: None)
        own = len(windows(table, "k"))
        assert own >= 2
        feeder.begin("k", 62)
        reads = {
            "all": lambda ws: ws.all(),
            "range": lambda ws: ws.range(0, 1000),
            "narrow range": lambda ws: ws.range(60, 63),
            "latest": lambda ws: ws.latest(),
            "current": lambda ws: ws.current(),
            "at": lambda ws: ws.at(31),
            "windows_at": lambda ws: ws.windows_at(62),
        }
        mine = window_prefix("k")
        for name, read in reads.items():
            store.reset()
            read(table["k"])
            strays = [k for k in store.yielded if not k.startswith(mine)]
            assert not strays, f"{name}() iterated other keys: {strays[:5]} ({store.calls})"
            assert len(store.yielded) <= own + 1, f"{name}() iterated {len(store.yielded)}"
            for start, end, prefix, _ in store.calls:
                # The bounds themselves stay within "k"'s windows.
                low = prefix if prefix is not None else start
                assert low is not None, (name, store.calls)
                assert low >= mine, (name, store.calls)
                if prefix is None:
                    limit = prefix_successor(mine)
                    assert limit is not None
                    assert end is not None, (name, store.calls)
                    assert end <= limit, (name, store.calls)
                else:
                    assert prefix.startswith(mine), (name, store.calls)
    finally:
        manager.close()


@pytest.mark.parametrize("kind", KINDS)
def test_expiry_walks_the_index_not_the_live_windows(transport: Transport, kind: str) -> None:
    store = CountingStore("exp", 0)
    grace = 1000
    table = _declare(kind, "exp", grace=grace, retention=0)
    manager = open_manager(transport, [table], stores={"exp": store})
    try:
        feeder = Feeder(manager)
        early = [("old0", 0), ("old1", 3), ("old2", 7)]
        for key, t in early:  # due <= 17 + grace: expire at the step below
            feeder.begin(key, t)
            table[key] += 1
        for i in range(300):  # due ~ 510..530 + grace: far from expiring
            key = f"live{i}"
            feeder.begin(key, 500 + i % 5)
            table[key] += 1
        manager.commit(0, lambda: None)
        feeder.take_closed("exp")
        expiring = {k: windows(table, k) for k, _ in early}
        assert all(expiring.values())
        store.reset()
        feeder.begin("new", grace + 60)  # past every early window's due + grace
        table["new"] += 1
        closed = feeder.take_closed("exp")
        manager.commit(0, lambda: None)
        live = [k for k in store.yielded if b"live" in k]
        rows = [k for k in live if k[:1] not in (b"e", b"q")]
        assert not rows, f"expiry iterated {len(rows)} live windows or points ({store.calls})"
        # Each index scan may read one entry past its end (where it stops), no more.
        assert len(live) <= 4, f"expiry iterated {len(live)} live index entries"
        other = [k for k in store.yielded if not k.startswith(window_prefix("new"))]
        # The early events made at most a few windows and index entries each.
        assert len(other) <= 8 * len(early) + 8, (len(other), store.calls)
        assert {k for _, k, _ in closed} == {k for k, _ in early}
        for key, _ in early:
            assert windows(table, key) == [], f"{key} should have expired"
        assert len(windows(table, "live7")) >= 1
    finally:
        manager.close()
