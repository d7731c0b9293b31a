"""End-to-end word count throughput of a ``Worker``, next to a bare kafka-python loop.

Run::

    .venv/bin/python benchmarks/bench_worker.py [--bootstrap HOST:PORT] [--records N]
        [--partitions P] [--commit-interval S] [--repeat R] [--vocabulary V]
        [--profile] [--skip-embedded] [--json]

Without ``--bootstrap`` a throwaway broker is started with
``scripts/kafka_broker.py`` (Java and Maven needed) and stopped at the end.

The input: N sentences (default 1,000,000) of 6 to 10 words (8 on average)
drawn from a vocabulary of V (default 10,000) lowercase pseudo-words with
Zipf-like frequencies, each sent as a JSON string (the default value codec)
without key to partition ``i % P`` of one source topic of P (default 4)
partitions. It is produced once, untimed, with a plain ``KafkaProducer``.

Measured, in source records per second, each run in a fresh spawned child
process with a fresh consumer group, fresh changelog topics and fresh LevelDB
directories, both reading the same source topic from the beginning:

``statestream``
    ``Worker(app).run()`` of a word-count app on ``kafka://...`` with
    ``leveldb://<tmp>``: the processor of ``examples/wordcount.py``
    (``Table("counts", default=int)``, json keys and values,
    ``self.counts[word] += 1`` per word of ``str(message.value).lower().split()``)
    **without** its ``ctx.send`` to ``word-counts``, because the raw loop
    sends no output records either. Commit interval S (default 1 s). An
    ``on_status`` callback (every 0.1 s) calls ``request_stop()`` once the
    ``processed`` counter equals N; the worker then commits and closes.
``raw``
    A bare kafka-python ``KafkaConsumer`` in a group (``subscribe``, the
    transport's consumer settings, auto-commit off) polling up to 2000 records
    at a time, decoding each value with ``json.loads`` and counting the words
    in one dict per partition. Every S seconds, for every partition with dirty
    keys, it produces one changelog record per dirty key (key and value
    encoded as the json codec does, headers
    ``statestream.tables.headers.source_headers(topic, offset)`` of the last
    record that changed the key) to a compacted changelog topic of P
    partitions with a ``KafkaProducer`` built with the transport's producer
    settings (``acks=all``, idempotence, 5 ms linger), flushes, commits the
    source offsets synchronously, then writes the dirty keys (and the last
    changelog offset) to that partition's plyvel database in one
    ``WriteBatch`` (same ``LevelDBOptions`` as the store). It stops after the
    commit that covers the N-th record.
``embedded``
    The same worker on the embedded log (``embedded://<tmp>/log``), filled with
    the same sentences through the embedded transport's producer (untimed).
    No raw baseline there.

The clock runs from the first partition ready to process (the worker's first
``Processor.on_assigned``; the raw consumer's ``on_partitions_assigned``) to
the last final commit (the worker's last ``Processor.on_revoked``, which runs
after a partition's final commit; the raw loop's last commit). Topic
creation, the group join, the restore of the (empty) changelogs and closing
are outside it; ``wall`` is the whole ``run()`` (or subscribe to close) for
reference. Both sides check the result: the counts summed over every LevelDB
database must equal the number of words produced.

CPU: each side's progress line also gives the process CPU time of the run
(every thread: the worker's, kafka-python's, LevelDB's) per record. When the
broker, not the CPU, bounds both sides (records/s near the raw loop's), it is
the steadier figure for comparing two versions of statestream.

Memory: each child reports ``ru_maxrss`` before running (after imports and
opening) and at the end, and the parent samples ``VmRSS`` of the child from
``/proc/<pid>/status`` every second while it runs, together with how many
records it had processed and how much memory its LevelDB databases say they
use (``leveldb.approximate-memory-usage``: memtables and block cache, which
fill up to ``write_buffer_size`` and ``lru_cache_size`` per database, 4 and
8 MiB by default for stores, 16 and 32 MiB for the embedded log, and then
stay there). State is 40,000 keys, so an RSS
that is steady apart from LevelDB's bounded buffers means nothing grows
with the number of records.

``ratio`` is statestream / raw (target: at least 60%). ``--profile`` runs one
more Kafka worker under cProfile, one profiler per thread (partition threads,
the poll thread, the group member's helper thread, kafka-python's threads),
and prints the top functions per group of threads.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import io
import itertools
import json
import multiprocessing
import os
import platform
import pstats
import random
import shutil
import string
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _shared import (  # benchmarks/ is on sys.path
    Side,
    load_broker_module,
    package_version,
    peak_rss_kb,
)

SEED = 20240601
REPO_ROOT = Path(__file__).resolve().parents[1]
TABLE = "counts"
POLL_RECORDS = 2000  # what the worker's poll thread takes per poll
POLL_TIMEOUT_MS = 50  # what the worker's poll thread uses
STATUS_INTERVAL_S = 0.1
SAMPLE_INTERVAL_S = 1.0
COMPACTION_LAG_MS = "3600000"  # what TableManager gives its changelog topics


# -- the input ------------------------------------------------------------------------


def vocabulary(size: int) -> tuple[list[str], list[float]]:
    """Return ``size`` distinct pseudo-words and their cumulative Zipf weights."""
    rng = random.Random(SEED)
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))] = None
    weights = list(itertools.accumulate(1.0 / rank for rank in range(1, size + 1)))
    return list(words), weights


def sentences(n: int, vocab_size: int) -> Iterator[str]:
    """Yield ``n`` sentences of 6 to 10 words, deterministically."""
    words, cum = vocabulary(vocab_size)
    rng = random.Random(SEED + 1)
    total = cum[-1]
    rand = rng.random
    randint = rng.randint
    for _ in range(n):
        yield " ".join(words[bisect.bisect(cum, rand() * total)] for _ in range(randint(6, 10)))


def encoded_sentences(n: int, vocab_size: int) -> Iterator[tuple[bytes, int]]:
    """Yield ``(json value, word count)`` per sentence."""
    for sentence in sentences(n, vocab_size):
        yield json.dumps(sentence, ensure_ascii=False).encode("utf-8"), sentence.count(" ") + 1


def create_topics(url: str, specs: list[Any]) -> None:
    from statestream.log import open_transport

    transport = open_transport(url)
    try:
        admin = transport.admin()
        for spec in specs:
            admin.ensure_topic(spec)
        admin.close()
    finally:
        transport.close()


def produce_kafka(bootstrap: str, topic: str, n: int, vocab: int, partitions: int) -> dict:
    """Create the source topic and fill it with kafka-python; return words and seconds."""
    from kafka import KafkaProducer

    from statestream.log.base import TopicSpec

    create_topics(f"kafka://{bootstrap}", [TopicSpec(topic, partitions, cleanup_policy="delete")])
    started = time.perf_counter()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        enable_idempotence=False,
    )
    words = 0
    try:
        send = producer.send
        for i, (value, count) in enumerate(encoded_sentences(n, vocab)):
            send(topic, value=value, partition=i % partitions)
            words += count
        producer.flush()
    finally:
        producer.close()
    return {"words": words, "seconds": time.perf_counter() - started}


def produce_embedded(url: str, topic: str, n: int, vocab: int, partitions: int) -> dict:
    from statestream.log import open_transport
    from statestream.log.base import TopicSpec

    transport = open_transport(url)
    words = 0
    try:
        admin = transport.admin()
        admin.ensure_topic(TopicSpec(topic, partitions, cleanup_policy="delete"))
        admin.close()
        started = time.perf_counter()
        producer = transport.producer()
        try:
            send = producer.send
            for i, (value, count) in enumerate(encoded_sentences(n, vocab)):
                send(topic, None, value, partition=i % partitions)
                words += count
            producer.flush()
        finally:
            producer.close()
        return {"words": words, "seconds": time.perf_counter() - started}
    finally:
        transport.close()


# -- the children ---------------------------------------------------------------------


def _sum_counts(store_dir: str, partitions: int) -> tuple[int, int]:
    """Return (sum of counts, keys) over every partition's LevelDB store."""
    from statestream.stores.leveldb import LevelDBStore

    total = keys = 0
    for partition in range(partitions):
        store = LevelDBStore(store_dir, TABLE, partition)
        try:
            for _, value in store.iterate():
                total += int(value)
                keys += 1
        finally:
            store.close()
    return total, keys


