"""Standby replicas, lag-aware assignment, warm-ups and static membership on Kafka.

Key-count worker processes (``tests.worker.frozen_app:app``), each with its own
data directory as on separate machines, while a background producer keeps
input coming. The tests read the workers' ``assigned/revoked/lost partitions``,
``standby partitions [1, 3] (warm-up [3])`` and ``partition 2 ready: replayed
1234 changelog records`` lines: a partition moved to the holder of its
standby replays only the delta the standby had not applied, far below the
changelog's size. Each test ends with every worker stopped and the final
state (last owners' stores plus the changelog past them) and a rebuild from
the changelog equal to the exact counts of the input.
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from statestream.log import Transport
from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.frozen_app import KeyCount
from tests.worker.helpers import (
    WorkerProcess,
    non_empty,
    processed_all,
    produce,
    read_progress,
    read_tables,
    read_topic,
    wait_for,
    watermarks,
)
from tests.worker.test_frozen_worker import (
    assert_alive,
    committed,
    describe,
    held,
    split,
    stop_all,
    wrong_keys,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

APP = "tests.worker.frozen_app:app"
ALL = set(range(PARTITIONS))
COMMIT_INTERVAL = 0.5
#: The group session timeout of ``FAST_GROUP`` (in the workers' broker URL), seconds.
SESSION_TIMEOUT = 6.0
#: Longest wait for one step (a takeover includes the session timeout).
STEP_TIMEOUT = 45.0
#: A moved partition replays at most this share of its changelog when a standby held it.
DELTA_SHARE = 0.10
#: A new member without local copies may warm up first: keep the probing rebalances
#: that move warm-ups close together, so placements settle within seconds.
PROBING = ("--probing-rebalance-interval", "2")
STANDBY = ("--num-standby-replicas", "1", *PROBING)

_STANDBY = re.compile(r"standby partitions \[([\d, ]*)\] \(warm-up \[([\d, ]*)\]\)")
_READY_LINE = re.compile(
    r"^(\S+ \S+) .*partition (\d+) ready: replayed (\d+) changelog records", re.MULTILINE
)
_ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\] \(generation (\d+)\)")
_MEMBERSHIP = re.compile(r"(assigned|revoked|lost|standby) partitions \[")


def _numbers(text: str) -> set[int]:
    return {int(n) for n in text.replace(",", " ").split()}


# -- reading the workers' logs ---------------------------------------------------------


def standby_lines(worker: WorkerProcess) -> list[tuple[int, set[int], set[int]]]:
    """``(position in the log, standbys, warm-ups)`` of every "standby partitions" line."""
    found = _STANDBY.finditer(worker.log())
    return [(m.start(), _numbers(m.group(1)), _numbers(m.group(2))) for m in found]


def standbys(worker: WorkerProcess) -> tuple[set[int], set[int]]:
    """The worker's standbys and warm-ups now (none before its first line)."""
    lines = standby_lines(worker)
    return (lines[-1][1], lines[-1][2]) if lines else (set(), set())


def first_ready(worker: WorkerProcess, since: int = 0) -> dict[int, tuple[str, int]]:
    """``{partition: (log time, records replayed)}`` of its first "ready" line after ``since``."""
    found: dict[int, tuple[str, int]] = {}
    for stamp, p, n in _READY_LINE.findall(worker.log()[since:]):
        found.setdefault(int(p), (stamp, int(n)))
    return found


def replayed(worker: WorkerProcess, since: int = 0) -> dict[int, int]:
    """``{partition: changelog records replayed}`` of the first "ready" lines after ``since``."""
    return {p: n for p, (_, n) in first_ready(worker, since).items()}


def covers(shares: Sequence[set[int]]) -> bool:
    """The shares hold every partition, none twice."""
    return sum(map(len, shares)) == len(ALL) and set().union(*shares) == ALL


