"""``WorkerMetrics``: a worker's Prometheus metrics, in a registry of its own.

Every :class:`~statestream.worker.runner.Worker` has one, as
``worker.metrics``: :attr:`WorkerMetrics.registry` is a
``prometheus_client.CollectorRegistry`` of that worker only (not the
process-wide default registry: several workers may run in one process, each
with its own numbers), and :meth:`WorkerMetrics.render` returns the text
exposition format (``prometheus_client.generate_latest``) served with
:data:`CONTENT_TYPE`. docs/operations.md lists every metric.

Cost: records are counted per partition in plain ints by the partition
thread, once per batch (:mod:`statestream.worker.counters`); a collector
turns them into metric families when the registry is scraped. Only rare
events use prometheus_client objects directly (a commit observes its
duration, a rebalance counts). Restore progress arrives as listener events
(:mod:`statestream.listeners`), one per batch of up to 10,000 changelog
records. Consumer lag is computed at scrape time from the high watermarks
:class:`~statestream.worker.lag.SourceWatermarks` read every few seconds
and the positions the partition threads reached.

Thread ownership: the listener methods run on the threads the listener API
names (partition threads, the poll thread); :meth:`partition` on the poll
thread; scrapes (:meth:`render`, or any use of the registry) on any thread.
Shared state is behind a lock, except the partition counters' ints (see
:mod:`statestream.worker.counters`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from statestream.listeners import (
    BatchRestored,
    CommitDone,
    PartitionsRevoked,
    RestoreEnded,
    RestoreStarted,
)
from statestream.types import TopicPartition
from statestream.worker.counters import PROCESSING_BUCKETS, PartitionCounters

__all__ = ["COMMIT_BUCKETS", "CONTENT_TYPE", "MetricsView", "WorkerMetrics", "render"]

#: The HTTP ``Content-Type`` of :meth:`WorkerMetrics.render`'s text.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Upper bounds (seconds) of the commit duration histogram.
COMMIT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class MetricsView(Protocol):
    """What the collector reads of a worker at scrape time (any thread; the worker is one)."""

    def partition_states(self) -> Mapping[int, str]:
        """Each active partition's state: ``"restoring"`` or ``"processing"``."""
        ...

    def consumer_lags(self) -> Mapping[TopicPartition, int]:
        """Per source partition held: high watermark minus the position reached."""
        ...

    def standby_lags(self) -> Sequence[tuple[str, int, int]]:
        """``(table, partition, offsets not applied)`` of each standby copy with a known lag."""
        ...


