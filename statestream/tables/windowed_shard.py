"""``WindowedShard``: one windowed table's windows in one partition, on event time.

A windowed table keeps everything in the one store of its (table, partition),
as keys of an ordinary :class:`~statestream.tables.shard.TableShard`, so the
write buffer, the commit protocol, the changelog, restores and standbys treat
windows like any other state. The layout (times are 8 bytes, big-endian, sign
bit flipped, so they sort numerically; ``K`` is the key's length (4 bytes)
and the key as the table's key codec encodes it)::

    b"w" K start end        -> the window's value (hopping: the step's slice)
    b"e" due K start end    -> b"" (the time index: windows in the order they close)
    b"p" K t                -> a sliding table's point aggregate of time t
    b"q" t+size+1 K t       -> b"" (the points' time index)
    b"m"                    -> stream time and close watermark (JSON)

A hopping table stores one *slice* per key and step, ``[s, s + step)``,
indexed under the due time of the last window holding it (``s + size``); a
window's value is the merge of its slices, built when it is read or closes.
One key's windows are one contiguous range ordered by start, so reads of a
key are range scans of that key; closing and expiry walk the time index from
its low end, so they touch only windows that are due, never live ones.

**Stream time** is the highest event time written to the table on this
partition. Only a write advances it; it is kept under ``b"m"``, committed
with the data it describes, so it survives restarts, restores and standby
promotions, and windows restored from a changelog expire exactly like the
others. A window *closes* when stream time reaches its due time plus grace
(``due`` is the window's end; for a session, its end plus the gap: one
past the last time a record can still join it),
and is *deleted* (tombstones, through the changelog) once stream time
reaches due + grace + retention. Closed windows are reported in due order
(:meth:`take_closed`); the close watermark under ``b"m"`` makes each close
reported once per committed history (after a crash, windows closed by
uncommitted work close again: at-least-once).

Thread ownership: the partition thread of its shard, like the shard itself.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import struct
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from sortedcontainers import SortedSet

from statestream.errors import EventTimeError, TableContextError, TableError
from statestream.serde import Codec, JsonCodec
from statestream.tables.keyguard import CHECK_EVERY, CHECK_FIRST
from statestream.tables.shard import TableShard
from statestream.tables.windows import key_prefix
from statestream.tables.written import WrittenKeys

__all__ = [
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

log = logging.getLogger("statestream.tables")

WindowKind = Literal["tumbling", "hopping", "sliding", "session"]

_DATA, _INDEX, _POINT, _POINT_INDEX, _META = b"w", b"e", b"p", b"q", b"m"
_DATA_END, _INDEX_END, _POINT_INDEX_END = b"x", b"f", b"r"
_OFFSET = 1 << 63
_MIN, _MAX = -(1 << 63), (1 << 63) - 1
_NEVER = 1 << 64  # a due time no stream time reaches
_one = struct.Struct(">Q").pack
_pair = struct.Struct(">QQ").pack
_unpack_one = struct.Struct(">Q").unpack_from
_unpack_pair = struct.Struct(">QQ").unpack_from
_unpack_len = struct.Struct(">I").unpack_from
_MISSING: Any = object()
#: Key types the tumbling += fast path remembers (hashable, and immutable:
#: a remembered key must keep meaning the same store key).
_FAST_KEYS = frozenset({str, int, bytes})
#: Most hopping slices kept in memory between two closes (beyond, each close
#: reads the slices it needs from the store again).
_OPEN_SLICES_MAX = 500_000
#: Kinds whose writes go to one aligned store key: a tumbling window, or a
#: hopping table's slice of one step.
_ALIGNED = frozenset({"tumbling", "hopping"})
#: Most keys the fast path remembers (it starts over beyond).
_FAST_MAX = 100_000
#: Seconds between two log lines about late records of one shard.
_LATE_LOG_INTERVAL = 10.0
#: Most windows closed (or deleted) while one record is processed; the rest
#: follow with the next records, so one record that moves stream time far
#: never stalls its partition, or grows the write buffer, without bound.
_BUDGET = 10_000
#: What a record may change of a shard's own state, so what a rollback restores.
_UNDONE = (
    "late",
    "_stream_time",
    "_closed",
    "_next_close",
    "_next_expire",
    "_next_point",
    "_expired",
    "_points_expired",
    "_backlog",
    "_sweep_at",
    "_meta_dirty",
)
_saved = operator.attrgetter(*_UNDONE)


class WindowedValue(NamedTuple):
    """A window's value with its bounds: ``[start, end)`` in milliseconds."""

    start: int
    end: int
    value: Any


