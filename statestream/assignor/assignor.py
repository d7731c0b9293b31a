"""``StateAssignor``: the group assignor of statestream workers.

A *task* is a source partition number: partition ``p`` of every source topic,
with partition ``p`` of every table. At each rebalance:

1. every member reports (:meth:`StateAssignor.user_data`) the tasks it had
   active and the offset of each local store copy it holds (active, standby,
   or left on disk by an earlier run), from :class:`~statestream.tables.local.LocalOffsets`;
2. the leader (:meth:`StateAssignor.assign`) reads the changelogs' watermarks,
   turns offsets into lags (records behind the changelog end, summed over
   the task's local tables), and places tasks with :func:`~statestream.assignor.plan.plan`:
   each active on the member closest to the end (ties: the previous owner),
   active counts balanced within one, standbys spread over the other
   members (then on those holding the state), and a member too far behind
   (``acceptable_recovery_lag``) getting the task as a warm-up first;
3. each member receives its active partitions and an
   :class:`~statestream.assignor.userdata.AssignmentInfo` (standbys,
   warm-ups, whether it asks for the probing rebalance), handed to the worker.

Tables on a shared store (Aerospike) count as no local state: any member
continues them from the changelog delta, so they get no standbys and add no lag.

Thread ownership: the group client's thread (while the poll thread waits in
``poll``); ``on_info`` is called there too and must only hand over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from statestream.assignor.plan import MemberState, Plan, plan
from statestream.assignor.userdata import (
    AssignmentInfo,
    SubscriptionInfo,
    decode_assignment,
    decode_subscription,
)
from statestream.errors import StateStreamError
from statestream.log.base import GroupAssignment, GroupSubscription, PartitionAssignor
from statestream.tables.local import LocalOffsets
from statestream.types import TopicPartition

__all__ = ["StateAssignor", "Watermarks", "task_lags"]

log = logging.getLogger("statestream.assignor")

#: Returns ``(low, high)`` of each changelog partition asked for.
Watermarks = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, tuple[int, int]]]


def task_lags(
    tasks: Sequence[int],
    changelogs: Sequence[str],
    offsets: Mapping[TopicPartition, int],
    marks: Mapping[TopicPartition, tuple[int, int]],
) -> dict[int, int]:
    """Return one member's lag per task: the changelog records it would have to restore.

    A table without a usable copy (none, or an offset the changelog cannot
    continue) counts as its whole changelog, so a small task is caught up
    everywhere: restoring it costs less than ``acceptable_recovery_lag``.
    """
    lags: dict[int, int] = {}
    for task in tasks:
        lag = 0
        for topic in changelogs:
            tp = TopicPartition(topic, task)
            low, high = marks.get(tp, (0, 0))
            offset = offsets.get(tp)
            if offset is not None and low - 1 <= offset < high:
                lag += high - 1 - offset
            else:
                lag += high - low
        lags[task] = lag
    return lags


class StateAssignor(PartitionAssignor):
    """Places active, standby and warm-up tasks by lag (see the module docstring)."""

    name = "statestream"

    def __init__(
        self,
        source_topics: Sequence[str],
        changelogs: Sequence[str],
        local: LocalOffsets,
        watermarks: Watermarks,
        on_info: Callable[[AssignmentInfo], None],
        *,
        num_standbys: int = 0,
        acceptable_recovery_lag: int = 10_000,
        endpoint: str | None = None,
    ) -> None:
        self.source_topics = tuple(source_topics)
        #: This member's HTTP endpoint, advertised to the group (None: it runs none).
        self.endpoint = endpoint
        #: Changelog topics of the tables with local (not shared) stores.
        self.changelogs = tuple(changelogs)
        self.local = local
        self.watermarks = watermarks
        self.on_info = on_info
        # Without local state a standby would copy nothing.
        self.num_standbys = num_standbys if self.changelogs else 0
        self.acceptable_recovery_lag = acceptable_recovery_lag
        self._active: frozenset[int] = frozenset()

    # -- every member ------------------------------------------------------------

    def user_data(self, topics: Sequence[str]) -> bytes:
        """Report the tasks held active and every local copy's offset."""
        wanted = set(self.changelogs)
        offsets = {tp: o for tp, o in self.local.snapshot().items() if tp.topic in wanted}
        return SubscriptionInfo(self._active, offsets, self.endpoint).encode()

    def on_assignment(self, assignment: GroupAssignment, generation: int) -> None:
        """Remember the active tasks; hand the whole assignment to the worker."""
        sources = set(self.source_topics)
        active = frozenset(tp.partition for tp in assignment.partitions if tp.topic in sources)
        self._active = active
        self.on_info(decode_assignment(assignment.user_data, active, generation))

    # -- the leader ----------------------------------------------------------------

    def assign(
        self, partitions: Mapping[str, int], members: Sequence[GroupSubscription]
    ) -> Mapping[str, GroupAssignment]:
        """Place every task (see the module docstring)."""
        counts = [partitions[t] for t in self.source_topics if t in partitions]
        tasks = list(range(min(counts))) if counts else []
        reports = {m.member_id: decode_subscription(m.user_data) for m in members}
        marks = self._marks(tasks, reports)
        states = [
            MemberState(
                m.member_id,
                reports[m.member_id].active,
                task_lags(tasks, self.changelogs, reports[m.member_id].offsets, marks),
            )
            for m in members
        ]
        decided = plan(
            tasks,
            states,
            num_standbys=self.num_standbys,
            acceptable_recovery_lag=self.acceptable_recovery_lag,
        )
        self._log(decided)
        prober = next((m for m in sorted(decided.warmup) if decided.warmup[m]), None)
        owners = {
            task: endpoint
            for mid, tasks_of in decided.active.items()
            for endpoint in (reports[mid].endpoint,)
            if endpoint is not None
            for task in tasks_of
        }
        result: dict[str, GroupAssignment] = {}
        for member in members:
            mid = member.member_id
            active = decided.active[mid]
            mine = [
                TopicPartition(topic, task)
                for topic in member.topics
                if topic in partitions
                for task in sorted(active)
                if task < partitions[topic]
            ]
            info = AssignmentInfo(
                active,
                decided.standby[mid],
                decided.warmup[mid],
                probe=mid == prober,
                owners=owners,
            )
            result[mid] = GroupAssignment(tuple(mine), info.encode())
        return result

    def _marks(
        self, tasks: Sequence[int], reports: Mapping[str, SubscriptionInfo]
    ) -> Mapping[TopicPartition, tuple[int, int]]:
        wanted = [TopicPartition(topic, task) for topic in self.changelogs for task in tasks]
        if not wanted:
            return {}
        try:
            return self.watermarks(wanted)
        except StateStreamError as exc:
            # Without the changelog ends the best copy is the furthest one:
            # rank by reported offsets alone (every copy's end is its best).
            log.warning("cannot read changelog watermarks (%s); ranking copies by offset", exc)
            best: dict[TopicPartition, tuple[int, int]] = {}
            for report in reports.values():
                for tp, offset in report.offsets.items():
                    low, high = best.get(tp, (0, 0))
                    best[tp] = (low, max(high, offset + 1))
            return best

    def _log(self, decided: Plan) -> None:
        for mid in sorted(decided.active):
            log.info(
                "assignment of %s: active %s, standby %s, warm-up %s",
                mid,
                sorted(decided.active[mid]),
                sorted(decided.standby[mid] - decided.warmup[mid]),
                sorted(decided.warmup[mid]),
            )
