"""Helpers for transport tests: read a partition fully, wait for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable

from statestream.log import Transport
from statestream.log.base import IsolationLevel
from statestream.types import Record, TopicPartition


def read_partition(
    transport: Transport,
    tp: TopicPartition,
    start: int | None = None,
    isolation_level: IsolationLevel = "read_uncommitted",
    timeout: float = 30.0,
) -> list[Record]:
    """Return every record of ``tp`` from ``start`` (default: low watermark) to the high one.

    Stops on ``position >= high``, never on a record count, because compaction
    and transaction markers leave gaps.
    """
    fetcher = transport.fetcher(isolation_level=isolation_level)
    try:
        fetcher.assign([tp])
        low, high = fetcher.watermarks(tp)
        fetcher.seek(tp, low if start is None else start)
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while fetcher.position(tp) < high:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"reading {tp} stalled at {fetcher.position(tp)} of {high} "
                    f"after {len(records)} records"
                )
            records.extend(fetcher.poll(timeout=0.5))
        return records
    finally:
        fetcher.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
