"""The layout of a windowed table in its store, and the values a windowed table deals in.

A windowed table keeps everything in the one store of its (table, partition),
as keys of an ordinary :class:`~statestream.tables.shard.TableShard`. Times
are 8 bytes, big-endian, sign bit flipped, so they sort numerically; ``K`` is
the key's length (4 bytes) and the key as the table's key codec encodes it::

    b"w" K start end        -> the window's value (hopping: the step's slice)
    b"e" due K start end    -> b"" (the time index: windows in the order they close)
    b"e" due BUCKET tag     -> K start end K start end ... (the same, rows per commit)
    b"p" K t                -> a sliding table's point aggregate of time t
    b"q" t+size+1 K t       -> b"" (the points' time index)
    b"m"                    -> stream time and close watermark (JSON)

A window's *due* time is its end (a session's: its end plus the gap; a
hopping slice's: the end of the last window holding it, ``start + size``).
Tumbling and hopping tables index the windows each commit created as one
*bucket* row per due time (:func:`bucket_rows`; more than one past
:data:`BUCKET_BYTES`), so a window needs no index row of its own to write,
read and delete (most of the cost of a short window's life). Sessions and
sliding windows, whose index entries come and go with merges, keep one row
per window; restores derive one row per window for every kind. A bucket
may name a window that is gone (deleted with its key, or listed by a row of
either form too): readers of the index take the windows' values from their
data keys, and report each window once.
The two indexes are kept in the store only (:data:`LOCAL_TAGS`): restores
and standbys derive them from the window and point records
(:func:`derive_index`).
"""

from __future__ import annotations

import functools
import struct
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from statestream.serde import Codec, JsonCodec

__all__ = [
    "BUCKET",
    "DATA",
    "DATA_END",
    "EMPTY",
    "EMPTY_STORED",
    "INDEX",
    "INDEX_END",
    "LOCAL_TAGS",
    "MAX_TIME",
    "META",
    "MIN_TIME",
    "MISSING",
    "NEVER",
    "OFFSET",
    "POINT",
    "POINT_INDEX",
    "POINT_INDEX_END",
    "ClosedWindow",
    "LateRecord",
    "RawValue",
    "TaggedCodec",
    "WindowKind",
    "WindowSpec",
    "WindowedValue",
    "bucket_rows",
    "derive_index",
    "pack_bounds",
    "pack_bucket",
    "pack_time",
    "slice_windows",
    "sliding_windows",
    "time_at",
    "unpack_bounds",
    "unpack_bucket",
    "unpack_length",
    "unpack_time",
]

WindowKind = Literal["tumbling", "hopping", "sliding", "session"]

DATA, INDEX, POINT, POINT_INDEX, META = b"w", b"e", b"p", b"q", b"m"
DATA_END, INDEX_END, POINT_INDEX_END = b"x", b"f", b"r"
OFFSET = 1 << 63
MIN_TIME, MAX_TIME = -(1 << 63), (1 << 63) - 1
NEVER = 1 << 64  # a due time no stream time reaches
pack_time = struct.Struct(">Q").pack
pack_bounds = struct.Struct(">QQ").pack
unpack_time = struct.Struct(">Q").unpack_from
unpack_bounds = struct.Struct(">QQ").unpack_from
unpack_length = struct.Struct(">I").unpack_from
_NUMBER = struct.Struct(">I").pack
MISSING: Any = object()
#: After ``b"e" due``, marks a bucket row: no key is 2**32 - 1 bytes long, so
#: no ``K`` starts so. The 16-byte ``tag`` behind it tells apart the buckets
#: of one due time: the changelog offset of their commit, 4 random bytes, and
#: the bucket's number among that commit's buckets of the due time.
BUCKET = b"\xff\xff\xff\xff"
#: Most bytes of windows one bucket row lists (a commit that created more
#: with one due time writes several): far below the record size stores
#: accept (Aerospike's default is 1 MiB), and a row read at a close stays small.
BUCKET_BYTES = 32 * 1024


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
        # The json codec's bytes of an int, without its call (a counting
        # table's every window value at every commit); the exact class only:
        # a subclass may encode differently.
        self._json_ints = type(inner) is JsonCodec

    def encode(self, obj: Any) -> bytes:
        kind = type(obj)
        if kind is int and self._json_ints:
            return b"\x01" + str(obj).encode("ascii")
        if type(obj) is RawValue:
            return b"\x00" + obj
        return b"\x01" + self.inner.encode(obj)

    def decode(self, data: bytes) -> Any:
        if data[:1] == b"\x00":
            return RawValue(data[1:])
        return self.inner.decode(data[1:])


EMPTY = RawValue(b"")


def time_at(raw: bytes, at: int) -> int:
    """The time stored at byte ``at`` of ``raw``."""
    return int(unpack_time(raw, at)[0]) - OFFSET


#: Tags of the keys a windowed table keeps in its store only: the two time
#: indexes follow from the window and point keys, so they are not written to
#: the changelog (half the records, for windows written once) and restores
#: and standbys derive them (:func:`derive_index`).
LOCAL_TAGS = frozenset({INDEX, POINT_INDEX})
#: An index entry's stored bytes: a raw, empty value (TaggedCodec's tag 0).
EMPTY_STORED = b"\x00"


def pack_bucket(rests: list[bytes]) -> bytes:
    """A bucket row's stored bytes: ``EMPTY_STORED`` (a raw value to TaggedCodec), then
    each window's ``K start end``."""
    return EMPTY_STORED + b"".join(rests)


def bucket_rows(head: bytes, rests: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """The rows ``(key, value)`` listing ``rests``: ``head`` (``b"e" due BUCKET`` and
    the commit's part of the tag) and a 4-byte number, with at most
    :data:`BUCKET_BYTES` of windows each (a window longer than that alone)."""
    if sum(map(len, rests)) <= BUCKET_BYTES:
        yield head + _NUMBER(0), pack_bucket(rests)  # most commits: one row
        return
    number, size = 0, 0
    chunk: list[bytes] = []
    for rest in rests:
        if chunk and size + len(rest) > BUCKET_BYTES:
            yield head + _NUMBER(number), pack_bucket(chunk)
            number, chunk, size = number + 1, [], 0
        chunk.append(rest)
        size += len(rest)
    yield head + _NUMBER(number), pack_bucket(chunk)


def unpack_bucket(raw: bytes) -> list[bytes]:
    """The ``K start end`` of each window a bucket row lists (see :func:`pack_bucket`)."""
    rests: list[bytes] = []
    append = rests.append
    at, n = 1, len(raw)
    while at < n:
        end = at + 20 + unpack_length(raw, at)[0]  # K (4 + length bytes), start, end
        append(raw[at:end])
        at = end
    return rests


def sliding_windows(points: dict[int, Any], t: int, size: int) -> list[tuple[int, int]]:
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


def slice_windows(
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
        if tag == DATA:
            (length,) = unpack_length(key, 1)
            if hopping:  # a slice: due with the last window holding it
                due = time_at(key, 5 + length) + size
            else:
                end = time_at(key, 5 + length + 8)
                due = end + size if session else end
            index = INDEX + pack_time(due + OFFSET) + key[1:]
        elif tag == POINT:
            (length,) = unpack_length(key, 1)
            t = time_at(key, 5 + length)
            index = POINT_INDEX + pack_time(t + size + 1 + OFFSET) + key[1:]
        else:
            return
        batch[index] = None if value is None else EMPTY_STORED

    return derive
