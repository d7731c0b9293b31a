"""``KeyGuard``: notices table keys written on a partition they do not belong to.

Tables are sharded by source partition. A key written on partition ``p``
belongs there only if the source topic's partitioner would send that key to
``p``: otherwise the same key gets a separate count on every partition it
shows up on (an unkeyed input counted per word is the classic case), and
nothing looks wrong until the totals are added up. No stream framework warns
about this; statestream does.

The check hashes the key as the *source topic's* key codec encodes it (the
table's codec may differ; the source's bytes are what the partitioner saw)
with the default partitioner (murmur2, as Kafka's Java client). It runs only
when a key enters the shard's buffer (a key read or written again costs
nothing), and only on a sample of those, taken by the shard: the first
:data:`CHECK_FIRST` keys of each shard, then one in :data:`CHECK_EVERY`. A mis-keyed table writes
most of its keys on a wrong partition, so the sample finds it within its
first keys, and a pure-Python murmur2 per key (which doubled the cost of
writing new keys) stays under 2% of it.

A mismatch logs one warning per table naming the table, the key, both
partitions and the re-keying API; with ``strict_keys`` it raises
:class:`~statestream.errors.ConfigurationError`, which stops the worker.

Thread ownership: the partition thread that owns the shard it guards (the
set of tables already warned about is shared and only ever grows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from statestream.errors import ConfigurationError
from statestream.log.partitioner import default_partition
from statestream.serde import Codec

__all__ = ["CHECK_EVERY", "CHECK_FIRST", "KeyGuard"]

#: New keys of a shard that are all checked, and the sampling after them.
CHECK_FIRST = 256
CHECK_EVERY = 64

log = logging.getLogger("statestream.tables")

_HINT = (
    "re-key the records first with ctx.group_by(stream, key, value) and count them in a "
    "processor with topics = [repartition(stream)] (docs/tables.md, 'Keys and partitions')"
)


class KeyGuard:
    """Checks the keys entering one table shard (see the module docstring)."""

    def __init__(
        self,
        table: str,
        partition: int,
        partitions: int,
        table_codec: Codec,
        topic_codec: Callable[[str], Codec],
        *,
        strict: bool,
        warned: set[str],
    ) -> None:
        self.table = table
        self.partition = partition
        self.partitions = partitions
        self.table_codec = table_codec
        self.topic_codec = topic_codec
        self.strict = strict
        self._warned = warned
        # Per topic: its key codec, and whether it encodes exactly like the table's.
        self._codecs: dict[str, tuple[Codec, bool]] = {}

    def _codec(self, topic: str) -> tuple[Codec, bool]:
        found = self._codecs.get(topic)
        if found is None:
            codec = self.topic_codec(topic)
            mine = self.table_codec
            same = codec is mine or (type(codec) is type(mine) and vars(codec) == vars(mine))
            found = self._codecs[topic] = (codec, same)
        return found

    def __call__(self, kb: bytes, topic: str | None) -> None:
        """Check key ``kb`` (table-encoded) written while processing a record of ``topic``."""
        if topic is None or (self.table in self._warned and not self.strict):
            return
        codec, same = self._codec(topic)
        raw = kb if same else codec.encode(self.table_codec.decode(kb))
        home = default_partition(raw, self.partitions)
        if home == self.partition:
            return
        key = self.table_codec.decode(kb)
        message = (
            f"table {self.table!r}: key {key!r} was written on partition {self.partition}, "
            f"but topic {topic!r} partitions that key to {home}, so the key's state is split "
            f"over partitions; {_HINT}"
        )
        if self.strict:
            raise ConfigurationError(f"{message} (strict_keys is set)")
        self._warned.add(self.table)
        log.warning(
            "%s. Warned once per table; set strict_keys=True to make it an error",
            message,
            extra={"table": self.table, "partition": self.partition},
        )
