"""``OutputBuffer``: a partition task's output records, handed to the producer in batches.

``ctx.send``, ``ctx.group_by`` and dead letters add records here; they reach
the producer through its batch path (``send_batch``, one call per destination
partition and hand-over) instead of one ``send`` per record, which is what
bounded a word count that sends one output per word.

When records are handed over (the latency bound):

* at the end of every processed batch (one poll's records of the partition,
  at most 2,000);
* as soon as :data:`MAX_BUFFERED` records are waiting;
* when the oldest waiting record has waited :data:`MAX_WAIT` seconds
  (checked at each add);
* before every commit of the partition, so step 2 of the commit protocol
  checks their deliveries like every other output (at-least-once: flushed
  and acknowledged before the source offsets that produced them move).

Records keep their order per destination partition. A keyed record without a
partition goes where the default partitioner (murmur2, as Kafka's Java
client) puts its key; an unkeyed one goes, like Kafka's sticky partitioner,
to one partition per hand-over and topic, moving on each time.

Thread ownership: the partition thread that owns the task.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from statestream.log.base import Delivery, Producer
from statestream.log.partitioner import default_partition
from statestream.types import Headers
from statestream.worker.counters import PartitionCounters

__all__ = ["MAX_BUFFERED", "MAX_WAIT", "OutputBuffer"]

#: Records waiting before they are handed to the producer at once.
MAX_BUFFERED = 1000
#: Seconds the oldest waiting record may wait before the hand-over.
MAX_WAIT = 0.05

_Item = tuple[bytes | None, bytes | None, Headers]


class OutputBuffer:
    """Buffers output records per destination partition (see the module docstring)."""

    def __init__(
        self,
        producer: Producer,
        partitions_for: Callable[[str], int],
        counters: PartitionCounters | None = None,
    ) -> None:
        self._producer = producer
        # Counts the records handed over (outputs metric), once per hand-over.
        self._counters = counters
        self._partitions_for = partitions_for
        self._counts: dict[str, int] = {}
        self._sticky: dict[str, int] = {}
        self._waiting: dict[tuple[str, int], list[_Item]] = {}
        # Insertion log, for rolling a failed record's outputs back.
        self._log: list[tuple[str, int]] = []
        self._since = 0.0
        self._handovers = 0
        #: Last delivery per destination partition since the last commit.
        self.deliveries: dict[tuple[str, int], Delivery] = {}

    def __len__(self) -> int:
        return len(self._log)

    def _count(self, topic: str) -> int:
        count = self._counts.get(topic)
        if count is None:
            count = self._counts[topic] = self._partitions_for(topic)
        return count

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers,
    ) -> None:
        """Queue one encoded record (``partition=None``: by key, or sticky without one)."""
        if partition is None:
            count = self._count(topic)
            if key is not None:
                partition = default_partition(key, count)
            else:
                partition = self._sticky.get(topic, 0) % count
        dest = (topic, partition)
        items = self._waiting.get(dest)
        if items is None:
            items = self._waiting[dest] = []
        items.append((key, value, headers))
        log = self._log
        if not log:
            self._since = time.monotonic()
        log.append(dest)
        if len(log) >= MAX_BUFFERED or time.monotonic() - self._since >= MAX_WAIT:
            self.hand_over()

    def mark(self) -> tuple[int, int]:
        """Return a mark to roll back to (before a record is processed)."""
        return (self._handovers, len(self._log))

    def rollback(self, mark: tuple[int, int]) -> None:
        """Drop the records added since ``mark`` that are still waiting.

        Records already handed over stay sent (at-least-once allows the
        duplicate): a hand-over in the middle of a record (it filled the
        buffer, or the buffer grew old) leaves only that record's later
        records to drop.
        """
        handovers, length = mark
        if handovers != self._handovers:
            length = 0  # everything waiting was added by this record
        log = self._log
        while len(log) > length:
            dest = log.pop()
            items = self._waiting[dest]
            items.pop()
            if not items:
                del self._waiting[dest]

    def hand_over(self) -> None:
        """Give every waiting record to the producer (one batch per destination partition)."""
        if not self._log:
            return
        send_batch = self._producer.send_batch
        deliveries = self.deliveries
        for (topic, partition), items in self._waiting.items():
            delivery = send_batch(topic, partition, items)
            if delivery is not None:
                deliveries[(topic, partition)] = delivery
        for topic in {topic for topic, _ in self._waiting}:
            self._sticky[topic] = self._sticky.get(topic, 0) + 1
        if self._counters is not None:
            self._counters.outputs += len(self._log)
        self._waiting = {}
        self._log = []
        self._handovers += 1

    def committed(self) -> None:
        """The deliveries were checked by a commit: start over."""
        self.deliveries = {}
