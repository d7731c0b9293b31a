"""The changelog writer: the records of step 2 of the commit protocol.

For one partition, produce one changelog record per dirty key (its last value
or a tombstone), each with headers naming the source record that produced it
and the writer's epoch (:mod:`statestream.tables.headers`).

:meth:`ChangelogWriter.send` queues the records and returns a
:class:`SentChangelogs`; after a flush of the producer (by the commit
coordinator, :mod:`statestream.tables.commit`), :meth:`SentChangelogs.offsets`
returns the acknowledged offsets or raises. :meth:`ChangelogWriter.write`
does both with its own flush, for records outside the commit protocol
(restore repairs and fence markers).

Thread ownership: called by whichever thread owns the partition at the time
(the partition thread, or the commit coordinator while the partition thread
is parked); the producer is the worker's shared, thread-safe producer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from statestream.errors import CommitError, LogError
from statestream.log.base import Delivery, Producer
from statestream.tables.headers import (
    EPOCH,
    FENCE,
    SOURCE_OFFSET,
    SOURCE_TOPIC,
    fence_key,
    pack_epoch,
)
from statestream.tables.shard import Change
from statestream.types import Headers, TopicPartition

__all__ = ["ChangelogWriter", "SentChangelogs"]

_pack_offset = struct.Struct(">q").pack


class SentChangelogs:
    """Changelog records queued on the producer, waiting for a flush."""

    def __init__(
        self, deliveries: dict[TopicPartition, Delivery], counts: dict[TopicPartition, int]
    ) -> None:
        self._deliveries = deliveries
        #: How many records were queued per changelog partition.
        self.counts = counts
        #: How many records were queued.
        self.records = sum(counts.values())

    def offsets(self) -> dict[TopicPartition, int]:
        """Return the last offset written per changelog (after a successful flush).

        Raises :class:`~statestream.errors.CommitError` if a record was not
        acknowledged: a flush that returned is not proof of delivery.
        """
        try:
            return {tp: delivery.offset for tp, delivery in self._deliveries.items()}
        except LogError as exc:
            raise CommitError(
                f"writing {self.records} changelog records failed ({exc}); source offsets were "
                "not committed, so the records will be reprocessed"
            ) from exc


class ChangelogWriter:
    """Writes changes to compacted changelog topics and flushes synchronously."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def send(
        self, batches: Sequence[tuple[TopicPartition, Sequence[Change]]], epoch: int
    ) -> SentChangelogs:
        """Queue one record per change, marked with ``epoch``; the caller flushes
        the producer before reading :meth:`SentChangelogs.offsets`.

        Raises :class:`~statestream.errors.CommitError` if the producer refuses them.
        """
        deliveries: dict[TopicPartition, Delivery] = {}
        counts: dict[TopicPartition, int] = {}
        count = 0
        epoch_header = (EPOCH, pack_epoch(epoch))
        send_batch = self.producer.send_batch
        # Keys changed by the same source record share their headers (the
        # headers of statestream.tables.headers.source_headers, built here:
        # this loop runs for every dirty key of every commit).
        headers: dict[tuple[str, int] | None, Headers] = {None: (epoch_header,)}
        topics: dict[str, tuple[str, bytes]] = {}
        try:
            for tp, changes in batches:
                records: list[tuple[bytes, bytes | None, Headers]] = []
                append = records.append
                for change in changes:
                    source = change.source
                    found = headers.get(source)
                    if found is None:
                        assert source is not None
                        topic, offset = source
                        topic_header = topics.get(topic)
                        if topic_header is None:
                            topic_header = topics[topic] = (SOURCE_TOPIC, topic.encode("utf-8"))
                        found = headers[source] = (
                            (SOURCE_OFFSET, _pack_offset(offset)),
                            topic_header,
                            epoch_header,
                        )
                    append((change.key, change.value, found))
                delivery = send_batch(tp.topic, tp.partition, records)
                count += len(records)
                counts[tp] = counts.get(tp, 0) + len(records)
                if delivery is not None:
                    deliveries[tp] = delivery
        except LogError as exc:
            raise CommitError(
                f"queueing {count} changelog records failed ({exc}); source offsets were "
                "not committed, so the records will be reprocessed"
            ) from exc
        return SentChangelogs(deliveries, counts)

    def write(
        self, batches: Sequence[tuple[TopicPartition, Sequence[Change]]], epoch: int
    ) -> dict[TopicPartition, int]:
        """Produce and flush every change; return the last offset written per changelog.

        Changelogs without changes are absent from the result. Raises
        :class:`~statestream.errors.CommitError` if anything was not written.
        """
        sent = self.send(batches, epoch)
        try:
            self.producer.flush()
        except LogError as exc:
            raise CommitError(
                f"writing {sent.records} changelog records failed ({exc}); source offsets were "
                "not committed, so the records will be reprocessed"
            ) from exc
        return sent.offsets()

    def write_fence(self, changelog: TopicPartition, epoch: int) -> int:
        """Write and flush the fence marker of ``epoch``; return its offset."""
        headers: Headers = ((EPOCH, pack_epoch(epoch)), (FENCE, b""))
        delivery = self.producer.send_batch(
            changelog.topic, changelog.partition, [(fence_key(epoch), b"", headers)]
        )
        try:
            self.producer.flush()
            assert delivery is not None
            return delivery.offset
        except LogError as exc:
            raise CommitError(
                f"writing the fence marker of epoch {epoch} to {changelog} failed ({exc}); "
                "the partition cannot be claimed until the log accepts writes"
            ) from exc
