"""``LevelDBStore``: local, embedded, persistent state on LevelDB (plyvel).

URL ``leveldb:///absolute/dir`` or ``leveldb://./relative/dir``, with
:class:`~statestream.config.LevelDBOptions` in the query string. Each
(table, partition) gets its own database directory ``<dir>/<table>/<partition>``,
so a partition's state can be opened, closed and handed over independently.

Layout inside one database: data keys are stored under the prefix ``b"d"`` and
metadata under ``b"m"``: the changelog offset (``b"moffset"``), the format
version (``b"mversion"``) and the store's named metadata (``b"m:" + name``). A
user key can never collide with them, and the offset and metadata ride in the
same WriteBatch as the data they describe.

Integrity: a damaged store is detected when it opens or when a read reaches
the damage, and raises :class:`~statestream.errors.StoreCorruptedError`
naming the directory and the damaged file; it is never used silently. See
:class:`LevelDBStore`.

This is the only module that imports plyvel.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import plyvel

from statestream.config import LevelDBOptions, options_from_strings
from statestream.errors import (
    ConfigurationError,
    InvalidMetadataError,
    StoreClosedError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    StorePermissionError,
)
from statestream.secrets import redact_url
from statestream.stores import leveldb_files
from statestream.stores.base import (
    Changes,
    Meta,
    Store,
    StoreURL,
    check_key,
    check_mapping,
    check_meta,
    check_meta_name,
    check_offset,
    check_partition,
    check_table_name,
    invalid_value,
    key_bounds,
)
from statestream.stores.reading import Pairs, ReadGate, StoreReader, take

__all__ = ["LevelDBStore", "store_path"]

_DATA = b"d"
_DATA_END = b"e"  # first key past every data key
_OFFSET_KEY = b"moffset"
_META = b"m:"  # + name: the store's named metadata
_VERSION_KEY = b"mversion"
_FORMAT_VERSION = b"1"
_OFFSET = struct.Struct(">q")
# File names in LevelDB's messages, e.g. "Corruption: 1 missing files; e.g.: /d/000005.ldb".
_FILE_IN_MESSAGE = re.compile(r"(\d+\.(?:ldb|sst|log)|MANIFEST-\d+|CURRENT)\b")
# I/O errors that mean a file of the store is missing or unreadable where it
# should be whole; others (too many open files, no space) are not damage.
_DAMAGE_ERRNOS = ("no such file or directory", "invalid argument", "input/output error")


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

    Integrity: damage is detected at open or at the first read that reaches
    it, and raises :class:`~statestream.errors.StoreCorruptedError` naming the
    directory and the damaged file, never wrong data; throw the store away
    with :func:`~statestream.stores.registry.destroy_store` and rebuild it.

    * Before LevelDB opens the directory, ``CURRENT`` and the ``MANIFEST`` are
      checked (:mod:`~statestream.stores.leveldb_files`): LevelDB opens some
      damage to them silently, with table files lost.
    * ``paranoid_checks`` (default on): a damaged write-ahead log record fails
      the open. Without it LevelDB drops the record's block and applies the
      batches after it, so the offset claims batches the data lacks. A log cut
      short is what a crash leaves and opens normally: the batches lost went
      with their offset.
    * ``verify_checksums`` (default on): every table block a read loads from
      disk is checked, so a damaged block raises instead of yielding wrong
      values (snappy alone catches only some damage, and values that do not
      compress are stored raw).
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
        self._verify = self.options.verify_checksums
        self._db = self._open()
        try:
            self._data: Any = self._db.prefixed_db(_DATA)
            self._offset = self._read_offset()
            self._meta = self._read_meta()
        except BaseException:
            # Release the lock now: a caller that destroys the damaged store
            # next must not find it held by this half-open one.
            self._db.close()
            raise

    @classmethod
    def from_url(cls, url: StoreURL, table: str, partition: int) -> LevelDBStore:
        data_dir, options = _parse_url(url)
        return cls(data_dir, table, partition, options)

    @classmethod
    def check_url(cls, url: StoreURL) -> None:
        """Check the URL's shape and options without opening anything."""
        _parse_url(url)

    @classmethod
    def exists(cls, url: StoreURL, table: str, partition: int) -> bool:
        """Whether the store's directory exists (nothing is created)."""
        data_dir, _ = _parse_url(url)
        return os.path.isdir(store_path(data_dir, table, partition))

    @classmethod
    def partitions(cls, url: StoreURL, table: str) -> list[int]:
        """The partitions with a store directory of ``table`` (nothing is created)."""
        check_table_name(table)
        data_dir, _ = _parse_url(url)
        try:
            names = os.listdir(os.path.join(data_dir, table))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            int(name)
            for name in names
            if name.isdigit() and os.path.isdir(store_path(data_dir, table, int(name)))
        )

    @classmethod
    def destroy(cls, url: StoreURL, table: str, partition: int) -> None:
        """Delete the store's directory, whatever state its files are in.

        LevelDB's own ``DestroyDB`` goes first: it takes the store's lock, so a
        store that is open (in this process or another) is refused with
        :class:`~statestream.errors.StoreLockedError`. Whatever it leaves (files
        that are not LevelDB's, the directory) is removed after it.
        """
        check_table_name(table)
        check_partition(partition)
        data_dir, _ = _parse_url(url)
        _destroy_path(store_path(data_dir, table, partition))

    # -- opening -------------------------------------------------------------

    def _open(self) -> Any:
        self._check_files()
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
            raise self._corrupted(exc, opening=True) from exc
        except plyvel.Error as exc:
            raise StoreError(f"cannot open LevelDB store at {self.path!r}: {exc}") from exc
        try:
            version = db.get(_VERSION_KEY, verify_checksums=self._verify)
            if version is None:
                db.put(_VERSION_KEY, _FORMAT_VERSION)
        except (plyvel.Error, RuntimeError) as exc:
            db.close()
            raise self._wrap(exc, "open") from exc
        if version is not None and version != _FORMAT_VERSION:
            db.close()
            raise StoreCorruptedError(
                f"LevelDB store at {self.path!r} has format version {version!r}, this "
                f"statestream reads {_FORMAT_VERSION!r}; destroy it "
                "(statestream.stores.registry.destroy_store) to rebuild it from the changelog"
            )
        return db

    def _check_files(self) -> None:
        try:
            problem = leveldb_files.damage(self.path)
        except PermissionError as exc:
            raise StorePermissionError(
                f"LevelDB store at {self.path!r} is not readable ({exc}); fix the "
                "directory's permissions or choose another data directory"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot read LevelDB store at {self.path!r}: {exc}") from exc
        if problem is not None:
            raise self._damaged(problem)

    def _damaged(self, what: str) -> StoreCorruptedError:
        return StoreCorruptedError(
            f"LevelDB store at {self.path!r} is damaged: {what}. It cannot be used: destroy "
            "it (statestream.stores.registry.destroy_store) and rebuild it from the changelog"
        )

    def _corrupted(self, exc: Exception, opening: bool) -> StoreCorruptedError:
        """The error for damage LevelDB reported, naming the damaged file where possible."""
        message = str(exc)
        try:
            names = os.listdir(self.path)
        except OSError:
            names = []
        named = dict.fromkeys(_FILE_IN_MESSAGE.findall(message))
        if named:
            what = ", ".join(_describe(name) for name in named)
        elif "descriptor" in message or "VersionEdit" in message:
            what = "the MANIFEST"
        elif opening:
            # The MANIFEST passed its check before the open: what LevelDB
            # replays then is the write-ahead log.
            logs = leveldb_files.log_files(names)
            what = f"the write-ahead log ({', '.join(logs) or 'none left'})"
        else:
            tables = leveldb_files.table_files(names)
            what = f"a block of a table file (one of {', '.join(tables[:5]) or 'none left'})"
        return self._damaged(f"{what} ({message})")

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
        if _is_damage(message, self.path):
            return self._corrupted(exc, opening=True)
        return StoreError(f"cannot open LevelDB store at {self.path!r}: {message}")

    def _read_offset(self) -> int | None:
        try:
            raw = self._db.get(_OFFSET_KEY, verify_checksums=self._verify)
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "open") from exc
        if raw is None:
            return None
        if len(raw) != _OFFSET.size:
            raise self._damaged(f"its offset record is malformed ({raw!r:.40})")
        offset: int = _OFFSET.unpack(raw)[0]
        return offset

    def _read_meta(self) -> dict[str, bytes]:
        meta: dict[str, bytes] = {}
        try:
            for key, value in self._db.iterator(prefix=_META, verify_checksums=self._verify):
                name = key[len(_META) :].decode("ascii", "replace")
                try:
                    check_meta_name(name)
                except InvalidMetadataError:
                    raise self._damaged(f"a metadata record is malformed ({key!r:.60})") from None
                meta[name] = value
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "open") from exc
        return meta

    def _wrap(self, exc: Exception, action: str) -> StoreError:
        if isinstance(exc, RuntimeError) and self._closed:
            return StoreClosedError(f"LevelDB store at {self.path!r} is closed")
        # Damage found by a read (or by a compaction, which then fails every
        # write) is a typed error, so callers can tell it from other failures.
        if isinstance(exc, plyvel.CorruptionError) or (
            isinstance(exc, plyvel.IOError) and _is_damage(str(exc), self.path)
        ):
            return self._corrupted(exc, opening=False)
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
            value: bytes | None = self._db.get(_DATA + key, verify_checksums=self._verify)
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
        verify = self._verify
        try:
            return [get(_DATA + key, verify_checksums=verify) for key in keys]
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "get") from exc

    def write(  # noqa: PLR0912 - one pass validates and fills the batch: the hot path
        self, changes: Changes, offset: int | None, meta: Meta | None = None
    ) -> None:
        if self._closed:
            self._raise_closed()
        check_offset(offset, self._offset)
        check_mapping(changes)
        if meta is not None:
            check_meta(meta)
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
            if meta:
                for name, data in meta.items():
                    put(_META + name.encode("ascii"), data)
            batch.write()
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "write") from exc
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
        try:
            if reverse:
                return self._reverse(lo, hi)
            raw = self._data.iterator(start=lo, stop=hi, verify_checksums=self._verify)
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
            pairs = self._db.iterator(stop=stop, reverse=True, verify_checksums=self._verify)
            for key, value in pairs:
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
            keys = self._data.iterator(include_value=False, verify_checksums=self._verify)
            return sum(1 for _ in keys)
        except (plyvel.Error, RuntimeError) as exc:
            raise self._wrap(exc, "count") from exc

    def clear(self) -> None:
        if self._closed:
            self._raise_closed()
        gate = self._gate
        if gate is None:
            self._recreate()
        else:
            with gate.exclusive():  # no read may use the handle being closed
                self._recreate()

    def _recreate(self) -> None:
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
        self._meta = {}

    def _reader(self, gate: ReadGate) -> StoreReader:
        return _LevelDBReader(self, gate)

    def _close(self) -> None:
        try:
            self._db.close()
        except (plyvel.Error, RuntimeError) as exc:
            raise StoreError(f"closing LevelDB store at {self.path!r} failed: {exc}") from exc


