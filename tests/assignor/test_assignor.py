"""``StateAssignor`` inside the group protocol: reports, lags, assignments, probing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from statestream import App, Processor, Table
from statestream.assignor import AssignmentInfo, StateAssignor, SubscriptionInfo, task_lags
from statestream.assignor.userdata import decode_assignment, decode_subscription
from statestream.context import Context, Message
from statestream.errors import ConfigurationError, LogError
from statestream.log.base import GroupSubscription
from statestream.tables.local import LocalOffsets
from statestream.types import TopicPartition
from statestream.worker.runner import Worker

SRC = "src"
CL = "app-t-changelog"


def _marks(tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
    # Changelog partition p holds offsets 0 .. 100_000 * (p + 1) - 1.
    return {tp: (0, 100_000 * (tp.partition + 1)) for tp in tps}


def _member(mid: str, active: set[int], offsets: dict[int, int]) -> GroupSubscription:
    info = SubscriptionInfo(
        frozenset(active), {TopicPartition(CL, p): o for p, o in offsets.items()}
    )
    return GroupSubscription(mid, None, (SRC,), info.encode())


def _assignor(infos: list[AssignmentInfo], *, standbys: int = 1, lag: int = 1000) -> StateAssignor:
    return StateAssignor(
        [SRC], [CL], LocalOffsets(), _marks, infos.append, num_standbys=standbys,
        acceptable_recovery_lag=lag,
    )  # fmt: skip


def test_task_lags_count_missing_or_unusable_copies_as_the_whole_changelog() -> None:
    marks = {TopicPartition(CL, 0): (10, 110), TopicPartition(CL, 1): (0, 0)}
    offsets = {TopicPartition(CL, 0): 99}
    assert task_lags([0, 1], [CL], offsets, marks) == {0: 10, 1: 0}
    assert task_lags([0], [CL], {}, marks) == {0: 100}
    # An offset past the end (the changelog was recreated) is no copy.
    assert task_lags([0], [CL], {TopicPartition(CL, 0): 500}, marks) == {0: 100}


def test_user_data_reports_local_offsets_and_the_previous_actives() -> None:
    local = LocalOffsets()
    local.set(TopicPartition(CL, 2), 41)
    local.set(TopicPartition("other-changelog", 2), 7)  # a shared table's: not reported
    assignor = StateAssignor([SRC], [CL], local, _marks, lambda info: None)
    report = decode_subscription(assignor.user_data([SRC]))
    assert report.offsets == {TopicPartition(CL, 2): 41}
    assert report.active == frozenset()


def test_a_dead_members_partitions_go_to_their_standby_holders() -> None:
    infos: list[AssignmentInfo] = []
    assignor = _assignor(infos)
    # a had 0 and 1 active; b holds caught-up standby copies of both; c has nothing.
    members = [
        _member("b", {2, 3}, {0: 99_990, 1: 199_995, 2: 299_999, 3: 399_999}),
        _member("c", set(), {}),
    ]
    result = assignor.assign({SRC: 4}, members)
    actives = {m: {tp.partition for tp in a.partitions} for m, a in result.items()}
    # c is far behind on everything: it only warms up; b keeps all four active.
    assert actives == {"b": {0, 1, 2, 3}, "c": set()}
    info_c = decode_assignment(result["c"].user_data, actives["c"], 5)
    assert info_c.warmup == {0, 1}
    assert info_c.probe  # c asks for the probing rebalance


def test_on_assignment_hands_the_info_over_and_remembers_actives() -> None:
    infos: list[AssignmentInfo] = []
    assignor = _assignor(infos)
    result = assignor.assign({SRC: 2}, [_member("m", set(), {})])
    assignor.on_assignment(result["m"], 3)
    assert infos[-1].active == {0, 1}
    assert infos[-1].generation == 3
    assert decode_subscription(assignor.user_data([SRC])).active == {0, 1}


def test_unreadable_user_data_counts_as_no_state(caplog: pytest.LogCaptureFixture) -> None:
    assert decode_subscription(b"\x80not json") == SubscriptionInfo()
    assert decode_subscription(b'{"v": 99}') == SubscriptionInfo()
    assert decode_subscription(b'{"v": 1, "offsets": {"t": {"0": -5}}}') == SubscriptionInfo()
    assert decode_assignment(b'{"v": 1, "standby": "x"}', {1}, 0).standby == frozenset()
    assert "ignoring" in caplog.text


def test_without_watermarks_copies_are_ranked_by_offset() -> None:
    def broken(tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        raise LogError("broker unreachable")

    assignor = StateAssignor(
        [SRC], [CL], LocalOffsets(), broken, lambda info: None, acceptable_recovery_lag=0
    )
    result = assignor.assign(
        {SRC: 1}, [_member("x", set(), {0: 10}), _member("y", set(), {0: 500})]
    )
    assert {tp.partition for tp in result["y"].partitions} == {0}


class _Count(Processor):
    topics = (SRC,)
    t: Table[str, int] = Table("t", default=int)

    def process(self, message: Message, ctx: Context) -> None:
        self.t[message.key] += 1


def test_standbys_on_the_embedded_log_are_refused(tmp_path: Path) -> None:
    app = App(
        "app",
        processors=[_Count],
        data_dir=str(tmp_path),
        partitions=2,
        num_standby_replicas=1,
    )
    with pytest.raises(ConfigurationError, match="num_standby_replicas=1 needs Kafka"):
        Worker(app).run()
