"""The log protocol: what statestream needs from Kafka or the embedded log.

Everything above this layer (tables, recovery, standbys, the worker) talks to
a :class:`Transport` and the clients it makes, never to kafka-python or the
embedded log directly. Two implementations honour it and run one contract
test suite: ``kafka`` (:mod:`statestream.log.kafka`) and ``embedded``
(:mod:`statestream.log.embedded`).

Semantics are Kafka's: per-partition offsets that start at 0 and never repeat
(they may have gaps after compaction or transaction markers), keyed records
with headers and millisecond timestamps, the default murmur2 partitioner,
watermarks where ``high`` is the offset the next record will get, compacted
topics keeping the latest record per key, committed group offsets meaning
"the next offset to process".
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from statestream.errors import ConfigurationError, TopicExistsError, TopicMismatchError
from statestream.types import Headers, Record, TopicPartition

__all__ = [
    "Admin",
    "CleanupPolicy",
    "Delivery",
    "Fetcher",
    "GroupAssignment",
    "GroupMember",
    "GroupSubscription",
    "IsolationLevel",
    "PartitionAssignor",
    "Producer",
    "RebalanceListener",
    "ResetPolicy",
    "TopicDescription",
    "TopicSpec",
    "Transport",
]

CleanupPolicy = Literal["delete", "compact", "compact,delete"]
IsolationLevel = Literal["read_uncommitted", "read_committed"]
#: What a fetcher does when its position is out of range: raise, or jump.
ResetPolicy = Literal["error", "earliest", "latest"]

_POLICIES = ("delete", "compact", "compact,delete")


def normalize_policy(policy: str) -> CleanupPolicy:
    """Return ``policy`` in canonical form (``"delete,compact"`` -> ``"compact,delete"``)."""
    parts = sorted(p.strip() for p in policy.split(",") if p.strip())
    canonical = ",".join(parts)
    if canonical not in _POLICIES:
        raise ConfigurationError(
            f"cleanup policy must be one of {', '.join(_POLICIES)}; got {policy!r}"
        )
    result: CleanupPolicy = canonical  # type: ignore[assignment]
    return result


@dataclass(frozen=True)
class TopicSpec:
    """A topic statestream wants to exist.

    ``config`` carries further topic settings verbatim (Kafka names, string
    values, e.g. ``{"segment.ms": "100"}``); ``retention_ms`` and
    ``cleanup_policy`` are first-class because statestream validates them.
    """

    name: str
    partitions: int
    cleanup_policy: CleanupPolicy = "delete"
    retention_ms: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 249:
            raise ConfigurationError(f"topic name must be 1-249 characters, got {self.name!r}")
        if not all(c.isalnum() or c in "._-" for c in self.name) or self.name in (".", ".."):
            raise ConfigurationError(
                f"topic name {self.name!r} may contain only letters, digits, '.', '_' and '-'"
            )
        if not isinstance(self.partitions, int) or self.partitions < 1:
            raise ConfigurationError(
                f"topic {self.name!r} needs at least 1 partition, got {self.partitions!r}"
            )
        object.__setattr__(self, "cleanup_policy", normalize_policy(self.cleanup_policy))

    def topic_config(self) -> dict[str, str]:
        """Return the full Kafka topic configuration for this spec."""
        merged = dict(self.config)
        merged["cleanup.policy"] = self.cleanup_policy
        if self.retention_ms is not None:
            merged["retention.ms"] = str(self.retention_ms)
        return merged


@dataclass(frozen=True)
class TopicDescription:
    """What the log says about an existing topic."""

    name: str
    partitions: int
    cleanup_policy: CleanupPolicy
    config: Mapping[str, str] = field(default_factory=dict)


class Delivery(Protocol):
    """The outcome of one :meth:`Producer.send`, known after :meth:`Producer.flush`."""

    @property
    def done(self) -> bool:
        """True once the log acknowledged or rejected the record."""
        ...

    @property
    def partition(self) -> int:
        """The partition the record was written to (known at send time)."""
        ...

    @property
    def offset(self) -> int:
        """The record's offset; raises :class:`ProduceError` if not (yet) written."""
        ...


