"""``WindowWrites``: a windowed shard's writes, one path per kind of window.

Tumbling windows and hopping slices take one aligned store key per write
(``+=`` has a fast path that finds it again without encoding); sliding
tables write the record's point and the windows it changes; sessions find
the sessions a record touches and merge them. A write whose windows closed
is late: dropped, counted and logged, or given to ``on_late``.

Thread ownership: the partition thread of its shard.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from statestream.errors import TableError
from statestream.tables.shard import EntryState
from statestream.tables.window_closing import WindowClosing
from statestream.tables.window_layout import (
    DATA,
    MAX_TIME,
    MIN_TIME,
    MISSING,
    OFFSET,
    POINT,
    POINT_INDEX,
    LateRecord,
    pack_bounds,
    pack_time,
    sliding_windows,
    time_at,
)

__all__ = ["WindowWrites"]

_DELETED = EntryState.DELETED
_SET = EntryState.SET

log = logging.getLogger("statestream.tables")

#: Kinds whose writes go to one aligned store key: a tumbling window, or a
#: hopping table's slice of one step.
_ALIGNED = frozenset({"tumbling", "hopping"})
#: Most keys the fast path remembers (it starts over beyond).
_FAST_MAX = 100_000
#: Seconds between two log lines about late records of one shard.
_LATE_LOG_INTERVAL = 10.0


class WindowWrites(WindowClosing):
    """The writes of a windowed shard (see the module docstring)."""

    def update(self, key: Any, fn: Callable[[Any], Any]) -> None:
        """Apply ``fn`` to every open window of ``key`` containing the current event time."""
        if self._undo is None:
            self._save_undo()
        self._write(key, fn, MISSING)

    def add(self, key: Any, amount: Any) -> Any:  # noqa: PLR0912 - the per-record path, inline
        """``table[key] += amount``: :meth:`update` with ``value + amount``.

        Tumbling windows, the commonest case, and hopping windows (stored as
        one slice per step) take a path of their own: one store key per
        write, found without building a list. The per-record fast path (a
        later += of a record whose time was checked, see _fast_ok) runs
        in WindowSet.__iadd__, the only caller, before it calls this.

        Returns None when the write is done, or the key's buffer entry in
        the fast path's window (open, not deleted, stream time moved to the
        record's time) for the caller to add ``amount`` to.
        """
        source = self.event_source
        message = None if source is None else source()
        spec = self.spec
        if spec.kind not in _ALIGNED:
            self.update(key, lambda value: value + amount)
            return None
        # The record's time: time_of(message), its commonest case inline.
        if message is self._time_of and message is not None:
            t = self._time
        elif message is not None and self.event_time is None:
            t = message.timestamp
            if type(t) is int and MIN_TIME <= t <= MAX_TIME:
                self._time_of, self._time = message, t
            else:
                t = self.now()  # raises EventTimeError
        else:
            t = self.time_of(message)
        lo, hi = self._fast_bounds
        if lo <= t < hi:
            # The window of this shard's last += : the key's store key there,
            # if the key was written in it.
            entry = self._fast.get(key)
            if entry is None and type(key) is int:
                entry = self._fast_ints.get(key)
            if entry is not None:
                st = self._stream_time
                assert st is not None  # _fast is filled only once loaded
                grace = spec.grace
                if t > st:
                    # _advance, inline: stream time moves with most records.
                    if self._undo is None and self._undo_light is None:
                        # _save_light_undo(), inline (LIGHT_UNDONE's order)
                        self._undo_light = (
                            st,
                            self._meta_dirty,
                            self._next_close,
                            self._next_expire,
                            self._sweep_at,
                            len(self._created_undo),
                        )
                    self._stream_time = st = t
                    self._meta_dirty = True
                    if t - grace >= self._sweep_at:
                        self._sweep_undone(t - grace)
                elif self._backlog:
                    self._sweep_undone(st - grace)
                if hi > st - grace and entry.state is not _DELETED:
                    if not self._backlog:
                        self._fast_ok = message is not None
                    return entry  # the caller adds amount
        self._add_aligned(key, amount, t)
        if message is not None and not self._backlog:
            # The record's time is checked now as on the fast path above: its
            # next += of a key known here goes straight to the entry.
            lo, hi = self._fast_bounds
            st = self._stream_time
            if lo <= t < hi and st is not None and t <= st and hi > st - spec.grace:
                self._fast_ok = True
        return None

    def _sweep_undone(self, cutoff: int) -> None:
        """:meth:`_sweep`, after the record's undo snapshot (add's fast path takes none)."""
        if self._undo is None:
            self._save_undo()
        self._sweep(cutoff)

    def _undo_to_advance(self, t: int) -> int | None:
        """Load the shard, and take the undo the record needs before ``_advance(t)``
        (the first change it makes); return the stream time it found."""
        if not self._loaded:
            if self._undo is None:
                self._save_undo()  # (which loads)
            self._load()
            return self._stream_time
        st = self._stream_time
        if self._undo is None:
            if st is not None and st < t < self._sweep_at + self.spec.grace:
                # Stream time moves and nothing falls due (_advance looks at
                # no backlog when time moves): a light undo covers it.
                if self._undo_light is None:
                    self._save_light_undo()
            else:
                self._save_undo()  # closes and deletes may follow
        return st

    def _add_aligned(self, key: Any, amount: Any, t: int) -> None:
        """``+=`` on a tumbling window or hopping slice the fast path of :meth:`add` does
        not know."""
        spec = self.spec
        st = self._stream_time
        if not self._loaded or st is None or t > st or self._backlog:
            prev = self._undo_to_advance(t)
            st = self._advance(t)
        else:
            prev = st
            if self._undo is None and self._undo_light is None:
                self._save_light_undo()
        step = spec.step  # the size, for tumbling windows
        start = t - t % step
        end = start + step
        if end <= st - spec.grace:
            self._late(key, t, st)  # hopping: the oldest window holding t closed
            return
        due = start + spec.size
        prefix, data = self._keys(key)
        bounds = pack_bounds(start + OFFSET, end + OFFSET)
        kb = data + bounds
        if self._fast_bounds != (start, end):
            self._drop_fast()
            self._fast_created.clear()
            self._fast_bounds = (start, end)
            self._fast_packed = bounds
            # The first write at or after `start` (stream time was below it):
            # no window [start, end) exists yet, so _create lists each one
            # the table gets in _fast_created (until it overflows).
            self._fast_all = prev is None or prev < start
        elif (
            len(self._fast) >= _FAST_MAX
            or len(self._fast_ints) >= _FAST_MAX
            or len(self._fast_created) >= _FAST_MAX
        ):
            self._drop_fast()
            self._fast_created.clear()
            self._fast_all = False
        if self._fast_all and kb not in self._fast_created:
            # A new window for sure: no store read to find that out.
            default = self.default  # (self._fresh(key), inline)
            if default is None:
                raise KeyError(key)
            entry = self._create_window(
                prefix, data, bounds, kb, start, end, due, default() + amount, end
            )
        elif self.shard.add_encoded(kb, amount):
            self._note_written(data, kb)
            entry = self.shard.buffered(kb)
        else:
            value = self._fresh(key) + amount
            entry = self._create_window(prefix, data, bounds, kb, start, end, due, value, end)
        kind = type(key)
        if kind is str or kind is bytes:
            self._fast[key] = entry
        elif kind is int:
            self._fast_ints[key] = entry

    def _add_in_fast(self, key: Any, amount: Any) -> None:
        """``+=`` of a key not in the fast path, by a record whose time it checked.

        WindowSet.__iadd__ calls this when ``_fast_ok`` holds: the record's
        time is in ``_fast_bounds``, stream time is at or past it with
        nothing waiting, and the window is open. A key the table has no
        window of there yet (``_fast_all``) gets one here, without the
        checks and bounds :meth:`_add_aligned` works out again; anything
        else goes to :meth:`_add_aligned`.
        """
        created = self._fast_created
        if (
            not self._fast_all
            or len(created) >= _FAST_MAX
            or len(self._fast) >= _FAST_MAX
            or len(self._fast_ints) >= _FAST_MAX
        ):
            self._add_aligned(key, amount, self._time)
            return
        keys = self._key_cache.get(key) if type(key) is str else None  # (_keys, inline)
        prefix, data = self._keys(key) if keys is None else keys
        bounds = self._fast_packed
        kb = data + bounds
        if kb in created:  # it has one, which left _fast (the buffer dropped it)
            self._add_aligned(key, amount, self._time)
            return
        default = self.default  # (self._fresh(key), inline)
        if default is None:
            raise KeyError(key)
        if self._undo is None and self._undo_light is None:
            self._save_light_undo()
        start, end = self._fast_bounds
        due = start + self.spec.size
        # _create_window, with the entry put straight in: the window is new
        # for sure, so the buffer has no entry for it.
        entry = self.shard._put(kb, default() + amount, _SET)
        self._note_made(prefix, data, bounds, kb, start, end, due, end)
        kind = type(key)
        if kind is str or kind is bytes:
            self._fast[key] = entry
        elif kind is int:
            self._fast_ints[key] = entry

    def assign(self, key: Any, value: Any) -> None:
        """Set ``value`` in every open window of ``key`` containing the current event time."""
        kind = self.spec.kind
        if kind in ("sliding", "hopping"):
            held = "records" if kind == "sliding" else "steps"
            raise TableError(
                f"{kind} windowed table {self.name!r}: a window's value is the merge of "
                f"the {held} it holds, so it cannot be assigned; update it with "
                "table[key] += x or table[key].update(fn)"
            )
        if self._undo is None:
            self._save_undo()
        self._write(key, None, value)

    def _write(self, key: Any, fn: Callable[[Any], Any] | None, value: Any) -> None:
        t = self.now()
        st = self._advance(t)
        kind = self.spec.kind
        if kind == "session":
            self._write_session(key, t, st, fn, value)
        elif kind == "sliding":
            assert fn is not None
            self._write_sliding(key, t, st, fn)
        elif kind == "hopping":
            assert fn is not None
            self._write_slice(key, t, st, fn)
        else:
            self._write_tumbling(key, t, st, fn, value)

    def _write_slice(self, key: Any, t: int, st: int, fn: Callable[[Any], Any]) -> None:
        """Hopping: apply ``fn`` to the slice of ``t``'s step (windows merge slices)."""
        spec = self.spec
        start = t - t % spec.step
        end = start + spec.step
        if end <= st - spec.grace:
            self._late(key, t, st)  # the oldest window holding t closed
            return
        prefix, data = self._keys(key)
        kb = data + pack_bounds(start + OFFSET, end + OFFSET)
        current = self.shard.get_encoded(kb, MISSING)
        if current is MISSING:
            self._create(prefix, start, end, start + spec.size, fn(self._fresh(key)), end)
        else:
            self._set(kb, fn(current), data)

    def _write_tumbling(
        self, key: Any, t: int, st: int, fn: Callable[[Any], Any] | None, value: Any
    ) -> None:
        spec = self.spec
        cutoff = st - spec.grace
        start = t - t % spec.size
        windows = [(start, start + spec.size)]
        prefix = self._prefix(key)
        data = DATA + prefix
        get = self.shard.get_encoded
        updated = 0
        for start, end in windows:
            if end <= cutoff:
                continue  # closed: this write is late for it
            kb = data + pack_bounds(start + OFFSET, end + OFFSET)
            current = get(kb, MISSING)
            if current is MISSING:
                new = value if fn is None else fn(self._fresh(key))
                self._create(prefix, start, end, end, new)
            else:
                self._set(kb, value if fn is None else fn(current), data)
            updated += 1
        if not updated:
            self._late(key, t, st)

    def _write_sliding(self, key: Any, t: int, st: int, fn: Callable[[Any], Any]) -> None:
        spec = self.spec
        size = spec.size
        cutoff = st - spec.grace
        if t + size <= cutoff:  # even the latest window that can hold t closed
            self._late(key, t, st)
            return
        merge = spec.merge
        assert merge is not None
        prefix = self._prefix(key)
        pp = POINT + prefix
        points: dict[int, Any] = {}
        lo, hi = pp + pack_time(t - size + OFFSET), pp + pack_time(t + size + 1 + OFFSET)
        at = len(pp)
        for kb, point in self._scan(lo, hi, pp):
            points[time_at(kb, at)] = point
        old = points.get(t, MISSING)
        new_point = fn(self._fresh(key) if old is MISSING else old)
        point_kb = pp + pack_time(t + OFFSET)
        self._set(point_kb, new_point, pp)
        if old is MISSING:
            # Due with its right window [t + 1, t + 1 + size), the last that t defines.
            index = POINT_INDEX + pack_time(t + size + 1 + OFFSET) + prefix + pack_time(t + OFFSET)
            self._index_put(index, True, self._written_points)
            if self._next_point is not None and t + size + 1 < self._next_point:
                self._next_point = t + size + 1
            self._sweep_at = min(self._sweep_at, t + size + 1)
        points[t] = new_point
        get = self.shard.get_encoded
        del fn  # applied to the point; windows are merges of points
        times = sorted(points)
        for start, end in sliding_windows(points, t, size):
            if end <= cutoff:
                continue  # closed: its value is final, this write is late for it
            kb = DATA + prefix + pack_bounds(start + OFFSET, end + OFFSET)
            current = get(kb, MISSING)
            if current is not MISSING and not start <= t < end:
                continue  # an existing window without t: unchanged
            # A window's value is the merge of the points inside it, whatever
            # fn is (fn applies to the point at t, not to merged values).
            value = functools.reduce(merge, [points[p] for p in times if start <= p < end])
            if current is MISSING:
                self._create(prefix, start, end, end, value)
            else:
                self._set(kb, value, DATA + prefix)

    def _write_session(
        self, key: Any, t: int, st: int, fn: Callable[[Any], Any] | None, value: Any
    ) -> None:
        spec = self.spec
        gap, cutoff = spec.size, st - spec.grace
        prefix = self._prefix(key)
        dp = DATA + prefix
        touching: list[tuple[int, int, Any]] = []
        hi = dp + pack_time(t + gap + 1 + OFFSET)
        for kb, current in self._scan(dp, hi, dp, reverse=True):
            start, end = time_at(kb, len(dp)), time_at(kb, len(dp) + 8)
            if end - 1 < t - gap:
                break  # sessions are disjoint: every earlier one ends earlier
            touching.append((start, end, current))
        touching.reverse()
        last = max([t] + [e - 1 for _, e, _ in touching])
        if last + 1 + gap <= cutoff or any(end + gap <= cutoff for _, end, _ in touching):
            # The session it would make, or one it would join, closed.
            self._late(key, t, st)
            return
        if fn is None:
            new = value
        else:
            values = [v for _, _, v in touching]
            if values:
                merge = spec.merge
                assert merge is not None
                base = functools.reduce(merge, values)
            else:
                base = self._fresh(key)
            new = fn(base)
        start = min([t] + [s for s, _, _ in touching])
        end = max([t + 1] + [e for _, e, _ in touching])
        if len(touching) == 1 and touching[0][:2] == (start, end):
            self._set(dp + pack_bounds(start + OFFSET, end + OFFSET), new, dp)
            return
        for s, e, _ in touching:
            self._remove(prefix, s, e, e + gap)
        self._create(prefix, start, end, end + gap, new)

    def _late(self, key: Any, t: int, st: int) -> None:
        if self._undo is None:
            self._save_undo()  # (after a light undo) the late count is undone too
        self.late += 1
        if self._count_late is not None:
            self._count_late(1)
        if self.on_late is not None:
            message = None if self.event_source is None else self.event_source()
            self.on_late(LateRecord(self.name, key, t, st, message))
            return
        now = time.monotonic()
        if now - self._last_late_log >= _LATE_LOG_INTERVAL:
            self._last_late_log = now
            log.warning(
                "table %r partition %d: dropped a late record (key %r, event time %d, stream "
                "time %d): its windows closed (grace %d ms); %d late so far on this partition",
                self.name,
                self.shard.partition,
                key,
                t,
                st,
                self.spec.grace,
                self.late,
            )

    def delete_key(self, key: Any) -> bool:
        """Delete every window (and point) of ``key``; return whether it had any."""
        if self._undo is None:
            self._save_undo()
        prefix = self._prefix(key)
        found = False
        self._open_slices = None  # they may name this key's slices
        dp = DATA + prefix
        at = len(dp)
        for kb, _ in list(self._scan(dp, dp + b"\xff" * 17, dp)):
            start, end = time_at(kb, at), time_at(kb, at + 8)
            self._remove(prefix, start, end, self._due_of(start, end))
            found = True
        pp = POINT + prefix
        for kb, _ in list(self._scan(pp, pp + b"\xff" * 9, pp)):
            t = time_at(kb, len(pp))
            self._delete(kb)
            due = t + self.spec.size + 1
            self._delete(POINT_INDEX + pack_time(due + OFFSET) + prefix + kb[len(pp) :])
        return found