def _describe(name: str) -> str:
    if name.endswith(".log"):
        return f"write-ahead log {name}"
    if name.endswith((".ldb", ".sst")):
        return f"table file {name}"
    return name


def _is_damage(message: str, path: str) -> bool:
    """Whether a LevelDB I/O error says a file of the store at ``path`` is missing or unreadable."""
    lowered = message.lower()
    return path in message and any(text in lowered for text in _DAMAGE_ERRNOS)


def _parse_url(url: StoreURL) -> tuple[str, LevelDBOptions]:
    """Return the data directory and the options of a ``leveldb://`` URL."""
    if url.hosts and url.hosts not in (("localhost",), (".",), ("..",)):
        raise ConfigurationError(
            f"leveldb store URLs name a directory, not a host: use "
            f"'leveldb:///absolute/dir' or 'leveldb://./relative/dir', got {redact_url(url.raw)!r}"
        )
    base = url.hosts[0] if url.hosts and url.hosts[0] in (".", "..") else ""
    path = base + url.path
    if not path or path == "/":
        raise ConfigurationError(
            f"leveldb store URL needs a data directory, e.g. 'leveldb:///var/lib/app', "
            f"got {redact_url(url.raw)!r}"
        )
    options = options_from_strings(LevelDBOptions, url.options, f"store URL {url.raw!r}")
    return path, options


