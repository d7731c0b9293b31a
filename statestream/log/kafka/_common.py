"""Shared helpers of the Kafka transport: error translation, conversions, probing.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import kafka.errors as kerrors
from kafka import TopicPartition as KafkaTopicPartition

from statestream.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    GroupError,
    LogError,
    OffsetOutOfRangeError,
    StateStreamError,
    TopicExistsError,
    TopicNotFoundError,
    TransactionError,
)
from statestream.types import Record, TopicPartition

DEFAULT_PORT = 9092
_RESETS = {"error": "none", "earliest": "earliest", "latest": "latest"}
_ISOLATION_LEVELS = ("read_uncommitted", "read_committed")
# Unchecked futures send() lets pile up before it drops the acknowledged ones.
_PENDING_PRUNE_AT = 100_000
_UNKNOWN_TOPIC = kerrors.UnknownTopicOrPartitionError.errno

_UNAVAILABLE = (
    kerrors.KafkaTimeoutError,
    kerrors.KafkaConnectionError,
    kerrors.NodeNotReadyError,
    kerrors.MetadataEmptyBrokerList,
)
_GROUP_ERRORS = (
    kerrors.CommitFailedError,
    kerrors.IllegalGenerationError,
    kerrors.UnknownMemberIdError,
    kerrors.RebalanceInProgressError,
    kerrors.FencedInstanceIdError,
    kerrors.GroupAuthorizationFailedError,
    kerrors.InvalidGroupIdError,
    kerrors.GroupMaxSizeReachedError,
)
_INVALID_TOPIC_ERRORS = (
    kerrors.InvalidConfigurationError,
    kerrors.InvalidReplicationFactorError,
    kerrors.InvalidPartitionsError,
    kerrors.PolicyViolationError,
    kerrors.InvalidTopicError,
)


#: Told that a fast path or a workaround turned itself off: ``(its name,
#: why and what happens instead)``. The transport logs one warning per name.
Disabled = Callable[[str, str], None]


def _not_told(feature: str, detail: str) -> None:
    """A :data:`Disabled` for callers that do not report (the checks still run)."""


# --------------------------------------------------------------------- helpers


def _translate(exc: BaseException, what: str, bootstrap: str) -> LogError:
    """Return the statestream error for kafka-python error ``exc`` raised while ``what``."""
    if isinstance(exc, kerrors.UnknownTopicOrPartitionError):
        return TopicNotFoundError(f"{what}: the topic or partition does not exist ({exc})")
    if isinstance(exc, kerrors.TopicAlreadyExistsError):
        return TopicExistsError(f"{what}: the topic already exists")
    if isinstance(exc, _UNAVAILABLE):
        return BrokerUnavailableError(
            f"{what}: no answer from the Kafka cluster at {bootstrap} ({exc}); check that "
            "the brokers are running and reachable from this machine"
        )
    if isinstance(exc, _GROUP_ERRORS):
        return GroupError(
            f"{what}: group membership failed ({exc}); the member's partitions will be "
            "reassigned and resume from the last committed offsets"
        )
    if isinstance(exc, kerrors.ProducerFencedError | kerrors.InvalidProducerEpochError):
        return TransactionError(
            f"{what}: another producer with the same transactional id is active and fenced "
            f"this one ({exc}); close this producer"
        )
    if isinstance(exc, kerrors.TransactionAbortedError | kerrors.InvalidTxnStateError):
        return TransactionError(f"{what}: {exc}")
    if isinstance(exc, kerrors.OffsetOutOfRangeError):
        return OffsetOutOfRangeError(f"{what}: offset out of range ({exc})")
    if isinstance(exc, kerrors.AuthorizationError):
        return LogError(f"{what}: not authorized ({exc}); check the client's ACLs")
    return LogError(f"{what} failed: {exc}")


@contextlib.contextmanager
def _kafka_errors(what: str, bootstrap: str) -> Iterator[None]:
    """Translate kafka-python errors raised in the block (not for hot paths)."""
    try:
        yield
    except StateStreamError:
        raise
    except kerrors.KafkaError as exc:
        raise _translate(exc, what, bootstrap) from exc


def _unstick_parked_records(consumer: Any) -> None:
    """Work around a kafka-python 3.0 stall of partitions paused mid-hand-out.

    Its fetcher parks the records of a partition that is paused while they are
    being handed out, and gives them back after ``resume`` only when its
    in-line slot is ``None``; but it leaves an exhausted (falsy) record set in
    that slot, and it never fetches a partition that has parked records. The
    partition would then never be read again. Clearing the exhausted set before
    each poll lets the parked records come back.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current:
        fetcher._next_partition_records = None  # type: ignore[union-attr]


