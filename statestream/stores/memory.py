"""``MemoryStore``: the reference store, kept in a ``SortedDict``.

URL ``memory://``. Nothing survives ``close()`` or the process (data, offset
and metadata alike): a memory-backed table is rebuilt from its changelog on
every start. It is the semantic reference the other stores are tested
against, and a fine choice for small state or tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import ClassVar

from sortedcontainers import SortedDict

from statestream.errors import ConfigurationError
from statestream.secrets import redact_url
from statestream.stores.base import (
    Changes,
    Meta,
    Store,
    StoreURL,
    check_changes,
    check_key,
    check_meta,
    check_meta_name,
    check_offset,
    check_partition,
    check_table_name,
    key_bounds,
)
from statestream.stores.reading import Pairs, ReadGate, StoreReader, take

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """An in-memory ordered store.

    Thread ownership: the owning partition (or standby) thread only. Writing
    while a ``iterate()`` generator is live gives undefined results, as with a
    dict; finish or discard the iterator first.
    """

    scheme: ClassVar[str] = "memory"
    persistent: ClassVar[bool] = False

    def __init__(self, table: str, partition: int) -> None:
        super().__init__(table, partition)
        self._data: SortedDict = SortedDict()
        self._offset: int | None = None
        self._meta: dict[str, bytes] = {}
        # Held by write() and clear() and by readers of other threads
        # (reader()): a read sees whole batches.
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: StoreURL, table: str, partition: int) -> MemoryStore:
        _check_url(url)
        return cls(table, partition)

    @classmethod
    def check_url(cls, url: StoreURL) -> None:
        """Check the URL's shape and options without opening anything."""
        _check_url(url)

    @classmethod
    def destroy(cls, url: StoreURL, table: str, partition: int) -> None:
        """Nothing to delete: a memory store's state ends with the store."""
        check_table_name(table)
        check_partition(partition)
        _check_url(url)

    def get(self, key: bytes) -> bytes | None:
        if self._closed:
            self._raise_closed()
        if not isinstance(key, bytes):
            check_key(key)
        value: bytes | None = self._data.get(key)
        return value

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self._closed:
            self._raise_closed()
        for key in keys:
            if not isinstance(key, bytes):
                check_key(key)
        data = self._data
        return [data.get(key) for key in keys]

    def write(self, changes: Changes, offset: int | None, meta: Meta | None = None) -> None:
        if self._closed:
            self._raise_closed()
        check_offset(offset, self._offset)
        if meta is not None:
            check_meta(meta)
        check_changes(changes)
        data = self._data
        with self._lock:
            for key, value in changes.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            if offset is not None:
                self._offset = offset
            if meta:
                self._meta.update(meta)

    def meta(self, name: str) -> bytes | None:
        if self._closed:
            self._raise_closed()
        check_meta_name(name)
        return self._meta.get(name)

    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        if self._closed:
            self._raise_closed()
        bounds = key_bounds(start, end, prefix)
        if bounds is None:
            return iter(())
        lo, hi = bounds
        keys = self._data.irange(lo, hi, inclusive=(True, False), reverse=reverse)
        return self._pairs(keys)

    def _pairs(self, keys: Iterator[bytes]) -> Iterator[tuple[bytes, bytes]]:
        data = self._data
        for key in keys:
            # Same contract as LevelDB: an iterator outliving close() raises.
            if self._closed:
                self._raise_closed()
            yield key, data[key]

    def offset(self) -> int | None:
        if self._closed:
            self._raise_closed()
        return self._offset

    def count(self) -> int:
        if self._closed:
            self._raise_closed()
        return len(self._data)

    def clear(self) -> None:
        if self._closed:
            self._raise_closed()
        with self._lock:
            self._data.clear()
            self._offset = None
            self._meta.clear()

    def _reader(self, gate: ReadGate) -> StoreReader:
        return _MemoryReader(self, gate)

    def _close(self) -> None:
        self._data.clear()
        self._meta.clear()


class _MemoryReader(StoreReader):
    """Reads under the store's lock, so each sees whole batches."""

    def __init__(self, store: MemoryStore, gate: ReadGate) -> None:
        super().__init__(gate)
        self._store = store

    def _get(self, key: bytes) -> bytes | None:
        with self._store._lock:
            value: bytes | None = self._store._data.get(key)
            return value

    def _scan(self, lo: bytes | None, hi: bytes | None, reverse: bool, limit: int | None) -> Pairs:
        store = self._store
        with store._lock:
            data = store._data
            keys = data.irange(lo, hi, inclusive=(True, False), reverse=reverse)
            return take(((key, data[key]) for key in keys), limit)

    def _offset(self) -> int | None:
        with self._store._lock:
            return self._store._offset

    def _lookup(self, key: bytes) -> tuple[bytes | None, int | None]:
        store = self._store
        with store._lock:
            value: bytes | None = store._data.get(key)
            return value, store._offset


def _check_url(url: StoreURL) -> None:
    if url.hosts or url.path not in ("", "/") or url.options:
        raise ConfigurationError(
            "memory store URLs take no host, path or options: use 'memory://', "
            f"got {redact_url(url.raw)!r}"
        )
