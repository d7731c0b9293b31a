"""Commit rounds: the hand-over that lets one commit cover every partition of a worker.

Every commit interval the poll thread starts a round. It hands a
:class:`CommitTicket` to each partition task with uncommitted work; each task,
between two records, **parks**: it hands its commit request (source
positions, output deliveries) and, with it, its shards to the poll thread,
and waits. The poll thread then runs the commit coordinator
(:mod:`statestream.tables.commit`, the only code that runs the steps of the
commit protocol) once for every parked partition, one flush and one offset
commit for all of them, and releases the tasks, which take their shards back.

A task that does not take its ticket in time (a slow record) is left out of
the round and commits alone (a round of one, through the same coordinator)
once that record is done.

Thread ownership: a ticket is created and finished by the poll thread and
taken and parked by one partition thread; its state changes under a lock.
Between :meth:`CommitTicket.park` and :meth:`CommitTicket.finish` the
partition's shards belong to the poll thread (the events give the
happens-before edges).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Sequence

from statestream.errors import DamagedStoresError, StoreCorruptedError
from statestream.tables.commit import CommitRequest

__all__ = ["CommitTicket", "TicketState", "run_round"]


class TicketState(enum.Enum):
    """Where a partition is in a commit round."""

    REQUESTED = "requested"  # handed out, not taken yet
    PARKED = "parked"  # the task waits; its shards belong to the round
    CANCELLED = "cancelled"  # not taken in time: left out of this round
    DONE = "done"  # committed (or the round failed: see error)


class CommitTicket:
    """One partition's part in one commit round."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._lock = threading.Lock()
        self._state = TicketState.REQUESTED
        self._parked = threading.Event()
        self._done = threading.Event()
        #: What the task asks to commit (set when it parks).
        self.request: CommitRequest | None = None
        #: Why the round failed, if it did.
        self.error: BaseException | None = None

    @property
    def state(self) -> TicketState:
        return self._state

    # -- the partition thread ------------------------------------------------------

    def park(self, request: CommitRequest) -> bool:
        """Hand ``request`` (and the partition's shards) to the round.

        ``False`` if the round went on without this partition; then nothing
        was handed over. Otherwise call :meth:`wait_done` next.
        """
        with self._lock:
            if self._state is not TicketState.REQUESTED:
                return False
            self.request = request
            self._state = TicketState.PARKED
        self._parked.set()
        return True

    def decline(self) -> None:
        """Leave this round (the task commits on its own, or not at all)."""
        with self._lock:
            if self._state is TicketState.REQUESTED:
                self._state = TicketState.CANCELLED
        self._parked.set()

    def wait_done(self) -> None:
        """Block until the round is over; raise its error, if any."""
        self._done.wait()
        if self.error is not None:
            raise self.error

    # -- the poll thread -------------------------------------------------------------

    def wait_parked(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the task to park or decline."""
        return self._parked.wait(timeout)

    def cancel(self) -> None:
        """Leave the partition out of the round unless it has parked already."""
        with self._lock:
            if self._state is TicketState.REQUESTED:
                self._state = TicketState.CANCELLED
                self._parked.set()

    def finish(self, error: BaseException | None) -> None:
        """Release the task: the round committed (``error`` is ``None``) or failed."""
        with self._lock:
            self.error = error
            self._state = TicketState.DONE
        self._done.set()


def run_round(
    tickets: Sequence[CommitTicket],
    *,
    alive: Callable[[int], bool],
    commit: Callable[[Sequence[CommitRequest]], None],
    idle: Callable[[], None],
    take_timeout: float,
) -> list[CommitTicket]:
    """Drive one commit round on the poll thread; return the tickets it committed.

    Waits for every task to park (calling ``idle`` between waits, so the
    poll thread keeps serving other requests), leaving out tasks that are
    not alive or have not parked within ``take_timeout``; then ``commit``
    the requests of every parked partition at once (the coordinator) and
    finish every parked ticket, with the error if the commit raised; the
    error is then raised here too. A
    :class:`~statestream.errors.DamagedStoresError` is not raised: each
    damaged partition's ticket gets its own store's error, the others
    committed. Every ticket handed out is finished or cancelled on return,
    so no task waits for ever.
    """
    deadline = time.monotonic() + take_timeout
    for ticket in tickets:
        while not ticket.wait_parked(0.005):
            idle()
            if not alive(ticket.partition) or time.monotonic() >= deadline:
                ticket.cancel()
    parked = [t for t in tickets if t.state is TicketState.PARKED]
    error: BaseException | None = None
    damaged: dict[int, StoreCorruptedError] = {}
    try:
        requests = [t.request for t in parked if t.request is not None]
        if requests:
            commit(requests)
    except DamagedStoresError as exc:
        # Not the round's failure: the other partitions committed, and each
        # damaged one raises its own store's error (its task rebuilds it).
        damaged = exc.damaged
    except BaseException as exc:  # handed to every task of the round, which raise it
        error = exc
        raise
    finally:
        for ticket in parked:
            ticket.finish(damaged.get(ticket.partition, error))
    return [t for t in parked if t.partition not in damaged]
