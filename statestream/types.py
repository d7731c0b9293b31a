"""Small value types shared by every layer: topic partitions and records."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Headers", "Record", "TopicPartition"]

#: Record headers: ordered (name, value) pairs; a name may repeat, as in Kafka.
Headers = tuple[tuple[str, bytes], ...]


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


class Record(NamedTuple):
    """One record read from a log (immutable).

    ``timestamp`` is in milliseconds since the epoch. ``key``/``value`` are raw
    bytes (``None`` value: a tombstone). A named tuple rather than a frozen
    dataclass: one is created per record read, and a frozen dataclass takes
    three times as long to build.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Headers = ()

    @property
    def tp(self) -> TopicPartition:
        """The record's topic partition."""
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        """Return the last value of header ``name``, or ``None``."""
        found: bytes | None = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found
