"""``LevelDBStore``: local, embedded, persistent state on LevelDB (plyvel).

URL ``leveldb:///absolute/dir`` or ``leveldb://./relative/dir``, with
:class:`~statestream.config.LevelDBOptions` in the query string. Each
(table, partition) gets its own database directory ``<dir>/<table>/<partition>``,
so a partition's state can be opened, closed and handed over independently.

Layout inside one database: data keys are stored under the prefix ``b"d"`` and
metadata (the changelog offset, the format version) under ``b"m"``, so a user
key can never collide with the offset record, and the offset rides in the same
WriteBatch as the data it describes.

This is the only module that imports plyvel.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import plyvel

from statestream.config import LevelDBOptions, options_from_strings
from statestream.errors import (
    ConfigurationError,
    StoreClosedError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    StorePermissionError,
)
from statestream.stores.base import (
    Changes,
    Store,
    StoreURL,
    check_key,
    check_mapping,
    check_offset,
    invalid_value,
    key_bounds,
)

__all__ = ["LevelDBStore", "store_path"]

_DATA = b"d"
_DATA_END = b"e"  # first key past every data key
_OFFSET_KEY = b"moffset"
_VERSION_KEY = b"mversion"
_FORMAT_VERSION = b"1"
_OFFSET = struct.Struct(">q")


def store_path(data_dir: str, table: str, partition: int) -> str:
    """Return the database directory of ``table``/``partition`` under ``data_dir``."""
    return os.path.join(data_dir, table, str(partition))


def _ensure_writable_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except PermissionError as exc:
        raise StorePermissionError(
            f"cannot create LevelDB directory {path!r}: permission denied; make its parent "
            "writable by this user or choose another data directory in the store URL"
        ) from exc
    except (FileExistsError, NotADirectoryError) as exc:
        raise StoreError(
            f"cannot create LevelDB directory {path!r}: a file is in the way; remove it or "
            "choose another data directory"
        ) from exc
    except OSError as exc:
        raise StoreError(f"cannot create LevelDB directory {path!r}: {exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise StorePermissionError(
            f"LevelDB directory {path!r} is not writable by this user; fix its permissions "
            "or choose another data directory in the store URL"
        )


class LevelDBStore(Store):
    """A persistent ordered store; one LevelDB database per (table, partition).

    Atomicity: :meth:`write` puts the batch and the changelog offset in one
    LevelDB WriteBatch, so after any crash the data on disk is exactly the
    batches up to the recorded offset. With ``sync=false`` (the default) this
    holds for process crashes (kill -9); ``sync=true`` extends it to power loss.

    Ownership: LevelDB locks the directory. Opening a database that another
    process (or another open store in this process) holds raises
    :class:`~statestream.errors.StoreLockedError` naming the path. Handover is
    deterministic: :meth:`close` releases the lock before it returns.

    Thread ownership: the owning partition (or standby) thread only. Iterators
    read a consistent snapshot taken when they start.

    ``count()`` scans the keys (LevelDB keeps no count): O(n).
    """

    scheme: ClassVar[str] = "leveldb"
    persistent: ClassVar[bool] = True

    def __init__(
        self,
        data_dir: str,
        table: str,
        partition: int,
        options: LevelDBOptions | None = None,
    ) -> None:
        super().__init__(table, partition)
        self.options = options or LevelDBOptions()
        self.path = store_path(data_dir, table, partition)
        _ensure_writable_dir(os.path.dirname(self.path))
        self._db = self._open()
        self._data: Any = self._db.prefixed_db(_DATA)
        self._offset = self._read_offset()

    @classmethod
    def from_url(cls, url: StoreURL, table: str, partition: int) -> LevelDBStore:
        if url.hosts and url.hosts not in (("localhost",), (".",), ("..",)):
            raise ConfigurationError(
                f"leveldb store URLs name a directory, not a host: use "
                f"'leveldb:///absolute/dir' or 'leveldb://./relative/dir', got {url.raw!r}"
            )
        base = url.hosts[0] if url.hosts and url.hosts[0] in (".", "..") else ""
        path = base + url.path
        if not path or path == "/":
            raise ConfigurationError(
                f"leveldb store URL needs a data directory, e.g. 'leveldb:///var/lib/app', "
                f"got {url.raw!r}"
            )
        options = options_from_strings(LevelDBOptions, url.options, f"store URL {url.raw!r}")
        return cls(path, table, partition, options)

    # -- opening -------------------------------------------------------------

    def _open(self) -> Any:
        opts = self.options
        try:
            db = plyvel.DB(
                self.path,
                create_if_missing=True,
                paranoid_checks=opts.paranoid_checks,
                write_buffer_size=opts.write_buffer_size,
                max_open_files=opts.max_open_files,
                lru_cache_size=opts.lru_cache_size,
                block_size=opts.block_size,
                bloom_filter_bits=opts.bloom_filter_bits,
                compression="snappy" if opts.compression else None,
            )
        except plyvel.IOError as exc:
            raise self._open_error(exc) from exc
        except plyvel.CorruptionError as exc:
            raise StoreCorruptedError(
                f"LevelDB store at {self.path!r} is corrupted ({exc}); delete the directory "
                "and it will be rebuilt from the changelog"
            ) from exc
        except plyvel.Error as exc:
            raise StoreError(f"cannot open LevelDB store at {self.path!r}: {exc}") from exc
        version = db.get(_VERSION_KEY)
        if version is None:
            db.put(_VERSION_KEY, _FORMAT_VERSION)
        elif version != _FORMAT_VERSION:
            db.close()
            raise StoreCorruptedError(
                f"LevelDB store at {self.path!r} has format version {version!r}, this "
                f"statestream reads {_FORMAT_VERSION!r}; delete the directory to rebuild it "
                "from the changelog"
            )
        return db

    def _open_error(self, exc: Exception) -> StoreError:
        message = str(exc)
        lowered = message.lower()
        # LevelDB names its LOCK file in many errors, so "lock" alone proves
        # nothing: only these phrases mean another handle holds the lock.
        if "permission denied" in lowered or "read-only" in lowered:
            return StorePermissionError(
                f"LevelDB store at {self.path!r} is not writable ({message}); fix the "
                "directory's permissions or choose another data directory"
            )
        if "already held by process" in lowered or "temporarily unavailable" in lowered:
            return StoreLockedError(
                f"LevelDB store at {self.path!r} is held by another process or another open "
                f"store ({message}); stop the other owner or use another data directory"
            )
        return StoreError(f"cannot open LevelDB store at {self.path!r}: {message}")

    def _read_offset(self) -> int | None:
        raw = self._db.get(_OFFSET_KEY)
        if raw is None:
            return None
        if len(raw) != _OFFSET.size:
            raise StoreCorruptedError(
                f"LevelDB store at {self.path!r} has a malformed offset record; delete the "
                "directory and it will be rebuilt from the changelog"
            )
        offset: int = _OFFSET.unpack(raw)[0]
        return offset

    def _wrap(self, exc: Exception, action: str) -> StoreError:
        if isinstance(exc, RuntimeError) and self._closed:
            return StoreClosedError(f"LevelDB store at {self.path!r} is closed")
        return StoreError(f"LevelDB {action} failed on {self.path!r}: {exc}")

    # -- the Store contract --------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self._closed:
            self._raise_closed()
        if not isinstance(key, bytes):
            check_key(key)
        try:
            # db.get on the prefixed key, not prefixed_db.get: the latter costs
            # a second Python-level call with keyword arguments per read.
            value: bytes | None = self._db.get(_DATA + key)
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "get") from exc
        return value

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self._closed:
            self._raise_closed()
        for key in keys:
            if not isinstance(key, bytes):
                check_key(key)
        get = self._db.get
        try:
            return [get(_DATA + key) for key in keys]
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "get") from exc

    def write(self, changes: Changes, offset: int | None) -> None:
        if self._closed:
            self._raise_closed()
        check_offset(offset, self._offset)
        check_mapping(changes)
        try:
            batch = self._db.write_batch(sync=self.options.sync)
            put = batch.put
            delete = batch.delete
            # Validation happens in the same loop that fills the batch: nothing
            # reaches the database before batch.write(), so a bad item still
            # leaves the store untouched.
            for key, value in changes.items():
                if not isinstance(key, bytes):
                    check_key(key)
                if value is None:
                    delete(_DATA + key)
                elif isinstance(value, bytes):
                    put(_DATA + key, value)
                else:
                    raise invalid_value(key, value)
            if offset is not None:
                put(_OFFSET_KEY, _OFFSET.pack(offset))
            batch.write()
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "write") from exc
        if offset is not None:
            self._offset = offset

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
        try:
            if reverse:
                return self._reverse(lo, hi)
            raw = self._data.iterator(start=lo, stop=hi)
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "iterate") from exc
        return self._guarded(raw)

    def _guarded(self, raw: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        # plyvel raises a bare RuntimeError when the DB closes under a live
        # iterator; turn it into the typed error callers expect.
        try:
            yield from raw
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "iterate") from exc

    def _reverse(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        # plyvel 1.5's reverse iterator skips the inclusive start key when it
        # is the greatest key in range, so the lower bound is enforced here
        # instead of being passed to LevelDB.
        stop = _DATA + hi if hi is not None else _DATA_END
        floor = _DATA + lo if lo is not None else _DATA
        try:
            for key, value in self._db.iterator(stop=stop, reverse=True):
                if key < floor:
                    return
                yield key[1:], value
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "iterate") from exc

    def offset(self) -> int | None:
        if self._closed:
            self._raise_closed()
        return self._offset

    def count(self) -> int:
        if self._closed:
            self._raise_closed()
        try:
            return sum(1 for _ in self._data.iterator(include_value=False))
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "count") from exc

    def clear(self) -> None:
        if self._closed:
            self._raise_closed()
        # Destroying and recreating the database frees the disk space at once,
        # which a range of deletes would only do after compaction.
        try:
            self._db.close()
            plyvel.destroy_db(self.path)
        except (plyvel.Error, RuntimeError) as exc:
            self._closed = True
            raise self._wrap(exc, "clear") from exc
        try:
            self._db = self._open()
        except StoreError:
            self._closed = True
            raise
        self._data = self._db.prefixed_db(_DATA)
        self._offset = None

    def _close(self) -> None:
        try:
            self._db.close()
        except (plyvel.Error, RuntimeError) as exc:
            raise StoreError(f"closing LevelDB store at {self.path!r} failed: {exc}") from exc