class Admin(ABC):
    """Topic administration. Thread-safe; one per transport user is plenty."""

    @abstractmethod
    def describe_topic(self, name: str) -> TopicDescription | None:
        """Return the topic's description, or ``None`` if it does not exist."""

    @abstractmethod
    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic; raise :class:`TopicExistsError` if it already exists."""

    @abstractmethod
    def delete_topic(self, name: str) -> None:
        """Delete the topic and its records; no error if it does not exist."""

    @abstractmethod
    def list_topics(self) -> set[str]:
        """Return the names of all topics."""

    @abstractmethod
    def committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """Return the group's committed offset of each partition (``None``: none).

        Any thread, no group membership needed: standbys read how far the
        active owner has committed with it.
        """

    def ensure_topic(self, spec: TopicSpec) -> TopicDescription:
        """Create the topic if missing, else check partitions and cleanup policy.

        A mismatch raises :class:`~statestream.errors.TopicMismatchError`
        naming what differs: routing state by partition depends on both, so
        statestream never proceeds on a topic that does not match.
        """
        existing = self.describe_topic(spec.name)
        if existing is None:
            # Another worker may create it between our describe and create:
            # that is fine, the topic is validated below either way.
            with contextlib.suppress(TopicExistsError):
                self.create_topic(spec)
            existing = self.describe_topic(spec.name)
            if existing is None:
                raise TopicMismatchError(f"topic {spec.name!r} was created but cannot be described")
        problems = []
        if existing.partitions != spec.partitions:
            problems.append(f"{existing.partitions} partitions, expected {spec.partitions}")
        if existing.cleanup_policy != spec.cleanup_policy:
            problems.append(
                f"cleanup.policy={existing.cleanup_policy}, expected {spec.cleanup_policy}"
            )
        if problems:
            raise TopicMismatchError(
                f"topic {spec.name!r} exists with {' and '.join(problems)}; recreate it with "
                f"{spec.partitions} partitions and cleanup.policy={spec.cleanup_policy}, or "
                "change the application's configuration to match"
            )
        return existing

    def close(self) -> None:  # noqa: B027 - optional hook, most admins hold nothing
        """Release resources."""


class Producer(ABC):
    """Writes records. Thread-safe: one producer is shared by all partition threads.

    ``send`` is asynchronous; :meth:`flush` blocks until every record sent so
    far is acknowledged and raises :class:`~statestream.errors.ProduceError`
    if any failed. After a successful flush every :class:`Delivery` has its
    offset.
    """

    @abstractmethod
    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers = (),
        timestamp: int | None = None,
    ) -> Delivery:
        """Queue one record; ``partition=None`` partitions by key like Kafka's default."""

    def send_batch(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes | None, bytes | None, Headers]],
    ) -> Delivery | None:
        """Queue ``(key, value, headers)`` records for one partition, in order.

        Returns the delivery of the last record (``None`` for no records):
        after a successful :meth:`flush` its offset is the highest offset of
        the batch. Each record is sent as by :meth:`send`, so a failure of
        any of them is raised by the next :meth:`flush` like any other.
        This is what the changelog writer uses; transports override it
        where a batch is cheaper than as many sends.
        """
        delivery: Delivery | None = None
        send = self.send
        for key, value, headers in records:
            delivery = send(topic, key, value, partition=partition, headers=headers)
        return delivery

    @abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Block until everything sent is acknowledged; raise ``ProduceError`` on failure."""

    @abstractmethod
    def partitions_for(self, topic: str) -> int:
        """Return the topic's partition count (raise ``TopicNotFoundError`` if missing)."""

    # -- transactions (exactly-once); transports without them raise TransactionError

    @abstractmethod
    def begin_transaction(self) -> None:
        """Start a transaction (the producer must have a transactional id)."""

    @abstractmethod
    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: Any
    ) -> None:
        """Commit ``offsets`` for ``group`` (from :meth:`GroupMember.group_metadata`)
        as part of the current transaction."""

    @abstractmethod
    def commit_transaction(self) -> None:
        """Commit the current transaction, making its records visible atomically."""

    @abstractmethod
    def abort_transaction(self) -> None:
        """Abort the current transaction; its records are never visible to
        read-committed fetchers."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the producer."""


