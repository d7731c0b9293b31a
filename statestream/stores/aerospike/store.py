"""``AerospikeStore``: the state of one table partition in an Aerospike set.

See the package docstring for the layout. The parts with an idea of their
own live next to this module: record keys and bins (``layout``), clients and
their pool (``clients``), policies (``policies``), errors (``failures``),
batch sizing (``batching``), the offset record (``offsets``), key-ordered
iteration in bounded memory (``iteration``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import aerospike
from aerospike import exception as as_exc
from aerospike_helpers.batch.records import BatchRecords, Remove, Write

from statestream.config import AerospikeOptions, options_from_strings
from statestream.errors import ConfigurationError, RecordTooLargeError, StoreCorruptedError
from statestream.secrets import redact_url
from statestream.stores.aerospike import batching
from statestream.stores.aerospike.clients import ClientPool, client_config, parse_hosts
from statestream.stores.aerospike.failures import OK, Failures
from statestream.stores.aerospike.iteration import SortedRuns
from statestream.stores.aerospike.layout import (
    DATA,
    OFFSET,
    PARTITION,
    PARTITION_BIN,
    RANK_BIN,
    RANK_PAD,
    VALUE_BIN,
    key_rank,
)
from statestream.stores.aerospike.offsets import OffsetRecord
from statestream.stores.aerospike.policies import Policies
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

__all__ = ["AerospikeStore"]

#: Most records per page of a query: a page is what a query holds at once.
QUERY_PAGE = 5000
#: Records of the first page with values (later ones follow the values' size).
_FIRST_PAGE = 100
_MIN_PAGE = 10
_NAME = re.compile(r"[A-Za-z0-9._\-]+")
_MAX_SET_NAME = 63
_MAX_NAMESPACE = 31
_WRITE_OP = aerospike.OPERATOR_WRITE


def _check_name(kind: str, name: str, limit: int, fix: str) -> str:
    if len(name) > limit or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"Aerospike {kind} {name!r} is not 1-{limit} letters, digits, '.', '_' or '-' "
            f"({len(name)} characters); {fix}"
        )
    return name


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
    Metadata lives in the offset record and is written in the same operation
    as the offset, so offset and metadata always move together. The offset
    record is written only over the generation this store last saw
    (:mod:`~statestream.stores.aerospike.offsets`): if it vanished (a server
    restart that lost the data) or changed (another writer), the write raises
    :class:`~statestream.errors.OffsetRecordChangedError` instead of writing
    an old offset back.

    Batches are cut at :data:`~statestream.stores.aerospike.batching.MAX_BATCH_KEYS`
    keys or ``max_batch_bytes`` bytes, whichever comes first; a record over
    ``max_record_size`` is refused before anything of the write is sent.

    Cost: Aerospike cannot read a set in key order. :meth:`iterate`,
    :meth:`count` and :meth:`clear` page through the table's set with a query
    filtered to this partition on the server (:data:`QUERY_PAGE` records a
    page, each page bounded by ``query_timeout``); :meth:`iterate` sorts
    client-side in at most ``iterate_buffer_bytes`` of memory, spilling sorted
    runs to temporary files beyond it: O(records of the partition) of work
    each, not for hot paths.

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
            self._offsets.load()
        except BaseException:
            self._lease.release()
            raise

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
        self._prefix = PARTITION.pack(partition)
        self._data_prefix = self._prefix + DATA
        self._policies = Policies(self.options, partition)
        self._errors = Failures(table, partition, self.hosts, namespace, self.options)
        self._max_keys = batching.MAX_BATCH_KEYS
        self._pool = pool or ClientPool.shared()
        try:
            self._lease = self._pool.acquire(client_config(self.hosts, self.options))
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "connect") from exc
        self._client: Any = self._lease.client
        self._offsets = OffsetRecord(
            self._client,
            self._record_key(OFFSET),
            self._policies.by_name,
            self._errors,
            f"table {table!r} partition {partition} in set {self.set_name!r}",
        )

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
        value = (bins or {}).get(VALUE_BIN)
        if not isinstance(value, bytes | bytearray):
            raise StoreCorruptedError(
                f"Aerospike record of key {key!r:.60} in set {self.set_name!r} has no bytes "
                f"value bin {VALUE_BIN!r}; another program writes to this set: give "
                "statestream its own set_prefix"
            )
        return value if isinstance(value, bytes) else bytes(value)

    # -- the Store contract --------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self._closed:
            self._raise_closed()
        if not isinstance(key, bytes):
            check_key(key)
        try:
            _, _, bins = self._client.get(self._record_key(DATA, key), policy=self._policies.read)
        except as_exc.RecordNotFound:
            return None
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "get", key) from exc
        return self._value(bins, key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self._closed:
            self._raise_closed()
        for key in keys:
            if not isinstance(key, bytes):
                check_key(key)
        values: list[bytes | None] = []
        namespace, set_name, prefix = self.namespace, self.set_name, self._data_prefix
        limit = self._max_keys
        for start in range(0, len(keys), limit):
            chunk = keys[start : start + limit]
            record_keys = [(namespace, set_name, bytearray(prefix + key)) for key in chunk]
            try:
                batch = self._client.batch_read(
                    record_keys, bins=[VALUE_BIN], policy=self._policies.batch
                )
            except as_exc.AerospikeError as exc:
                raise self._errors.wrap(exc, "batch read") from exc
            records = batch.batch_records
            for record in records:
                if record.result != OK:
                    self._errors.check_batch(batch, chunk, "batch read")
                    break
            for record, key in zip(records, chunk, strict=True):
                found = record.record
                if record.result == OK and found is not None:
                    value = found[2].get(VALUE_BIN)
                    values.append(value if type(value) is bytes else self._value(found[2], key))
                else:
                    values.append(None)
        return values

    def write(self, changes: Changes, offset: int | None, meta: Meta | None = None) -> None:
        if self._closed:
            self._raise_closed()
        check_offset(offset, self._offsets.offset)
        if meta is not None:
            check_meta(meta)
        check_changes(changes)
        if changes:
            self._write_data(list(changes.items()))
        if offset is None and not meta:
            return
        # Only after all the data succeeded: the offset never runs ahead of it.
        self._offsets.write(offset, meta)

    def meta(self, name: str) -> bytes | None:
        if self._closed:
            self._raise_closed()
        check_meta_name(name)
        return self._offsets.meta.get(name)

    def _write_data(self, items: list[tuple[bytes, bytes | None]]) -> None:
        """Write ``items`` in batches bounded by keys and bytes; nothing is sent if a record
        is over ``max_record_size``."""
        namespace, set_name = self.namespace, self.set_name
        extra = len(self._data_prefix)
        # Key and value bytes of each item; the per-record overheads are constants.
        sizes = [len(key) + (0 if value is None else len(value)) for key, value in items]
        record_limit = self.options.max_record_size - batching.record_size(set_name, extra, 0)
        if max(sizes) > record_limit:
            self._refuse_too_large(items, sizes, record_limit)
        fixed = batching.request_size(namespace, set_name, extra, 0)
        max_bytes = self.options.max_batch_bytes
        if len(items) <= self._max_keys and sum(sizes) + fixed * len(items) <= max_bytes:
            self._write_batch(items)  # the common case: one batch
            return
        requests = [size + fixed for size in sizes]
        for start, stop in batching.split(requests, self._max_keys, max_bytes):
            self._write_batch(items[start:stop])

    def _refuse_too_large(
        self, items: list[tuple[bytes, bytes | None]], sizes: list[int], limit: int
    ) -> None:
        index = next(n for n, size in enumerate(sizes) if size > limit)
        key, value = items[index]
        value_size = 0 if value is None else len(value)
        size = batching.record_size(self.set_name, len(self._data_prefix) + len(key), value_size)
        raise RecordTooLargeError(
            f"Aerospike write for table {self.table!r} partition {self.partition} key "
            f"{key!r:.60}: the record would be about {size} bytes (value of {value_size} "
            f"bytes), over max_record_size={self.options.max_record_size} (the namespace's "
            "max-record-size); nothing of the batch was sent. Keep values smaller, or raise "
            "max-record-size on the server and max_record_size in the store URL"
        )

    def _write_batch(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        policies = self._policies
        namespace, set_name, prefix = self.namespace, self.set_name, self._data_prefix
        record_write, record_remove = policies.record_write, policies.record_remove
        # One operation dict for the partition bin, shared by every record of
        # the batch: the client only reads it.
        partition_op = {"op": _WRITE_OP, "bin": PARTITION_BIN, "val": self.partition}
        from_bytes, pad = int.from_bytes, RANK_PAD
        records = [
            Remove((namespace, set_name, bytearray(prefix + key)), policy=record_remove)
            if value is None
            else Write(
                (namespace, set_name, bytearray(prefix + key)),
                [
                    {"op": _WRITE_OP, "bin": VALUE_BIN, "val": value},
                    partition_op,
                    # key_rank(key), inline: this runs once per record written.
                    {"op": _WRITE_OP, "bin": RANK_BIN, "val": from_bytes((key + pad)[:7])},
                ],
                policy=record_write,
            )
            for key, value in items
        ]
        batch = BatchRecords(records)
        try:
            self._client.batch_write(batch, policy_batch=policies.batch)
        except as_exc.AerospikeError as exc:
            raise self._errors.wrap(exc, "batch write") from exc
        # A Remove of a missing key reports "not found": deleting it is still done.
        for record in records:
            if record.result != OK:
                self._errors.check_batch(
                    batch,
                    [key for key, _ in items],
                    "batch write",
                    [None if value is None else len(value) for _, value in items],
                )
                break
        if batch.result != OK:
            self._errors.check_batch(batch, [key for key, _ in items], "batch write")

    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` pairs in key order within the given bounds.

        Costs a scan: the partition's records are read page by page with a
        query over the table's set (filtered to the partition on the server),
        whatever the bounds, and sorted client-side in at most
        ``iterate_buffer_bytes`` of memory (sorted runs beyond it go to
        temporary files and are merged).
        """
        if self._closed:
            self._raise_closed()
        bounds = key_bounds(start, end, prefix)
        if bounds is None:
            return iter(())
        lo, hi = bounds
        runs = SortedRuns(self.options.iterate_buffer_bytes, reverse)
        try:
            for page in self._pages(with_values=True, lo=lo, hi=hi):
                for key, value in page:
                    if (lo is None or key >= lo) and (hi is None or key < hi):
                        runs.add(key, value)
        except BaseException:
            runs.close()
            raise
        return self._guarded(iter(runs))

    def _guarded(self, pairs: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        try:
            for pair in pairs:
                if self._closed:
                    self._raise_closed()
                yield pair
            if self._closed:
                self._raise_closed()
        finally:
            close = getattr(pairs, "close", None)
            if close is not None:
                close()

    def _pages(
        self, with_values: bool, lo: bytes | None = None, hi: bytes | None = None
    ) -> Iterator[list[tuple[bytes, bytes]]]:
        """This partition's data records, a page at a time: ``(key, value)``, values ``b""``
        without values.

        With bounds, the server sends only records whose key rank is within
        them (and records without a rank, written before ranks existed): a
        superset of ``lo <= key < hi`` that the caller narrows.
        """
        query = self._client.query(self.namespace, self.set_name)
        if with_values:
            query.select(VALUE_BIN)
        # Pages with values are sized to a quarter of the iteration buffer,
        # from the pairs seen so far; a page is all a query holds at once.
        page_bytes = self.options.iterate_buffer_bytes // 4
        query.max_records = _FIRST_PAGE if with_values else QUERY_PAGE
        query.paginate()
        policy = self._policies.query_between(
            None if lo is None else key_rank(lo), None if hi is None else key_rank(hi)
        )
        options = {"nobins": not with_values}
        cut = len(self._data_prefix)
        seen = seen_bytes = 0
        while True:
            try:
                records = query.results(policy, options)
            except as_exc.AerospikeError as exc:
                raise self._errors.wrap(exc, "query", query=True) from exc
            pairs = []
            for record_key, _, bins in records:
                user_key = record_key[2]
                if user_key is None:
                    raise StoreCorruptedError(
                        f"a record in Aerospike set {self.set_name!r} has no stored key "
                        "(written without POLICY_KEY_SEND by another program?); give "
                        "statestream its own set_prefix"
                    )
                if not isinstance(user_key, bytes | bytearray):
                    continue  # not a statestream record
                raw = bytes(user_key)
                # The server filter already keeps to this partition; the prefix check
                # keeps partitions apart even if another program wrote a "p" bin.
                if raw.startswith(self._data_prefix):
                    key = raw[cut:]
                    pairs.append((key, self._value(bins, key) if with_values else b""))
            yield pairs
            if query.is_done():
                return
            if with_values and pairs:
                seen += len(pairs)
                seen_bytes += sum(len(key) + len(value) for key, value in pairs)
                average = max(1, seen_bytes // seen)
                query.max_records = max(_MIN_PAGE, min(QUERY_PAGE, page_bytes // average))

    def offset(self) -> int | None:
        if self._closed:
            self._raise_closed()
        return self._offsets.offset

    def count(self) -> int:
        """Return the number of keys; costs a scan (a key-only query of the partition, paged)."""
        if self._closed:
            self._raise_closed()
        return sum(len(page) for page in self._pages(with_values=False))

    def clear(self) -> None:
        """Remove the partition's keys, then its offset record (and metadata); costs a scan.

        The offset record goes last: if ``clear`` is interrupted, the old
        offset is still there and recovery decides again to clear.
        """
        if self._closed:
            self._raise_closed()
        self._remove_all()

    def _remove_all(self) -> None:
        for page in self._pages(with_values=False):
            keys = [key for key, _ in page]
            for start in range(0, len(keys), self._max_keys):
                chunk = keys[start : start + self._max_keys]
                try:
                    batch = self._client.batch_remove(
                        [self._record_key(DATA, key) for key in chunk],
                        policy_batch=self._policies.batch,
                        policy_batch_remove=self._policies.record_remove,
                    )
                except as_exc.AerospikeError as exc:
                    raise self._errors.wrap(exc, "clear") from exc
                self._errors.check_batch(batch, chunk, "clear")
        self._offsets.remove()

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
