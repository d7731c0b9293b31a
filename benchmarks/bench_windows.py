"""Windowed tables: a counting worker with plain, tumbling and hopping tables; expiry at scale.

Run::

    .venv/bin/python benchmarks/bench_windows.py [--quick] [--bootstrap HOST:PORT | --kafka]
        [--sentences N] [--partitions P] [--span-minutes M] [--commit-interval S]
        [--repeat R] [--repeat-hopping R] [--in-process-sentences N] [--commit-every C]
        [--expire-windows W] [--live-windows L] [--expiry-batch B] [--parts LIST]
        [--profile] [--timeout S] [--json]

Three parts (``--parts worker,in-process,expiry``), each run in spawned
child processes (fresh interpreter, fresh LevelDB directories, fresh
topics), all in the same run so the ratios compare figures taken side by
side. ``--quick`` is a smoke run of under a minute (1,200 sentences, 50,000
windows to expire, one run each).

**worker**: ``Worker(app).run()`` of one processor that counts the words of
each sentence on the partition the sentence arrived on (the ``count only``
app of bench_worker.py: no re-keying, no outputs; LevelDB stores, commit
interval S = 1 s), on the same input with three tables:

``plain``
    ``Table("counts", default=int)``; ``self.counts[word] += 1`` per word.
``tumbling``
    ``Table("counts", default=int).tumbling(60_000, retention=60_000)``: one
    window per write.
``hopping``
    ``Table("counts", default=int).hopping(size=60_000, step=6_000,
    retention=60_000)``: every write updates ten windows.

Grace is 0 (the default); retention is 60 s instead of the default day so
that windows expire during the run. The processor counts the windows it is
told of in ``on_window_close`` (and the sum of their values).

The input: N sentences (default 180,000) of 6 to 10 words from a vocabulary
of V = 10,000 words with Zipf-like frequencies (bench_worker.py's generator),
JSON strings without key, sentence ``i`` to partition ``i % P`` (P = 4).
Event time is the record's timestamp, set by the producer: sentence ``i``
gets ``base + i * span // N`` with ``span`` = M minutes (default 3) and
``base`` = a minute boundary M minutes before the produce (timestamps end
about now, so log retention keeps them). They advance evenly and in order
within each partition, so no record is late, and stream time moves through
M minutes during a run: 3 tumbling windows per key, 2 of which close and 1
expires; a hopping window starts, and one closes, every 6 s of event time.

The density decides how many updates share a window, and so what a window
costs per update. The default, 1,000 sentences (8,000 words) per second of
event time, is a modest production stream: about 15,000 sentences per
partition and minute, a dozen updates per tumbling window on average (the
rare words of the Zipf tail get one or two). A benchmark of throughput
measures a stream fast enough for throughput to matter; a stream of tens of
sentences per second keeps up whatever the table. Sparser input shows the
per-window cost: ``--sentences 12000 --span-minutes 5`` (40 sentences per
second, under three updates per window) is the sparse figure in
benchmarks/README.md.

Every variant runs R = 3 times (best run reported; ``--repeat-hopping``
sets hopping's count apart), in alternating order.
The input goes to the embedded log (``embedded://<tmp>/log``) and, when a
broker is given (``--bootstrap HOST:PORT``, or ``--kafka`` to start a
throwaway one with scripts/kafka_broker.py), to Kafka too; each variant runs
on each transport. The clock runs from the first partition ready (the
processor's first ``on_assigned``) to the last final commit (its last
``on_revoked``), as in bench_worker.py. Every run checks its result from the
LevelDB stores after the worker stopped: plain counts add up to the words
produced; for windowed tables, the values reported by ``on_window_close``
plus the values of the windows still open add up to words x windows per
word (1 or 10). Reported per variant: sentences/s, words/s (table writes),
window updates/s (words/s x windows per word; for plain, key updates), the
ratio of sentences/s to plain's (targets: tumbling >= 70%, hopping >= 20%),
CPU time per sentence (all threads), the shares of the wall time spent in
commits (``statestream_commit_seconds``) and in the garbage collector
(timed through ``gc.callbacks``; ``--gc-threshold`` runs the workers with
another ``gc_threshold``, 0 for Python's own pace),
changelog records written, windows created, closed and expired (closed and
no longer stored).

**in-process**: the shard-level cost without the log's consumer and the
worker: a ``TableManager`` (embedded log for the changelog, LevelDB store,
one partition) driven directly: per sentence ``begin_record``, the event
source set to the sentence's message, ``table[word] += 1`` per word,
``take_closed()`` (windowed), and ``manager.commit`` every C sentences
(default 1,000), at the worker's garbage-collector pace (``gc_threshold``'s
default). Its input is one partition's share of the worker input
(N / P sentences over the same span, so the same density); runs are
repeated like the worker's (best of R). The share of the time
spent inside ``manager.commit`` is shown. Note that the worker's commits
come every S seconds, so a slower table commits fewer records at a time
there, while here every variant commits every C sentences. ``--profile`` runs the
tumbling and hopping loops once more under cProfile and prints the functions
that dominate.

**expiry**: one tumbling table (size 60 s, grace 10 min, retention 10 min)
on a LevelDB store wrapped to count the rows its ``iterate()`` yields. Built
through the table, one record per window, committed every 50,000 records:
W windows (default 1,000,000: 100,000 keys x 10 windows in the first 10
minutes of event time), then L live windows (default 100,000 keys, one
window each, at minute 20: this record closes the W old windows, all at
once: they are due at minutes 1 to 10 and the grace is 10 minutes). Stream
time then sits below the old windows' expiry (minute 21 onwards) and the
live windows are open. One more record at minute 30 expires all W old
windows (due + grace + retention <= 30 minutes) and leaves the live ones
open (they close at minute 31). Timed: that record's processing (the
expiry scan and W x 2 buffered tombstones) and the commit that writes them
(changelog, then the store batch), with the rows each ``iterate()`` of the
trigger yielded, split into expired index rows, live index rows and
others, so it shows whether expiry scanned live windows. ``--profile`` also
builds a smaller one (200,000 + 20,000 windows) and profiles its trigger
record and commit.

Not measured: sliding and session windows, final topics, restores.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import shlex
import shutil
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from _shared import load_broker_module, package_version, peak_rss_kb  # benchmarks/ on sys.path
from bench_worker import create_topics, in_child, sentences

TABLE = "counts"
SOURCE = "bench-src"
SIZE_MS = 60_000
STEP_MS = 6_000
RETENTION_MS = 60_000
STATUS_INTERVAL_S = 0.1
#: Windows per table write, and how the variant reads in the report.
VARIANTS: dict[str, tuple[int, str]] = {
    "plain": (1, 'Table("counts", default=int)'),
    "tumbling": (1, f".tumbling({SIZE_MS:_}, retention={RETENTION_MS:_})"),
    "hopping": (SIZE_MS // STEP_MS, f".hopping(size={SIZE_MS:_}, step={STEP_MS:_}, ...)"),
}
#: (variant, target ratio of its sentences/s to plain's)
TARGETS = {"tumbling": 0.70, "hopping": 0.20}
_OFFSET = 1 << 63
_time = struct.Struct(">Q")


def make_table(variant: str) -> Any:
    from statestream import Table

    table: Any = Table(TABLE, default=int)
    if variant == "tumbling":
        return table.tumbling(SIZE_MS, retention=RETENTION_MS)
    if variant == "hopping":
        return table.hopping(size=SIZE_MS, step=STEP_MS, retention=RETENTION_MS)
    return table


# -- the input ------------------------------------------------------------------------


def timed_sentences(n: int, vocab: int, base: int, span: int) -> Iterator[tuple[str, int, int]]:
    """Yield ``(sentence, words, timestamp)``: timestamps advance evenly over ``span`` ms."""
    for i, sentence in enumerate(sentences(n, vocab)):
        yield sentence, sentence.count(" ") + 1, base + i * span // n


def event_base(span: int) -> int:
    """The minute ``span`` ms before now: timestamps end about now, so retention keeps them."""
    now = int(time.time() * 1000)
    return (now - span) // 60_000 * 60_000


def produce(url: str, bootstrap: str | None, topic: str, args: argparse.Namespace) -> dict:
    """Create the source topic and fill it (kafka-python on Kafka, the transport's producer
    on the embedded log), with the timestamps; untimed for the figures."""
    from statestream.log.base import TopicSpec

    n, p = args.sentences, args.partitions
    create_topics(url, [TopicSpec(topic, p, cleanup_policy="delete")])
    started = time.perf_counter()
    words = 0
    records = timed_sentences(n, args.vocabulary, args.base, args.span_ms)
    if bootstrap is not None:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks=1,
            linger_ms=20,
            batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
            enable_idempotence=False,
        )
        try:
            for i, (sentence, count, ts) in enumerate(records):
                value = json.dumps(sentence, ensure_ascii=False).encode("utf-8")
                producer.send(topic, value=value, partition=i % p, timestamp_ms=ts)
                words += count
            producer.flush()
        finally:
            producer.close()
    else:
        from statestream.log import open_transport

        transport = open_transport(url)
        try:
            out = transport.producer()
            try:
                for i, (sentence, count, ts) in enumerate(records):
                    value = json.dumps(sentence, ensure_ascii=False).encode("utf-8")
                    out.send(topic, None, value, partition=i % p, timestamp=ts)
                    words += count
                out.flush()
            finally:
                out.close()
        finally:
            transport.close()
    return {"words": words, "seconds": time.perf_counter() - started}


# -- reading results back -------------------------------------------------------------


def topic_records(transport: Any, topic: str, partitions: int) -> int:
    """Records in ``topic`` (the sum of its partitions' high watermarks), on an open transport."""
    from statestream.types import TopicPartition

    fetcher = transport.fetcher(isolation_level="read_uncommitted", reset="earliest")
    try:
        return sum(fetcher.watermarks(TopicPartition(topic, i))[1] for i in range(partitions))
    finally:
        fetcher.close()


def window_census(store: Any, grace: int = 0, hopping: bool = False) -> dict[str, int]:
    """Windows in a windowed table's store (layout: docs of statestream.tables.windowed_shard):
    open ones (and the sum of their values), closed ones still kept, windows the time index names.

    A hopping table stores one slice per step: "open" counts its open windows,
    "open_sum" adds each slice's value once per open window holding it, and
    "closed_kept" counts the slices whose windows all closed.
    """
    if hopping:
        return _slice_census(store, grace)
    from statestream.serde import get_codec
    from statestream.tables.windowed_shard import TaggedCodec

    codec = TaggedCodec(get_codec("json"))
    raw = store.get(b"m")
    meta = json.loads(bytes(codec.decode(raw))) if raw is not None else {}
    st = meta.get("stream_time")
    census = {"open": 0, "open_sum": 0, "closed_kept": 0, "index": 0}
    for kb, value in store.iterate(prefix=b"w"):
        end = _time.unpack_from(kb, len(kb) - 8)[0] - _OFFSET
        if st is None or st < end + grace:
            census["open"] += 1
            census["open_sum"] += int(codec.decode(value))
        else:
            census["closed_kept"] += 1
    census["index"] = index_windows(store)
    return census


def index_windows(store: Any) -> int:
    """The windows the time index names: one per row, or each a bucket row lists."""
    from statestream.tables.window_layout import BUCKET, unpack_bucket

    return sum(
        len(unpack_bucket(value)) if kb[9:13] == BUCKET else 1
        for kb, value in store.iterate(prefix=b"e")
    )


def _slice_census(store: Any, grace: int) -> dict[str, int]:
    from statestream.serde import get_codec
    from statestream.tables.windowed_shard import TaggedCodec

    codec = TaggedCodec(get_codec("json"))
    raw = store.get(b"m")
    meta = json.loads(bytes(codec.decode(raw))) if raw is not None else {}
    st = meta.get("stream_time")
    census = {"open": 0, "open_sum": 0, "closed_kept": 0, "index": 0}
    open_windows: set[tuple[bytes, int]] = set()
    for kb, value in store.iterate(prefix=b"w"):
        start = _time.unpack_from(kb, len(kb) - 16)[0] - _OFFSET
        # Windows [a, a + SIZE) holding the slice: a in (start - SIZE, start], by STEP.
        still_open = [
            a
            for a in range(start - SIZE_MS + STEP_MS, start + 1, STEP_MS)
            if st is None or st < a + SIZE_MS + grace
        ]
        if still_open:
            open_windows.update((kb[:-16], a) for a in still_open)
            census["open_sum"] += int(codec.decode(value)) * len(still_open)
        else:
            census["closed_kept"] += 1
    census["open"] = len(open_windows)
    census["index"] = index_windows(store)
    return census


def plain_census(store: Any) -> dict[str, int]:
    total = keys = 0
    for _, value in store.iterate():
        total += int(value)
        keys += 1
    return {"sum": total, "keys": keys}


def check_windows(result: dict, words: int, per_word: int) -> list[str]:
    """Problems with a windowed result: closed + open values must equal the updates made."""
    expected = words * per_word
    got = result["closed_sum"] + result["open_sum"]
    if got != expected:
        return [
            f"window values add up to {got:,} (closed {result['closed_sum']:,} + open "
            f"{result['open_sum']:,}), expected {expected:,} = {words:,} words x {per_word}"
        ]
    return []


# -- part 1: the worker ---------------------------------------------------------------

# Times of the processors' on_assigned / on_revoked hooks, and per partition
# [windows closed, sum of their values] (partition threads; one key each).
_HOOK_TIMES: dict[str, list[float]] = {"assigned": [], "revoked": []}
_CLOSED: dict[int, list[int]] = {}


def _count_app(
    app_id: str,
    topic: str,
    url: str,
    store_dir: str,
    interval: float,
    variant: str,
    gc_threshold: int | None,
):
    from statestream import App, Processor

    class WordCount(Processor):
        """Counts the words where the sentence arrives (bench_worker's ``count only``)."""

        topics = (topic,)
        counts = make_table(variant)

        def process(self, message: Any, ctx: Any) -> None:
            for word in str(message.value).lower().split():
                self.counts[word] += 1

        def on_window_close(self, key: Any, window: Any, value: Any) -> None:
            closed = self.closed
            closed[0] += 1
            closed[1] += value

        def on_assigned(self, partition: int) -> None:
            self.closed = [0, 0]
            _HOOK_TIMES["assigned"].append(time.perf_counter())

        def on_revoked(self, partition: int) -> None:
            _HOOK_TIMES["revoked"].append(time.perf_counter())
            total = _CLOSED.setdefault(partition, [0, 0])
            total[0] += self.closed[0]
            total[1] += self.closed[1]

    return App(
        app_id,
        processors=[WordCount],
        broker_url=url,
        store_url=f"leveldb://{store_dir}",
        data_dir=store_dir,
        commit_interval=interval,
        gc_threshold=gc_threshold,
    )


class _CollectorClock:
    """Seconds the garbage collector ran, summed through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1


def run_worker(
    url: str,
    topic: str,
    store_dir: str,
    records: int,
    partitions: int,
    interval: float,
    timeout: float,
    variant: str,
    gc_threshold: int | None,
    progress: Any,
) -> dict:
    """Child: run the counting app with ``variant``'s table until it processed every record.

    ``gc_threshold`` None runs the worker with its default collector pace.
    """
    from statestream.log import open_transport
    from statestream.stores.leveldb import LevelDBStore
    from statestream.worker.runner import Worker, WorkerStatus

    app_id = f"bench-windows-{variant}-{uuid.uuid4().hex[:8]}"
    app = _count_app(app_id, topic, url, store_dir, interval, variant, gc_threshold)
    deadline = time.monotonic() + timeout
    timed_out = False

    def on_status(status: WorkerStatus) -> None:
        nonlocal timed_out
        processed = status.counters.get("processed", 0)
        progress[0] = processed
        if processed >= records:
            worker.request_stop()
        elif time.monotonic() > deadline:
            timed_out = True
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=STATUS_INTERVAL_S)
    before = peak_rss_kb()
    clock = _CollectorClock()
    gc.callbacks.append(clock)
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        worker.run()
    finally:
        gc.callbacks.remove(clock)
    ended = time.perf_counter()
    cpu = time.process_time() - cpu_started
    counters = worker.counters()
    if timed_out:
        raise RuntimeError(f"timed out after {timeout:.0f} s with counters {counters}")
    result: dict[str, Any] = {
        "seconds": max(_HOOK_TIMES["revoked"]) - min(_HOOK_TIMES["assigned"]),
        "wall": ended - started,
        "cpu": cpu,
        "gc_seconds": clock.seconds,
        "commit_seconds": worker.metrics.registry.get_sample_value("statestream_commit_seconds_sum")
        or 0.0,
        "gc_collections": clock.collections,
        "rebalanced": len(_HOOK_TIMES["assigned"]) > partitions,
        "records": counters.get("processed", 0),
        "commits": counters.get("commits", 0),
        "rss_before_kb": before,
        "rss_peak_kb": peak_rss_kb(),
    }
    transport = open_transport(url)
    try:
        result["changelog_records"] = topic_records(
            transport, f"{app_id}-{TABLE}-changelog", partitions
        )
    finally:
        transport.close()
    totals = {"sum": 0, "keys": 0, "open": 0, "open_sum": 0, "closed_kept": 0, "index": 0}
    for partition in range(partitions):
        store = LevelDBStore(store_dir, TABLE, partition)
        try:
            found = (
                plain_census(store)
                if variant == "plain"
                else window_census(store, hopping=variant == "hopping")
            )
        finally:
            store.close()
        for name, value in found.items():
            totals[name] += value
    result.update(totals)
    result["closed"] = sum(c[0] for c in _CLOSED.values())
    result["closed_sum"] = sum(c[1] for c in _CLOSED.values())
    return result


# -- part 2: in process ---------------------------------------------------------------


def run_in_process(*args: Any) -> dict:
    """Child: :func:`_drive_manager` at the worker's garbage-collector pace (gc_threshold's
    default: statestream.worker.collector), so its figures compare with the worker's."""
    from statestream.worker.collector import DEFAULT_GC_THRESHOLD, CollectorPace

    with CollectorPace(DEFAULT_GC_THRESHOLD):
        return _drive_manager(*args)


