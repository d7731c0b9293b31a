"""Configuration as frozen dataclasses, and the one place that parses settings.

Settings reach components through constructors. This module (and the command
line) are the only places that read the environment; everything else is
handed a frozen dataclass.

``options_from_strings`` turns string settings (a URL query string, environment
variables) into a typed dataclass, rejecting unknown names and values that do
not parse, with messages that name the setting.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from statestream.errors import ConfigurationError

__all__ = [
    "DEFAULT_STORE_URL",
    "AerospikeOptions",
    "LevelDBOptions",
    "env_setting",
    "options_from_strings",
    "parse_bool",
    "parse_size",
]

#: Where tables live when no store URL is configured: LevelDB under ./statestream-data.
DEFAULT_STORE_URL = "leveldb://./statestream-data"

_T = TypeVar("_T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_bool(name: str, text: str) -> bool:
    """Parse ``1/0``, ``true/false``, ``yes/no``, ``on/off`` (any case)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"setting {name!r} must be true or false, got {text!r}")


def parse_size(name: str, text: str) -> int:
    """Parse a byte count: ``4096``, ``64k``, ``8m``, ``1g`` (binary units)."""
    cleaned = text.strip().lower().removesuffix("b").removesuffix("i")
    multiplier = 1
    if cleaned and cleaned[-1] in _SIZE_SUFFIXES:
        multiplier = _SIZE_SUFFIXES[cleaned[-1]]
        cleaned = cleaned[:-1]
    try:
        value = int(cleaned) * multiplier
    except ValueError:
        raise ConfigurationError(
            f"setting {name!r} must be a size such as 4096, 64k, 8m or 1g, got {text!r}"
        ) from None
    if value < 0:
        raise ConfigurationError(f"setting {name!r} must not be negative, got {text!r}")
    return value


def _parse_value(name: str, annotation: Any, text: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.strip().lower() in ("", "none", "null"):
            return None
        return _parse_value(name, args[0], text)
    if annotation is bool:
        return parse_bool(name, text)
    if annotation is int:
        if name.endswith("_size") or name.endswith("_bytes"):
            return parse_size(name, text)
        try:
            return int(text)
        except ValueError:
            raise ConfigurationError(f"setting {name!r} must be an integer, got {text!r}") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigurationError(f"setting {name!r} must be a number, got {text!r}") from None
    return text


def options_from_strings(cls: type[_T], values: Mapping[str, str], what: str) -> _T:
    """Build dataclass ``cls`` from string ``values``; unknown names are an error.

    ``what`` names the source in messages (for example ``"leveldb store URL"``).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} in {what}; known options: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {name: _parse_value(name, hints[name], text) for name, text in values.items()}
    return cls(**kwargs)


def env_setting(name: str, default: str) -> str:
    """Return environment variable ``name``, or ``default`` when unset or empty."""
    value = os.environ.get(name, "")
    return value if value else default


@dataclass(frozen=True)
class LevelDBOptions:
    """Tuning for :class:`~statestream.stores.leveldb.LevelDBStore`.

    Set through the store URL query string, e.g.
    ``leveldb:///var/lib/app?sync=true&lru_cache_size=64m``.
    """

    #: fsync every batch. False (default) survives a process crash (kill -9) but
    #: may lose the last batches on power loss; they are then replayed from the
    #: changelog, because the offset is lost together with them.
    sync: bool = False
    #: Memtable size in bytes before it is flushed to a sorted table file.
    write_buffer_size: int = 4 << 20
    #: Block cache in bytes, per store (one store per table and partition).
    lru_cache_size: int = 8 << 20
    #: Data block size in bytes.
    block_size: int = 4096
    #: Bits per key of the bloom filter; 0 disables it. Speeds up misses.
    bloom_filter_bits: int = 10
    #: Compress blocks with snappy.
    compression: bool = True
    #: File handles LevelDB may keep open, per store.
    max_open_files: int = 256
    #: Check checksums on every read (slower; catches disk corruption early).
    paranoid_checks: bool = False

    def __post_init__(self) -> None:
        for name in ("write_buffer_size", "lru_cache_size", "block_size", "max_open_files"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"leveldb option {name} must be positive")
        if self.bloom_filter_bits < 0:
            raise ConfigurationError("leveldb option bloom_filter_bits must be >= 0")


@dataclass(frozen=True)
class AerospikeOptions:
    """Settings for :class:`~statestream.stores.aerospike.AerospikeStore`.

    Set through the store URL query string, e.g.
    ``aerospike://db1:3000,db2:3000/state?set_prefix=orders.&total_timeout=500``.
    Times are in milliseconds unless named otherwise. Every call is bounded by
    a timeout greater than zero, so no call waits forever.
    """

    #: Prepended to the table name to name the table's set (one set per table).
    #: Give each application its own prefix when applications share a namespace.
    set_prefix: str = ""
    #: Record TTL in seconds: 0 keeps the namespace's ``default-ttl``, -1 never
    #: expires, N > 0 expires N seconds after the last write. A TTL needs a
    #: namespace with ``nsup-period`` (or ``allow-ttl-without-nsup``) set.
    ttl: int = 0
    #: Limit for one get, put or batch call, retries included (ms, > 0).
    total_timeout: int = 1000
    #: Socket idle limit within a call (ms); 0 leaves only ``total_timeout``.
    socket_timeout: int = 30000
    #: Retries of a call that failed on a timeout or a lost connection. Safe
    #: for writes too: every write puts a whole value or deletes a key.
    max_retries: int = 2
    #: Limit for the set queries behind iterate, count and clear (ms, > 0).
    query_timeout: int = 60000
    #: Limit for reaching the cluster when the first store opens (ms, > 0).
    connect_timeout: int = 1000
    #: Leave tombstones on delete so deletes survive a cold restart of the
    #: server (Aerospike Enterprise only).
    durable_delete: bool = False
    #: User and password for a cluster with security enabled (Enterprise).
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    #: TLS name of the servers' certificates; setting it turns TLS on.
    tls_name: str | None = None
    #: CA certificate file to verify the servers with (only with ``tls_name``).
    tls_cafile: str | None = None

    def __post_init__(self) -> None:
        if len(self.set_prefix) > 62 or not all(
            c.isascii() and (c.isalnum() or c in "._-") for c in self.set_prefix
        ):
            raise ConfigurationError(
                f"aerospike option set_prefix must be at most 62 letters, digits, '.', '_' "
                f"or '-' (a set name is at most 63 characters), got {self.set_prefix!r}"
            )
        if not -1 <= self.ttl <= 315_360_000:
            raise ConfigurationError(
                f"aerospike option ttl must be -1 (never expire), 0 (namespace default) or "
                f"a number of seconds up to 10 years, got {self.ttl}"
            )
        for name in ("total_timeout", "query_timeout", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(
                    f"aerospike option {name} must be > 0 ms (0 would mean no limit)"
                )
        if self.socket_timeout < 0:
            raise ConfigurationError("aerospike option socket_timeout must be >= 0 ms")
        if not 0 <= self.max_retries <= 10:
            raise ConfigurationError("aerospike option max_retries must be between 0 and 10")
        if self.password is not None and self.user is None:
            raise ConfigurationError("aerospike option password needs the option user")
        if self.tls_cafile is not None and self.tls_name is None:
            raise ConfigurationError("aerospike option tls_cafile needs the option tls_name")
