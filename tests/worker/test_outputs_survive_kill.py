"""Dead letters are never lost across a kill -9 at any point (at-least-once).

A worker under the dead-letter policy is killed with SIGKILL in the middle of
a stream with poison records, at a random moment (so, over runs, at every
step of the commit protocol), and restarted. Every poison record must be in
the dead-letter topic at least once, and the table must hold exactly the
sum of the good records. Outputs and re-keyed records are checked the same
way by ``test_readme_app.py``.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import pytest

from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.dlq_app import Totals
from tests.worker.helpers import (
    committed_offsets,
    produce,
    read_tables,
    read_topic,
    wait_for,
    watermarks,
)

pytestmark = pytest.mark.timeout(180)

APP = "tests.worker.dlq_app:app"


def test_dead_letters_survive_kill_9(cluster: Cluster) -> None:
    rng = random.Random(11)
    records = []
    for i in range(4000):
        poison = rng.random() < 0.05
        value = {"n": i % 7, "i": i, **({"poison": True} if poison else {})}
        records.append((f"acct-{i % 50}", value))
    with cluster.log() as log:
        produce(log, cluster.source, records, PARTITIONS)
        highs = watermarks(log, cluster.source, PARTITIONS)
    first = cluster.worker("w", app=APP, delay=0.0005, commit_interval=0.1)
    wait_for(lambda: "ready: replayed" in first.log(), 60, "the first worker to process")
    wait_for(lambda: "sent the record at" in first.log(), 60, "a first dead letter")
    first.send(signal.SIGKILL)
    first.wait(10)

    def finished() -> bool:
        with cluster.log() as log:
            done = committed_offsets(log, cluster.app_id, cluster.source, PARTITIONS)
        return all((done[p] or 0) >= highs[p] for p in range(PARTITIONS))

    for _attempt in range(30):
        second = cluster.worker("w", app=APP, commit_interval=0.1)
        if cluster.is_kafka:
            wait_for(finished, 120, "every record committed")
            assert second.stop() == 0, second.log()
            break
        # The embedded log is the worker's while it runs: check between runs.
        wait_for(lambda w=second: "ready: replayed" in w.log(), 60, "the worker to start")
        time.sleep(2)  # the rest of 4,000 records, at full speed
        assert second.stop() == 0, second.log()
        if finished():
            break
    else:
        raise AssertionError("the input was not committed")
    poison = {v["i"] for _, v in records if v.get("poison")}
    good = Counter()
    for key, value in records:
        if not value.get("poison"):
            good[key] += value["n"]
    with cluster.log() as log:
        dead = read_topic(log, f"{cluster.app_id}-dead-letters", PARTITIONS)
        committed = committed_offsets(log, cluster.app_id, cluster.source, PARTITIONS)
        tables = read_tables(
            log, cluster.app_id, Totals.tables(), "memory://", cluster.source, committed
        )
    lettered = {json.loads(r.value or b"{}")["i"] for recs in dead.values() for r in recs}
    assert poison <= lettered, f"dead letters lost: {sorted(poison - lettered)[:10]}"
    assert lettered <= poison
    totals: Counter[str] = Counter()
    for parts in tables.values():
        totals.update(parts["totals"])
    assert {k: v for k, v in totals.items() if v} == {k: v for k, v in good.items() if v}
