"""Two worker processes in one group on Kafka: split, hand over, restore, stay exact."""

from __future__ import annotations

import re

import pytest

from statestream.stores.registry import open_store
from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.helpers import first_offsets, make_sentences, produce, wait_for, watermarks
from tests.worker.test_end_to_end import verify, wait_done

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

ALL = set(range(PARTITIONS))


def test_two_workers_split_partitions_and_hand_over(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    with cluster.log() as log:
        produce(log, cluster.source, make_sentences(800, seed=11), PARTITIONS)
    a = cluster.worker("a")
    wait_for(lambda: a.partitions() == ALL, 60, "worker a to get every partition")
    b = cluster.worker("b")

    def split() -> bool:
        held_a, held_b = a.partitions(), b.partitions()
        return bool(held_a and held_b and not held_a & held_b and held_a | held_b == ALL)

    wait_for(split, 60, "the partitions to be split between a and b")
    held_b = b.partitions()
    with cluster.log() as log:
        produce(log, cluster.source, make_sentences(800, seed=12, start=800), PARTITIONS)
        highs = watermarks(log, cluster.source, PARTITIONS)
    wait_done(cluster, highs)
    assert set(first_offsets(cluster.progress, b.pid)) == held_b, "b did not process its share"
    assert a.partitions() | held_b == ALL

    # Stop b: a gets b's partitions, restores them and continues.
    handover_at = len(a.log())
    assert b.stop() == 0, b.log()
    wait_for(lambda: a.partitions() == ALL, 60, "worker a to get b's partitions back")
    for p in held_b:
        restored = rf"counts-changelog\[{p}\]: restored ([1-9]\d*) records"
        wait_for(
            lambda: re.search(restored, a.log()[handover_at:]),  # noqa: B023 - used at once
            30,
            f"a to restore b's changes to partition {p}",
        )
    with cluster.log() as log:
        produce(log, cluster.source, make_sentences(800, seed=13, start=1600), PARTITIONS)
        highs = watermarks(log, cluster.source, PARTITIONS)
    wait_done(cluster, highs)
    assert a.stop() == 0, a.log()

    # a's own stores hold every partition, up to date with the changelog.
    with cluster.log() as log:
        changelog_highs = watermarks(log, f"{cluster.app_id}-counts-changelog", PARTITIONS)
    for p, high in changelog_highs.items():
        store = open_store(cluster.store_url("a"), "counts", p)
        try:
            assert store.offset() == high - 1, f"a's store of partition {p} is behind"
        finally:
            store.close()
    verify(cluster, crashed=False, store_name="a")