def _drive_manager(
    variant: str,
    n: int,
    vocab: int,
    base: int,
    span: int,
    commit_every: int,
    profile: bool,
    progress: Any,
) -> dict:
    """Child: drive a TableManager (one partition, LevelDB store) record by record."""
    from statestream.context import Message
    from statestream.log import open_transport
    from statestream.tables.manager import TableManager

    root = tempfile.mkdtemp(prefix="statestream-bench-windows-")
    try:
        table = make_table(variant)
        transport = open_transport(f"embedded://{root}/log")
        manager = TableManager("bench-inproc", [table], transport, f"leveldb://{root}/stores")
        manager.ensure_changelogs(1)
        manager.open_partition(0)
        manager.restore_partition(0, {SOURCE: None})
        manager.bind(0)
        current: list[Any] = [None]
        windowed = variant != "plain"
        if windowed:
            manager.set_event_source(0, lambda: current[0])
            shard = manager.windowed(TABLE, 0)
        work = [
            (Message(SOURCE, 0, i, None, s, ts), s.lower().split())
            for i, (s, _, ts) in enumerate(timed_sentences(n, vocab, base, span))
        ]
        words = sum(len(w) for _, w in work)
        commit = manager.commit
        begin = manager.begin_record
        closed = closed_sum = 0
        commit_seconds = 0.0
        profiler = cProfile.Profile() if profile else None
        perf = time.perf_counter
        gc.collect()
        if profiler is not None:
            profiler.enable()
        started = perf()
        for i, (message, split) in enumerate(work):
            current[0] = message
            begin(0, SOURCE, i)
            for word in split:
                table[word] += 1
            if windowed:
                for _, _, value in shard.take_closed():
                    closed += 1
                    closed_sum += value
            if i % commit_every == commit_every - 1:
                at = perf()
                commit(0, lambda: None)
                commit_seconds += perf() - at
                progress[0] = i + 1
        at = perf()
        commit(0, lambda: None)
        ended = perf()
        if profiler is not None:
            profiler.disable()
        commit_seconds += ended - at
        store = manager.shard(TABLE, 0).store
        census = (
            window_census(store, hopping=variant == "hopping") if windowed else plain_census(store)
        )
        changelog = topic_records(transport, manager.changelog_topic(TABLE), 1)
        manager.close()
        transport.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result: dict[str, Any] = {
        "seconds": ended - started,
        "commit_seconds": commit_seconds,
        "records": n,
        "words": words,
        "closed": closed,
        "closed_sum": closed_sum,
        "changelog_records": changelog,
        "rss_peak_kb": peak_rss_kb(),
        **census,
    }
    if profiler is not None:
        result["profile"] = profile_text(profiler, ended - started)
    return result


