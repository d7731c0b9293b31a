"""Key-ordered iteration over records that arrive in no order, in bounded memory.

Aerospike returns a set's records by partition and digest, never in key
order. :class:`SortedRuns` takes the pairs page by page and keeps at most
``buffer_bytes`` of them in memory: when the buffer is full it is sorted
and written to an anonymous temporary file (a *run*); iterating merges the
runs and what is left in memory. Memory stays below ``buffer_bytes`` plus
a read buffer per run (:data:`READ_BUFFER`), whatever the partition's size;
a partition that fits the buffer never touches the disk.

Thread ownership: one iteration, one thread. The runs are deleted when the
iteration ends (exhausted, closed or garbage-collected).
"""

from __future__ import annotations

import heapq
import struct
import tempfile
from collections.abc import Iterator
from operator import itemgetter
from typing import IO

__all__ = ["READ_BUFFER", "SortedRuns"]

#: Bytes read ahead from each run while merging.
READ_BUFFER = 64 << 10
#: Bookkeeping of a pair in memory besides its key and value (tuple, bytes headers).
PAIR_OVERHEAD = 120
_LENGTHS = struct.Struct(">II")

Pair = tuple[bytes, bytes]


class SortedRuns:
    """Collects ``(key, value)`` pairs, then yields them in key order (``reverse``: descending)."""

    def __init__(self, buffer_bytes: int, reverse: bool = False) -> None:
        self._limit = buffer_bytes
        self._reverse = reverse
        self._pairs: list[Pair] = []
        self._size = 0
        self._runs: list[IO[bytes]] = []

    @property
    def runs(self) -> int:
        """How many sorted runs went to temporary files."""
        return len(self._runs)

    def add(self, key: bytes, value: bytes) -> None:
        self._pairs.append((key, value))
        self._size += len(key) + len(value) + PAIR_OVERHEAD
        if self._size >= self._limit:
            self._spill()

    def _spill(self) -> None:
        self._pairs.sort(key=itemgetter(0), reverse=self._reverse)
        run = tempfile.TemporaryFile(buffering=READ_BUFFER)  # noqa: SIM115 - closed by __iter__
        try:
            pack = _LENGTHS.pack
            write = run.write
            for key, value in self._pairs:
                write(pack(len(key), len(value)))
                write(key)
                write(value)
            run.seek(0)
        except BaseException:
            run.close()
            raise
        self._runs.append(run)
        self._pairs = []
        self._size = 0

    def close(self) -> None:
        """Delete the runs (idempotent)."""
        for run in self._runs:
            run.close()
        self._runs = []
        self._pairs = []

    def __iter__(self) -> Iterator[Pair]:
        try:
            self._pairs.sort(key=itemgetter(0), reverse=self._reverse)
            if not self._runs:
                pairs, self._pairs = self._pairs, []
                yield from pairs
                return
            sources = [_read_run(run) for run in self._runs]
            sources.append(iter(self._pairs))
            yield from heapq.merge(*sources, key=itemgetter(0), reverse=self._reverse)
        finally:
            self.close()


def _read_run(run: IO[bytes]) -> Iterator[Pair]:
    read = run.read
    unpack = _LENGTHS.unpack
    size = _LENGTHS.size
    while True:
        head = read(size)
        if not head:
            return
        key_size, value_size = unpack(head)
        yield read(key_size), read(value_size)
