"""A worker with a tumbling windowed table, ``final_topic`` and ``on_window_close``.

Records with explicit timestamps (in and out of order, some late) go to 4
partitions; a last record per partition moves its stream time past every
window. The final topic (and the topic ``on_window_close`` sends to) must
then hold every window the reference model closes, with its exact value:
once each without a crash, at least once after kill -9. The restored table
and its stream time equal the model's, and the windowed changelog topic is
``compact,delete``. On the embedded log and on the real Kafka broker.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import pytest

from statestream.log import Transport
from statestream.log.base import TopicSpec
from statestream.log.partitioner import default_partition
from statestream.tables import TableManager
from tests.tables.window_model import WindowModel
from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.helpers import (
    committed_offsets,
    processed_all,
    read_progress,
    read_topic,
    reset_progress,
    wait_for,
    watermarks,
)
from tests.worker.windowed_app import GRACE, SIZE, TABLE, Clicks

pytestmark = pytest.mark.timeout(240)

APP = "tests.worker.windowed_app:app"
DAY = 86_400_000
#: (partition, key, value, timestamp)
Input = tuple[int, str, int, int]


class Names:
    def __init__(self, cluster: Cluster) -> None:
        suffix = cluster.suffix
        self.app_id = f"windowed{suffix}"
        self.source = f"clicks{suffix}"
        self.finals = f"click-finals{suffix}"
        self.closes = f"click-closes{suffix}"
        self.changelog = f"{self.app_id}-{TABLE}-changelog"


def keys_of(partition: int, count: int, label: str) -> list[str]:
    """``count`` keys that Kafka's partitioner sends to ``partition``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"{label}-{i}"
        if default_partition(json.dumps(key).encode(), PARTITIONS) == partition:
            found.append(key)
        i += 1
    return found


def make_inputs(seed: int, per_partition: int) -> list[Input]:
    """Clicks per partition with jittered timestamps, then one record far ahead."""
    rng = random.Random(seed)
    base = int(time.time() * 1000) // 1000 * 1000
    inputs: list[Input] = []
    for p in range(PARTITIONS):
        keys = keys_of(p, 3, "user")
        clock = base
        for _ in range(per_partition):
            clock += rng.randint(0, 12)
            # Mostly a little out of order; sometimes far behind (late).
            t = clock + rng.choice([0, 0, 5, -20, -60, -130, -400])
            inputs.append((p, rng.choice(keys), rng.randint(1, 9), t))
        inputs.append((p, keys_of(p, 1, "flush")[0], 1, clock + 10 * SIZE + GRACE))
    return inputs


def produce_inputs(log: Transport, topic: str, inputs: list[Input]) -> None:
    admin = log.admin()
    try:
        admin.ensure_topic(TopicSpec(topic, PARTITIONS))
    finally:
        admin.close()
    producer = log.producer()
    try:
        for p, key, value, t in inputs:
            producer.send(
                topic,
                json.dumps(key).encode(),
                json.dumps(value).encode(),
                partition=p,
                timestamp=t,
            )
        producer.flush()
    finally:
        producer.close()


def models(inputs: list[Input]) -> dict[int, WindowModel]:
    """The reference model of each partition, fed its records in offset order."""
    found = {p: WindowModel("tumbling", size=SIZE, grace=GRACE) for p in range(PARTITIONS)}
    for p, key, value, t in inputs:
        found[p].write(key, t, lambda v, x=value: v + x)
    return found


def finals_by_window(records: Mapping[int, list[Any]], closes: bool) -> dict[Any, list[Any]]:
    got: dict[Any, list[Any]] = defaultdict(list)
    for recs in records.values():
        for record in recs:
            key = json.loads(record.key)
            value = json.loads(record.value)
            if closes:
                assert value["table"] == TABLE
            got[key, value["start"], value["end"]].append(value["value"])
    return got