def _check_consumer_internals(consumer: Any, report: Disabled) -> None:
    """Report the consumer workarounds that cannot apply to ``consumer``'s internals."""
    if not hasattr(getattr(consumer, "_fetcher", None), "_next_partition_records"):
        report(
            "the workaround for partitions paused mid-hand-out",
            "kafka-python's fetcher has no _next_partition_records; a partition paused "
            "while its records are handed out may never be fetched again after resume",
        )


def _check_group_internals(consumer: Any, report: Disabled) -> None:
    """Report the group member workarounds that cannot apply to ``consumer``'s internals."""
    coordinator = getattr(consumer, "_coordinator", None)
    wanted = ("need_rejoin", "rebalance_in_progress", "request_rejoin", "poll")
    if not all(callable(getattr(coordinator, name, None)) for name in wanted):
        report(
            "waiting for group joins in poll",
            "kafka-python's consumer coordinator is not the expected one; a member may "
            "keep rebalancing, or stay without partitions after a metadata change",
        )
    elif not hasattr(coordinator, "_generation"):
        report(
            "the group generation",
            "kafka-python's coordinator has no _generation; generation() reports -1",
        )
    if not callable(getattr(getattr(consumer, "_net", None), "call_soon_threadsafe", None)):
        report(
            "waking the I/O thread after rebalance callbacks",
            "kafka-python's consumer has no _net.call_soon_threadsafe; a rebalance resumes "
            "only at the I/O loop's next wake-up after each callback",
        )


def _ktp(tp: TopicPartition) -> Any:
    return KafkaTopicPartition(tp[0], tp[1])


def _tp(ktp: Any) -> TopicPartition:
    return TopicPartition(ktp.topic, ktp.partition)


def _to_records(polled: Mapping[Any, list[Any]]) -> list[Record]:
    """Convert kafka-python's ``{tp: [ConsumerRecord]}`` into statestream records."""
    # Built with tuple.__new__ (Record is a named tuple): its generated
    # __new__ is a Python frame per record, on the hot path of every poll.
    new = tuple.__new__
    return [
        new(
            Record,
            (
                r.topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                r.timestamp,
                tuple(headers) if (headers := r.headers) else (),
            ),
        )
        for batch in polled.values()
        for r in batch
    ]


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or host.endswith(":") or (host.count(":") and not host.startswith("[")):
        return address.strip("[]"), DEFAULT_PORT  # no port, or a bare IPv6 address
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"broker address {address!r} has an invalid port {port!r}")
    return host.strip("[]"), int(port)


def _probe(addresses: Sequence[str], timeout: float) -> None:
    """Fail fast when no bootstrap address accepts a TCP connection.

    Cheaper and clearer than kafka-python's bootstrap timeout, and it leaves no
    client I/O threads behind when nothing listens.
    """
    deadline = time.monotonic() + timeout
    failures = []
    for address in addresses:
        host, port = _split_address(address)
        remaining = max(0.1, deadline - time.monotonic())
        try:
            with socket.create_connection((host, port), timeout=min(remaining, 2.0)):
                return
        except OSError as exc:
            failures.append(f"{address} ({exc.strerror or exc})")
    raise BrokerUnavailableError(
        f"no Kafka broker reachable at {', '.join(failures)}; check that the brokers are "
        "running and that the host and port in the broker URL are right"
    )


# ------------------------------------------------------------------- transport
