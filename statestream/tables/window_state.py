"""``WindowState``: what one windowed table's shard on one partition knows, and its key helpers.

The state every part of a windowed shard reads and writes (stream time, the
close and expiry watermarks, what the write buffer holds), set up in one
place; the parts build on it in a chain: :mod:`~statestream.tables.window_closing`
(stream time, closing and expiry), :mod:`~statestream.tables.window_writes`
(writes of each kind), :mod:`~statestream.tables.windowed_shard` (the shard's
life hooks and reads). Store layout: :mod:`~statestream.tables.window_layout`.

Thread ownership: the partition thread of its shard, like the shard itself.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sortedcontainers import SortedSet

from statestream.errors import EventTimeError, TableContextError
from statestream.serde import JsonCodec
from statestream.tables.keyguard import CHECK_EVERY, CHECK_FIRST
from statestream.tables.shard import TableShard
from statestream.tables.window_layout import (
    BUCKET,
    DATA,
    EMPTY_STORED,
    INDEX,
    INDEX_END,
    MAX_TIME,
    META,
    MIN_TIME,
    NEVER,
    OFFSET,
    POINT_INDEX,
    ClosedWindow,
    LateRecord,
    WindowSpec,
    bucket_rows,
    pack_bounds,
    pack_time,
    time_at,
    unpack_bucket,
    unpack_length,
    unpack_time,
)
from statestream.tables.windows import key_prefix
from statestream.tables.written import WrittenKeys

__all__ = ["LIGHT_UNDONE", "UNDONE", "DueGroup", "WindowState"]

#: What a record may change of a shard's own state, so what a rollback restores
#: (besides the events it closed, and the index rows it wrote: see _save_undo).
UNDONE = (
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
_saved = operator.attrgetter(*UNDONE)
#: What a light undo keeps (see WindowState._undo_light), in its order; the
#: light undo adds where the record's windows start in _created_undo.
LIGHT_UNDONE = ("_stream_time", "_meta_dirty", "_next_close", "_next_expire", "_sweep_at")
_saved_light = operator.attrgetter(*LIGHT_UNDONE)
# _save_undo folds _undo_light in at these places.
assert UNDONE[1] == "_stream_time"
assert UNDONE[3:5] == ("_next_close", "_next_expire")
assert UNDONE[9:] == ("_sweep_at", "_meta_dirty")

#: Windows of the time index with one due time, as :meth:`WindowState._due_groups`
#: yields them: ``(due, row, rests)``; ``row`` is the index row's store key
#: (None: created since the last commit, not stored yet) and ``rests`` the
#: ``K start end`` of its windows.
DueGroup = tuple[int, bytes | None, Sequence[bytes]]


class WindowState:
    """State and key helpers of a windowed shard (see the module docstring).

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
        self._sweep_at = MIN_TIME - 1
        #: Whether closed windows are collected for take_closed (the worker
        #: turns it off when no processor listens and no final topic is set).
        self.report_closes = True
        self._meta_dirty = False
        self._events: list[tuple[ClosedWindow, Any, Any]] = []
        # Keys written since the last commit, per key range (b"w"/b"p" + K) and
        # for the two indexes, so range reads need not search the whole buffer.
        self._written: dict[bytes, bytes | set[bytes]] = {}
        # Sorted: closing scans run often (a session table's dues are spread
        # out) and must find the buffered index entries of their range
        # without a pass over all of them.
        self._written_index: SortedSet | WrittenKeys = (
            WrittenKeys() if spec.kind in ("tumbling", "hopping") else SortedSet()
        )
        self._written_points: SortedSet = SortedSet()
        # The index entries written (True) or deleted (False) since the last
        # commit (see _index_put), and per record what they were before it.
        self._index_pending: dict[bytes, bool] = {}
        self._index_undo: dict[bytes, bool | None] = {}
        # Tumbling and hopping: the index as buckets (window_layout). The
        # windows created since the last commit, by due time (K start end),
        # are one bucket row each at the commit; _created_undo lists the due
        # time of each window in _created, in order, and the current record's
        # undo where its own start (a rollback takes those out again).
        self._bucketed = spec.kind in ("tumbling", "hopping")
        self._created: dict[int, list[bytes]] = {}
        self._created_undo: list[int] = []
        self._key_cache: dict[str, tuple[bytes, bytes]] = {}
        # The other way round (K -> the str key), for closes to report keys
        # without decoding them: only with the json key codec itself, whose
        # str keys decode to exactly what was encoded (another codec may not
        # give back the object it was given).
        self._key_of: dict[bytes, str] | None = {} if type(shard.key_codec) is JsonCodec else None
        # Tumbling and hopping +=: each key's buffer entry (TableShard.buffered)
        # of its window (slice) [lo, hi), the one of the shard's latest +=;
        # the next += of the key there needs no encoding, window arithmetic
        # or buffer lookup. Dropped whenever the buffer may drop live entries
        # (forget_entries): an entry a commit dropped because it was deleted
        # stays marked deleted, and the fast path checks that first. An entry
        # that outlived a commit is in the store, so a later += needs no note
        # in _written (see _note_written).
        # str and bytes keys in _fast, int keys (exactly int) in _fast_ints:
        # keys of other types may equal an int (1.0 == True == 1) but are
        # other keys, and neither equals a str or bytes, so a lookup in _fast
        # needs no type check (and one in _fast_ints only its int check).
        self._fast: dict[Any, Any] = {}
        self._fast_ints: dict[int, Any] = {}
        self._fast_bounds: tuple[int, int] = (0, 0)
        # pack_bounds of _fast_bounds (with OFFSET): set with it, read by
        # WindowWrites._add_in_fast.
        self._fast_packed = b""
        # Whether the current record's += took the fast path with nothing
        # left to do for its time (its event time, in _time, is in
        # _fast_bounds, not late, and stream time has moved to it with no
        # closes or deletes waiting). None of that changes until the record
        # ends (one record has one event time, and only writes move stream
        # time), so its next += of a key in _fast goes straight to the entry,
        # without even asking event_source for the message. TableShard.begin and
        # end_record() clear it, so a write outside a record still finds no
        # message; anything that could make _fast wrong (undo, reset, the
        # buffer dropping entries) clears _fast. WindowSet.__iadd__ reads
        # these (the fast path runs there).
        self._fast_ok = False
        # Store keys of the windows [_fast_bounds) created since they began,
        # and whether that is every one there is.
        self._fast_created: set[bytes] = set()
        self._fast_all = False
        # Hopping: the final slices closes still need (K -> start -> value),
        # loaded from the index through due _open_through (None: not kept).
        self._open_slices: dict[bytes, dict[int, Any]] | None = None
        self._open_through = MIN_TIME
        self._undo: tuple[Any, ...] | None = None
        # A light undo: what the current record found, when all it changed
        # here so far is moving stream time (with nothing falling due) and
        # making windows (tumbling and hopping +=, with most records): stream
        # time, _meta_dirty, the three due times a new window may lower
        # (_next_close, _next_expire, _sweep_at) and where its windows start
        # in _created_undo. Cheaper than _undo's snapshot, which _save_undo
        # takes (folding this in) before any other change.
        self._undo_light: tuple[Any, ...] | None = None
        self._new_keys = 0

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
        if type(t) is not int or not MIN_TIME <= t <= MAX_TIME:
            raise EventTimeError(
                f"windowed table {self.name!r}: event time must be an int of milliseconds, "
                f"got {t!r}" + ("" if self.event_time is None else " from its event_time function")
            )
        self._time_of, self._time = message, t
        return t

    def _save_undo(self) -> None:
        """Remember what a rollback of the current record restores: called by every
        write before its first change other than a light one (see _undo_light),
        when :attr:`_undo` is None (TableShard.begin and commits set it so)."""
        if not self._loaded:
            self._load()
        saved = _saved(self)
        light = self._undo_light
        if light is None:
            mark = len(self._created_undo)
        else:  # light changes came first: what the record found
            st, meta, next_close, next_expire, sweep_at, mark = light
            saved = (saved[0], st, saved[2], next_close, next_expire, *saved[5:9], sweep_at, meta)
        self._undo = (*saved, len(self._events), mark)
        if self._index_undo:
            self._index_undo.clear()

    def _save_light_undo(self) -> None:
        """Take the light undo (see _undo_light) before the record's first change; the
        caller checked that the shard is loaded and no undo was taken yet."""
        self._undo_light = (*_saved_light(self), len(self._created_undo))

    def _drop_fast(self) -> None:
        """Forget the += fast path's entries (see __init__)."""
        self._fast.clear()
        self._fast_ints.clear()

    def time_of(self, message: Any) -> int:
        """:meth:`now` for ``message``, the one ``event_source`` just returned (no second call)."""
        if message is not None and self.event_time is None:
            t = message.timestamp
            if type(t) is int and MIN_TIME <= t <= MAX_TIME:
                self._time_of, self._time = message, t
                return t
        return self.now()  # the rest, and its errors

    def _load(self) -> None:
        if self._loaded:
            return
        raw = self.shard.get_encoded(META)
        meta = {} if raw is None else json.loads(bytes(raw))
        self._stream_time = meta.get("stream_time")
        self._closed = meta.get("closed")
        self._next_close = self._next_expire = self._next_point = None
        self._expired = self._points_expired = None
        self._backlog = False
        self._sweep_at = MIN_TIME - 1
        self._meta_dirty = False
        self._loaded = True

    def _keys(self, key: Any) -> tuple[bytes, bytes]:
        """``(K, b"w" + K)`` of ``key``: its store-key prefix, and its windows' range.

        Cached for str keys: the same bytes objects each time, hashed once.
        """
        if type(key) is str:
            cached = self._key_cache.get(key)
            if cached is None:
                key_of = self._key_of
                if len(self._key_cache) >= 100_000:
                    self._key_cache.clear()
                    if key_of is not None:
                        key_of.clear()
                prefix = key_prefix(self.shard.key_codec.encode(key))
                cached = self._key_cache[key] = (prefix, DATA + prefix)
                if key_of is not None:
                    key_of[prefix] = key
            return cached
        prefix = key_prefix(self.shard.key_codec.encode(key))
        return prefix, DATA + prefix

    def _prefix(self, key: Any) -> bytes:
        return self._keys(key)[0]

    def _set(self, kb: bytes, value: Any, range_prefix: bytes) -> None:
        """Buffer ``kb`` (in the key range ``range_prefix``: its tag and K)."""
        self.shard.set_encoded(kb, value)
        self._note_written(range_prefix, kb)

    def _note_written(self, range_prefix: bytes, kb: bytes) -> None:
        """List ``kb`` as written in its key range.

        Range reads (:meth:`_scan`) merge these keys over the store's rows. A
        key the store holds needs no note (its row brings it, and the buffer
        answers for it): the += fast path leaves keys out that it wrote
        before the last commit.

        Most ranges get one key per commit (a key's one open window): that
        one is kept as itself, a set only from the second on (a set per key
        costs an allocation of a few hundred bytes per new window).
        """
        written = self._written.get(range_prefix)
        if written is None:
            self._written[range_prefix] = kb
        elif isinstance(written, bytes):
            if written != kb:
                self._written[range_prefix] = {written, kb}
        else:
            written.add(kb)

    def _delete(self, kb: bytes) -> None:
        tag = kb[:1]
        if tag == INDEX:
            self._index_put(kb, False, self._written_index)
        elif tag == POINT_INDEX:
            self._index_put(kb, False, self._written_points)
        else:
            self.shard.delete_encoded(kb)
            self._note_written(kb[: 5 + unpack_length(kb, 1)[0]], kb)

    def _index_put(self, kb: bytes, present: bool, written: SortedSet | WrittenKeys) -> None:
        """Note an index entry written (``present``) or deleted, until the commit.

        Index entries are not buffered in the shard (they have no value to
        keep and are never changelogged): this dict and ``written`` (the
        ordered keys a scan merges over the store) stand for them, and
        :meth:`local_changes` gives them to the commit.
        """
        pending = self._index_pending
        undo = self._index_undo
        if kb not in undo:
            undo[kb] = pending.get(kb)
        pending[kb] = present
        written.add(kb)

    def _pending_scan(
        self, lo: bytes, hi: bytes, written: SortedSet | WrittenKeys
    ) -> Iterator[tuple[bytes, Any]]:
        """Yield ``(index key, value)`` in ``[lo, hi)``, in order: the store's, with the
        changes pending since the last commit over them (the value means nothing)."""
        buffered = iter(written.irange(lo, hi, inclusive=(True, False)))
        b = next(buffered, None)
        if b is None:
            # Nothing pending in the range (closes and deletes read the old
            # end of the index, new windows go to its new end): the store's
            # rows as they are, one generator less per row.
            return self.shard.store.iterate(lo, hi, None, False)
        return self._merged_scan(lo, hi, b, buffered)

    def _merged_scan(
        self, lo: bytes, hi: bytes, b: bytes | None, buffered: Iterator[bytes]
    ) -> Iterator[tuple[bytes, None]]:
        """:meth:`_pending_scan` with pending keys ``b``, then ``buffered``, in the range."""
        pending = self._index_pending
        for kb, _ in self.shard.store.iterate(lo, hi, None, False):
            while b is not None and b < kb:
                if pending.get(b):
                    yield b, None
                b = next(buffered, None)
            if b == kb:
                b = next(buffered, None)
                if pending.get(kb) is False:
                    continue  # deleted since the commit
            yield kb, None
        while b is not None:
            if pending.get(b):
                yield b, None
            b = next(buffered, None)

    def local_changes(self, changelog_offset: int | None) -> list[tuple[bytes, bytes | None]]:
        """The index rows to write with the next commit (store only: not changelogged).

        ``changelog_offset`` is the commit's (None: it wrote no changelog
        record); with 4 random bytes it tags the commit's bucket rows.
        """
        out: list[tuple[bytes, bytes | None]] = [
            (kb, EMPTY_STORED if present else None) for kb, present in self._index_pending.items()
        ]
        if self._created:
            # Random bytes too: a tag must never repeat within a due time (a
            # bucket overwritten would lose its windows' closes and expiry),
            # even where an offset could (a changelog topic made anew).
            tag = BUCKET + pack_time(changelog_offset or 0) + os.urandom(4)
            expired = self._expired
            for due, rests in self._created.items():
                if expired is not None and due <= expired:
                    continue  # created and deleted in this interval
                out.extend(bucket_rows(INDEX + pack_time(due + OFFSET) + tag, rests))
        return out

    def _scan(
        self, lo: bytes, hi: bytes, range_prefix: bytes, reverse: bool = False
    ) -> Iterator[tuple[bytes, Any]]:
        written = self._written.get(range_prefix)
        ordered: Iterable[bytes]
        if written is None:
            ordered = ()
        elif isinstance(written, bytes):
            ordered = (written,) if lo <= written < hi else ()
        else:
            ordered = sorted((kb for kb in written if lo <= kb < hi), reverse=reverse)
        return self.shard.iterate_encoded(lo, hi, reverse, written=ordered)

    def _index_scan(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, Any]]:
        return self._pending_scan(lo, hi, self._written_index)

    def _first_due(self, after: int | None) -> int:
        """The due time of the first window due after ``after`` (None: of the first)."""
        for due, _, _ in self._due_groups(after, None, windows=False):
            return due
        return NEVER

    def _due_groups(
        self, after: int | None, through: int | None, *, windows: bool = True
    ) -> Iterator[DueGroup]:
        """The time index's windows with ``after < due <= through`` (None: open), in due order.

        One :data:`DueGroup` per index row: a row of one window, or a bucket
        (its windows as listed: see window_layout), and one per due time for
        the windows created since the last commit (after the stored ones of
        that due). Rows deleted since the last commit are left out. With
        ``windows=False`` a bucket's windows are not unpacked (an empty list
        instead): for callers that want only due times.
        """
        lo = INDEX if after is None else INDEX + pack_time(after + 1 + OFFSET)
        hi = INDEX_END if through is None else INDEX + pack_time(through + 1 + OFFSET)
        if not self._bucketed:
            for kb, _ in self._index_scan(lo, hi):
                yield time_at(kb, 1), kb, (kb[9:],)
            return
        created = self._created
        log: list[int] = []
        if created:
            log = sorted(
                due
                for due in created
                if (after is None or due > after) and (through is None or due <= through)
            )
        at = 0
        pending = self._index_pending
        for kb, raw in self.shard.store.iterate(lo, hi, None, False):
            if pending and pending.get(kb) is False:
                continue  # deleted since the last commit
            due = unpack_time(kb, 1)[0] - OFFSET
            while at < len(log) and log[at] < due:
                yield log[at], None, created[log[at]]
                at += 1
            if kb[9:13] == BUCKET:
                yield due, kb, unpack_bucket(raw) if windows else ()
            else:
                yield due, kb, (kb[9:],)
        for due in log[at:]:
            yield due, None, created[due]

    def _create(
        self, prefix: bytes, start: int, end: int, due: int, value: Any, first: int | None = None
    ) -> None:
        """Write a new window (or slice) and its index entry.

        ``due`` is when it may be deleted (its last window due), ``first``
        when the first window holding it closes (``due`` if None).
        """
        bounds = pack_bounds(start + OFFSET, end + OFFSET)
        data = DATA + prefix
        self._create_window(prefix, data, bounds, data + bounds, start, end, due, value, first)

    def _create_window(
        self,
        prefix: bytes,
        data: bytes,
        bounds: bytes,
        kb: bytes,
        start: int,
        end: int,
        due: int,
        value: Any,
        first: int | None,
    ) -> Any:
        """:meth:`_create` with its keys made (``data`` = DATA + prefix, ``kb`` = data +
        bounds); returns the window's buffer entry."""
        entry = self.shard.set_encoded(kb, value)
        self._note_made(prefix, data, bounds, kb, start, end, due, first)
        return entry

    def _note_made(  # noqa: PLR0912 - one pass per new window, inline
        self,
        prefix: bytes,
        data: bytes,
        bounds: bytes,
        kb: bytes,
        start: int,
        end: int,
        due: int,
        first: int | None,
    ) -> None:
        """Note a window just buffered under ``kb``: its key range, its place in the
        time index, and the due times it lowers (``first``: the earliest close it
        needs; None: ``due``); and show its key to the key guard."""
        written = self._written
        if data in written:
            self._note_written(data, kb)
        else:
            written[data] = kb  # _note_written's commonest case, inline (one per new window)
        fast = self._fast_bounds
        if fast[0] == start and fast[1] == end:
            self._fast_created.add(kb)
        if self._bucketed:
            created = self._created.get(due)
            if created is None:
                self._created[due] = [prefix + bounds]
            else:
                created.append(prefix + bounds)
            self._created_undo.append(due)
        else:
            self._index_put(
                INDEX + pack_time(due + OFFSET) + prefix + bounds, True, self._written_index
            )
        if first is None:
            first = due
        if first < self._sweep_at:  # noqa: PLR1730 - min() costs a call, per new window
            self._sweep_at = first
        nxt = self._next_close
        if nxt is not None and first < nxt:
            self._next_close = first
        nxt = self._next_expire
        if nxt is not None and due < nxt:
            self._next_expire = due
        guard = self.shard.key_guard
        if guard is not None:
            self._new_keys = count = self._new_keys + 1
            if count <= CHECK_FIRST or not count % CHECK_EVERY:
                source = self.shard.source
                guard(prefix[4:], None if source is None else source[0])

    def _remove(self, prefix: bytes, start: int, end: int, due: int) -> None:
        bounds = pack_bounds(start + OFFSET, end + OFFSET)
        self._delete(DATA + prefix + bounds)
        # A bucket keeps naming the window (readers skip windows without a
        # value); a row of its own goes with it.
        self._delete(INDEX + pack_time(due + OFFSET) + prefix + bounds)

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

    def _expired_through(self) -> int | None:
        """Windows due at or before this are expired (deleted, or due to be)."""
        st = self._stream_time
        if st is None:
            return None
        cut = st - self.spec.grace - self.spec.retention
        closed = self._closed
        return cut if closed is None or closed >= cut else closed
