"""``AssignorBridge``: a statestream :class:`PartitionAssignor` as kafka-python's assignor.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python. The bridge translates
kafka-python's subscription and assignment structures to and from
:class:`~statestream.log.base.GroupSubscription` and
:class:`~statestream.log.base.GroupAssignment`; the decisions are the
statestream assignor's.

Thread ownership: kafka-python calls it on the group consumer's I/O thread,
while the poll thread waits in ``poll`` (see :mod:`statestream.log.kafka.group`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from statestream.log.base import GroupAssignment, GroupSubscription, PartitionAssignor
from statestream.types import TopicPartition

__all__ = ["AssignorBridge"]

log = logging.getLogger("statestream.log.kafka")

#: Version of the consumer protocol structures the bridge writes.
_VERSION = 0


class AssignorBridge(AbstractPartitionAssignor):  # type: ignore[misc]
    """Runs ``assignor`` inside kafka-python's group protocol (eager rebalances)."""

    def __init__(self, assignor: PartitionAssignor) -> None:
        self._assignor = assignor
        self.name = assignor.name

    # kafka-python reads ``name`` as a class attribute on its own assignors;
    # instances given in partition_assignment_strategy are used as they are.
    name: str = "statestream"

    def metadata(self, topics: Any) -> Any:
        ordered = sorted(topics)
        return ConsumerProtocolSubscription(
            version=_VERSION, topics=ordered, user_data=self._assignor.user_data(ordered)
        )

    def assign(self, cluster: Any, members: Sequence[Any]) -> dict[str, Any]:
        subscriptions = [
            GroupSubscription(
                member_id=str(member.member_id),
                instance_id=getattr(member, "group_instance_id", None) or None,
                topics=tuple(sorted(member.metadata.topics)),
                user_data=bytes(member.metadata.user_data or b""),
            )
            for member in members
        ]
        counts: dict[str, int] = {}
        for topic in sorted({t for s in subscriptions for t in s.topics}):
            found = cluster.partitions_for_topic(topic)
            if found is None:
                log.warning("no partition metadata for topic %r yet; assigning none of it", topic)
                continue
            counts[topic] = len(found)
        decided = self._assignor.assign(counts, subscriptions)
        result: dict[str, Any] = {}
        for subscription in subscriptions:
            assignment = decided.get(subscription.member_id, GroupAssignment(()))
            by_topic: dict[str, list[int]] = {}
            for tp in assignment.partitions:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            result[subscription.member_id] = ConsumerProtocolAssignment(
                version=_VERSION,
                assigned_partitions=sorted((t, sorted(p)) for t, p in by_topic.items()),
                user_data=assignment.user_data,
            )
        return result

    def on_assignment(self, assignment: Any, generation: int) -> None:
        partitions = tuple(
            sorted(
                TopicPartition(topic, p) for topic, ps in assignment.assigned_partitions for p in ps
            )
        )
        self._assignor.on_assignment(
            GroupAssignment(partitions, bytes(assignment.user_data or b"")), generation
        )
