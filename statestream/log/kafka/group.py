"""``KafkaGroupMember``: group membership, rebalance callbacks on the poll thread.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import kafka.errors as kerrors
from kafka import (
    AsyncConsumerRebalanceListener,
)
from kafka.future import Future as KafkaFuture
from kafka.structs import OffsetAndMetadata

from statestream.errors import (
    ConfigurationError,
)
from statestream.log.base import (
    GroupMember,
    RebalanceListener,
    ResetPolicy,
)
from statestream.log.kafka._common import _kafka_errors, _ktp, _tp, _translate
from statestream.log.kafka.consumer import _ConsumerClient
from statestream.types import Record, TopicPartition

if TYPE_CHECKING:  # at run time transport imports this module
    from statestream.log.kafka.transport import KafkaTransport

#: Longest a wait for a group join blocks before checking for interrupt().
_JOIN_SLICE = 0.25
#: How long an interrupted member waits for its LeaveGroup answer mid-join.
_LEAVE_MID_JOIN_MS = 1000


class _CallerThreadRunner:
    """Runs blocking consumer calls on a helper thread, serving rebalance
    callbacks on the thread that called :meth:`call` while it waits.

    kafka-python invokes listeners on its I/O thread and forbids blocking
    consumer calls there; a listener that commits or looks up offsets must
    run elsewhere, and statestream's protocol says: on the poll thread. The
    helper thread only ever runs ``poll`` and ``close``; every other consumer
    call happens on the poll thread while the helper is idle or blocked
    waiting for a callback, so the consumer is never used by two threads at once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._inbox: queue.SimpleQueue[tuple[int, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[tuple[str, int, Any, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._call_id = 0

    def call(self, fn: Callable[[], Any]) -> Any:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._call_id += 1
        call_id = self._call_id
        self._inbox.put((call_id, fn))
        while True:
            kind, event_id, payload, error = self._events.get()
            if kind == "callback":
                payload()
            elif event_id == call_id:
                if error is not None:
                    raise error
                return payload
            # else: the result of a call whose caller was interrupted; dropped

    def submit_callback(self, thunk: Callable[[], None]) -> None:
        """Ask the thread inside :meth:`call` to run ``thunk`` (from any thread)."""
        self._events.put(("callback", 0, thunk, None))

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            call_id, fn = item
            try:
                result = fn()
            except BaseException as exc:
                self._events.put(("done", call_id, None, exc))
            else:
                self._events.put(("done", call_id, result, None))

    def stop(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join()
            self._thread = None


class _ListenerBridge(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python listener that hands each callback to the waiting poll thread.

    The I/O loop awaits the callback's completion without blocking, so
    heartbeats continue while the statestream listener runs.
    """

    def __init__(self, member: KafkaGroupMember, listener: RebalanceListener) -> None:
        self._member = member
        self._listener = listener

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._dispatch(self._listener.on_revoked, revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._dispatch(self._listener.on_assigned, assigned)

    async def on_partitions_lost(self, lost: Any) -> None:
        # Other members may own these already: the listener drops them
        # without committing (commits would fail with GroupError anyway).
        await self._dispatch(getattr(self._listener, "on_lost", self._listener.on_revoked), lost)

    async def _dispatch(self, method: Callable[[Sequence[TopicPartition]], None], tps: Any) -> None:
        partitions = sorted(_tp(ktp) for ktp in tps)
        if not partitions:
            # kafka-python reports empty revocations and assignments on
            # every rebalance; statestream's listeners hear only changes.
            return
        done = KafkaFuture()
        member = self._member

        def run_on_poll_thread() -> None:
            try:
                method(partitions)
            except BaseException as exc:
                # Raised from poll() once kafka-python has finished the
                # rebalance step; kafka-python itself is told it succeeded.
                if member._listener_error is None:
                    member._listener_error = exc
            finally:
                member._complete(done)

        member._runner.submit_callback(run_on_poll_thread)
        await done


class KafkaGroupMember(_ConsumerClient, GroupMember):
    """A member of a consumer group, on a ``KafkaConsumer`` with ``group_id``.

    Thread ownership: the poll thread only. Rebalance callbacks run on that
    thread, inside :meth:`poll` (and :meth:`close`), while kafka-python's
    I/O thread keeps heartbeating; they are not called with empty partition
    lists. Offsets are committed only by :meth:`commit` (auto-commit is
    off); committed offsets are the next offset to process. With
    ``reset="error"`` a partition without committed offset makes
    :meth:`poll` raise :class:`~statestream.errors.OffsetOutOfRangeError`.
    """

    def __init__(
        self, transport: KafkaTransport, consumer: Any, group_id: str, reset: ResetPolicy
    ) -> None:
        super().__init__(transport, consumer, reset)
        self.group_id = group_id
        self._runner = _CallerThreadRunner(f"statestream-kafka-group-{group_id}")
        self._listener_error: BaseException | None = None
        self._subscribed = False
        self._rebalance_timeout_ms = transport.options.max_poll_interval_ms
        self._interrupted = threading.Event()

    def _complete(self, future: Any) -> None:
        """Resolve a kafka-python future on its I/O thread and wake that thread."""
        net = getattr(self._consumer, "_net", None)
        if net is None or not hasattr(net, "call_soon_threadsafe"):
            future.success(None)  # resumed at the loop's next wake-up
            return
        try:
            net.call_soon_threadsafe(lambda: future.success(None))
        except RuntimeError:  # loop closed: nobody waits any more
            future.success(None)

    def _call(self, fn: Callable[[], Any]) -> Any:
        self._listener_error = None
        try:
            result = self._runner.call(fn)
        except kerrors.KafkaError as exc:
            if self._listener_error is not None:
                raise self._listener_error from exc
            raise
        if self._listener_error is not None:
            error, self._listener_error = self._listener_error, None
            raise error
        return result

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener | None = None) -> None:
        """Join the group for ``topics`` (the join happens in :meth:`poll`)."""
        if isinstance(topics, str):
            raise ConfigurationError(f"subscribe() takes a list of topics, got {topics!r}")
        bridge = _ListenerBridge(self, listener) if listener is not None else None
        with _kafka_errors(f"subscribing group {self.group_id!r}", self._where):
            self._consumer.subscribe(topics=list(topics), listener=bridge)
        self._subscribed = True

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        """Return records of assigned, unpaused partitions; runs rebalance callbacks.

        While the member (re)joins the group this blocks until the join is
        complete (at most ``max_poll_interval_ms``, the broker's rebalance
        timeout), whatever ``timeout`` says: the member owns no partitions
        meanwhile, so nothing is held up.
        """
        result: list[Record] = self._call(lambda: self._poll_group(timeout, max_records))
        return result

    def _poll_group(self, timeout: float, max_records: int) -> list[Record]:
        # kafka-python 3.0 applies the result of a join only if a poll() is
        # waiting when the join completes. Otherwise it either starts another
        # join (a short poll timeout can then keep the group rebalancing for
        # ever), or, when the join was started by a metadata change, forgets
        # it and stays "rebalancing" with no partitions. So: whenever a join
        # is due or under way, wait for it in one call, and ask for a fresh
        # join if kafka-python lost track of one.
        coordinator = getattr(self._consumer, "_coordinator", None)
        if self._subscribed and coordinator is not None:
            rejoin = coordinator.need_rejoin()
            if rejoin or coordinator.rebalance_in_progress():
                if not rejoin:
                    coordinator.request_rejoin()
                self._wait_for_join(coordinator)
                if self._interrupted.is_set():
                    return []
        return self._poll(timeout, max_records)

    def _wait_for_join(self, coordinator: Any) -> None:
        # In slices, so that interrupt() (a stop request) is seen within one
        # slice instead of after the whole rebalance timeout. kafka-python
        # keeps the join in flight between calls and re-awaits it; only a
        # join that completes in the microseconds between two slices is
        # lost, which costs one more rebalance.
        deadline = time.monotonic() + self._rebalance_timeout_ms / 1000
        while not self._interrupted.is_set():
            left = deadline - time.monotonic()
            try:
                coordinator.poll(timeout_ms=int(max(min(left, _JOIN_SLICE), 0) * 1000))
            except kerrors.KafkaError as exc:
                raise _translate(exc, f"joining group {self.group_id!r}", self._where) from exc
            if not coordinator.need_rejoin() or time.monotonic() >= deadline:
                return

    def _joining(self) -> bool:
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is None:
            return False
        return bool(coordinator.need_rejoin() or coordinator.rebalance_in_progress())

    def interrupt(self) -> None:
        """Make a poll that waits for a group join return within a fraction of a
        second, with no records (any thread; for stop requests)."""
        self._interrupted.set()

    def request_rebalance(self) -> None:
        """Have the group rebalance: the next :meth:`poll` rejoins (poll thread)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None:
            coordinator.request_rejoin()

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronously commit ``offsets`` (next offset to process per partition)."""
        if not offsets:
            return
        converted = {_ktp(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
        with _kafka_errors(f"committing offsets of group {self.group_id!r}", self._where):
            self._consumer.commit(converted, timeout_ms=self._timeout_ms)

    def committed(self, tp: TopicPartition) -> int | None:
        """Return the group's committed offset for ``tp``, or ``None``."""
        with _kafka_errors(f"fetching the committed offset of {tp}", self._where):
            offset = self._consumer.committed(_ktp(tp), timeout_ms=self._timeout_ms)
        return None if offset is None or offset < 0 else int(offset)

    def generation(self) -> int:
        """Return the generation of the current assignment (-1 outside the group)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        generation = getattr(getattr(coordinator, "_generation", None), "generation_id", None)
        return generation if isinstance(generation, int) else -1

    def group_metadata(self) -> Any:
        """Return the consumer's group metadata, for ``send_offsets_to_transaction``."""
        return self._consumer.group_metadata()

    def close(self) -> None:
        """Revoke partitions through the listener (on this thread), leave the group."""
        if self._closed:
            return
        self._closed = True
        # The broker answers a connection's requests in order: while a join
        # is in flight the LeaveGroup request waits behind it, for as long as
        # the rebalance takes. A member interrupted mid-join closes without
        # waiting for that answer; its session times out on the broker.
        timeout_ms = _LEAVE_MID_JOIN_MS if self._interrupted.is_set() and self._joining() else None
        try:
            with _kafka_errors(f"leaving group {self.group_id!r}", self._where):
                self._call(lambda: self._consumer.close(autocommit=False, timeout_ms=timeout_ms))
        finally:
            self._runner.stop()
            self._transport._forget(self)
