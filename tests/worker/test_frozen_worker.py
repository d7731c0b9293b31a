"""A worker frozen past its session timeout and then resumed corrupts no state.

Two worker processes count keys on the session's Kafka broker. One of them is
frozen with SIGSTOP right after it processed records it has not committed
yet, for longer than the group session timeout: the group gives its
partitions to the other worker, which restores them and redoes the
uncommitted work. Input keeps coming meanwhile. Then the frozen worker gets
SIGCONT: a zombie whose old records and commits must not reach the state
(its changelog records are fenced, its lost partitions dropped without a
commit, a failed commit stops it). It may keep running in the group or
exit (code 1 is fine); it must not hang.

Each freeze lands in a "phase" of input with keys of its own, and the other
worker has committed the whole phase on the frozen worker's partitions
before the resume: a stale changelog record of the zombie is then the last
record of its key, and shows as a wrong count in a rebuild from the
changelog (and in any store restored after it).

At the end, with every worker stopped, the final state (each partition's
last owner's store plus the changelog past it) and a rebuild from the
changelog alone must both equal the exact counts of the input.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from statestream.log import Transport
from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.frozen_app import RUNS_LINE, KeyCount
from tests.worker.helpers import (
    REPO_ROOT,
    WorkerProcess,
    committed_offsets,
    non_empty,
    produce,
    read_progress,
    read_tables,
    read_topic,
    wait_for,
    watermarks,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

APP = "tests.worker.frozen_app:app"
ALL = set(range(PARTITIONS))
#: Freezes per test: each one is a chance for a zombie to write stale records.
FREEZES = 3
#: Records of the phase a worker is frozen in, and of the one produced while it is frozen.
WORK_RECORDS = 8000
MEANWHILE_RECORDS = 2000
FINAL_RECORDS = 2000
KEYS_PER_PHASE = 200
#: Seconds between commits: a freeze at a random moment finds up to this much uncommitted work.
COMMIT_INTERVAL = 1.0
#: Seconds per record, so a phase takes a few seconds to process.
DELAY = 0.0003
#: Longest wait for one step (a takeover includes the 6 s session timeout).
STEP_TIMEOUT = 60.0

# The partitions a worker holds, from its log; "lost" partitions are gone too.
_HELD = re.compile(r"(assigned|revoked|lost) partitions \[([\d, ]*)\]")


def held(worker: WorkerProcess) -> set[int]:
    """Partitions ``worker`` holds now, from its "assigned/revoked/lost partitions" lines."""
    partitions: set[int] = set()
    for action, numbers in _HELD.findall(worker.log()):
        changed = {int(n) for n in numbers.replace(",", " ").split()}
        if action == "assigned":
            partitions |= changed
        else:
            partitions -= changed
    return partitions


def split(workers: Sequence[WorkerProcess]) -> bool:
    """Every worker holds partitions, none twice, all of them together."""
    shares = [held(w) for w in workers]
    return (
        all(shares)
        and sum(map(len, shares)) == len(ALL)
        and set().union(*shares) == ALL
        and all(w.alive() for w in workers)
    )


def assert_alive(workers: Sequence[WorkerProcess], context: str) -> None:
    """Fail at once, with its log, if a worker that must keep running exited."""
    for worker in workers:
        assert worker.alive(), (
            f"worker {worker.pid} exited with {worker.proc.returncode} {context}; its log:\n"
            f"{worker.log()[-4000:]}"
        )


def phase_input(phase: int, count: int, rng: random.Random) -> list[tuple[str, int]]:
    """``count`` records with keys of this phase only (``k<phase>-<n>``); values unused."""
    keys = [f"k{phase}-{n}" for n in range(KEYS_PER_PHASE)]
    return [(rng.choice(keys), i) for i in range(count)]


def committed(log: Transport, cluster: Cluster) -> dict[int, int]:
    offsets = committed_offsets(log, cluster.app_id, cluster.source, PARTITIONS)
    return {p: offset or 0 for p, offset in offsets.items()}


def freeze_with_uncommitted_work(
    cluster: Cluster, target: WorkerProcess, rng: random.Random
) -> dict[int, tuple[int, int]]:
    """SIGSTOP ``target`` at a random moment while it processes, with work not committed.

    Returns ``{partition: (committed offset, last processed offset)}`` of the
    partitions it holds where it processed records it did not commit. A
    freeze that finds none is undone at once (well within the session
    timeout) and tried again.
    """
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        partitions = held(target)
        before = read_progress(cluster.progress)
        time.sleep(rng.uniform(0.05, COMMIT_INTERVAL))
        target.send(signal.SIGSTOP)
        # Frozen: neither its progress nor its committed offsets move now.
        after = read_progress(cluster.progress)
        with cluster.log() as log:
            done = committed(log, cluster)
        uncommitted = {p: (done[p], after[p]) for p in partitions if after.get(p, -1) + 1 > done[p]}
        processing = any(after.get(p, -1) > before.get(p, -1) for p in partitions)
        if uncommitted and processing:
            return uncommitted
        target.send(signal.SIGCONT)
        assert time.monotonic() < deadline, (
            f"worker {target.pid} never had uncommitted work when frozen (holds "
            f"{sorted(partitions)}, processed {after}, committed {done}); its log:\n"
            f"{target.log()[-3000:]}"
        )
        time.sleep(0.2)


def wrong_keys(
    got: Mapping[int, Mapping[str, Any]], expected: Mapping[int, Mapping[str, int]]
) -> list[tuple[int, str, Any, int | None]]:
    """``(partition, key, got, expected)`` for every key whose count is not exact."""
    wrong = []
    for p in sorted(set(got) | set(expected)):
        mine, theirs = got.get(p, {}), expected.get(p, {})
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                wrong.append((p, key, mine.get(key), theirs.get(key)))
    return wrong


def describe(what: str, wrong: Sequence[tuple[int, str, Any, int | None]], total: int) -> str:
    by_phase = Counter(key.split("-")[0] for _, key, _, _ in wrong)
    return (
        f"{what}: {len(wrong)} of {total} keys wrong (by phase {dict(by_phase)}); "
        f"e.g. (partition, key, got, expected) {wrong[:6]}"
    )


def stop_all(workers: Iterable[WorkerProcess]) -> tuple[dict[int, int], list[int]]:
    """SIGTERM every live worker at once; kill those that do not exit.

    Returns the exit code per pid and the pids that had to be killed.
    """
    workers = list(workers)
    for worker in workers:
        if worker.alive():
            worker.send(signal.SIGCONT)  # a frozen process would not see SIGTERM
            worker.send(signal.SIGTERM)
    codes: dict[int, int] = {}
    hung: list[int] = []
    for worker in workers:
        try:
            codes[worker.pid] = worker.proc.wait(30)
        except subprocess.TimeoutExpired:
            hung.append(worker.pid)
            worker.ensure_stopped()
            codes[worker.pid] = worker.proc.returncode
    return codes, hung


def wait_split(pair: Sequence[WorkerProcess], context: str) -> None:
    def done() -> bool:
        assert_alive(pair, context)
        return split(pair)

    wait_for(done, STEP_TIMEOUT, f"two workers to split the partitions {context}")


def freeze_and_resume(
    cluster: Cluster,
    target: WorkerProcess,
    other: WorkerProcess,
    phase: int,
    rng: random.Random,
    context: str,
) -> str:
    """One freeze of ``target`` while it processes phase ``phase``; return what happened.

    Produces phase ``phase`` (``target`` is frozen in the middle of it) and
    phase ``phase + 1`` while it is frozen; resumes it once ``other`` has
    taken its partitions over and committed all of phase ``phase`` there.
    """
    with cluster.log() as log:
        produce(log, cluster.source, phase_input(phase, WORK_RECORDS, rng), PARTITIONS)
        phase_end = watermarks(log, cluster.source, PARTITIONS)
    frozen = freeze_with_uncommitted_work(cluster, target, rng)
    frozen_at = time.monotonic()
    # Input keeps coming while it is frozen (keys of the next phase).
    with cluster.log() as log:
        produce(log, cluster.source, phase_input(phase + 1, MEANWHILE_RECORDS, rng), PARTITIONS)

    def taken_over() -> bool:
        assert_alive([other], context)
        if held(other) != ALL:
            return False
        with cluster.log() as log:
            done = committed(log, cluster)
        return all(done[p] >= phase_end[p] for p in frozen)

    wait_for(
        taken_over,
        STEP_TIMEOUT,
        f"worker {other.pid} to take over and commit {phase_end} {context}",
        interval=0.2,
    )
    target.send(signal.SIGCONT)
    frozen_for = time.monotonic() - frozen_at

    def resumed() -> bool:
        assert_alive([other], context)
        return not target.alive() or split([target, other])

    wait_for(
        resumed,
        STEP_TIMEOUT,
        f"resumed worker {target.pid} to exit or rejoin the group {context}",
        interval=0.2,
    )
    outcome = "rejoined the group" if target.alive() else f"exited with {target.wait(1)}"
    return (
        f"worker {target.pid} frozen {frozen_for:.1f}s in phase {phase} with (committed, "
        f"processed) {frozen}; after SIGCONT it {outcome}"
    )


def test_frozen_worker_does_not_corrupt_state(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    context = f"(seed {seed}, data in {cluster.tmp})"
    with cluster.log() as log:
        produce(log, cluster.source, [], PARTITIONS)  # creates the topic
    store_names: dict[int, str] = {}  # pid -> the worker's name (its data directory)

    def start() -> WorkerProcess:
        name = f"w{len(cluster.workers)}"
        worker = cluster.worker(name, app=APP, commit_interval=COMMIT_INTERVAL, delay=DELAY)
        store_names[worker.pid] = name
        # The worker runs the statestream tree this test belongs to.
        runs = wait_for(
            lambda: re.search(re.escape(RUNS_LINE) + r"(\S+)", worker.log()),
            STEP_TIMEOUT,
            "the worker to start",
        )
        assert runs.group(1) == str(REPO_ROOT / "statestream" / "__init__.py"), runs.group(0)
        return worker

    pair = [start(), start()]
    frozen_pids: set[int] = set()
    events: list[str] = []
    for freeze in range(FREEZES):
        wait_split(pair, context)
        target, other = pair[freeze % 2], pair[1 - freeze % 2]
        frozen_pids.add(target.pid)
        events.append(freeze_and_resume(cluster, target, other, 2 * freeze, rng, context))
        if not target.alive():
            pair = [other, start()]

    wait_split(pair, context)
    with cluster.log() as log:
        produce(log, cluster.source, phase_input(2 * FREEZES, FINAL_RECORDS, rng), PARTITIONS)
        highs = watermarks(log, cluster.source, PARTITIONS)

        def finished() -> bool:
            assert_alive(pair, context)
            return committed(log, cluster) == highs

        wait_for(
            finished,
            STEP_TIMEOUT * 2,
            f"the group to commit {highs} {context}",
            interval=0.2,
        )
    owners = {p: w for w in pair for p in held(w)}
    codes, hung = stop_all(cluster.workers)

    with cluster.log() as log:
        inputs = read_topic(log, cluster.source, PARTITIONS)
        offsets = committed(log, cluster)
        assert offsets == highs, f"committed {offsets}, source ends at {highs} {context}"
        expected = non_empty(
            {p: dict(Counter(json.loads(r.key or b"null") for r in rs)) for p, rs in inputs.items()}
        )
        total_records = sum(map(len, inputs.values()))
        assert total_records == FREEZES * (WORK_RECORDS + MEANWHILE_RECORDS) + FINAL_RECORDS
        tables = [KeyCount.counts]
        # The rebuild first: a restore may write to the changelog (a claim of
        # the partition, and values of keys it skipped), so the rebuild sees
        # only what the workers wrote.
        fresh = f"leveldb://{cluster.tmp}/rebuild/{cluster.app_id}"
        rebuilt = read_tables(log, cluster.app_id, tables, fresh, cluster.source, offsets)
        final: dict[int, dict[str, Any]] = {}
        for worker in pair:
            mine = {p: offsets[p] for p, owner in owners.items() if owner is worker}
            url = cluster.store_url(store_names[worker.pid])
            read = read_tables(log, cluster.app_id, tables, url, cluster.source, mine)
            final.update({p: t["counts"] for p, t in read.items()})
    keys = sum(map(len, expected.values()))
    problems = []
    if set(owners) != ALL:
        problems.append(f"partitions without an owner at the end: {sorted(ALL - set(owners))}")
    wrong_final = wrong_keys(non_empty(final), expected)
    if wrong_final:
        problems.append(describe("final state (owners' stores + changelog)", wrong_final, keys))
    wrong_rebuilt = wrong_keys(non_empty({p: t["counts"] for p, t in rebuilt.items()}), expected)
    if wrong_rebuilt:
        problems.append(describe("rebuild from the changelog", wrong_rebuilt, keys))
    if hung:
        problems.append(f"workers {hung} did not stop on SIGTERM and were killed")
    for worker in cluster.workers:
        allowed = {0, 1} if worker.pid in frozen_pids else {0}
        if codes.get(worker.pid) not in allowed:
            problems.append(
                f"worker {worker.pid} exited with {codes.get(worker.pid)}; its log:\n"
                f"{worker.log()[-3000:]}"
            )
    print("\n".join([*events, context]))
    assert not problems, "\n".join([*problems, *events, context])