def verify(cluster: Cluster, names: Names, inputs: list[Input], *, crashed: bool) -> None:
    expected_models = models(inputs)
    expected = {
        (key, start, end): value
        for model in expected_models.values()
        for (key, start, end), value in model.closed.items()
    }
    assert len(expected) > 20, "the input closes windows"
    assert sum(m.late for m in expected_models.values()) > 0, "the input has late records"
    with cluster.log() as log:
        highs = watermarks(log, names.source, PARTITIONS)
        committed = committed_offsets(log, names.app_id, names.source, PARTITIONS)
        assert committed == highs, "the last records were not committed"
        for topic, closes in ((names.finals, False), (names.closes, True)):
            got = finals_by_window(read_topic(log, topic, PARTITIONS), closes)
            missing = sorted(set(expected) - set(got))
            assert not missing, f"{topic}: windows never reported: {missing[:5]}"
            extra = sorted(set(got) - set(expected))
            assert not extra, f"{topic}: reported windows that did not close: {extra[:5]}"
            wrong = [(w, got[w], v) for w, v in expected.items() if set(got[w]) != {v}]
            assert not wrong, f"{topic}: wrong final values: {wrong[:5]}"
            if not crashed:
                repeated = [w for w, values in got.items() if len(values) != 1]
                assert not repeated, f"{topic}: reported more than once: {repeated[:5]}"
        admin = log.admin()
        try:
            described = admin.describe_topic(names.changelog)
        finally:
            admin.close()
        assert described is not None
        assert described.cleanup_policy == "compact,delete"
        assert int(described.config["retention.ms"]) == SIZE + GRACE + DAY + DAY
        # The table, rebuilt from its changelog, is the model's (stream time too).
        table = Clicks.per_window
        manager = TableManager(names.app_id, [table], log, "memory://")
        try:
            for p in range(PARTITIONS):
                manager.open_partition(p)
                manager.restore_partition(p, {names.source: committed[p]}, claim=False)
                manager.bind(p)
                model = expected_models[p]
                assert table.stream_time() == model.stream_time
                items = sorted((k, tuple(w)) for k, w in table.items())
                assert items == sorted(model.items()), f"partition {p}"
                manager.close_partition(p)
        finally:
            manager.close()


def wait_done(cluster: Cluster, names: Names, highs: Mapping[int, int]) -> None:
    wait_for(
        lambda: processed_all(cluster.progress, highs),
        90,
        f"processing up to {highs} (progress {read_progress(cluster.progress)})",
    )
    if cluster.is_kafka:
        with cluster.log() as log:
            wait_for(
                lambda: (
                    committed_offsets(log, names.app_id, names.source, PARTITIONS) == dict(highs)
                ),
                60,
                "the group to commit everything",
                interval=0.2,
            )


def test_final_results_once_each_with_exact_values(cluster: Cluster) -> None:
    names = Names(cluster)
    inputs = make_inputs(seed=1, per_partition=250)
    with cluster.log() as log:
        produce_inputs(log, names.source, inputs)
        highs = watermarks(log, names.source, PARTITIONS)
    worker = cluster.worker(app=APP)
    wait_done(cluster, names, highs)
    assert worker.stop() == 0, worker.log()[-3000:]
    verify(cluster, names, inputs, crashed=False)


def test_final_results_survive_kill_9(cluster: Cluster) -> None:
    names = Names(cluster)
    inputs = make_inputs(seed=2, per_partition=600)
    with cluster.log() as log:
        produce_inputs(log, names.source, inputs)
        highs = watermarks(log, names.source, PARTITIONS)
    first = cluster.worker(app=APP, delay=0.003, commit_interval=0.1)
    wait_for(
        lambda: sum(read_progress(cluster.progress).values()) >= 400,
        90,
        f"progress (log: {first.log()[-2000:]})",
    )
    time.sleep(0.4)  # a few commits, and windows closing in between
    first.kill()
    with cluster.log() as log:
        at_kill = committed_offsets(log, names.app_id, names.source, PARTITIONS)
    done = {p: o or 0 for p, o in at_kill.items()}
    assert sum(done.values()) > 0, "nothing was committed before the kill"
    assert any(done[p] < highs[p] for p in highs), "the kill came after the end of the stream"
    reset_progress(cluster.progress, done)
    second = cluster.worker(app=APP, commit_interval=0.1)
    wait_done(cluster, names, highs)
    assert second.stop() == 0, second.log()[-3000:]
    verify(cluster, names, inputs, crashed=True)
