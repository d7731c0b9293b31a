"""An in-process fake of the ``aerospike`` 19.x client and of the cluster behind it.

``FakeServer`` is the cluster: records, namespaces and their rules, a clock.
``FakeServer.client(config)`` stands in for ``aerospike.client(config)`` and,
like it, connects at once. Every client made from one server sees the same
records, so two stores of one test share state as they would on a cluster.

What it reproduces of the real client and server:

* Errors are the real ``aerospike.exception`` classes with their codes, and
  with ``code``, ``msg``, ``file``, ``line`` and ``in_doubt`` set.
* Connecting: ``ConnectionError`` (-10) unless a configured host is one the
  server answers on; with ``validate_keys`` unknown config or policy keys are
  a ``ParamError`` (-2); wrong credentials when the server has users.
* Keys ``(namespace, set, user_key)``: ``str``, ``int`` or a non-empty
  ``bytearray`` (``bytes`` is refused); a digest computed by the real
  ``aerospike.calc_digest``. The user key is stored only when the write
  policy has ``POLICY_KEY_SEND``; otherwise queries return ``key[2] is None``.
* ``get``/``remove`` of a missing record raise ``RecordNotFound`` (2);
  ``exists`` returns ``(key, None)``; bin names over 15 bytes raise
  ``BinNameError`` (21); a record over the namespace's ``max_record_size``
  raises ``RecordTooBig`` (13); an unknown namespace ``NamespaceNotFound`` (20).
* Batches (``batch_read``, ``batch_write``, ``batch_operate``, ``batch_remove``)
  return the ``aerospike_helpers.batch.records`` classes with a result per
  record; the batch's ``result`` is 0 when the only failures are "not found".
* ``query(ns, set)`` returns the set's records in a shuffled order (never key
  order), filtered by a policy's ``expressions`` (``Eq``, ``Ne``, ``GT``,
  ``GE``, ``LT``, ``LE``, ``And``, ``Or``, ``Not``, ``BinExists``, bins and
  values), ``select``-ed bins, ``nobins``.
* Map and list bins are copied in and out, so a caller mutating its dict after
  a ``put`` (or the dict a ``get`` returned) changes nothing on the server.
* TTL: a write with a TTL > 0 raises ``ForbiddenError`` (22) unless the
  namespace allows TTLs (as with ``nsup-period`` set); records expire when the
  fake clock (``advance``) passes their TTL; ``TTL_NEVER_EXPIRE`` and
  ``TTL_DONT_UPDATE`` are honoured.
* Timeouts: with ``latency_ms`` set (or the server ``frozen``), a call whose
  limit is not above it waits that limit and fails, as the real client does:
  a single-record call raises ``TimeoutError`` (9); a batch call returns
  with every record's result ``NoResponse`` (-15) and raises nothing; a
  query waits its socket timeout when that is shorter than its total
  timeout (the client's query default: total 0, socket 30 s) and raises
  ``TimeoutError``. A call with no limit at all fails the test instead of
  hanging. Waits go through ``FakeServer.sleep`` and are logged in ``waits``.
* Messages: a request over ``max_message_size`` (128 MiB, the server's
  limit) makes the server drop the connection: ``ConnectionError`` (-10),
  nothing applied.
* ``restart(lose_data=True)``: a restart of a server whose namespace lives
  in memory only; every record is gone, generations start again.
* Generations: every write adds one; ``put``/``operate`` honour
  ``POLICY_GEN_EQ`` (``RecordGenerationError``, 3) and ``exists``
  (``RecordExistsError``, 5; ``RecordNotFound``, 2); ``operate`` returns the
  new ``gen`` in its meta.
* Query pagination: ``max_records``, ``paginate()``, ``is_done()``; pages
  follow digest order, so records removed between pages are not skipped.
* ``truncate``, ``close`` (later calls raise ``ClusterError``), ``is_connected``.

Faults can be injected with :meth:`FakeServer.fail`.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aerospike
from aerospike import exception as ex
from aerospike_helpers.batch.records import BatchRecord, BatchRecords, Read, Remove, Write

NEVER = aerospike.TTL_NEVER_EXPIRE
_DONT_UPDATE = {aerospike.TTL_DONT_UPDATE, -2}
_NEVER = {NEVER, -1}
_CLIENT_DEFAULT = {aerospike.TTL_CLIENT_DEFAULT, -3}

_TIMEOUTS = {"total_timeout", "socket_timeout", "max_retries", "sleep_between_retries"}
_COMMON = _TIMEOUTS | {"compress", "expressions", "txn", "timeout_delay", "replica"}
POLICY_KEYS: dict[str, set[str]] = {
    "read": _COMMON
    | {"key", "read_mode_ap", "read_mode_sc", "read_touch_ttl_percent", "deserialize"},
    "write": _COMMON
    | {"key", "exists", "ttl", "gen", "commit_level", "durable_delete", "compression_threshold"},
    "remove": _COMMON | {"key", "gen", "generation", "commit_level", "durable_delete"},
    "batch": _COMMON
    | {
        "read_mode_ap",
        "read_mode_sc",
        "read_touch_ttl_percent",
        "concurrent",
        "allow_inline",
        "allow_inline_ssd",
        "respond_all_keys",
        "send_set_name",
        "deserialize",
    },
    "batch_write": {"key", "commit_level", "gen", "exists", "durable_delete", "expressions", "ttl"},
    "batch_remove": {"key", "commit_level", "gen", "generation", "durable_delete", "expressions"},
    "batch_read": {"read_mode_ap", "read_mode_sc", "read_touch_ttl_percent", "expressions"},
    "query": _COMMON | {"deserialize", "include_bin_data", "expected_duration", "short_query"},
    "operate": _COMMON
    | {
        "key",
        "exists",
        "ttl",
        "gen",
        "commit_level",
        "durable_delete",
        "read_mode_ap",
        "read_mode_sc",
        "read_touch_ttl_percent",
        "deserialize",
        "respond_all_ops",
    },
}
CONFIG_KEYS = {
    "hosts",
    "user",
    "password",
    "policies",
    "connect_timeout",
    "validate_keys",
    "tls",
    "lua",
    "shm",
    "use_shared_connection",
    "send_bool_as",
    "max_conns_per_node",
    "min_conns_per_node",
    "tend_interval",
    "cluster_name",
    "rack_aware",
    "rack_id",
    "rack_ids",
    "use_services_alternate",
    "auth_mode",
}
_DEFAULT_TOTAL_TIMEOUT = {"query": 0}  # the client's defaults; 1000 ms for the rest
_DEFAULT_SOCKET_TIMEOUT = 30000
#: The server's limit on one request (``proto-size`` checks): 128 MiB.
MAX_MESSAGE_SIZE = 128 << 20
_BATCH_KINDS = {"batch"}


def error(cls: type[ex.AerospikeError], msg: str, in_doubt: bool = False) -> ex.AerospikeError:
    """Build ``cls`` the way the real client does: args and attributes both set."""
    code = cls.code
    exc = cls(code, msg, "fake_aerospike.py", 0, in_doubt)
    exc.code, exc.msg, exc.file, exc.line, exc.in_doubt = (
        code,
        msg,
        "fake_aerospike.py",
        0,
        in_doubt,
    )
    return exc


@dataclass
class FakeNamespace:
    """One namespace's configuration."""

    #: True as with ``nsup-period`` (or ``allow-ttl-without-nsup``) set: TTLs allowed.
    allow_ttl: bool = False
    #: ``max-record-size`` in bytes (the server's default is 1 MiB).
    max_record_size: int = 1 << 20


