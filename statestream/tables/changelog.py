"""The changelog writer: step 2 of the commit protocol.

For one partition, produce one changelog record per dirty key (its last value
or a tombstone), each with headers naming the source record that produced it,
then flush the producer synchronously and return the offsets the log assigned.
Only after this returns may source offsets be committed.

Thread ownership: called on the partition thread; the producer it uses is the
worker's shared, thread-safe producer.
"""

from __future__ import annotations

from collections.abc import Sequence

from statestream.errors import CommitError, LogError
from statestream.log.base import Delivery, Producer
from statestream.tables.headers import source_headers
from statestream.tables.shard import Change
from statestream.types import TopicPartition

__all__ = ["ChangelogWriter"]


class ChangelogWriter:
    """Writes changes to compacted changelog topics and flushes synchronously."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def write(
        self, batches: Sequence[tuple[TopicPartition, Sequence[Change]]]
    ) -> dict[TopicPartition, int]:
        """Produce and flush every change; return the last offset written per changelog.

        Changelogs without changes are absent from the result. Raises
        :class:`~statestream.errors.CommitError` if anything was not written.
        """
        send = self.producer.send
        pending: list[tuple[TopicPartition, Delivery]] = []
        try:
            for tp, changes in batches:
                for change in changes:
                    headers = () if change.source is None else source_headers(*change.source)
                    delivery = send(
                        tp.topic, change.key, change.value, partition=tp.partition, headers=headers
                    )
                    pending.append((tp, delivery))
            self.producer.flush()
            last: dict[TopicPartition, int] = {}
            for tp, delivery in pending:
                offset = delivery.offset
                if offset > last.get(tp, -1):
                    last[tp] = offset
            return last
        except LogError as exc:
            raise CommitError(
                f"writing {len(pending)} changelog records failed ({exc}); source offsets were "
                "not committed, so the records will be reprocessed"
            ) from exc
