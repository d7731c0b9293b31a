"""Helpers for table tests: a restartable table manager over one transport."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from statestream.log import Transport
from statestream.tables import Table, TableManager
from statestream.types import Record, TopicPartition

SOURCE = "stream"


class Node:
    """One worker's table manager for a single partition, restartable after a crash.

    ``tables`` builds fresh ``Table`` objects for every incarnation, as a new
    process would.
    """

    def __init__(
        self,
        transport: Transport,
        store_dir: Path,
        tables: Callable[[], list[Table[Any, Any]]],
        *,
        app_id: str = "app",
        partition: int = 0,
        partitions: int = 1,
    ) -> None:
        self.transport = transport
        self.store_dir = store_dir
        self.make_tables = tables
        self.app_id = app_id
        self.partition = partition
        self.partitions = partitions
        self.manager: TableManager | None = None
        self.tables: dict[str, Table[Any, Any]] = {}

    def start(self, committed: Mapping[str, int | None], **options: Any) -> TableManager:
        """Build a manager, restore the partition as of ``committed`` and bind it."""
        tables = self.make_tables()
        self.tables = {t.name: t for t in tables}
        manager = TableManager(
            self.app_id, tables, self.transport, f"leveldb://{self.store_dir}", **options
        )
        manager.ensure_changelogs(self.partitions)
        manager.open_partition(self.partition)
        manager.restore_partition(self.partition, dict(committed))
        manager.bind(self.partition)
        self.manager = manager
        return manager

    def crash(self, wipe: bool = False) -> None:
        """Abandon the manager (uncommitted work is lost); optionally wipe the local stores."""
        if self.manager is not None:
            self.manager.close()
            self.manager = None
        if wipe and self.store_dir.exists():
            shutil.rmtree(self.store_dir)

    def table(self, name: str) -> Table[Any, Any]:
        return self.tables[name]


def read_all(transport: Transport, tp: TopicPartition, timeout: float = 30.0) -> list[Record]:
    """Every record of ``tp`` from the low to the high watermark (gap-safe)."""
    fetcher = transport.fetcher(isolation_level="read_committed", reset="earliest")
    try:
        fetcher.assign([tp])
        low, high = fetcher.watermarks(tp)
        fetcher.seek(tp, low)
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while fetcher.position(tp) < high:
            assert time.monotonic() < deadline, f"reading {tp} stalled"
            records.extend(fetcher.poll(timeout=0.2))
        return records
    finally:
        fetcher.close()


class Crash(Exception):
    """Raised by fault injection to stop a commit between two steps."""


def crash_commit(
    manager: TableManager,
    partition: int,
    after_step: int,
    commit_source: Callable[[], None] = lambda: None,
) -> None:
    """Run the commit coordinator for ``partition`` and crash right after ``after_step``.

    1: changes collected, nothing produced; 2: changelog flushed, source
    offsets not committed; 3: source offsets committed (``commit_source``
    runs), stores not written. The crash is an exception injected into the
    coordinator's next step; the caller then abandons the manager.
    """
    from statestream.tables.commit import CommitCoordinator, CommitRequest

    def crash(*_args: Any) -> None:
        raise Crash(f"crash after step {after_step}")

    def source(_offsets: Mapping[TopicPartition, int]) -> None:
        if after_step == 2:
            crash()
        commit_source()

    saved = {name: getattr(manager, name) for name in ("send_changelogs", "apply")}
    if after_step == 1:
        manager.send_changelogs = crash  # type: ignore[method-assign]
    elif after_step == 3:
        manager.apply = crash  # type: ignore[method-assign]
    try:
        CommitCoordinator(manager, manager.producer).commit([CommitRequest(partition, {})], source)
    except Crash:
        pass
    else:
        raise AssertionError(f"the commit did not reach the crash after step {after_step}")
    finally:
        for name, method in saved.items():
            setattr(manager, name, method)