def check_delta(
    delta: Mapping[int, int], sizes: Mapping[int, int], parts: Iterable[int], what: str
) -> None:
    """Each of ``parts`` replayed less than ``DELTA_SHARE`` of its changelog."""
    for p in parts:
        assert sizes[p] >= 1000, f"changelog of partition {p} too short to tell: {sizes}"
        assert delta[p] < DELTA_SHARE * sizes[p], (
            f"partition {p} replayed {delta[p]} of its {sizes[p]} changelog records {what}"
        )


def assignments(worker: WorkerProcess) -> list[tuple[int, set[int], int]]:
    """``(position, partitions, generation)`` of every "assigned partitions" line."""
    found = _ASSIGNED.finditer(worker.log())
    return [(m.start(), _numbers(m.group(1)), int(m.group(2))) for m in found]


def membership_lines(worker: WorkerProcess, since: int) -> list[str]:
    """Lines after ``since`` saying the worker's active or standby partitions changed."""
    return [line for line in worker.log()[since:].splitlines() if _MEMBERSHIP.search(line)]


def placed(workers: Sequence[WorkerProcess]) -> bool:
    """Actives split; one standby per partition, never on its owner; no warm-up left."""
    actives, copies = [held(w) for w in workers], [standbys(w) for w in workers]
    if not covers(actives) or any(warm for _, warm in copies):
        return False
    if any(a & s for a, (s, _) in zip(actives, copies, strict=True)):
        return False
    return sorted(p for s, _ in copies for p in s) == sorted(ALL)


def wait_placed(workers: Sequence[WorkerProcess], context: str) -> None:
    """Wait until :func:`placed`; a failure says what each worker holds."""
    try:
        wait_until(workers, lambda: placed(workers), f"actives and standbys placed {context}")
    except AssertionError as exc:
        now = [(w.pid, sorted(held(w)), standbys(w)) for w in workers]
        raise AssertionError(f"{exc}; now (pid, active, (standby, warm-up)) {now}") from None


# -- input -----------------------------------------------------------------------------


class Feeder(threading.Thread):
    """Produces ``rate`` records a second with keys ``<prefix>-<n>``, n below ``space``."""

    def __init__(self, cluster: Cluster, rate: int, prefix: str, space: int, seed: int) -> None:
        super().__init__(name=f"feeder-{prefix}", daemon=True)
        self.cluster, self.rate, self.prefix, self.space = cluster, rate, prefix, space
        self.rng = random.Random(seed)
        self.sent = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self.start()

    def run(self) -> None:
        started = time.monotonic()
        try:
            with self.cluster.log() as log:
                producer = log.producer()
                try:
                    while not self._stop_event.is_set():
                        while self.sent < (time.monotonic() - started) * self.rate:
                            key = f"{self.prefix}-{self.rng.randrange(self.space)}"
                            producer.send(self.cluster.source, json.dumps(key).encode(), b"0")
                            self.sent += 1
                        producer.flush()
                        self._stop_event.wait(0.1)
                finally:
                    producer.close()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        """Stop feeding (everything sent is flushed) and re-raise any error it had."""
        self._stop_event.set()
        self.join(30)
        assert not self.is_alive(), "the feeder did not stop"
        if self.error is not None:
            raise AssertionError(f"the feeder failed: {self.error!r}") from self.error

    def wait_sent(self, count: int, workers: Sequence[WorkerProcess], context: str) -> None:
        def done() -> bool:
            assert_alive(workers, context)
            assert self.error is None, f"the feeder failed: {self.error!r}"
            return self.sent >= count

        wait_for(done, STEP_TIMEOUT, f"{count} records fed {context}", interval=0.2)


# -- workers and results ---------------------------------------------------------------


def seeded(cluster: Cluster) -> tuple[random.Random, str]:
    seed = random.randrange(2**32)
    return random.Random(seed), f"(seed {seed}, data in {cluster.tmp})"


def start(cluster: Cluster, name: str, *extra: str) -> WorkerProcess:
    """A key-count worker with data directory ``name``."""
    return cluster.worker(name, app=APP, commit_interval=COMMIT_INTERVAL, extra=extra)


