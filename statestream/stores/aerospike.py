"""``AerospikeStore``: remote, shared state on an Aerospike cluster.

URL ``aerospike://host1:3000,host2:3000/namespace`` with
:class:`~statestream.config.AerospikeOptions` in the query string, e.g.
``aerospike://db1:3000,db2:3000/state?set_prefix=orders.&ttl=86400``. A host
without a port uses 3000; IPv6 addresses go in brackets (``[::1]:3000``).

Layout: one set per table, named ``set_prefix + table``. The partitions of a
table share its set, and a record's user key is
``<partition, 4 bytes big-endian><kind, 1 byte><store key>``, so keys of
different partitions, and the offset records, can never collide. Data records
(kind ``d``) keep the value in bin ``v`` and the partition number in bin
``p``, which the partition's queries filter on; the offset record of a
partition (kind ``o``) keeps the changelog offset in bin ``o`` and the
store's metadata in map bin ``m`` (name -> bytes), and has no ``p`` bin, so
no query sees it. User keys are sent to the server
(``POLICY_KEY_SEND``): without them the server keeps only a digest and a query
could not give keys back.

Clients: one client per process and connection settings, shared by every
store through a :class:`ClientPool` and closed when the last of its stores
closes.

This is the only module that imports aerospike.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, ClassVar

import aerospike
from aerospike import exception as as_exc
from aerospike_helpers import expressions as exp
from aerospike_helpers.batch.records import BatchRecords, Remove, Write
from aerospike_helpers.operations import operations as ops

from statestream.config import AerospikeOptions, options_from_strings
from statestream.errors import (
    ConfigurationError,
    InvalidMetadataError,
    NamespaceNotFoundError,
    RecordTooLargeError,
    StoreConnectionError,
    StoreCorruptedError,
    StoreError,
    StoreTimeoutError,
    StoreWriteRejectedError,
)
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

__all__ = ["AerospikeStore", "ClientLease", "ClientPool", "client_config", "parse_hosts"]

#: Makes an Aerospike client from a client config; ``aerospike.client`` connects at once.
ClientFactory = Callable[[dict[str, Any]], Any]

_PARTITION = struct.Struct(">I")
_DATA = b"d"
_OFFSET = b"o"
# Bin names: the server allows at most 15 bytes.
_VALUE_BIN = "v"
_PARTITION_BIN = "p"
_OFFSET_BIN = "o"
_META_BIN = "m"
# Keys per batch call, below the servers' batch size limits.
_BATCH_LIMIT = 5000
_DEFAULT_PORT = 3000
_NAME = re.compile(r"[A-Za-z0-9._\-]+")
_MAX_SET_NAME = 63
_MAX_NAMESPACE = 31

# Result codes of the Aerospike client and server.
_OK = 0
_NOT_FOUND = 2
_BATCH_FAILED = -16
_TIMEOUT_CODES = frozenset({9, -12, 212})  # timeout, max retries exceeded, query timeout
_CONNECTION_CODES = frozenset({-10, -9, -8, -7, -4, -15, 11})
_SECURITY_CODES = range(50, 90)
_TOO_BIG = 13
_NAMESPACE_NOT_FOUND = 20
_FORBIDDEN_CODES = frozenset({10, 22})


def parse_hosts(hosts: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Parse ``host[:port]`` strings (IPv6 in brackets) into ``(address, port)`` pairs."""
    if not hosts:
        raise ConfigurationError(
            "aerospike store URL needs at least one host, e.g. 'aerospike://db1:3000/namespace'"
        )
    parsed = []
    for text in hosts:
        if "@" in text:
            # Only the host: what comes before the '@' holds the password.
            raise ConfigurationError(
                f"aerospike host {text.rpartition('@')[2]!r}: pass credentials as "
                "?user=...&password=..., not in the host list"
            )
        address, port = text, str(_DEFAULT_PORT)
        if text.startswith("["):
            address, _, rest = text[1:].partition("]")
            if rest:
                port = rest.removeprefix(":")
        elif text.count(":") == 1:
            address, port = text.split(":")
        if not address or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"aerospike host {text!r} is not 'address[:port]' with a port from 1 to 65535"
            )
        parsed.append((address, int(port)))
    return tuple(parsed)


