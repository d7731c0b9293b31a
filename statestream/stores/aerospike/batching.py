"""Write batches bounded by key count and by encoded size, and the record size check.

A server reads a request whole: one over its message limit (128 MiB) makes
it close the connection, and the same batch fails again on every retry. So
a store's batches are split by the bytes they carry as well as by keys,
under a limit far below the server's (``max_batch_bytes``), and a record
the namespace would refuse (``max-record-size``) is refused before
anything of its batch is sent.

Pure arithmetic: no client calls; used by the thread that owns the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["MAX_BATCH_KEYS", "Item", "record_size", "request_size", "split"]

#: Keys per batch call, below the servers' batch size limits.
MAX_BATCH_KEYS = 5000
#: One record in a batch request besides its key and value: batch index
#: header, digest, namespace and set fields, operation headers, bin names.
_REQUEST_OVERHEAD = 80
#: A data record on the server besides its key and value: record header,
#: stored key field, bins ``v``, ``p`` and ``k`` (names, headers, 8-byte ints).
_RECORD_OVERHEAD = 39 + 1 + 7 + 2 * (7 + 8)

#: A change of a batch: key, and value or ``None`` (delete).
Item = tuple[bytes, "bytes | None"]


def record_size(set_name: str, user_key_size: int, value_size: int) -> int:
    """The size a data record takes on the server, as ``max-record-size`` counts it."""
    return _RECORD_OVERHEAD + len(set_name) + user_key_size + value_size


def request_size(namespace: str, set_name: str, user_key_size: int, value_size: int) -> int:
    """The bytes one record adds to a batch request."""
    return _REQUEST_OVERHEAD + len(namespace) + len(set_name) + user_key_size + value_size


def split(sizes: Sequence[int], max_keys: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """Cut items of the given request ``sizes`` into ``(start, stop)`` runs.

    Each run holds at most ``max_keys`` items and at most ``max_bytes``,
    except that a single item over ``max_bytes`` gets a run of its own (it
    still fits a request: records are far smaller than a message).
    """
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_keys or total + size > max_bytes):
            yield start, index
            start, total = index, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)
