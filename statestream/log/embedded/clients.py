"""Fetcher and group member of the embedded log (reads are range scans of LevelDB).

Both implement :mod:`statestream.log.base` on an
:class:`~statestream.log.embedded.storage.EmbeddedLog` through one shared
:class:`_Reader`; the transport in :mod:`statestream.log.embedded` makes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from statestream.errors import ConfigurationError, GroupError, LogError, OffsetOutOfRangeError
from statestream.log.base import (
    Fetcher,
    GroupAssignment,
    GroupMember,
    GroupSubscription,
    PartitionAssignor,
    RebalanceListener,
    ResetPolicy,
)
from statestream.log.embedded.meta import Partition
from statestream.log.embedded.producer import OnClose, check_offsets
from statestream.log.embedded.storage import EmbeddedLog
from statestream.types import Record, TopicPartition

__all__ = ["EmbeddedFetcher", "EmbeddedGroupMember"]

#: The member id a group of one shows its assignor.
_MEMBER_ID = "embedded"


class _Reader:
    """Positions, pauses and the fetch loop shared by fetchers and group members.

    ``start`` gives the first position of a partition without one (``None``:
    none, apply the reset policy). Owned by its client's thread.
    """

    def __init__(
        self,
        log: EmbeddedLog,
        reset: ResetPolicy,
        start: Callable[[TopicPartition], int | None],
    ) -> None:
        if reset not in ("error", "earliest", "latest"):
            raise ConfigurationError(
                f"reset policy must be 'error', 'earliest' or 'latest', got {reset!r}"
            )
        self.log = log
        self.reset = reset
        self._start = start
        self.positions: dict[TopicPartition, int | None] = {}
        self.paused: set[TopicPartition] = set()
        #: Skip partitions of deleted topics instead of raising (group members).
        self.skip_missing = False
        self._turn = 0

    def assign(self, partitions: Iterable[TopicPartition], keep_positions: bool) -> None:
        tps = [TopicPartition(*tp) for tp in partitions]
        old = self.positions
        self.positions = {tp: old.get(tp) if keep_positions else None for tp in tps}
        self.paused &= set(tps)

    def require(self, tp: TopicPartition) -> TopicPartition:
        tp = TopicPartition(*tp)
        if tp not in self.positions:
            raise LogError(f"{tp} is not assigned to this client; assign it first")
        return tp

    def seek(self, tp: TopicPartition, offset: int) -> None:
        tp = self.require(tp)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise OffsetOutOfRangeError(f"cannot seek {tp} to {offset!r}: offsets are ints >= 0")
        self.positions[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        tp = self.require(tp)
        position = self.positions[tp]
        if position is None:
            position = self._initial(tp, self.log.partition(tp))
            self.positions[tp] = position
        return position

    def _initial(self, tp: TopicPartition, part: Partition) -> int:
        start = self._start(tp)
        if start is None:
            return self._reset(tp, part, None)
        if not part.low <= start <= part.high:
            return self._reset(tp, part, start)
        return start

    def _reset(self, tp: TopicPartition, part: Partition, position: int | None) -> int:
        if self.reset == "earliest":
            return part.low
        if self.reset == "latest":
            return part.high
        low, high = part.low, part.high
        if position is None:
            raise OffsetOutOfRangeError(
                f"{tp} has no position (nothing committed or sought) and the reset policy is "
                f"'error'; seek to an offset between {low} and {high}, or use reset='earliest' "
                "or 'latest'"
            )
        raise OffsetOutOfRangeError(
            f"position {position} of {tp} is out of range: the partition holds offsets "
            f"{low} (low watermark) to {high} (high watermark); seek into that range, or use "
            "reset='earliest' or 'latest'"
        )

    def fetch(self, max_records: int) -> list[Record]:
        tps = [tp for tp in self.positions if tp not in self.paused]
        if not tps:
            return []
        # Start at a different partition each time, so a busy one cannot starve the rest.
        self._turn += 1
        first = self._turn % len(tps)
        # Resolve every position before reading anything: an error (out of
        # range, topic deleted) must not lose records already read in this call.
        plan: list[tuple[TopicPartition, Partition, int]] = []
        for tp in tps[first:] + tps[:first]:
            if self.skip_missing and self.log.find_topic(tp.topic) is None:
                continue  # deleted: the group member's next rebalance drops it
            part = self.log.partition(tp)
            position = self.positions[tp]
            if position is None:
                position = self._initial(tp, part)
            elif not part.low <= position <= part.high:
                position = self._reset(tp, part, position)
            plan.append((tp, part, position))
        records: list[Record] = []
        moved = {tp: position for tp, _, position in plan}
        for tp, part, position in plan:
            got, moved[tp] = self.log.read(part, position, max_records - len(records))
            records += got
            if len(records) >= max_records:
                break
        self.positions.update(moved)
        return records

    def poll(
        self, timeout: float, max_records: int, before: Callable[[], None] | None = None
    ) -> list[Record]:
        if max_records < 1:
            raise ConfigurationError(f"max_records must be >= 1, got {max_records}")
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            self.log.check_open()
            generation = self.log.generation
            if before is not None:
                before()
            records = self.fetch(max_records)
            if records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self.log.wait(generation, remaining)

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        part = self.log.partition(TopicPartition(*tp))
        return part.low, part.high


class EmbeddedFetcher(Fetcher):
    """Reads assigned partitions from explicit positions. Thread ownership: one thread.

    Records are visible once flushed; :meth:`poll` sleeps until a write (or
    the timeout) when there is nothing to return. Read-committed and
    read-uncommitted fetchers see the same records: transactions are written
    only when they commit. Polling a partition whose topic was deleted raises
    :class:`~statestream.errors.TopicNotFoundError`.
    """

    def __init__(self, log: EmbeddedLog, reset: ResetPolicy, on_close: OnClose) -> None:
        self._reader = _Reader(log, reset, lambda tp: None)
        self._on_close = on_close
        self._closed = False

    def _open(self) -> _Reader:
        if self._closed:
            raise LogError("the fetcher is closed")
        return self._reader

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        reader = self._open()
        tps = list(partitions)
        for tp in tps:
            reader.log.partition(TopicPartition(*tp))
        reader.assign(tps, keep_positions=True)

    def assignment(self) -> set[TopicPartition]:
        return set(self._open().positions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._open().seek(tp, offset)

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        reader = self._open()
        reader.seek(tp, reader.watermarks(reader.require(tp))[0])

    def seek_to_end(self, tp: TopicPartition) -> None:
        reader = self._open()
        reader.seek(tp, reader.watermarks(reader.require(tp))[1])

    def position(self, tp: TopicPartition) -> int:
        return self._open().position(tp)

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        return self._open().poll(timeout, max_records)

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        return self._open().watermarks(tp)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        reader = self._open()
        reader.paused.update(reader.require(tp) for tp in partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        reader = self._open()
        reader.paused.difference_update(TopicPartition(*tp) for tp in partitions)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)


class EmbeddedGroupMember(GroupMember):
    """The single member of a group: it is assigned every partition of its topics.

    Thread ownership: the poll thread; rebalance callbacks run inside
    :meth:`poll` (``on_assigned`` on the first poll after :meth:`subscribe`,
    and again when a subscribed topic is created or deleted: eagerly, after
    ``on_revoked`` of the previous assignment, as kafka-python does) and
    inside :meth:`close` (``on_revoked``). A partition starts at the group's
    committed offset, else (or when that is out of range) at the reset policy's.

    A group has at most one member per transport: subscribing a second one
    raises :class:`~statestream.errors.GroupError` until the first closes.
    Commits are durable when :meth:`commit` returns.
    """

    def __init__(
        self,
        log: EmbeddedLog,
        group_id: str,
        reset: ResetPolicy,
        on_close: OnClose,
        assignor: PartitionAssignor | None = None,
        instance_id: str | None = None,
    ) -> None:
        if not isinstance(group_id, str) or not group_id:
            raise ConfigurationError(f"group id must be a non-empty string, got {group_id!r}")
        self._log = log
        self._group = group_id
        self._reader = _Reader(log, reset, self.committed)
        self._reader.skip_missing = True
        self._on_close = on_close
        self._topics: tuple[str, ...] | None = None
        self._listener: RebalanceListener | None = None
        self._assigned: dict[TopicPartition, int] = {}
        self._rebalance = False
        self._seen_metadata = -1
        self._generation = -1
        self._closed = False
        self._assignor = assignor
        self._instance_id = instance_id

    def _check_open(self) -> None:
        if self._closed:
            raise GroupError(f"the member of group {self._group!r} is closed")

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener | None = None) -> None:
        self._check_open()
        if isinstance(topics, str):
            raise ConfigurationError(f"subscribe takes a list of topics, got the string {topics!r}")
        self._log.claim_group(self._group, self)
        self._topics = tuple(dict.fromkeys(topics))
        self._listener = listener
        self._rebalance = True

    def _maybe_rebalance(self) -> None:
        generation = self._log.metadata_generation
        if not self._rebalance and generation == self._seen_metadata:
            return
        self._seen_metadata = generation
        target: dict[TopicPartition, int] = {}
        for name in self._topics or ():
            topic = self._log.find_topic(name)
            if topic is not None:
                for part in topic.partitions:
                    target[part.tp] = topic.topic_id
        if not self._rebalance and target == self._assigned:
            return
        self._rebalance = False
        listener = self._listener
        if self._assigned and listener is not None:
            listener.on_revoked(sorted(self._assigned))
        self._generation += 1
        if self._assignor is not None:
            target = self._assign(target)
        self._assigned = target
        self._reader.assign(target, keep_positions=False)
        if listener is not None:
            listener.on_assigned(sorted(target))

    def _assign(self, available: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Run the assignor for a group of one; keep the partitions it gives this member."""
        assert self._assignor is not None
        topics = tuple(self._topics or ())
        counts: dict[str, int] = {}
        for tp in available:
            counts[tp.topic] = max(counts.get(tp.topic, 0), tp.partition + 1)
        me = GroupSubscription(
            _MEMBER_ID, self._instance_id, topics, self._assignor.user_data(topics)
        )
        assignment = self._assignor.assign(counts, [me]).get(_MEMBER_ID, GroupAssignment(()))
        self._assignor.on_assignment(assignment, self._generation)
        return {
            TopicPartition(*tp): available[TopicPartition(*tp)]
            for tp in assignment.partitions
            if TopicPartition(*tp) in available
        }

    def request_rebalance(self) -> None:
        """Run the assignment again at the next :meth:`poll`."""
        self._rebalance = True

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        self._check_open()
        if self._topics is None:
            raise GroupError(f"the member of group {self._group!r} must subscribe() before poll()")
        return self._reader.poll(timeout, max_records, before=self._maybe_rebalance)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._check_open()
        holder = self._log.group_holder(self._group)
        if holder is not None and holder is not self:
            raise GroupError(
                f"group {self._group!r} has another member in this process; only it may commit"
            )
        check_offsets(self._log, offsets)
        self._log.commit_offsets(self._group, {TopicPartition(*tp): o for tp, o in offsets.items()})

    def committed(self, tp: TopicPartition) -> int | None:
        return self._log.committed(self._group, TopicPartition(*tp))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_open()
        self._reader.seek(tp, offset)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._reader.paused.update(self._reader.require(tp) for tp in partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._reader.paused.difference_update(TopicPartition(*tp) for tp in partitions)

    def generation(self) -> int:
        """The number of assignments so far minus one (one member: nobody to fence;
        changelog epochs grow per claim regardless, see ``statestream.tables.headers``)."""
        return self._generation

    def group_metadata(self) -> str:
        """Return the group id, which :meth:`EmbeddedProducer.send_offsets_to_transaction` takes."""
        return self._group

    def close(self) -> None:
        """Revoke the assignment through the listener, then leave the group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._assigned and self._listener is not None:
                self._listener.on_revoked(sorted(self._assigned))
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Leave the group without callbacks (the transport closing under the poll thread)."""
        self._closed = True
        self._assigned = {}
        self._reader.assign((), keep_positions=False)
        self._log.release_group(self._group, self)
        self._on_close(self)