def profile_text(profiler: cProfile.Profile, seconds: float, top: int = 22) -> str:
    """The functions with the most own time, with their share of the profiled time."""
    stats = pstats.Stats(profiler)
    rows = []
    total = 0.0
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += own
        short = path.split("/work/main/", 1)[-1].split("site-packages/", 1)[-1]
        rows.append((own, cumulative, calls, f"{short}:{line}({name})"))
    out = io.StringIO()
    out.write(f"  profiled {seconds:.1f} s (own time of all functions {total:.1f} s)\n")
    out.write(f"  {'own s':>7} {'share':>6} {'cum s':>7} {'cum %':>6} {'calls':>9}  function\n")
    for own, cumulative, calls, where in sorted(rows, reverse=True)[:top]:
        out.write(
            f"  {own:>7.2f} {own / total:>6.1%} {cumulative:>7.2f} {cumulative / total:>6.1%} "
            f"{calls:>9}  {where}\n"
        )
    out.write("  by cumulative time (entry points of the write and commit paths):\n")
    for _own, cumulative, calls, where in sorted(rows, key=lambda r: -r[1])[:top]:
        if "bench_windows" in where or "{" in where:
            continue
        out.write(f"  {cumulative:>7.2f} {cumulative / total:>6.1%} {calls:>9}  {where}\n")
    return out.getvalue()


