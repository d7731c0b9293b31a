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
from types import MappingProxyType
from typing import Any, TypeVar

from statestream.errors import ConfigurationError
from statestream.secrets import MaskedStr, is_secret_option, redact_text, redact_url

__all__ = [
    "APP_ENV",
    "DEFAULT_STORE_URL",
    "ERROR_POLICIES",
    "GUARANTEES",
    "AerospikeOptions",
    "AppConfig",
    "LevelDBOptions",
    "check_instance_id",
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
    if is_secret_option(name) and not isinstance(text, MaskedStr):
        # A secret that does not parse is still a secret (a mistyped one is
        # nearly right): the messages below quote the value with repr(), which
        # shows '***' for a MaskedStr. The value itself is returned as a plain str.
        value = _parse_value(name, annotation, MaskedStr(text))
        return str(value) if isinstance(value, str) else value
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

    ``what`` names the source in messages (for example ``"leveldb store URL"``);
    a URL in it is shown with its secrets as ``***``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        secrets = [value for name, value in values.items() if is_secret_option(name)]
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} in {redact_text(what, secrets)}; "
            f"known options: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _parse_value(name, hints[name], text) for name, text in values.items()}
    return cls(**kwargs)


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is a valid static member id, else raise ConfigurationError.

    Kafka's rules for ``group.instance.id``: 1-249 characters of letters,
    digits, ``.``, ``_`` and ``-``, and not ``.`` or ``..``.
    """
    if (
        not isinstance(instance_id, str)
        or not 0 < len(instance_id) <= 249
        or instance_id in (".", "..")
        or not all(c.isascii() and (c.isalnum() or c in "._-") for c in instance_id)
    ):
        raise ConfigurationError(
            f"instance id must be 1-249 letters, digits, '.', '_' or '-' (and not '.' or "
            f"'..'), got {instance_id!r}; give each worker process its own, stable across restarts"
        )
    return instance_id


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
    #: LevelDB's paranoid_checks: a damaged write-ahead log record fails the
    #: open instead of being dropped (with the batches after it applied), and
    #: table metadata and compaction inputs are verified. Costs nothing
    #: measurable (docs/stores.md); off, a damaged log opens silently.
    paranoid_checks: bool = True
    #: Verify the checksum of every table block a read loads (LevelDB's
    #: ReadOptions.verify_checksums), so a damaged block raises instead of
    #: returning wrong values. Costs about a third of the point-read
    #: throughput; writes and opens pay nothing (docs/stores.md).
    verify_checksums: bool = True

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
    #: Limit for one page of the set queries behind iterate, count and clear
    #: (ms, > 0); it also caps the query's socket idle limit, so a frozen
    #: server fails a query within it.
    query_timeout: int = 5000
    #: Limit for reaching the cluster when the first store opens (ms, > 0).
    connect_timeout: int = 1000
    #: Leave tombstones on delete so deletes survive a cold restart of the
    #: server (Aerospike Enterprise only).
    durable_delete: bool = False
    #: Largest encoded size of one write batch (bytes); batches are split to
    #: stay under it, far below the server's 128 MiB message limit.
    max_batch_bytes: int = 8 << 20
    #: The namespace's ``max-record-size`` (bytes, server default 1 MiB): a
    #: larger record is refused before anything is sent.
    max_record_size: int = 1 << 20
    #: Pairs ``iterate`` sorts in memory (bytes of keys and values); beyond
    #: it, sorted runs go to temporary files and are merged.
    iterate_buffer_bytes: int = 32 << 20
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
        for name in ("max_batch_bytes", "max_record_size", "iterate_buffer_bytes"):
            if getattr(self, name) < 1024:
                raise ConfigurationError(f"aerospike option {name} must be >= 1024 bytes")
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


#: Processing guarantees an app may ask for.
GUARANTEES = ("at_least_once",)
#: What happens to a record that cannot be decoded or whose processing raises.
ERROR_POLICIES = ("stop", "skip", "dead_letter")


def _local_url(scheme: str, directory: str) -> str:
    if os.path.isabs(directory):
        return f"{scheme}://{directory}"
    return f"{scheme}://./{directory.removeprefix('./')}"


#: Environment variable of each app setting, shown in ``--help``.
APP_ENV: Mapping[str, str] = MappingProxyType(
    {
        "broker_url": "STATESTREAM_BROKER_URL",
        "store_url": "STATESTREAM_STORE_URL",
        "data_dir": "STATESTREAM_DATA_DIR",
        "commit_interval": "STATESTREAM_COMMIT_INTERVAL",
        "processing_guarantee": "STATESTREAM_PROCESSING_GUARANTEE",
        "partitions": "STATESTREAM_PARTITIONS",
        "error_policy": "STATESTREAM_ERROR_POLICY",
        "dead_letter_topic": "STATESTREAM_DEAD_LETTER_TOPIC",
        "max_queued": "STATESTREAM_MAX_QUEUED",
        "num_standby_replicas": "STATESTREAM_NUM_STANDBY_REPLICAS",
        "acceptable_recovery_lag": "STATESTREAM_ACCEPTABLE_RECOVERY_LAG",
        "probing_rebalance_interval": "STATESTREAM_PROBING_REBALANCE_INTERVAL",
        "instance_id": "STATESTREAM_INSTANCE_ID",
        "strict_keys": "STATESTREAM_STRICT_KEYS",
        "web_port": "STATESTREAM_WEB_PORT",
        "web_host": "STATESTREAM_WEB_HOST",
        "web_token": "STATESTREAM_WEB_TOKEN",
        "web_url": "STATESTREAM_WEB_URL",
        "query_share": "STATESTREAM_QUERY_SHARE",
        "gc_threshold": "STATESTREAM_GC_THRESHOLD",
    }
)


@dataclass(frozen=True)
class AppConfig:
    """Settings of one statestream app; every field has an environment default.

    Resolve it with :meth:`resolve`, which fills fields left as ``None`` from
    ``STATESTREAM_*`` variables and then from built-in defaults.
    """

    app_id: str
    #: ``kafka://host:9092`` or ``embedded:///dir``; default: an embedded log
    #: under the data directory.
    broker_url: str
    #: Where table state lives; default: LevelDB under the data directory.
    store_url: str
    data_dir: str
    #: Seconds between commits of each partition.
    commit_interval: float
    processing_guarantee: str
    #: Partition count used to create missing source and output topics
    #: (None: topics must already exist).
    partitions: int | None
    error_policy: str
    dead_letter_topic: str
    #: Records queued per partition before its fetching is paused.
    max_queued: int
    #: Standby copies of each partition's local tables kept by other workers.
    num_standby_replicas: int = 0
    #: Records a local copy may be behind the changelog end and still take a
    #: partition over at once; a copy further behind warms up as a standby first.
    acceptable_recovery_lag: int = 10_000
    #: Seconds between rebalances that move partitions to caught-up warm-ups.
    probing_rebalance_interval: float = 60.0
    #: Static group membership id (Kafka ``group.instance.id``); None: dynamic.
    instance_id: str | None = None
    #: A table key written on a partition it does not hash to stops the
    #: worker instead of logging a warning (every table; tables can set it too).
    strict_keys: bool = False
    #: Port of the HTTP endpoint (queries, /health, /metrics; docs/queries.md);
    #: None: no endpoint; 0: any free port.
    web_port: int | None = None
    #: Address the endpoint binds to; the loopback unless told otherwise.
    web_host: str = "127.0.0.1"
    #: Bearer token every request must carry (None: none asked). A secret:
    #: never shown (repr, logs, status).
    web_token: str | None = None
    #: The endpoint's URL other workers redirect to (default: http://host:port).
    web_url: str | None = None
    #: Share of the time queries may take while the worker is busy (the rest
    #: is processing's; statestream.query.pacing). 1: queries are never paced.
    query_share: float = 0.02
    #: Allocations between two collections of the garbage collector's
    #: youngest generation while the worker runs (statestream.worker.collector);
    #: 0 leaves the interpreter's own settings.
    gc_threshold: int = 50_000

    @classmethod
    def resolve(cls, app_id: str, **given: Any) -> AppConfig:
        """Return the config for ``app_id``: explicit values, then environment, then defaults."""
        unknown = sorted(set(given) - set(APP_ENV))
        if unknown:
            raise ConfigurationError(
                f"unknown app setting(s) {', '.join(unknown)}; known: {', '.join(sorted(APP_ENV))}"
            )
        if (
            not isinstance(app_id, str)
            or not app_id
            or not all(c.isalnum() or c in "._-" for c in app_id)
        ):
            raise ConfigurationError(
                f"app id must be letters, digits, '.', '_' or '-', got {app_id!r}"
            )
        raw: dict[str, Any] = {}
        for name, env in APP_ENV.items():
            value = given.get(name)
            if value is None:
                value = os.environ.get(env) or None
            raw[name] = value
        data_dir = str(raw["data_dir"] or "./statestream-data")
        config = cls(
            app_id=app_id,
            broker_url=str(raw["broker_url"] or _local_url("embedded", f"{data_dir}/log")),
            store_url=str(raw["store_url"] or _local_url("leveldb", f"{data_dir}/{app_id}")),
            data_dir=data_dir,
            commit_interval=_as(float, "commit_interval", raw["commit_interval"], 1.0),
            processing_guarantee=str(raw["processing_guarantee"] or "at_least_once"),
            partitions=_as(int, "partitions", raw["partitions"], None),
            error_policy=str(raw["error_policy"] or "stop"),
            dead_letter_topic=str(raw["dead_letter_topic"] or f"{app_id}-dead-letters"),
            max_queued=_as(int, "max_queued", raw["max_queued"], 5000),
            num_standby_replicas=_as(int, "num_standby_replicas", raw["num_standby_replicas"], 0),
            acceptable_recovery_lag=_as(
                int, "acceptable_recovery_lag", raw["acceptable_recovery_lag"], 10_000
            ),
            probing_rebalance_interval=_as(
                float, "probing_rebalance_interval", raw["probing_rebalance_interval"], 60.0
            ),
            instance_id=None if raw["instance_id"] is None else str(raw["instance_id"]),
            strict_keys=_flag("strict_keys", raw["strict_keys"]),
            web_port=_as(int, "web_port", raw["web_port"], None),
            web_host=str(raw["web_host"] or "127.0.0.1"),
            web_token=None if raw["web_token"] is None else str(raw["web_token"]),
            web_url=None if raw["web_url"] is None else str(raw["web_url"]).rstrip("/"),
            query_share=_as(float, "query_share", raw["query_share"], 0.02),
            gc_threshold=_as(int, "gc_threshold", raw["gc_threshold"], 50_000),
        )
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` naming the first invalid setting."""
        if self.commit_interval <= 0:
            raise ConfigurationError(
                f"commit_interval must be > 0 seconds, got {self.commit_interval}"
            )
        if self.processing_guarantee not in GUARANTEES:
            raise ConfigurationError(
                f"processing_guarantee {self.processing_guarantee!r} is not supported; "
                f"supported: {', '.join(GUARANTEES)}"
            )
        if self.partitions is not None and self.partitions < 1:
            raise ConfigurationError(f"partitions must be >= 1, got {self.partitions}")
        if self.error_policy not in ERROR_POLICIES:
            raise ConfigurationError(
                f"error_policy must be one of {', '.join(ERROR_POLICIES)}, "
                f"got {self.error_policy!r}"
            )
        if self.max_queued < 1:
            raise ConfigurationError(f"max_queued must be >= 1, got {self.max_queued}")
        if self.num_standby_replicas < 0:
            raise ConfigurationError(
                f"num_standby_replicas must be >= 0, got {self.num_standby_replicas}"
            )
        if self.acceptable_recovery_lag < 0:
            raise ConfigurationError(
                f"acceptable_recovery_lag must be >= 0 records, got {self.acceptable_recovery_lag}"
            )
        if self.probing_rebalance_interval <= 0:
            raise ConfigurationError(
                "probing_rebalance_interval must be > 0 seconds, got "
                f"{self.probing_rebalance_interval}"
            )
        if self.instance_id is not None:
            check_instance_id(self.instance_id)
        if self.gc_threshold < 0:
            raise ConfigurationError(
                f"gc_threshold must be >= 0 allocations (0: Python's own setting), got "
                f"{self.gc_threshold}"
            )
        self._validate_queries()

    def _validate_queries(self) -> None:
        """The HTTP endpoint's and the queries' settings (:meth:`validate`)."""
        if self.web_port is not None and not 0 <= self.web_port <= 65535:
            raise ConfigurationError(f"web_port must be 0 to 65535, got {self.web_port}")
        if self.web_token is not None and not self.web_token.strip():
            raise ConfigurationError("web_token is empty; give a token, or leave it unset")
        if not 0 < self.query_share <= 1:
            raise ConfigurationError(
                f"query_share must be above 0 and at most 1 (a share of the time), got "
                f"{self.query_share}"
            )
        if self.web_url is not None and not self.web_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"web_url must be an http:// or https:// URL, got {self.web_url!r}"
            )

    def __repr__(self) -> str:
        # The URLs may carry passwords (``?sasl_plain_password=...``, ``user:pw@``).
        shown = (
            f"{f.name}={_shown(f.name, v)!r}"
            for f in dataclasses.fields(self)
            for v in (getattr(self, f.name),)
        )
        return f"{type(self).__name__}({', '.join(shown)})"


#: Settings of AppConfig that are URLs, shown with their secrets as ``***``.
_URL_SETTINGS = frozenset({"broker_url", "store_url"})
#: Settings that are secrets through and through, never shown.
_SECRET_SETTINGS = frozenset({"web_token"})


def _shown(name: str, value: Any) -> Any:
    if name in _URL_SETTINGS:
        return redact_url(value)
    if name in _SECRET_SETTINGS and value is not None:
        return "***"
    return value


def _flag(name: str, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    return parse_bool(name, str(value))


def _as(kind: type[Any], name: str, value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"setting {name!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        ) from None