def wait_until(
    workers: Sequence[WorkerProcess], condition: Any, what: str, timeout: float = STEP_TIMEOUT
) -> Any:
    """``wait_for(condition)``, failing at once with its log if a worker exits."""

    def check() -> Any:
        assert_alive(workers, what)
        return condition()

    return wait_for(check, timeout, what, interval=0.1)


def wait_processed(cluster: Cluster, workers: Sequence[WorkerProcess], context: str) -> None:
    """Wait until the workers processed the source up to its ends of now."""
    with cluster.log() as log:
        highs = watermarks(log, cluster.source, PARTITIONS)
    what = f"the workers to process up to {highs} {context}"
    try:
        wait_until(workers, lambda: processed_all(cluster.progress, highs), what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; progress {read_progress(cluster.progress)}") from None


def changelog_highs(log: Transport, cluster: Cluster) -> dict[int, int]:
    return watermarks(log, f"{cluster.app_id}-counts-changelog", PARTITIONS)


def finish(
    cluster: Cluster,
    workers: Mapping[str, WorkerProcess],
    context: str,
    *,
    zombies: Iterable[int] = (),
    focus: Iterable[int] = (),
) -> None:
    """Wait for the group to commit everything, stop every worker and check exact state.

    ``workers`` are the live members by name (their data directories);
    ``zombies`` pids that may exit (with 0 or 1) meanwhile; ``focus``
    partitions named in a failure (the ones the test moved).
    """
    live = list(workers.values())
    zombie_pids = set(zombies)
    steady = [w for w in live if w.pid not in zombie_pids]

    def owners() -> dict[int, str]:
        return {p: name for name, w in workers.items() if w.alive() for p in held(w)}

    with cluster.log() as log:
        highs = watermarks(log, cluster.source, PARTITIONS)

        def done() -> bool:
            return committed(log, cluster) == highs and set(owners()) == ALL

        wait_until(steady, done, f"the group to commit {highs} {context}", STEP_TIMEOUT * 1.5)
    owner_of = owners()
    codes, hung = stop_all(cluster.workers)
    with cluster.log() as log:
        inputs = read_topic(log, cluster.source, PARTITIONS)
        offsets = committed(log, cluster)
        assert offsets == highs, f"committed {offsets}, source ends at {highs} {context}"
        counts = {p: Counter(json.loads(r.key or b"null") for r in rs) for p, rs in inputs.items()}
        expected = non_empty({p: dict(c) for p, c in counts.items()})
        tables = [KeyCount.counts]
        # The rebuild first: a restore may write to the changelog.
        fresh = f"leveldb://{cluster.tmp}/rebuild/{cluster.app_id}"
        rebuilt = read_tables(log, cluster.app_id, tables, fresh, cluster.source, offsets)
        final: dict[int, dict[str, Any]] = {}
        for name in sorted(set(owner_of.values())):
            mine = {p: offsets[p] for p, owner in owner_of.items() if owner == name}
            url = cluster.store_url(name)
            read = read_tables(log, cluster.app_id, tables, url, cluster.source, mine)
            final.update({p: t["counts"] for p, t in read.items()})
    keys = sum(map(len, expected.values()))
    problems = []
    if set(owner_of) != ALL:
        problems.append(f"partitions without an owner: {sorted(ALL - set(owner_of))}")
    rebuilt_counts = non_empty({p: t["counts"] for p, t in rebuilt.items()})
    checks = [("final state (owners' stores + changelog)", final)]
    checks.append(("rebuild from the changelog", rebuilt_counts))
    for what, got in checks:
        wrong = wrong_keys(non_empty(got), expected)
        if wrong:
            moved = sorted({p for p, *_ in wrong} & set(focus))
            problems.append(describe(f"{what}, moved partitions wrong {moved}", wrong, keys))
    if hung:
        problems.append(f"workers {hung} did not stop on SIGTERM and were killed")
    for worker in cluster.workers:
        code = codes.get(worker.pid)
        killed = code == -signal.SIGKILL and worker not in live  # by the test
        if not killed and code not in ({0, 1} if worker.pid in zombie_pids else {0}):
            problems.append(f"worker {worker.pid} exited with {code}:\n{worker.log()[-3000:]}")
    assert not problems, "\n".join([*problems, context])


# -- the tests -------------------------------------------------------------------------

#: Tests a and d: distinct keys produced at once (a full replay is most of the changelog),
#: then records a second from a key space so large that most keys are new. A standby is
#: about a commit interval behind: far below a tenth of the changelog.
STATE, RATE = 16_000, 400


def test_failover_moves_partitions_to_their_standbys(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    rng, context = seeded(cluster)
    with cluster.log() as log:
        produce(log, cluster.source, [], PARTITIONS)  # creates the topic
    workers = {name: start(cluster, name, *STANDBY) for name in ("a", "b", "c")}
    live = list(workers.values())
    wait_placed(live, context)
    with cluster.log() as log:
        produce(log, cluster.source, [(f"s-{i}", i) for i in range(STATE)], PARTITIONS)
    feeder = Feeder(cluster, RATE, "k", 10**6, rng.randrange(2**32))
    try:
        feeder.wait_sent(RATE * 4, live, context)
        wait_processed(cluster, live, context)
        time.sleep(1.0)  # standbys tail the changelog continuously
        wait_placed(live, context)
        standby_of = {p: name for name, w in workers.items() for p in standbys(w)[0]}
        victim_name = max(workers, key=lambda n: len(held(workers[n])))
        victim = workers.pop(victim_name)
        moved = held(victim)
        marks = {name: len(w.log()) for name, w in workers.items()}
        victim.kill()
        with cluster.log() as log:
            changelog_at_kill = changelog_highs(log, cluster)

        def restored() -> dict[int, tuple[str, str, int]]:
            """``{moved partition: (log time, survivor, replayed)}`` of its first restore."""
            found: dict[int, tuple[str, str, int]] = {}
            for name, worker in workers.items():
                for p, (stamp, count) in first_ready(worker, marks[name]).items():
                    if p in moved and (p not in found or stamp < found[p][0]):
                        found[p] = (stamp, name, count)
            return found

        what = f"the survivors to take over {sorted(moved)} of worker {victim_name} {context}"
        wait_until(list(workers.values()), lambda: set(restored()) == moved, what)
        new_owner = {p: name for p, (_, name, _) in restored().items()}
        delta = {p: count for p, (_, _, count) in restored().items()}
        print(
            f"killed {victim_name} holding {sorted(moved)}: new owners {new_owner}, "
            f"replayed {delta} of changelogs {changelog_at_kill}"
        )
        assert new_owner == {p: standby_of.get(p) for p in moved}, (
            f"{victim_name}'s partitions went to {new_owner}, their standbys were on "
            f"{standby_of} {context}"
        )
        check_delta(delta, changelog_at_kill, moved, f"on the holder of its standby {context}")
        time.sleep(2.0)  # input keeps coming to the new owners
    finally:
        feeder.stop()
    finish(cluster, workers, context, focus=moved)


#: Test b: a slow stream, so the restarted member's own delta (at most a commit) is small.
STATIC_RATE, STATIC_STATE = 400, 12_000


def test_static_member_restart_gets_its_partitions_back(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    rng, context = seeded(cluster)
    with cluster.log() as log:
        produce(log, cluster.source, [], PARTITIONS)
    a = start(cluster, "a", "--instance-id", "member-a", *PROBING)
    wait_until([a], lambda: held(a) == ALL, f"worker a to get every partition {context}")
    b = start(cluster, "b", "--instance-id", "member-b", *PROBING)
    pair = [a, b]
    # Split, and no warm-up left: no probing rebalance follows.
    wait_until(
        pair,
        lambda: split(pair) and not any(standbys(w)[1] for w in pair),
        f"a and b to split the partitions {context}",
    )
    with cluster.log() as log:
        # The state the restarted member must not replay in full.
        produce(log, cluster.source, [(f"s-{i}", i) for i in range(STATIC_STATE)], PARTITIONS)
    feeder = Feeder(cluster, STATIC_RATE, "k", 10**6, rng.randrange(2**32))
    try:
        feeder.wait_sent(STATIC_RATE * 3, pair, context)
        wait_processed(cluster, pair, context)
        held_b, generation = held(b), assignments(b)[-1][2]
        mark = len(a.log())
        b.kill()
        killed_at = time.monotonic()
        with cluster.log() as log:
            changelog_at_kill = changelog_highs(log, cluster)
        b2 = start(cluster, "b", "--instance-id", "member-b", *PROBING)
        pair = [a, b2]
        wait_until(
            pair,
            lambda: held(b2) == held_b and set(replayed(b2)) >= held_b,
            f"the restarted b to get {sorted(held_b)} back and restore them {context}",
        )
        # Past the session timeout of the killed process: a rebalance would show by now.
        time.sleep(max(0.0, killed_at + SESSION_TIMEOUT + 3.0 - time.monotonic()))
        wait_processed(cluster, pair, context)
        print(f"restarted b: replayed {replayed(b2)} of changelogs {changelog_at_kill}")
        assert membership_lines(a, mark) == [], (
            f"a saw a rebalance when b restarted: {membership_lines(a, mark)} {context}"
        )
        again = [(parts, gen) for _, parts, gen in assignments(b2)]
        assert again == [(held_b, generation)], (
            f"the restarted b was assigned {again}, before the kill it held {sorted(held_b)} "
            f"in generation {generation} {context}"
        )
        check_delta(replayed(b2), changelog_at_kill, held_b, f"on the restarted b {context}")
    finally:
        feeder.stop()
    finish(cluster, {"a": a, "b": b2}, context, focus=held_b)


#: Test c: the first worker's state (keys), the acceptable lag, the input while the second
#: warms up, and what a taken-over partition may replay beyond the acceptable lag (the
#: input of a commit interval and of the probing rebalance itself).
WARMUP_STATE, WARMUP_LAG, WARMUP_RATE, WARMUP_SLACK = 40_000, 1000, 200, 500
WARMUP = ("--acceptable-recovery-lag", str(WARMUP_LAG), "--probing-rebalance-interval", "3")


def test_new_member_warms_up_before_taking_over(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    rng, context = seeded(cluster)
    with cluster.log() as log:
        produce(log, cluster.source, [(f"w-{i}", i) for i in range(WARMUP_STATE)], PARTITIONS)
    a = start(cluster, "a", *WARMUP)
    wait_until([a], lambda: held(a) == ALL, f"worker a to get every partition {context}")
    wait_processed(cluster, [a], context)
    with cluster.log() as log:
        changelog_full = changelog_highs(log, cluster)
    feeder = Feeder(cluster, WARMUP_RATE, "live", 2000, rng.randrange(2**32))
    try:
        b = start(cluster, "b", *WARMUP)
        pair = [a, b]

        def warming() -> tuple[int, set[int], set[int]] | None:
            return next((line for line in standby_lines(b) if line[1]), None)

        what = f"the new worker b to get standby partitions {context}"
        at, first_standbys, warmups = wait_until(pair, warming, what)
        early = [line for line in assignments(b) if line[0] < at]
        assert not early, f"b was assigned {early} before its standbys {context}"
        assert warmups, f"b's first standbys {sorted(first_standbys)} are no warm-ups {context}"
        before = read_progress(cluster.progress)
        during: dict[int, int] = {}

        def taken() -> list[tuple[int, set[int], int]]:
            progress = read_progress(cluster.progress)  # read before the log: a still owns
            found = assignments(b)
            if not found:
                during.update(progress)
            return found

        what = f"b to take over warmed-up partitions {context}"
        first_at, first, _ = wait_until(pair, taken, what)[0]
        warmed = set().union(*(w for pos, _, w in standby_lines(b) if pos < first_at))
        assert first <= warmed, f"b took over {sorted(first)}, warmed up {sorted(warmed)}"
        stalled = sorted(p for p in warmups if during.get(p, -1) <= before.get(p, -1))
        assert not stalled, (
            f"a did not process {stalled} while b warmed them up (progress {before} then "
            f"{during}) {context}"
        )
        wait_until(pair, lambda: set(replayed(b)) >= first, f"b to restore {first} {context}")
        delta, bound = replayed(b), WARMUP_LAG + WARMUP_SLACK
        print(
            f"b warmed up {sorted(warmed)}, took over {sorted(first)}: replayed {delta} "
            f"of changelogs {changelog_full}; progress {before} then {during}"
        )
        for p in first:
            assert changelog_full[p] > 3 * bound, f"changelog too short to tell {changelog_full}"
            assert delta[p] <= bound, (
                f"b replayed {delta[p]} changelog records of partition {p} when it took it "
                f"over (of {changelog_full[p]}; acceptable lag {WARMUP_LAG}) {context}"
            )
        wait_until(pair, lambda: split(pair), f"a and b to split the partitions {context}")
        time.sleep(1.0)
    finally:
        feeder.stop()
    finish(cluster, {"a": a, "b": b}, context, focus=first)


def test_frozen_owner_fails_over_to_its_standby(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    rng, context = seeded(cluster)
    with cluster.log() as log:
        produce(log, cluster.source, [], PARTITIONS)
    other = start(cluster, "a", *STANDBY)
    wait_until([other], lambda: held(other) == ALL, f"a to get every partition {context}")
    target = start(cluster, "b", *STANDBY)
    pair = [other, target]
    wait_placed(pair, context)
    with cluster.log() as log:
        produce(log, cluster.source, [(f"s-{i}", i) for i in range(STATE)], PARTITIONS)
    feeder = Feeder(cluster, RATE, "k", 10**6, rng.randrange(2**32))
    try:
        feeder.wait_sent(RATE * 4, pair, context)
        wait_processed(cluster, pair, context)
        wait_placed(pair, context)
        frozen = held(target)
        assert frozen <= standbys(other)[0], f"a has standbys {standbys(other)}, b {frozen}"
        mark = len(other.log())
        target.send(signal.SIGSTOP)
        frozen_at = time.monotonic()
        with cluster.log() as log:
            changelog_at_freeze = changelog_highs(log, cluster)
            source_at_freeze = watermarks(log, cluster.source, PARTITIONS)

            def promoted() -> bool:
                if held(other) != ALL or not set(replayed(other, mark)) >= frozen:
                    return False
                done = committed(log, cluster)
                return all(done[p] > source_at_freeze[p] for p in frozen)

            what = f"a to take over and commit {sorted(frozen)} while b is frozen {context}"
            wait_until([other], promoted, what)
        frozen_for = time.monotonic() - frozen_at
        target.send(signal.SIGCONT)
        delta = replayed(other, mark)
        print(f"b frozen holding {sorted(frozen)}: a replayed {delta} of {changelog_at_freeze}")
        check_delta(delta, changelog_at_freeze, frozen, f"on a, which held its standby {context}")

        def resumed() -> bool:
            assert_alive([other], context)
            return not target.alive() or covers([held(target), held(other)])

        wait_for(resumed, STEP_TIMEOUT, f"b to exit or rejoin after SIGCONT {context}", 0.2)
        time.sleep(2.0)
    finally:
        feeder.stop()
    live = {"a": other, **({"b": target} if target.alive() else {})}
    what = f"(b frozen {frozen_for:.1f}s) {context}"
    finish(cluster, live, what, zombies=[target.pid], focus=frozen)