# Times of the processors' on_assigned / on_revoked hooks (partition threads).
_HOOK_TIMES: dict[str, list[float]] = {"assigned": [], "revoked": []}


def _wordcount_app(app_id: str, topic: str, url: str, store_dir: str, interval: float) -> Any:
    from statestream import App, Processor, Table
    from statestream.context import Context, Message

    class WordCount(Processor):
        """examples/wordcount.py without ``ctx.send``."""

        topics = (topic,)
        counts = Table(TABLE, default=int)

        def process(self, message: Message, ctx: Context) -> None:
            for word in str(message.value).lower().split():
                self.counts[word] += 1

        def on_assigned(self, partition: int) -> None:
            _HOOK_TIMES["assigned"].append(time.perf_counter())

        def on_revoked(self, partition: int) -> None:
            _HOOK_TIMES["revoked"].append(time.perf_counter())

    return App(
        app_id,
        processors=[WordCount],
        broker_url=url,
        store_url=f"leveldb://{store_dir}",
        data_dir=store_dir,
        commit_interval=interval,
    )


class _ThreadProfiles:
    """One cProfile profiler per thread started while installed, plus the calling one."""

    def __init__(self) -> None:
        self.profiles: list[tuple[str, cProfile.Profile]] = []
        self._lock = threading.Lock()

    def _start(self, frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile()
        with self._lock:
            self.profiles.append((threading.current_thread().name, profiler))
        profiler.enable()

    def install(self) -> cProfile.Profile:
        threading.setprofile(self._start)
        main = cProfile.Profile()
        self.profiles.append(("poll thread (Worker.run)", main))
        main.enable()
        return main

    def report(self) -> str:
        threading.setprofile(None)  # type: ignore[arg-type]
        groups: dict[str, list[cProfile.Profile]] = {}
        for name, profiler in self.profiles:
            if name.startswith("statestream-partition-"):
                group = "partition threads (statestream-partition-*)"
            elif name.startswith("statestream-kafka-group-"):
                group = "group member helper thread (consumer.poll)"
            elif name.startswith("poll thread"):
                group = name
            else:
                group = "other threads (kafka-python I/O, producer sender, ...)"
            groups.setdefault(group, []).append(profiler)
        text = io.StringIO()
        for group, profilers in groups.items():
            stats = pstats.Stats(profilers[0], stream=text)
            for profiler in profilers[1:]:
                stats.add(profiler)
            text.write(f"==== {group}: {len(profilers)} thread(s)\n")
            stats.sort_stats("tottime").print_stats(22)
            if group.startswith("partition"):
                stats.sort_stats("cumulative").print_stats(40)
        return text.getvalue()


def run_worker(
    url: str,
    topic: str,
    store_dir: str,
    records: int,
    partitions: int,
    interval: float,
    timeout: float,
    profile: bool,
    progress: Any,
) -> dict:
    """Child: run the word-count app with a Worker until it processed ``records``."""
    from statestream.worker.runner import Worker, WorkerStatus

    app_id = f"bench-worker-{uuid.uuid4().hex[:8]}"
    app = _wordcount_app(app_id, topic, url, store_dir, interval)
    deadline = time.monotonic() + timeout
    timed_out = False

    def on_status(status: WorkerStatus) -> None:
        nonlocal timed_out
        processed = status.counters.get("processed", 0)
        progress[0] = processed
        progress[1] = _leveldb_memory(worker)
        if processed >= records:
            worker.request_stop()
        elif time.monotonic() > deadline:
            timed_out = True
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=STATUS_INTERVAL_S)
    before = peak_rss_kb()
    profiles = _ThreadProfiles() if profile else None
    main_profiler = profiles.install() if profiles is not None else None
    started = time.perf_counter()
    cpu_started = time.process_time()
    worker.run()
    ended = time.perf_counter()
    cpu = time.process_time() - cpu_started
    if main_profiler is not None:
        main_profiler.disable()
    counters = worker.counters()
    progress[0] = counters.get("processed", 0)
    peak = peak_rss_kb()
    if timed_out:
        raise RuntimeError(f"timed out after {timeout:.0f} s with counters {counters}")
    total, keys = _sum_counts(store_dir, partitions)
    result = {
        "seconds": max(_HOOK_TIMES["revoked"]) - min(_HOOK_TIMES["assigned"]),
        "wall": ended - started,
        "cpu": cpu,
        "records": counters.get("processed", 0),
        "commits": counters.get("commits", 0),
        "words": total,
        "keys": keys,
        "rss_before_kb": before,
        "rss_peak_kb": peak,
    }
    if profiles is not None:
        result["profile"] = profiles.report()
    return result