def _destroy_path(path: str) -> None:
    if not os.path.lexists(path):
        return
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                plyvel.destroy_db(path)
            except plyvel.Error as exc:
                message = str(exc)
                lowered = message.lower()
                if "already held by process" in lowered or "temporarily unavailable" in lowered:
                    raise StoreLockedError(
                        f"cannot destroy the LevelDB store at {path!r}: it is open in this or "
                        f"another process ({message}); close it first"
                    ) from exc
                raise StoreError(
                    f"cannot destroy the LevelDB store at {path!r}: {message}"
                ) from exc
            if os.path.lexists(path):
                shutil.rmtree(path)
        else:
            os.remove(path)
    except PermissionError as exc:
        raise StorePermissionError(
            f"cannot destroy the LevelDB store at {path!r}: permission denied ({exc}); fix "
            "the permissions of the data directory"
        ) from exc
    except OSError as exc:
        raise StoreError(f"cannot destroy the LevelDB store at {path!r}: {exc}") from exc


class _LevelDBReader(StoreReader):
    """Reads of a LevelDB store from other threads: LevelDB serves concurrent
    reads, and a batch is applied atomically; a scan reads one snapshot."""

    def __init__(self, store: LevelDBStore, gate: ReadGate) -> None:
        super().__init__(gate)
        self._store = store

    def _get(self, key: bytes) -> bytes | None:
        check_key(key)
        store = self._store
        try:
            value: bytes | None = store._db.get(_DATA + key, verify_checksums=store._verify)
        except (plyvel.Error, RuntimeError) as exc:
            raise store._wrap(exc, "get") from exc
        return value

    def _scan(self, lo: bytes | None, hi: bytes | None, reverse: bool, limit: int | None) -> Pairs:
        store = self._store
        floor = _DATA + lo if lo is not None else _DATA
        stop = _DATA + hi if hi is not None else _DATA_END
        try:
            with store._db.snapshot() as snapshot:
                if reverse:
                    # As LevelDBStore._reverse: the lower bound is checked here.
                    raw = snapshot.iterator(stop=stop, reverse=True, verify_checksums=store._verify)
                    pairs = _until_below(raw, floor)
                else:
                    raw = snapshot.iterator(start=floor, stop=stop, verify_checksums=store._verify)
                    pairs = ((k[1:], v) for k, v in raw)
                return take(pairs, limit)
        except (plyvel.Error, RuntimeError) as exc:
            raise store._wrap(exc, "scan") from exc

    def _offset(self) -> int | None:
        store = self._store
        try:
            raw = store._db.get(_OFFSET_KEY)
        except (plyvel.Error, RuntimeError) as exc:
            raise store._wrap(exc, "get") from exc
        return None if raw is None else int(_OFFSET.unpack(raw)[0])

    def _lookup(self, key: bytes) -> tuple[bytes | None, int | None]:
        check_key(key)
        store = self._store
        try:
            with store._db.snapshot() as snapshot:
                value: bytes | None = snapshot.get(_DATA + key, verify_checksums=store._verify)
                raw = snapshot.get(_OFFSET_KEY)
        except (plyvel.Error, RuntimeError) as exc:
            raise store._wrap(exc, "get") from exc
        return value, None if raw is None else int(_OFFSET.unpack(raw)[0])


def _until_below(raw: Iterator[tuple[bytes, bytes]], floor: bytes) -> Iterator[tuple[bytes, bytes]]:
    for key, value in raw:
        if key < floor:
            return
        yield key[1:], value
