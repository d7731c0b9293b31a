"""Settings, topics and partitions of the embedded log (in memory; stored by ``storage``).

:class:`EmbeddedOptions` is the broker URL's query string; :class:`Topic`
validates a topic's Kafka-style config and holds the settings the embedded
log acts on; :class:`Partition` holds one partition's watermarks and keys;
:class:`EmbeddedDelivery` is the outcome of one send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from statestream.errors import ConfigurationError, ProduceError
from statestream.log.base import CleanupPolicy, TopicDescription, normalize_policy
from statestream.log.embedded.codec import OFFSET, TopicMeta, partition_meta_key, record_prefix
from statestream.types import TopicPartition

__all__ = [
    "HONOURED_CONFIGS",
    "IGNORED_CONFIGS",
    "NO_TOMBSTONES",
    "EmbeddedDelivery",
    "EmbeddedOptions",
    "Partition",
    "Topic",
]

#: ``Partition.tombstone_due`` when no kept tombstone awaits removal.
NO_TOMBSTONES = 2**63 - 1


@dataclass(frozen=True)
class EmbeddedOptions:
    """Settings of the embedded log, from the broker URL's query string.

    For example ``embedded:///var/lib/app/log?sync=true&cleanup_interval_ms=5000``.
    Times are in milliseconds; sizes accept ``64k``, ``8m``, ``1g``.
    """

    #: fsync on every flush, commit and transaction. False (default) already
    #: survives a process crash (kill -9): a flushed record is in the
    #: operating system's hands. True also survives power loss, at a cost of
    #: one disk sync per flush.
    sync: bool = False
    #: ``retention.ms`` of topics that do not set it (Kafka's default, 7 days);
    #: -1 keeps records forever. Applies to ``delete`` and ``compact,delete``.
    retention_ms: int = 604_800_000
    #: ``delete.retention.ms`` of compacted topics that do not set it (Kafka's
    #: default, 1 day): how long a tombstone survives after compaction first saw it.
    delete_retention_ms: int = 86_400_000
    #: ``min.cleanable.dirty.ratio`` of compacted topics that do not set it: the
    #: background cleaner compacts a partition once this share of its records
    #: were written since its last compaction. Explicit ``compact()`` ignores it.
    min_cleanable_dirty_ratio: float = 0.5
    #: How often the background thread applies retention and compaction; 0
    #: turns it off (then only explicit ``compact()``/``enforce_retention()`` do).
    cleanup_interval_ms: int = 30_000
    #: Records sent but not flushed are written by a background thread after
    #: at most this long, as Kafka's producer sends in the background; 0 turns
    #: it off (records are then written only by ``flush()``).
    auto_flush_ms: int = 10
    #: A producer holding this many unflushed bytes flushes inside ``send()``,
    #: bounding memory like Kafka's ``buffer.memory``.
    buffer_bytes: int = 32 << 20
    #: LevelDB memtable size in bytes.
    write_buffer_size: int = 16 << 20
    #: LevelDB block cache in bytes.
    lru_cache_size: int = 32 << 20
    #: LevelDB data block size in bytes.
    block_size: int = 16 << 10
    #: Compress LevelDB blocks with snappy.
    compression: bool = True
    #: File handles LevelDB may keep open.
    max_open_files: int = 500

    def __post_init__(self) -> None:
        if self.retention_ms < -1:
            raise ConfigurationError("embedded option retention_ms must be -1 (forever) or >= 0")
        for name in ("delete_retention_ms", "cleanup_interval_ms", "auto_flush_ms"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"embedded option {name} must be >= 0 ms")
        if not 0.0 <= self.min_cleanable_dirty_ratio <= 1.0:
            raise ConfigurationError(
                "embedded option min_cleanable_dirty_ratio must be between 0 and 1"
            )
        for name in (
            "buffer_bytes",
            "write_buffer_size",
            "lru_cache_size",
            "block_size",
            "max_open_files",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"embedded option {name} must be positive")


#: Kafka topic settings the embedded log acts on.
HONOURED_CONFIGS = frozenset(
    {
        "cleanup.policy",
        "retention.ms",
        "delete.retention.ms",
        "min.compaction.lag.ms",
        "min.cleanable.dirty.ratio",
    }
)
#: Kafka topic settings accepted (so one TopicSpec serves both transports) and
#: ignored: segments, indexes, replication, compression and tiered storage do
#: not exist in the embedded log.
IGNORED_CONFIGS = frozenset(
    {
        "compression.type",
        "file.delete.delay.ms",
        "flush.messages",
        "flush.ms",
        "follower.replication.throttled.replicas",
        "index.interval.bytes",
        "leader.replication.throttled.replicas",
        "local.retention.bytes",
        "local.retention.ms",
        "max.compaction.lag.ms",
        "max.message.bytes",
        "message.downconversion.enable",
        "message.format.version",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.difference.max.ms",
        "message.timestamp.type",
        "min.insync.replicas",
        "preallocate",
        "remote.log.copy.disable",
        "remote.log.delete.on.disable",
        "remote.storage.enable",
        "retention.bytes",
        "segment.bytes",
        "segment.index.bytes",
        "segment.jitter.ms",
        "segment.ms",
        "unclean.leader.election.enable",
    }
)


def _config_int(topic: str, config: Mapping[str, str], name: str, default: int, low: int) -> int:
    text = config.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(
            f"topic {topic!r}: {name} must be an integer, got {text!r}"
        ) from None
    if value < low:
        raise ConfigurationError(f"topic {topic!r}: {name} must be >= {low}, got {value}")
    return value


class Topic:
    """One topic incarnation and its settings. Guarded by the log's write lock."""

    __slots__ = (
        "compact",
        "config",
        "delete",
        "delete_retention_ms",
        "deleted",
        "dirty_ratio",
        "min_lag_ms",
        "name",
        "partitions",
        "policy",
        "retention_ms",
        "topic_id",
    )

    def __init__(self, name: str, meta: TopicMeta, options: EmbeddedOptions) -> None:
        config = meta.config
        for setting in config:
            if setting not in HONOURED_CONFIGS and setting not in IGNORED_CONFIGS:
                raise ConfigurationError(
                    f"topic {name!r}: unknown topic config {setting!r}; the embedded log "
                    "accepts Kafka's topic configs and acts on "
                    f"{', '.join(sorted(HONOURED_CONFIGS))}"
                )
        self.name = name
        self.topic_id = meta.topic_id
        self.config = dict(config)
        self.policy: CleanupPolicy = normalize_policy(config.get("cleanup.policy", "delete"))
        self.compact = "compact" in self.policy
        self.delete = "delete" in self.policy
        self.retention_ms = _config_int(name, config, "retention.ms", options.retention_ms, -1)
        self.delete_retention_ms = _config_int(
            name, config, "delete.retention.ms", options.delete_retention_ms, 0
        )
        self.min_lag_ms = _config_int(name, config, "min.compaction.lag.ms", 0, 0)
        ratio_text = config.get("min.cleanable.dirty.ratio")
        try:
            ratio = float(ratio_text) if ratio_text is not None else None
        except ValueError:
            ratio = -1.0
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise ConfigurationError(
                f"topic {name!r}: min.cleanable.dirty.ratio must be a number between 0 and 1, "
                f"got {ratio_text!r}"
            )
        self.dirty_ratio = options.min_cleanable_dirty_ratio if ratio is None else ratio
        self.deleted = False
        self.partitions = [Partition(self, i) for i in range(meta.partitions)]

    def describe(self) -> TopicDescription:
        """Return the public description of this topic."""
        return TopicDescription(self.name, len(self.partitions), self.policy, dict(self.config))


