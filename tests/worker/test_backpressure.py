"""Backpressure: partitions paused for a full queue are resumed and never stall."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from statestream import App, Processor, Table
from statestream.context import Context, Message
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.serde import JsonCodec
from statestream.worker import Worker, WorkerStatus
from tests.worker.helpers import read_tables

RECORDS = 4000
PARTITIONS = 4


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "embedded":
        return f"embedded://{tmp_path}/log"
    return f"kafka://{request.getfixturevalue('kafka_bootstrap')}"


def test_tiny_queues_pause_and_resume_without_stalling(broker_url: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    source = f"keys-{suffix}"
    counts: Table[str, int] = Table("counts", default=int)

    class Count(Processor):
        topics = (source,)
        table = counts

        def process(self, message: Message, ctx: Context) -> None:
            self.table[message.value] += 1
            time.sleep(0.0002)  # slower than fetching, so queues fill and pause

    app = App(
        f"bp-{suffix}", [Count], broker_url=broker_url, store_url=f"leveldb://{tmp_path}/s",
        max_queued=3, commit_interval=0.2,
    )  # fmt: skip
    transport = open_transport(broker_url)
    codec = JsonCodec()
    keys = [f"k{i % 13}" for i in range(RECORDS)]
    transport.admin().create_topic(TopicSpec(source, PARTITIONS))
    producer = transport.producer()
    for i, key in enumerate(keys):
        producer.send(source, codec.encode(i), codec.encode(key))
    producer.flush()
    producer.close()
    if broker_url.startswith("embedded"):
        transport.close()  # the worker's process must own the embedded log

    seen: list[int] = []

    def on_status(status: WorkerStatus) -> None:
        seen.append(status.counters.get("processed", 0))
        if seen[-1] >= RECORDS:
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=0.1)
    guard = threading.Timer(90, worker.request_stop)
    guard.start()
    try:
        worker.run()
    finally:
        guard.cancel()
    assert seen
    assert seen[-1] == RECORDS, f"stalled: processed counts over time {seen[-20:]}"

    if broker_url.startswith("embedded"):
        transport = open_transport(broker_url)
    try:
        member = transport.group_member(app.app_id)
        committed: dict[int, int | None] = {}
        for p in range(PARTITIONS):
            from statestream.types import TopicPartition

            committed[p] = member.committed(TopicPartition(source, p))
        member.close()
        tables = read_tables(transport, app.app_id, [counts], "memory://", source, committed)
    finally:
        transport.close()
    total: Counter[Any] = Counter()
    for contents in tables.values():
        total.update(contents["counts"])
    assert total == Counter(keys)
