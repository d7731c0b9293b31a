"""``SourceWatermarks``: the source partitions' high watermarks, for the consumer-lag metric.

Consumer lag is a source partition's high watermark minus the worker's
position in it. The group consumer only learns high watermarks from its
fetches, and fetches nothing for a paused partition (a full queue, a
restore), which is when lag grows; and a scrape must not wait for a broker.
So a small thread with its own fetcher reads the watermarks of the source
partitions the worker holds every ``interval`` seconds (one round trip per
partition on Kafka, a local read on the embedded log) and keeps the last
ones read. A read that fails (brokers unreachable) keeps the previous
values and is tried again next interval.

Thread ownership: its own daemon thread owns the fetcher; :meth:`watch` (the
poll thread), :meth:`highs` (any thread) and :meth:`stop` (the poll thread)
go through a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from statestream.errors import StateStreamError
from statestream.log.base import Fetcher, Transport
from statestream.types import TopicPartition

__all__ = ["SourceWatermarks"]

log = logging.getLogger("statestream.worker")


class SourceWatermarks:
    """Reads the watermarks of the watched partitions every ``interval`` seconds."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._transport: Transport | None = None
        self._lock = threading.Lock()
        self._watched: frozenset[TopicPartition] = frozenset()
        self._marks: dict[TopicPartition, tuple[int, int]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, transport: Transport) -> None:
        """Start the thread, reading through ``transport`` (poll thread)."""
        self._transport = transport
        self._thread = threading.Thread(target=self._run, name="statestream-lag", daemon=True)
        self._thread.start()

    def watch(self, partitions: Iterable[TopicPartition]) -> None:
        """Read these partitions from now on (and soon: a new assignment wants numbers)."""
        wanted = frozenset(partitions)
        with self._lock:
            if wanted == self._watched:
                return
            self._watched = wanted
            self._marks = {tp: m for tp, m in self._marks.items() if tp in wanted}
        self._wake.set()

    def marks(self) -> dict[TopicPartition, tuple[int, int]]:
        """The last ``(low, high)`` read of each watched partition (any thread)."""
        with self._lock:
            return dict(self._marks)

    def stop(self) -> None:
        """Stop and join the thread (nothing to do if it never started)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        fetcher: Fetcher | None = None
        transport = self._transport
        assert transport is not None
        try:
            while not self._stop.is_set():
                with self._lock:
                    watched = self._watched
                if watched:
                    try:
                        if fetcher is None:
                            fetcher = transport.fetcher()
                        self._read(fetcher, watched)
                    except StateStreamError as exc:
                        # The group client reports outages; lag waits for the next read.
                        log.debug("reading source watermarks failed: %s", exc)
                self._wake.wait(self.interval)
                self._wake.clear()
        finally:
            if fetcher is not None:
                try:
                    fetcher.close()
                except StateStreamError as exc:
                    log.debug("closing the watermarks fetcher failed: %s", exc)

    def _read(self, fetcher: Fetcher, watched: frozenset[TopicPartition]) -> None:
        for tp in sorted(watched):
            if self._stop.is_set():
                return
            marks = fetcher.watermarks(tp)
            with self._lock:
                if tp in self._watched:
                    self._marks[tp] = marks
