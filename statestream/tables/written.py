"""``WrittenKeys``: the store keys of one range written since the last commit, sorted on demand.

A windowed shard tells :meth:`TableShard.iterate_encoded` which buffered
keys fall in a scanned range, in order, so a scan never sorts the whole
write buffer. Tumbling and hopping tables add an index entry for every new
window but read their index only when a window end passes (once per window
size): a set, sorted when read, costs them less than a sorted structure
kept in order on every add. (Sessions and sliding windows read their index
after most records; they keep a ``SortedSet``.)

Thread ownership: the partition thread of the shard that owns it.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["WrittenKeys"]


class WrittenKeys:
    """A set of keys with ``irange`` over a sorted snapshot (what a shard calls of a SortedSet)."""

    __slots__ = ("_keys", "_sorted")

    def __init__(self) -> None:
        self._keys: set[bytes] = set()
        self._sorted: list[bytes] | None = None

    def add(self, kb: bytes) -> None:
        """Remember ``kb`` (the next read sorts again)."""
        self._keys.add(kb)
        self._sorted = None

    def clear(self) -> None:
        """Forget every key (the buffer was committed or dropped)."""
        self._keys.clear()
        self._sorted = None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kb: object) -> bool:
        return kb in self._keys

    def irange(
        self, lo: bytes, hi: bytes, inclusive: tuple[bool, bool] = (True, False)
    ) -> list[bytes]:
        """The keys with ``lo <= key < hi``, in order (a snapshot: later adds are not in it).

        Only the half-open range is supported (what the shard asks for).
        """
        if inclusive != (True, False):
            raise ValueError("WrittenKeys.irange covers [lo, hi) only")
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = sorted(self._keys)
        return ordered[bisect_left(ordered, lo) : bisect_left(ordered, hi)]