# -- part 3: expiry of a million closed windows ---------------------------------------


def _counting_store(data_dir: str, table: str) -> Any:
    from statestream.stores.leveldb import LevelDBStore

    class CountingStore(LevelDBStore):
        """A LevelDBStore that, while ``boundary`` is set, records every iterate() call and
        classifies its rows: index rows below ``boundary`` (due at or before the expiry
        cutoff: expired), index rows at or above it (live), and other keys."""

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.scans: list[dict[str, Any]] = []
            self.boundary: bytes | None = None
            self.write_seconds = 0.0

        def iterate(
            self,
            start: bytes | None = None,
            end: bytes | None = None,
            prefix: bytes | None = None,
            reverse: bool = False,
        ) -> Iterator[tuple[bytes, bytes]]:
            rows = super().iterate(start, end, prefix, reverse)
            if self.boundary is None:
                return rows
            scan = {"start": start, "end": end, "rows": 0, "expired": 0, "live": 0, "other": 0}
            self.scans.append(scan)
            return self._counted(rows, scan, self.boundary)

        @staticmethod
        def _counted(rows: Iterator[tuple[bytes, bytes]], scan: dict, boundary: bytes) -> Iterator:
            # Cheap per row (a count and a bytes comparison): the trigger's timing includes it.
            n = expired = live = 0
            try:
                for kb, value in rows:
                    n += 1
                    if kb < boundary:  # b"e" is the lowest tag: below it, only index rows
                        expired += 1
                    elif kb < b"f":
                        live += 1
                    yield kb, value
            finally:
                scan.update(rows=n, expired=expired, live=live, other=n - expired - live)

        def write(self, *args: Any, **kwargs: Any) -> None:
            at = time.perf_counter()
            super().write(*args, **kwargs)
            self.write_seconds += time.perf_counter() - at

    return CountingStore(data_dir, table, 0)


