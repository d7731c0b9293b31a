"""Task assignment for a group whose tasks keep local state: lag-aware, sticky, with standbys.

Contract of :func:`plan`:

Inputs
    ``tasks``, the task ids to place (duplicates are ignored); ``members``, one
    :class:`MemberState` per group member (its previous active tasks and, per
    task, how many records its local copy of the task's state is behind the
    changelog end); ``num_standbys``, standby copies wanted per task; and
    ``acceptable_recovery_lag``, the largest lag at which a member may take a
    task active without a long restore. A member is *caught up* on a task when
    it has a local copy whose lag is at most ``acceptable_recovery_lag``.

Output
    A :class:`Plan` naming, for every member (each one is a key of every
    mapping, possibly with an empty set), its active tasks, its standby tasks
    and, among those standbys, its warm-up tasks. A warm-up is a standby on the
    member the task is meant to move to, while a caught-up member keeps the task
    active until the warm-up member has caught up and the group rebalances
    again (``Plan.probing_needed``).

Guarantees
    * every task has exactly one active member; nothing else is assigned;
    * the target assignment (``Plan.target``, actives with every warm-up moved
      to its warm-up member) gives each member ``n // m`` or ``n // m + 1``
      tasks, so its counts differ by at most one; with no warm-ups the actives
      are that target;
    * a task is active on a member that is not caught up only when no member
      is caught up on it; a warm-up is placed only where the active member is
      caught up and the warm-up member is not;
    * when nothing changed (each member caught up on its previous tasks, which
      already were a balanced partition of ``tasks``) the actives are exactly
      the previous assignment and there are no warm-ups;
    * standbys are spread: each member's (target) tasks keep their copies on
      the other members as evenly as the constraints allow (within one with
      one copy per task and no warm-ups), then on the least loaded, then on
      the closest copy; so a dead member's tasks can move to their copies
      with the group still balanced;
    * no member holds a task both active and standby; with ``num_standbys > 0``
      every task has ``min(num_standbys, len(members) - 1)`` standby copies on
      distinct members (its warm-up among them); with ``num_standbys == 0`` a
      task's only standby is its warm-up, if it has one.

``plan`` is a pure function: deterministic (members are ordered by id inside,
so their input order does not matter) and free of shared state, hence safe to
call from any number of threads at once. It raises :class:`ValueError` for no
members, duplicate member ids, a negative ``num_standbys`` or
``acceptable_recovery_lag``, or a negative lag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["MemberState", "Plan", "plan"]


@dataclass(frozen=True)
class MemberState:
    """What one member reports when the group rebalances."""

    member_id: str
    #: Tasks this member had active in the previous generation. They may overlap
    #: another member's after a crash; tasks not being placed are ignored.
    previous: frozenset[int] = frozenset()
    #: Task -> records this member's local copy is behind the changelog end
    #: (``>= 0``). A task missing here means no local copy at all, which ranks
    #: worse than any copy.
    lags: Mapping[int, int] = field(default_factory=dict)


#: Sort key over the members for one task; the smallest key is the best member.
_Key = Callable[[MemberState, int], tuple[object, ...]]


@dataclass(frozen=True)
class Plan:
    """The outcome of :func:`plan`; every member is a key of all three mappings."""

    #: Member -> tasks it runs.
    active: Mapping[str, frozenset[int]]
    #: Member -> tasks it keeps a standby copy of, warm-ups included.
    standby: Mapping[str, frozenset[int]]
    #: Member -> tasks it restores in order to take them active later (a subset
    #: of its standby tasks).
    warmup: Mapping[str, frozenset[int]]

    def owner(self, task: int) -> str:
        """The member running ``task`` (:class:`KeyError` if it was not placed)."""
        for member_id, tasks in self.active.items():
            if task in tasks:
                return member_id
        raise KeyError(task)

    @property
    def target(self) -> Mapping[str, frozenset[int]]:
        """The balanced assignment the group converges to once its warm-ups catch up."""
        moving = frozenset().union(*self.warmup.values())
        return {
            member_id: (tasks - moving) | self.warmup.get(member_id, frozenset())
            for member_id, tasks in self.active.items()
        }

    @property
    def probing_needed(self) -> bool:
        """Whether a warm-up exists, so the group should rebalance again once it catches up."""
        return any(self.warmup.values())


def plan(
    tasks: Iterable[int],
    members: Sequence[MemberState],
    *,
    num_standbys: int = 0,
    acceptable_recovery_lag: int = 10_000,
) -> Plan:
    """Place ``tasks`` on ``members``; see the module docstring for the contract."""
    _validate(members, num_standbys, acceptable_recovery_lag)
    ordered = sorted(members, key=lambda m: m.member_id)
    todo = sorted(set(tasks))
    target = _target(todo, ordered, acceptable_recovery_lag)
    active, warmup = _actives(todo, ordered, target, acceptable_recovery_lag)
    standby = _standbys(todo, ordered, active, warmup, num_standbys, target)
    ids = [m.member_id for m in ordered]
    return Plan(
        active=_by_member(ids, active.items()),
        standby=_by_member(ids, ((t, m) for t, ms in standby.items() for m in ms)),
        warmup=_by_member(ids, warmup.items()),
    )


def _validate(members: Sequence[MemberState], num_standbys: int, recovery_lag: int) -> None:
    if not members:
        raise ValueError("no members to assign tasks to")
    seen: set[str] = set()
    for member in members:
        if member.member_id in seen:
            raise ValueError(f"duplicate member id {member.member_id!r}")
        seen.add(member.member_id)
        for task, lag in member.lags.items():
            if lag < 0:
                raise ValueError(f"member {member.member_id!r}: negative lag {lag} for {task}")
    if num_standbys < 0:
        raise ValueError(f"num_standbys must be >= 0, not {num_standbys}")
    if recovery_lag < 0:
        raise ValueError(f"acceptable_recovery_lag must be >= 0, not {recovery_lag}")


def _caught_up(member: MemberState, task: int, recovery_lag: int) -> bool:
    lag = member.lags.get(task)
    return lag is not None and lag <= recovery_lag


def _distance(member: MemberState, task: int) -> tuple[bool, int]:
    """How far ``member`` is from the changelog end of ``task``: by lag, no copy farthest."""
    lag = member.lags.get(task)
    return (lag is None, 0 if lag is None else lag)


def _rank(member: MemberState, task: int) -> tuple[bool, int, bool, str]:
    """Sort key, best first: closest to the changelog end, then previous owner, then id."""
    return (*_distance(member, task), task not in member.previous, member.member_id)


class _Capacity:
    """Per-member task counts, kept within ``n // m`` and ``n // m + 1``.

    Only ``n % m`` members may reach the ceiling; the others stop at the floor.
    Whoever reaches the ceiling first keeps it, so the passes that run first
    (stickiness, then caught-up members) decide who gets the extra tasks. As
    the capacities sum to exactly ``n``, every task finds a place.
    """

    def __init__(self, n_tasks: int, member_ids: Sequence[str]) -> None:
        self.floor, self.extra = divmod(n_tasks, len(member_ids))
        self.load = dict.fromkeys(member_ids, 0)
        self._at_ceiling = 0

    def has_room(self, member_id: str) -> bool:
        load = self.load[member_id]
        return load < self.floor or (load == self.floor and self._at_ceiling < self.extra)

    def take(self, member_id: str) -> None:
        self.load[member_id] += 1
        if self.load[member_id] == self.floor + 1:
            self._at_ceiling += 1


def _target(
    todo: Sequence[int], ordered: Sequence[MemberState], recovery_lag: int
) -> dict[int, str]:
    """The balanced assignment (task -> member) to converge to."""
    capacity = _Capacity(len(todo), [m.member_id for m in ordered])
    target: dict[int, str] = {}

    def give(task: int, candidates: Iterable[MemberState], key: _Key) -> None:
        roomy = [m for m in candidates if capacity.has_room(m.member_id)]
        if roomy:
            best = min(roomy, key=lambda m: key(m, task))
            target[task] = best.member_id
            capacity.take(best.member_id)

    # Stickiness first: a caught-up previous owner keeps its task, so a
    # rebalance moves nothing that need not move.
    for task in todo:
        claims = [m for m in ordered if task in m.previous and _caught_up(m, task, recovery_lag)]
        give(task, claims, _rank)
    # Then any caught-up member: taking the task over costs no long restore.
    for task in (t for t in todo if t not in target):
        give(task, [m for m in ordered if _caught_up(m, task, recovery_lag)], _rank)

    # Nobody with room is caught up: the closest copy restores fastest; among
    # members with no copy at all, spreading the restores evens them out.
    def loaded_rank(member: MemberState, task: int) -> tuple[bool, int, bool, int, str]:
        no_copy, lag, not_previous, member_id = _rank(member, task)
        return (no_copy, lag, not_previous, capacity.load[member_id] if no_copy else 0, member_id)

    for task in (t for t in todo if t not in target):
        give(task, ordered, loaded_rank)
    return target


def _actives(
    todo: Sequence[int],
    ordered: Sequence[MemberState],
    target: Mapping[int, str],
    recovery_lag: int,
) -> tuple[dict[int, str], dict[int, str]]:
    """Actives and warm-ups (task -> member): a task waits on a caught-up member, if any."""
    active: dict[int, str] = {}
    warmup: dict[int, str] = {}
    for task in todo:
        caught_up = [m for m in ordered if _caught_up(m, task, recovery_lag)]
        if not caught_up or any(m.member_id == target[task] for m in caught_up):
            active[task] = target[task]
        else:
            active[task] = min(caught_up, key=lambda m: _rank(m, task)).member_id
            warmup[task] = target[task]
    return active, warmup


def _standbys(
    todo: Sequence[int],
    ordered: Sequence[MemberState],
    active: Mapping[int, str],
    warmup: Mapping[int, str],
    num_standbys: int,
    target: Mapping[int, str],
) -> dict[int, list[str]]:
    """Standby members per task; a warm-up is always one of them.

    Each copy goes to the least loaded eligible member, counting the tasks
    it will run (its target) and the copies it keeps so far; among equally
    loaded ones, to the closest copy. Spreading the copies is what lets a
    dead member's tasks move to their standbys and stay balanced: copies
    piled on one member (the one that happens to hold old state) would leave
    only one of them to take the dead member's tasks over.
    """
    copies = min(num_standbys, len(ordered) - 1)
    standby: dict[int, list[str]] = {task: [] for task in todo}
    load = dict.fromkeys((m.member_id for m in ordered), 0)
    # Copies a member keeps of each other member's (target) tasks.
    spread: dict[tuple[str, str], int] = {}
    for member_id in target.values():
        load[member_id] += 1
    for task, member_id in warmup.items():
        standby[task].append(member_id)
        key = (member_id, active[task])
        spread[key] = spread.get(key, 0) + 1
    # One copy of every task per round, so the later copies balance too.
    for _ in range(copies):
        for task in todo:
            if len(standby[task]) >= copies:
                continue
            owner = target[task]
            taken = {active[task], owner, *standby[task]}
            candidates = [m for m in ordered if m.member_id not in taken]
            if not candidates:
                continue
            best = min(
                candidates,
                key=lambda m: (
                    spread.get((m.member_id, owner), 0),
                    load[m.member_id],
                    *_distance(m, task),
                    m.member_id,
                ),
            )
            standby[task].append(best.member_id)
            load[best.member_id] += 1
            spread[(best.member_id, owner)] = spread.get((best.member_id, owner), 0) + 1
    return standby


def _by_member(ids: Sequence[str], pairs: Iterable[tuple[int, str]]) -> dict[str, frozenset[int]]:
    grouped: dict[str, set[int]] = {member_id: set() for member_id in ids}
    for task, member_id in pairs:
        grouped[member_id].add(task)
    return {member_id: frozenset(tasks) for member_id, tasks in grouped.items()}
