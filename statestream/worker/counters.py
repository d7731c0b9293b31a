"""``PartitionCounters``: one partition's metrics as plain numbers, cheap to keep.

The worker's throughput is measured in records per second, so a record must
not pay for a metrics library: the partition thread adds to plain ints once
per batch (one poll's records of the partition, up to 2,000), never per
record, and :mod:`statestream.worker.metrics` reads them when it is scraped.

Processing time is measured per batch: a batch of ``n`` records that took
``t`` seconds adds ``n`` observations of ``t / n`` seconds to the histogram
(so its count is the records processed and its sum the exact time spent
processing them; the buckets show per-record times averaged over each batch).
Time parked in a commit round is not processing time and is left out.

Thread ownership: one writer at a time, the thread that owns the partition
(its partition thread; the poll thread during a commit round, for
:attr:`changelog`); the worker keeps one object per partition number for
its whole life, so the counters stay monotonic across revocations. Readers
on other threads (a scrape) read the ints without a lock: each is one
attribute read, and a scrape that misses the batch being added sees it next
time.
"""

from __future__ import annotations

import bisect

__all__ = ["PROCESSING_BUCKETS", "PartitionCounters"]

#: Upper bounds (seconds) of the per-record processing time histogram.
PROCESSING_BUCKETS: tuple[float, ...] = (
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class PartitionCounters:
    """The metrics of one partition number (see the module docstring)."""

    __slots__ = (
        "buckets",
        "changelog",
        "failed",
        "outputs",
        "partition",
        "processed",
        "processing_seconds",
    )

    def __init__(self, partition: int) -> None:
        self.partition = partition
        #: Records processed (whatever the outcome), duplicates dropped included.
        self.processed = 0
        #: Records whose processing raised (decode errors, user code), any policy.
        self.failed = 0
        #: Output records handed to the producer (ctx.send, group_by, dead letters).
        self.outputs = 0
        #: Changelog records written by commits, per table.
        self.changelog: dict[str, int] = {}
        #: Seconds spent processing records.
        self.processing_seconds = 0.0
        #: Records per processing-time bucket (the last one: above every bound).
        self.buckets = [0] * (len(PROCESSING_BUCKETS) + 1)

    def batch(self, records: int, seconds: float) -> None:
        """``records`` records were processed in ``seconds`` (one batch)."""
        if records <= 0:
            return
        self.processed += records
        self.processing_seconds += seconds
        self.buckets[bisect.bisect_left(PROCESSING_BUCKETS, seconds / records)] += records
