"""Helpers for global-table tests: a topic, records, and a copy driven like the reader thread.

:func:`catch_up` drives a :class:`GlobalCopy` the way the worker's global
reader thread does: assign every partition, check the store against the
topic, poll to the high watermarks, apply per partition, count gaps read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from statestream.log import Transport
from statestream.log.base import Fetcher, TopicSpec
from statestream.stores.registry import destroy_store, open_store
from statestream.tables.globaltable import GlobalCopy, GlobalTable
from statestream.types import Record

TOPIC = "lookup"
PARTITIONS = 3


def make_topic(transport: Transport, name: str = TOPIC, partitions: int = PARTITIONS) -> None:
    admin = transport.admin()
    try:
        admin.create_topic(TopicSpec(name, partitions, cleanup_policy="compact"))
    finally:
        admin.close()


def delete_topic(transport: Transport, name: str = TOPIC) -> None:
    admin = transport.admin()
    try:
        admin.delete_topic(name)
    finally:
        admin.close()


def send(
    transport: Transport,
    items: Iterable[tuple[int, bytes | None, bytes | None]],
    topic: str = TOPIC,
    headers: Any = (),
) -> None:
    """Write ``(partition, key, value)`` records, flushed."""
    producer = transport.producer()
    try:
        for partition, key, value in items:
            producer.send(topic, key, value, partition=partition, headers=headers)
        producer.flush()
    finally:
        producer.close()


def catch_up(copy: GlobalCopy, fetcher: Fetcher, timeout: float = 20.0) -> int:
    """Restore ``copy`` to the topic's high watermarks; return the records applied."""
    fetcher.assign(copy.topic_partitions())
    highs = copy.start(fetcher)
    applied = 0
    deadline = time.monotonic() + timeout
    while any(fetcher.position(tp) < high for tp, high in highs.items()):
        assert time.monotonic() < deadline, "catching up stalled"
        by_partition: dict[int, list[Record]] = {}
        for record in fetcher.poll(timeout=0.05, max_records=500):
            by_partition.setdefault(record.partition, []).append(record)
        applied += copy.apply(by_partition)
    for tp in highs:
        copy.advance(tp, fetcher.position(tp))
    return applied


class Harness:
    """One worker's copy of the global table ``lookup``, restartable and wipeable."""

    def __init__(self, transport: Transport, store_url: str, partitions: int = PARTITIONS) -> None:
        self.transport = transport
        self.store_url = store_url
        self.partitions = partitions
        self.table: GlobalTable[str, Any] = GlobalTable("lookup", topic=TOPIC)
        self.copy: GlobalCopy | None = None
        self.fetcher = transport.fetcher(isolation_level="read_committed", reset="error")

    def open(self, page_size: int = 1000) -> GlobalCopy:
        store = open_store(self.store_url, "lookup", 0)
        self.copy = GlobalCopy("lookup", TOPIC, self.partitions, store, page_size=page_size)
        self.table.attach(self.copy)
        return self.copy

    def sync(self) -> int:
        assert self.copy is not None
        return catch_up(self.copy, self.fetcher)

    def close(self) -> None:
        if self.copy is not None:
            self.table.detach(self.copy)
            self.copy.close()
            self.copy = None

    def wipe(self) -> None:
        self.close()
        destroy_store(self.store_url, "lookup", 0)

    def shutdown(self) -> None:
        self.close()
        self.fetcher.close()


def j(value: Any) -> bytes:
    return json.dumps(value).encode()
