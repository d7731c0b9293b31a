"""``WindowedShard``: one windowed table's windows in one partition, on event time.

A windowed table keeps everything in the one store of its (table, partition),
as keys of an ordinary :class:`~statestream.tables.shard.TableShard`, so the
write buffer, the commit protocol, the changelog, restores and standbys treat
windows like any other state. One key's windows are one contiguous range
ordered by start, so reads of a key are range scans of that key. A hopping
table stores one *slice* per key and step, ``[s, s + step)``; a window's value
is the merge of its slices, built when it is read or closes.

The shard is built in a chain of small parts, each in its own module:

* :mod:`~statestream.tables.window_layout`: the store layout and the value types;
* :mod:`~statestream.tables.window_state`: the state, and key and scan helpers;
* :mod:`~statestream.tables.window_closing`: stream time, closing, expiry;
* :mod:`~statestream.tables.window_writes`: the writes of each kind;
* here: the hooks the :class:`TableShard` calls through a record's life
  (begin, rollback, commit) and the reads.

Stream time and the close watermark are kept under ``b"m"``, committed with
the data they describe, so they survive restarts, restores and standby
promotions, and windows restored from a changelog expire like the others.

Thread ownership: the partition thread of its shard, like the shard itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from statestream.tables.window_layout import (
    DATA,
    DATA_END,
    LOCAL_TAGS,
    MAX_TIME,
    META,
    MIN_TIME,
    MISSING,
    OFFSET,
    ClosedWindow,
    LateRecord,
    RawValue,
    TaggedCodec,
    WindowedValue,
    WindowKind,
    WindowSpec,
    derive_index,
    pack_bounds,
    pack_time,
    slice_windows,
    time_at,
    unpack_length,
)
from statestream.tables.window_state import LIGHT_UNDONE, UNDONE
from statestream.tables.window_writes import WindowWrites

__all__ = [
    "LOCAL_TAGS",
    "ClosedWindow",
    "LateRecord",
    "RawValue",
    "TaggedCodec",
    "WindowKind",
    "WindowSpec",
    "WindowedShard",
    "WindowedValue",
    "derive_index",
]


class WindowedShard(WindowWrites):
    """Windows of one table in one partition (see the module docstring).

    ``event_source`` returns the message being processed (anything with a
    ``timestamp``; the worker passes its context's current message).
    """

    def end_record(self) -> None:
        """The record's processing ended: a write before the next :meth:`begin` is
        outside any record, so it asks ``event_source`` again (and finds none)."""
        self._fast_ok = False

    def rollback(self) -> None:
        """The record failed: its stream time, closes and late count are undone.

        (An ``on_late`` handler it called, or a line it logged, stays.)"""
        undo, self._undo = self._undo, None
        light, self._undo_light = self._undo_light, None
        if undo is None:
            if light is None:
                return  # the record changed nothing here (or none began)
            # All it changed: stream time, and windows it made.
            for name, value in zip(LIGHT_UNDONE, light, strict=False):
                setattr(self, name, value)
            self._unmake_created(light[-1])
        else:
            self._undo_snapshot(undo)
        # The fast path may name windows the record created (now undone),
        # and slices read as final may take writes again (stream time went back).
        self._open_slices = None
        self._drop_fast()
        self._fast_ok = False
        self._fast_created.clear()
        self._fast_bounds = (0, 0)
        self._fast_all = False

    def _undo_snapshot(self, undo: tuple[Any, ...]) -> None:
        """Restore what :meth:`_save_undo` took, and undo the record's index changes."""
        late = self.late
        for name, value in zip(UNDONE, undo, strict=False):
            setattr(self, name, value)
        del self._events[undo[-2] :]
        pending = self._index_pending
        for kb, before in self._index_undo.items():
            if before is None:
                pending.pop(kb, None)
            else:
                pending[kb] = before
        self._index_undo.clear()
        self._unmake_created(undo[-1])
        if self._count_late is not None and self.late != late:
            self._count_late(self.late - late)  # the table's count too

    def _unmake_created(self, mark: int) -> None:
        """Take the windows listed in _created_undo from ``mark`` on out of _created."""
        created, log = self._created, self._created_undo
        while len(log) > mark:
            due = log.pop()
            windows = created[due]
            windows.pop()
            if not windows:
                del created[due]

    def flush_meta(self) -> None:
        """Before a commit collects changes: buffer the stream time if it moved."""
        if self._meta_dirty:
            meta = {"stream_time": self._stream_time, "closed": self._closed}
            self.shard.set_encoded(META, RawValue(json.dumps(meta).encode()))
            self._meta_dirty = False

    def forget_entries(self) -> None:
        """The buffer may have dropped or replaced entries: the fast path lets go of them."""
        self._drop_fast()

    def committed(self) -> None:
        """The buffer was applied to the store: nothing is written any more."""
        self._written.clear()
        self._written_index.clear()
        self._written_points.clear()
        self._index_pending.clear()
        self._index_undo.clear()
        self._created.clear()
        self._created_undo.clear()
        self._undo = None
        self._undo_light = None
        self._fast_ok = False

    def reset(self) -> None:
        """The buffer was thrown away (or the store restored): reload on next use."""
        self._loaded = False
        self._events.clear()
        self._drop_fast()
        self._fast_ok = False
        self._fast_created.clear()
        self._fast_bounds = (0, 0)
        self._fast_all = False
        self._open_slices = None
        self.committed()

    def windows(
        self,
        key: Any,
        start_from: int | None = None,
        start_to: int | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[WindowedValue]:
        """Windows of ``key`` with ``start_from <= start < start_to`` (None: open), by start
        (``reverse``: latest first), at most ``limit`` of them."""
        self._load()
        dp = DATA + self._prefix(key)
        if self.spec.kind == "hopping":
            return self._hopping_windows(dp, start_from, start_to, reverse, limit)
        lo = dp if start_from is None else dp + pack_time(max(start_from, MIN_TIME) + OFFSET)
        hi = (
            dp + b"\xff" * 17
            if start_to is None
            else dp + pack_time(min(start_to, MAX_TIME) + OFFSET)
        )
        at = len(dp)
        found: list[WindowedValue] = []
        for kb, value in self._scan(lo, hi, dp, reverse):
            found.append(WindowedValue(time_at(kb, at), time_at(kb, at + 8), value))
            if limit is not None and len(found) >= limit:
                break
        return found

    def _hopping_windows(
        self,
        dp: bytes,
        start_from: int | None,
        start_to: int | None,
        reverse: bool,
        limit: int | None,
    ) -> list[WindowedValue]:
        """:meth:`windows` of a hopping table: merged from the slices under ``dp``."""
        spec = self.spec
        lo = dp if start_from is None else dp + pack_time(max(start_from, MIN_TIME) + OFFSET)
        if start_to is None:
            hi = dp + b"\xff" * 17
        else:
            hi = dp + pack_time(min(start_to + spec.size, MAX_TIME) + OFFSET)
        at = len(dp)
        slices = {time_at(kb, at): value for kb, value in self._scan(lo, hi, dp)}
        assert spec.merge is not None
        found = slice_windows(
            slices, spec.size, spec.step, spec.merge, start_from, start_to, self._expired_through()
        )
        if reverse:
            found.reverse()
        return found if limit is None else found[:limit]

    def get(self, key: Any, start: int, end: int) -> WindowedValue | None:
        """The window ``[start, end)`` of ``key``, if it has a value."""
        spec = self.spec
        if spec.kind == "hopping":
            if end - start != spec.size or start % spec.step:
                return None  # not a window of this table
            for window in self.windows(key, start, start + 1):
                return window
            return None
        self._load()
        kb = DATA + self._prefix(key) + pack_bounds(start + OFFSET, end + OFFSET)
        value = self.shard.get_encoded(kb, MISSING)
        return None if value is MISSING else WindowedValue(start, end, value)

    def at(self, key: Any, t: int) -> WindowedValue | None:
        """The window of ``key`` that holds time ``t`` (see WindowedTable for which)."""
        spec = self.spec
        if spec.kind == "tumbling":
            start = t - t % spec.size
            return self.get(key, start, start + spec.size)
        if spec.kind == "hopping":
            start = t - t % spec.step
            return self.get(key, start, start + spec.size)
        if spec.kind == "sliding":
            return self.get(key, t - spec.size + 1, t + 1)
        for window in self.windows(key, None, t + 1, reverse=True, limit=1):
            return window if window.end > t else None
        return None

    def windows_at(self, key: Any, t: int) -> list[WindowedValue]:
        """Every window of ``key`` holding time ``t``, by start."""
        if self.spec.kind == "session":
            found = self.at(key, t)
            return [] if found is None else [found]
        return [w for w in self.windows(key, t - self.spec.size + 1, t + 1) if w.end > t]

    def overlapping(self, key: Any, t1: int, t2: int) -> list[WindowedValue]:
        """Windows of ``key`` with ``start < t2`` and ``end > t1``, by start."""
        start_from = None if self.spec.kind == "session" else t1 - self.spec.size + 1
        return [w for w in self.windows(key, start_from, t2) if w.end > t1]

    def keys(self) -> Iterator[Any]:
        """Yield the distinct keys with windows, in encoded-key order (a scan)."""
        decode = self.shard.key_codec.decode
        last: bytes | None = None
        for kb, _ in self.shard.iterate_encoded(DATA, DATA_END):
            (length,) = unpack_length(kb, 1)
            key = kb[5 : 5 + length]
            if key != last:
                last = key
                yield decode(key)

    def items(self) -> Iterator[tuple[Any, WindowedValue]]:
        """Yield ``(key, window)`` for every window, by key then start (a scan)."""
        decode = self.shard.key_codec.decode
        if self.spec.kind == "hopping":
            for key in self.keys():
                for window in self.windows(key):
                    yield key, window
            return
        for kb, value in self.shard.iterate_encoded(DATA, DATA_END):
            (length,) = unpack_length(kb, 1)
            at = 5 + length
            yield decode(kb[5:at]), WindowedValue(time_at(kb, at), time_at(kb, at + 8), value)
