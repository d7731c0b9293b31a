"""``app.query`` / ``app.query_range``: committed state of a running worker, from any thread.

A worker runs on the embedded log in this process (a thread). Checked: the
answers are the committed values (and the uncommitted buffer is never read),
a key is found on the partition the producer's partitioner gives it, range
reads with prefix, bounds and limits, windowed tables answer windows, typed
errors for a stopped app, an unknown table and a bad limit; and a checker
thread reading while the worker writes never sees part of a batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statestream import App, GlobalTable, Processor, Table
from statestream.errors import (
    NotRunningError,
    QueryError,
    TopicNotFoundError,
    UnknownTableError,
)
from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.log.partitioner import default_partition
from tests.worker.global_helpers import Running
from tests.worker.helpers import wait_for

PARTITIONS = 3
GROUP = 10  # keys each record of the "batch" processor writes, all to one value


class Counts(Processor):
    topics = ("words",)
    counts = Table("counts", default=int)
    minutes = Table("minutes", default=int).tumbling(60_000)
    # Every record sets GROUP keys of its partition to its own offset: any
    # committed state has them all equal.
    batches = Table("batches", default=int)
    prices = GlobalTable("prices")

    def process(self, message: Any, ctx: Any) -> None:
        word = message.value
        self.counts[word] += 1
        self.minutes[word] += 1
        for i in range(GROUP):
            self.batches[f"g{i}"] = message.offset


def make_app(tmp: Path, commit_interval: float = 0.05) -> App:
    return App(
        "q",
        [Counts],
        broker_url=f"embedded://{tmp}/log",
        store_url=f"leveldb://{tmp}/stores",
        commit_interval=commit_interval,
    )


def produce(transport: Transport, words: list[str]) -> None:
    producer = transport.producer()
    try:
        for word in words:
            key = json.dumps(word).encode()
            producer.send("words", key, json.dumps(word).encode(), timestamp=1_000)
        producer.flush()
    finally:
        producer.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[App, Running, Transport]]:
    transport = open_transport(f"embedded://{tmp_path}/log")
    admin = transport.admin()
    admin.ensure_topic(TopicSpec("words", PARTITIONS))
    admin.close()
    app = make_app(tmp_path)
    worker = Running(app, transport)
    try:
        yield app, worker, transport
    finally:
        worker.stop()
        transport.close()


def committed_count(app: App, word: str) -> Any:
    try:
        answer = app.query("counts", word)
    except QueryError:
        return None
    return answer.value if answer.found else None


def test_query_answers_committed_values_from_the_keys_partition(
    running: tuple[App, Running, Transport],
) -> None:
    app, worker, transport = running
    words = ["apple"] * 5 + ["banana"] * 3 + ["cherry"]
    produce(transport, words)
    for word, count in (("apple", 5), ("banana", 3), ("cherry", 1)):
        wait_for(lambda w=word, c=count: committed_count(app, w) == c, 30, f"{word} committed")
        answer = app.query("counts", word)
        assert (answer.found, answer.value, answer.copy, answer.lag) == (True, count, "active", 0)
        assert answer.partition == default_partition(json.dumps(word).encode(), PARTITIONS)
        assert answer.offset is not None
    missing = app.query("counts", "durian")
    assert (missing.found, missing.value) == (False, None)
    windows = app.query("minutes", "apple")
    assert windows.found
    assert [tuple(w) for w in windows.value] == [(0, 60_000, 5)]
    with pytest.raises(UnknownTableError, match="counts"):
        app.query("nope", "apple")
    assert worker.worker.queries is not None


def test_query_range_reads_prefixes_bounds_and_limits(
    running: tuple[App, Running, Transport],
) -> None:
    app, _, transport = running
    words = [f"w{i:02d}" for i in range(30)] + ["x1", "x2"]
    produce(transport, words)
    for word in words:  # each partition commits on its own
        wait_for(lambda w=word: committed_count(app, w) == 1, 30, f"{word} committed")
    page = app.query_range("counts", limit=100)
    assert sorted(k for k, _, _ in page.items) == sorted(words)
    assert sorted(page.partitions) == list(range(PARTITIONS))
    assert page.missing == []
    assert not page.more
    for key, value, partition in page.items:
        assert value == 1
        assert partition == default_partition(json.dumps(key).encode(), PARTITIONS)
    prefixed = app.query_range("counts", prefix="x")
    assert sorted(k for k, _, _ in prefixed.items) == ["x1", "x2"]
    bounded = app.query_range("counts", start="w10", end="w20")
    assert sorted(k for k, _, _ in bounded.items) == [f"w{i}" for i in range(10, 20)]
    limited = app.query_range("counts", limit=2)
    assert limited.more
    assert all(sum(1 for _, _, p in limited.items if p == part) <= 2 for part in range(PARTITIONS))
    with pytest.raises(QueryError, match="limit"):
        app.query_range("counts", limit=0)
    with pytest.raises(QueryError, match="per key"):
        app.query_range("minutes")


def test_reads_during_heavy_writes_never_see_a_partial_batch(
    running: tuple[App, Running, Transport],
) -> None:
    app, _, transport = running
    stop = threading.Event()
    torn: list[Any] = []
    seen: set[int] = set()

    def check() -> None:
        try:
            while not stop.is_set():
                for partition in range(PARTITIONS):
                    try:
                        page = app.query_range("batches", partition=partition, limit=100)
                    except QueryError:
                        continue  # not restored yet
                    values = {v for _, v, _ in page.items}
                    if len(values) > 1 or (page.items and len(page.items) != GROUP):
                        torn.append(page.items)
                    seen.update(values)
        except BaseException as exc:  # a checker that breaks fails the test
            torn.append(exc)

    checker = threading.Thread(target=check)
    checker.start()
    try:
        for n in range(1, 11):
            produce(transport, [f"k{i}" for i in range(300)])
            wait_for(lambda n=n: committed_count(app, "k299") == n, 60, f"round {n} committed")
    finally:
        stop.set()
        checker.join(30)
    assert torn == []
    assert len(seen) > 3, "the checker saw the committed state move"


def test_query_needs_a_running_worker(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with pytest.raises(NotRunningError, match="no worker runs it"):
        app.query("counts", "apple")
    # A copy made by the CLI (with_settings) runs; the module's app finds it.
    transport = open_transport(f"embedded://{tmp_path}/log")
    admin = transport.admin()
    admin.ensure_topic(TopicSpec("words", PARTITIONS))
    admin.close()
    copy = app.with_settings(commit_interval=0.05)
    worker = Running(copy, transport)
    try:
        produce(transport, ["apple"])
        wait_for(lambda: committed_count(app, "apple") == 1, 30, "the original app answers")
    finally:
        worker.stop()
        transport.close()
    with pytest.raises(NotRunningError):
        app.query("counts", "apple")


def test_global_tables_answer_from_the_workers_copy(
    running: tuple[App, Running, Transport],
) -> None:
    app, _, transport = running
    topic = app.global_topic(Counts.prices)

    def sent() -> bool:
        # The worker creates the global table's topic as it starts.
        producer = transport.producer()
        try:
            for name, price in (("apple", 3), ("apricot", 5), ("banana", 1)):
                producer.send(topic, json.dumps(name).encode(), json.dumps(price).encode())
            producer.flush()
        except TopicNotFoundError:
            return False
        finally:
            producer.close()
        return True

    wait_for(sent, 30, "the global table's topic exists")

    def priced() -> Any:
        try:
            return app.query("prices", "banana").found
        except QueryError:
            return False

    wait_for(priced, 30, "the global copy has the prices")
    answer = app.query("prices", "apple")
    assert (answer.found, answer.value, answer.copy, answer.partition) == (True, 3, "global", None)
    page = app.query_range("prices", prefix="ap")
    assert sorted((k, v) for k, v, _ in page.items) == [("apple", 3), ("apricot", 5)]
    assert page.copy == "global"
