"""Key layout and binary record encoding of the embedded log.

Everything lives in one LevelDB database, ordered by key:

========================================  =====================================
key                                       value
========================================  =====================================
``m`` ``version``                         format version (ASCII)
``m`` ``next_topic_id``                   u32: id of the next topic created
``t`` topic name                          topic metadata (:func:`encode_topic`)
``p`` topic id, partition, ``n``          u64: next offset (high watermark)
``p`` topic id, partition, ``s``          u64: log start offset (low watermark)
``p`` topic id, partition, ``c``          u64: compaction checkpoint
``r`` topic id, partition, offset         one record (:func:`encode_record`)
``g`` group length, group, topic, NUL,    u64: committed offset of the group
partition
========================================  =====================================

Topic ids, partitions and offsets are big-endian, so one partition's records
are one contiguous key range in offset order and a fetch is a range scan.
Records are keyed by a topic *id* rather than the name: a deleted topic's
records can be purged in the background while a topic of the same name is
created again, starting at offset 0 like Kafka.

A record value is ``flags:u8 timestamp:i64 [horizon:i64] [klen:u32 key]
[count:u16 (nlen:u16 name vlen:u32 value)*] [value]``: the value comes last so
its length is implied, and the common case (key, value, no headers) decodes
with one ``unpack_from`` and two slices.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import NamedTuple

from statestream.types import Headers, Record

__all__ = [
    "FORMAT_VERSION",
    "HAS_HEADERS",
    "HAS_HORIZON",
    "HAS_KEY",
    "HAS_VALUE",
    "NEXT_TOPIC_ID_KEY",
    "OFFSET",
    "VERSION_KEY",
    "RecordMeta",
    "TopicMeta",
    "decode_record",
    "decode_topic",
    "encode_keyed_batch",
    "encode_record",
    "encode_topic",
    "group_key",
    "group_prefix",
    "parse_group_key",
    "partition_meta_key",
    "peek_record",
    "record_prefix",
    "topic_key",
    "with_horizon",
]

FORMAT_VERSION = b"1"
VERSION_KEY = b"mversion"
NEXT_TOPIC_ID_KEY = b"mnext_topic_id"

HAS_KEY = 1
HAS_VALUE = 2
HAS_HEADERS = 4
#: A tombstone whose compaction horizon is set (see ``cleaner``).
HAS_HORIZON = 8

OFFSET = struct.Struct(">Q")
U32 = struct.Struct(">I")
_ID_PART = struct.Struct(">II")
_HEAD = struct.Struct(">Bq")  # flags, timestamp
_HEAD_KEY = struct.Struct(">BqI")  # flags, timestamp, key length
_HORIZON = struct.Struct(">q")
_U16 = struct.Struct(">H")
_HEADER_VALUE_LEN = struct.Struct(">I")


def topic_key(name: str) -> bytes:
    """Return the metadata key of topic ``name``."""
    return b"t" + name.encode()


def record_prefix(topic_id: int, partition: int) -> bytes:
    """Return the key prefix of every record of one partition (append an ``OFFSET``)."""
    return b"r" + _ID_PART.pack(topic_id, partition)


def partition_meta_key(topic_id: int, partition: int, kind: bytes) -> bytes:
    """Return a partition metadata key; ``kind`` is ``n``, ``s`` or ``c`` (see module doc)."""
    return b"p" + _ID_PART.pack(topic_id, partition) + kind


def group_prefix(group: str) -> bytes:
    """Return the key prefix of every committed offset of ``group``."""
    raw = group.encode()
    # A length prefix rather than a separator: group ids may contain any character.
    return b"g" + _U16.pack(len(raw)) + raw


def group_key(group: str, topic: str, partition: int) -> bytes:
    """Return the key of ``group``'s committed offset for one partition."""
    return group_prefix(group) + topic.encode() + b"\x00" + U32.pack(partition)


