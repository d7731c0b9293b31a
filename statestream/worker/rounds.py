"""Commit rounds: every partition of a worker commits with one flush and one offset commit.

Every commit interval the poll thread starts a round. It hands a
:class:`CommitTicket` to each partition task with uncommitted work; each task,
between two records, runs its half of step 2 of the commit protocol (queue
its changelog records on the shared producer) and reports its source
positions. The poll thread then flushes the producer **once**, commits the
source offsets of every partition in the round **once**, and releases the
tasks, which write their stores (step 4). Per partition the order of the
protocol is unchanged (changelog flushed, then source offsets, then store);
what is shared is the flush and the offset commit, which otherwise cost a
broker round trip per partition per interval.

A task that does not take its ticket in time (a slow record) is left out of
the round and commits on its own once that record is done.

Thread ownership: a ticket is created and finished by the poll thread and
taken and reported by one partition thread; its state changes under a lock.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from statestream.types import TopicPartition

__all__ = ["CommitTicket", "TicketState", "run_round"]


class TicketState(enum.Enum):
    """Where a partition is in a commit round."""

    REQUESTED = "requested"  # handed out, not taken yet
    PREPARING = "preparing"  # taken by the partition thread
    PREPARED = "prepared"  # changelog records queued, positions reported
    FAILED = "failed"  # preparing raised; the partition thread stops
    CANCELLED = "cancelled"  # not taken in time: left out of this round
    DONE = "done"  # flushed and committed (or the round failed: see error)


class CommitTicket:
    """One partition's part in one commit round."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._lock = threading.Lock()
        self._state = TicketState.REQUESTED
        self._prepared = threading.Event()
        self._done = threading.Event()
        #: Next offset to process per source partition, reported by the task.
        self.positions: dict[TopicPartition, int] = {}
        #: Why the round failed (the flush or the offset commit), if it did.
        self.error: BaseException | None = None

    @property
    def state(self) -> TicketState:
        return self._state

    # -- the partition thread ------------------------------------------------------

    def take(self) -> bool:
        """Start preparing; ``False`` if the round went on without this partition."""
        with self._lock:
            if self._state is not TicketState.REQUESTED:
                return False
            self._state = TicketState.PREPARING
            return True

    def prepared(self, positions: Mapping[TopicPartition, int]) -> None:
        """Report the changelog records queued and the positions to commit."""
        with self._lock:
            self.positions = dict(positions)
            self._state = TicketState.PREPARED
        self._prepared.set()

    def decline(self) -> None:
        """Leave this round (the task commits on its own, e.g. while stopping)."""
        with self._lock:
            if self._state is TicketState.REQUESTED:
                self._state = TicketState.CANCELLED
        self._prepared.set()

    def failed(self) -> None:
        """Report that preparing raised (the partition thread is stopping)."""
        with self._lock:
            self._state = TicketState.FAILED
        self._prepared.set()

    def wait_done(self) -> None:
        """Block until the poll thread finished the round; raise its error, if any."""
        self._done.wait()
        if self.error is not None:
            raise self.error

    # -- the poll thread -------------------------------------------------------------

    def wait_prepared(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the task to report; ``True`` once it has."""
        return self._prepared.wait(timeout)

    def cancel(self) -> bool:
        """Leave the partition out of the round unless it is already preparing.

        Returns ``True`` if cancelled (or already finished preparing badly);
        ``False`` while the task is preparing: the caller must wait for it.
        """
        with self._lock:
            if self._state is TicketState.REQUESTED:
                self._state = TicketState.CANCELLED
                self._prepared.set()
            return self._state is not TicketState.PREPARING

    def finish(self, error: BaseException | None) -> None:
        """Release the task: the round is committed (``error`` is ``None``) or failed."""
        with self._lock:
            self.error = error
            self._state = TicketState.DONE
        self._done.set()


def run_round(
    tickets: Sequence[CommitTicket],
    *,
    alive: Callable[[int], bool],
    flush: Callable[[], None],
    commit: Callable[[Mapping[TopicPartition, int]], None],
    idle: Callable[[], None],
    take_timeout: float,
) -> list[CommitTicket]:
    """Drive one commit round on the poll thread; return the tickets it committed.

    Waits for every task to report (calling ``idle`` between waits, so the
    poll thread keeps serving other requests), leaving out tasks that are
    not alive or have not taken their ticket within ``take_timeout``; then
    ``flush`` once, ``commit`` the positions of every reporting partition
    once, and finish every reported ticket, with the error if either step
    raised. Every ticket handed out is finished or cancelled on return, so
    no task waits for ever.
    """
    deadline = time.monotonic() + take_timeout
    for ticket in tickets:
        while not ticket.wait_prepared(0.005):
            idle()
            late = not alive(ticket.partition) or time.monotonic() >= deadline
            if late and ticket.cancel():
                break
    ready = [t for t in tickets if t.state is TicketState.PREPARED]
    error: BaseException | None = None
    try:
        if ready:
            flush()
            offsets: dict[TopicPartition, int] = {}
            for ticket in ready:
                offsets.update(ticket.positions)
            if offsets:
                commit(offsets)
    except BaseException as exc:  # handed to every task of the round, which raise it
        error = exc
        if not isinstance(exc, Exception):
            raise
    finally:
        for ticket in ready:
            ticket.finish(error)
    return ready
