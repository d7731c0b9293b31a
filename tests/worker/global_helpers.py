"""Helpers for the global-table worker tests: records, an in-process worker, probes.

:class:`FlakyTransport` wraps a transport so that its fetchers can fail,
stall or slow down on demand; :class:`Probes` asks every partition of a
running ``tests.worker.global_app`` what its worker's copy holds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from statestream import App, GlobalTable
from statestream.errors import LogError, TableContextError
from statestream.log import Transport
from statestream.log.base import Fetcher, TopicSpec
from statestream.stores.registry import open_store
from statestream.tables.recovery import stored_global_offset
from statestream.types import Record, TopicPartition
from statestream.worker import Worker
from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.helpers import REPO_ROOT, clean_env, read_topic, wait_for

GLOBAL_APP = "tests.worker.global_app:app"


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


def send(transport: Transport, topic: str, items: Iterable[tuple[Any, Any, int | None]]) -> None:
    """Write json ``(key, value, partition)`` records (``None`` value: a delete), flushed."""
    producer = transport.producer()
    try:
        for key, value, partition in items:
            producer.send(topic, j(key), None if value is None else j(value), partition=partition)
        producer.flush()
    finally:
        producer.close()


def make_topic(transport: Transport, name: str, partitions: int, policy: str = "compact") -> None:
    admin = transport.admin()
    try:
        admin.ensure_topic(TopicSpec(name, partitions, cleanup_policy=policy))  # type: ignore[arg-type]
    finally:
        admin.close()


class Running:
    """``Worker(app).run()`` on a thread of this process, sharing ``transport``."""

    def __init__(self, app: App, transport: Transport) -> None:
        self.worker = Worker(app, transport=transport, status_interval=0.1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.worker.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the worker did not stop"


def contents(table: GlobalTable[Any, Any]) -> dict[Any, Any] | None:
    """The copy's contents, or None while no worker serves it (not started yet)."""
    try:
        return dict(table.items())
    except TableContextError:
        return None


def restored_counts(caplog: pytest.LogCaptureFixture) -> list[int]:
    pattern = re.compile(r"restored: (\d+) records applied")
    return [int(m.group(1)) for r in caplog.records if (m := pattern.search(r.getMessage()))]


def offsets_behind(store_url: str, topic_marks: dict[int, tuple[int, int]]) -> int:
    """Records of the topic past what the (closed) copy at ``store_url`` applied."""
    with open_store(store_url, "lookup", 0) as store:
        total = 0
        for p, (low, high) in topic_marks.items():
            offset = stored_global_offset(store, p)
            total += high - (low if offset is None else offset + 1)
        return total


def marks(transport: Transport, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    fetcher = transport.fetcher()
    try:
        return {p: fetcher.watermarks(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        fetcher.close()


class FlakyFetcher(Fetcher):
    """Delegates to a real fetcher; ``fail`` polls raise LogError, ``stall`` returns
    nothing, ``delay`` makes every poll slow and small."""

    def __init__(self, inner: Fetcher, delay: float = 0.0) -> None:
        self.inner = inner
        self.fail = 0
        self.stall = False
        self.delay = delay

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.inner.assign(partitions)

    def assignment(self) -> set[TopicPartition]:
        return self.inner.assignment()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.inner.seek(tp, offset)

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.inner.seek_to_beginning(tp)

    def seek_to_end(self, tp: TopicPartition) -> None:
        self.inner.seek_to_end(tp)

    def position(self, tp: TopicPartition) -> int:
        return self.inner.position(tp)

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        if self.fail:
            self.fail -= 1
            raise LogError("broker went away")
        if self.stall:
            threading.Event().wait(timeout)
            return []
        if self.delay:
            threading.Event().wait(self.delay)
            max_records = min(max_records, 20)
        return self.inner.poll(timeout, max_records)

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        return self.inner.watermarks(tp)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self.inner.pause(partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.inner.resume(partitions)

    def close(self) -> None:
        self.inner.close()


class FlakyTransport:
    """The embedded transport, with the fetcher above."""

    def __init__(self, inner: Transport, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.made: list[FlakyFetcher] = []

    def fetcher(self, **options: Any) -> FlakyFetcher:
        made = FlakyFetcher(self.inner.fetcher(**options), self.delay)
        self.made.append(made)
        return made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Probes:
    """Sends probes to every partition and reads each worker's answers."""

    def __init__(self, cluster: Cluster, log: Transport) -> None:
        self.cluster = cluster
        self.log = log
        self.round = 0
        self.source = f"commands{cluster.suffix}"
        self.output = f"probes{cluster.suffix}"

    def send(self) -> int:
        self.round += 1
        items = [(f"probe-{self.round}-{p}", {"probe": self.round}, p) for p in range(PARTITIONS)]
        send(self.log, self.source, items)
        return self.round

    def answers(self, since: int = 0) -> list[dict[str, Any]]:
        records = read_topic(self.log, self.output, PARTITIONS)
        found = [json.loads(r.value or b"null") for rs in records.values() for r in rs]
        return [a for a in found if a["probe"] > since]

    def wait_until(self, pids: set[int], model: dict[str, int], what: str) -> None:
        """Probe until every worker of ``pids`` answered with ``model``."""
        start = self.round

        def agreed() -> bool:
            self.send()
            good = {a["pid"] for a in self.answers(start) if a["items"] == model}
            return pids <= good

        wait_for(agreed, 90, what, interval=0.5)


def tables_output(cluster: Cluster, name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "statestream.cli", "tables", GLOBAL_APP,
         "--data-dir", str(cluster.data_dir(name)), "--broker-url", cluster.broker_url],
        cwd=REPO_ROOT, env=clean_env(WORDCOUNT_SUFFIX=cluster.suffix),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def log_restored(worker: Any) -> list[int]:
    return [int(n) for n in re.findall(r"restored: (\d+) records applied", worker.log())]
