"""A windowed table's windows of one key, read from its store (no shard, no buffer).

The store layout is :mod:`statestream.tables.window_layout`'s: a key's
windows (a hopping table's slices) are one range, ``b"w" K start end``, read
in one consistent scan; a hopping table's windows are merged from their
slices as :class:`~statestream.tables.windowed_shard.WindowedShard` merges
them, without the windows expired by stream time (read from ``b"m"``).
"""

from __future__ import annotations

import json
from typing import Any

from statestream.stores.reading import StoreReader
from statestream.tables.window_layout import (
    DATA,
    META,
    TaggedCodec,
    WindowedValue,
    slice_windows,
    time_at,
)
from statestream.tables.windowed import WindowedTable
from statestream.tables.windows import key_prefix

__all__ = ["read_windows"]


def read_windows(table: WindowedTable, reader: StoreReader, kb: bytes) -> list[WindowedValue]:
    """Every window of the key encoded as ``kb``, by start."""
    codec = TaggedCodec(table.value_codec)
    prefix = DATA + key_prefix(kb)
    at = len(prefix)
    rows = reader.scan(prefix=prefix)
    spec = table.spec
    if spec.kind != "hopping":
        return [WindowedValue(time_at(k, at), time_at(k, at + 8), codec.decode(v)) for k, v in rows]
    slices = {time_at(k, at): codec.decode(v) for k, v in rows}
    assert spec.merge is not None
    return slice_windows(
        slices, spec.size, spec.step, spec.merge, None, None, _expired_through(table, reader)
    )


def _expired_through(table: WindowedTable, reader: StoreReader) -> int | None:
    """Windows due at or before this are expired (as WindowState._expired_through)."""
    raw = reader.get(META)
    if raw is None:
        return None
    meta: dict[str, Any] = json.loads(bytes(TaggedCodec(table.value_codec).decode(raw)))
    st, closed = meta.get("stream_time"), meta.get("closed")
    if st is None:
        return None
    cut: int = st - table.spec.grace - table.spec.retention
    return cut if closed is None or closed >= cut else int(closed)
