"""The worker's Prometheus metrics match what it did: a real worker on an embedded log."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from statestream import App, Processor, Table
from statestream.context import Context, Message
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.worker.metrics import CONTENT_TYPE, render
from statestream.worker.runner import Worker
from tests.worker_thread import (
    changelog_records,
    high_watermarks,
    produce,
    running,
    settings,
    wait_for,
    wait_processed,
)

SOURCE = "events"
OUTPUT = "counted"


class Count(Processor):
    """Counts records per key and sends each new count; a value "bad" raises (skipped)."""

    topics = (SOURCE,)
    outputs = (OUTPUT,)
    error_policy = "skip"
    counts: Table[str, int] = Table("counts", default=int)
    #: Set by a test to hold partition 0's processing until it is set.
    gate: ClassVar[threading.Event | None] = None

    def process(self, message: Message, ctx: Context) -> None:
        gate = Count.gate
        if gate is not None and message.partition == 0:
            gate.wait(30)
        if message.value == "bad":
            raise ValueError("a bad record")
        self.counts[message.key] += 1
        ctx.send(OUTPUT, message.key, self.counts[message.key])


@pytest.fixture(autouse=True)
def _no_gate() -> Iterator[None]:
    yield
    Count.gate = None


def samples(worker: Worker) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The worker's metrics as parsed from the exposition text: name -> labels -> value."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(worker.metrics.render().decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def by_partition(values: dict[tuple[tuple[str, str], ...], float]) -> dict[int, float]:
    return {int(dict(labels)["partition"]): value for labels, value in values.items()}


def make_input(per_partition: int, bad_every: int) -> list[tuple[int, str, str]]:
    items = []
    for partition in (0, 1):
        for i in range(per_partition):
            value = "bad" if i % bad_every == bad_every - 1 else "ok"
            items.append((partition, f"k{partition}-{i % 37}", value))
    return items


def test_counters_match_what_was_processed(tmp_path: Path) -> None:
    items = make_input(per_partition=600, bad_every=50)
    produce(tmp_path, SOURCE, items)
    app = App("metrics", processors=[Count], **settings(tmp_path))
    bad = Counter(p for p, _, v in items if v == "bad")
    good = Counter(p for p, _, v in items if v != "bad")
    with running(app, lag_interval=0.05) as worker:
        wait_processed(worker, len(items))
        wait_for(
            lambda: (
                set(by_partition(samples(worker)["statestream_consumer_lag_records"]).values())
                == {0}
            ),
            30,
            "consumer lag 0",
        )
        running_metrics = samples(worker)
    # Read after the worker stopped: its last commits are in, and the
    # counters outlive the partitions' threads.
    after = samples(worker)

    assert by_partition(after["statestream_records_processed_total"]) == {0: 600, 1: 600}
    assert by_partition(after["statestream_records_failed_total"]) == {0: bad[0], 1: bad[1]}
    assert bad[0] == 12
    assert by_partition(after["statestream_output_records_total"]) == {0: good[0], 1: good[1]}
    # Every changelog record the commits wrote, and nothing else, is counted.
    written = changelog_records(tmp_path, "metrics-counts-changelog")
    counted = after["statestream_changelog_records_total"]
    assert {int(dict(k)["partition"]): v for k, v in counted.items()} == written
    assert {dict(k)["table"] for k in counted} == {"counts"}
    # Output records really reached the output topic (partitioned by key).
    assert sum(high_watermarks(tmp_path, OUTPUT).values()) == good[0] + good[1]

    assert after["statestream_record_processing_seconds_count"][()] == 1200
    assert after["statestream_record_processing_seconds_sum"][()] > 0
    buckets = after["statestream_record_processing_seconds_bucket"]
    assert buckets[(("le", "+Inf"),)] == 1200
    cumulative = [v for _, v in sorted(buckets.items(), key=lambda kv: float(dict(kv[0])["le"]))]
    assert cumulative == sorted(cumulative)

    assert after["statestream_commit_seconds_count"][()] >= 1
    assert after["statestream_rebalances_total"][()] >= 1
    assert running_metrics["statestream_partitions"] == {
        (("state", "processing"),): 2,
        (("state", "restoring"),): 0,
    }
    assert by_partition(running_metrics["statestream_consumer_lag_records"]) == {0: 0, 1: 0}


def test_consumer_lag_is_high_watermark_minus_position(tmp_path: Path) -> None:
    produce(tmp_path, SOURCE, [(0, f"k{i}", "ok") for i in range(40)] + [(1, "x", "ok")] * 5)
    app = App("lagging", processors=[Count], **settings(tmp_path))
    Count.gate = gate = threading.Event()
    with running(app, lag_interval=0.05) as worker:

        def lags() -> dict[int, float]:
            return by_partition(samples(worker).get("statestream_consumer_lag_records", {}))

        # Partition 0 is held at its first record; partition 1 runs through.
        wait_for(lambda: lags() == {0: 40, 1: 0}, 30, "lag 40 on partition 0, 0 on 1")
        gate.set()
        wait_for(lambda: lags() == {0: 0, 1: 0}, 30, "lag 0 once partition 0 is processed")


def test_restore_metrics_reach_the_changelog_end(tmp_path: Path) -> None:
    # A changelog written beforehand: a memory store restores all of it at start.
    produce(
        tmp_path,
        "restored-counts-changelog",
        [(p, f"k{i}", i) for p in (0, 1) for i in range(25_000 if p == 0 else 3)],
        cleanup_policy="compact",
    )
    app = App("restored", processors=[Count], **settings(tmp_path))
    with running(app) as worker:
        wait_for(
            lambda: (
                samples(worker).get("statestream_partitions", {}).get((("state", "processing"),))
                == 2
            ),
            60,
            "both partitions restored",
        )
        found = samples(worker)
    done = by_partition(found["statestream_restore_offsets_done"])
    remaining = by_partition(found["statestream_restore_offsets_remaining"])
    # Every record, and the claim marker written after it.
    assert done == {0: 25_001, 1: 4}
    assert remaining == {0: 0, 1: 0}


def test_each_worker_has_its_own_registry(tmp_path: Path) -> None:
    one = Worker(App("one", processors=[Count], **settings(tmp_path / "a")))
    two = Worker(App("two", processors=[Count], **settings(tmp_path / "b")))
    one.metrics.partition(0).batch(5, 0.001)
    assert one.metrics.registry is not two.metrics.registry
    text = render(one.metrics.registry).decode()
    assert 'statestream_records_processed_total{partition="0"} 5.0' in text
    assert "statestream_records_processed_total{" not in two.metrics.render().decode()
    # Nothing in the process-wide default registry.
    assert "statestream_" not in prometheus_client.generate_latest().decode()
    assert CONTENT_TYPE.startswith("text/plain")


@pytest.mark.kafka
@pytest.mark.slow
def test_two_workers_on_kafka_standby_lag_and_separate_counts(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """Two workers of one app in this process, each keeping the other's partitions as
    standbys: each registry counts its own partitions, and the standby lag reaches 0."""
    suffix = uuid.uuid4().hex[:8]
    topic = f"metrics-words-{suffix}"

    class Words(Processor):
        topics = (topic,)
        counts: Table[str, int] = Table("counts", default=int)

        def process(self, message: Message, ctx: Context) -> None:
            self.counts[message.value] += 1

    broker = f"kafka://{kafka_bootstrap}?session_timeout_ms=6000&heartbeat_interval_ms=500"
    transport = open_transport(f"kafka://{kafka_bootstrap}")
    try:
        admin = transport.admin()
        admin.ensure_topic(TopicSpec(topic, 4))
        admin.close()
        apps = [
            App(
                f"metrics-{suffix}",
                [Words],
                broker_url=broker,
                store_url=f"leveldb://{tmp_path}/{name}",
                data_dir=str(tmp_path / name),
                commit_interval=0.2,
                num_standby_replicas=1,
            )
            for name in ("a", "b")
        ]
        with contextlib.ExitStack() as stack:
            workers = [stack.enter_context(running(app, transport=transport)) for app in apps]

            def split() -> bool:
                held = [set(w.partition_states()) for w in workers]
                return all(held) and not held[0] & held[1] and held[0] | held[1] == {0, 1, 2, 3}

            wait_for(split, 90, "the partitions split between the two workers")
            producer = transport.producer()
            for i in range(400):
                producer.send(topic, None, json.dumps(f"w{i % 40}").encode(), partition=i % 4)
            producer.flush()
            producer.close()

            def processed(worker: Worker) -> dict[int, float]:
                return by_partition(samples(worker)["statestream_records_processed_total"])

            wait_for(
                lambda: sum(sum(processed(w).values()) for w in workers) == 400,
                60,
                "400 records processed by the two workers",
            )

            def standby_lags(worker: Worker) -> dict[int, float]:
                return by_partition(samples(worker).get("statestream_standby_lag_offsets", {}))

            # Each worker copies the partitions the other one processes, and catches up.
            wait_for(
                lambda: all(
                    set(standby_lags(w)) == {0, 1, 2, 3} - set(w.partition_states())
                    and set(standby_lags(w).values()) == {0}
                    for w in workers
                ),
                60,
                "standby copies caught up (lag 0)",
            )
            # (A worker that held every partition before the other joined keeps
            # their counters, at 0.)
            counts = [{p: n for p, n in processed(w).items() if n} for w in workers]
            assert not set(counts[0]) & set(counts[1])  # no partition counted twice
            assert {p: n for c in counts for p, n in c.items()} == {0: 100, 1: 100, 2: 100, 3: 100}
    finally:
        transport.close()