def run_raw(
    bootstrap: str,
    topic: str,
    changelog: str,
    store_dir: str,
    records: int,
    partitions: int,
    interval: float,
    timeout: float,
    progress: Any,
) -> dict:
    """Child: a bare consume / count / produce changelog / commit / WriteBatch loop."""
    import struct

    import plyvel
    from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata

    from statestream.config import LevelDBOptions
    from statestream.log.kafka_options import KafkaOptions
    from statestream.tables.headers import source_headers

    opts = LevelDBOptions()
    options = KafkaOptions()
    dbs = []
    for partition in range(partitions):
        path = os.path.join(store_dir, TABLE, str(partition))
        os.makedirs(path, exist_ok=True)
        dbs.append(
            plyvel.DB(
                path,
                create_if_missing=True,
                paranoid_checks=opts.paranoid_checks,
                write_buffer_size=opts.write_buffer_size,
                max_open_files=opts.max_open_files,
                lru_cache_size=opts.lru_cache_size,
                block_size=opts.block_size,
                bloom_filter_bits=opts.bloom_filter_bits,
                compression="snappy" if opts.compression else None,
            )
        )
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        **options.consumer_config(),
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, **options.producer_config())
    producer.partitions_for(changelog)  # metadata outside the clock
    assigned_at: list[float] = []

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            if assigned:
                assigned_at.append(time.perf_counter())

    counts: list[dict[str, int]] = [{} for _ in range(partitions)]
    dirty: list[dict[str, int]] = [{} for _ in range(partitions)]
    positions: dict[Any, int] = {}
    offset_key = b"moffset"
    pack = struct.Struct(">q").pack
    json_loads = json.loads
    json_key = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode
    send = producer.send
    commits = 0

    def commit() -> None:
        nonlocal commits
        written: list[tuple[int, list[tuple[bytes, bytes]], Any]] = []
        for partition in range(partitions):
            keys = dirty[partition]
            if not keys:
                continue
            part_counts = counts[partition]
            pairs = []
            future = None
            for word, offset in keys.items():
                kb = json_key(word).encode("utf-8")
                vb = str(part_counts[word]).encode("ascii")
                future = send(
                    changelog,
                    key=kb,
                    value=vb,
                    partition=partition,
                    headers=list(source_headers(topic, offset)),
                )
                pairs.append((kb, vb))
            written.append((partition, pairs, future))
            keys.clear()
        producer.flush()
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in positions.items()})
        for partition, pairs, future in written:
            batch = dbs[partition].write_batch(sync=opts.sync)
            put = batch.put
            for kb, vb in pairs:
                put(b"d" + kb, vb)
            put(offset_key, pack(future.get().offset))
            batch.write()
        commits += 1

    before = peak_rss_kb()
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = time.monotonic() + timeout
    consumer.subscribe([topic], listener=Listener())
    count = 0
    next_commit = time.monotonic() + interval
    try:
        while count < records:
            polled = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=POLL_RECORDS)
            for ktp, batch in polled.items():
                partition = ktp.partition
                part_counts = counts[partition]
                part_dirty = dirty[partition]
                get = part_counts.get
                for record in batch:
                    offset = record.offset
                    for word in str(json_loads(record.value)).lower().split():
                        part_counts[word] = get(word, 0) + 1
                        part_dirty[word] = offset
                positions[ktp] = batch[-1].offset + 1
                count += len(batch)
            now = time.monotonic()
            if now >= next_commit:
                commit()
                progress[0] = count
                progress[1] = _leveldb_dbs_memory(dbs)
                next_commit = time.monotonic() + interval
                if now > deadline:
                    raise RuntimeError(f"timed out after {timeout:.0f} s at {count} records")
        commit()
        ended = time.perf_counter()
        cpu = time.process_time() - cpu_started
        progress[0] = count
        peak = peak_rss_kb()
    finally:
        consumer.close(autocommit=False)
        producer.close()
        for db in dbs:
            db.close()
    wall = time.perf_counter() - started
    total, keys = _sum_counts(store_dir, partitions)
    return {
        "seconds": ended - assigned_at[0],
        "wall": wall,
        "cpu": cpu,
        "records": count,
        "commits": commits,
        "words": total,
        "keys": keys,
        "rss_before_kb": before,
        "rss_peak_kb": peak,
    }


