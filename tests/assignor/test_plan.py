"""Tests of the task-assignment plan: worked examples and properties over random groups."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestream.assignor.plan import MemberState, Plan, plan

#: Task ids are drawn from this range; previous tasks and lags may name ids that
#: are not among the tasks being placed.
UNIVERSE = 30
UNIVERSE_TASKS = range(UNIVERSE)

PROPERTY = settings(max_examples=300, deadline=None)


@dataclass(frozen=True)
class Scenario:
    tasks: list[int]
    members: list[MemberState]
    num_standbys: int
    acceptable_recovery_lag: int

    def run(self, members: Sequence[MemberState] | None = None) -> Plan:
        return plan(
            self.tasks,
            self.members if members is None else members,
            num_standbys=self.num_standbys,
            acceptable_recovery_lag=self.acceptable_recovery_lag,
        )

    def caught_up(self, member_id: str, task: int) -> bool:
        lag = self.member(member_id).lags.get(task)
        return lag is not None and lag <= self.acceptable_recovery_lag

    def member(self, member_id: str) -> MemberState:
        return next(m for m in self.members if m.member_id == member_id)

    @property
    def copies(self) -> int:
        return min(self.num_standbys, len(self.members) - 1)


member_ids = st.lists(
    st.text(alphabet="abcdef", min_size=1, max_size=2), min_size=1, max_size=6, unique=True
)


def lags_from(raw: bytes, tasks: Sequence[int]) -> dict[int, int]:
    """One byte per task: below 100 no local copy, else a lag in 0..40.

    Bytes keep generation cheap (one draw per member) and shrink towards "no copy".
    """
    return {task: (byte - 100) % 41 for task, byte in zip(tasks, raw, strict=True) if byte >= 100}


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ids = draw(member_ids)
    tasks = draw(st.lists(st.integers(0, UNIVERSE - 1), max_size=24, unique=True))
    # Mostly one owner per task, as after a clean generation, plus some overlap
    # as after a crash.
    owners = draw(st.binary(min_size=UNIVERSE, max_size=UNIVERSE))
    members = []
    for i, member_id in enumerate(ids):
        owned = {t for t, byte in enumerate(owners) if byte % (len(ids) + 1) == i + 1}
        overlap = draw(st.frozensets(st.integers(0, UNIVERSE - 1), max_size=3))
        raw = draw(st.binary(min_size=UNIVERSE, max_size=UNIVERSE))
        members.append(
            MemberState(member_id, frozenset(owned | overlap), lags_from(raw, UNIVERSE_TASKS))
        )
    return Scenario(
        tasks=tasks,
        members=members,
        num_standbys=draw(st.integers(0, 3)),
        acceptable_recovery_lag=draw(st.integers(0, 20)),
    )


@st.composite
def unchanged_groups(draw: st.DrawFn) -> tuple[Scenario, dict[str, frozenset[int]]]:
    """A group whose previous assignment is balanced and whose owners are all caught up."""
    ids = draw(member_ids)
    recovery_lag = draw(st.integers(0, 20))
    tasks = draw(st.permutations(draw(st.lists(st.integers(0, 99), max_size=24, unique=True))))
    dealer = draw(st.permutations(ids))
    # Dealing the tasks round-robin gives each member n // m or n // m + 1.
    previous = {m: frozenset(tasks[i :: len(ids)]) for i, m in enumerate(dealer)}
    members = []
    for member_id in ids:
        raw = draw(st.binary(min_size=len(tasks), max_size=len(tasks)))
        lags = lags_from(raw, tasks)
        # Caught up, though another member may be closer still.
        owned = sorted(previous[member_id])
        raw = draw(st.binary(min_size=len(owned), max_size=len(owned)))
        lags.update({t: byte % (recovery_lag + 1) for t, byte in zip(owned, raw, strict=True)})
        members.append(MemberState(member_id, previous[member_id], lags))
    scenario = Scenario(
        tasks=list(tasks),
        members=members,
        num_standbys=draw(st.integers(0, 3)),
        acceptable_recovery_lag=recovery_lag,
    )
    return scenario, previous


def standby_members(result: Plan, task: int) -> list[str]:
    return [m for m, tasks in result.standby.items() if task in tasks]


def warmup_of(result: Plan, task: int) -> str | None:
    holders = [m for m, tasks in result.warmup.items() if task in tasks]
    assert len(holders) <= 1, f"task {task} has warm-ups on {holders}"
    return holders[0] if holders else None


def spread(assignment: Mapping[str, frozenset[int]]) -> int:
    counts = [len(tasks) for tasks in assignment.values()]
    return max(counts) - min(counts)


# Properties


@PROPERTY
@given(scenarios())
def test_every_task_has_exactly_one_active_and_nothing_else_is_placed(s: Scenario) -> None:
    result = s.run()
    ids = {m.member_id for m in s.members}
    assert set(result.active) == set(result.standby) == set(result.warmup) == ids
    counts = Counter(t for tasks in result.active.values() for t in tasks)
    assert counts == Counter(set(s.tasks))
    for task in s.tasks:
        assert task in result.active[result.owner(task)]
    for tasks in [*result.standby.values(), *result.warmup.values()]:
        assert tasks <= set(s.tasks)


@PROPERTY
@given(scenarios())
def test_standbys_are_distinct_from_actives_and_counted(s: Scenario) -> None:
    result = s.run()
    for member_id in result.active:
        assert not result.active[member_id] & result.standby[member_id]
        assert result.warmup[member_id] <= result.standby[member_id]
    for task in s.tasks:
        holders = standby_members(result, task)
        if s.num_standbys > 0:
            assert len(holders) == s.copies
        else:
            warmup = warmup_of(result, task)
            assert holders == ([] if warmup is None else [warmup])


@PROPERTY
@given(scenarios())
def test_target_is_balanced_within_one(s: Scenario) -> None:
    result = s.run()
    target = result.target
    assert Counter(t for tasks in target.values() for t in tasks) == Counter(set(s.tasks))
    assert spread(target) <= 1
    if not result.probing_needed:
        assert target == result.active
        assert spread(result.active) <= 1


@PROPERTY
@given(scenarios())
def test_active_lags_only_when_nobody_is_caught_up(s: Scenario) -> None:
    result = s.run()
    for task in s.tasks:
        if not s.caught_up(result.owner(task), task):
            assert not any(s.caught_up(m.member_id, task) for m in s.members)


@PROPERTY
@given(scenarios())
def test_warmups_only_where_a_caught_up_copy_exists_elsewhere(s: Scenario) -> None:
    result = s.run()
    for member_id, tasks in result.warmup.items():
        for task in tasks:
            owner = result.owner(task)
            assert owner != member_id
            assert s.caught_up(owner, task)
            assert not s.caught_up(member_id, task)
            assert task in result.target[member_id]


@PROPERTY
@given(scenarios())
def test_one_members_standbys_are_spread_over_the_others(s: Scenario) -> None:
    # With one copy per task, a member's tasks keep their copies on the other
    # members evenly: when it dies, its tasks can move to their copies and the
    # group stays balanced (copies piled on one member could not all move there).
    result = s.run()
    if s.num_standbys != 1 or result.probing_needed:
        return
    for member_id, tasks in result.target.items():
        counts = [
            len(tasks & copies) for other, copies in result.standby.items() if other != member_id
        ]
        if counts:
            assert max(counts) - min(counts) <= 1, (member_id, sorted(tasks), result.standby)


def test_a_dead_members_copies_are_on_different_members() -> None:
    # The case a three-worker group met: "a" held copies of 0, 1 and 3 from
    # earlier generations, "c" is new. Preferring old copies would put both
    # standbys of "b"'s tasks on "a", which could then take only one of them.
    a = MemberState("a", frozenset({2}), {0: 10, 1: 10, 2: 0, 3: 10})
    b = MemberState("b", frozenset({0, 1}), {0: 0, 1: 0, 2: 10, 3: 10})
    c = MemberState("c", frozenset(), {})
    result = plan(range(4), [a, b, c], num_standbys=1, acceptable_recovery_lag=1000)
    b_tasks = result.active["b"]
    holders = {m for m, copies in result.standby.items() if copies & b_tasks}
    assert len(b_tasks) == 2
    assert len(holders) == 2, result.standby


@PROPERTY
@given(unchanged_groups())
def test_nothing_moves_when_nothing_changed(
    case: tuple[Scenario, dict[str, frozenset[int]]],
) -> None:
    s, previous = case
    result = s.run()
    assert result.active == previous
    assert not result.probing_needed


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_plan_is_deterministic_and_ignores_input_order(s: Scenario, rnd: random.Random) -> None:
    shuffled = list(s.members)
    rnd.shuffle(shuffled)
    tasks = list(s.tasks)
    rnd.shuffle(tasks)
    first = s.run()
    assert s.run() == first
    assert s.run(shuffled) == first
    assert (
        plan(
            tasks,
            shuffled,
            num_standbys=s.num_standbys,
            acceptable_recovery_lag=s.acceptable_recovery_lag,
        )
        == first
    )


# Examples


def test_one_member_gets_everything_and_no_standbys() -> None:
    result = plan(range(5), [MemberState("a")], num_standbys=2)
    assert result.active == {"a": frozenset(range(5))}
    assert result.standby == {"a": frozenset()}
    assert result.warmup == {"a": frozenset()}
    assert not result.probing_needed


def test_a_new_member_warms_up_while_the_caught_up_owner_keeps_running() -> None:
    owner = MemberState("a", frozenset(range(4)), dict.fromkeys(range(4), 0))
    result = plan(range(4), [owner, MemberState("b")])
    assert result.active == {"a": frozenset(range(4)), "b": frozenset()}
    assert result.warmup == {"a": frozenset(), "b": frozenset({2, 3})}
    assert result.standby == result.warmup
    assert result.target == {"a": frozenset({0, 1}), "b": frozenset({2, 3})}
    assert result.probing_needed

    # Once the warm-ups have caught up, the next rebalance hands them over.
    warm = MemberState("b", frozenset(), {2: 3, 3: 0})
    after = plan(range(4), [owner, warm])
    assert after.active == {"a": frozenset({0, 1}), "b": frozenset({2, 3})}
    assert not after.probing_needed


def test_a_dead_members_tasks_go_to_the_holders_of_their_standbys() -> None:
    # "x" ran 0 and 1 and is gone; "b" kept a standby copy of 0, "c" one of 1.
    a = MemberState("a", frozenset({2, 3}), {2: 0, 3: 0})
    b = MemberState("b", frozenset({4, 5}), {0: 7, 4: 0, 5: 0})
    c = MemberState("c", frozenset({6, 7}), {1: 2, 6: 0, 7: 0})
    result = plan(range(8), [a, b, c], num_standbys=1, acceptable_recovery_lag=10)
    assert result.active == {
        "a": frozenset({2, 3}),
        "b": frozenset({0, 4, 5}),
        "c": frozenset({1, 6, 7}),
    }
    assert not result.probing_needed


def test_a_task_claimed_twice_goes_to_the_closer_previous_owner() -> None:
    stale = MemberState("a", frozenset({0}), {0: 9})
    fresh = MemberState("b", frozenset({0}), {0: 1})
    result = plan([0, 1], [stale, fresh], acceptable_recovery_lag=10)
    assert result.owner(0) == "b"
    assert result.owner(1) == "a"


def test_a_caught_up_owner_keeps_its_task_over_a_closer_copy() -> None:
    owner = MemberState("a", frozenset({0}), {0: 5})
    closer = MemberState("b", frozenset(), {0: 0, 1: 0})
    result = plan([0, 1], [owner, closer], acceptable_recovery_lag=10)
    assert result.active == {"a": frozenset({0}), "b": frozenset({1})}


def test_a_warming_task_stays_on_its_previous_owner() -> None:
    # "a" and "z" are both caught up on everything; the new member "b" is the
    # target of task 3, which meanwhile stays where it ran, not on "a".
    a = MemberState("a", frozenset({0, 1}), dict.fromkeys(range(4), 0))
    z = MemberState("z", frozenset({2, 3}), dict.fromkeys(range(4), 0))
    result = plan(range(4), [a, z, MemberState("b")])
    assert result.warmup["b"] == {3}
    assert result.owner(3) == "z"


def test_with_nobody_caught_up_the_closest_copy_runs_without_a_warmup() -> None:
    far = MemberState("a", frozenset({0}), {0: 500})
    near = MemberState("b", frozenset(), {0: 50})
    result = plan([0], [far, near], acceptable_recovery_lag=10)
    assert result.owner(0) == "b"
    assert not result.probing_needed


def test_a_standby_goes_to_the_member_with_a_copy() -> None:
    # By id and by standby count "b" would win; "z" has a copy to build on.
    active = MemberState("a", frozenset({0}), {0: 0})
    result = plan([0], [active, MemberState("b"), MemberState("z", lags={0: 5})], num_standbys=1)
    assert result.owner(0) == "a"
    assert result.standby == {"a": frozenset(), "b": frozenset(), "z": frozenset({0})}


def test_a_warmup_takes_the_only_standby_slot() -> None:
    owner = MemberState("a", frozenset(range(4)), dict.fromkeys(range(4), 0))
    lagging = MemberState("c", frozenset(), dict.fromkeys(range(4), 50))
    result = plan(
        range(4), [owner, MemberState("b"), lagging], num_standbys=1, acceptable_recovery_lag=10
    )
    # "a" keeps everything active until the new targets of 2 and 3 catch up.
    assert result.active == {"a": frozenset(range(4)), "b": frozenset(), "c": frozenset()}
    assert result.target == {"a": frozenset({0, 1}), "b": frozenset({3}), "c": frozenset({2})}
    assert result.warmup == {"a": frozenset(), "b": frozenset({3}), "c": frozenset({2})}
    # Task 3's one standby is its warm-up on "b", though "c" has a closer copy;
    # 0 and 1 (target "a") have no warm-up: their copies are spread over b and c.
    assert result.standby == {"a": frozenset(), "b": frozenset({1, 3}), "c": frozenset({0, 2})}


def test_standbys_are_capped_by_the_other_members() -> None:
    result = plan(range(3), [MemberState("a"), MemberState("b")], num_standbys=3)
    for task in range(3):
        assert len(standby_members(result, task)) == 1


def test_tasks_are_deduplicated_and_unplaced_tasks_ignored() -> None:
    member = MemberState("a", frozenset({0, 7}), {7: 0, 8: 0})
    result = plan(iter([0, 0, 1]), [member, MemberState("b", lags={9: 0})], num_standbys=1)
    assert result.target == {"a": frozenset({0}), "b": frozenset({1})}
    assert result.standby == {"a": frozenset({1}), "b": frozenset({0})}


def test_no_tasks_gives_every_member_empty_sets() -> None:
    result = plan([], [MemberState("b"), MemberState("a")], num_standbys=1)
    empty: dict[str, frozenset[int]] = {"a": frozenset(), "b": frozenset()}
    assert result.active == result.standby == result.warmup == result.target == empty


def test_owner_of_an_unplaced_task_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        plan([0], [MemberState("a")]).owner(1)


@pytest.mark.parametrize(
    ("members", "kwargs", "message"),
    [
        ([], {}, "no members"),
        ([MemberState("a"), MemberState("a")], {}, "duplicate"),
        ([MemberState("a")], {"num_standbys": -1}, "num_standbys"),
        ([MemberState("a")], {"acceptable_recovery_lag": -1}, "acceptable_recovery_lag"),
        ([MemberState("a", lags={0: -1})], {}, "negative lag"),
    ],
)
def test_invalid_input_is_rejected(
    members: list[MemberState], kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan([0], members, **kwargs)
