"""Reads of a store's committed state from threads other than its owner.

A store belongs to one thread (its partition's, or the standby thread), and
is not thread-safe. Queries (``app.query``, the HTTP endpoint) read it from
other threads through a :class:`StoreReader` (:meth:`Store.reader`), under
two rules every implementation keeps:

* a read sees whole batches only: every change of one
  :meth:`~statestream.stores.base.Store.write`, or none of them (LevelDB: a
  read is served by one snapshot; memory: under the store's lock; Aerospike:
  per record only, see :class:`SharedReader`);
* a store is never closed under a read: :meth:`Store.close` waits for the
  reads in flight (the :class:`ReadGate`), and a read that starts after it
  raises :class:`~statestream.errors.StoreClosedError` (the partition moved:
  ask again, the next answer names where).

Thread ownership: readers are for any thread; the gate is shared by the
owner (who closes) and the readers.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from statestream.errors import StoreClosedError
from statestream.stores.bounds import key_bounds

if TYPE_CHECKING:
    from statestream.stores.base import Store

__all__ = ["ReadGate", "SharedReader", "StoreReader"]

#: One read's answer: ``(key, value)`` pairs in key order (reverse: descending).
Pairs = list[tuple[bytes, bytes]]


class ReadGate:
    """Reads in flight on one store, and the close that waits for them."""

    __slots__ = ("_cond", "_exclusive", "_readers", "_shut", "_what")

    def __init__(self, what: str) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._exclusive = False
        self._shut = False
        self._what = what

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the store open for one read (raise StoreClosedError if it closed)."""
        with self._cond:
            while self._exclusive and not self._shut:
                self._cond.wait()
            if self._shut:
                raise StoreClosedError(
                    f"{self._what} was closed (its partition moved or the worker stopped); "
                    "ask again: the next answer comes from where the partition is now"
                )
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Keep reads out while the owner replaces the engine (a clear): they wait."""
        with self._cond:
            self._exclusive = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def shut(self) -> None:
        """Refuse new reads and wait for those in flight (the owner, before closing)."""
        with self._cond:
            self._shut = True
            self._cond.notify_all()
            while self._readers:
                self._cond.wait()


class StoreReader(ABC):
    """A read-only view of one store's committed batches, for any thread.

    Every method holds the store's :class:`ReadGate` for its duration, so
    the store cannot close under it.
    """

    def __init__(self, gate: ReadGate) -> None:
        self.gate = gate

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` in the last batch written (None if it has none)."""
        with self.gate.reading():
            return self._get(key)

    def lookup(self, key: bytes) -> tuple[bytes | None, int | None]:
        """:meth:`get` and :meth:`offset` of one state of the store."""
        with self.gate.reading():
            return self._lookup(key)

    def scan(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        prefix: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Pairs:
        """Up to ``limit`` pairs of ``[start, end)`` under ``prefix`` (as
        :meth:`Store.iterate`), all from one state of the store."""
        bounds = key_bounds(start, end, prefix)
        if bounds is None or (limit is not None and limit <= 0):
            return []
        with self.gate.reading():
            return self._scan(bounds[0], bounds[1], reverse, limit)

    def offset(self) -> int | None:
        """The changelog offset of the last batch written."""
        with self.gate.reading():
            return self._offset()

    @abstractmethod
    def _get(self, key: bytes) -> bytes | None: ...

    def _lookup(self, key: bytes) -> tuple[bytes | None, int | None]:
        # Engines that keep no snapshot: the offset is read right after.
        return self._get(key), self._offset()

    @abstractmethod
    def _scan(self, lo: bytes | None, hi: bytes | None, reverse: bool, limit: int | None) -> Pairs:
        """The pairs of ``[lo, hi)`` (None: open), ``limit`` > 0 or None, from one state."""

    @abstractmethod
    def _offset(self) -> int | None: ...


def take(pairs: Iterator[tuple[bytes, bytes]], limit: int | None) -> Pairs:
    """The first ``limit`` pairs (all of them for None)."""
    out: Pairs = []
    for pair in pairs:
        out.append(pair)
        if limit is not None and len(out) >= limit:
            break
    return out


class SharedReader(StoreReader):
    """A reader of a store whose engine serves many threads itself (a remote store).

    Reads go to the store's own ``get``/``iterate``; a read may see part of a
    batch that is being written (the engine keeps no snapshot across keys).
    """

    def __init__(self, store: Store, gate: ReadGate) -> None:
        super().__init__(gate)
        self._store = store

    def _get(self, key: bytes) -> bytes | None:
        return self._store.get(key)

    def _scan(self, lo: bytes | None, hi: bytes | None, reverse: bool, limit: int | None) -> Pairs:
        return take(self._store.iterate(lo, hi, None, reverse), limit)

    def _offset(self) -> int | None:
        return self._store.offset()