class Fetcher(ABC):
    """Reads assigned partitions from explicit positions (no group).

    Used for restoring and standby tailing. Thread ownership: one thread.
    A position beyond the high watermark or below the low watermark is out of
    range: with ``reset="error"`` :meth:`poll` raises
    :class:`~statestream.errors.OffsetOutOfRangeError`; with ``"earliest"`` or
    ``"latest"`` the position jumps to the low or high watermark.
    """

    @abstractmethod
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment; new partitions start at the reset position."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """Return the current assignment."""

    @abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Set the next offset to fetch for ``tp``."""

    @abstractmethod
    def seek_to_beginning(self, tp: TopicPartition) -> None:
        """Set the position of ``tp`` to its low watermark."""

    @abstractmethod
    def seek_to_end(self, tp: TopicPartition) -> None:
        """Set the position of ``tp`` to its high watermark."""

    @abstractmethod
    def position(self, tp: TopicPartition) -> int:
        """Return the next offset that will be fetched for ``tp``.

        After reading the last record before a gap (compaction, transaction
        markers) the position may jump past offsets no record has: stop a
        restore on ``position >= high watermark``, never on a record count.
        """

    @abstractmethod
    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        """Return the next records of unpaused assigned partitions (maybe none)."""

    @abstractmethod
    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """Return ``(low, high)``: the first offset kept and the next offset to be written.

        For read-committed fetchers ``high`` is the last stable offset.
        """

    @abstractmethod
    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop returning records of ``partitions`` until resumed."""

    @abstractmethod
    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Return records of ``partitions`` again."""

    @abstractmethod
    def close(self) -> None:
        """Release the fetcher."""


@dataclass(frozen=True)
class GroupSubscription:
    """One member's subscription, as the group leader's assignor sees it."""

    member_id: str
    #: The static member id (``None`` for a dynamic member).
    instance_id: str | None
    topics: tuple[str, ...]
    #: What the member's :meth:`PartitionAssignor.user_data` returned.
    user_data: bytes


@dataclass(frozen=True)
class GroupAssignment:
    """One member's assignment: its partitions, and data for its assignor."""

    partitions: tuple[TopicPartition, ...]
    user_data: bytes = b""


class PartitionAssignor(ABC):
    """Decides which member of a group gets which partitions.

    Every member of a group runs the same assignor (the group refuses a
    member whose assignor has another :attr:`name`). At each join every
    member sends its :meth:`user_data`; the leader's :meth:`assign` sees them
    all and returns every member's assignment, which each member receives
    through :meth:`on_assignment` before its ``on_assigned`` callback.

    Thread ownership: the group client calls these on its own thread while
    the poll thread waits inside :meth:`GroupMember.poll`; an assignor shares
    state with other threads only under its own lock. They must not call the
    group member they belong to.
    """

    #: The protocol name every member of the group must agree on.
    name: str = "statestream"

    @abstractmethod
    def user_data(self, topics: Sequence[str]) -> bytes:
        """Return this member's subscription data for the join starting now."""

    @abstractmethod
    def assign(
        self, partitions: Mapping[str, int], members: Sequence[GroupSubscription]
    ) -> Mapping[str, GroupAssignment]:
        """(Leader only) Return an assignment for every member id in ``members``.

        ``partitions`` is the partition count of every subscribed topic.
        """

    @abstractmethod
    def on_assignment(self, assignment: GroupAssignment, generation: int) -> None:
        """Receive this member's assignment for group generation ``generation``."""


