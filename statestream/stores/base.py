"""The ``Store`` contract: bytes-level, ordered, atomic batches with an offset.

One store instance holds the state of one table for one partition. It knows
nothing of Kafka, tables or codecs: keys and values are ``bytes``, and the only
Kafka-shaped notion is the *changelog offset*, an integer recorded atomically
with each batch so that recovery knows exactly which changelog records the
stored data already contains. Next to the offset a store keeps *metadata*: a
few small named values (for example the highest writer epoch applied),
recorded atomically with the batch and the offset as well.

Thread ownership: a store is owned by one thread at a time (the partition
thread of its partition, or the standby thread). Stores are not thread-safe;
handing one to another thread requires a happens-before edge (a queue, a join).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar

from statestream.errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidOffsetError,
    InvalidTableNameError,
    OffsetRegressionError,
    StoreClosedError,
    StoreError,
)
from statestream.secrets import redact_url
from statestream.stores.bounds import key_bounds, prefix_successor
from statestream.stores.reading import ReadGate, SharedReader, StoreReader

__all__ = [
    "MAX_META_NAME",
    "MAX_META_VALUE",
    "MAX_OFFSET",
    "Changes",
    "Meta",
    "Store",
    "StoreURL",
    "check_changes",
    "check_key",
    "check_mapping",
    "check_meta",
    "check_meta_name",
    "check_offset",
    "check_partition",
    "check_table_name",
    "invalid_value",
    "key_bounds",
    "prefix_successor",
]

#: The largest offset Kafka can assign (offsets are signed 64-bit integers).
MAX_OFFSET = (1 << 63) - 1

#: A batch for :meth:`Store.write`: key -> new value, or ``None`` to delete.
Changes = Mapping[bytes, "bytes | None"]

#: Metadata for :meth:`Store.write`: name -> value, stored with the batch and offset.
Meta = Mapping[str, bytes]

#: Longest metadata name, in characters.
MAX_META_NAME = 32
#: Largest metadata value, in bytes: metadata is small (an epoch, a timestamp)
#: and rides with every offset write, so it must not grow unnoticed.
MAX_META_VALUE = 4096


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL such as ``leveldb:///var/lib/app?sync=true``.

    ``hosts`` is the comma-separated network location split into parts (empty
    for local stores); ``options`` holds the query string, one value per name.
    """

    raw: str
    scheme: str
    hosts: tuple[str, ...]
    path: str
    options: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        # The raw URL and the options may hold a password.
        return f"StoreURL({redact_url(self.raw)!r})"


_TABLE_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,199}")


