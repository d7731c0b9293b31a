"""The commit coordinator: the one place where the commit protocol runs.

Every commit, of any set of partitions, goes through
:meth:`CommitCoordinator.commit`: a worker's round of all its ready
partitions, or a round of one (a partition that missed a round, a revoked
partition, a partition stopping before a bad record's error, shutdown).
Nothing else produces changelog records of processed work, commits source
offsets or applies write buffers to stores. The steps, in order:

1. **Collect**: the write buffer of every table of every partition yields one
   change per dirty key (its last value or a tombstone) and the source record
   that produced it.
2. **Changelog**: produce one changelog record per change, with its source
   offset and the partition's writer epoch; flush the producer synchronously;
   then check that **every** changelog record and every output record sent
   since the partition's last commit has an acknowledged offset (a flush that
   returns is not proof of delivery; producer errors are sticky, so a failed
   record fails every later flush too).
3. **Source offsets**: commit the source positions of every partition of the
   round, in one call.
4. **Stores**: apply each table's changes to its store atomically together
   with the offset of its last changelog record.

A failure at any step raises :class:`~statestream.errors.CommitError` and
stops the round: nothing after the failed step happens, so a restart
restores exactly the state of the committed source records (recovery skips
changelog records whose source offset was not committed). The caller stops
the worker; a failed round is never retried in place.

One failure is not the round's: a store found damaged in step 4 (its data
gone under it, :class:`~statestream.errors.StoreCorruptedError`). Its
partition's changelog records and source offsets are committed by then, so
the other partitions' stores are still written, and
:class:`~statestream.errors.DamagedStoresError` (a ``CommitError``) names
the damaged partitions, which the worker rebuilds from their changelogs.

Owners of offsets (each has exactly one):

* **source offsets** (the consumer group's committed offsets): written only
  by step 3, through the ``commit_source`` callable, which runs on (or is
  handed to) the poll thread, the only user of the group consumer;
* **store offsets** (the changelog offset kept with each store's data):
  written only by step 4 here and, before a partition processes, by its
  restore (:mod:`statestream.tables.recovery`) and the repair that follows
  it (:meth:`TableManager.restore_partition`).

Thread ownership: :meth:`commit` runs on the thread that owns every
partition of the round for its duration: the partition thread for a round of
one, or the poll thread while the partition threads of a round are parked
waiting for it (:mod:`statestream.worker.rounds`), which hands their shards
over to it and back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from statestream.errors import (
    CommitError,
    DamagedStoresError,
    LogError,
    StateStreamError,
    StoreCorruptedError,
)
from statestream.listeners import CommitDone
from statestream.log.base import Delivery, Producer
from statestream.tables.manager import TableManager
from statestream.types import TopicPartition

__all__ = ["CommitCoordinator", "CommitRequest", "CommitSource"]

#: Commits source offsets (next offset to process per source partition).
CommitSource = Callable[[Mapping[TopicPartition, int]], None]


@dataclass
class CommitRequest:
    """One partition's part in a commit round."""

    partition: int
    #: Next offset to process per source topic partition.
    positions: Mapping[TopicPartition, int]
    #: The last output record (``ctx.send``, dead letters) sent per destination
    #: partition since the partition's last commit: each must be acknowledged.
    outputs: Sequence[Delivery] = field(default_factory=tuple)


class CommitCoordinator:
    """Runs the four steps of the commit protocol for a set of partitions.

    ``on_commit`` is called after every commit that completed all four
    steps, on the thread that ran it, with what it committed
    (:class:`~statestream.listeners.CommitDone`); it must not raise
    (a :class:`~statestream.listeners.ListenerSet` catches what its listeners raise).
    """

    def __init__(
        self,
        manager: TableManager,
        producer: Producer,
        on_commit: Callable[[CommitDone], None] | None = None,
    ) -> None:
        self.manager = manager
        self.producer = producer
        self.on_commit = on_commit

    def commit(self, requests: Sequence[CommitRequest], commit_source: CommitSource) -> None:
        """Commit every partition of ``requests`` (see the module docstring)."""
        if not requests:
            return
        began = time.perf_counter()
        manager = self.manager
        where = _partitions(requests)

        # 1. Collect one change per dirty key of every table.
        pending = [manager.prepare(request.partition) for request in requests]

        # 2. Produce the changelog records, flush, and check every delivery.
        for commit in pending:
            manager.send_changelogs(commit)
        try:
            self.producer.flush()
        except LogError as exc:
            raise CommitError(
                f"step 2 of the commit of {where}: flushing changelog and output records "
                f"failed ({exc}); source offsets were not committed, so the records will be "
                "reprocessed"
            ) from exc
        for commit, request in zip(pending, requests, strict=True):
            try:
                manager.changelogs_flushed(commit)
            except CommitError as exc:
                raise CommitError(
                    f"step 2 of the commit of partition {request.partition}: {exc}"
                ) from exc
            _check_outputs(request)

        # 3. Commit the source offsets of every partition of the round.
        offsets: dict[TopicPartition, int] = {}
        for request in requests:
            offsets.update(request.positions)
        try:
            commit_source(offsets)
        except StateStreamError as exc:
            raise CommitError(
                f"step 3 of the commit of {where}: committing source offsets failed "
                f"({exc}); the stores were not updated, so a restart restores exact state"
            ) from exc

        # 4. Apply the changes to the stores with their changelog offsets. A
        # store found damaged (its data gone) does not stop the others: every
        # step before this one is done for its partition too, so the others
        # complete and the damaged ones are rebuilt from their changelogs.
        damaged: dict[int, StoreCorruptedError] = {}
        for commit in pending:
            try:
                manager.apply(commit)
            except StoreCorruptedError as exc:
                damaged[commit.partition] = exc
        done = [commit for commit in pending if commit.partition not in damaged]
        for commit in done:
            manager.check_foreign_writes(commit)
        if self.on_commit is not None and done:
            written = {
                (table, commit.partition): len(changes)
                for commit in done
                for table, changes in commit.changes.items()
            }
            self.on_commit(
                CommitDone(
                    tuple(sorted(commit.partition for commit in done)),
                    {tp: o for tp, o in offsets.items() if tp.partition not in damaged},
                    written,
                    time.perf_counter() - began,
                )
            )
        if damaged:
            first = min(damaged)
            raise DamagedStoresError(
                f"step 4 of the commit of {where}: the stores of partitions "
                f"{sorted(damaged)} are damaged (partition {first}: {damaged[first]}); their "
                "changelog records and source offsets are committed, so they are rebuilt "
                "from their changelogs",
                damaged,
            ) from damaged[first]


def _partitions(requests: Sequence[CommitRequest]) -> str:
    numbers = sorted(r.partition for r in requests)
    return f"partition {numbers[0]}" if len(numbers) == 1 else f"partitions {numbers}"


def _check_outputs(request: CommitRequest) -> None:
    for delivery in request.outputs:
        try:
            delivery.offset  # noqa: B018 - raises unless acknowledged
        except LogError as exc:
            raise CommitError(
                f"step 2 of the commit of partition {request.partition}: an output record "
                f"was not acknowledged ({exc}); source offsets were not committed, so the "
                "records will be reprocessed"
            ) from exc
