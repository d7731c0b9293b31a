"""``GlobalTable``: a complete copy of a small table on every worker, fed from its topic.

::

    class Orders(Processor):
        topics = ["orders"]
        countries = GlobalTable("countries")

        def process(self, message, ctx):
            country = self.countries.get(message.value["country"])

A :class:`Table` is sharded by source partition; a global table is not: each
worker keeps every key of it, read from every partition of its topic, so any
partition thread can look up any key (lookups and joins against reference
data). The topic is ``<app id>-<name>-changelog`` unless ``topic=`` names
another one; whoever writes it (``ctx.send``, another application) writes the
table. The worker restores the copy to the topic's high watermarks before it
processes anything, then a background thread
(:mod:`statestream.worker.globals`) tails the topic for as long as the worker
runs, with the changelog reader's global mode
(:class:`~statestream.tables.recovery.ChangelogReader`).

Consistency: eventually consistent. A read sees what the reader has applied
so far, which may lag the topic (the lag is shown by ``statestream tables``);
a processor's own ``ctx.send`` to the topic is visible only once the reader
applied it, not at once (no read-your-writes). A read never sees part of an
applied batch: the reader writes each batch under the copy's lock.

Storage (:class:`GlobalCopy`): one store per global table and worker, opened
as table ``<name>``, partition 0, holding the keys of every topic partition.
Table names are unique across tables and global tables, so the store never
meets a table's. The store's metadata keeps each topic partition's last
applied offset (written with each batch), the topic's name and its partition
count, so a restart reads only what was written since, and a store that
belonged to something else is rebuilt.

Writes: only through the topic. ``table[k] = v`` and ``del table[k]`` raise
:class:`~statestream.errors.TableError` naming the ``ctx.send`` to use.

Thread ownership: a ``GlobalTable`` is shared by every thread of a worker;
its copy is written by the global reader thread only and read by any thread,
each store access under the copy's lock.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from statestream.errors import ConfigurationError, TableContextError, TableError
from statestream.log.base import Fetcher
from statestream.serde import Codec, encode_prefix, get_codec
from statestream.stores.base import Store, check_table_name, key_bounds
from statestream.tables.recovery import (
    ChangelogReader,
    ProgressCallback,
    clear_reason,
    stored_global_offset,
)
from statestream.types import Record, TopicPartition

__all__ = ["PAGE_SIZE", "GlobalCopy", "GlobalTable"]

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger("statestream.globals")

#: Pairs an iteration reads under the lock at a time: readers and the
#: reader thread take turns, and no user code runs while the lock is held.
PAGE_SIZE = 1000

#: Store metadata: the topic the copy was read from, and its partition count.
TOPIC_META = "global_topic"
PARTITIONS_META = "global_partitions"

_COUNT = struct.Struct(">q")


class GlobalCopy:
    """One worker's copy of a global table: one store with every partition's keys.

    Bytes in, bytes out (the :class:`GlobalTable` encodes). Every store
    access takes the copy's lock: the store belongs to no single thread.

    Thread ownership: :meth:`start`, :meth:`apply`, :meth:`advance` and
    :meth:`set_highs` run on the global reader thread (which owns the
    fetcher); the read methods, :meth:`offsets` and :meth:`lag` on any
    thread; :meth:`close` once the reader thread has stopped.
    """

    def __init__(
        self,
        name: str,
        topic: str,
        partitions: int,
        store: Store,
        *,
        batch_size: int = 10_000,
        progress: ProgressCallback | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.name = name
        self.topic = topic
        self.partitions = partitions
        self.store = store
        self.batch_size = batch_size
        self.progress = progress
        self.page_size = max(page_size, 1)
        self._lock = threading.Lock()
        self._readers: dict[int, ChangelogReader] = {}
        self._highs: dict[int, int] = {}

    # -- the reader thread -------------------------------------------------------

    def topic_partitions(self) -> list[TopicPartition]:
        """Every partition of the table's topic."""
        return [TopicPartition(self.topic, p) for p in range(self.partitions)]

    def start(self, fetcher: Fetcher) -> dict[TopicPartition, int]:
        """Check the store against the topic, seek past what it holds; return the highs.

        The fetcher must have every partition of the topic assigned. The
        store is rebuilt (cleared, with a warning) when any partition's
        offset cannot be continued (below the low watermark: retention
        removed records it never saw; at or beyond the high watermark: the
        topic was recreated), or when it was not read from this topic with
        this partition count. Keys of all partitions share the store, so
        one partition's gap rebuilds all of them.
        """
        marks = {tp: fetcher.watermarks(tp) for tp in self.topic_partitions()}
        with self._lock:
            reason = self._clear_reason(marks)
            store = self.store
            if reason is not None and self._holds_anything(store):
                log.warning("global table %r: %s", self.name, reason)
                store.clear()
            if reason is not None:
                store.write(
                    {},
                    None,
                    {
                        TOPIC_META: self.topic.encode(),
                        PARTITIONS_META: _COUNT.pack(self.partitions),
                    },
                )
            self._readers = {
                tp.partition: ChangelogReader(
                    store,
                    tp,
                    {},
                    self.batch_size,
                    self.progress,
                    mode="global",
                )
                for tp in marks
            }
            self._highs = {tp.partition: high for tp, (_, high) in marks.items()}
            starts = {tp: self._readers[tp.partition].written for tp in marks}
        for tp, offset in starts.items():
            fetcher.seek(tp, marks[tp][0] if offset is None else offset + 1)
        return {tp: high for tp, (_, high) in marks.items()}

    def _clear_reason(self, marks: Mapping[TopicPartition, tuple[int, int]]) -> str | None:
        store = self.store
        if store.meta(TOPIC_META) != self.topic.encode():
            return f"the store holds no copy of topic {self.topic!r}; rebuilding it from the topic"
        raw = store.meta(PARTITIONS_META)
        if raw is None or len(raw) != _COUNT.size or _COUNT.unpack(raw)[0] != self.partitions:
            return (
                f"topic {self.topic!r} has {self.partitions} partitions now, not the number the "
                "store was read with (the topic was recreated); rebuilding it from the topic"
            )
        for tp, (low, high) in marks.items():
            reason = clear_reason(stored_global_offset(store, tp.partition), low, high, False)
            if reason is not None:
                return f"partition {tp.partition}: {reason}"
        return None

    def _holds_anything(self, store: Store) -> bool:
        # Only asked when the store is to be rebuilt: a count's scan is rare.
        if store.count() > 0:
            return True
        return any(stored_global_offset(store, p) is not None for p in range(self.partitions))

    def apply(self, records: Mapping[int, list[Record]]) -> int:
        """Apply records of the topic (per partition, in offset order); return how many.

        All of them become visible at once: each partition's batch is one
        atomic store write with its offset, and readers wait for the lock
        until every partition's is written.
        """
        applied = 0
        with self._lock:
            for partition, batch in records.items():
                reader = self._readers[partition]
                before = reader.applied
                reader.take(batch)
                reader.flush()
                applied += reader.applied - before
        return applied

    def advance(self, tp: TopicPartition, position: int) -> None:
        """Record that everything of ``tp`` below ``position`` was read.

        Offsets no record has (transaction markers, compaction gaps) are
        then done too: the lag reaches 0 and a restart does not read them.
        """
        with self._lock:
            reader = self._readers[tp.partition]
            if position - 1 > (reader.last_offset if reader.last_offset is not None else -1):
                reader.last_offset = position - 1
                reader.flush()

    def report(self, tp: TopicPartition, left: int, force: bool = False) -> None:
        """Report the restore progress of ``tp`` (``left`` offsets to go)."""
        self._readers[tp.partition].report(left, force)

    def set_highs(self, highs: Mapping[TopicPartition, int]) -> None:
        """Remember the topic's high watermarks, for :meth:`lag`."""
        with self._lock:
            self._highs.update({tp.partition: high for tp, high in highs.items()})

    # -- any thread --------------------------------------------------------------

    def offsets(self) -> dict[int, int | None]:
        """The last offset applied of each topic partition (``None``: nothing yet)."""
        with self._lock:
            return {p: reader.written for p, reader in sorted(self._readers.items())}

    def lag(self) -> dict[int, int | None]:
        """Per topic partition, offsets not applied yet as of the last high watermark read.

        ``high - 1 - offset``; ``None`` before the high watermark is known.
        """
        with self._lock:
            result: dict[int, int | None] = {}
            for p, reader in sorted(self._readers.items()):
                high = self._highs.get(p)
                done = reader.written if reader.written is not None else -1
                result[p] = None if high is None else max(high - 1 - done, 0)
            return result

    def get(self, key: bytes) -> bytes | None:
        """The stored value of ``key``, or ``None``."""
        with self._lock:
            return self.store.get(key)

    def count(self) -> int:
        """The number of keys."""
        with self._lock:
            return self.store.count()

    def scan(
        self, lo: bytes | None, hi: bytes | None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` with ``lo <= key < hi`` in key order, a page at a time.

        Each page is read under the lock and yielded after it is released,
        so the caller's code between two pairs never blocks the reader
        thread. A page is consistent; an iteration longer than a page may
        see batches applied between its pages, like iterating a dict
        another thread writes.
        """
        while lo is None or hi is None or lo < hi:
            with self._lock:
                pairs = self.store.iterate(lo, hi, None, reverse)
                page = list(itertools.islice(pairs, self.page_size))
                close = getattr(pairs, "close", None)
                if close is not None:
                    close()  # LevelDB: release the iterator's snapshot now
            yield from page
            if len(page) < self.page_size:
                return
            last = page[-1][0]
            if reverse:
                hi = last
            else:
                lo = last + b"\x00"  # the smallest key after `last`

    def close(self) -> None:
        """Close the store (the reader thread must have stopped)."""
        with self._lock:
            self.store.close()


class GlobalTable(Mapping[K, V], Generic[K, V]):
    """A read-only mapping of every key of a topic, kept on every worker.

    Declare it as a class attribute of a :class:`~statestream.processor.Processor`
    (see the module docstring). ``topic=None`` means ``<app id>-<name>-changelog``,
    created compacted by the worker; a topic named here is created compacted
    if missing and used as it is if it exists. ``store_url`` overrides the
    app's store for the copy (a local one: memory or LevelDB).

    Thread ownership: shared by all threads; reads go to the copy the worker
    attached (:meth:`attach`), which serializes them with the reader thread.
    """

    def __init__(
        self,
        name: str,
        *,
        topic: str | None = None,
        key_codec: str | Codec | None = "json",
        value_codec: str | Codec | None = "json",
        store_url: str | None = None,
    ) -> None:
        check_table_name(name)
        if topic is not None and (
            not isinstance(topic, str)
            or not topic
            or not all(c.isalnum() or c in "._-" for c in topic)
        ):
            raise ConfigurationError(
                f"global table {name!r}: topic must be a topic name (letters, digits, '.', '_' "
                f"and '-'), got {topic!r}"
            )
        self.name = name
        #: The topic named by the user, or None for ``<app id>-<name>-changelog``.
        self.topic = topic
        self.key_codec = get_codec(key_codec)
        self.value_codec = get_codec(value_codec)
        #: Overrides the app's store URL for the copy (None: the app's).
        self.store_url = store_url
        self._copy: GlobalCopy | None = None

    # -- the worker ----------------------------------------------------------------

    def attach(self, copy: GlobalCopy) -> None:
        """Serve reads from ``copy`` (the worker does this before processing starts)."""
        current = self._copy
        if current is not None and current is not copy:
            raise TableError(
                f"global table {self.name!r} is already served by another worker of this "
                "process; run one worker per process (or declare another GlobalTable)"
            )
        self._copy = copy

    def detach(self, copy: GlobalCopy) -> None:
        """Stop serving reads from ``copy`` (the worker is stopping)."""
        if self._copy is copy:
            self._copy = None

    @property
    def copy(self) -> GlobalCopy:
        """The local copy reads go to; raise ``TableContextError`` without one."""
        copy = self._copy
        if copy is None:
            raise TableContextError(
                f"global table {self.name!r} has no local copy: a running worker keeps it. "
                "Read it from the processors of a worker (process(), on_assigned())"
            )
        return copy

    def lag(self) -> dict[int, int | None]:
        """Per topic partition, the offsets the local copy has not applied yet."""
        return self.copy.lag()

    # -- reads -------------------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        raw = self.copy.get(self.key_codec.encode(key))
        if raw is None:
            raise KeyError(key)
        result: V = self.value_codec.decode(raw)
        return result

    def get(self, key: K, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""
        raw = self.copy.get(self.key_codec.encode(key))
        return default if raw is None else self.value_codec.decode(raw)

    def __contains__(self, key: object) -> bool:
        return self.copy.get(self.key_codec.encode(key)) is not None

    def __len__(self) -> int:
        return self.copy.count()

    def __iter__(self) -> Iterator[K]:
        decode = self.key_codec.decode
        return (decode(kb) for kb, _ in self.copy.scan(None, None))

    def items(self) -> Iterator[tuple[K, V]]:  # type: ignore[override]
        """Yield ``(key, value)`` pairs in encoded-key order (see :meth:`GlobalCopy.scan`)."""
        return self._pairs(None, None, None, False)

    def keys(self) -> Iterator[K]:  # type: ignore[override]
        """Yield the keys in encoded-key order."""
        return iter(self)

    def values(self) -> Iterator[V]:  # type: ignore[override]
        """Yield the values in encoded-key order."""
        decode = self.value_codec.decode
        return (decode(vb) for _, vb in self.copy.scan(None, None))

    def range(
        self, start: K | None = None, end: K | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[K, V]]:
        """Yield pairs with ``start <= key < end`` (encoded-key order, as for ``Table``)."""
        return self._pairs(start, end, None, reverse)

    def prefix(self, prefix: Any, *, reverse: bool = False) -> Iterator[tuple[K, V]]:
        """Yield pairs whose key starts with ``prefix`` (a ``str`` for json/str keys)."""
        return self._pairs(None, None, prefix, reverse)

    def _pairs(self, start: Any, end: Any, prefix: Any, reverse: bool) -> Iterator[tuple[K, V]]:
        kc = self.key_codec
        bounds = key_bounds(
            None if start is None else kc.encode(start),
            None if end is None else kc.encode(end),
            None if prefix is None else encode_prefix(kc, prefix),
        )
        copy = self.copy  # raises now, not at the first next()
        if bounds is None:
            return iter(())
        decode_key, decode_value = kc.decode, self.value_codec.decode
        return (
            (decode_key(kb), decode_value(vb))
            for kb, vb in copy.scan(bounds[0], bounds[1], reverse)
        )

    # -- writes go through the topic -------------------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        raise self._read_only()

    def __delitem__(self, key: K) -> None:
        raise self._read_only()

    def _read_only(self) -> TableError:
        copy = self._copy
        topic = copy.topic if copy is not None else self.topic or f"<app id>-{self.name}-changelog"
        return TableError(
            f"global table {self.name!r} is written only through its topic: use "
            f"ctx.send({topic!r}, key, value) (a None value deletes the key); every worker's "
            "copy shows the change once its reader applied it"
        )

    def __repr__(self) -> str:
        return f"<GlobalTable {self.name!r}>"

    # Declared once and compared by identity, like tables.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)
