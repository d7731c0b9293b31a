"""What a processor sees of the record it is processing, and how it sends output.

Thread ownership: a :class:`Context` belongs to one partition thread and is
reused for every record of that partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from statestream.serde import Codec
from statestream.types import Headers

__all__ = ["Context", "Message", "Sender"]


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

    Records sent with :meth:`send` are flushed before the source offsets of
    the record that sent them are committed (at-least-once output).
    """

    def __init__(self, sender: Sender, codecs: Callable[[str], tuple[Codec, Codec]]) -> None:
        self._sender = sender
        self._codecs = codecs
        self.message: Message | None = None

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