def client_config(hosts: Sequence[tuple[str, int]], options: AerospikeOptions) -> dict[str, Any]:
    """Return the ``aerospike.client`` config for ``hosts`` and the connection options.

    Stores whose configs are equal share one client (see :class:`ClientPool`).
    """
    config: dict[str, Any] = {
        "hosts": [(a, p, options.tls_name) if options.tls_name else (a, p) for a, p in hosts],
        "connect_timeout": options.connect_timeout,
        "validate_keys": True,  # a misspelt policy key fails loudly instead of being ignored
    }
    if options.user is not None:
        config["user"] = options.user
        config["password"] = options.password or ""
    if options.tls_name is not None:
        config["tls"] = {"enable": True}
        if options.tls_cafile is not None:
            config["tls"]["cafile"] = options.tls_cafile
    return config


def _check_name(kind: str, name: str, limit: int, fix: str) -> str:
    if len(name) > limit or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"Aerospike {kind} {name!r} is not 1-{limit} letters, digits, '.', '_' or '-' "
            f"({len(name)} characters); {fix}"
        )
    return name


def _freeze(value: Any) -> Hashable:
    # Client configs are nested dicts and lists; a frozen copy keys the pool.
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    result: Hashable = value
    return result


class ClientLease:
    """One store's use of a pooled client; :meth:`release` gives it back (idempotent).

    Thread ownership: the thread that owns the store holding the lease.
    """

    def __init__(self, pool: ClientPool, key: Hashable, client: Any) -> None:
        self.client = client
        self._pool = pool
        self._key = key
        self._released = False

    def release(self) -> None:
        """Give the client back; the pool closes it when its last lease is released."""
        if not self._released:
            self._released = True
            self._pool._release(self._key, self.client)


class ClientPool:
    """Shares one Aerospike client per connection settings among stores.

    A client is heavy (a cluster-tending thread, connection pools per node)
    and thread-safe, so every store with the same settings uses the same one;
    it is reference-counted and closed when its last lease is released.
    Clients do not survive ``fork()``: a child process starts with an empty
    pool and leaves the parent's clients alone.

    Thread-safe: partition threads open and close stores concurrently.
    ``acquire`` holds the pool's lock while a new client connects (at most the
    ``connect_timeout``), so two stores never connect twice.
    """

    _shared: ClassVar[ClientPool | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, connect: ClientFactory | None = None) -> None:
        self._connect: ClientFactory = connect or aerospike.client
        self._lock = threading.Lock()
        self._clients: dict[Hashable, tuple[Any, int]] = {}
        self._pid = os.getpid()

    @classmethod
    def shared(cls) -> ClientPool:
        """The process-wide pool used when a store is given none.

        This is a class-level registry on purpose: stores opened by URL
        (``open_store``) have no object through which to share a client, and
        the point is one client per process. It holds no client while no
        store is open. Pass a pool to the store to bypass it.
        """
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def acquire(self, config: Mapping[str, Any]) -> ClientLease:
        """Return a lease on the client for ``config``, connecting one if needed.

        Raises the client's own exception if it cannot connect.
        """
        key = _freeze(config)
        with self._lock:
            if self._pid != os.getpid():
                self._clients.clear()
                self._pid = os.getpid()
            client, count = self._clients.get(key, (None, 0))
            if client is None:
                client = self._connect(dict(config))
            self._clients[key] = (client, count + 1)
        return ClientLease(self, key, client)

    def open_clients(self) -> int:
        """Return how many clients are open (one per distinct connection settings)."""
        with self._lock:
            return len(self._clients)

    def _release(self, key: Hashable, client: Any) -> None:
        with self._lock:
            current, count = self._clients.get(key, (None, 0))
            if current is not client:
                return  # a client from before a fork(), already forgotten
            if count > 1:
                self._clients[key] = (client, count - 1)
                return
            del self._clients[key]
        try:
            client.close()
        except as_exc.AerospikeError as exc:
            raise StoreError(f"closing the Aerospike client failed: {exc}") from exc


