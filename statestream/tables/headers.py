"""Changelog record headers: which source record produced a change.

Every changelog record carries the offset (and topic) of the source record
whose processing produced it. Recovery skips records whose source offset is at
or beyond the committed source offset: they belong to work that will be
processed again.
"""

from __future__ import annotations

import struct

from statestream.types import Headers, Record

__all__ = ["SOURCE_OFFSET", "SOURCE_TOPIC", "source_headers", "source_of"]

#: Header carrying the source offset, 8 bytes big-endian signed.
SOURCE_OFFSET = "statestream-src-offset"
#: Header carrying the source topic, UTF-8.
SOURCE_TOPIC = "statestream-src-topic"

_OFFSET = struct.Struct(">q")


def source_headers(topic: str, offset: int) -> Headers:
    """Return the headers that mark a changelog record as produced by ``topic``@``offset``."""
    return ((SOURCE_OFFSET, _OFFSET.pack(offset)), (SOURCE_TOPIC, topic.encode("utf-8")))


def source_of(record: Record) -> tuple[str, int] | None:
    """Return ``(topic, offset)`` of the source record behind ``record``, if it says."""
    raw_offset = raw_topic = None
    for name, value in record.headers:
        if name == SOURCE_OFFSET:
            raw_offset = value
        elif name == SOURCE_TOPIC:
            raw_topic = value
    if raw_offset is None or raw_topic is None or len(raw_offset) != _OFFSET.size:
        return None
    offset: int = _OFFSET.unpack(raw_offset)[0]
    return raw_topic.decode("utf-8", "replace"), offset
