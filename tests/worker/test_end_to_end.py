"""End to end: word count in worker processes, on the embedded log and on Kafka.

Table state must be exact (each committed source record counted once), also
after kill -9; outputs are at-least-once, and every output value is the
exact running count of its word at its source record.
"""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from statestream.types import Record
from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.helpers import (
    committed_offsets,
    expected_counts,
    first_offsets,
    make_sentences,
    non_empty,
    processed_all,
    produce,
    read_progress,
    read_tables,
    read_topic,
    reset_progress,
    wait_for,
    watermarks,
)
from tests.worker.wordcount_app import SOURCE_HEADER, WordCount

pytestmark = pytest.mark.timeout(180)


def wait_done(cluster: Cluster, highs: Mapping[int, int], timeout: float = 60.0) -> None:
    """Wait until every record up to ``highs`` was processed (and, on Kafka, committed)."""
    wait_for(
        lambda: processed_all(cluster.progress, highs),
        timeout,
        f"the worker to process everything up to {highs} (progress "
        f"{read_progress(cluster.progress)})",
    )
    if cluster.is_kafka:
        with cluster.log() as log:
            wait_for(
                lambda: (
                    committed_offsets(log, cluster.app_id, cluster.source, PARTITIONS)
                    == dict(highs)
                ),
                timeout,
                f"the group to commit {highs}",
                interval=0.2,
            )


def check_outputs(
    outputs: Mapping[int, Sequence[Record]],
    inputs: Mapping[int, Sequence[Record]],
    *,
    crashed: bool,
) -> None:
    """Every word occurrence has an output with its exact running count.

    Without a crash each (source partition, word) emits 1, 2, ... n once, in
    order; after a crash records may be emitted again (at-least-once), but
    always with the same values.
    """
    expected: dict[tuple[int, int, str], set[int]] = defaultdict(set)
    running: dict[tuple[int, str], int] = defaultdict(int)
    for p, records in inputs.items():
        for record in records:
            for word in json.loads(record.value or b'""').lower().split():
                running[p, word] += 1
                expected[p, record.offset, word].add(running[p, word])
    got: dict[tuple[int, int, str], set[int]] = defaultdict(set)
    in_order: dict[tuple[int, str], list[int]] = defaultdict(list)
    total = 0
    for records in outputs.values():
        for record in records:
            source = dict(record.headers)[SOURCE_HEADER].decode()
            p, offset = (int(x) for x in source.split(":"))
            word = json.loads(record.key or b"null")
            value = json.loads(record.value or b"null")
            got[p, offset, word].add(value)
            in_order[p, word].append(value)
            total += 1
    missing = sorted(set(expected) - set(got))[:5]
    assert not missing, f"no output for word occurrences {missing}"
    unexpected = sorted(set(got) - set(expected))[:5]
    assert not unexpected, f"outputs for words that do not occur there: {unexpected}"
    wrong = [(k, got[k], v) for k, v in expected.items() if got[k] != v][:5]
    assert not wrong, f"output values differ from the running counts: {wrong}"
    if not crashed:
        assert total == sum(len(v) for v in expected.values())
        for key, values in in_order.items():
            assert values == list(range(1, running[key] + 1)), key


def verify(cluster: Cluster, *, crashed: bool, store_name: str = "w") -> dict[int, int | None]:
    """With every worker stopped: committed offsets, tables and outputs are exact."""
    tables = [WordCount.counts]
    with cluster.log() as log:
        inputs = read_topic(log, cluster.source, PARTITIONS)
        highs = watermarks(log, cluster.source, PARTITIONS)
        committed = committed_offsets(log, cluster.app_id, cluster.source, PARTITIONS)
        assert committed == highs, "the last records were not committed"
        expected = non_empty(expected_counts(inputs))
        assert sum(map(len, inputs.values())) > 0
        # Rebuilt from the changelogs alone...
        rebuilt = read_tables(log, cluster.app_id, tables, "memory://", cluster.source, committed)
        assert non_empty({p: t["counts"] for p, t in rebuilt.items()}) == expected
        # ...and from the worker's own stores (plus any changelog past them).
        local = read_tables(
            log, cluster.app_id, tables, cluster.store_url(store_name), cluster.source, committed
        )
        assert non_empty({p: t["counts"] for p, t in local.items()}) == expected
        check_outputs(read_topic(log, cluster.output, PARTITIONS), inputs, crashed=crashed)
    return committed


