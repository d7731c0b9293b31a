"""Group-less consumers: the common consumer client and ``KafkaFetcher``.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import kafka.errors as kerrors

from statestream.errors import (
    BrokerUnavailableError,
    LogError,
    OffsetOutOfRangeError,
    TopicNotFoundError,
)
from statestream.log.base import (
    Fetcher,
    ResetPolicy,
)
from statestream.log.kafka._common import (
    _kafka_errors,
    _ktp,
    _to_records,
    _tp,
    _translate,
    _unstick_parked_records,
)
from statestream.types import Record, TopicPartition

if TYPE_CHECKING:  # at run time transport imports this module
    from statestream.log.kafka.transport import KafkaTransport


def _out_of_range(consumer: Any, exc: BaseException, where: str) -> OffsetOutOfRangeError:
    """Build an error naming each bad position and the partition's valid range."""
    positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    parts = []
    for ktp, offset in positions.items():
        try:
            low = consumer.beginning_offsets([ktp], 5_000)[ktp]
            high = consumer.end_offsets([ktp], 5_000)[ktp]
        except kerrors.KafkaError:
            parts.append(f"offset {offset} of {_tp(ktp)} is out of range")
        else:
            parts.append(
                f"offset {offset} of {_tp(ktp)} is out of range: valid positions are "
                f"{low} to {high} (low and high watermark)"
            )
    detail = "; ".join(parts) or str(exc)
    return OffsetOutOfRangeError(
        f"{detail}; seek to a valid offset, or use reset='earliest' or 'latest' (broker {where})"
    )


class _ConsumerClient:
    """What :class:`KafkaFetcher` and :class:`KafkaGroupMember` share."""

    def __init__(self, transport: KafkaTransport, consumer: Any, reset: ResetPolicy) -> None:
        self._transport = transport
        self._consumer = consumer
        self._reset = reset
        self._where = transport._where
        self._timeout_ms = transport.options.request_timeout_ms
        self._closed = False

    def assignment(self) -> set[TopicPartition]:
        """Return the current assignment."""
        return {_tp(ktp) for ktp in self._consumer.assignment()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Set the next offset to fetch for ``tp`` (it must be assigned)."""
        ktp = _ktp(tp)
        if ktp not in self._consumer.assignment():
            raise LogError(f"cannot seek {tp}: the partition is not assigned to this consumer")
        if not isinstance(offset, int) or offset < 0:
            if self._reset == "earliest":
                self._consumer.seek_to_beginning(ktp)
            elif self._reset == "latest":
                self._consumer.seek_to_end(ktp)
            else:
                raise OffsetOutOfRangeError(
                    f"cannot seek {tp} to {offset!r}: offsets start at 0; seek to a valid "
                    "offset, or use reset='earliest' or 'latest'"
                )
            return
        self._consumer.seek(ktp, offset)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop returning records of ``partitions`` (unassigned ones are ignored)."""
        assigned = self._consumer.assignment()
        self._consumer.pause(*(k for k in map(_ktp, partitions) if k in assigned))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Return records of ``partitions`` again (unassigned ones are ignored)."""
        assigned = self._consumer.assignment()
        self._consumer.resume(*(k for k in map(_ktp, partitions) if k in assigned))

    def _poll(self, timeout: float, max_records: int) -> list[Record]:
        _unstick_parked_records(self._consumer)
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except kerrors.OffsetOutOfRangeError as exc:
            raise _out_of_range(self._consumer, exc, self._where) from exc
        except kerrors.NoOffsetForPartitionError as exc:
            missing = exc.args[0] if exc.args and isinstance(exc.args[0], set | frozenset) else ()
            names = ", ".join(str(_tp(ktp)) for ktp in missing) or "a partition"
            raise OffsetOutOfRangeError(
                f"no position for {names} and reset='error': seek first, or use "
                "reset='earliest' or 'latest'"
            ) from exc
        except kerrors.KafkaError as exc:
            raise _translate(exc, "polling", self._where) from exc
        return _to_records(polled) if polled else []


class KafkaFetcher(_ConsumerClient, Fetcher):
    """Reads assigned partitions from explicit positions with a group-less ``KafkaConsumer``.

    Thread ownership: one thread (a restore or standby thread). With
    ``reset="error"`` newly assigned partitions start at their low watermark;
    a position out of range makes :meth:`poll` raise
    :class:`~statestream.errors.OffsetOutOfRangeError` naming the valid range.
    For read-committed fetchers the high watermark is the last stable offset.
    """

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment; partitions kept keep their positions."""
        wanted = [_ktp(tp) for tp in partitions]
        consumer = self._consumer
        if not wanted:
            consumer.unsubscribe()
            return
        new = set(wanted) - consumer.assignment()
        consumer.assign(wanted)
        if new and self._reset == "error":
            # kafka-python has no position to start from with reset "none".
            consumer.seek_to_beginning(*new)

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        """Set the position of ``tp`` to its low watermark (resolved lazily)."""
        self._require_assigned(tp)
        self._consumer.seek_to_beginning(_ktp(tp))

    def seek_to_end(self, tp: TopicPartition) -> None:
        """Set the position of ``tp`` to its high watermark (resolved lazily)."""
        self._require_assigned(tp)
        self._consumer.seek_to_end(_ktp(tp))

    def _require_assigned(self, tp: TopicPartition) -> None:
        if _ktp(tp) not in self._consumer.assignment():
            raise LogError(f"{tp} is not assigned to this fetcher; assign() it first")

    def position(self, tp: TopicPartition) -> int:
        """Return the next offset that will be fetched for ``tp``."""
        self._require_assigned(tp)
        with _kafka_errors(f"getting the position of {tp}", self._where):
            position = self._consumer.position(_ktp(tp), timeout_ms=self._timeout_ms)
        if position is None:
            raise BrokerUnavailableError(
                f"the position of {tp} could not be resolved within {self._timeout_ms} ms; "
                f"check the cluster at {self._where}"
            )
        result: int = position
        return result

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        """Return the next records of unpaused assigned partitions (maybe none)."""
        return self._poll(timeout, max_records)

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """Return ``(low, high)``; ``high`` is the last stable offset when reading committed."""
        ktp = _ktp(tp)
        what = f"getting the watermarks of {tp}"
        try:
            low = self._consumer.beginning_offsets([ktp], self._timeout_ms)[ktp]
            high = self._consumer.end_offsets([ktp], self._timeout_ms)[ktp]
        except kerrors.KafkaTimeoutError as exc:
            # A missing topic looks like a timeout to kafka-python.
            if not self._transport.topic_exists(tp.topic):
                raise TopicNotFoundError(f"{what}: topic {tp.topic!r} does not exist") from exc
            raise _translate(exc, what, self._where) from exc
        except kerrors.KafkaError as exc:
            raise _translate(exc, what, self._where) from exc
        return int(low), int(high)

    def close(self) -> None:
        """Close the consumer."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False)
        finally:
            self._transport._forget(self)


# ---------------------------------------------------------------- group member
