"""``TableShard``: one table's state for one partition, with a write buffer.

The shard is the Table Object Manager of the design: it turns dict operations
into encoded keys and values, keeps every change since the last commit in a
buffer (reads see the buffer first: read-your-writes), and at commit hands out
one change per dirty key (its last value, or a tombstone) together with the
source record that produced it.

Mutating a value in place (``table[k].append(x)``) is detected: values read
during a commit interval are kept decoded in the buffer, the same object is
returned to every read, and at commit a mutable value is encoded again and
compared with the bytes it was read from. Immutable values (numbers, strings,
bytes, ``None``) skip that check.

Thread ownership: the partition thread of the shard's partition (or, while
restoring, the thread restoring it). Not thread-safe.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from statestream.serde import Codec, JsonCodec, encode_prefix
from statestream.stores.base import Store, key_bounds
from statestream.tables.keyguard import CHECK_EVERY, CHECK_FIRST
from statestream.types import TopicPartition

if TYPE_CHECKING:
    from statestream.tables.windowed_shard import WindowedShard

__all__ = ["ALWAYS_JSON", "Change", "EntryState", "TableShard"]

_IMMUTABLE = (int, float, str, bytes, bool, type(None))
_MEMO_TYPES = (str, int, bytes)
#: Encoded str keys remembered per shard (the cache is dropped when full).
_STR_KEY_CACHE = 100_000
#: Types the json codec can always encode (floats can be NaN, which it refuses),
#: so a value of one is encoded at the commit, not at each write.
ALWAYS_JSON = _ALWAYS_JSON = frozenset({int, str, bool, type(None)})


def _no_value(raw: bytes) -> None:
    return None


class EntryState(enum.Enum):
    """What the buffer knows about a key."""

    CLEAN = "clean"  # read from the store, unchanged so far
    SET = "set"  # assigned since the last commit
    DELETED = "deleted"  # deleted since the last commit


_CLEAN, _SET, _DELETED = EntryState.CLEAN, EntryState.SET, EntryState.DELETED


class _Entry:
    __slots__ = ("encoded", "kb", "obj", "source", "state")

    def __init__(
        self,
        kb: bytes,
        obj: Any,
        encoded: bytes | None,
        state: EntryState,
        source: tuple[str, int] | None,
    ) -> None:
        self.kb = kb
        self.obj = obj
        self.encoded = encoded
        self.state = state
        self.source = source


_new_entry = object.__new__

#: An entry's fields as they were: (obj, encoded, state, source).
_Snapshot = tuple[Any, bytes | None, EntryState, tuple[str, int] | None]


class Change(NamedTuple):
    """One dirty key at commit: its new bytes (``None``: tombstone) and its source.

    A named tuple: one is built per dirty key per commit."""

    key: bytes
    value: bytes | None
    source: tuple[str, int] | None


class TableShard:
    """Dict-like state of one table in one partition, over a :class:`Store`.

    ``source`` is the (topic, offset) of the record being processed; the
    owner sets it before each record so changes can name their source.
    """

    def __init__(
        self,
        table: str,
        partition: int,
        store: Store,
        key_codec: Codec,
        value_codec: Codec,
        changelog: TopicPartition,
        cache_size: int = 50_000,
    ) -> None:
        self.table = table
        self.partition = partition
        self.store = store
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.changelog = changelog
        self.source: tuple[str, int] | None = None
        self._previous_source: tuple[str, int] | None = None
        # Decoded values: this interval's reads and writes, plus committed
        # values kept (up to cache_size) so the next interval need not read
        # and decode them from the store again.
        self._entries: dict[bytes, _Entry] = {}
        # Keys read or written in this commit interval: only these can have
        # changed (a value must be read to be mutated in place).
        self._touched: set[bytes] = set()
        self._cache_size = cache_size
        # Whether ints and strings always encode, so they can be encoded once
        # at commit (a windowed table's codec wraps the table's: see its `defers`).
        self._json = isinstance(value_codec, JsonCodec) or getattr(value_codec, "defers", False)
        self._memo_key: Any = None
        self._memo_kb = b""
        # Encoded str keys: a hot key is encoded once, not at every access.
        # Codecs are deterministic, so a cached encoding is always right;
        # only str keys (type exactly str: equal keys of other types, like
        # 1 and True, can encode differently).
        self._str_keys: dict[str, bytes] = {}
        # Buffered entries of str keys, by key: `table[k] += 1` finds its
        # entry with one lookup. Entries are updated in place, so an indexed
        # entry stays right until it leaves the buffer, and whatever removes
        # entries clears the index.
        self._str_index: dict[str, _Entry] = {}
        # Entries as they were before the current record touched them, as
        # (obj, encoded, state, source) (None: not buffered), so a record
        # whose processing fails can be rolled back. A snapshot, not the
        # entry itself: entries are updated in place.
        self._undo: dict[bytes, _Snapshot | None] = {}
        #: Called with each key entering the buffer by a write, and the
        #: source topic (see statestream.tables.keyguard); None: unchecked.
        self.key_guard: Callable[[bytes, str | None], None] | None = None
        self._new_keys = 0
        #: The windowed view of this shard, for a windowed table (its windows
        #: and stream time are keys of this shard; its time index is written
        #: with them at each commit, store only: see
        #: statestream.tables.window_state.WindowState.local_changes).
        self.windowed: WindowedShard | None = None

    # -- reads -----------------------------------------------------------------

    def _kb(self, key: Any) -> bytes:
        if type(key) is str:
            kb = self._str_keys.get(key)
            if kb is None:
                kb = self.key_codec.encode(key)
                if len(self._str_keys) >= _STR_KEY_CACHE:
                    self._str_keys.clear()
                self._str_keys[key] = kb
            return kb
        # `table[k] += 1` encodes the same key twice; remember the last one.
        # Only for immutable key types: a list key could change in between.
        if key is self._memo_key and type(key) in _MEMO_TYPES:
            return self._memo_kb
        kb = self.key_codec.encode(key)
        self._memo_key, self._memo_kb = key, kb
        return kb

    def _lookup(self, kb: bytes) -> _Entry | None:
        entry = self._entries.get(kb)
        if entry is not None:
            self._touched.add(kb)
            return None if entry.state is _DELETED else entry
        raw = self.store.get(kb)
        if raw is None:
            return None
        entry = _Entry(kb, self.value_codec.decode(raw), raw, _CLEAN, None)
        self._undo.setdefault(kb, None)
        self._entries[kb] = entry
        self._touched.add(kb)
        return entry

    def _forget_entries(self) -> None:
        """Entries may have left the buffer (or been replaced): drop references to them."""
        self._str_index.clear()
        if self.windowed is not None:
            self.windowed.forget_entries()

    def get(self, key: Any, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""
        entry = self._lookup(self._kb(key))
        return default if entry is None else entry.obj

    def get_or_create(self, key: Any, factory: Callable[[], Any] | None) -> Any:
        """Return the value of ``key``; if it has none, store and return
        ``factory()`` (``KeyError`` without a factory). ``Table[key]`` in one call."""
        if type(key) is str:
            entry = self._str_index.get(key)
            if entry is not None:
                self._touched.add(entry.kb)
                if entry.state is not _DELETED:
                    return entry.obj
                kb = entry.kb
            else:
                kb = self._kb(key)
                entry = self._lookup(kb)
                if entry is not None:
                    self._str_index[key] = entry
                    return entry.obj
        else:
            kb = self._kb(key)
            entry = self._lookup(kb)
            if entry is not None:
                return entry.obj
        if factory is None:
            raise KeyError(key)
        value = factory()
        self._assign(kb, value)
        return value

    def contains(self, key: Any) -> bool:
        """Return whether ``key`` has a value."""
        return self._lookup(self._kb(key)) is not None

    # -- writes ----------------------------------------------------------------

    def set(self, key: Any, value: Any) -> None:
        """Assign ``value`` to ``key`` (buffered until commit).

        The value is encoded now, so a value the codec cannot encode fails
        here, at the line that assigned it, not at commit. (Values the json
        codec always encodes, such as ints and strings, are encoded once at
        commit instead: a counter updated a thousand times is encoded once.)
        """
        if type(key) is str:
            entry = self._str_index.get(key)
            if entry is None:
                self._str_index[key] = self._assign(self._kb(key), value)
            else:
                self._update(entry, value, _SET)
        else:
            self._assign(self._kb(key), value)

    def _assign(self, kb: bytes, value: Any, state: EntryState = EntryState.SET) -> _Entry:
        entry = self._entries.get(kb)
        if entry is not None:
            self._update(entry, value, state)
            return entry
        guard = self.key_guard
        if guard is not None and state is not _DELETED:
            # Sampled here, not in the guard, so unsampled keys cost no call.
            self._new_keys = count = self._new_keys + 1
            if count <= CHECK_FIRST or not count % CHECK_EVERY:
                source = self.source
                guard(kb, None if source is None else source[0])
        return self._put(kb, value, state)

    def _put(self, kb: bytes, value: Any, state: EntryState) -> _Entry:
        """Buffer a new entry for ``kb`` (it has none): the unguarded half of :meth:`_assign`."""
        if state is _DELETED or (self._json and type(value) in _ALWAYS_JSON):
            encoded = None
        else:
            encoded = self.value_codec.encode(value)
        self._undo.setdefault(kb, None)
        # _Entry(...) without its __init__ frame: a windowed table makes one
        # entry per new window.
        entry = self._entries[kb] = _new_entry(_Entry)
        entry.kb = kb
        entry.obj = value
        entry.encoded = encoded
        entry.state = state
        entry.source = self.source
        self._touched.add(kb)
        return entry

    def _update(self, entry: _Entry, value: Any, state: EntryState) -> None:
        # WindowSet.__iadd__ has this inline (for SET): a change here is one there.
        if state is _DELETED or (self._json and type(value) in _ALWAYS_JSON):
            encoded = None
        else:
            encoded = self.value_codec.encode(value)
        kb = entry.kb
        undo = self._undo
        if kb not in undo:
            undo[kb] = (entry.obj, entry.encoded, entry.state, entry.source)
        entry.obj, entry.encoded, entry.state, entry.source = value, encoded, state, self.source
        self._touched.add(kb)

    def delete(self, key: Any) -> bool:
        """Delete ``key``; return whether it had a value."""
        kb = self._kb(key)
        existed = self._lookup(kb) is not None
        if existed:
            self._assign(kb, None, _DELETED)
        return existed

    # -- encoded keys (for layers that lay out their own keys: windowed tables) --

    def get_encoded(self, kb: bytes, default: Any = None) -> Any:
        """Return the value stored under the store key ``kb`` (buffer first), or ``default``."""
        entry = self._lookup(kb)
        return default if entry is None else entry.obj

    def peek_encoded(self, kb: bytes, default: Any = None) -> Any:
        """Like :meth:`get_encoded`, but a value read from the store is not kept in the
        buffer (for reads of many keys read once, such as a window's slices at its close)."""
        entry = self._entries.get(kb)
        if entry is not None:
            return default if entry.state is _DELETED else entry.obj
        raw = self.store.get(kb)
        return default if raw is None else self.value_codec.decode(raw)

    def set_encoded(self, kb: bytes, value: Any) -> Any:
        """Buffer ``value`` under the store key ``kb`` and return its entry (as
        :meth:`buffered`); the key guard is not consulted (``kb`` is not a table
        key; the caller checks its table key itself)."""
        entry = self._entries.get(kb)
        if entry is not None:
            self._update(entry, value, _SET)
            return entry
        return self._put(kb, value, _SET)

    def buffered(self, kb: bytes) -> Any:
        """The buffer's entry of the store key ``kb`` (None if it has none).

        For the windowed ``+=`` fast path, which updates the entry in place
        while it holds it (WindowSet.__iadd__, as :meth:`_update` would): an
        entry stays the buffer's until :meth:`WindowedShard.forget_entries`
        is called.
        """
        return self._entries.get(kb)

    def add_encoded(self, kb: bytes, amount: Any) -> bool:
        """Add ``amount`` to the value under the store key ``kb``; False if it has none.

        ``table[key] += x`` on a windowed table in one lookup of the buffer.
        """
        entry = self._entries.get(kb)
        if entry is None:
            entry = self._lookup(kb)
            if entry is None:
                return False
        elif entry.state is _DELETED:
            return False
        self._update(entry, entry.obj + amount, _SET)
        return True

    def delete_encoded(self, kb: bytes) -> None:
        """Buffer a tombstone for the store key ``kb`` (known to exist: no store read)."""
        entry = self._entries.get(kb)
        if entry is not None:
            self._update(entry, None, _DELETED)
        else:
            self._put(kb, None, _DELETED)

    def iterate_encoded(
        self,
        lo: bytes | None,
        hi: bytes | None,
        reverse: bool = False,
        written: Iterable[bytes] | None = None,
        *,
        values: bool = True,
    ) -> Iterator[tuple[bytes, Any]]:
        """Yield ``(store key, value)`` with ``lo <= key < hi``, the buffer merged over the store.

        ``written``, if given, holds every key in the range written (set or
        deleted) since the last commit that the store does not hold, *in the
        order of the iteration* and within the range: the caller keeps them
        sorted, so the buffer is not searched and sorted for them (a pass
        over every buffered key). It may hold keys the store holds too; a
        written key the store holds may be left out, as the store's row
        brings it and the buffer answers for it.
        With ``values=False`` the values are not decoded (``None`` instead).
        """
        if lo is not None and hi is not None and lo >= hi:
            return
        touched = self._touched
        overlay: Iterable[bytes]
        if written is None:
            overlay = sorted(
                (kb for kb in touched if (lo is None or kb >= lo) and (hi is None or kb < hi)),
                reverse=reverse,
            )
        else:
            overlay = (kb for kb in written if kb in touched)
        entries = self._entries
        decode = self.value_codec.decode if values else _no_value
        stored = self.store.iterate(lo, hi, None, reverse)
        tagged_store = ((kb, True, raw) for kb, raw in stored)
        tagged_overlay = ((kb, False, None) for kb in overlay)
        merged = heapq.merge(tagged_overlay, tagged_store, key=lambda t: t[0], reverse=reverse)
        last: bytes | None = None
        for kb, from_store, raw in merged:
            if kb == last:
                continue  # in the buffer and in the store: answered once, by the buffer
            last = kb
            entry = entries.get(kb) if kb in touched else None
            if entry is not None:
                if entry.state is not _DELETED:
                    yield kb, entry.obj
            elif from_store:
                assert raw is not None
                yield kb, decode(raw)

    # -- per-record rollback ----------------------------------------------------

    def begin(self, source: tuple[str, int]) -> None:
        """Start processing the source record ``source``; forget the previous undo log."""
        self._previous_source = self.source
        self.source = source
        if self._undo:
            self._undo.clear()
        windowed = self.windowed
        if windowed is not None:
            # A record starts for the windowed state too: its first write
            # remembers what a rollback restores (WindowState._save_undo), so
            # a record that writes nothing there costs nothing, and its first
            # += asks for the record's time again (see WindowState._fast_ok).
            windowed._undo = windowed._undo_light = None
            windowed._fast_ok = False

    def rollback(self) -> None:
        """Undo what the current record did (its processing failed).

        Assignments, deletes and first reads are undone. A value that was
        already buffered before this record and is then mutated in place by
        it cannot be told apart from earlier mutations and stays as it is.
        """
        entries = self._entries
        for kb, previous in self._undo.items():
            if previous is None:
                entries.pop(kb, None)
                self._touched.discard(kb)
                self._forget_entries()
            else:
                entry = entries[kb]
                entry.obj, entry.encoded, entry.state, entry.source = previous
        self._undo.clear()
        # What is written later (the stream time of a windowed table at the
        # commit) belongs to the last record that succeeded, not this one.
        self.source = self._previous_source
        if self.windowed is not None:
            self.windowed.rollback()

    # -- iteration -------------------------------------------------------------

    def iterate(
        self,
        start: Any = None,
        end: Any = None,
        prefix: Any = None,
        reverse: bool = False,
    ) -> Iterator[tuple[Any, Any]]:
        """Yield decoded ``(key, value)`` pairs in encoded-key order.

        The buffer is merged over the store, so uncommitted changes and
        in-place mutations are visible. ``start`` inclusive, ``end``
        exclusive, both in key order of the *encoded* keys.
        """
        kc = self.key_codec
        lo = None if start is None else kc.encode(start)
        hi = None if end is None else kc.encode(end)
        pre = None if prefix is None else encode_prefix(kc, prefix)
        bounds = key_bounds(lo, hi, pre)
        if bounds is None:
            return
        blo, bhi = bounds
        touched = self._touched
        overlay = sorted(
            (kb for kb in touched if (blo is None or kb >= blo) and (bhi is None or kb < bhi)),
            reverse=reverse,
        )
        decode_key, decode_value = kc.decode, self.value_codec.decode
        stored = self.store.iterate(blo, bhi, None, reverse)
        # Merge the two ordered streams. A key in the buffer is answered by the
        # buffer alone; its store copy (if any) is skipped below, whichever of
        # the two the merge yields first.
        tagged_store = ((kb, True, raw) for kb, raw in stored)
        tagged_overlay = ((kb, False, None) for kb in overlay)
        merged = heapq.merge(tagged_overlay, tagged_store, key=lambda t: t[0], reverse=reverse)
        for kb, from_store, raw in merged:
            if not from_store:
                entry = self._entries[kb]
                if entry.state is not EntryState.DELETED:
                    yield decode_key(kb), entry.obj
            elif kb not in touched:
                assert raw is not None
                yield decode_key(kb), decode_value(raw)

    def __len__(self) -> int:
        count = self.store.count()
        for kb in self._touched:
            state = self._entries[kb].state
            if state is _CLEAN:
                continue
            in_store = self.store.get(kb) is not None
            if state is _DELETED and in_store:
                count -= 1
            elif state is _SET and not in_store:
                count += 1
        return count

    # -- commit ----------------------------------------------------------------

    def changes(self, last_source: tuple[str, int] | None) -> list[Change]:
        """Return one change per dirty key, detecting in-place mutations.

        ``last_source`` is the last source record processed this interval:
        an in-place mutation is attributed to it (it happened no later).
        """
        if self.windowed is not None:
            self.windowed.flush_meta()
        out: list[Change] = []
        append = out.append
        new = tuple.__new__  # Change(...) without its generated __new__ frame
        encode = self.value_codec.encode
        entries = self._entries
        for kb in self._touched:
            entry = entries[kb]
            state = entry.state
            if state is _DELETED:
                append(new(Change, (kb, None, entry.source)))
                continue
            obj = entry.obj
            if isinstance(obj, _IMMUTABLE):
                if state is _SET:
                    value = entry.encoded
                    if value is None:
                        value = encode(obj)
                    append(new(Change, (kb, value, entry.source)))
                continue
            current = encode(obj)
            if state is _SET:
                source = entry.source if current == entry.encoded else last_source
                append(new(Change, (kb, current, source)))
            elif current != entry.encoded:
                append(new(Change, (kb, current, last_source)))
        return out

    def committed(self, changes: list[Change], changelog_offset: int | None) -> None:
        """Apply ``changes`` to the store with ``changelog_offset``; clear the buffer.

        Called only after the changelog records of ``changes`` were flushed
        (and, by the caller, the source offsets committed). ``changes`` is
        what :meth:`changes` returned, with nothing written in between.
        """
        local = self.windowed.local_changes(changelog_offset) if self.windowed is not None else []
        if changes or local:
            batch = {c.key: c.value for c in changes}
            batch.update(local)
            self.store.write(batch, changelog_offset if changes else None)
        entries = self._entries
        size = len(entries)
        # Every deleted entry is touched and has its tombstone in `changes`
        # (changes() writes one even for a key never stored), so this loop
        # drops every deleted entry: no pass over the touched keys is needed.
        for change in changes:
            if change.value is None:
                entries.pop(change.key, None)
            else:
                entry = entries[change.key]
                entry.state, entry.encoded, entry.source = _CLEAN, change.value, None
        self._touched.clear()
        self._undo.clear()
        excess = len(entries) - self._cache_size
        if excess > 0:
            # Oldest first (insertion order); everything left is clean now.
            for kb in list(itertools.islice(entries, excess)):
                del entries[kb]
            self._forget_entries()  # it may name entries that left
        elif len(entries) != size:
            # Only deleted entries left. The str key index may still name
            # them, and set() writes to what it names; the windowed fast
            # path checks an entry's state first (a deleted entry keeps
            # it), so it keeps its entries.
            self._str_index.clear()
        if self.windowed is not None:
            self.windowed.committed()

    def rewrite(self, keys: Iterable[bytes]) -> None:
        """Mark ``keys`` dirty with their stored value (or a tombstone if they have none).

        The next commit writes them to the changelog again, without a source
        record (every restore applies them). Used after another writer's
        records were found among this shard's changelog records.
        """
        decode = self.value_codec.decode
        for kb in keys:
            if kb in self._touched:
                continue  # dirty already: the next commit writes it anyway
            raw = self.store.get(kb)
            if raw is None:
                entry = _Entry(kb, None, None, _DELETED, None)
            else:
                entry = _Entry(kb, decode(raw), raw, _SET, None)
            self._entries[kb] = entry
            self._touched.add(kb)
        self._forget_entries()  # it may name entries replaced here

    def discard(self) -> None:
        """Forget everything buffered (after a commit, or when abandoning work)."""
        self._entries.clear()
        self._forget_entries()
        self._touched.clear()
        self._undo.clear()
        if self.windowed is not None:
            self.windowed.reset()

    @property
    def dirty(self) -> bool:
        """Whether anything may need committing (in-place mutations included)."""
        return bool(self._touched)
