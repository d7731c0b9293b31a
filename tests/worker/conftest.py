"""Fixtures for worker tests: a log of each kind and worker processes on it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from statestream.log import Transport, open_transport
from tests.worker.helpers import WorkerProcess

KINDS = ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)]

WORDCOUNT = "tests.worker.wordcount_app:app"
PARTITIONS = 4
FAST_GROUP = "session_timeout_ms=6000&heartbeat_interval_ms=500"


class Cluster:
    """A log (embedded or the session's Kafka broker) and the workers started on it.

    On Kafka every name carries a suffix unique to the test (the broker is
    shared); each worker gets its own data directory there, as on separate
    machines. On the embedded log all workers share one data directory.
    """

    def __init__(self, kind: str, tmp: Path, bootstrap: str | None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.progress = tmp / "progress"
        self.progress.mkdir()
        if bootstrap is None:
            self.suffix = ""
            self.broker_url = f"embedded://{tmp}/data/log"
            self._shared: Transport | None = None
            self.worker_broker_url = self.broker_url
        else:
            self.suffix = f"-{uuid.uuid4().hex[:10]}"
            self.broker_url = f"kafka://{bootstrap}"
            self._shared = open_transport(self.broker_url)
            # A killed member holds its partitions until its session times
            # out: keep that short (the broker's minimum is 6 s).
            self.worker_broker_url = f"{self.broker_url}?{FAST_GROUP}"
        self.app_id = f"wordcount{self.suffix}"
        self.source = f"sentences{self.suffix}"
        self.output = f"word-counts{self.suffix}"
        self.workers: list[WorkerProcess] = []

    @property
    def is_kafka(self) -> bool:
        return self._shared is not None

    @contextlib.contextmanager
    def log(self) -> Iterator[Transport]:
        """The transport; on the embedded log only while no worker runs."""
        if self._shared is not None:
            yield self._shared
            return
        transport = open_transport(self.broker_url)
        try:
            yield transport
        finally:
            transport.close()

    def data_dir(self, name: str) -> Path:
        return self.tmp / ("data" if not self.is_kafka else f"data-{name}")

    def store_url(self, name: str = "w") -> str:
        return f"leveldb://{self.data_dir(name)}/{self.app_id}"

    def worker(
        self,
        name: str = "w",
        *,
        commit_interval: float = 0.2,
        delay: float = 0.0,
        app: str = WORDCOUNT,
        extra: tuple[str, ...] = (),
    ) -> WorkerProcess:
        """Start a word-count worker process named ``name`` (its data directory)."""
        args = [
            "--data-dir", str(self.data_dir(name)),
            "--broker-url", self.worker_broker_url,
            "--partitions", str(PARTITIONS),
            "--commit-interval", str(commit_interval),
            *extra,
        ]  # fmt: skip
        env = {
            "WORDCOUNT_SUFFIX": self.suffix,
            "WORDCOUNT_PROGRESS_DIR": str(self.progress),
            "WORDCOUNT_DELAY": str(delay),
        }
        index = len(self.workers)
        worker = WorkerProcess(app, args, self.tmp / f"worker-{name}-{index}.log", env)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.ensure_stopped()
        if self._shared is not None:
            self._shared.close()


@pytest.fixture(params=KINDS)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh embedded log, or the session's Kafka broker with unique names."""
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    made = Cluster(request.param, tmp_path, bootstrap)
    yield made
    made.close()


@pytest.fixture
def kafka_cluster(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Cluster]:
    """The session's Kafka broker with names unique to the test."""
    made = Cluster("kafka", tmp_path, kafka_bootstrap)
    yield made
    made.close()
