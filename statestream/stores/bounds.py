"""Key ranges: ``start``, ``end`` and ``prefix`` of a read, as one ``[lo, hi)`` range.

Every store, and every reader of another thread (statestream.stores.reading),
iterates the same range, so these functions decide the semantics for all.
"""

from __future__ import annotations

from statestream.errors import InvalidKeyError

__all__ = ["key_bounds", "prefix_successor"]


def prefix_successor(prefix: bytes) -> bytes | None:
    """Return the smallest key greater than every key that starts with ``prefix``.

    ``None`` means there is no such key (the prefix is empty or all ``0xff``):
    the range is unbounded above.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def key_bounds(
    start: bytes | None, end: bytes | None, prefix: bytes | None
) -> tuple[bytes | None, bytes | None] | None:
    """Combine ``start`` (inclusive), ``end`` (exclusive) and ``prefix`` into one range.

    Returns ``(lo, hi)`` where ``None`` means unbounded, or ``None`` when the
    range is empty. Every store iterates the same range, so this one function
    decides the semantics for all of them.
    """
    for name, value in (("start", start), ("end", end), ("prefix", prefix)):
        if value is not None and not isinstance(value, bytes):
            raise InvalidKeyError(
                f"iterate({name}=...) needs bytes or None, got {type(value).__name__}"
            )
    lo, hi = start, end
    if prefix:
        lo = prefix if lo is None or lo < prefix else lo
        successor = prefix_successor(prefix)
        if successor is not None and (hi is None or successor < hi):
            hi = successor
    if lo is not None and hi is not None and lo >= hi:
        return None
    return lo, hi