class RebalanceListener(Protocol):
    """Called by :meth:`GroupMember.poll` on the polling thread."""

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions are leaving this member; finish and commit them before returning."""
        ...

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions were assigned to this member."""
        ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions were taken away while this member was out of the group.

        Unlike :meth:`on_revoked`, other members may own them already: drop
        them without flushing or committing anything (commits would fail, and
        records written now would race the new owner's).
        """
        ...


class GroupMember(ABC):
    """A consumer in a group: subscription, rebalance callbacks, committed offsets.

    Thread ownership: the poll thread only (kafka-python's consumer is not
    thread-safe); rebalance callbacks run inside :meth:`poll`.
    Committed offsets follow Kafka: the *next* offset to process.
    """

    @abstractmethod
    def subscribe(self, topics: Sequence[str], listener: RebalanceListener | None = None) -> None:
        """Join the group for ``topics``."""

    @abstractmethod
    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        """Return records of assigned, unpaused partitions; runs rebalance callbacks."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """Return the partitions currently assigned to this member."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronously commit ``offsets`` (next offset to process per partition)."""

    @abstractmethod
    def committed(self, tp: TopicPartition) -> int | None:
        """Return the group's committed offset for ``tp``, or ``None``."""

    @abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Set the next offset to fetch for an assigned partition."""

    @abstractmethod
    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching ``partitions`` (backpressure) until resumed."""

    @abstractmethod
    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch ``partitions`` again."""

    def interrupt(self) -> None:  # noqa: B027 - optional hook: most polls return quickly anyway
        """Make a blocked :meth:`poll` return soon (any thread; used on stop requests)."""

    @abstractmethod
    def request_rebalance(self) -> None:
        """Have the group rebalance at the next :meth:`poll` (poll thread).

        Used for probing rebalances: the assignor moves partitions to members
        whose warm-up copies have caught up.
        """

    @abstractmethod
    def generation(self) -> int:
        """Return the group generation of the current assignment (-1 if none).

        Generations grow with every rebalance of the group; inside the
        ``on_assigned`` callback it is the generation of that assignment.
        """

    @abstractmethod
    def group_metadata(self) -> Any:
        """Return the opaque value :meth:`Producer.send_offsets_to_transaction` needs."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group (revoking partitions through the listener) and release."""


class Transport(ABC):
    """Makes clients of one log (a Kafka cluster or an embedded log directory).

    Thread-safe. Closing the transport closes every client it made.
    """

    #: The URL this transport was opened with.
    url: str

    @abstractmethod
    def admin(self) -> Admin:
        """Return a topic admin client."""

    @abstractmethod
    def producer(self, *, transactional_id: str | None = None) -> Producer:
        """Return a producer; with ``transactional_id`` it can run transactions."""

    @abstractmethod
    def fetcher(
        self,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        reset: ResetPolicy = "error",
    ) -> Fetcher:
        """Return a fetcher for manual assignment."""

    @abstractmethod
    def group_member(
        self,
        group_id: str,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        reset: ResetPolicy = "earliest",
        client_id: str | None = None,
        assignor: PartitionAssignor | None = None,
        instance_id: str | None = None,
    ) -> GroupMember:
        """Return a group member (not yet subscribed).

        ``assignor`` replaces the transport's default assignment (every
        member of the group must use the same one). ``instance_id`` makes
        the member static where the log supports it: a member that restarts
        with the same id within the session timeout gets its partitions back
        without a rebalance, and a static member leaving does not rebalance
        the group either (its partitions wait for it until the session times out).
        """

    @property
    @abstractmethod
    def supports_transactions(self) -> bool:
        """Whether producers of this transport can run transactions."""

    @property
    def group_of_one(self) -> bool:
        """Whether a group has at most one member (then no member can keep standbys)."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Close the transport and every client it made."""
