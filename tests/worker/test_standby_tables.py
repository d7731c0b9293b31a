"""``statestream tables`` shows each partition's role, local offset and lag on a running worker."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.helpers import REPO_ROOT, clean_env, make_sentences, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

APP = "tests.worker.frozen_app:app"


def test_tables_shows_active_and_standby_partitions_with_offsets(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    extra = ("--num-standby-replicas", "1")
    a = cluster.worker("a", app=APP, extra=extra)
    b = cluster.worker("b", app=APP, extra=extra)
    with cluster.log() as log:
        produce(log, cluster.source, make_sentences(400, seed=3), PARTITIONS)
    standby = re.compile(r"standby partitions \[(\d[\d, ]*)\]")
    wait_for(lambda: standby.search(a.log()) and standby.search(b.log()), 60, "standbys placed")

    def tables() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "statestream.cli", "tables", APP,
             "--data-dir", str(cluster.data_dir("a")), "--broker-url", cluster.broker_url],
            cwd=REPO_ROOT,
            env=clean_env(WORDCOUNT_SUFFIX=cluster.suffix),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    # partition, state, local offset, changelog end, lag
    line = re.compile(r"^  \d +(\S+) +\d+ +\d+ +\d+$", re.MULTILINE)

    def both_roles() -> str | None:
        out = tables()
        roles = set(line.findall(out))
        return out if {"active", "standby"} <= roles else None

    out = wait_for(both_roles, 60, "active and standby roles with offsets in `statestream tables`")
    assert "a worker runs with this data directory" in out
    assert a.stop() == 0, a.log()
    assert b.stop() == 0, b.log()