class ClosedWindow(NamedTuple):
    """A window that closed: its table and bounds (``[start, end)``, milliseconds)."""

    table: str
    start: int
    end: int


class LateRecord(NamedTuple):
    """A write dropped because every window it belonged to had closed."""

    table: str
    key: Any
    event_time: int
    stream_time: int
    message: Any


@dataclass(frozen=True)
class WindowSpec:
    """How a windowed table windows time (milliseconds throughout).

    ``size`` is the window size (for sessions: the inactivity gap); ``step``
    the hop of hopping windows (``size`` for the others).
    """

    kind: WindowKind
    size: int
    step: int
    grace: int
    retention: int
    merge: Callable[[Any, Any], Any] | None = None

    @property
    def longest(self) -> int:
        """How long after its start a window (or a session's last record) falls due."""
        return self.size


class RawValue(bytes):
    """A value statestream stores in a windowed table for itself (index, metadata)."""


class TaggedCodec:
    """The table's value codec, with statestream's own raw values told apart by a tag byte.

    User values are ``b"\\x01"`` + the table codec's bytes; :class:`RawValue`
    is ``b"\\x00"`` + its bytes.
    """

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = f"windowed-{inner.name}"
        #: Whether ints and strings always encode (lets the shard encode them at commit).
        self.defers = isinstance(inner, JsonCodec)

    def encode(self, obj: Any) -> bytes:
        if type(obj) is RawValue:
            return b"\x00" + obj
        return b"\x01" + self.inner.encode(obj)

    def decode(self, data: bytes) -> Any:
        if data[:1] == b"\x00":
            return RawValue(data[1:])
        return self.inner.decode(data[1:])


_EMPTY = RawValue(b"")


def _t(raw: bytes, at: int) -> int:
    return int(_unpack_one(raw, at)[0]) - _OFFSET


#: Tags of the keys a windowed table keeps in its store only: the two time
#: indexes follow from the window and point keys, so they are not written to
#: the changelog (half the records, for windows written once) and restores
#: and standbys derive them (:func:`derive_index`).
LOCAL_TAGS = frozenset({_INDEX, _POINT_INDEX})
#: An index entry's stored bytes: a raw, empty value (TaggedCodec's tag 0).
_EMPTY_STORED = b"\x00"


def _sliding_windows(points: dict[int, Any], t: int, size: int) -> list[tuple[int, int]]:
    """The sliding windows a record at ``t`` needs, given the key's record times near it.

    Every window holding ``t``: its own left window, the right windows of
    earlier records and the left windows of later ones within ``size``;
    and ``t``'s right window if a later record falls in it.
    """
    needed: dict[tuple[int, int], None] = {(t - size + 1, t + 1): None}
    later = False
    for p in sorted(points):
        if t - size <= p < t:
            needed[(p + 1, p + 1 + size)] = None  # p's right window holds t
        elif t < p < t + size:
            needed[(p - size + 1, p + 1)] = None  # p's left window holds t
        if t < p <= t + size:
            later = True
    if later:
        needed[(t + 1, t + 1 + size)] = None  # t's right window (without t)
    return list(needed)


def _slice_windows(
    slices: dict[int, Any],
    size: int,
    step: int,
    merge: Callable[[Any, Any], Any],
    start_from: int | None,
    start_to: int | None,
    expired: int | None = None,
) -> list[WindowedValue]:
    """The hopping windows of one key's slices (start -> value), by start.

    Each window ``[a, a + size)`` holding a slice, with ``start_from <= a <
    start_to`` (None: open) and due after ``expired``; its value merges its
    slices in time order.
    """
    times = sorted(slices)
    starts: set[int] = set()
    for s in times:
        lo = s - size + step
        hi = s + 1
        if start_from is not None and lo < start_from:
            lo = start_from + (s - start_from) % step  # the first aligned start from there
        if start_to is not None and hi > start_to:
            hi = start_to
        starts.update(range(lo, hi, step))
    found: list[WindowedValue] = []
    for a in sorted(starts):
        if (start_from is not None and a < start_from) or (start_to is not None and a >= start_to):
            continue
        if expired is not None and a + size <= expired:
            continue
        lo, hi = bisect_left(times, a), bisect_left(times, a + size)
        value = functools.reduce(merge, [slices[s] for s in times[lo:hi]])
        found.append(WindowedValue(a, a + size, value))
    return found