class AerospikeStore(Store):
    """State of one table partition in an Aerospike set, shared by every worker.

    A remote store needs no standby and no full restore: the state lives in the
    cluster, not on the worker. :meth:`offset` is the partition's offset
    record, read when the store opens and kept current by :meth:`write` and
    :meth:`clear`, so a new owner of the partition replays only the changelog
    past it.

    Atomicity: Aerospike has no multi-record transactions here, so
    :meth:`write` writes the data first (batched, checking every record's
    result) and the offset record only after all of it succeeded. The recorded
    offset therefore never runs ahead of the data, and replaying the changelog
    from it (puts of whole values and deletes, idempotent) is always safe. A
    failed write may leave part of its batch applied; the offset stays put.
    Metadata lives in the offset record and is written in the same ``put`` as
    the offset, so offset and metadata always move together.

    Cost: Aerospike cannot read a set in key order. :meth:`iterate`,
    :meth:`count` and :meth:`clear` scan the table's set with a query filtered
    to this partition on the server, and :meth:`iterate` sorts in memory:
    O(records of the partition) each, not for hot paths.

    TTL (option ``ttl``): data records expire; the offset record (with the
    metadata) never does.
    The namespace must have ``nsup-period`` (or ``allow-ttl-without-nsup``)
    set, or every write is rejected with
    :class:`~statestream.errors.StoreWriteRejectedError`.

    Thread ownership: the owning partition thread only (the shared client is
    thread-safe). Iterators hold the records read when ``iterate`` was called.
    """

    scheme: ClassVar[str] = "aerospike"
    persistent: ClassVar[bool] = True
    shared: ClassVar[bool] = True

    def __init__(
        self,
        hosts: Sequence[tuple[str, int]],
        namespace: str,
        table: str,
        partition: int,
        options: AerospikeOptions | None = None,
        *,
        pool: ClientPool | None = None,
    ) -> None:
        self._connect(hosts, namespace, table, partition, options, pool)
        try:
            offset, meta = self._read_offset_record()
        except BaseException:
            self._lease.release()
            raise
        self._offset: int | None = offset
        self._meta: dict[str, bytes] = meta

    def _connect(
        self,
        hosts: Sequence[tuple[str, int]],
        namespace: str,
        table: str,
        partition: int,
        options: AerospikeOptions | None,
        pool: ClientPool | None,
    ) -> None:
        """Check the settings and lease a client: all of opening but reading the state."""
        super().__init__(table, partition)
        if partition > 0xFFFFFFFF:
            raise ConfigurationError(f"partition must be < 2**32, got {partition}")
        if not hosts:
            raise ConfigurationError("an Aerospike store needs at least one host")
        self.options = options or AerospikeOptions()
        self.hosts = tuple((str(address), int(port)) for address, port in hosts)
        self.namespace = _check_name(
            "namespace", namespace, _MAX_NAMESPACE, "fix the namespace in the store URL"
        )
        self.set_name = _check_name(
            "set name",
            self.options.set_prefix + table,
            _MAX_SET_NAME,
            "the set is named set_prefix + table name: shorten the table name or set_prefix",
        )
        self._prefix = _PARTITION.pack(partition)
        self._offset_key = self._record_key(_OFFSET)
        self._policies = _Policies(self.options, partition)
        self._errors = _Errors(self)
        self._pool = pool or ClientPool.shared()
        try:
            self._lease = self._pool.acquire(client_config(self.hosts, self.options))
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "connect") from exc
        self._client: Any = self._lease.client

    @classmethod
    def from_url(cls, url: StoreURL, table: str, partition: int) -> AerospikeStore:
        hosts, namespace, options = _parse_url(url)
        return cls(hosts, namespace, table, partition, options)

    @classmethod
    def check_url(cls, url: StoreURL) -> None:
        """Check the URL's shape and options without opening anything."""
        _parse_url(url)

    @classmethod
    def destroy(cls, url: StoreURL, table: str, partition: int) -> None:
        """Remove the partition's records and its offset record (see :meth:`destroy_partition`)."""
        check_table_name(table)
        check_partition(partition)
        hosts, namespace, options = _parse_url(url)
        cls.destroy_partition(hosts, namespace, table, partition, options)

    @classmethod
    def destroy_partition(
        cls,
        hosts: Sequence[tuple[str, int]],
        namespace: str,
        table: str,
        partition: int,
        options: AerospikeOptions | None = None,
        *,
        pool: ClientPool | None = None,
    ) -> None:
        """Remove every record of ``table``/``partition``: its data, then its offset record.

        Unlike opening the store and calling :meth:`clear`, this never reads
        the offset record, so it also works when that record is malformed.
        Other partitions of the table (the rest of its set) are left alone:
        truncating the set would remove them too. Costs a scan of the set,
        filtered to the partition on the server.
        """
        store = cls.__new__(cls)
        store._connect(hosts, namespace, table, partition, options, pool)
        try:
            store._remove_all()
        finally:
            store.close()

    # -- mapping -------------------------------------------------------------

    def _record_key(self, kind: bytes, key: bytes = b"") -> tuple[str, str, bytearray]:
        # bytearray, not bytes: the client refuses bytes user keys (older
        # clients took them as NUL-terminated strings).
        return (self.namespace, self.set_name, bytearray(self._prefix + kind + key))

    def _value(self, bins: Mapping[str, Any] | None, key: bytes) -> bytes:
        value = (bins or {}).get(_VALUE_BIN)
        if not isinstance(value, bytes | bytearray):
            raise StoreCorruptedError(
                f"Aerospike record of key {key!r:.60} in set {self.set_name!r} has no bytes "
                f"value bin {_VALUE_BIN!r}; another program writes to this set: give "
                "statestream its own set_prefix"
            )
        return value if isinstance(value, bytes) else bytes(value)

    def _read_offset_record(self) -> tuple[int | None, dict[str, bytes]]:
        """Return the offset and the metadata of the partition's offset record."""
        try:
            _, _, bins = self._client.get(self._offset_key, policy=self._policies.read)
        except as_exc.RecordNotFound:
            return None, {}
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "read the offset record") from exc
        bins = bins or {}
        offset = bins.get(_OFFSET_BIN)
        raw_meta = bins.get(_META_BIN, {})
        # A record written with metadata before any offset has no offset bin.
        valid = offset is None or (
            isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0
        )
        meta: dict[str, bytes] = {}
        if isinstance(raw_meta, Mapping):
            for name, value in raw_meta.items():
                if not _is_meta_name(name) or not isinstance(value, bytes | bytearray):
                    valid = False
                    break
                meta[name] = bytes(value)
        else:
            valid = False
        if not valid:
            raise StoreCorruptedError(
                f"the offset record of table {self.table!r} partition {self.partition} in "
                f"set {self.set_name!r} is malformed ({bins!r:.80}); destroy the store "
                "(statestream.stores.registry.destroy_store) and it is rebuilt from the "
                "changelog"
            )
        return offset, meta

    # -- the Store contract --------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self._closed:
            self._raise_closed()
        if not isinstance(key, bytes):
            check_key(key)
        try:
            _, _, bins = self._client.get(self._record_key(_DATA, key), policy=self._policies.read)
        except as_exc.RecordNotFound:
            return None
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "get", key) from exc
        return self._value(bins, key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self._closed:
            self._raise_closed()
        for key in keys:
            check_key(key)
        values: list[bytes | None] = []
        for start in range(0, len(keys), _BATCH_LIMIT):
            chunk = keys[start : start + _BATCH_LIMIT]
            record_keys = [self._record_key(_DATA, key) for key in chunk]
            try:
                batch = self._client.batch_read(
                    record_keys, bins=[_VALUE_BIN], policy=self._policies.batch
                )
            except as_exc.AerospikeError as exc:
                raise self._errors.wrap(exc, "batch read") from exc
            self._errors.check_batch(batch, chunk, "batch read")
            for record, key in zip(batch.batch_records, chunk, strict=True):
                found = record.result == _OK and record.record is not None
                values.append(self._value(record.record[2], key) if found else None)
        return values

    def write(self, changes: Changes, offset: int | None, meta: Meta | None = None) -> None:
        if self._closed:
            self._raise_closed()
        check_offset(offset, self._offset)
        if meta is not None:
            check_meta(meta)
        check_changes(changes)
        items = list(changes.items())
        for start in range(0, len(items), _BATCH_LIMIT):
            self._write_batch(items[start : start + _BATCH_LIMIT])
        if offset is None and not meta:
            return
        # Only after all the data succeeded: the offset never runs ahead of it.
        # One put holds offset and metadata, so they move together; a bin left
        # out of the put keeps its value on the server.
        bins: dict[str, Any] = {}
        if offset is not None:
            bins[_OFFSET_BIN] = offset
        merged = self._meta
        if meta:
            merged = {**self._meta, **meta}
            bins[_META_BIN] = dict(merged)
        try:
            self._client.put(self._offset_key, bins, policy=self._policies.offset_write)
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "write the offset record") from exc
        if offset is not None:
            self._offset = offset
        self._meta = merged

    def meta(self, name: str) -> bytes | None:
        if self._closed:
            self._raise_closed()
        check_meta_name(name)
        return self._meta.get(name)

    def _write_batch(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        policies = self._policies
        records = [
            Remove(self._record_key(_DATA, key), policy=policies.record_remove)
            if value is None
            else Write(
                self._record_key(_DATA, key),
                [ops.write(_VALUE_BIN, value), ops.write(_PARTITION_BIN, self.partition)],
                policy=policies.record_write,
            )
            for key, value in items
        ]
        batch = BatchRecords(records)
        try:
            self._client.batch_write(batch, policy_batch=policies.batch)
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "batch write") from exc
        # A Remove of a missing key reports "not found": deleting it is still done.
        self._errors.check_batch(
            batch, [key for key, _ in items], "batch write", [value for _, value in items]
        )

    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` pairs in key order within the given bounds.

        Costs a scan: the partition's records are read with one query over the
        table's set (filtered to the partition on the server) and sorted in
        memory, whatever the bounds.
        """
        if self._closed:
            self._raise_closed()
        bounds = key_bounds(start, end, prefix)
        if bounds is None:
            return iter(())
        lo, hi = bounds
        pairs = [
            (key, value)
            for key, value in self._scan(with_values=True)
            if (lo is None or key >= lo) and (hi is None or key < hi)
        ]
        pairs.sort(key=itemgetter(0), reverse=reverse)
        return self._guarded(pairs)

    def _guarded(self, pairs: list[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        for pair in pairs:
            if self._closed:
                self._raise_closed()
            yield pair
        if self._closed:
            self._raise_closed()

    def _scan(self, with_values: bool) -> list[tuple[bytes, bytes]]:
        """Read this partition's data records: ``(key, value)``, values ``b""`` without values."""
        query = self._client.query(self.namespace, self.set_name)
        if with_values:
            query.select(_VALUE_BIN)
        try:
            records = query.results(self._policies.query, {"nobins": not with_values})
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "query") from exc
        data_prefix = self._prefix + _DATA
        cut = len(data_prefix)
        pairs = []
        for record_key, _, bins in records:
            user_key = record_key[2]
            if user_key is None:
                raise StoreCorruptedError(
                    f"a record in Aerospike set {self.set_name!r} has no stored key (written "
                    "without POLICY_KEY_SEND by another program?); give statestream its own "
                    "set_prefix"
                )
            if not isinstance(user_key, bytes | bytearray):
                continue  # not a statestream record
            raw = bytes(user_key)
            # The server filter already keeps to this partition; the prefix check
            # keeps partitions apart even if another program wrote a "p" bin.
            if raw.startswith(data_prefix):
                key = raw[cut:]
                pairs.append((key, self._value(bins, key) if with_values else b""))
        return pairs

    def offset(self) -> int | None:
        if self._closed:
            self._raise_closed()
        return self._offset

    def count(self) -> int:
        """Return the number of keys; costs a scan (a key-only query of the partition)."""
        if self._closed:
            self._raise_closed()
        return len(self._scan(with_values=False))

    def clear(self) -> None:
        """Remove the partition's keys, then its offset record (and metadata); costs a scan.

        The offset record goes last: if ``clear`` is interrupted, the old
        offset is still there and recovery decides again to clear.
        """
        if self._closed:
            self._raise_closed()
        self._remove_all()

    def _remove_all(self) -> None:
        keys = [key for key, _ in self._scan(with_values=False)]
        for start in range(0, len(keys), _BATCH_LIMIT):
            chunk = keys[start : start + _BATCH_LIMIT]
            try:
                batch = self._client.batch_remove(
                    [self._record_key(_DATA, key) for key in chunk],
                    policy_batch=self._policies.batch,
                    policy_batch_remove=self._policies.record_remove,
                )
            except as_exc.AerospikeError as exc:
                raise self._errors.wrap(exc, "clear") from exc
            self._errors.check_batch(batch, chunk, "clear")
        try:
            self._client.remove(self._offset_key, policy=self._policies.remove)
        except as_exc.RecordNotFound:
            pass
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "remove the offset record") from exc
        self._offset = None
        self._meta = {}

    def _close(self) -> None:
        self._lease.release()


def _parse_url(url: StoreURL) -> tuple[tuple[tuple[str, int], ...], str, AerospikeOptions]:
    """Return the hosts, the namespace and the options of an ``aerospike://`` URL."""
    namespace = url.path.strip("/")
    if not namespace or "/" in namespace:
        raise ConfigurationError(
            f"aerospike store URL needs one namespace as its path, e.g. "
            f"'aerospike://db1:3000/namespace', got {redact_url(url.raw)!r}"
        )
    options = options_from_strings(
        AerospikeOptions, url.options, f"store URL {redact_url(url.raw)!r}"
    )
    return parse_hosts(url.hosts), namespace, options


def _is_meta_name(name: object) -> bool:
    try:
        check_meta_name(name)
    except InvalidMetadataError:
        return False
    return True


class _Errors:
    """Turns the client's exceptions and result codes into statestream errors.

    Messages name the table, partition and key (where there is one), and say
    what to do. Immutable once built; used by the thread that owns its store.
    """

    def __init__(self, store: AerospikeStore) -> None:
        self._where = f"table {store.table!r} partition {store.partition}"
        self._hosts = ", ".join(f"{address}:{port}" for address, port in store.hosts)
        self._namespace = store.namespace
        self._options = store.options

    def wrap(self, exc: as_exc.AerospikeError, action: str, key: bytes | None = None) -> StoreError:
        """Return the statestream error for ``exc`` (raise it ``from exc``)."""
        return self.for_code(exc.code, exc.msg or str(exc), action, key)

    def check_batch(
        self,
        batch: Any,
        keys: Sequence[bytes],
        action: str,
        values: Sequence[bytes | None] | None = None,
    ) -> None:
        """Raise for the first failed record of ``batch`` ("not found" is not a failure)."""
        # The batch's own result can be 0 while records failed: check each one.
        for n, (record, key) in enumerate(zip(batch.batch_records, keys, strict=True)):
            if record.result not in (_OK, _NOT_FOUND):
                value = values[n] if values is not None else None
                size = None if value is None else len(value)
                detail = record.message or "the record failed"
                raise self.for_code(record.result, detail, action, key, size)
        if batch.result not in (_OK, _NOT_FOUND, _BATCH_FAILED):
            raise self.for_code(batch.result, "the batch failed", action)

    def for_code(
        self,
        code: int | None,
        detail: str,
        action: str,
        key: bytes | None = None,
        size: int | None = None,
    ) -> StoreError:
        """Return the statestream error for an Aerospike result code."""
        where = self._where
        if key is not None:
            where += f" key {key!r:.60}"
        if size is not None:
            where += f" (value of {size} bytes)"
        cause = f"{detail} (Aerospike code {code})"
        opts = self._options
        if code in _TIMEOUT_CODES:
            return StoreTimeoutError(
                f"Aerospike {action} for {where} timed out: {cause}; limits were "
                f"total_timeout={opts.total_timeout} ms (queries: query_timeout="
                f"{opts.query_timeout} ms) with max_retries={opts.max_retries}. Check the "
                "cluster and the network, or raise the timeout in the store URL"
            )
        if code in _CONNECTION_CODES or (code is not None and code in _SECURITY_CODES):
            return StoreConnectionError(
                f"Aerospike {action} for {where} failed: cannot use the cluster at "
                f"{self._hosts}: {cause}. Check that the hosts are reachable and the user, "
                "password and TLS settings in the store URL"
            )
        if code == _TOO_BIG:
            return RecordTooLargeError(
                f"Aerospike {action} for {where} failed: the record is larger than namespace "
                f"{self._namespace!r} allows ({cause}); keep values smaller or raise the "
                "namespace's max-record-size"
            )
        if code == _NAMESPACE_NOT_FOUND:
            return NamespaceNotFoundError(
                f"Aerospike {action} for {where} failed: the cluster at {self._hosts} has no "
                f"namespace {self._namespace!r} ({cause}); fix the namespace in the store URL "
                "or add it to the cluster's configuration"
            )
        if code in _FORBIDDEN_CODES:
            hint = "check the namespace's and set's stop-writes limits"
            if opts.ttl > 0:
                hint = (
                    f"records are written with ttl={opts.ttl}: namespace {self._namespace!r} "
                    "needs nsup-period (or allow-ttl-without-nsup) set, or drop ttl from the "
                    "store URL"
                )
            return StoreWriteRejectedError(
                f"Aerospike {action} for {where} was refused: {cause}; {hint}"
            )
        return StoreError(f"Aerospike {action} for {where} failed: {cause}")


class _Policies:
    """The per-call policy dicts of one store, built once from its options."""

    def __init__(self, options: AerospikeOptions, partition: int) -> None:
        timeouts = {
            "total_timeout": options.total_timeout,
            "socket_timeout": options.socket_timeout,
            "max_retries": options.max_retries,
        }
        deletes = {"durable_delete": True} if options.durable_delete else {}
        record_ttl = {"ttl": aerospike.TTL_NEVER_EXPIRE if options.ttl == -1 else options.ttl}
        self.read: dict[str, Any] = dict(timeouts)
        self.batch: dict[str, Any] = dict(timeouts)
        self.remove: dict[str, Any] = {**timeouts, **deletes}
        self.record_remove: dict[str, Any] = dict(deletes)
        self.record_write: dict[str, Any] = {
            "key": aerospike.POLICY_KEY_SEND,
            **(record_ttl if options.ttl else {}),
        }
        # The offset record never expires, whatever the data's TTL.
        self.offset_write: dict[str, Any] = {
            **timeouts,
            "key": aerospike.POLICY_KEY_SEND,
            "ttl": aerospike.TTL_NEVER_EXPIRE,
        }
        self.query: dict[str, Any] = {
            "total_timeout": options.query_timeout,
            "socket_timeout": options.socket_timeout,
            "max_retries": options.max_retries,
            "expressions": exp.Eq(exp.IntBin(_PARTITION_BIN), partition).compile(),
        }
