"""Changelog record headers: which source record produced a change, and which writer.

Every changelog record carries the offset (and topic) of the source record
whose processing produced it. Recovery skips records whose source offset is at
or beyond the committed source offset: they belong to work that will be
processed again.

Every record also carries its writer's **epoch**: a fencing token that only
grows from one owner of a changelog partition to the next (see
:func:`next_epoch`). Recovery never applies a record whose epoch is lower than
one already seen in that changelog partition: such a record was written by a
member that lost the partition (a "zombie", for example a process frozen past
its session timeout) after the new owner had claimed it.

A new owner claims a partition by writing a **fence marker** record (the
:data:`FENCE` header, no source headers) with its epoch before it processes;
markers are read for their epoch only and never applied to a store. Each
epoch's marker has its own key (:func:`fence_key`), so compaction never
removes the marker that separates a zombie's records from the new owner's.
"""

from __future__ import annotations

import struct

from statestream.types import Headers, Record

__all__ = [
    "EPOCH",
    "FENCE",
    "SOURCE_OFFSET",
    "SOURCE_TOPIC",
    "epoch_of",
    "fence_key",
    "next_epoch",
    "pack_epoch",
    "source_headers",
    "source_of",
    "unpack_epoch",
]

#: Header carrying the source offset, 8 bytes big-endian signed.
SOURCE_OFFSET = "statestream-src-offset"
#: Header carrying the source topic, UTF-8.
SOURCE_TOPIC = "statestream-src-topic"
#: Header carrying the writer's epoch, 8 bytes big-endian signed.
EPOCH = "statestream-epoch"
#: Header marking a fence marker record (value: empty).
FENCE = "statestream-fence"

#: Keys of fence markers start with this; no codec statestream ships makes a
#: key that starts with a NUL byte followed by 0xff (not UTF-8, not JSON).
FENCE_KEY_PREFIX = b"\x00\xffstatestream-fence\x00"

_OFFSET = struct.Struct(">q")
_GENERATION_BITS = 32
_GENERATION_MASK = (1 << _GENERATION_BITS) - 1


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


def pack_epoch(epoch: int) -> bytes:
    """Encode an epoch for the :data:`EPOCH` header (and store metadata)."""
    return _OFFSET.pack(epoch)


def unpack_epoch(raw: bytes | None) -> int | None:
    """Decode :func:`pack_epoch` output; ``None`` for missing or malformed bytes."""
    if raw is None or len(raw) != _OFFSET.size:
        return None
    epoch: int = _OFFSET.unpack(raw)[0]
    return epoch


def epoch_of(record: Record) -> tuple[int | None, bool]:
    """Return ``(epoch, is_fence_marker)`` of a changelog record.

    Records written before epochs existed have none (``None``): they are
    applied by the ordinary rules and do not move the highest epoch seen.
    """
    epoch = None
    fence = False
    for name, value in record.headers:
        if name == EPOCH:
            epoch = unpack_epoch(value)
        elif name == FENCE:
            fence = True
    return epoch, fence


def next_epoch(highest_seen: int | None, generation: int) -> int:
    """The epoch a new owner claims: above every epoch seen, ties broken by generation.

    An epoch is ``claim << 32 | generation``: ``claim`` is one more than the
    highest claim seen in the changelog partition, so epochs grow from owner
    to owner even if the group's generation starts again (a group whose
    offsets expired is recreated at generation 0). Two members that claim
    from the same history (a zombie that wrote its marker late) get the same
    ``claim`` and are ordered by group generation, which the group protocol
    makes unique per assignment.
    """
    claim = 0 if highest_seen is None else (highest_seen >> _GENERATION_BITS)
    return ((claim + 1) << _GENERATION_BITS) | (max(generation, 0) & _GENERATION_MASK)


def fence_key(epoch: int) -> bytes:
    """The changelog key of the fence marker of ``epoch`` (one key per epoch)."""
    return FENCE_KEY_PREFIX + _OFFSET.pack(epoch)