def run_expiry(*args: Any) -> dict:
    """Child: :func:`_expire_at_scale` at the worker's garbage-collector pace."""
    from statestream.worker.collector import DEFAULT_GC_THRESHOLD, CollectorPace

    with CollectorPace(DEFAULT_GC_THRESHOLD):
        return _expire_at_scale(*args)


def _expire_at_scale(expired: int, live: int, batch: int, profile: bool, progress: Any) -> dict:
    """Child: build ``expired`` closed windows past retention and ``live`` open ones, then
    expire the former with one record and time it (see the module docstring)."""
    from statestream import Table
    from statestream.context import Message
    from statestream.log import open_transport
    from statestream.tables.manager import TableManager

    name, per_key = "expiry", 10
    grace = retention = 10 * SIZE_MS
    keys = expired // per_key
    root = tempfile.mkdtemp(prefix="statestream-bench-expiry-")
    result: dict[str, Any] = {"expired_windows": keys * per_key, "live_windows": live}
    try:
        table = Table(name, default=int).tumbling(SIZE_MS, grace=grace, retention=retention)
        url = f"embedded://{root}/log"
        transport = open_transport(url)
        store = _counting_store(f"{root}/stores", name)
        manager = TableManager("bench-expiry", [table], transport, f"leveldb://{root}/stores")
        manager.ensure_changelogs(1)
        manager.open_partition(0, {name: store})
        manager.restore_partition(0, {SOURCE: None})
        manager.bind(0)
        changelog = manager.changelog_topic(name)
        current: list[Any] = [None]
        manager.set_event_source(0, lambda: current[0])
        shard = manager.windowed(name, 0)
        offset = 0
        closed = 0
        perf = time.perf_counter

        def write(key: str, ts: int) -> None:
            nonlocal offset, closed
            current[0] = Message(SOURCE, 0, offset, key, None, ts)
            manager.begin_record(0, SOURCE, offset)
            table[key] += 1
            closed += len(shard.take_closed())
            offset += 1
            if offset % batch == 0:
                manager.commit(0, lambda: None)
                progress[0] = offset

        # Old windows: minutes 0..9, in time order (stream time stays below minute 10).
        started = perf()
        for w in range(per_key):
            for j in range(keys):
                write(f"old{j:07d}", w * SIZE_MS + j * SIZE_MS // keys)
        manager.commit(0, lambda: None)
        result["build_old_seconds"] = perf() - started
        # Live windows: minute 20 (its first record closes every old window: due + grace).
        at = perf()
        write("live0000000", 20 * SIZE_MS)
        while shard.backlog:  # the rest of the closes, a budget per write
            write("live0000000", 20 * SIZE_MS)
        result["close_old_seconds"] = perf() - at
        result["closed_by_first_live"] = closed
        for j in range(1, live):
            write(f"live{j:07d}", 20 * SIZE_MS + j * SIZE_MS // live)
        manager.commit(0, lambda: None)
        result["build_seconds"] = perf() - started
        result["build_records"] = offset
        result["stream_time_before"] = shard.stream_time()
        result["before"] = window_census(store, grace)
        result["changelog_before"] = topic_records(transport, changelog, 1)

        # The trigger: minute 30 expires everything due at or before minute 10.
        trigger = 30 * SIZE_MS
        cutoff = trigger - grace - retention
        store.boundary = b"e" + _time.pack(cutoff + 1 + _OFFSET)
        store.scans.clear()
        store.write_seconds = 0.0
        gc.collect()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        at = perf()
        # One write closes and deletes at most a budget of windows (10,000 of
        # each); the writes after it go on where it stopped, at the same time.
        closed_by_trigger = 0
        trigger_records = 0
        while trigger_records == 0 or shard.backlog:
            current[0] = Message(SOURCE, 0, offset, "trigger", None, trigger)
            manager.begin_record(0, SOURCE, offset)
            table["trigger"] += 1
            closed_by_trigger += len(shard.take_closed())
            offset += 1
            trigger_records += 1
        processed = perf()
        result["trigger_records"] = trigger_records
        manager.commit(0, lambda: None)
        ended = perf()
        if profiler is not None:
            profiler.disable()
            result["profile"] = profile_text(profiler, ended - at)
        result["process_seconds"] = processed - at
        result["commit_seconds"] = ended - processed
        result["store_write_seconds"] = store.write_seconds
        result["closed_by_trigger"] = closed_by_trigger
        result["scans"] = [
            {k: (v.hex() if isinstance(v, bytes) else v) for k, v in s.items()} for s in store.scans
        ]
        store.boundary = None
        result["after"] = window_census(store, grace)
        result["changelog_after"] = topic_records(transport, changelog, 1)
        result["rss_peak_kb"] = peak_rss_kb()
        manager.close()
        transport.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


# -- the report -----------------------------------------------------------------------


def worker_line(label: str, variant: str, res: dict, plain: dict | None, words: int) -> str:
    per_word = VARIANTS[variant][0]
    rate = res["records"] / res["seconds"]
    word_rate = words / res["seconds"]
    ratio = "" if plain is None else f"{rate / (plain['records'] / plain['seconds']):.0%}"
    windows = "" if variant == "plain" else f"{res['closed'] + res['open']:,}"
    expired = "" if variant == "plain" else f"{res['closed'] - res['closed_kept']:,}"
    closed = "" if variant == "plain" else f"{res['closed']:,}"
    return (
        f"{label:<9} {variant:<9} {rate:>11,.0f} {word_rate:>10,.0f} {word_rate * per_word:>12,.0f}"
        f" {ratio:>8} {res['cpu'] / res['records'] * 1e6:>9.0f}"
        f" {res['commit_seconds'] / res['wall']:>6.0%} {res['gc_seconds'] / res['wall']:>5.0%}"
        f" {res['changelog_records']:>10,}"
        f" {windows:>9} {closed:>9} {expired:>9} {res['rss_peak_kb'] / 1024:>5.0f} MiB"
    )


def code_version() -> str:
    """The commit, and digests of the windowed modules (they may be uncommitted work)."""
    import hashlib
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*words: str) -> str:
        done = subprocess.run(
            ["git", *words], cwd=root, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    try:
        head, dirty = (
            git("rev-parse", "--short", "HEAD"),
            git("status", "--porcelain", "statestream"),
        )
    except OSError:
        head, dirty = "unknown", ""
    digests = []
    for name in (
        "windowed.py",
        "windowed_shard.py",
        "window_state.py",
        "window_closing.py",
        "window_writes.py",
        "shard.py",
    ):
        path = os.path.join(root, "statestream", "tables", name)
        with open(path, "rb") as fh:
            digests.append(f"{name} {hashlib.sha256(fh.read()).hexdigest()[:10]}")
    changes = " + uncommitted changes" if dirty else ""
    return f"git {head or 'unknown'}{changes}; sha256 of {', '.join(digests)}"


def print_report(args: argparse.Namespace, report: dict, out: Any) -> None:
    import plyvel

    print(
        f"statestream windows benchmark: Python {platform.python_version()}, statestream "
        f"{package_version('statestream')}, kafka-python {package_version('kafka-python')}, "
        f"LevelDB {plyvel.__leveldb_version__}, {os.cpu_count()} CPUs",
        file=out,
    )
    if args.quick:
        print("--quick: a smoke run; its runs are too short for the figures to mean much", file=out)
    print(f"code: {report['code']}", file=out)
    load = report["load"]
    print(
        f"load average (1 min) at start {load[0]:.1f}, at end {load[1]:.1f} "
        "(other work on the machine shows up as noise)",
        file=out,
    )
    words = report.get("words")
    counted = f" ({words:,} words)" if words else ""
    print(
        f"input: {args.sentences:,} sentences{counted}, vocabulary "
        f"{args.vocabulary:,}, {args.partitions} partitions; event time = producer timestamp, "
        f"even over {args.span_minutes:g} min, in order per partition; windows 60 s "
        f"(hopping: step 6 s, 10 per word), grace 0, retention {RETENTION_MS // 1000} s",
        file=out,
    )
    for label, runs in report["worker"].items():
        print(file=out)
        print(
            f"worker on {label} (Worker.run, LevelDB, commit interval {args.commit_interval:g} s"
            f"; best of {args.repeat} runs, hopping {args.repeat_hopping}; gc_threshold "
            f"{'default' if args.gc_threshold is None else args.gc_threshold}"
            "; commit, GC = share of the wall time in commits and in the garbage collector)",
            file=out,
        )
        head = (
            f"{'log':<9} {'table':<9} {'sentences/s':>11} {'words/s':>10} {'win upd/s':>12}"
            f" {'vs plain':>8} {'CPU us/s':>9} {'commit':>6} {'GC':>5} {'changelog':>10}"
            f" {'windows':>9} {'closed':>9} {'expired':>9} {'RSS peak':>9}"
        )
        print(head, file=out)
        print("-" * len(head), file=out)
        plain = runs.get("plain")
        for variant, res in runs.items():
            base = None if variant == "plain" else plain
            print(worker_line(label, variant, res, base, words), file=out)
        for variant, target in TARGETS.items():
            if variant in runs and plain is not None:
                ratio = (runs[variant]["records"] / runs[variant]["seconds"]) / (
                    plain["records"] / plain["seconds"]
                )
                verdict = "met" if ratio >= target else "MISSED"
                print(
                    f"  {variant} / plain: {ratio:.1%} (target >= {target:.0%}: {verdict})",
                    file=out,
                )
    if report.get("in_process"):
        runs = report["in_process"]
        print(file=out)
        first = next(iter(runs.values()))
        print(
            f"in process (TableManager, LevelDB store, embedded-log changelog, one partition, "
            f"best of {args.repeat} runs, hopping {args.repeat_hopping}; "
            f"{first['records']:,} sentences = one partition's share, {first['words']:,} words; "
            f"commit every {args.commit_every:,} sentences)",
            file=out,
        )
        head = (
            f"{'table':<9} {'sentences/s':>11} {'words/s':>10} {'win upd/s':>12} {'vs plain':>8}"
            f" {'us/word':>8} {'commit':>7} {'changelog':>10} {'windows':>9} {'upd/window':>10}"
        )
        print(head, file=out)
        print("-" * len(head), file=out)
        plain = runs.get("plain")
        for variant, res in runs.items():
            per_word = VARIANTS[variant][0]
            rate = res["records"] / res["seconds"]
            ratio = (
                ""
                if variant == "plain" or plain is None
                else f"{rate / (plain['records'] / plain['seconds']):.0%}"
            )
            windows = res["keys"] if variant == "plain" else res["closed"] + res["open"]
            print(
                f"{variant:<9} {rate:>11,.0f} {res['words'] / res['seconds']:>10,.0f}"
                f" {res['words'] * per_word / res['seconds']:>12,.0f} {ratio:>8}"
                f" {res['seconds'] / res['words'] * 1e6:>8.1f}"
                f" {res['commit_seconds'] / res['seconds']:>7.0%} {res['changelog_records']:>10,}"
                f" {windows:>9,} {res['words'] * per_word / windows:>10.1f}",
                file=out,
            )
        print(
            "  windows: plain = distinct keys; upd/window = window updates per window created; "
            "commit = share of the time inside manager.commit",
            file=out,
        )
    if report.get("expiry"):
        e = report["expiry"]
        print(file=out)
        print(
            f"expiry: {e['expired_windows']:,} closed windows past retention + "
            f"{e['live_windows']:,} open windows, one LevelDB store (tumbling 60 s, grace 10 min, "
            f"retention 10 min)",
            file=out,
        )
        print(
            f"  build through the table: {e['build_records']:,} records in "
            f"{e['build_seconds']:.1f} s ({e['build_records'] / e['build_seconds']:,.0f} windows/s,"
            f" commits every {args.expiry_batch:,}); old windows {e['build_old_seconds']:.1f} s; "
            f"the first live records closed {e['closed_by_first_live']:,} windows in "
            f"{e['close_old_seconds']:.2f} s",
            file=out,
        )
        b, a = e["before"], e["after"]
        print(
            f"  before: {b['open'] + b['closed_kept']:,} windows stored ({b['open']:,} open), "
            f"{b['index']:,} windows in the index, {e['changelog_before']:,} changelog records",
            file=out,
        )
        print(
            f"  trigger: {e['trigger_records']:,} records (each deletes up to 10,000 windows, "
            "or every window of one due time) "
            f"processing {e['process_seconds']:.2f} s + commit "
            f"{e['commit_seconds']:.2f} s (store write {e['store_write_seconds']:.2f} s) = "
            f"{e['process_seconds'] + e['commit_seconds']:.2f} s; closed "
            f"{e['closed_by_trigger']:,}; changelog "
            f"+{e['changelog_after'] - e['changelog_before']:,} records; peak RSS of the child "
            f"{e['rss_peak_kb'] / 1024:,.0f} MiB",
            file=out,
        )
        print(
            f"  after: {a['open'] + a['closed_kept']:,} windows stored ({a['open']:,} open), "
            f"{a['index']:,} windows in the index",
            file=out,
        )
        tot = {k: sum(s[k] for s in e["scans"]) for k in ("rows", "expired", "live", "other")}
        print(
            f"  store rows iterated by the trigger: {tot['rows']:,} in {len(e['scans'])} iterate() "
            f"calls: {tot['expired']:,} expired index rows, {tot['live']:,} live index "
            f"rows, {tot['other']:,} other",
            file=out,
        )
        for s in e["scans"]:
            print(
                f"    iterate({s['start']}, {s['end']}): {s['rows']:,} rows ({s['expired']:,} "
                f"expired, {s['live']:,} live, {s['other']:,} other)",
                file=out,
            )
    for variant, text in report.get("profiles", {}).items():
        print(file=out)
        print(
            f"cProfile of the {variant} (own time, share of all own time):",
            file=out,
        )
        print(text, file=out)
    print(file=out)
    print(f"total time {report['total_seconds']:.0f} s", file=out)
    print("command lines:", file=out)
    for line in report["commands"]:
        print(f"  {line}", file=out)


# -- the command line -----------------------------------------------------------------

PARTS = ("worker", "in-process", "expiry")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument("--bootstrap", help="host:port of a Kafka broker: run on Kafka too")
    parser.add_argument("--kafka", action="store_true", help="start a throwaway broker")
    parser.add_argument("--sentences", type=int, help="worker input sentences (180000; quick 1200)")
    parser.add_argument("--partitions", type=int, default=4, help="source partitions (4)")
    parser.add_argument("--vocabulary", type=int, default=10_000, help="distinct words (10000)")
    parser.add_argument(
        "--span-minutes", type=float, default=3.0, help="event time the input spans, min (3)"
    )
    parser.add_argument(
        "--commit-interval", type=float, default=1.0, help="worker commit interval, s (1.0)"
    )
    parser.add_argument(
        "--in-process-sentences", type=int, help="in-process sentences (sentences / partitions)"
    )
    parser.add_argument(
        "--commit-every", type=int, default=1000, help="in-process commit every C sentences"
    )
    parser.add_argument(
        "--expire-windows", type=int, help="closed windows to expire (1000000; quick 50000)"
    )
    parser.add_argument("--live-windows", type=int, help="live windows (100000; quick 5000)")
    parser.add_argument(
        "--expiry-batch", type=int, default=50_000, help="build records per commit (50000)"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    parser.add_argument(
        "--repeat", type=int, help="worker runs of plain and tumbling, best reported (3; quick 1)"
    )
    parser.add_argument("--repeat-hopping", type=int, help="worker runs of hopping (as --repeat)")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="the workers' gc_threshold setting (default: the worker's default; 0: Python's)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process loops")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up a run after s")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, report on stderr")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.sentences is None:
        args.sentences = 1_200 if quick else 180_000
    if args.expire_windows is None:
        args.expire_windows = 50_000 if quick else 1_000_000
    if args.live_windows is None:
        args.live_windows = 5_000 if quick else 100_000
    if args.repeat is None:
        args.repeat = 1 if quick else 3
    if args.repeat_hopping is None:
        args.repeat_hopping = args.repeat
    if args.in_process_sentences is None:
        args.in_process_sentences = max(1, args.sentences // args.partitions)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--parts takes a subset of {','.join(PARTS)}")
    if args.expire_windows < 10 or args.live_windows < 1:
        parser.error("--expire-windows must be >= 10 and --live-windows >= 1")
    if min(args.sentences, args.partitions, args.vocabulary, args.repeat, args.commit_every) < 1:
        parser.error("counts must be >= 1")
    if args.repeat_hopping < 1:
        parser.error("counts must be >= 1")
    if args.bootstrap and args.kafka:
        parser.error("--bootstrap and --kafka exclude each other")
    args.span_ms = int(args.span_minutes * 60_000)
    return args


def runs_in_order(args: argparse.Namespace) -> list[tuple[int, str]]:
    """``(round, variant)`` of every run: rounds alternate the order; hopping runs
    ``--repeat-hopping`` times, the others ``--repeat`` times."""
    runs = []
    for i in range(max(args.repeat, args.repeat_hopping)):
        for variant in list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]:
            if i < (args.repeat_hopping if variant == "hopping" else args.repeat):
                runs.append((i, variant))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    commands = [shlex.join([os.path.relpath(sys.executable), *sys.argv])]
    root = tempfile.mkdtemp(prefix="statestream-bench-windows-")
    broker = None
    report: dict[str, Any] = {"worker": {}, "in_process": {}, "profiles": {}}
    args.base = event_base(args.span_ms)
    report["code"] = code_version()
    report["load"] = [os.getloadavg()[0]]
    try:
        if "worker" in args.parts:
            transports = [("embedded", f"embedded://{root}/log", None)]
            bootstrap = args.bootstrap
            if args.kafka:
                print("starting a Kafka broker (scripts/kafka_broker.py) ...", file=sys.stderr)
                broker = load_broker_module().start_broker()
                bootstrap = broker.bootstrap
                commands.append(f"(broker started by the benchmark at {bootstrap})")
            if bootstrap:
                transports.append(("kafka", f"kafka://{bootstrap}", bootstrap))
            for label, url, boot in transports:
                topic = f"bench-windows-{uuid.uuid4().hex[:8]}-sentences"
                print(f"producing {args.sentences:,} sentences to {label} ...", file=sys.stderr)
                produced = produce(url, boot, topic, args)
                report["words"] = produced["words"]
                runs: dict[str, dict] = {}
                for _, variant in runs_in_order(args):
                    store = tempfile.mkdtemp(prefix="worker-", dir=root)
                    try:
                        res = in_child(
                            f"{label} {variant}",
                            run_worker,
                            url,
                            topic,
                            store,
                            args.sentences,
                            args.partitions,
                            args.commit_interval,
                            args.timeout,
                            variant,
                            args.gc_threshold,
                        )
                    finally:
                        shutil.rmtree(store, ignore_errors=True)
                    check_worker(label, variant, res, args.sentences, produced["words"])
                    best = runs.get(variant)
                    if best is None or res["seconds"] < best["seconds"]:
                        runs[variant] = res
                report["worker"][label] = {v: runs[v] for v in VARIANTS}
        if "in-process" in args.parts:
            n = args.in_process_sentences
            span = args.span_ms
            best_runs: dict[str, dict] = {}
            for _, variant in runs_in_order(args):
                res = in_child(
                    f"in-process {variant}",
                    run_in_process,
                    variant,
                    n,
                    args.vocabulary,
                    args.base,
                    span,
                    args.commit_every,
                    False,
                )
                check_in_process(variant, res)
                if variant not in best_runs or res["seconds"] < best_runs[variant]["seconds"]:
                    best_runs[variant] = res
            report["in_process"] = {v: best_runs[v] for v in VARIANTS}
            if args.profile:
                for variant in ("tumbling", "hopping"):
                    print(f"profiling the in-process {variant} loop ...", file=sys.stderr)
                    res = in_child(
                        f"profile {variant}",
                        run_in_process,
                        variant,
                        n,
                        args.vocabulary,
                        args.base,
                        span,
                        args.commit_every,
                        True,
                    )
                    report["profiles"][f"in-process {variant} loop"] = res.pop("profile")
        if "expiry" in args.parts:
            print(
                f"building {args.expire_windows:,} + {args.live_windows:,} windows ...",
                file=sys.stderr,
            )
            res = in_child(
                "expiry",
                run_expiry,
                args.expire_windows,
                args.live_windows,
                args.expiry_batch,
                False,
            )
            check_expiry(res)
            report["expiry"] = res
            if args.profile:
                old, live = min(args.expire_windows, 200_000), min(args.live_windows, 20_000)
                print(f"profiling the expiry of {old:,} windows ...", file=sys.stderr)
                res = in_child("profile expiry", run_expiry, old, live, args.expiry_batch, True)
                check_expiry(res)
                report["profiles"][f"expiry of {old:,} windows (trigger record + commit)"] = res[
                    "profile"
                ]
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    report["total_seconds"] = time.perf_counter() - started
    report["load"].append(os.getloadavg()[0])
    report["commands"] = commands
    report.setdefault("words", 0)
    out = sys.stderr if args.json else sys.stdout
    print_report(args, report, out)
    if args.json:
        for runs in report["worker"].values():
            for res in runs.values():
                res.pop("samples", None)
        for res in report["in_process"].values():
            res.pop("samples", None)
        if "expiry" in report:
            report["expiry"].pop("samples", None)
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    return 0


def check_worker(label: str, variant: str, res: dict, records: int, words: int) -> None:
    """Refuse a run whose counts are not exact; print a progress line."""
    problems = []
    if res["records"] != records:
        problems.append(f"processed {res['records']:,} records, expected {records:,}")
    if variant == "plain" and res["sum"] != words:
        problems.append(f"counted {res['sum']:,} words, expected {words:,}")
    if variant != "plain":
        problems += check_windows(res, words, VARIANTS[variant][0])
    if res.get("rebalanced"):
        problems.append("a rebalance happened inside the clock (windows may close twice)")
    if problems:
        raise SystemExit(f"{label} {variant}: " + "; ".join(problems))
    print(
        f"progress: {label} {variant}: {res['records'] / res['seconds']:,.0f} sentences/s, "
        f"{res['seconds']:.1f} s (wall {res['wall']:.1f} s), {res['commits']} commits",
        file=sys.stderr,
        flush=True,
    )


def check_in_process(variant: str, res: dict) -> None:
    if variant == "plain":
        problems = [] if res["sum"] == res["words"] else [f"sum {res['sum']} != {res['words']}"]
    else:
        problems = check_windows(res, res["words"], VARIANTS[variant][0])
    if problems:
        raise SystemExit(f"in-process {variant}: " + "; ".join(problems))
    print(
        f"progress: in-process {variant}: {res['records'] / res['seconds']:,.0f} sentences/s",
        file=sys.stderr,
        flush=True,
    )


def check_expiry(res: dict) -> None:
    """The trigger must have expired every old window and kept every live one."""
    old, live = res["expired_windows"], res["live_windows"]
    before, after = res["before"], res["after"]
    problems = []
    if res["closed_by_first_live"] != old:
        problems.append(
            f"the first live record closed {res['closed_by_first_live']:,}, not {old:,}"
        )
    if before["closed_kept"] != old or before["open"] != live:
        problems.append(f"before the trigger: {before}, expected {old:,} closed and {live:,} open")
    if after["closed_kept"] != 0 or after["open"] != live + 1 or after["index"] != live + 1:
        problems.append(f"after the trigger: {after}, expected {live + 1:,} open windows only")
    if problems:
        raise SystemExit("expiry: " + "; ".join(problems))


if __name__ == "__main__":
    sys.exit(main())