def parse_group_key(key: bytes) -> tuple[str, str, int]:
    """Return ``(group, topic, partition)`` of a key made by :func:`group_key`."""
    (length,) = _U16.unpack_from(key, 1)
    group = key[3 : 3 + length].decode()
    # The partition is the last 4 bytes, after the NUL that ends the topic name.
    topic = key[3 + length : -5]
    return group, topic.decode(), U32.unpack_from(key, len(key) - 4)[0]


class TopicMeta(NamedTuple):
    """What the log stores about one topic."""

    topic_id: int
    partitions: int
    config: dict[str, str]


def encode_topic(meta: TopicMeta) -> bytes:
    """Encode topic metadata (small, written once: JSON of strings is fine here)."""
    document = {"id": meta.topic_id, "partitions": meta.partitions, "config": meta.config}
    return json.dumps(document, sort_keys=True).encode()


def decode_topic(raw: bytes) -> TopicMeta:
    """Decode what :func:`encode_topic` wrote; raises ``ValueError`` if malformed."""
    document = json.loads(raw)
    config = document["config"]
    if not isinstance(config, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in config.items()
    ):
        raise ValueError("topic config must map strings to strings")
    return TopicMeta(int(document["id"]), int(document["partitions"]), dict(config))


def encode_record(
    key: bytes | None, value: bytes | None, timestamp: int, headers: Headers
) -> bytes:
    """Encode one record; raises ``struct.error`` for out-of-range numbers."""
    if not headers:
        if key is not None:
            head = _HEAD_KEY.pack(HAS_KEY | HAS_VALUE, timestamp, len(key))
            if value is not None:
                return head + key + value
            return _HEAD_KEY.pack(HAS_KEY, timestamp, len(key)) + key
        if value is not None:
            return _HEAD.pack(HAS_VALUE, timestamp) + value
        return _HEAD.pack(0, timestamp)
    flags = (
        HAS_HEADERS | (HAS_KEY if key is not None else 0) | (HAS_VALUE if value is not None else 0)
    )
    parts = [_HEAD.pack(flags, timestamp)]
    if key is not None:
        parts += (U32.pack(len(key)), key)
    parts.append(_U16.pack(len(headers)))
    for name, data in headers:
        raw_name = name.encode()
        parts += (_U16.pack(len(raw_name)), raw_name, _HEADER_VALUE_LEN.pack(len(data)), data)
    if value is not None:
        parts.append(value)
    return b"".join(parts)


def _header_item(item: object) -> bytes:
    """One encoded header (name length, name, value length, value), as
    :func:`encode_record` writes it; raises ``TypeError`` for a bad pair."""
    if (
        type(item) is not tuple
        or len(item) != 2
        or not isinstance(item[0], str)
        or not isinstance(item[1], bytes)
    ):
        raise TypeError(f"record headers must be (str, bytes) pairs, got {item!r}")
    raw_name = item[0].encode()
    data = item[1]
    return b"".join((_U16.pack(len(raw_name)), raw_name, _HEADER_VALUE_LEN.pack(len(data)), data))