@dataclass
class _Record:
    user_key: Any
    bins: dict[str, Any]
    gen: int
    void_time: float | None  # None: never expires


@dataclass
class _Fault:
    method: str
    error: type[ex.AerospikeError]
    times: int
    key: bytes | None


@dataclass
class FakeServer:
    """A fake Aerospike cluster; thread-safe. ``client`` is its ``aerospike.client``."""

    namespaces: dict[str, FakeNamespace] = field(default_factory=lambda: {"test": FakeNamespace()})
    #: ``"address:port"`` the cluster answers on.
    hosts: set[str] = field(default_factory=lambda: {"127.0.0.1:3000"})
    #: user -> password when security is enabled; ``None``: no security.
    users: dict[str, str] | None = None
    #: Simulated time every call takes, in ms.
    latency_ms: int = 0
    #: A frozen server answers nothing: every call waits its whole limit.
    frozen: bool = False
    #: Requests larger than this (bytes) make the server drop the connection.
    max_message_size: int = MAX_MESSAGE_SIZE
    #: How the fake waits (seconds); tests may replace it to skip real sleeping.
    sleep: Callable[[float], None] = time.sleep
    #: ``(method, ms)`` of every wait a timeout caused.
    waits: list[tuple[str, float]] = field(default_factory=list)
    #: Records sent back by queries, in all.
    query_rows: int = 0
    seed: int = 0
    #: Every client made, and ``(method, policy)`` of every call, for assertions.
    clients: list[FakeClient] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    now: float = 0.0
    _records: dict[tuple[str, str, bytes], _Record] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    # -- test controls ---------------------------------------------------------

    def client(self, config: dict[str, Any]) -> FakeClient:
        """``aerospike.client(config)``: validate, authenticate and connect at once."""
        fake = FakeClient(self, config)
        with self._lock:
            self.clients.append(fake)
        return fake

    def open_clients(self) -> int:
        return sum(1 for c in self.clients if c.is_connected())

    def restart(self, lose_data: bool = True) -> None:
        """Restart the cluster; with ``lose_data`` (an in-memory namespace) every record is gone."""
        with self._lock:
            if lose_data:
                self._records.clear()

    def advance(self, seconds: float) -> None:
        """Move the clock: records whose TTL passed are gone."""
        with self._lock:
            self.now += seconds

    def fail(
        self,
        method: str,
        error_class: type[ex.AerospikeError],
        *,
        times: int = 1,
        key: bytes | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``error_class``.

        ``method`` is a client method name (``select`` counts as ``get``). For
        batch methods, ``key`` fails only the records whose user key ends
        with it (a per-record result); without ``key`` the whole call raises.
        """
        with self._lock:
            self._faults.append(_Fault(method, error_class, times, key))

    def set_records(self, namespace: str, set_name: str) -> list[tuple[Any, dict[str, Any]]]:
        """The live records of a set: ``(stored user key or None, bins)``."""
        with self._lock:
            return [
                (r.user_key, dict(r.bins))
                for (ns, s, _), r in self._records.items()
                if ns == namespace and s == set_name and self._alive(r)
            ]

    # -- internals used by clients --------------------------------------------

    def _alive(self, record: _Record) -> bool:
        return record.void_time is None or record.void_time > self.now

    def _take_fault(self, method: str, user_key: Any = None) -> type[ex.AerospikeError] | None:
        with self._lock:
            for fault in self._faults:
                if fault.method != method or fault.times <= 0:
                    continue
                if fault.key is not None and not (
                    isinstance(user_key, bytearray) and bytes(user_key).endswith(fault.key)
                ):
                    continue
                fault.times -= 1
                return fault.error
        return None

    def _namespace(self, name: str) -> FakeNamespace:
        if name not in self.namespaces:
            raise error(ex.NamespaceNotFound, "AEROSPIKE_ERR_NAMESPACE_NOT_FOUND")
        return self.namespaces[name]


class FakeClient:
    """``aerospike.Client`` against a :class:`FakeServer`."""

    def __init__(self, server: FakeServer, config: dict[str, Any]) -> None:
        if not isinstance(config, dict):
            raise error(ex.ParamError, "config must be a dict")
        self._server = server
        self.config = config
        self._validate = bool(config.get("validate_keys"))
        if self._validate:
            for name in config:
                if name not in CONFIG_KEYS:
                    raise error(
                        ex.ParamError, f'"{name}" is an invalid client config dictionary key'
                    )
            for kind, policy in config.get("policies", {}).items():
                self._check_policy(kind, policy)
        hosts = config.get("hosts")
        if not isinstance(hosts, list) or not hosts:
            raise error(ex.ParamError, "Hosts must be a non-empty list")
        names = set()
        for host in hosts:
            if not isinstance(host, tuple) or len(host) not in (2, 3):
                raise error(ex.ParamError, "Invalid host")
            names.add(f"{host[0]}:{host[1]}")
        if not names & server.hosts:
            raise error(ex.ConnectionError, "Failed to connect")
        if server.users is not None and server.users.get(config.get("user", "")) != config.get(
            "password"
        ):
            raise error(ex.InvalidCredential, "AEROSPIKE_INVALID_CREDENTIAL")
        self._connected = True

    # -- connection ------------------------------------------------------------

    def connect(self, username: str | None = None, password: str | None = None) -> FakeClient:
        return self  # 19.x: already connected by aerospike.client()

    def is_connected(self) -> bool:
        return self._connected

    def close(self) -> None:
        self._connected = False

    # -- plumbing --------------------------------------------------------------

    def _check_policy(self, kind: str, policy: Mapping[str, Any] | None) -> None:
        if policy is None:
            return
        if not isinstance(policy, dict):
            raise error(ex.ParamError, "policy must be a dict")
        if self._validate:
            for name in policy:
                if name not in POLICY_KEYS[kind]:
                    raise error(ex.ParamError, f'"{name}" is an invalid policy dictionary key')

    def _policy(self, kind: str, policy: Mapping[str, Any] | None) -> dict[str, Any]:
        self._check_policy(kind, policy)
        merged = dict(self.config.get("policies", {}).get(kind, {}))
        merged.update(policy or {})
        return merged

    def _call(self, method: str, kind: str, policy: Mapping[str, Any] | None) -> dict[str, Any]:
        """Common start of every command: connected, policy, latency, whole-call faults."""
        if not self._connected:
            raise error(ex.ClusterError, "No connection to aerospike cluster")
        merged = self._policy(kind, policy)
        server = self._server
        with server._lock:
            server.calls.append((method, merged))
        if server.latency_ms or server.frozen:
            limit = self._limit(method, kind, merged)
            if server.frozen or server.latency_ms >= limit:
                server.waits.append((method, limit))
                server.sleep(limit / 1000)
                if kind in _BATCH_KINDS:
                    merged["_timed_out"] = True  # each record reports -15, the call returns
                    return merged
                raise error(ex.TimeoutError, "Timeout: client-side", in_doubt=kind != "read")
            server.sleep(server.latency_ms / 1000)
        fault = server._take_fault(method)
        if fault is not None:
            raise error(fault, f"injected {fault.__name__}")
        return merged

    def _limit(self, method: str, kind: str, merged: Mapping[str, Any]) -> float:
        """How long a call waits for a server that does not answer (ms)."""
        total = merged.get("total_timeout", _DEFAULT_TOTAL_TIMEOUT.get(kind, 1000))
        if kind == "query":
            # A query waits for each page up to the socket timeout, then gives up.
            socket = merged.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
            limits = [t for t in (total, socket) if t]
            if not limits:
                raise AssertionError(f"fake aerospike: {method} has no timeout: it could hang")
            return float(min(limits))
        if not total:
            raise AssertionError(f"fake aerospike: {method} has no total_timeout: it could hang")
        return float(total)

    def _check_message(self, size: int) -> None:
        """A request over the server's message limit: the server drops the connection."""
        if size > self._server.max_message_size:
            raise error(ex.ConnectionError, "Bad file descriptor: connection closed by the server")

    def _digest(self, key: Any) -> tuple[str, str, bytes, Any]:
        if not isinstance(key, tuple) or len(key) not in (3, 4):
            raise error(
                ex.ParamError,
                "key tuple must be (Namespace, Set, Key) or (Namespace, Set, None, Digest)",
            )
        namespace, set_name, user_key = key[:3]
        if not isinstance(namespace, str) or len(namespace) > 31:
            raise error(ex.ParamError, "namespace must be a string of at most 31 characters")
        if set_name is not None and (not isinstance(set_name, str) or len(set_name) > 63):
            raise error(ex.ParamError, "set must be a string of at most 63 characters")
        set_name = set_name or ""
        if user_key is None:
            digest = key[3] if len(key) == 4 else None
            if not isinstance(digest, bytearray) or len(digest) != 20:
                raise error(ex.ParamError, "either key or digest is required")
            return namespace, set_name, bytes(digest), None
        if isinstance(user_key, bytearray) and not user_key:
            raise error(ex.ParamError, "Byte array size cannot be 0")
        if isinstance(user_key, bool) or not isinstance(user_key, str | int | bytearray):
            raise error(ex.ParamError, "key is invalid")
        digest = bytes(aerospike.calc_digest(namespace, set_name, user_key))
        return (
            namespace,
            set_name,
            digest,
            bytearray(user_key) if isinstance(user_key, bytearray) else user_key,
        )

    def _live(self, ident: tuple[str, str, bytes]) -> _Record | None:
        record = self._server._records.get(ident)
        if record is not None and not self._server._alive(record):
            del self._server._records[ident]
            return None
        return record

    def _meta(self, record: _Record) -> dict[str, int]:
        if record.void_time is None:
            ttl = NEVER
        else:
            ttl = max(1, int(record.void_time - self._server.now))
        return {"ttl": ttl, "gen": record.gen}

    def _key_tuple(self, key: tuple[Any, ...], digest: bytes) -> tuple[Any, ...]:
        return (key[0], key[1], key[2], bytearray(digest))

    # -- single-record commands ------------------------------------------------

    def get(self, key: tuple[Any, ...], policy: dict[str, Any] | None = None) -> tuple[Any, ...]:
        return self.select(key, None, policy)

    def select(
        self, key: tuple[Any, ...], bins: Sequence[str] | None, policy: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        self._call("get", "read", policy)
        namespace, set_name, digest, _ = self._digest(key)
        with self._server._lock:
            self._server._namespace(namespace)
            record = self._live((namespace, set_name, digest))
            if record is None:
                raise error(ex.RecordNotFound, "AEROSPIKE_ERR_RECORD_NOT_FOUND")
            return self._key_tuple(key, digest), self._meta(record), _pick(record.bins, bins)

    def exists(self, key: tuple[Any, ...], policy: dict[str, Any] | None = None) -> tuple[Any, ...]:
        self._call("exists", "read", policy)
        namespace, set_name, digest, _ = self._digest(key)
        with self._server._lock:
            self._server._namespace(namespace)
            record = self._live((namespace, set_name, digest))
            return self._key_tuple(key, digest), None if record is None else self._meta(record)

    def put(
        self,
        key: tuple[Any, ...],
        bins: dict[str, Any],
        meta: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> None:
        merged = self._call("put", "write", policy)
        if not isinstance(bins, dict):
            raise error(ex.ParamError, "Record should be passed as bin-value pair")
        self._check_message(_changes_size(list(bins.items())))
        with self._server._lock:
            self._write(key, list(bins.items()), merged, meta or {})

    def operate(
        self,
        key: tuple[Any, ...],
        operations: list[dict[str, Any]],
        meta: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        merged = self._call("operate", "operate", policy)
        changes, reads = _split_ops(operations)
        self._check_message(_changes_size(changes))
        with self._server._lock:
            record = self._write(key, changes, merged, meta or {})
            digest = self._digest(key)[2]
            bins = _pick(record.bins, reads) if record is not None and reads else {}
            record_meta = self._meta(record) if record is not None else {}
            return self._key_tuple(key, digest), record_meta, bins

    def remove(
        self,
        key: tuple[Any, ...],
        meta: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> None:
        self._call("remove", "remove", policy)
        with self._server._lock:
            self._remove(key)

    def truncate(
        self, namespace: str, set_name: str | None, nanos: int, policy: dict[str, Any] | None = None
    ) -> int:
        # The cut-off is always "now": every record of the set goes.
        self._call("truncate", "write", None)
        with self._server._lock:
            self._server._namespace(namespace)
            for ident in list(self._server._records):
                if ident[0] == namespace and (set_name is None or ident[1] == set_name):
                    del self._server._records[ident]
        return 0

    # -- record logic (callers hold the server lock) ---------------------------

    def _write(
        self,
        key: tuple[Any, ...],
        changes: list[tuple[str, Any]],
        policy: Mapping[str, Any],
        meta: Mapping[str, Any],
    ) -> _Record | None:
        server = self._server
        namespace, set_name, digest, user_key = self._digest(key)
        config = server._namespace(namespace)
        ident = (namespace, set_name, digest)
        current = self._live(ident)
        exists = policy.get("exists", aerospike.POLICY_EXISTS_IGNORE)
        if exists == aerospike.POLICY_EXISTS_CREATE and current is not None:
            raise error(ex.RecordExistsError, "AEROSPIKE_ERR_RECORD_EXISTS")
        if exists in (aerospike.POLICY_EXISTS_UPDATE, aerospike.POLICY_EXISTS_REPLACE) and (
            current is None
        ):
            raise error(ex.RecordNotFound, "AEROSPIKE_ERR_RECORD_NOT_FOUND")
        if policy.get("gen") == aerospike.POLICY_GEN_EQ and (
            current is None or current.gen != meta.get("gen")
        ):
            raise error(ex.RecordGenerationError, "AEROSPIKE_ERR_RECORD_GENERATION")
        replace = exists in (
            aerospike.POLICY_EXISTS_REPLACE,
            aerospike.POLICY_EXISTS_CREATE_OR_REPLACE,
        )
        bins = {} if current is None or replace else dict(current.bins)
        for name, value in changes:
            _check_bin(name, value)
            if value is None:
                bins.pop(name, None)
            else:
                bins[name] = _stored(value)
        stored_key = current.user_key if current is not None else None
        if policy.get("key") == aerospike.POLICY_KEY_SEND:
            stored_key = user_key
        void_time = self._void_time(config, meta.get("ttl", policy.get("ttl", 0)), current)
        if _record_size(set_name, stored_key, bins) > config.max_record_size:
            raise error(ex.RecordTooBig, "AEROSPIKE_ERR_RECORD_TOO_BIG")
        if not bins:
            server._records.pop(ident, None)  # a record with no bins left is deleted
            return None
        record = _Record(stored_key, bins, (current.gen if current else 0) + 1, void_time)
        server._records[ident] = record
        return record

    def _void_time(self, config: FakeNamespace, ttl: Any, current: _Record | None) -> float | None:
        if not isinstance(ttl, int):
            raise error(ex.ParamError, "TTL should be an int")
        if ttl in _DONT_UPDATE:
            return current.void_time if current is not None else None
        if ttl in _NEVER or ttl == 0 or ttl in _CLIENT_DEFAULT:
            return None  # the fake namespaces' default-ttl is 0: never expire
        if ttl < 0:
            raise error(ex.ParamError, "invalid TTL")
        if not config.allow_ttl:
            raise error(ex.ForbiddenError, "AEROSPIKE_ERR_FAIL_FORBIDDEN")
        return self._server.now + ttl

    def _remove(self, key: tuple[Any, ...]) -> None:
        namespace, set_name, digest, _ = self._digest(key)
        self._server._namespace(namespace)
        ident = (namespace, set_name, digest)
        if self._live(ident) is None:
            raise error(ex.RecordNotFound, "AEROSPIKE_ERR_RECORD_NOT_FOUND")
        del self._server._records[ident]

    # -- batches ---------------------------------------------------------------

    def batch_read(
        self,
        keys: list[tuple[Any, ...]],
        bins: list[str] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> BatchRecords:
        merged = self._call("batch_read", "batch", policy)
        results = BatchRecords([BatchRecord(key) for key in keys])
        if _timed_out(merged, results):
            return results
        self._run_batch("batch_read", results, lambda rec: self._read_one(rec, bins))
        return results

    def batch_write(
        self, batch_records: BatchRecords, policy_batch: dict[str, Any] | None = None
    ) -> BatchRecords:
        merged = self._call("batch_write", "batch", policy_batch)
        for rec in batch_records.batch_records:
            kind = {Write: "batch_write", Remove: "batch_remove", Read: "batch_read"}[type(rec)]
            self._check_policy(kind, rec.policy)
        self._check_message(_batch_size(batch_records))
        if _timed_out(merged, batch_records):
            return batch_records
        self._run_batch("batch_write", batch_records, self._apply_one)
        return batch_records

    def batch_operate(
        self,
        keys: list[tuple[Any, ...]],
        ops: list[dict[str, Any]],
        policy_batch: dict[str, Any] | None = None,
        policy_batch_write: dict[str, Any] | None = None,
        ttl: int | None = None,
    ) -> BatchRecords:
        merged = self._call("batch_operate", "batch", policy_batch)
        self._check_policy("batch_write", policy_batch_write)
        policy = dict(policy_batch_write or {})
        if ttl is not None:
            policy["ttl"] = ttl
        results = BatchRecords([Write(key, ops, policy=policy) for key in keys])
        self._check_message(_batch_size(results))
        if _timed_out(merged, results):
            return results
        self._run_batch("batch_operate", results, self._apply_one)
        return results

    def batch_remove(
        self,
        keys: list[tuple[Any, ...]],
        policy_batch: dict[str, Any] | None = None,
        policy_batch_remove: dict[str, Any] | None = None,
    ) -> BatchRecords:
        merged = self._call("batch_remove", "batch", policy_batch)
        self._check_policy("batch_remove", policy_batch_remove)
        results = BatchRecords([Remove(key, policy=policy_batch_remove) for key in keys])
        if _timed_out(merged, results):
            return results
        self._run_batch("batch_remove", results, self._apply_one)
        return results

    def _run_batch(
        self, method: str, batch: BatchRecords, one: Callable[[BatchRecord], None]
    ) -> None:
        failed = False
        with self._server._lock:
            for rec in batch.batch_records:
                namespace = rec.key[0] if isinstance(rec.key, tuple) and rec.key else None
                if namespace not in self._server.namespaces:
                    # The client finds no partition map for the namespace: the call fails.
                    raise error(ex.NamespaceNotFound, "AEROSPIKE_ERR_NAMESPACE_NOT_FOUND")
            for rec in batch.batch_records:
                fault = self._server._take_fault(method, rec.key[2])
                try:
                    if fault is not None:
                        raise error(fault, f"injected {fault.__name__}")
                    one(rec)
                    rec.result = 0
                except ex.AerospikeError as exc:
                    rec.result, rec.record = exc.code, None
                    rec.message = exc.msg
                    failed = failed or exc.code not in (2, 27)
        batch.result = ex.BatchFailed.code if failed else 0

    def _read_one(self, rec: BatchRecord, bins: list[str] | None) -> None:
        namespace, set_name, digest, _ = self._digest(rec.key)
        record = self._live((namespace, set_name, digest))
        if record is None:
            raise error(ex.RecordNotFound, "AEROSPIKE_ERR_RECORD_NOT_FOUND")
        rec.record = (
            self._key_tuple(rec.key, digest),
            self._meta(record),
            _pick(record.bins, bins),
        )

    def _apply_one(self, rec: BatchRecord) -> None:
        policy = rec.policy or {}
        if isinstance(rec, Remove):
            self._remove(rec.key)
            return
        if isinstance(rec, Read):
            self._read_one(rec, [op["bin"] for op in rec.ops or []] or None)
            return
        delete = any(op["op"] == aerospike.OPERATOR_DELETE for op in rec.ops)
        changes, reads = _split_ops([op for op in rec.ops if op["op"] != aerospike.OPERATOR_DELETE])
        record = self._write(rec.key, changes, policy, rec.meta or {})
        if delete:
            self._remove(rec.key)
            record = None
        digest = self._digest(rec.key)[2]
        bins = _pick(record.bins, reads) if record is not None and reads else {}
        meta = self._meta(record) if record is not None else {}
        rec.record = (self._key_tuple(rec.key, digest), meta, bins)

    # -- queries ---------------------------------------------------------------

    def query(self, namespace: str, set_name: str | None = None) -> FakeQuery:
        return FakeQuery(self, namespace, set_name)

    def scan(self, namespace: str, set_name: str | None = None) -> FakeQuery:
        return FakeQuery(self, namespace, set_name)


class FakeQuery:
    """``aerospike.Query`` without a secondary-index predicate: a set scan."""

    def __init__(self, client: FakeClient, namespace: str, set_name: str | None) -> None:
        self._client = client
        self._namespace = namespace
        self._set = set_name or ""
        self._bins: list[str] | None = None
        #: Records per ``results`` call (0: all); with ``paginate`` the next
        #: call goes on where the last one stopped.
        self.max_records = 0
        self._paginate = False
        self._after: bytes | None = None
        self._done = False

    def paginate(self) -> None:
        self._paginate = True

    def is_done(self) -> bool:
        return self._done

    def select(self, *bins: str) -> None:
        self._bins = list(bins)

    def where(self, predicate: Any, ctx: Any = None) -> None:
        raise NotImplementedError("fake aerospike: secondary-index queries")

    def results(
        self, policy: dict[str, Any] | None = None, options: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        return list(self._records(policy, options))

    def foreach(
        self,
        callback: Callable[[tuple[Any, ...]], Any],
        policy: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        for record in self._records(policy, options):
            if callback(record) is False:
                break

    def _records(
        self, policy: dict[str, Any] | None, options: dict[str, Any] | None
    ) -> Iterator[tuple[Any, ...]]:
        client = self._client
        merged = client._call("query", "query", policy)
        server = client._server
        expression = merged.get("expressions")
        nobins = bool((options or {}).get("nobins"))
        with server._lock:
            server._namespace(self._namespace)
            found = [
                (digest, record)
                for (ns, s, digest), record in server._records.items()
                if ns == self._namespace and s == self._set and server._alive(record)
            ]
            found = [
                (digest, record)
                for digest, record in found
                if expression is None or evaluate(expression, record.bins) is True
            ]
            if self._paginate:
                # Pages go by partition, then digest: never in key order, and
                # a page starts where the last one ended.
                found.sort(key=lambda item: (_partition_id(item[0]), item[0]))
                if self._after is not None:
                    after = (_partition_id(self._after), self._after)
                    found = [f for f in found if (_partition_id(f[0]), f[0]) > after]
            else:
                # Servers return records by partition, then digest: never in key order.
                server._random.shuffle(found)
            if self.max_records and len(found) > self.max_records:
                found = found[: self.max_records]
                self._after = found[-1][0] if self._paginate else None
                self._done = not self._paginate
            else:
                self._after, self._done = None, True
            rows = [
                (
                    (self._namespace, self._set, record.user_key, bytearray(digest)),
                    client._meta(record),
                    {} if nobins else _pick(record.bins, self._bins),
                )
                for digest, record in found
            ]
            server.query_rows += len(rows)
        yield from rows


# -- expressions ---------------------------------------------------------------

_UNKNOWN = object()
_END = object()
_EQ, _NE, _GT, _GE, _LT, _LE = 1, 2, 3, 4, 5, 6
_AND, _OR, _NOT, _BIN, _BIN_EXISTS, _END_ARGS, _VAL = 16, 17, 18, 81, 83, 150, 200
_ORDER: dict[int, Callable[[Any, Any], bool]] = {
    _GT: lambda a, b: a > b,
    _GE: lambda a, b: a >= b,
    _LT: lambda a, b: a < b,
    _LE: lambda a, b: a <= b,
}
_TYPES: dict[int, tuple[type, ...]] = {2: (int,), 3: (str,), 6: (bytes, bytearray), 7: (float,)}


def evaluate(compiled: list[tuple[Any, ...]], bins: Mapping[str, Any]) -> Any:
    """Evaluate a compiled filter expression on ``bins``; unknown is neither True nor False."""
    nodes = iter(compiled)
    result = _evaluate_node(nodes, bins)
    if next(nodes, None) is not None:
        raise NotImplementedError("fake aerospike: trailing expression nodes")
    return result


def _evaluate_node(nodes: Iterator[tuple[Any, ...]], bins: Mapping[str, Any]) -> Any:
    op, value_type, fixed, count = next(nodes)
    args = [_evaluate_node(nodes, bins) for _ in range(count)]
    args = [a for a in args if a is not _END]
    if op == _END_ARGS:
        return _END
    if op == _VAL:
        return fixed["val"]
    if op == _BIN:
        value = bins.get(fixed["bin"], _UNKNOWN)
        wanted = _TYPES.get(value_type)
        if value is _UNKNOWN or wanted is None or not isinstance(value, wanted):
            return _UNKNOWN
        return value
    if op == _BIN_EXISTS:
        return fixed["bin"] in bins
    if op in (_EQ, _NE):
        if _UNKNOWN in args:
            return _UNKNOWN
        return (args[0] == args[1]) is (op == _EQ)
    if op in _ORDER:
        if _UNKNOWN in args:
            return _UNKNOWN
        if type(args[0]) is not type(args[1]):
            # The server refuses to compare values of two types (parameter error).
            raise error(ex.InvalidRequest, "AEROSPIKE_ERR_REQUEST_INVALID")
        return _ORDER[op](args[0], args[1])
    if op == _NOT:
        return _UNKNOWN if args[0] is _UNKNOWN else not args[0]
    if op == _AND:
        return False if False in args else (_UNKNOWN if _UNKNOWN in args else True)
    if op == _OR:
        return True if True in args else (_UNKNOWN if _UNKNOWN in args else False)
    raise NotImplementedError(f"fake aerospike: expression op {op}")


# -- helpers -------------------------------------------------------------------


def _partition_id(digest: bytes) -> int:
    # The cluster's partition of a record: 12 bits of its digest.
    return int.from_bytes(digest[:2], "little") & 0xFFF


def _timed_out(merged: Mapping[str, Any], batch: BatchRecords) -> bool:
    """After a wait on a frozen server: each record is "no response" (-15), as with the client."""
    if not merged.get("_timed_out"):
        return False
    for rec in batch.batch_records:
        rec.result, rec.record = ex.NoResponse.code, None
        rec.message = "AEROSPIKE_ERR_NO_RESPONSE"
        rec.in_doubt = not isinstance(rec, Read)
    batch.result = ex.TimeoutError.code
    return True


def _split_ops(operations: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[str, Any]], list[str]]:
    changes, reads = [], []
    for op in operations:
        if op["op"] == aerospike.OPERATOR_WRITE:
            changes.append((op["bin"], op["val"]))
        elif op["op"] == aerospike.OPERATOR_READ:
            reads.append(op["bin"])
        else:
            raise NotImplementedError(f"fake aerospike: operation {op!r}")
    return changes, reads


def _changes_size(changes: Sequence[tuple[str, Any]]) -> int:
    # Message header, key fields and per bin its operation header, name and value.
    return 30 + 60 + sum(8 + len(name) + _size_of(value) for name, value in changes)


def _batch_size(batch: BatchRecords) -> int:
    size = 30
    for rec in batch.batch_records:
        key = rec.key[2] if isinstance(rec.key, tuple) and len(rec.key) > 2 else None
        size += 30 + (0 if key is None else _size_of(key))
        for op in getattr(rec, "ops", None) or []:
            size += 8 + len(op.get("bin", "")) + (_size_of(op["val"]) if "val" in op else 0)
    return size


def _stored(value: Any) -> Any:
    """A value as the server keeps it: a copy, never the caller's object (maps and lists too)."""
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict | list):
        return copy.deepcopy(value)
    return value


def _pick(bins: Mapping[str, Any], names: Sequence[str] | None) -> dict[str, Any]:
    # Copies: a client gets its own values, maps and lists, as from a real
    # server (bytes too: each read of a record allocates its own).
    if names is None:
        names = list(bins)
    return {name: _copy(bins[name]) for name in names if name in bins}


def _copy(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytes(memoryview(value))
    return copy.deepcopy(value)


def _check_bin(name: Any, value: Any) -> None:
    if not isinstance(name, str):
        raise error(ex.ParamError, "A bin name must be a string or unicode string.")
    if len(name.encode()) > 15:
        raise error(ex.BinNameError, "AEROSPIKE_ERR_BIN_NAME")
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | str | float | bytes | bytearray | list | dict)
    ):
        raise error(ex.ParamError, f"value of type {type(value).__name__} is not supported")


def _size_of(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | float):
        return 8
    return len(repr(value))


def _record_size(set_name: str, user_key: Any, bins: Mapping[str, Any]) -> int:
    # Record header, set name, stored key, and per bin its name, header and particle.
    size = 39 + len(set_name)
    if user_key is not None:
        size += 1 + _size_of(user_key)
    return size + sum(len(name) + 6 + _size_of(value) for name, value in bins.items())
