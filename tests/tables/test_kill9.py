"""kill -9 a worker counting a stream at random moments; the final counts are exact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.tables import Table, TableManager
from statestream.types import TopicPartition
from tests.tables.kill9_worker import APP_ID, GROUP, SOURCE

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 3000
KEYS = 7


def source_key(i: int) -> str:
    return f"key{(i * 31 + i // 5) % KEYS}"


def spawn(url: str, store_dir: Path, suffix: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.tables.kill9_worker",
            url,
            str(store_dir),
            "37",
            "0.0005",
            suffix,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_ready(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "READY", (
        f"child did not start: {line!r} {child.stderr.read() if child.stderr else ''}"
    )


def committed_offset(url: str, suffix: str) -> int | None:
    transport = open_transport(url)
    try:
        member = transport.group_member(GROUP + suffix)
        offset = member.committed(TopicPartition(SOURCE + suffix, 0))
        member.close()
        return offset
    finally:
        transport.close()


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded log in a fresh directory, or the session's Kafka broker."""
    if request.param == "embedded":
        return f"embedded://{tmp_path}/log"
    # A short session lets a restarted child take over from the killed one quickly.
    return f"kafka://{request.getfixturevalue('kafka_bootstrap')}?session_timeout_ms=6000"


def test_kill9_at_random_moments_then_exact_counts(broker_url: str, tmp_path: Path) -> None:
    store_dir = tmp_path / "stores"
    suffix = "-" + uuid.uuid4().hex[:8]
    source = SOURCE + suffix
    transport = open_transport(broker_url)
    admin = transport.admin()
    admin.create_topic(TopicSpec(source, 1))
    admin.close()
    producer = transport.producer()
    for i in range(RECORDS):
        producer.send(source, None, source_key(i).encode(), partition=0)
    producer.flush()
    producer.close()
    transport.close()  # the embedded log is single-process: the child owns it now

    rng = random.Random(1234)
    kills = 0
    progress: list[int | None] = []
    for _ in range(4):
        child = spawn(broker_url, store_dir, suffix)
        wait_ready(child)
        time.sleep(rng.uniform(0.05, 0.6))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(timeout=30)
        progress.append(committed_offset(broker_url, suffix))
    assert kills >= 3
    # The kills landed mid-stream, after some commits.
    assert any(p is not None and 0 < p < RECORDS for p in progress), progress
    child = spawn(broker_url, store_dir, suffix)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.split() == ["READY", "DONE"]

    transport = open_transport(broker_url)
    try:
        member = transport.group_member(GROUP + suffix)
        assert member.committed(TopicPartition(source, 0)) == RECORDS
        member.close()
        counts: Table[str, int] = Table("counts")
        app_id = APP_ID + suffix
        manager = TableManager(app_id, [counts], transport, f"leveldb://{tmp_path}/fresh")
        manager.open_partition(0)
        manager.restore_partition(0, {source: RECORDS})
        manager.bind(0)
        expected = Counter(source_key(i) for i in range(RECORDS))
        assert dict(counts.items()) == dict(expected)
        manager.close()
        # The store the worker kept agrees with a full restore.
        kept = TableManager(app_id, [Table("counts")], transport, f"leveldb://{store_dir}")
        kept.open_partition(0)
        kept.restore_partition(0, {source: RECORDS})
        kept.bind(0)
        assert dict(kept.tables[0].items()) == dict(expected)
        kept.close()
    finally:
        transport.close()
