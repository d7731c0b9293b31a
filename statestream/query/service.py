"""``QueryService``: answers reads of one worker's tables from any thread.

A key is located with the producer's partitioner (murmur2 of the key as the
table's key codec encodes it, over the table's partitions), which is where
its records arrive when the source topic is keyed with the same codec (as
statestream's own re-keying does); ``partition=`` overrides it. The value
comes from that partition's store through a
:class:`~statestream.stores.reading.StoreReader`: committed state only,
whole batches only, never the partition thread's uncommitted buffer.

Thread ownership: any thread. The service holds no state of its own beyond
the tables; the :class:`StoreSource` (the worker) says which stores are
where, under its own locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from statestream.errors import (
    KeyNotLocalError,
    PartitionNotReadyError,
    QueryError,
    StoreClosedError,
    TableContextError,
    UnknownTableError,
)
from statestream.log.partitioner import default_partition
from statestream.query.answers import Answer, Copy, Page
from statestream.query.pacing import DEFAULT_SHARE, Pacer
from statestream.query.windows import read_windows
from statestream.serde import encode_prefix
from statestream.stores.base import Store
from statestream.stores.reading import StoreReader
from statestream.tables.globaltable import GlobalCopy, GlobalTable
from statestream.tables.table import Table
from statestream.tables.windowed import WindowedTable

__all__ = ["MAX_LIMIT", "QueryService", "StoreSource"]

#: The most pairs one range query returns (per partition).
MAX_LIMIT = 10_000


class StoreSource(Protocol):
    """Where a worker keeps the stores a query reads (implemented by the worker).

    Every method is called from query threads and must be thread-safe.
    """

    def partition_count(self) -> int:
        """The partitions of the source topics (and so of every table)."""

    def active_store(self, table: str, partition: int) -> Store | None:
        """The store of an active, restored partition; None if this worker does not
        hold it; raise PartitionNotReadyError if it holds it but is restoring."""

    def standby_store(self, table: str, partition: int) -> tuple[Store, int | None] | None:
        """A standby copy and its lag (changelog records behind), if this worker keeps one."""

    def owner(self, partition: int) -> str | None:
        """The HTTP endpoint of the worker holding ``partition`` active, if known."""

    def busy(self) -> bool:
        """Whether the worker has records to process (queries are paced then)."""


class QueryService:
    """Reads the committed state of a worker's tables (see the module docstring)."""

    def __init__(
        self,
        tables: Sequence[Table[Any, Any]],
        global_tables: Sequence[GlobalTable[Any, Any]],
        source: StoreSource,
        *,
        share: float = DEFAULT_SHARE,
    ) -> None:
        self._tables = {t.name: t for t in tables}
        self._globals = {t.name: t for t in global_tables}
        self.source = source
        self.pacer = Pacer(source.busy, share)

    def table_names(self) -> list[str]:
        """The tables and global tables, sorted."""
        return sorted([*self._tables, *self._globals])

    def table(self, name: str) -> Table[Any, Any] | GlobalTable[Any, Any]:
        """The table named ``name`` (UnknownTableError if the app has none)."""
        found: Table[Any, Any] | GlobalTable[Any, Any] | None = self._tables.get(name)
        if found is None:  # (not `or`: a table's truth is its length, a shard read)
            found = self._globals.get(name)
        if found is None:
            raise UnknownTableError(
                f"no table {name!r}; the app's tables: {', '.join(self.table_names()) or 'none'}"
            )
        return found

    def locate(self, table: str, key: Any) -> int:
        """The partition ``key`` of ``table`` lives on (global tables: every worker's)."""
        found = self.table(table)
        if isinstance(found, GlobalTable):
            raise QueryError(f"global table {table!r} is complete on every worker: no partition")
        kb = found.key_codec.encode(key)
        return default_partition(kb, self.source.partition_count())

    # -- reads -------------------------------------------------------------------------

    def get(
        self, table: str, key: Any, *, standby: bool = False, partition: int | None = None
    ) -> Answer:
        """The committed value of ``key`` (windowed tables: its windows).

        From the key's active partition on this worker; with ``standby``, from
        this worker's standby copy when it does not hold the partition active.
        Raises KeyNotLocalError (with the owner's endpoint when known) or
        PartitionNotReadyError. While the worker is busy, reads are paced
        (:mod:`statestream.query.pacing`).
        """
        with self.pacer.pace():
            return self._get(table, key, standby, partition)

    def _get(self, table: str, key: Any, standby: bool, partition: int | None) -> Answer:
        found = self.table(table)
        if isinstance(found, GlobalTable):
            kb = found.key_codec.encode(key)
            raw = _global_copy(found).get(kb)
            lags = [lag for lag in found.lag().values() if lag is not None]
            value = None if raw is None else found.value_codec.decode(raw)
            lag = sum(lags) if lags else None
            return Answer(table, key, value, raw is not None, None, "global", None, lag)
        kb = found.key_codec.encode(key)
        if partition is None:
            partition = default_partition(kb, self.source.partition_count())
        reader, copy, lag = self._reader(found.name, partition, standby)
        try:
            if isinstance(found, WindowedTable):
                windows = read_windows(found, reader, kb)
                offset = reader.offset()
                return Answer(table, key, windows, bool(windows), partition, copy, offset, lag)
            raw, offset = reader.lookup(kb)
        except StoreClosedError as exc:
            raise PartitionNotReadyError(
                f"table {table!r} partition {partition} moved while it was read ({exc}); ask again",
                partition=partition,
            ) from exc
        value = None if raw is None else found.value_codec.decode(raw)
        return Answer(table, key, value, raw is not None, partition, copy, offset, lag)

    def range(
        self,
        table: str,
        *,
        prefix: Any = None,
        start: Any = None,
        end: Any = None,
        limit: int = 100,
        partition: int | None = None,
        standby: bool = False,
        reverse: bool = False,
    ) -> Page:
        """Up to ``limit`` pairs of each partition held here (or of ``partition``), keys
        from ``start`` (inclusive) to ``end`` (exclusive) and/or under ``prefix``, in the
        order of the encoded keys."""
        with self.pacer.pace():
            return self._range(table, prefix, start, end, limit, partition, standby, reverse)

    def _range(
        self,
        table: str,
        prefix: Any,
        start: Any,
        end: Any,
        limit: int,
        partition: int | None,
        standby: bool,
        reverse: bool,
    ) -> Page:
        found = self.table(table)
        if isinstance(found, WindowedTable):
            raise QueryError(
                f"windowed table {table!r} is read per key: query a key for its windows"
            )
        if type(limit) is not int or not 0 < limit <= MAX_LIMIT:
            raise QueryError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
        codec = found.key_codec
        lo = None if start is None else codec.encode(start)
        hi = None if end is None else codec.encode(end)
        raw_prefix = None if prefix is None else encode_prefix(codec, prefix)
        decode_key, decode_value = codec.decode, found.value_codec.decode
        if isinstance(found, GlobalTable):
            pairs = _global_copy(found).scan(lo, hi, reverse)
            items: list[tuple[Any, Any, int | None]] = []
            more = False
            for kb, raw in pairs:
                if raw_prefix is not None and not kb.startswith(raw_prefix):
                    continue
                if len(items) >= limit:
                    more = True
                    break
                items.append((decode_key(kb), decode_value(raw), None))
            return Page(table, items, [], [], more, "global")
        count = self.source.partition_count()
        wanted = range(count) if partition is None else [partition]
        page = Page(table, copy="standby" if standby else "active")
        for number in wanted:
            try:
                reader, _, _ = self._reader(found.name, number, standby)
                rows = reader.scan(lo, hi, raw_prefix, reverse=reverse, limit=limit + 1)
            except (KeyNotLocalError, PartitionNotReadyError, StoreClosedError):
                if partition is not None:
                    raise
                page.missing.append(number)
                continue
            page.partitions.append(number)
            if len(rows) > limit:
                page.more = True
                rows = rows[:limit]
            page.items.extend((decode_key(k), decode_value(v), number) for k, v in rows)
        return page

    def _reader(
        self, table: str, partition: int, standby: bool
    ) -> tuple[StoreReader, Copy, int | None]:
        count = self.source.partition_count()
        if type(partition) is not int or not 0 <= partition < count:
            raise QueryError(f"partition must be an int from 0 to {count - 1}, got {partition!r}")
        store = self.source.active_store(table, partition)
        if store is not None:
            return self._open(store, table, partition), "active", 0
        if standby:
            copy = self.source.standby_store(table, partition)
            if copy is not None:
                store, lag = copy
                return self._open(store, table, partition), "standby", lag
        owner = self.source.owner(partition)
        where = f"worker {owner} holds it" if owner else "another worker holds it"
        raise KeyNotLocalError(
            f"table {table!r} partition {partition} is not active on this worker ({where}); "
            + ("ask that worker" if owner else "ask the worker that holds it")
            + ("" if standby else ", or pass standby=True for a standby copy kept here"),
            partition=partition,
            owner=owner,
        )

    @staticmethod
    def _open(store: Store, table: str, partition: int) -> StoreReader:
        try:
            return store.reader()
        except StoreClosedError as exc:
            raise PartitionNotReadyError(
                f"table {table!r} partition {partition} is moving ({exc}); ask again",
                partition=partition,
            ) from exc


def _global_copy(table: GlobalTable[Any, Any]) -> GlobalCopy:
    """The worker's copy of a global table (QueryError before it is restored)."""
    try:
        return table.copy
    except TableContextError as exc:
        raise QueryError(
            f"global table {table.name!r} has no copy on this worker yet: it restores before "
            "the worker joins its group; ask again"
        ) from exc
