"""A real ``Worker`` run on a thread of the test process, on an embedded log in a temp dir.

Used by the metrics, listener and progress tests: the worker's poll thread is
the thread made here (named ``poll``), so tests can check which thread calls
what. Input is written through the embedded transport before the worker
starts (an embedded log has one owner process; the worker opens it itself).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from statestream import App
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.tables.headers import epoch_of
from statestream.types import TopicPartition
from statestream.worker.runner import Worker

POLL_THREAD = "poll"


def log_url(tmp: Path) -> str:
    return f"embedded://{tmp}/log"


def settings(tmp: Path, **more: Any) -> dict[str, Any]:
    """Settings of a test worker: the temp dir's embedded log, memory stores, 2 partitions."""
    return {
        "broker_url": log_url(tmp),
        "store_url": "memory://",
        "data_dir": str(tmp),
        "partitions": 2,
        "commit_interval": 0.2,
        **more,
    }


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def produce(
    tmp: Path,
    topic: str,
    items: Iterable[tuple[int, Any, Any]],
    *,
    partitions: int = 2,
    cleanup_policy: str = "delete",
) -> None:
    """Write json ``(partition, key, value)`` items to ``topic`` (created if missing)."""
    transport = open_transport(log_url(tmp))
    try:
        admin = transport.admin()
        try:
            admin.ensure_topic(TopicSpec(topic, partitions, cleanup_policy=cleanup_policy))
        finally:
            admin.close()
        producer = transport.producer()
        try:
            for partition, key, value in items:
                producer.send(topic, encode(key), encode(value), partition=partition)
            producer.flush()
        finally:
            producer.close()
    finally:
        transport.close()


def changelog_records(tmp: Path, topic: str, partitions: int = 2) -> dict[int, int]:
    """Records of each partition of changelog ``topic``, fence markers left out."""
    transport = open_transport(log_url(tmp))
    try:
        fetcher = transport.fetcher(reset="earliest")
        try:
            counts: dict[int, int] = {}
            for partition in range(partitions):
                tp = TopicPartition(topic, partition)
                fetcher.assign([tp])
                low, high = fetcher.watermarks(tp)
                fetcher.seek(tp, low)
                count = 0
                while fetcher.position(tp) < high:
                    for record in fetcher.poll(timeout=0.5, max_records=10_000):
                        if not epoch_of(record)[1]:
                            count += 1
                counts[partition] = count
            return counts
        finally:
            fetcher.close()
    finally:
        transport.close()


def high_watermarks(tmp: Path, topic: str, partitions: int = 2) -> dict[int, int]:
    transport = open_transport(log_url(tmp))
    try:
        fetcher = transport.fetcher()
        try:
            return {p: fetcher.watermarks(TopicPartition(topic, p))[1] for p in range(partitions)}
        finally:
            fetcher.close()
    finally:
        transport.close()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def running(app: App, **worker_options: Any) -> Iterator[Worker]:
    """Run ``Worker(app, **worker_options)`` on a thread named ``poll``; stop it on exit.

    Re-raises what :meth:`Worker.run` raised; fails if it did not return 0.
    """
    worker = Worker(app, **worker_options)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(worker.run())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name=POLL_THREAD, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(60)
    assert not thread.is_alive(), "the worker did not stop within 60 s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    assert outcome[0] == 0


def wait_processed(worker: Worker, count: int, timeout: float = 60.0) -> None:
    wait_for(lambda: worker.counters().get("processed", 0) >= count, timeout, f"{count} records")