class Partition:
    """One partition's watermarks and key prefixes.

    ``high`` (next offset) changes only under the log's write lock, after the
    records below it are written; ``low`` and the compaction fields only in
    the cleaner. Readers read them without a lock (an int read is atomic).
    """

    __slots__ = (
        "clean_key",
        "clean_live",
        "cleaned",
        "high",
        "index",
        "low",
        "next_key",
        "prefix",
        "start_key",
        "tombstone_due",
        "topic",
        "tp",
    )

    def __init__(self, topic: Topic, index: int) -> None:
        self.topic = topic
        self.index = index
        self.tp = TopicPartition(topic.name, index)
        self.prefix = record_prefix(topic.topic_id, index)
        self.next_key = partition_meta_key(topic.topic_id, index, b"n")
        self.start_key = partition_meta_key(topic.topic_id, index, b"s")
        self.clean_key = partition_meta_key(topic.topic_id, index, b"c")
        self.high = 0
        self.low = 0
        #: Records below this offset were compacted against every key seen up to it.
        self.cleaned = 0
        #: Records the last compaction kept (None: not compacted since opening).
        self.clean_live: int | None = None
        #: Earliest time (ms) a kept tombstone may be removed (None: unknown).
        self.tombstone_due: int | None = None

    def key(self, offset: int) -> bytes:
        """Return the database key of the record at ``offset``."""
        return self.prefix + OFFSET.pack(offset)


class EmbeddedDelivery:
    """The outcome of one send: its partition now, its offset once written."""

    __slots__ = ("_error", "_offset", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._offset = -1
        self._error: str | None = None

    @property
    def done(self) -> bool:
        """True once the record was written (or failed)."""
        return self._offset >= 0 or self._error is not None

    @property
    def offset(self) -> int:
        """The record's offset; raises ``ProduceError`` before flush or after a failure."""
        if self._offset >= 0:
            return self._offset
        if self._error is not None:
            raise ProduceError(self._error)
        raise ProduceError(
            "the record is not written yet: call flush() (for a transactional producer: "
            "commit_transaction()) before reading its offset"
        )

    def fail(self, message: str) -> None:
        """Mark the record as not written."""
        self._error = message

    def __repr__(self) -> str:
        state = self._offset if self._offset >= 0 else (self._error or "pending")
        return f"EmbeddedDelivery(partition={self.partition}, {state})"
