"""The changelog writer: step 2 of the commit protocol.

For one partition, produce one changelog record per dirty key (its last value
or a tombstone), each with headers naming the source record that produced it,
then flush the producer synchronously and return the offsets the log assigned.
Only after this returns may source offsets be committed.

The step comes in two halves so a worker can commit all its partitions with
one flush: :meth:`ChangelogWriter.send` queues the records and returns a
:class:`SentChangelogs`; after a flush of the producer (by anyone),
:meth:`SentChangelogs.offsets` returns the offsets or raises.
:meth:`ChangelogWriter.write` does both with its own flush.

Thread ownership: ``send``/``write`` are called on the partition thread; the
producer they use is the worker's shared, thread-safe producer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from statestream.errors import CommitError, LogError
from statestream.log.base import Delivery, Producer
from statestream.tables.headers import SOURCE_OFFSET, SOURCE_TOPIC
from statestream.tables.shard import Change
from statestream.types import Headers, TopicPartition

__all__ = ["ChangelogWriter", "SentChangelogs"]

_pack_offset = struct.Struct(">q").pack


class SentChangelogs:
    """Changelog records queued on the producer, waiting for a flush."""

    def __init__(self, deliveries: dict[TopicPartition, Delivery], records: int) -> None:
        self._deliveries = deliveries
        #: How many records were queued.
        self.records = records

    def offsets(self) -> dict[TopicPartition, int]:
        """Return the last offset written per changelog (after a successful flush).

        Raises :class:`~statestream.errors.CommitError` if a record was not written.
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

    def send(self, batches: Sequence[tuple[TopicPartition, Sequence[Change]]]) -> SentChangelogs:
        """Queue one record per change; the caller flushes the producer before
        reading :meth:`SentChangelogs.offsets`.

        Raises :class:`~statestream.errors.CommitError` if the producer refuses them.
        """
        deliveries: dict[TopicPartition, Delivery] = {}
        count = 0
        send_batch = self.producer.send_batch
        # Keys changed by the same source record share their headers (the
        # headers of statestream.tables.headers.source_headers, built here:
        # this loop runs for every dirty key of every commit).
        headers: dict[tuple[str, int] | None, Headers] = {None: ()}
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
                        )
                    append((change.key, change.value, found))
                delivery = send_batch(tp.topic, tp.partition, records)
                count += len(records)
                if delivery is not None:
                    deliveries[tp] = delivery
        except LogError as exc:
            raise CommitError(
                f"queueing {count} changelog records failed ({exc}); source offsets were "
                "not committed, so the records will be reprocessed"
            ) from exc
        return SentChangelogs(deliveries, count)

    def write(
        self, batches: Sequence[tuple[TopicPartition, Sequence[Change]]]
    ) -> dict[TopicPartition, int]:
        """Produce and flush every change; return the last offset written per changelog.

        Changelogs without changes are absent from the result. Raises
        :class:`~statestream.errors.CommitError` if anything was not written.
        """
        sent = self.send(batches)
        try:
            self.producer.flush()
        except LogError as exc:
            raise CommitError(
                f"writing {sent.records} changelog records failed ({exc}); source offsets were "
                "not committed, so the records will be reprocessed"
            ) from exc
        return sent.offsets()