def encode_keyed_batch(
    records: Sequence[tuple[bytes | None, bytes | None, Headers]], timestamp: int
) -> list[bytes] | None:
    """Encode ``(key, value, headers)`` records sharing ``timestamp``, each exactly
    as :func:`encode_record` would.

    Returns None, having encoded nothing, if a record has no key or a key or
    value that is not ``bytes`` (the caller sends those one by one). Headers
    objects, and header pairs, shared by several records (a changelog's
    records of one source record; the topic and epoch headers of all of
    them) are encoded once. Raises ``TypeError`` for headers that are not
    ``(str, bytes)`` pairs and ``struct.error`` for a timestamp out of range.
    """
    with_headers = _HEAD.pack(HAS_HEADERS | HAS_KEY | HAS_VALUE, timestamp)
    tombstone = _HEAD.pack(HAS_HEADERS | HAS_KEY, timestamp)
    plain = _HEAD.pack(HAS_KEY | HAS_VALUE, timestamp)
    plain_tombstone = _HEAD.pack(HAS_KEY, timestamp)
    pack_len = U32.pack
    pack_count = _U16.pack
    # By identity: ``records`` holds every headers object, and they hold their
    # pairs, so no id is reused while this runs.
    blocks: dict[int, bytes] = {}
    items: dict[int, bytes] = {}
    out: list[bytes] = []
    append = out.append
    for key, value, headers in records:
        if type(key) is not bytes or (value is not None and type(value) is not bytes):
            return None
        if not headers:
            if value is None:
                append(plain_tombstone + pack_len(len(key)) + key)
            else:
                append(b"".join((plain, pack_len(len(key)), key, value)))
            continue
        block = blocks.get(id(headers))
        if block is None:
            parts = [pack_count(len(headers))]
            for item in headers:
                encoded = items.get(id(item))
                if encoded is None:
                    encoded = items[id(item)] = _header_item(item)
                parts.append(encoded)
            block = blocks[id(headers)] = b"".join(parts)
        if value is None:
            append(b"".join((tombstone, pack_len(len(key)), key, block)))
        else:
            append(b"".join((with_headers, pack_len(len(key)), key, block, value)))
    return out


def decode_record(topic: str, partition: int, offset: int, raw: bytes) -> Record:
    """Decode a record value written by :func:`encode_record`."""
    flags = raw[0]
    if flags == HAS_KEY | HAS_VALUE:  # the common case, decoded with one unpack
        _, timestamp, klen = _HEAD_KEY.unpack_from(raw)
        end = 13 + klen
        return Record(topic, partition, offset, raw[13:end], raw[end:], timestamp)
    timestamp = _HEAD.unpack_from(raw)[1]
    pos = 9
    if flags & HAS_HORIZON:
        pos += 8
    key: bytes | None = None
    if flags & HAS_KEY:
        (klen,) = U32.unpack_from(raw, pos)
        pos += 4
        key = raw[pos : pos + klen]
        pos += klen
    headers: Headers = ()
    if flags & HAS_HEADERS:
        (count,) = _U16.unpack_from(raw, pos)
        pos += 2
        items = []
        for _ in range(count):
            (nlen,) = _U16.unpack_from(raw, pos)
            pos += 2
            name = raw[pos : pos + nlen].decode()
            pos += nlen
            (vlen,) = _HEADER_VALUE_LEN.unpack_from(raw, pos)
            pos += 4
            items.append((name, raw[pos : pos + vlen]))
            pos += vlen
        headers = tuple(items)
    value = raw[pos:] if flags & HAS_VALUE else None
    return Record(topic, partition, offset, key, value, timestamp, headers)


class RecordMeta(NamedTuple):
    """The parts of a record compaction and retention look at."""

    key: bytes | None
    timestamp: int
    tombstone: bool
    #: For a tombstone already seen by compaction: when it may be removed (ms).
    horizon: int | None


def peek_record(raw: bytes) -> RecordMeta:
    """Decode only key, timestamp, tombstone flag and horizon (no headers or value copy)."""
    flags = raw[0]
    timestamp = _HEAD.unpack_from(raw)[1]
    pos = 9
    horizon: int | None = None
    if flags & HAS_HORIZON:
        (horizon,) = _HORIZON.unpack_from(raw, pos)
        pos += 8
    key: bytes | None = None
    if flags & HAS_KEY:
        (klen,) = U32.unpack_from(raw, pos)
        key = raw[pos + 4 : pos + 4 + klen]
    return RecordMeta(key, timestamp, not flags & HAS_VALUE, horizon)


def with_horizon(raw: bytes, horizon: int) -> bytes:
    """Return tombstone ``raw`` with its compaction horizon set to ``horizon`` (ms)."""
    flags = raw[0]
    rest = raw[17:] if flags & HAS_HORIZON else raw[9:]
    return bytes((flags | HAS_HORIZON,)) + raw[1:9] + _HORIZON.pack(horizon) + rest
