"""``WindowClosing``: stream time, and closing and expiry over the time index.

**Stream time** is the highest event time written to the table on this
partition; only a write advances it. A window *closes* when stream time
reaches its due time plus grace and is *deleted* (tombstones, through the
changelog) once stream time reaches due + grace + retention. Closing and
expiry walk the time index from its low end, so they touch only windows that
are due, never live ones; one record closes (and deletes) at most
:data:`_BUDGET` windows, the next records go on where it stopped. Closed
windows are reported in due order (:meth:`WindowClosing.take_closed`); the
close watermark under ``b"m"`` makes each close reported once per committed
history (after a crash, windows closed by uncommitted work close again:
at-least-once).

Thread ownership: the partition thread of its shard.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from statestream.tables.window_layout import (
    DATA,
    MIN_TIME,
    MISSING,
    NEVER,
    OFFSET,
    POINT,
    POINT_INDEX,
    POINT_INDEX_END,
    ClosedWindow,
    pack_time,
    slice_windows,
    time_at,
    unpack_bounds,
    unpack_length,
    unpack_time,
)
from statestream.tables.window_state import DueGroup, WindowState

__all__ = ["WindowClosing"]

#: ClosedWindow(...) without its generated __new__ frame: a close reports one
#: per window, a hopping close ten per slice.
_new = tuple.__new__
#: The order closes are reported in: due time, then key (encoded).
_due_and_key = operator.itemgetter(0, 1)

#: Most windows closed (or deleted) while one record is processed; the rest
#: follow with the next records, so one record that moves stream time far
#: never stalls its partition, or grows the write buffer, without bound.
_BUDGET = 10_000
#: Most hopping slices kept in memory between two closes (beyond, each close
#: reads the slices it needs from the store again).
_OPEN_SLICES_MAX = 500_000


def _windows_by_due(groups: list[DueGroup]) -> Iterator[tuple[int, Iterable[bytes]]]:
    """``(due, windows)`` of ``groups`` (in due order): the windows (``K start end``) of
    each due time, each window once: rows of one due time, and even one bucket,
    may list a window twice (deleted with its key and created again: see
    window_layout)."""
    at, n = 0, len(groups)
    while at < n:
        due = groups[at][0]
        to = at + 1
        while to < n and groups[to][0] == due:
            to += 1
        yield due, dict.fromkeys(itertools.chain.from_iterable(g[2] for g in groups[at:to]))
        at = to


class WindowClosing(WindowState):
    """Stream time, closes and deletes of a windowed shard (see the module docstring)."""

    def _advance(self, t: int) -> int:
        """Move stream time to ``t`` if it is later; close and expire what fell due."""
        self._load()
        st = self._stream_time
        if st is not None and t <= st:
            if self._backlog:
                self._sweep(st - self.spec.grace)
            return st
        self._stream_time = t
        self._meta_dirty = True
        cutoff = t - self.spec.grace
        if cutoff >= self._sweep_at:
            self._sweep(cutoff)
        return t

    def _sweep(self, cutoff: int) -> None:
        """Close, then delete, what is due at ``cutoff`` (stream time minus grace)."""
        spec = self.spec
        self._backlog = False
        due = self._next_close
        if due is None or due <= cutoff:
            self._close_through(cutoff)
        # Never delete a window before its close was reported.
        ecut = cutoff - spec.retention
        if self._closed is not None and self._closed < ecut:
            ecut = self._closed
        due = self._next_expire
        if due is None or due <= ecut:
            self._expire_through(ecut)
        if spec.kind == "sliding":
            due = self._next_point
            if due is None or due <= cutoff:
                self._expire_points(cutoff)
        self._set_sweep_at()

    def _set_sweep_at(self) -> None:
        """The cutoff at which the next close, expiry or point expiry can be due."""
        spec = self.spec
        nxt = [self._next_close, self._next_expire, self._next_point]
        if nxt[1] is not None:
            nxt[1] += spec.retention
        if spec.kind != "sliding":
            nxt[2] = NEVER
        self._sweep_at = MIN_TIME - 1 if None in nxt else min(n for n in nxt if n is not None)

    def _due_batch(self, groups: Iterator[DueGroup], cutoff: int) -> tuple[list[DueGroup], int]:
        """Take the groups of ``groups`` up to :data:`_BUDGET` windows (and every group of
        the last due time taken).

        Returns them and the due time they are complete through: ``cutoff``
        if the groups ended, else the last due taken.
        """
        taken: list[DueGroup] = []
        append = taken.append
        windows = 0
        last: int | None = None
        for group in groups:
            due = group[0]
            if windows >= _BUDGET and due != last:
                assert last is not None
                self._backlog = True  # the rest follows with the next records
                return taken, last
            append(group)
            windows += len(group[2])
            last = due
        return taken, cutoff

    def _close_through(self, cutoff: int) -> None:
        """Report every window with ``closed < due <= cutoff``, in due order."""
        closed = self._closed
        if self.spec.kind == "hopping":
            self._close_slices(cutoff)
            return
        if closed is None or cutoff > closed:
            if self.report_closes:
                taken, reached = self._due_batch(self._due_groups(closed, cutoff), cutoff)
                decode_key = self.shard.key_codec.decode
                # A peek: reading a window to report it neither marks it for the
                # commit's in-place check nor keeps a store read in the buffer.
                peek = self.shard.peek_encoded
                name, events = self.name, self._events
                key_of = self._key_of or {}
                # Tumbling windows of one due time share their bounds, so
                # their ClosedWindow (a tuple) too.
                size = self.spec.size if self.spec.kind == "tumbling" else None
                for due, rests in _windows_by_due(taken):
                    shared = None if size is None else _new(ClosedWindow, (name, due - size, due))
                    for rest in rests:
                        value = peek(DATA + rest, MISSING)
                        if value is MISSING:
                            continue  # deleted with its key (a bucket still names it)
                        window = shared
                        if window is None:
                            start, end = unpack_bounds(rest, len(rest) - 16)
                            window = _new(ClosedWindow, (name, start - OFFSET, end - OFFSET))
                        prefix = rest[:-16]  # K: rests are K start end
                        key = key_of.get(prefix)
                        if key is None:
                            key = decode_key(prefix[4:])
                        events.append((window, key, value))
            else:
                reached = cutoff  # nobody listens: only the watermark moves
            self._closed = closed = reached
            self._meta_dirty = True
        self._next_close = self._first_due(closed)

    def _close_slices(self, cutoff: int) -> None:
        """Hopping: report every window with ``closed < due <= cutoff``, merged from slices.

        A slice ``[s, s + step)`` is indexed under the due time of the last
        window holding it (``s + size``); the windows due in ``(closed,
        cutoff]`` hold exactly the slices indexed in ``(closed, cutoff + size
        - step]``, so one index range scan finds them, and each slice is read
        once for each window it is in (what reporting those windows takes).
        """
        spec = self.spec
        size, step = spec.size, spec.step
        closed = self._closed
        if closed is None or cutoff > closed:
            # Nobody listening: only the watermark moves.
            reached = self._report_slices(closed, cutoff) if self.report_closes else cutoff
            self._closed = closed = reached
            self._meta_dirty = True
        first = self._first_due(closed)
        if first != NEVER:
            first -= size - step  # the first window due that holds that slice
            if closed is not None:
                first = max(first, closed - closed % step + step)
        self._next_close = first

    def _report_slices(self, closed: int | None, cutoff: int) -> int:
        """Collect the closes of :meth:`_close_slices` (within the budget); return how far.

        The slices read stay in memory (:attr:`_open_slices`) until their
        last window closed, so the next closes read only the slices new to
        them: a slice is final once read (a write to it would be late).
        """
        spec = self.spec
        size, step, merge = spec.size, spec.step, spec.merge
        assert merge is not None
        floor = MIN_TIME if closed is None else closed
        slices = self._open_slices
        if slices is None or closed is None or self._open_through < floor:
            slices, loaded_through = {}, floor  # K -> slice start -> value
        else:
            loaded_through = self._open_through
        after = loaded_through if loaded_through > MIN_TIME else None
        hi_due = cutoff + size - step
        reached = cutoff
        last: int | None = None
        taken = 0
        get = self.shard.peek_encoded
        loaded_through = max(loaded_through, hi_due)
        for due, _, rests in self._due_groups(after, hi_due):
            # Past the budget, stop at a due boundary that completes a window.
            if taken >= _BUDGET and last is not None and due != last and last - size + step > floor:
                self._backlog = True
                reached = min(cutoff, last - size + step)
                loaded_through = last
                break
            last = due
            # A slice listed twice (see window_layout) is read twice, kept once.
            for rest in rests:
                value = get(DATA + rest, MISSING)
                if value is MISSING:
                    continue  # deleted with its key (a bucket still names it)
                taken += 1
                (length,) = unpack_length(rest)
                start = unpack_time(rest, 4 + length)[0] - OFFSET
                prefix = rest[: 4 + length]
                mine = slices.get(prefix)
                if mine is None:
                    slices[prefix] = {start: value}
                else:
                    mine[start] = value
        events = self._slice_events(slices, floor if closed is not None else None, reached)
        self._keep_open_slices(slices, reached, loaded_through)
        decode_key = self.shard.key_codec.decode
        key_of = self._key_of or {}  # keys written here, not decoded (WindowState._key_of)
        for due, prefix, start, value in events:
            window = _new(ClosedWindow, (self.name, start, due))
            key = key_of.get(prefix)
            self._events.append((window, decode_key(prefix[4:]) if key is None else key, value))
        return reached

    def _keep_open_slices(
        self, slices: dict[bytes, dict[int, Any]], reached: int, loaded_through: int
    ) -> None:
        """Keep what later closes need: the slices whose last window is due after ``reached``."""
        size = self.spec.size
        kept = 0
        for prefix in list(slices):
            mine = slices[prefix]
            for start in [start for start in mine if start + size <= reached]:
                del mine[start]
            if mine:
                kept += len(mine)
            else:
                del slices[prefix]
        if kept <= _OPEN_SLICES_MAX:
            self._open_slices, self._open_through = slices, loaded_through
        else:
            self._open_slices = None  # too many to keep: read them again next time

    def _slice_events(
        self, slices: dict[bytes, dict[int, Any]], closed: int | None, reached: int
    ) -> list[tuple[int, bytes, int, Any]]:
        """``(due, K, start, value)`` of every window with ``closed < due <= reached``
        holding one of ``slices`` (K -> slice start -> value), by due then key."""
        spec = self.spec
        size, step, merge = spec.size, spec.step, spec.merge
        assert merge is not None
        floor = MIN_TIME if closed is None else closed
        events: list[tuple[int, bytes, int, Any]] = []
        # Windows due in (floor, reached]: starts in (floor - size, reached - size].
        first = None if closed is None else floor - size + 1
        last_start = reached - size
        last_start -= last_start % step
        if first is not None and last_start - first < 4 * step:
            # Usually stream time passed one step: a window or two per key,
            # each merging the few slices of the key in it.
            starts = range(first + (-first) % step, last_start + 1, step)
            for prefix, mine in slices.items():
                held = sorted(mine.items())
                for a in starts:
                    values = [v for s, v in held if a <= s < a + size]
                    if values:
                        value = values[0] if len(values) == 1 else functools.reduce(merge, values)
                        events.append((a + size, prefix, a, value))
        else:
            for prefix, mine in slices.items():
                for start, end, value in slice_windows(
                    mine, size, step, merge, first, reached - size + 1
                ):
                    events.append((end, prefix, start, value))
        events.sort(key=_due_and_key)
        return events

    def _expire_through(self, cutoff: int) -> None:
        """Delete every window with ``due <= cutoff`` (found through the time index).

        The scan starts past what this shard expired already (those entries
        stay in the store until the commit), so each is read once. Windows
        created since the last commit and due by then are deleted too, and
        the commit writes no bucket for them (see local_changes).
        """
        done = self._expired
        reached = cutoff
        if done is None or cutoff > done:
            taken, reached = self._due_batch(self._due_groups(done, cutoff), cutoff)
            index_put, written = self._index_put, self._written_index
            delete = self.shard.delete_encoded
            for _, row, rests in taken:
                if row is not None:
                    index_put(row, False, written)  # self._delete(row), inline
                for rest in rests:
                    # self._delete of the window, inline, but for its note in
                    # _written: a window due is in the store, or was made since
                    # the last commit (and noted then), so range reads meet it
                    # without one, and the buffer answers for it. (A window
                    # listed twice gets its tombstone once: the buffer holds one.)
                    delete(DATA + rest)
            self._expired = done = reached
        self._next_expire = self._first_due(done)

    def _expire_points(self, cutoff: int) -> None:
        """Delete the point aggregates no window that can still change contains."""
        done = self._points_expired
        lo = POINT_INDEX if done is None else POINT_INDEX + pack_time(done + 1 + OFFSET)
        hi = POINT_INDEX + pack_time(cutoff + 1 + OFFSET)
        if done is None or cutoff > done:
            rows = self._pending_scan(lo, hi, self._written_points)
            taken, reached = self._due_batch(
                ((time_at(kb, 1), kb, (kb[9:],)) for kb, _ in rows), cutoff
            )
            for _, kb, rests in taken:
                assert kb is not None
                self._delete(kb)
                self._delete(POINT + rests[0])
            self._points_expired = done = reached
        lo = POINT_INDEX + pack_time(done + 1 + OFFSET)
        nxt = NEVER
        for kb, _ in self._pending_scan(lo, POINT_INDEX_END, self._written_points):
            nxt = time_at(kb, 1)
            break
        self._next_point = nxt

    @property
    def backlog(self) -> bool:
        """Whether closes or deletes wait for the next write (one write does at most
        :data:`_BUDGET` of each)."""
        return self._backlog

    def take_closed(self) -> list[tuple[ClosedWindow, Any, Any]]:
        """Return and forget the ``(window, key, value)`` closed since the last call."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events
