"""The README's first app, extracted from README.md, counts exactly with unkeyed input.

Its sentences are produced without keys, so every word occurs on every
partition; the app re-keys words through a repartition topic
(``ctx.group_by``), and the table must hold each word once, on the partition
its key hashes to, with its exact count. Also after ``kill -9`` in the middle
of the stream and a restart: re-keyed records re-sent by the restarted worker
(flushed before the crash, their sentences not committed) must count once.
Runs on both transports.
"""

from __future__ import annotations

import json
import random
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.log.partitioner import default_partition
from statestream.tables import Table, TableManager
from statestream.types import TopicPartition
from tests.plugins.kafka import make_topic_name
from tests.worker.conftest import KINDS, PARTITIONS
from tests.worker.helpers import REPO_ROOT, WorkerProcess, read_topic, wait_for

pytestmark = pytest.mark.timeout(240)

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "and",
    "cat",
    "sat",
    "on",
    "mat",
]


def readme_app() -> str:
    """The Python block under '## A complete app' in README.md."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## A complete app", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no python block under '## A complete app'"
    return match.group(1)


class Setup:
    def __init__(self, kind: str, tmp: Path, bootstrap: str | None) -> None:
        self.tmp = tmp
        self.suffix = "" if bootstrap is None else make_topic_name("readme")[-10:]
        source = readme_app()
        assert len(source.strip().splitlines()) < 25, "the README app must stay under 25 lines"
        self.app_id, self.source, self.output = (
            f"wordcount{self.suffix}",
            f"sentences{self.suffix}",
            f"word-counts{self.suffix}",
        )
        for old, new in (
            ('"wordcount"', f'"{self.app_id}"'),
            ('"sentences"', f'"{self.source}"'),
            ('"word-counts"', f'"{self.output}"'),
        ):
            assert old in source
            source = source.replace(old, new)
        (tmp / "readme_app.py").write_text(source)
        self.data = tmp / "data"
        self.url = f"embedded://{self.data}/log" if bootstrap is None else f"kafka://{bootstrap}"
        self.embedded = bootstrap is None
        self.repartition = f"{self.app_id}-words-repartition"

    def transport(self) -> Transport:
        return open_transport(self.url)

    def worker(self, name: str) -> WorkerProcess:
        args = ["--data-dir", str(self.data), "--broker-url", self.url,
                "--partitions", str(PARTITIONS), "--commit-interval", "0.2"]  # fmt: skip
        return WorkerProcess(
            "readme_app:app", args, self.tmp / f"{name}.log", {"PYTHONPATH": str(self.tmp)}
        )


def produce_sentences(setup: Setup, count: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(WORDS, k=8)) for _ in range(count)]
    transport = setup.transport()
    try:
        transport.admin().ensure_topic(TopicSpec(setup.source, PARTITIONS))
        producer = transport.producer()
        for i, sentence in enumerate(sentences):
            # Unkeyed, spread over every partition.
            producer.send(setup.source, None, f'"{sentence}"'.encode(), partition=i % PARTITIONS)
        producer.flush()
        producer.close()
    finally:
        transport.close()
    return Counter(word for s in sentences for word in s.split())


def _committed(transport: Transport, group: str, topic: str) -> dict[int, int | None]:
    admin = transport.admin()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return {tp.partition: o for tp, o in admin.committed_offsets(group, tps).items()}


def _done(setup: Setup) -> bool:
    """Every sentence and every re-keyed word committed (Kafka only: the log is shared)."""
    transport = setup.transport()
    try:
        fetcher = transport.fetcher()
        try:
            for topic in (setup.source, setup.repartition):
                committed = _committed(transport, setup.app_id, topic)
                for p in range(PARTITIONS):
                    high = fetcher.watermarks(TopicPartition(topic, p))[1]
                    if (committed[p] or 0) < high:
                        return False
            return True
        finally:
            fetcher.close()
    finally:
        transport.close()


def run_to_the_end(setup: Setup, name: str) -> None:
    """Run a worker until every sentence and re-keyed word is committed, then stop it."""
    if not setup.embedded:
        worker = setup.worker(name)
        try:
            wait_for(lambda: _done(setup), 180, "every sentence and word to be committed")
            assert worker.stop() == 0, worker.log()
        finally:
            worker.ensure_stopped()
        return
    # The embedded log belongs to the running worker: look at the commits
    # between runs (a stop commits everything processed).
    for attempt in range(20):
        worker = setup.worker(f"{name}-{attempt}")
        try:
            wait_for(lambda w=worker: "ready" in w.log(), 60, "the worker to start")
            time.sleep(3)
            assert worker.stop() == 0, worker.log()
        finally:
            worker.ensure_stopped()
        if _done(setup):
            return
    raise AssertionError("the embedded worker did not finish the input")


def table_contents(setup: Setup) -> dict[int, dict[str, Any]]:
    """Rebuild the counts table from its changelog, as of the committed repartition offsets."""
    transport = setup.transport()
    try:
        committed = _committed(transport, setup.app_id, setup.repartition)
        counts: Table[str, int] = Table("counts", default=int)
        manager = TableManager(setup.app_id, [counts], transport, "memory://")
        result: dict[int, dict[str, Any]] = {}
        try:
            for p in range(PARTITIONS):
                manager.open_partition(p)
                manager.restore_partition(p, {setup.repartition: committed[p]}, claim=False)
                manager.bind(p)
                result[p] = dict(counts.items())
                manager.close_partition(p)
        finally:
            manager.close()
        return result
    finally:
        transport.close()


def check_outputs(setup: Setup, expected: Counter[str]) -> None:
    """At-least-once outputs: every count of every word was sent (duplicates allowed).

    The app sends a word's new count at every increment, so after a crash
    and a restore the counts from the restored value on are sent again; the
    ones before were flushed before their commit and must all be there.
    """
    transport = setup.transport()
    try:
        records = read_topic(transport, setup.output, PARTITIONS)
    finally:
        transport.close()
    sent: dict[str, set[int]] = {}
    for recs in records.values():
        for r in recs:
            sent.setdefault(json.loads(r.key or b"null"), set()).add(json.loads(r.value or b"0"))
    for word, count in expected.items():
        missing = set(range(1, count + 1)) - sent.get(word, set())
        assert not missing, f"outputs of {word!r} lost: {sorted(missing)[:10]}"


def check_exact(setup: Setup, expected: Counter[str]) -> None:
    tables = table_contents(setup)
    found: dict[str, int] = {}
    for p, contents in tables.items():
        for word, count in contents.items():
            assert word not in found, f"{word!r} is counted on two partitions: {tables}"
            assert default_partition(f'"{word}"'.encode(), PARTITIONS) == p, (word, p)
            found[word] = count
    assert found == dict(expected)


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return Setup(request.param, tmp_path, bootstrap)


def test_the_readme_app_counts_unkeyed_words_exactly(setup: Setup) -> None:
    expected = produce_sentences(setup, 2000, seed=1)
    run_to_the_end(setup, "w")
    check_exact(setup, expected)
    check_outputs(setup, expected)


def test_the_readme_app_is_exact_after_kill_9_and_a_restart(setup: Setup) -> None:
    expected = produce_sentences(setup, 20000, seed=2)
    first = setup.worker("first")
    try:
        wait_for(lambda: "ready" in first.log(), 60, "the first worker to process")
        time.sleep(random.Random(7).uniform(1.0, 2.5))  # in the middle of the stream
        first.send(signal.SIGKILL)
        first.wait(10)
    finally:
        first.ensure_stopped()
    run_to_the_end(setup, "second")
    check_exact(setup, expected)
    check_outputs(setup, expected)