def _child_main(conn: Any, target: Callable[..., dict], args: tuple, progress: Any) -> None:
    try:
        result = target(*args, progress)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def _leveldb_dbs_memory(dbs: list[Any]) -> int:
    """Bytes the plyvel databases ``dbs`` say they use (memtables and block cache)."""
    total = 0
    for db in dbs:
        value = db.get_property(b"leveldb.approximate-memory-usage")
        total += int(value) if value else 0
    return total


def _leveldb_memory(worker: Any) -> int:
    """The same for every LevelDB store a Worker has open, and for the embedded
    log's database if it runs on one (their internals: this is a benchmark)."""
    manager = worker._manager
    if manager is None:
        return 0
    dbs = []
    log_db = getattr(getattr(worker._transport, "_log", None), "_db", None)
    if log_db is not None and not log_db.closed:
        dbs.append(log_db)
    for part in list(manager._partitions.values()):
        for shard in list(part.shards.values()):
            db = getattr(shard.store, "_db", None)
            if db is not None and not db.closed:
                dbs.append(db)
    try:
        return _leveldb_dbs_memory(dbs)
    except RuntimeError:  # a store closed meanwhile
        return 0


def _vm_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def in_child(name: str, target: Callable[..., dict], *args: Any) -> dict:
    """Run ``target(*args, progress)`` in a spawned process, sampling its VmRSS every second."""
    ctx = multiprocessing.get_context("spawn")
    # [records processed, bytes LevelDB says it uses (memtables, block cache)]
    progress = ctx.Array("q", 2, lock=False)
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(sender, target, args, progress), daemon=True)
    proc.start()
    sender.close()
    samples: list[tuple[float, int, int, int]] = []
    started = time.monotonic()
    reply = None
    try:
        while True:
            rss = _vm_rss_kb(proc.pid) if proc.pid is not None else None
            elapsed = time.monotonic() - started
            if rss is not None:
                samples.append((elapsed, int(progress[0]), rss, int(progress[1]) // 1024))
                if len(samples) % 15 == 0:
                    print(
                        f"progress: {name:<11} {elapsed:5.0f} s {progress[0]:>11,} records, "
                        f"VmRSS {rss / 1024:.0f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
            if receiver.poll(SAMPLE_INTERVAL_S):
                try:
                    reply = receiver.recv()
                except EOFError:
                    reply = None
                break
            if not proc.is_alive():
                break
        proc.join(timeout=60)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        receiver.close()
    if reply is None:
        raise SystemExit(f"{name}: the child process died (exit code {proc.exitcode})")
    status, payload = reply
    if status != "ok":
        raise SystemExit(f"{name}: the child process failed:\n{payload}")
    result: dict = payload
    result["samples"] = samples
    return result


# -- the comparison -------------------------------------------------------------------


def check(side: Side, result: dict, records: int, words: int) -> None:
    if result["records"] != records or result["words"] != words:
        raise SystemExit(
            f"{side.name}: processed {result['records']:,} records and counted "
            f"{result['words']:,} words, expected {records:,} and {words:,}"
        )
    rate = result["records"] / result["seconds"]
    print(
        f"progress: {side.name:<11} {rate:>10,.0f} records/s, {result['seconds']:.1f} s "
        f"(wall {result['wall']:.1f} s), CPU {result['cpu'] / result['records'] * 1e6:.1f} "
        f"us/record (all threads), {result['commits']} commits, "
        f"peak RSS {result['rss_peak_kb'] / 1024:.0f} MiB",
        file=sys.stderr,
        flush=True,
    )
    side.runs.append(result)


def rss_summary(result: dict, records: int) -> list[str]:
    """Lines showing the child's VmRSS over its run, with and without LevelDB's memory."""
    samples = result["samples"]
    if not samples:
        return ["  (no VmRSS samples)"]

    def at_marks(value: Callable[[tuple[float, int, int, int]], int]) -> str:
        marks = []
        for percent in (10, 25, 50, 75, 90, 100):
            target = records * percent // 100
            found = next((s for s in samples if s[1] >= target), samples[-1])
            marks.append(f"{percent}%: {value(found) / 1024:.0f}")
        running = [value(s) for s in samples if records * 0.1 <= s[1] < records]
        steady = (
            f"min/max while processing 10%..100%: {min(running) / 1024:.0f}/"
            f"{max(running) / 1024:.0f} MiB"
            if running
            else "too few samples while processing"
        )
        return f"{', '.join(marks)}; {steady}"

    values = [f"{s[2] / 1024:.0f}" for s in samples]
    lines = [
        f"  VmRSS MiB at % of records processed: {at_marks(lambda s: s[2])}",
        f"  LevelDB memory MiB (memtables, block cache): {at_marks(lambda s: s[3])}",
        f"  VmRSS minus LevelDB memory MiB: {at_marks(lambda s: s[2] - s[3])}",
        f"  VmRSS MiB every {SAMPLE_INTERVAL_S:.0f} s ({len(samples)} samples):",
    ]
    for start in range(0, len(values), 25):
        lines.append("    " + " ".join(f"{v:>4}" for v in values[start : start + 25]))
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="host:port of a broker (default: start one)")
    parser.add_argument("--records", type=int, default=1_000_000, help="sentences (1000000)")
    parser.add_argument("--partitions", type=int, default=4, help="source partitions (4)")
    parser.add_argument(
        "--commit-interval", type=float, default=1.0, help="seconds between commits (1.0)"
    )
    parser.add_argument("--vocabulary", type=int, default=10_000, help="distinct words (10000)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per side (1)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="give up a run after this many s (1800)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one more Kafka worker")
    parser.add_argument("--skip-embedded", action="store_true", help="measure Kafka only")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, report on stderr")
    args = parser.parse_args(argv)
    if min(args.records, args.partitions, args.vocabulary, args.repeat) < 1:
        parser.error("--records, --partitions, --vocabulary and --repeat must be >= 1")
    if args.commit_interval <= 0:
        parser.error("--commit-interval must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="statestream-bench-worker-")
    broker = None
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-worker-{run_id}-sentences"
    produced: dict[str, dict] = {}
    profile_text = None
    n, p, ci, limit = args.records, args.partitions, args.commit_interval, args.timeout
    statestream = Side("statestream", "Worker + word-count app, kafka transport, LevelDBStore")
    raw = Side("raw", "bare KafkaConsumer/KafkaProducer loop, dict, plyvel WriteBatch")
    embedded = Side("embedded", "the same Worker on the embedded log, LevelDBStore")
    sides = [statestream, raw]
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            print("starting a Kafka broker (scripts/kafka_broker.py) ...", file=sys.stderr)
            broker = load_broker_module().start_broker()
            bootstrap = broker.bootstrap
        url = f"kafka://{bootstrap}"
        print(f"producing {n:,} sentences to {topic} ...", file=sys.stderr, flush=True)
        produced["kafka"] = produce_kafka(bootstrap, topic, n, args.vocabulary, p)
        words = produced["kafka"]["words"]

        def worker_run(broker_url: str, profile: bool = False) -> dict:
            store = tempfile.mkdtemp(prefix="worker-", dir=root)
            try:
                return in_child(
                    "statestream" if broker_url == url else "embedded",
                    run_worker,
                    broker_url,
                    topic,
                    store,
                    n,
                    p,
                    ci,
                    limit,
                    profile,
                )
            finally:
                shutil.rmtree(store, ignore_errors=True)

        def raw_run() -> dict:
            from statestream.log.base import TopicSpec

            changelog = f"bench-raw-{uuid.uuid4().hex[:8]}-{TABLE}-changelog"
            create_topics(
                url,
                [
                    TopicSpec(
                        changelog,
                        p,
                        cleanup_policy="compact",
                        config={"min.compaction.lag.ms": COMPACTION_LAG_MS},
                    )
                ],
            )
            store = tempfile.mkdtemp(prefix="raw-", dir=root)
            try:
                return in_child("raw", run_raw, bootstrap, topic, changelog, store, n, p, ci, limit)
            finally:
                shutil.rmtree(store, ignore_errors=True)

        for i in range(args.repeat):
            if i % 2 == 0:
                check(statestream, worker_run(url), n, words)
                check(raw, raw_run(), n, words)
            else:
                check(raw, raw_run(), n, words)
                check(statestream, worker_run(url), n, words)
        if args.profile:
            print("profiling one more Kafka worker run ...", file=sys.stderr, flush=True)
            profile_text = worker_run(url, profile=True)["profile"]
        if not args.skip_embedded:
            embedded_url = f"embedded://{root}/log"
            print("producing the same sentences to the embedded log ...", file=sys.stderr)
            produced["embedded"] = produce_embedded(embedded_url, topic, n, args.vocabulary, p)
            for _ in range(args.repeat):
                check(embedded, worker_run(embedded_url), n, words)
            sides.append(embedded)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    out = sys.stderr if args.json else sys.stdout
    import plyvel

    print(
        f"statestream worker benchmark: Python {platform.python_version()}, statestream "
        f"{package_version('statestream')}, kafka-python {package_version('kafka-python')}, plyvel "
        f"{plyvel.__version__}, LevelDB {plyvel.__leveldb_version__}, {os.cpu_count()} CPUs, "
        f"crc32c {'installed' if package_version('crc32c') != 'unknown' else 'not installed'}",
        file=out,
    )
    print(
        f"input: {n:,} sentences ({words:,} words, vocabulary {args.vocabulary:,}), "
        f"{p} partitions; commit interval {ci:g} s; no output topic on either side; "
        f"best of R={args.repeat}, each run in a spawned child",
        file=out,
    )
    print(
        "produce (untimed for the figures): "
        + ", ".join(f"{k} {n / v['seconds']:,.0f} records/s" for k, v in produced.items()),
        file=out,
    )
    print(file=out)
    columns = (
        f"{'side':<12} {'records/s':>10} {'ratio':>7} {'seconds':>8} {'wall':>7} "
        f"{'commits':>7} {'keys':>6} {'RSS before':>10} {'RSS peak':>9}  what"
    )
    print(columns, file=out)
    print("-" * (len(columns) + 50), file=out)
    raw_rate = raw.rate
    for side in sides:
        best = side.best
        ratio = f"{side.rate / raw_rate:>7.1%}" if side is not embedded else f"{'-':>7}"
        print(
            f"{side.name:<12} {side.rate:>10,.0f} {ratio} {best['seconds']:>8.1f} "
            f"{best['wall']:>7.1f} {best['commits']:>7} {best['keys']:>6,} "
            f"{best['rss_before_kb'] / 1024:>6.0f} MiB {best['rss_peak_kb'] / 1024:>5.0f} MiB  "
            f"{side.description}",
            file=out,
        )
    print(
        "ratio = statestream records/s / raw records/s on Kafka (target: >= 60%); seconds: "
        "first partition ready to last final commit; wall: the whole run() / subscribe..close",
        file=out,
    )
    print(file=out)
    for side in sides:
        print(f"{side.name}: RSS over the fastest run", file=out)
        for line in rss_summary(side.best, n):
            print(line, file=out)
    print(f"total time {total:.0f} s", file=out)
    if profile_text is not None:
        print(file=out)
        print("cProfile of one Kafka worker run (in its child, one profiler per thread):", file=out)
        print(profile_text, file=out)
    if args.json:
        json.dump(
            {
                "records": n,
                "words": words,
                "partitions": p,
                "commit_interval": ci,
                "vocabulary": args.vocabulary,
                "repeat": args.repeat,
                "produce": produced,
                "total_seconds": total,
                "sides": [s.as_json() for s in sides],
                "profile": profile_text,
            },
            sys.stdout,
            indent=2,
        )
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