class WorkerMetrics:
    """One worker's metrics (see the module docstring)."""

    def __init__(self, view: MetricsView) -> None:
        #: This worker's registry: scrape it, or serve :meth:`render`.
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._partitions: dict[int, PartitionCounters] = {}
        # (table, partition) -> (offsets done, offsets remaining) of the last restore.
        self._restores: dict[tuple[str, int], tuple[int, int]] = {}
        self.commit_seconds = Histogram(
            "statestream_commit_seconds",
            "Duration of a commit (all four steps of the commit protocol), per commit of a "
            "round of partitions or of one partition",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.rebalances = Counter(
            "statestream_rebalances",
            "Rebalances this worker took part in (assignments received)",
            registry=self.registry,
        )
        self.rebuilds = Counter(
            "statestream_partition_rebuilds",
            "Partitions rebuilt in place from their changelogs after their store was found "
            "damaged while the worker ran",
            ["partition"],
            registry=self.registry,
        )
        self.registry.register(_Collector(self, view))

    def partition(self, number: int) -> PartitionCounters:
        """The counters of partition ``number`` (the same object for the worker's life)."""
        with self._lock:
            counters = self._partitions.get(number)
            if counters is None:
                counters = self._partitions[number] = PartitionCounters(number)
            return counters

    def render(self) -> bytes:
        """The registry in the text exposition format (serve it with :data:`CONTENT_TYPE`)."""
        return _generate_latest(self.registry)

    # -- listener methods (the threads of statestream.listeners) -------------------

    def on_restore_start(self, event: RestoreStarted) -> None:
        with self._lock:
            self._restores[(event.table, event.partition)] = (0, event.end - event.start)

    def on_batch_restored(self, event: BatchRestored) -> None:
        with self._lock:
            self._restores[(event.table, event.partition)] = (event.done, event.remaining)

    def on_restore_end(self, event: RestoreEnded) -> None:
        with self._lock:
            if event.completed:
                self._restores[(event.table, event.partition)] = (event.position - event.start, 0)
            else:  # the partition left this worker (or the worker stops)
                self._restores.pop((event.table, event.partition), None)

    def on_commit(self, event: CommitDone) -> None:
        self.commit_seconds.observe(event.seconds)
        for (table, number), records in event.changelog_records.items():
            written = self.partition(number).changelog
            written[table] = written.get(table, 0) + records

    def on_revoked(self, event: PartitionsRevoked) -> None:
        gone = set(event.partitions)
        with self._lock:
            for key in [k for k in self._restores if k[1] in gone]:
                del self._restores[key]

    # -- for the collector ---------------------------------------------------------

    def _snapshot(self) -> tuple[list[PartitionCounters], dict[tuple[str, int], tuple[int, int]]]:
        with self._lock:
            return sorted(self._partitions.values(), key=_number), dict(self._restores)


def render(registry: CollectorRegistry) -> bytes:
    """Any registry in the text exposition format (``prometheus_client.generate_latest``)."""
    return _generate_latest(registry)


def _number(counters: PartitionCounters) -> int:
    return counters.partition


class _Collector(Collector):
    """Builds the metric families of the plain counters and the worker's state at scrape time."""

    def __init__(self, metrics: WorkerMetrics, view: MetricsView) -> None:
        self._metrics = metrics
        self._view = view

    def collect(self) -> Iterator[Metric]:
        partitions, restores = self._metrics._snapshot()
        yield from _partition_counters(partitions)
        yield _processing_histogram(partitions)
        done = GaugeMetricFamily(
            "statestream_restore_offsets_done",
            "Changelog offsets replayed by the current (or last) restore of a table partition",
            labels=["table", "partition"],
        )
        remaining = GaugeMetricFamily(
            "statestream_restore_offsets_remaining",
            "Changelog offsets left to replay by the current restore of a table partition "
            "(0 once restored)",
            labels=["table", "partition"],
        )
        for (table, number), (offsets_done, offsets_left) in sorted(restores.items()):
            done.add_metric([table, str(number)], offsets_done)
            remaining.add_metric([table, str(number)], offsets_left)
        yield done
        yield remaining
        states = GaugeMetricFamily(
            "statestream_partitions",
            "Source partitions assigned to this worker, by state",
            labels=["state"],
        )
        held = list(self._view.partition_states().values())
        for state in ("restoring", "processing"):
            states.add_metric([state], held.count(state))
        yield states
        standby = GaugeMetricFamily(
            "statestream_standby_lag_offsets",
            "Changelog offsets a standby copy has not applied yet (as of its last "
            "high-watermark read)",
            labels=["table", "partition"],
        )
        for table, number, lag in self._view.standby_lags():
            standby.add_metric([table, str(number)], lag)
        yield standby
        consumer = GaugeMetricFamily(
            "statestream_consumer_lag_records",
            "Source records not processed yet: the partition's high watermark (read every few "
            "seconds) minus the worker's position in it",
            labels=["topic", "partition"],
        )
        for tp, lag in sorted(self._view.consumer_lags().items()):
            consumer.add_metric([tp.topic, str(tp.partition)], lag)
        yield consumer


def _partition_counters(partitions: Sequence[PartitionCounters]) -> Iterator[Metric]:
    processed = CounterMetricFamily(
        "statestream_records_processed",
        "Source records processed (failed ones and dropped duplicates included)",
        labels=["partition"],
    )
    failed = CounterMetricFamily(
        "statestream_records_failed",
        "Source records whose processing raised (decode errors, exceptions of processors), "
        "whatever the error policy then did",
        labels=["partition"],
    )
    outputs = CounterMetricFamily(
        "statestream_output_records",
        "Output records handed to the producer (ctx.send, ctx.group_by, dead letters)",
        labels=["partition"],
    )
    changelog = CounterMetricFamily(
        "statestream_changelog_records",
        "Changelog records written by commits",
        labels=["table", "partition"],
    )
    for counters in partitions:
        label = [str(counters.partition)]
        processed.add_metric(label, counters.processed)
        failed.add_metric(label, counters.failed)
        outputs.add_metric(label, counters.outputs)
        for table, records in sorted(dict(counters.changelog).items()):
            changelog.add_metric([table, str(counters.partition)], records)
    yield processed
    yield failed
    yield outputs
    yield changelog


def _processing_histogram(partitions: Sequence[PartitionCounters]) -> Metric:
    totals = [0] * (len(PROCESSING_BUCKETS) + 1)
    seconds = 0.0
    for counters in partitions:
        seconds += counters.processing_seconds
        for index, count in enumerate(list(counters.buckets)):
            totals[index] += count
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*PROCESSING_BUCKETS, float("inf")), totals, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(
        "statestream_record_processing_seconds",
        "Time processing one source record took, averaged over each batch a partition "
        "thread took from its queue (commit rounds left out)",
        buckets=buckets,
        sum_value=seconds,
    )
