"""The store's records in a set: user keys, bins and the key rank.

A record's user key is ``<partition, 4 bytes big-endian><kind, 1 byte><store
key>``; data records (kind ``d``) hold bins ``v`` (value), ``p``
(partition) and ``k`` (rank); the partition's offset record (kind ``o``)
holds ``o`` (offset) and ``m`` (metadata). Bin names: the server allows at
most 15 bytes. Constants and one pure function: no client calls.
"""

from __future__ import annotations

import struct

__all__ = [
    "DATA",
    "OFFSET",
    "PARTITION",
    "PARTITION_BIN",
    "RANK_BIN",
    "RANK_BYTES",
    "RANK_PAD",
    "VALUE_BIN",
    "key_rank",
]

PARTITION = struct.Struct(">I")
DATA = b"d"
OFFSET = b"o"
VALUE_BIN = "v"
PARTITION_BIN = "p"
#: The key's first bytes as an integer (see :func:`key_rank`): what the
#: server filters a key range on, since it has no key order of its own.
RANK_BIN = "k"
RANK_BYTES = 7
RANK_PAD = bytes(RANK_BYTES)


def key_rank(key: bytes) -> int:
    """The first 7 bytes of ``key``, zero-padded, as a big-endian integer.

    It never decreases in key order (``a <= b`` implies ``rank(a) <= rank(b)``),
    and it fits the server's signed 64-bit integers, so a server-side
    filter on it keeps every key of a range (and a few neighbours, dropped
    client-side).
    """
    return int.from_bytes((key + RANK_PAD)[:RANK_BYTES])  # big-endian
