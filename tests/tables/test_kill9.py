"""kill -9 a worker counting a stream at random moments; the final counts are exact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

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


def spawn(log_dir: Path, store_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.tables.kill9_worker",
            str(log_dir),
            str(store_dir),
            "37",
            "0.0005",
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


def committed_offset(log_dir: Path) -> int | None:
    transport = open_transport(f"embedded://{log_dir}")
    try:
        member = transport.group_member(GROUP)
        offset = member.committed(TopicPartition(SOURCE, 0))
        member.close()
        return offset
    finally:
        transport.close()


def test_kill9_at_random_moments_then_exact_counts(tmp_path: Path) -> None:
    log_dir, store_dir = tmp_path / "log", tmp_path / "stores"
    transport = open_transport(f"embedded://{log_dir}")
    admin = transport.admin()
    admin.create_topic(TopicSpec(SOURCE, 1))
    admin.close()
    producer = transport.producer()
    for i in range(RECORDS):
        producer.send(SOURCE, None, source_key(i).encode(), partition=0)
    producer.flush()
    producer.close()
    transport.close()  # the embedded log is single-process: the child owns it now

    rng = random.Random(1234)
    kills = 0
    progress: list[int | None] = []
    for _ in range(4):
        child = spawn(log_dir, store_dir)
        wait_ready(child)
        time.sleep(rng.uniform(0.05, 0.6))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(timeout=30)
        progress.append(committed_offset(log_dir))
    assert kills >= 3
    # The kills landed mid-stream, after some commits.
    assert any(p is not None and 0 < p < RECORDS for p in progress), progress
    child = spawn(log_dir, store_dir)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.split() == ["READY", "DONE"]

    transport = open_transport(f"embedded://{log_dir}")
    try:
        member = transport.group_member(GROUP)
        assert member.committed(TopicPartition(SOURCE, 0)) == RECORDS
        member.close()
        counts: Table[str, int] = Table("counts")
        manager = TableManager(APP_ID, [counts], transport, f"leveldb://{tmp_path}/fresh")
        manager.open_partition(0)
        manager.restore_partition(0, {SOURCE: RECORDS})
        manager.bind(0)
        expected = Counter(source_key(i) for i in range(RECORDS))
        assert dict(counts.items()) == dict(expected)
        manager.close()
        # The store the worker kept agrees with a full restore.
        kept = TableManager(APP_ID, [Table("counts")], transport, f"leveldb://{store_dir}")
        kept.open_partition(0)
        kept.restore_partition(0, {SOURCE: RECORDS})
        kept.bind(0)
        assert dict(kept.tables[0].items()) == dict(expected)
        kept.close()
    finally:
        transport.close()