def test_worker_counts_words_exactly(cluster: Cluster) -> None:
    if cluster.is_kafka:
        worker = cluster.worker()
        with cluster.log() as log:
            produce(log, cluster.source, make_sentences(600, seed=1), PARTITIONS)
            wait_for(cluster.workers[0].partitions, 60, "partitions to be assigned")
            produce(log, cluster.source, make_sentences(600, seed=2, start=600), PARTITIONS)
            highs = watermarks(log, cluster.source, PARTITIONS)
    else:
        with cluster.log() as log:
            produce(log, cluster.source, make_sentences(1200, seed=1), PARTITIONS)
            highs = watermarks(log, cluster.source, PARTITIONS)
        worker = cluster.worker()
    wait_done(cluster, highs)
    assert worker.stop() == 0, worker.log()
    verify(cluster, crashed=False)


def test_worker_killed_mid_stream_resumes_exactly(cluster: Cluster) -> None:
    delay = 0.002  # per record and partition thread: ~2000 records/s with 4 partitions
    if cluster.is_kafka:
        with cluster.log() as log:
            produce(log, cluster.source, make_sentences(2000, seed=3), PARTITIONS)
            first = cluster.worker(delay=delay)
            # Produce while it runs, and kill it once some work is committed.
            produce(log, cluster.source, make_sentences(1000, seed=4, start=2000), PARTITIONS)
            wait_for(
                lambda: (
                    sum(
                        v or 0
                        for v in committed_offsets(
                            log, cluster.app_id, cluster.source, PARTITIONS
                        ).values()
                    )
                    >= 300
                ),
                60,
                "some commits",
                interval=0.1,
            )
    else:
        with cluster.log() as log:
            produce(log, cluster.source, make_sentences(4000, seed=3), PARTITIONS)
        first = cluster.worker(delay=delay)
        wait_for(
            lambda: sum(read_progress(cluster.progress).values()) >= 600,
            60,
            f"progress (log: {first.log()})",
        )
        time.sleep(0.5)  # a few commit intervals
    first.kill()
    with cluster.log() as log:
        highs = watermarks(log, cluster.source, PARTITIONS)
        at_kill = committed_offsets(log, cluster.app_id, cluster.source, PARTITIONS)
        if cluster.is_kafka:
            produce(log, cluster.source, make_sentences(500, seed=5, start=3000), PARTITIONS)
    done = {p: o or 0 for p, o in at_kill.items()}
    # What the dead worker processed past its commits is processed again.
    reset_progress(cluster.progress, done)
    assert sum(done.values()) > 0, "nothing was committed before the kill"
    assert any(done[p] < highs[p] for p in highs), "the kill came after the end of the stream"

    second = cluster.worker()
    if cluster.is_kafka:
        with cluster.log() as log:
            produce(log, cluster.source, make_sentences(500, seed=6, start=3500), PARTITIONS)
            highs = watermarks(log, cluster.source, PARTITIONS)
    wait_done(cluster, highs, timeout=90)
    assert second.stop() == 0, second.log()
    # It resumed where the first worker's commits ended, not from the start.
    resumed = first_offsets(cluster.progress, second.pid)
    assert resumed == {p: done[p] for p in resumed if done[p] < highs[p]}
    assert any(offset > 0 for offset in resumed.values())
    verify(cluster, crashed=True)


def test_sigterm_commits_last_records_and_releases_stores(cluster: Cluster) -> None:
    with cluster.log() as log:
        produce(log, cluster.source, make_sentences(300, seed=7), PARTITIONS)
        highs = watermarks(log, cluster.source, PARTITIONS)
    # No interval commit happens in this test: only the one on shutdown.
    worker = cluster.worker(commit_interval=600)
    wait_for(
        lambda: processed_all(cluster.progress, highs), 60, f"processing (log: {worker.log()})"
    )
    started = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.log()
    assert time.monotonic() - started < 5, "graceful shutdown took too long"
    assert "stopped" in worker.log()
    # verify() opens the worker's LevelDB stores: they were released.
    verify(cluster, crashed=False)


def test_sigint_stops_gracefully_too(tmp_path: Path) -> None:
    cluster = Cluster("embedded", tmp_path, None)
    try:
        with cluster.log() as log:
            produce(log, cluster.source, make_sentences(100, seed=8), PARTITIONS)
            highs = watermarks(log, cluster.source, PARTITIONS)
        worker = cluster.worker(commit_interval=600)
        wait_for(lambda: processed_all(cluster.progress, highs), 60, "processing")
        worker.send(signal.SIGINT)
        assert worker.wait(10) == 0, worker.log()
        verify(cluster, crashed=False)
    finally:
        cluster.close()
