"""What a processor sees of the record it is processing, and how it sends output.

Thread ownership: a :class:`Context` belongs to one partition thread and is
reused for every record of that partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from statestream.serde import Codec
from statestream.types import Headers

__all__ = ["ORIGIN", "Context", "Message", "Sender"]

#: Header of a re-keyed record: ``topic:partition:offset:n``, the record whose
#: processing sent it and which of its ``group_by`` calls it was.
ORIGIN = "statestream-origin"


class Message(NamedTuple):
    """A decoded source record (immutable; a named tuple, cheap to build per record)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp: int  # milliseconds since the epoch
    headers: Headers = ()


#: Sends one encoded record: (topic, key, value, partition, headers).
Sender = Callable[[str, bytes | None, bytes | None, int | None, Headers], None]


class Context:
    """The processing context: the current record's coordinates and ``send``.

    Records sent with :meth:`send` and :meth:`group_by` are flushed before
    the source offsets of the record that sent them are committed
    (at-least-once output). They reach the producer in batches, at the end
    of each processed batch of records at the latest (see
    :mod:`statestream.worker.outputs`); a record whose processing fails has
    its outputs dropped with its table changes, unless they were already
    handed over.
    """

    def __init__(
        self,
        sender: Sender,
        codecs: Callable[[str], tuple[Codec, Codec]],
        repartition: Callable[[str], str] | None = None,
    ) -> None:
        self._sender = sender
        self._codecs = codecs
        self._repartition = repartition
        self.message: Message | None = None
        # Numbering of the current record's group_by calls (its origin header).
        self._seq_of: Message | None = None
        self._seq = 0

    def _current(self) -> Message:
        if self.message is None:
            raise RuntimeError("no record is being processed")
        return self.message

    @property
    def topic(self) -> str:
        """Topic of the record being processed."""
        return self._current().topic

    @property
    def partition(self) -> int:
        """Partition of the record being processed."""
        return self._current().partition

    @property
    def offset(self) -> int:
        """Offset of the record being processed."""
        return self._current().offset

    @property
    def key(self) -> Any:
        """Decoded key of the record being processed."""
        return self._current().key

    @property
    def value(self) -> Any:
        """Decoded value of the record being processed."""
        return self._current().value

    @property
    def timestamp(self) -> int:
        """Timestamp (ms) of the record being processed."""
        return self._current().timestamp

    @property
    def headers(self) -> Headers:
        """Headers of the record being processed."""
        return self._current().headers

    def send(
        self,
        topic: str,
        key: Any,
        value: Any,
        *,
        partition: int | None = None,
        headers: Headers = (),
    ) -> None:
        """Send a record to ``topic``, encoded with that topic's codecs.

        ``partition=None`` partitions by key like Kafka's default partitioner.
        A ``None`` key is sent without a key; a ``None`` value is a tombstone.
        """
        key_codec, value_codec = self._codecs(topic)
        kb = None if key is None else key_codec.encode(key)
        vb = None if value is None else value_codec.encode(value)
        self._sender(topic, kb, vb, partition, headers)

    def group_by(self, stream: str, key: Any, value: Any, *, headers: Headers = ()) -> None:
        """Re-key: send ``(key, value)`` to the repartition stream ``stream``.

        A processor whose ``topics`` include :func:`~statestream.processor.repartition`
        ``(stream)`` receives it on the partition ``key`` hashes to (murmur2,
        as Kafka's Java client), so every record of one key meets the same
        table partition there, whatever partition the input had. The stream
        is the internal topic ``<app id>-<stream>-repartition``, which the
        worker creates with the source topics' partition count. Records are
        sent under the commit protocol, like :meth:`send`: flushed and
        acknowledged before the source offsets that produced them are
        committed, so a crash at any step loses none (at-least-once).
        """
        if self._repartition is None:
            raise RuntimeError("group_by() needs a worker's context")
        if key is None:
            raise ValueError(f"group_by({stream!r}, ...) needs a key to partition by, got None")
        message = self._current()
        if self._seq_of is not message:
            self._seq_of, self._seq = message, 0
        origin = f"{message.topic}:{message.partition}:{message.offset}:{self._seq}"
        self._seq += 1
        self.send(
            self._repartition(stream), key, value, headers=(*headers, (ORIGIN, origin.encode()))
        )
