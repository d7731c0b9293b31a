"""The group protocol standbys need, on both transports: a pluggable assignor
with per-member user data, static membership, probing rebalances, and the
group's committed offsets read without joining it.

Every test runs on the embedded log and on the session's Kafka broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import pytest

from statestream.errors import ConfigurationError
from statestream.log import Transport, open_transport
from statestream.log.base import (
    GroupAssignment,
    GroupMember,
    GroupSubscription,
    PartitionAssignor,
    TopicSpec,
)
from statestream.types import TopicPartition
from tests.log.helpers import wait_for


class Recording(PartitionAssignor):
    """Gives every partition to the member with the highest number in its user data."""

    name = "recording"

    def __init__(self, number: int) -> None:
        self.number = number
        self.seen: list[list[GroupSubscription]] = []
        self.received: list[tuple[GroupAssignment, int]] = []
        self.lock = threading.Lock()

    def user_data(self, topics: Sequence[str]) -> bytes:
        return f"member-{self.number}".encode()

    def assign(
        self, partitions: Mapping[str, int], members: Sequence[GroupSubscription]
    ) -> Mapping[str, GroupAssignment]:
        with self.lock:
            self.seen.append(list(members))
        best = max(members, key=lambda m: m.user_data)
        result = {m.member_id: GroupAssignment((), b"none") for m in members}
        result[best.member_id] = GroupAssignment(
            tuple(TopicPartition(t, p) for t, n in sorted(partitions.items()) for p in range(n)),
            b"all:" + best.user_data,
        )
        return result

    def on_assignment(self, assignment: GroupAssignment, generation: int) -> None:
        with self.lock:
            self.received.append((assignment, generation))


def _poll_until(member: object, condition: object, what: str) -> None:
    def step() -> bool:
        member.poll(timeout=0.1)  # type: ignore[attr-defined]
        return bool(condition())  # type: ignore[operator]

    wait_for(step, 60, what)


def test_the_assignor_sees_user_data_and_its_assignment_arrives(
    transport: Transport, topic_name: str
) -> None:
    transport.admin().ensure_topic(TopicSpec(topic_name, 3))
    assignor = Recording(7)
    member = transport.group_member(f"g-{topic_name}", assignor=assignor)
    member.subscribe([topic_name])
    try:
        # (A Kafka leader that has no metadata of the topic yet assigns none
        # of it and rejoins once the metadata arrives.)
        _poll_until(
            member,
            lambda: assignor.received and assignor.received[-1][0].partitions,
            "an assignment of the topic",
        )
        [subscription] = assignor.seen[-1]
        assert subscription.user_data == b"member-7"
        assert subscription.topics == (topic_name,)
        assignment, generation = assignor.received[-1]
        assert assignment.user_data == b"all:member-7"
        assert set(assignment.partitions) == {TopicPartition(topic_name, p) for p in range(3)}
        assert member.assignment() == set(assignment.partitions)
        assert generation == member.generation()
        # A requested rebalance runs the assignor again.
        before = len(assignor.received)
        member.request_rebalance()
        _poll_until(member, lambda: len(assignor.received) > before, "a second assignment")
    finally:
        member.close()


def test_committed_offsets_are_read_without_joining(transport: Transport, topic_name: str) -> None:
    transport.admin().ensure_topic(TopicSpec(topic_name, 2))
    group = f"g-{topic_name}"
    member = transport.group_member(group)
    member.subscribe([topic_name])
    try:
        _poll_until(member, member.assignment, "an assignment")
        producer = transport.producer()
        for _ in range(5):
            producer.send(topic_name, b"k", b"v", partition=0)
        producer.flush()
        producer.close()
        member.commit({TopicPartition(topic_name, 0): 4})
        admin = transport.admin()
        offsets = admin.committed_offsets(
            group, [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
        )
        assert offsets == {TopicPartition(topic_name, 0): 4, TopicPartition(topic_name, 1): None}
        assert admin.committed_offsets(group, []) == {}
    finally:
        member.close()


@pytest.mark.parametrize("bad", ["", "has space", ".", "x" * 250])
def test_invalid_instance_ids_are_refused(transport: Transport, bad: str) -> None:
    from statestream.config import check_instance_id

    with pytest.raises(ConfigurationError, match="instance id"):
        check_instance_id(bad)


class Poller:
    """Polls one group member on its own thread (the member's poll thread) until stopped."""

    def __init__(self, member: GroupMember) -> None:
        self.member = member
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.member.poll(timeout=0.1)
        self.member.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


@pytest.mark.kafka
def test_a_static_member_restarting_gets_its_partitions_back_without_a_rebalance(
    kafka_bootstrap: str, topic_name: str
) -> None:
    url = f"kafka://{kafka_bootstrap}?session_timeout_ms=10000&heartbeat_interval_ms=500"
    transport = open_transport(url)
    pollers: list[Poller] = []
    try:
        transport.admin().ensure_topic(TopicSpec(topic_name, 4))
        group = f"g-{topic_name}"
        members = {}
        for name in ("static-a", "static-b"):
            members[name] = transport.group_member(group, instance_id=name)
            members[name].subscribe([topic_name])
            pollers.append(Poller(members[name]))

        def split() -> bool:
            held = [members[n].assignment() for n in members]
            return all(held) and sum(len(h) for h in held) == 4

        wait_for(split, 60, "both static members assigned")
        held = set(members["static-a"].assignment())
        generation = members["static-b"].generation()
        pollers[0].stop()  # closes: a static member does not leave the group
        again = transport.group_member(group, instance_id="static-a")
        again.subscribe([topic_name])
        pollers[0] = Poller(again)
        wait_for(lambda: bool(again.assignment()), 30, "the restarted member's assignment")
        time.sleep(2)  # a rebalance, if one was started, would show by now
        assert again.assignment() == held
        assert members["static-b"].generation() == generation  # no rebalance
    finally:
        for poller in pollers:
            poller.stop()
        transport.close()