def check_table_name(name: object) -> None:
    """Raise :class:`InvalidTableNameError` unless ``name`` is safe for files and topics."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise InvalidTableNameError(
            f"invalid table name {name!r}: use 1-200 letters, digits, '.', '_' or '-', "
            "not starting with '.'"
        )


def check_partition(partition: object) -> None:
    """Raise :class:`ConfigurationError` unless ``partition`` is an int >= 0."""
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise ConfigurationError(f"partition must be an int >= 0, got {partition!r}")


_META_NAME = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_META_NAME - 1}}}")


def check_meta_name(name: object) -> None:
    """Raise :class:`InvalidMetadataError` unless ``name`` is a short ASCII identifier."""
    if not isinstance(name, str) or not _META_NAME.fullmatch(name):
        raise InvalidMetadataError(
            f"invalid metadata name {name!r:.60}: use 1-{MAX_META_NAME} ASCII letters, digits "
            "or '_', starting with a letter or '_'"
        )


def check_meta(meta: object) -> None:
    """Raise :class:`InvalidMetadataError` unless ``meta`` maps valid names to small bytes."""
    if not isinstance(meta, Mapping):
        raise InvalidMetadataError(
            f"write(meta=...) needs a mapping of names to bytes, or None, got {type(meta).__name__}"
        )
    for name, value in meta.items():
        check_meta_name(name)
        if not isinstance(value, bytes):
            raise InvalidMetadataError(
                f"metadata value of {name!r} must be bytes, got {type(value).__name__}"
            )
        if len(value) > MAX_META_VALUE:
            raise InvalidMetadataError(
                f"metadata value of {name!r} is {len(value)} bytes, more than the "
                f"{MAX_META_VALUE} a store keeps next to its offset"
            )


def check_key(key: object) -> None:
    """Raise :class:`InvalidKeyError` unless ``key`` is ``bytes``."""
    if not isinstance(key, bytes):
        raise InvalidKeyError(
            f"store keys must be bytes, got {type(key).__name__} {key!r:.60}; encode it "
            "with a codec first"
        )


def check_offset(offset: object, current: int | None) -> None:
    """Validate a changelog offset for :meth:`Store.write` against the stored one."""
    if offset is None:
        return
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise InvalidOffsetError(
            f"changelog offset must be an int from 0 to {MAX_OFFSET} (Kafka offsets are "
            f"signed 64-bit), got {offset!r}"
        )
    if current is not None and offset < current:
        raise OffsetRegressionError(
            f"changelog offset would move backwards from {current} to {offset}; the "
            "batch was not applied"
        )


def invalid_value(key: object, value: object) -> InvalidKeyError:
    """Return the error for a batch value that is neither bytes nor ``None``."""
    return InvalidKeyError(
        f"store values must be bytes or None (delete), got {type(value).__name__} "
        f"for key {key!r:.60}"
    )


def check_mapping(changes: object) -> None:
    """Raise :class:`InvalidKeyError` unless ``changes`` is a mapping."""
    if not isinstance(changes, Mapping):
        raise InvalidKeyError(
            f"write() needs a mapping of bytes keys to bytes values or None, got "
            f"{type(changes).__name__}"
        )


def check_changes(changes: Changes) -> None:
    """Raise :class:`InvalidKeyError` if any key or value of a batch is not bytes."""
    check_mapping(changes)
    for key, value in changes.items():
        if not isinstance(key, bytes):
            check_key(key)
        if value is not None and not isinstance(value, bytes):
            raise invalid_value(key, value)


class Store(ABC):
    """State of one table for one partition, as ordered bytes with an offset.

    Contract, shared by every implementation and checked by one test suite:

    * ``get``/``get_many`` return the value or ``None``; keys must be ``bytes``
      (:class:`~statestream.errors.InvalidKeyError` otherwise).
    * ``write(changes, offset, meta=None)`` applies every put and delete of
      ``changes`` *and* records ``offset`` and the metadata ``meta`` as one
      atomic unit where the engine allows it (LevelDB: one WriteBatch; memory:
      trivially; Aerospike: the data, then one offset record holding offset
      and metadata). After a crash either all of a batch, its offset and its
      metadata are visible, or none. ``offset=None`` leaves the recorded
      offset unchanged; ``meta=None`` (or ``{}``) leaves the metadata
      unchanged, and a name not in ``meta`` keeps its value. An offset lower
      than the recorded one raises
      :class:`~statestream.errors.OffsetRegressionError` and applies nothing;
      so does a bad key, value or metadata item (an
      :class:`~statestream.errors.InvalidKeyError`).
    * ``meta(name)`` is the last value written under ``name``, or ``None``.
      Names are ASCII identifiers of at most :data:`MAX_META_NAME` characters,
      values ``bytes`` of at most :data:`MAX_META_VALUE` bytes
      (:class:`~statestream.errors.InvalidMetadataError` otherwise). Metadata
      persists with the store and is never seen by ``get``, ``iterate`` or
      ``count``.
    * ``iterate(start, end, prefix, reverse)`` yields ``(key, value)`` pairs in
      key-byte order (descending with ``reverse``), ``start`` inclusive,
      ``end`` exclusive, restricted to keys starting with ``prefix``.
    * ``offset()`` is the last recorded changelog offset, or ``None``.
    * ``count()`` is the number of keys. ``clear()`` removes every key, the
      offset and the metadata. ``close()`` is idempotent; any other call after
      it raises :class:`~statestream.errors.StoreClosedError`.
    * :meth:`destroy` (a class method, reached through
      :func:`~statestream.stores.registry.destroy_store`) deletes everything a
      closed store of one (table, partition) keeps, without reading it, so a
      damaged store (:class:`~statestream.errors.StoreCorruptedError`) can be
      thrown away and rebuilt from the changelog.

    Thread ownership: one owning thread at a time (see module docstring).
    """

    #: URL scheme the store registers under, e.g. ``"leveldb"``.
    scheme: ClassVar[str]
    #: Whether data and offset survive ``close()`` and a process crash.
    persistent: ClassVar[bool]
    #: Whether every worker reaches the same state (a remote store): then a
    #: new owner needs no standby copy, only the changelog past its offset.
    shared: ClassVar[bool] = False

    def __init__(self, table: str, partition: int) -> None:
        check_table_name(table)
        check_partition(partition)
        self.table = table
        self.partition = partition
        self._closed = False
        # Reads of other threads hold it; close() waits on it. Made here, not
        # by the first reader(): two threads asking at once share one gate.
        self._gate: ReadGate | None = ReadGate(
            f"the {self.scheme} store of table {table!r} partition {partition}"
        )
        self._view: StoreReader | None = None

    @classmethod
    @abstractmethod
    def from_url(cls, url: StoreURL, table: str, partition: int) -> Store:
        """Open the store of ``table``/``partition`` described by ``url``."""

    @classmethod  # noqa: B027 - optional hook: the default accepts every URL
    def check_url(cls, url: StoreURL) -> None:
        """Raise :class:`~statestream.errors.ConfigurationError` if ``url`` is not
        one this store can open (bad options or shape), without opening anything.

        Workers call it before creating topics or joining the group. The
        default accepts every URL; stores with options override it.
        """

    @classmethod
    def exists(cls, url: StoreURL, table: str, partition: int) -> bool:
        """Whether the store of ``table``/``partition`` may hold state (without creating it).

        The default says True (opening it tells); local stores answer from
        their files, a store whose state dies with the process says False.
        """
        return cls.persistent

    @classmethod
    def partitions(cls, url: StoreURL, table: str) -> list[int] | None:
        """The partitions of ``table`` whose store may hold state, ascending, if the
        store can tell without opening any (nothing is created); ``None`` if it cannot.

        The default cannot tell; local stores list their files, a store whose
        state dies with the process has none.
        """
        return None if cls.persistent else []

    @classmethod
    def destroy(cls, url: StoreURL, table: str, partition: int) -> None:
        """Delete everything the store of ``table``/``partition`` at ``url`` keeps.

        The store must be closed (a store that can tell refuses otherwise).
        This default opens the store, clears it and closes it; a store whose
        damage can make opening fail overrides it to delete without reading.
        Destroying a store that does not exist does nothing.
        """
        check_table_name(table)
        check_partition(partition)
        with cls.from_url(url, table, partition) as store:
            store.clear()

    @abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """Return the value stored under ``key``, or ``None``."""

    @abstractmethod
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Return the values of ``keys`` in the same order (``None`` when missing)."""

    @abstractmethod
    def write(self, changes: Changes, offset: int | None, meta: Meta | None = None) -> None:
        """Apply ``changes`` (``None`` deletes), record ``offset`` and ``meta``, atomically."""

    @abstractmethod
    def meta(self, name: str) -> bytes | None:
        """Return the last metadata value written under ``name``, or ``None``."""

    @abstractmethod
    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` pairs in key order within the given bounds."""

    @abstractmethod
    def offset(self) -> int | None:
        """Return the last changelog offset recorded by ``write``, or ``None``."""

    @abstractmethod
    def count(self) -> int:
        """Return the number of keys (may cost a scan: see the implementation)."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every key and forget the offset and the metadata."""

    @abstractmethod
    def _close(self) -> None:
        """Release the engine's resources (called once by :meth:`close`)."""

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Release the store. Idempotent; later calls other than ``close`` raise.

        Waits for reads of other threads in flight (:meth:`reader`) first.
        """
        if not self._closed:
            gate = self._gate
            if gate is not None:
                gate.shut()
            self._closed = True
            self._close()

    def reader(self) -> StoreReader:
        """A view of this store's committed batches for other threads (see
        :mod:`statestream.stores.reading`); the owner keeps writing meanwhile."""
        if self._closed:
            self._raise_closed()
        view = self._view
        if view is None:
            gate = self._gate
            assert gate is not None
            view = self._view = self._reader(gate)  # a race makes two alike: harmless
        return view

    def _reader(self, gate: ReadGate) -> StoreReader:
        """Make the reader: the engine's own (a shared store reads through itself)."""
        if self.shared:
            return SharedReader(self, gate)
        raise StoreError(
            f"{type(self).__name__} does not serve reads from other threads; query a "
            "LevelDB, memory or Aerospike store"
        )

    def _raise_closed(self) -> None:
        raise StoreClosedError(
            f"{type(self).__name__} for table {self.table!r} partition {self.partition} is "
            "closed; open a new store for the partition"
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} table={self.table!r} partition={self.partition} {state}>"