def derive_index(
    spec: WindowSpec,
) -> Callable[[bytes, bytes | None, dict[bytes, bytes | None]], None]:
    """Return the function that adds the index entry of a restored window or point record."""
    size = spec.size
    session = spec.kind == "session"
    hopping = spec.kind == "hopping"

    def derive(key: bytes, value: bytes | None, batch: dict[bytes, bytes | None]) -> None:
        tag = key[:1]
        if tag == _DATA:
            (length,) = _unpack_len(key, 1)
            if hopping:  # a slice: due with the last window holding it
                due = _t(key, 5 + length) + size
            else:
                end = _t(key, 5 + length + 8)
                due = end + size if session else end
            index = _INDEX + _one(due + _OFFSET) + key[1:]
        elif tag == _POINT:
            (length,) = _unpack_len(key, 1)
            t = _t(key, 5 + length)
            index = _POINT_INDEX + _one(t + size + 1 + _OFFSET) + key[1:]
        else:
            return
        batch[index] = None if value is None else _EMPTY_STORED

    return derive


class WindowedShard:
    """Windows of one table in one partition (see the module docstring).

    ``event_source`` returns the message being processed (anything with a
    ``timestamp``; the worker passes its context's current message).
    """

    def __init__(
        self,
        name: str,
        spec: WindowSpec,
        shard: TableShard,
        *,
        default: Callable[[], Any] | None,
        event_time: Callable[[Any], int] | None = None,
        on_late: Callable[[LateRecord], None] | None = None,
        count_late: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.shard = shard
        self.default = default
        self.event_time = event_time
        self.on_late = on_late
        self._count_late = count_late
        self.event_source: Callable[[], Any] | None = None
        #: Late writes dropped on this shard since it was opened.
        self.late = 0
        self._last_late_log = 0.0
        self._time_of: Any = None
        self._time = 0
        self._loaded = False
        self._stream_time: int | None = None
        self._closed: int | None = None
        self._next_close: int | None = None  # None: unknown, look
        self._next_expire: int | None = None
        self._next_point: int | None = None
        # What this shard deleted already (in memory: the deletes reach the
        # store at the next commit; until then the scans skip them).
        self._expired: int | None = None
        self._points_expired: int | None = None
        # Closes or deletes left over by the budget of one record.
        self._backlog = False
        # Below this cutoff nothing can be due (see _set_sweep_at).
        self._sweep_at = _MIN - 1
        #: Whether closed windows are collected for take_closed (the worker
        #: turns it off when no processor listens and no final topic is set).
        self.report_closes = True
        self._meta_dirty = False
        self._events: list[tuple[ClosedWindow, Any, Any]] = []
        # Keys written since the last commit, per key range (b"w"/b"p" + K) and
        # for the two indexes, so range reads need not search the whole buffer.
        self._written: dict[bytes, set[bytes]] = {}
        # Sorted: closing scans run often (a session table's dues are spread
        # out) and must find the buffered index entries of their range
        # without a pass over all of them.
        self._written_index: SortedSet | WrittenKeys = (
            WrittenKeys() if spec.kind in ("tumbling", "hopping") else SortedSet()
        )
        self._written_points: SortedSet = SortedSet()
        self._key_cache: dict[str, tuple[bytes, bytes]] = {}
        # Tumbling +=: the store key of each key's window [lo, hi) (the window
        # of the latest += of the shard), for keys written since the last
        # commit; the next += of the same key in that window needs no
        # encoding, window arithmetic or range bookkeeping.
        self._fast: dict[Any, tuple[bytes, bytes, int]] = {}
        self._fast_bounds: tuple[int, int] = (0, 0)
        # Store keys of the windows [_fast_bounds) created since they began,
        # and whether that is every one there is.
        self._fast_created: set[bytes] = set()
        self._fast_all = False
        # Hopping: the final slices closes still need (K -> start -> value),
        # loaded from the index through due _open_through (None: not kept).
        self._open_slices: dict[bytes, dict[int, Any]] | None = None
        self._open_through = _MIN
        # Commits so far: an entry of _fast from an earlier one must list its
        # key in _written again (the commit cleared it).
        self._generation = 0
        self._undo: tuple[Any, ...] | None = None
        self._new_keys = 0

    # -- hooks of the shard's life (called by TableShard) ------------------------

    def begin(self) -> None:
        """A record starts: remember what a rollback restores."""
        if not self._loaded:
            self._load()
        self._undo = (*_saved(self), len(self._events))

    def rollback(self) -> None:
        """The record failed: its stream time, closes and late count are undone.

        (An ``on_late`` handler it called, or a line it logged, stays.)"""
        undo, self._undo = self._undo, None
        if undo is None:
            return  # nothing began (the shard rolled back before any record)
        late = self.late
        for name, value in zip(_UNDONE, undo, strict=False):
            setattr(self, name, value)
        del self._events[undo[-1] :]
        if self._count_late is not None and self.late != late:
            self._count_late(self.late - late)  # the table's count too
        # The fast path may name windows the record created (now undone),
        # and slices read as final may take writes again (stream time went back).
        self._open_slices = None
        self._fast.clear()
        self._fast_created.clear()
        self._fast_bounds = (0, 0)
        self._fast_all = False

    def flush_meta(self) -> None:
        """Before a commit collects changes: buffer the stream time if it moved."""
        if self._meta_dirty:
            meta = {"stream_time": self._stream_time, "closed": self._closed}
            self.shard.set_encoded(_META, RawValue(json.dumps(meta).encode()))
            self._meta_dirty = False

    def committed(self) -> None:
        """The buffer was applied to the store: nothing is written any more."""
        self._written.clear()
        self._written_index.clear()
        self._written_points.clear()
        self._generation += 1
        self._undo = None

    def reset(self) -> None:
        """The buffer was thrown away (or the store restored): reload on next use."""
        self._loaded = False
        self._events.clear()
        self._fast.clear()
        self._fast_created.clear()
        self._fast_bounds = (0, 0)
        self._fast_all = False
        self._open_slices = None
        self.committed()

    # -- time ----------------------------------------------------------------------

    def stream_time(self) -> int | None:
        """The highest event time written on this partition (None before any)."""
        self._load()
        return self._stream_time

    def now(self) -> int:
        """The event time of the record being processed."""
        source = self.event_source
        message = None if source is None else source()
        if message is None:
            raise TableContextError(
                f"windowed table {self.name!r}: no record is being processed, so there is no "
                "event time; write windowed tables from process(), or read a given time "
                "with table[key].at(t)"
            )
        if message is self._time_of:
            return self._time
        t = message.timestamp if self.event_time is None else self.event_time(message)
        if type(t) is not int or not _MIN <= t <= _MAX:
            raise EventTimeError(
                f"windowed table {self.name!r}: event time must be an int of milliseconds, "
                f"got {t!r}" + ("" if self.event_time is None else " from its event_time function")
            )
        self._time_of, self._time = message, t
        return t

    def _load(self) -> None:
        if self._loaded:
            return
        raw = self.shard.get_encoded(_META)
        meta = {} if raw is None else json.loads(bytes(raw))
        self._stream_time = meta.get("stream_time")
        self._closed = meta.get("closed")
        self._next_close = self._next_expire = self._next_point = None
        self._expired = self._points_expired = None
        self._backlog = False
        self._sweep_at = _MIN - 1
        self._meta_dirty = False
        self._loaded = True

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
            nxt[2] = _NEVER
        self._sweep_at = _MIN - 1 if None in nxt else min(n for n in nxt if n is not None)

    # -- closing and expiry ------------------------------------------------------

    def _index_scan(self, lo: bytes, hi: bytes, values: bool = True) -> Iterator[tuple[bytes, Any]]:
        written = self._written_index.irange(lo, hi, inclusive=(True, False))
        return self.shard.iterate_encoded(lo, hi, written=written, values=values)

    def _first_due(self, after: int | None) -> int:
        """The due time of the first window due after ``after`` (None: of the first)."""
        lo = _INDEX if after is None else _INDEX + _one(after + 1 + _OFFSET)
        for kb, _ in self._index_scan(lo, _INDEX_END, values=False):
            return _t(kb, 1)
        return _NEVER

    def _due_batch(
        self, scan: Iterator[tuple[bytes, Any]], cutoff: int
    ) -> tuple[list[tuple[bytes, Any]], int]:
        """Take up to :data:`_BUDGET` entries of ``scan`` (every one of the last due time).

        Returns them and the due time they are complete through: ``cutoff``
        if the scan ended, else the last due taken.
        """
        taken: list[tuple[bytes, Any]] = []
        last: int | None = None
        for kb, value in scan:
            due = _t(kb, 1)
            if len(taken) >= _BUDGET and due != last:
                assert last is not None
                self._backlog = True  # the rest follows with the next records
                return taken, last
            taken.append((kb, value))
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
                lo = _INDEX if closed is None else _INDEX + _one(closed + 1 + _OFFSET)
                hi = _INDEX + _one(cutoff + 1 + _OFFSET)
                taken, reached = self._due_batch(self._index_scan(lo, hi, values=False), cutoff)
                decode_key = self.shard.key_codec.decode
                for kb, _ in taken:
                    rest = kb[9:]
                    value = self.shard.get_encoded(_DATA + rest, _MISSING)
                    if value is _MISSING:
                        continue
                    (length,) = _unpack_len(rest)
                    start, end = _unpack_pair(rest, 4 + length)
                    window = ClosedWindow(self.name, start - _OFFSET, end - _OFFSET)
                    self._events.append((window, decode_key(rest[4 : 4 + length]), value))
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
        if first != _NEVER:
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
        floor = _MIN if closed is None else closed
        slices = self._open_slices
        if slices is None or closed is None or self._open_through < floor:
            slices, loaded_through = {}, floor  # K -> slice start -> value
        else:
            loaded_through = self._open_through
        lo = _INDEX + _one(loaded_through + 1 + _OFFSET) if loaded_through > _MIN else _INDEX
        hi_due = cutoff + size - step
        hi = _INDEX + _one(hi_due + 1 + _OFFSET)
        reached = cutoff
        last: int | None = None
        taken = 0
        get = self.shard.peek_encoded
        loaded_through = max(loaded_through, hi_due)
        for kb, _ in self._index_scan(lo, hi, values=False):
            due = _unpack_one(kb, 1)[0] - _OFFSET
            # Past the budget, stop at a due boundary that completes a window.
            if taken >= _BUDGET and last is not None and due != last and last - size + step > floor:
                self._backlog = True
                reached = min(cutoff, last - size + step)
                loaded_through = last
                break
            last = due
            rest = kb[9:]
            value = get(_DATA + rest, _MISSING)
            if value is _MISSING:
                continue
            taken += 1
            (length,) = _unpack_len(rest)
            start = _unpack_one(rest, 4 + length)[0] - _OFFSET
            prefix = rest[: 4 + length]
            mine = slices.get(prefix)
            if mine is None:
                slices[prefix] = {start: value}
            else:
                mine[start] = value
        events = self._slice_events(slices, floor if closed is not None else None, reached)
        self._keep_open_slices(slices, reached, loaded_through)
        decode_key = self.shard.key_codec.decode
        for due, prefix, start, value in events:
            window = ClosedWindow(self.name, start, due)
            self._events.append((window, decode_key(prefix[4:]), value))
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
        floor = _MIN if closed is None else closed
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
                for start, end, value in _slice_windows(
                    mine, size, step, merge, first, reached - size + 1
                ):
                    events.append((end, prefix, start, value))
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    def _expire_through(self, cutoff: int) -> None:
        """Delete every window with ``due <= cutoff`` (found through the time index).

        The scan starts past what this shard expired already (those entries
        stay in the store until the commit), so each is read once.
        """
        done = self._expired
        lo = _INDEX if done is None else _INDEX + _one(done + 1 + _OFFSET)
        hi = _INDEX + _one(cutoff + 1 + _OFFSET)
        reached = cutoff
        if done is None or cutoff > done:
            taken, reached = self._due_batch(self._index_scan(lo, hi, values=False), cutoff)
            for kb, _ in taken:
                self._delete(kb)
                self._delete(_DATA + kb[9:])
            self._expired = done = reached
        self._next_expire = self._first_due(done)

    def _expire_points(self, cutoff: int) -> None:
        """Delete the point aggregates no window that can still change contains."""
        done = self._points_expired
        lo = _POINT_INDEX if done is None else _POINT_INDEX + _one(done + 1 + _OFFSET)
        hi = _POINT_INDEX + _one(cutoff + 1 + _OFFSET)
        if done is None or cutoff > done:
            written = self._written_points.irange(lo, hi, inclusive=(True, False))
            scan = self.shard.iterate_encoded(lo, hi, written=written, values=False)
            taken, reached = self._due_batch(scan, cutoff)
            for kb, _ in taken:
                self._delete(kb)
                self._delete(_POINT + kb[9:])
            self._points_expired = done = reached
        lo = _POINT_INDEX + _one(done + 1 + _OFFSET)
        written = self._written_points.irange(lo, _POINT_INDEX_END, inclusive=(True, False))
        nxt = _NEVER
        scan = self.shard.iterate_encoded(lo, _POINT_INDEX_END, written=written, values=False)
        for kb, _ in scan:
            nxt = _t(kb, 1)
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

    # -- writes --------------------------------------------------------------------

    def _keys(self, key: Any) -> tuple[bytes, bytes]:
        """``(K, b"w" + K)`` of ``key``: its store-key prefix, and its windows' range.

        Cached for str keys: the same bytes objects each time, hashed once.
        """
        if type(key) is str:
            cached = self._key_cache.get(key)
            if cached is None:
                if len(self._key_cache) >= 100_000:
                    self._key_cache.clear()
                prefix = key_prefix(self.shard.key_codec.encode(key))
                cached = self._key_cache[key] = (prefix, _DATA + prefix)
            return cached
        prefix = key_prefix(self.shard.key_codec.encode(key))
        return prefix, _DATA + prefix

    def _prefix(self, key: Any) -> bytes:
        return self._keys(key)[0]

    def _set(self, kb: bytes, value: Any, range_prefix: bytes) -> None:
        """Buffer ``kb`` (in the key range ``range_prefix``: its tag and K)."""
        self.shard.set_encoded(kb, value)
        written = self._written.get(range_prefix)
        if written is None:
            written = self._written[range_prefix] = set()
        written.add(kb)

    def _delete(self, kb: bytes) -> None:
        self.shard.delete_encoded(kb)
        tag = kb[:1]
        if tag == _INDEX:
            self._written_index.add(kb)
        elif tag == _POINT_INDEX:
            self._written_points.add(kb)
        else:
            self._written.setdefault(kb[: 5 + _unpack_len(kb, 1)[0]], set()).add(kb)

    def _scan(
        self, lo: bytes, hi: bytes, range_prefix: bytes, reverse: bool = False
    ) -> Iterator[tuple[bytes, Any]]:
        written = self._written.get(range_prefix)
        ordered = (
            sorted((kb for kb in written if lo <= kb < hi), reverse=reverse) if written else ()
        )
        return self.shard.iterate_encoded(lo, hi, reverse, written=ordered)

    def _create(
        self, prefix: bytes, start: int, end: int, due: int, value: Any, first: int | None = None
    ) -> None:
        """Write a new window (or slice) and its index entry.

        ``due`` is when it may be deleted (its last window due), ``first``
        when the first window holding it closes (``due`` if None).
        """
        bounds = _pair(start + _OFFSET, end + _OFFSET)
        kb = _DATA + prefix + bounds
        self._set(kb, value, _DATA + prefix)
        if (start, end) == self._fast_bounds:
            self._fast_created.add(kb)
        index = _INDEX + _one(due + _OFFSET) + prefix + bounds
        self.shard.set_encoded(index, _EMPTY)
        self._written_index.add(index)
        first = due if first is None else first
        if self._next_close is not None and first < self._next_close:
            self._next_close = first
        if self._next_expire is not None and due < self._next_expire:
            self._next_expire = due
        self._sweep_at = min(self._sweep_at, first)
        guard = self.shard.key_guard
        if guard is not None:
            self._new_keys = count = self._new_keys + 1
            if count <= CHECK_FIRST or not count % CHECK_EVERY:
                source = self.shard.source
                guard(prefix[4:], None if source is None else source[0])

    def _remove(self, prefix: bytes, start: int, end: int, due: int) -> None:
        bounds = _pair(start + _OFFSET, end + _OFFSET)
        self._delete(_DATA + prefix + bounds)
        self._delete(_INDEX + _one(due + _OFFSET) + prefix + bounds)

    def _due_of(self, start: int, end: int) -> int:
        """The index due time of the stored window (or slice) ``[start, end)``."""
        spec = self.spec
        if spec.kind == "session":
            return end + spec.size
        if spec.kind == "hopping":
            return start + spec.size
        return end

    def _fresh(self, key: Any) -> Any:
        if self.default is None:
            raise KeyError(key)
        return self.default()

    def update(self, key: Any, fn: Callable[[Any], Any]) -> None:
        """Apply ``fn`` to every open window of ``key`` containing the current event time."""
        self._write(key, fn, _MISSING)

    def add(self, key: Any, amount: Any) -> None:
        """``table[key] += amount``: :meth:`update` with ``value + amount``.

        Tumbling windows, the commonest case, and hopping windows (stored as
        one slice per step) take a path of their own: one store key per
        write, found without building a list.
        """
        spec = self.spec
        if spec.kind not in _ALIGNED:
            self._write(key, lambda value: value + amount, _MISSING)
            return
        source = self.event_source
        message = None if source is None else source()
        t = self._time if message is self._time_of and message is not None else self.now()
        lo, hi = self._fast_bounds
        if lo <= t < hi:
            # The window of this shard's last += : the key's store key there,
            # if the key was written in it.
            fast = self._fast.get(key)
            if fast is not None:
                kb, data, generation = fast
                if generation != self._generation:
                    self._fast[key] = (kb, data, self._generation)
                    self._written.setdefault(data, set()).add(kb)
                st = self._stream_time
                assert st is not None  # _fast is filled only once loaded
                if t > st:
                    # _advance, inline: stream time moves with most records.
                    self._stream_time = st = t
                    self._meta_dirty = True
                    if t - spec.grace >= self._sweep_at:
                        self._sweep(t - spec.grace)
                elif self._backlog:
                    self._sweep(st - spec.grace)
                if hi > st - spec.grace and self.shard.add_encoded(kb, amount):
                    return
        self._add_aligned(key, amount, t)

    def _add_aligned(self, key: Any, amount: Any, t: int) -> None:
        """``+=`` on a tumbling window or hopping slice the fast path of :meth:`add` does
        not know."""
        spec = self.spec
        st = prev = self._stream_time
        if not self._loaded or st is None or t > st or self._backlog:
            if not self._loaded:
                self._load()
                prev = self._stream_time
            st = self._advance(t)
        step = spec.step  # the size, for tumbling windows
        start = t - t % step
        end = start + step
        if end <= st - spec.grace:
            self._late(key, t, st)  # hopping: the oldest window holding t closed
            return
        due = start + spec.size
        prefix, data = self._keys(key)
        kb = data + _pair(start + _OFFSET, end + _OFFSET)
        fast = self._fast
        if self._fast_bounds != (start, end):
            fast.clear()
            self._fast_created.clear()
            self._fast_bounds = (start, end)
            # The first write at or after `start` (stream time was below it):
            # no window [start, end) exists yet, so _create lists each one
            # the table gets in _fast_created (until it overflows).
            self._fast_all = prev is None or prev < start
        elif len(fast) >= _FAST_MAX or len(self._fast_created) >= _FAST_MAX:
            fast.clear()
            self._fast_created.clear()
            self._fast_all = False
        if self._fast_all and kb not in self._fast_created:
            # A new window for sure: no store read to find that out.
            self._create(prefix, start, end, due, self._fresh(key) + amount, end)
        elif self.shard.add_encoded(kb, amount):
            written = self._written.get(data)
            if written is None:
                written = self._written[data] = set()
            written.add(kb)
        else:
            self._create(prefix, start, end, due, self._fresh(key) + amount, end)
        if type(key) in _FAST_KEYS:
            fast[key] = (kb, data, self._generation)

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
        kb = data + _pair(start + _OFFSET, end + _OFFSET)
        current = self.shard.get_encoded(kb, _MISSING)
        if current is _MISSING:
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
        data = _DATA + prefix
        get = self.shard.get_encoded
        updated = 0
        for start, end in windows:
            if end <= cutoff:
                continue  # closed: this write is late for it
            kb = data + _pair(start + _OFFSET, end + _OFFSET)
            current = get(kb, _MISSING)
            if current is _MISSING:
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
        pp = _POINT + prefix
        points: dict[int, Any] = {}
        lo, hi = pp + _one(t - size + _OFFSET), pp + _one(t + size + 1 + _OFFSET)
        at = len(pp)
        for kb, point in self._scan(lo, hi, pp):
            points[_t(kb, at)] = point
        old = points.get(t, _MISSING)
        new_point = fn(self._fresh(key) if old is _MISSING else old)
        point_kb = pp + _one(t + _OFFSET)
        self._set(point_kb, new_point, pp)
        if old is _MISSING:
            # Due with its right window [t + 1, t + 1 + size), the last that t defines.
            index = _POINT_INDEX + _one(t + size + 1 + _OFFSET) + prefix + _one(t + _OFFSET)
            self.shard.set_encoded(index, _EMPTY)
            self._written_points.add(index)
            if self._next_point is not None and t + size + 1 < self._next_point:
                self._next_point = t + size + 1
            self._sweep_at = min(self._sweep_at, t + size + 1)
        points[t] = new_point
        get = self.shard.get_encoded
        del fn  # applied to the point; windows are merges of points
        times = sorted(points)
        for start, end in _sliding_windows(points, t, size):
            if end <= cutoff:
                continue  # closed: its value is final, this write is late for it
            kb = _DATA + prefix + _pair(start + _OFFSET, end + _OFFSET)
            current = get(kb, _MISSING)
            if current is not _MISSING and not start <= t < end:
                continue  # an existing window without t: unchanged
            # A window's value is the merge of the points inside it, whatever
            # fn is (fn applies to the point at t, not to merged values).
            value = functools.reduce(merge, [points[p] for p in times if start <= p < end])
            if current is _MISSING:
                self._create(prefix, start, end, end, value)
            else:
                self._set(kb, value, _DATA + prefix)

    def _write_session(
        self, key: Any, t: int, st: int, fn: Callable[[Any], Any] | None, value: Any
    ) -> None:
        spec = self.spec
        gap, cutoff = spec.size, st - spec.grace
        prefix = self._prefix(key)
        dp = _DATA + prefix
        touching: list[tuple[int, int, Any]] = []
        hi = dp + _one(t + gap + 1 + _OFFSET)
        for kb, current in self._scan(dp, hi, dp, reverse=True):
            start, end = _t(kb, len(dp)), _t(kb, len(dp) + 8)
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
            self._set(dp + _pair(start + _OFFSET, end + _OFFSET), new, dp)
            return
        for s, e, _ in touching:
            self._remove(prefix, s, e, e + gap)
        self._create(prefix, start, end, end + gap, new)

    def _late(self, key: Any, t: int, st: int) -> None:
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
        prefix = self._prefix(key)
        found = False
        self._open_slices = None  # they may name this key's slices
        dp = _DATA + prefix
        at = len(dp)
        for kb, _ in list(self._scan(dp, dp + b"\xff" * 17, dp)):
            start, end = _t(kb, at), _t(kb, at + 8)
            self._remove(prefix, start, end, self._due_of(start, end))
            found = True
        pp = _POINT + prefix
        for kb, _ in list(self._scan(pp, pp + b"\xff" * 9, pp)):
            t = _t(kb, len(pp))
            self._delete(kb)
            due = t + self.spec.size + 1
            self._delete(_POINT_INDEX + _one(due + _OFFSET) + prefix + kb[len(pp) :])
        return found

    # -- reads -----------------------------------------------------------------------

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
        dp = _DATA + self._prefix(key)
        if self.spec.kind == "hopping":
            return self._hopping_windows(dp, start_from, start_to, reverse, limit)
        lo = dp if start_from is None else dp + _one(max(start_from, _MIN) + _OFFSET)
        hi = dp + b"\xff" * 17 if start_to is None else dp + _one(min(start_to, _MAX) + _OFFSET)
        at = len(dp)
        found: list[WindowedValue] = []
        for kb, value in self._scan(lo, hi, dp, reverse):
            found.append(WindowedValue(_t(kb, at), _t(kb, at + 8), value))
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
        lo = dp if start_from is None else dp + _one(max(start_from, _MIN) + _OFFSET)
        if start_to is None:
            hi = dp + b"\xff" * 17
        else:
            hi = dp + _one(min(start_to + spec.size, _MAX) + _OFFSET)
        at = len(dp)
        slices = {_t(kb, at): value for kb, value in self._scan(lo, hi, dp)}
        assert spec.merge is not None
        found = _slice_windows(
            slices, spec.size, spec.step, spec.merge, start_from, start_to, self._expired_through()
        )
        if reverse:
            found.reverse()
        return found if limit is None else found[:limit]

    def _expired_through(self) -> int | None:
        """Windows due at or before this are expired (deleted, or due to be)."""
        st = self._stream_time
        if st is None:
            return None
        cut = st - self.spec.grace - self.spec.retention
        closed = self._closed
        return cut if closed is None or closed >= cut else closed

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
        kb = _DATA + self._prefix(key) + _pair(start + _OFFSET, end + _OFFSET)
        value = self.shard.get_encoded(kb, _MISSING)
        return None if value is _MISSING else WindowedValue(start, end, value)

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
        for kb, _ in self.shard.iterate_encoded(_DATA, _DATA_END):
            (length,) = _unpack_len(kb, 1)
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
        for kb, value in self.shard.iterate_encoded(_DATA, _DATA_END):
            (length,) = _unpack_len(kb, 1)
            at = 5 + length
            yield decode(kb[5:at]), WindowedValue(_t(kb, at), _t(kb, at + 8), value)
