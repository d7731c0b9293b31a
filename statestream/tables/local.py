"""``LocalOffsets``: which table partitions this process holds a local copy of, and how far.

The assignor reports these offsets to the group leader at every rebalance
(so partitions go to the member closest to the changelog end), and
``statestream tables`` shows them. The owners of the stores write them: the
partition threads (after a restore and at every commit, step 4 of the
commit protocol) and the standby thread (after every batch it applies).

Thread ownership: any thread; every method takes the index's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from statestream.types import TopicPartition

__all__ = ["LocalOffsets"]


class LocalOffsets:
    """A thread-safe map of changelog partition to the local store's offset.

    The offset is the store's: the last changelog offset applied to it
    (``None``: a store with no state yet, which counts as no copy).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offsets: dict[TopicPartition, int] = {}

    def set(self, changelog: TopicPartition, offset: int | None) -> None:
        """Record the local store's offset of ``changelog`` (None forgets it)."""
        with self._lock:
            if offset is None:
                self._offsets.pop(changelog, None)
            else:
                self._offsets[changelog] = offset

    def forget(self, changelog: TopicPartition) -> None:
        """The local copy of ``changelog`` is gone (deleted, or it lived in memory)."""
        with self._lock:
            self._offsets.pop(changelog, None)

    def snapshot(self) -> Mapping[TopicPartition, int]:
        """Return a copy of every known offset."""
        with self._lock:
            return dict(self._offsets)

    def get(self, changelog: TopicPartition) -> int | None:
        """Return the local store's offset of ``changelog``, if there is a copy."""
        with self._lock:
            return self._offsets.get(changelog)
