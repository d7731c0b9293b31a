"""End-to-end word count throughput of a ``Worker``, next to bare kafka-python loops.

Run::

    .venv/bin/python benchmarks/bench_worker.py [--bootstrap HOST:PORT] [--sentences N]
        [--partitions P] [--commit-interval S] [--repeat R] [--vocabulary V]
        [--variants LIST] [--profile [VARIANT]] [--skip-embedded] [--timeout S] [--json]

Without ``--bootstrap`` a throwaway broker is started with
``scripts/kafka_broker.py`` (Java and Maven needed) and stopped at the end.
``--records`` is another name for ``--sentences``.

The input: N sentences (default 100,000) of 6 to 10 words (8 on average)
drawn from a vocabulary of V (default 10,000) lowercase pseudo-words with
Zipf-like frequencies, each sent as a JSON string (the default value codec)
without key to partition ``i % P`` of one source topic of P (default 4)
partitions. It is produced once, untimed, with a plain ``KafkaProducer``;
every variant reads that same topic from the beginning.

Measured, in sentences (source records) per second, each run in a fresh
spawned child process with a fresh consumer group, fresh internal, changelog
and output topics and fresh LevelDB directories, on the same broker:

``readme``
    ``Worker(app).run()`` of the app of README.md's "A complete app", on
    ``kafka://...`` with ``leveldb://<tmp>`` and commit interval S (default
    1 s): ``SplitWords`` calls ``ctx.group_by("words", word, 1)`` for every
    word of ``message.value.lower().split()``, which re-keys through the
    internal topic ``<app id>-words-repartition`` (P partitions); ``CountWords``
    (``topics = [repartition("words")]``) does
    ``self.counts[message.key] += message.value`` in ``Table("counts",
    default=int)`` and ``ctx.send(<output>, word, count)``: one output record
    per word, to a fresh output topic of P partitions. The worker also keeps
    its internal ``words-repartition-seen`` table (what drops re-sent
    re-keyed records), so it writes two changelogs. An ``on_status``
    callback (every 0.1 s) calls ``request_stop()`` once the ``processed``
    counter equals N sentences plus their words (each re-keyed record is
    processed too); the worker then commits and closes.
``no outputs``
    The same app with ``CountWords``' ``ctx.send`` (and its ``outputs``)
    removed; the re-keying is kept.
``raw kafka-python``
    The same work in one process with kafka-python alone and no durable
    state: one ``KafkaConsumer`` in a group (``subscribe`` to the sentences
    and to a repartition topic of P partitions, the transport's consumer
    settings, auto-commit off) polls up to 2000 records at a time. A
    sentence is ``json.loads``-ed, lowercased and split, and each word is
    sent with ``KafkaProducer.send`` to the repartition topic (key: the word
    encoded as the json codec does, value ``b"1"``; kafka-python's default
    partitioner, murmur2 like statestream's). A re-keyed record read back
    from the repartition topic adds ``int(value)`` to a dict keyed by the
    key bytes, and the new count is sent with ``KafkaProducer.send`` to an
    output topic of P partitions: one output record per word. The producer
    has the transport's settings (``acks=all``, idempotence, 5 ms linger).
    Every S seconds it flushes the producer and commits the consumed
    offsets synchronously (outputs acknowledged before the offsets that
    produced them, as the worker does). No changelog, no LevelDB: a crash
    loses the counts. It stops after the commit that covers the N-th
    sentence and its last re-keyed record.
``count only``
    ``Worker(app).run()`` of one processor counting the words of each
    sentence on the partition the sentence arrived on (no re-keying, no
    output): ``Table("counts", default=int)``, ``self.counts[word] += 1`` per
    word of ``str(message.value).lower().split()``. A word's count is then
    split over partitions (the table warns about it once); the figure is
    the cost of the worker's consume / table / changelog / commit path
    alone. Stopped like ``readme`` once ``processed`` equals N.
``count only raw``
    Its bare kafka-python baseline: a ``KafkaConsumer`` as above on the
    sentences only, counting the words in one dict per partition. Every S
    seconds, for every partition with dirty keys, it produces one changelog
    record per dirty key (key and value encoded as the json codec does,
    headers ``statestream.tables.headers.source_headers(topic, offset)`` of
    the last record that changed the key) to a compacted changelog topic of
    P partitions with the same ``KafkaProducer`` settings, flushes, commits
    the source offsets synchronously, then writes the dirty keys (and the
    last changelog offset) to that partition's plyvel database in one
    ``WriteBatch`` (same ``LevelDBOptions`` as the store). It stops after the
    commit that covers the N-th sentence.
``embedded``
    The ``count only`` worker on the embedded log (``embedded://<tmp>/log``),
    filled with the same sentences through the embedded transport's producer
    (untimed). No raw baseline there.

``--variants`` takes a comma-separated subset of ``readme``, ``no-outputs``,
``raw-kafka-python``, ``count-only``, ``count-only-raw`` and ``embedded``
(default: all of them; ``--skip-embedded`` drops ``embedded``). With
``--repeat R`` the Kafka variants run R times, in alternating order, and the
fastest run of each is reported.

The clock runs from the first partition ready to process (the worker's first
``Processor.on_assigned``; the raw consumer's ``on_partitions_assigned``) to
the last final commit (the worker's last ``Processor.on_revoked``, which runs
after a partition's final commit; the raw loop's last commit). Topic
creation, the group join, the restore of the (empty) changelogs and closing
are outside it; ``wall`` is the whole ``run()`` (or subscribe to close) for
reference. Every variant checks its result: the counts (summed over every
LevelDB database, or the raw loop's dict) must equal the number of words
produced, and for the re-keying variants the repartition topic and the
output topic must hold exactly one record per word.

CPU: each variant's progress line and the table give the process CPU time of
the run (every thread: the worker's, kafka-python's, LevelDB's) per
sentence. When the broker, not the CPU, bounds both sides, it is the
steadier figure for comparing two versions of statestream.

Memory: each child reports ``ru_maxrss`` before running (after imports and
opening) and at the end, and the parent samples ``VmRSS`` of the child from
``/proc/<pid>/status`` every second while it runs, together with how many
records it had processed and how much memory its LevelDB databases say they
use (``leveldb.approximate-memory-usage``: memtables and block cache, which
fill up to ``write_buffer_size`` and ``lru_cache_size`` per database, 4 and
8 MiB by default for stores, 16 and 32 MiB for the embedded log, and then
stay there). State is at most 40,000 keys, so an RSS that is steady apart
from LevelDB's bounded buffers means nothing grows with the number of
records (``--sentences 1000000`` shows it over a longer run).

Ratios printed: readme / raw kafka-python (target: at least 1.5x), readme /
no outputs (target: at least 0.5) and count only / count only raw (target:
at least 60%). ``--profile`` runs one more worker of ``readme`` (or of the
variant named: ``no-outputs``, ``count-only``) under cProfile, one profiler
per thread (partition threads, the poll thread, the group member's helper
thread, kafka-python's threads), and prints the top functions per group of
threads.
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
    """The ``count only`` app: one processor, no re-keying, no output."""
    from statestream import App, Processor, Table
    from statestream.context import Context, Message

    class WordCount(Processor):
        """Counts the words where the sentence arrives; no ``ctx.send``."""

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


def _readme_app(
    app_id: str,
    topic: str,
    output: str | None,
    url: str,
    store_dir: str,
    interval: float,
) -> Any:
    """README.md's "A complete app" (``output=None``: without its ``ctx.send``).

    The processors are the README's, with the benchmark's topic names; the
    clock hooks sit on a base class of ``SplitWords``.
    """
    from statestream import App, Processor, Table, repartition

    class Clock(Processor):
        def on_assigned(self, partition: int) -> None:
            _HOOK_TIMES["assigned"].append(time.perf_counter())

        def on_revoked(self, partition: int) -> None:
            _HOOK_TIMES["revoked"].append(time.perf_counter())

    class SplitWords(Clock):
        topics = [topic]  # noqa: RUF012 (as in the README)

        def process(self, message, ctx):
            for word in message.value.lower().split():
                ctx.group_by("words", word, 1)  # re-key: each word to its own partition

    class CountWords(Processor):
        topics = [repartition("words")]  # noqa: RUF012
        outputs = [output]  # noqa: RUF012
        counts = Table("counts", default=int)

        def process(self, message, ctx):
            self.counts[message.key] += message.value
            ctx.send(output, message.key, self.counts[message.key])

    class CountWordsNoOutputs(Processor):
        topics = [repartition("words")]  # noqa: RUF012
        counts = Table("counts", default=int)

        def process(self, message, ctx):
            self.counts[message.key] += message.value

    return App(
        app_id,
        processors=[SplitWords, CountWords if output is not None else CountWordsNoOutputs],
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
    words: int,
    partitions: int,
    interval: float,
    timeout: float,
    kind: str,
    profile: bool,
    progress: Any,
) -> dict:
    """Child: run the ``kind`` app with a Worker until it processed every record.

    ``records`` is the number of sentences; the re-keying apps also process
    one re-keyed record per word, ``words`` of them.
    """
    from statestream.worker.runner import Worker, WorkerStatus

    app_id = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    output = None
    if kind == "count-only":
        app = _wordcount_app(app_id, topic, url, store_dir, interval)
        target = records
    else:
        output = f"{app_id}-word-counts" if kind == "readme" else None
        app = _readme_app(app_id, topic, output, url, store_dir, interval)
        target = records + words
    deadline = time.monotonic() + timeout
    timed_out = False

    def on_status(status: WorkerStatus) -> None:
        nonlocal timed_out
        processed = status.counters.get("processed", 0)
        progress[0] = processed
        progress[1] = _leveldb_memory(worker)
        if processed >= target:
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
    processed = counters.get("processed", 0)
    progress[0] = processed
    peak = peak_rss_kb()
    if timed_out:
        raise RuntimeError(f"timed out after {timeout:.0f} s with counters {counters}")
    total, keys = _sum_counts(store_dir, partitions)
    result = {
        "seconds": max(_HOOK_TIMES["revoked"]) - min(_HOOK_TIMES["assigned"]),
        "wall": ended - started,
        "cpu": cpu,
        # More than one on_assigned per partition: a rebalance inside the clock.
        "rebalanced": len(_HOOK_TIMES["assigned"]) > partitions,
        # Sentences: every processed record is one unless the app re-keys.
        "records": processed if kind == "count-only" else processed - words,
        "processed": processed,
        "target": target,
        "commits": counters.get("commits", 0),
        "duplicates": counters.get("duplicates", 0),
        "words": total,
        "keys": keys,
        "rss_before_kb": before,
        "rss_peak_kb": peak,
        "topics": {
            "repartition": None if kind == "count-only" else app.repartition_topic("words"),
            "output": output,
        },
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
    """Child (``count only raw``): a bare consume / count / produce changelog /
    commit / WriteBatch loop."""
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
        "processed": count,
        "target": records,
        "commits": commits,
        "words": total,
        "keys": keys,
        "rss_before_kb": before,
        "rss_peak_kb": peak,
    }


def run_raw_rekey(
    bootstrap: str,
    topic: str,
    repart: str,
    output: str,
    records: int,
    words: int,
    interval: float,
    timeout: float,
    progress: Any,
) -> dict:
    """Child (``raw kafka-python``): split, re-key through ``repart`` and read it
    back, count in a dict, one output per word to ``output``, all in one loop."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata

    from statestream.log.kafka_options import KafkaOptions

    options = KafkaOptions()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-rekey-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        **options.consumer_config(),
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, **options.producer_config())
    producer.partitions_for(repart)  # metadata outside the clock
    producer.partitions_for(output)
    assigned_at: list[float] = []

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            if assigned:
                assigned_at.append(time.perf_counter())

    counts: dict[bytes, int] = {}
    get = counts.get
    positions: dict[Any, int] = {}
    json_loads = json.loads
    json_key = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode
    send = producer.send
    commits = sentences = rekeyed = outputs = 0

    def commit() -> None:
        nonlocal commits
        producer.flush()  # re-keyed and output records acknowledged first
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in positions.items()})
        commits += 1

    before = peak_rss_kb()
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = time.monotonic() + timeout
    consumer.subscribe([topic, repart], listener=Listener())
    next_commit = time.monotonic() + interval
    try:
        while sentences < records or rekeyed < words:
            polled = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=POLL_RECORDS)
            for ktp, batch in polled.items():
                if ktp.topic == topic:
                    for record in batch:
                        for word in json_loads(record.value).lower().split():
                            send(repart, key=json_key(word).encode("utf-8"), value=b"1")
                    sentences += len(batch)
                else:
                    for record in batch:
                        key = record.key
                        count = counts[key] = get(key, 0) + int(record.value)
                        send(output, key=key, value=str(count).encode("ascii"))
                    rekeyed += len(batch)
                    outputs += len(batch)
                positions[ktp] = batch[-1].offset + 1
            now = time.monotonic()
            if now >= next_commit:
                commit()
                progress[0] = sentences + rekeyed
                next_commit = time.monotonic() + interval
                if now > deadline:
                    raise RuntimeError(
                        f"timed out after {timeout:.0f} s at {sentences} sentences, "
                        f"{rekeyed} re-keyed records"
                    )
        commit()
        ended = time.perf_counter()
        cpu = time.process_time() - cpu_started
        progress[0] = sentences + rekeyed
        peak = peak_rss_kb()
    finally:
        consumer.close(autocommit=False)
        producer.close()
    return {
        "seconds": ended - assigned_at[0],
        "wall": time.perf_counter() - started,
        "cpu": cpu,
        "rebalanced": len(assigned_at) > 1,
        "records": sentences,
        "processed": sentences + rekeyed,
        "target": records + words,
        "commits": commits,
        "duplicates": 0,
        "words": sum(counts.values()),
        "keys": len(counts),
        "outputs": outputs,
        "rss_before_kb": before,
        "rss_peak_kb": peak,
        "topics": {"repartition": repart, "output": output},
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
                        f"progress: {name:<16} {elapsed:5.0f} s {progress[0]:>11,} records, "
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


def topic_records(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in ``topic`` (the sum of its partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = consumer.end_offsets([TopicPartition(topic, i) for i in range(partitions)])
        return int(sum(ends.values()))
    finally:
        consumer.close()


def check(
    side: Side, result: dict, records: int, words: int, bootstrap: str | None, partitions: int
) -> None:
    """Refuse a run whose counts (or re-keyed and output topics) are not exact."""
    problems = []
    if result["processed"] != result["target"] or result["records"] != records:
        problems.append(
            f"processed {result['processed']:,} records, expected {result['target']:,} "
            f"({records:,} sentences)"
        )
    if result["words"] != words:
        problems.append(f"counted {result['words']:,} words, expected {words:,}")
    for role, topic in (result.get("topics") or {}).items():
        if topic is None or bootstrap is None:
            continue
        found = result[f"{role}_records"] = topic_records(bootstrap, topic, partitions)
        if found != words:
            problems.append(f"{role} topic {topic} holds {found:,} records, expected {words:,}")
    if problems:
        raise SystemExit(f"{side.name}: " + "; ".join(problems))
    rate = result["records"] / result["seconds"]
    rebalanced = ", with a rebalance inside the clock" if result.get("rebalanced") else ""
    print(
        f"progress: {side.name:<16} {rate:>10,.0f} sentences/s, {result['seconds']:.1f} s "
        f"(wall {result['wall']:.1f} s), CPU {result['cpu'] / result['records'] * 1e6:.0f} "
        f"us/sentence (all threads), {result['commits']} commits, "
        f"peak RSS {result['rss_peak_kb'] / 1024:.0f} MiB{rebalanced}",
        file=sys.stderr,
        flush=True,
    )
    side.runs.append(result)


def rss_summary(result: dict) -> list[str]:
    """Lines showing the child's VmRSS over its run, with and without LevelDB's memory."""
    samples = result["samples"]
    records = result["target"]  # records processed, re-keyed ones included
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


# -- the command line -----------------------------------------------------------------

#: Every variant, in the order of the table: (label, what it is).
VARIANTS: dict[str, tuple[str, str]] = {
    "readme": (
        "readme",
        "README app: split, group_by word, count in a Table, one output per word",
    ),
    "no-outputs": ("no outputs", "the README app without its ctx.send (re-keying kept)"),
    "raw-kafka-python": (
        "raw kafka-python",
        "one KafkaConsumer + KafkaProducer.send: re-key, read back, dict, output",
    ),
    "count-only": ("count only", "Worker, one processor counting words in place, no outputs"),
    "count-only-raw": (
        "count only raw",
        "KafkaConsumer, dict per partition, changelog send, plyvel WriteBatch",
    ),
    "embedded": ("embedded", "the count only Worker on the embedded log"),
}
#: (numerator, denominator, target, how the target reads)
RATIOS = (
    ("readme", "raw-kafka-python", 1.5, ">= 1.5x"),
    ("readme", "no-outputs", 0.5, ">= 0.5"),
    ("count-only", "count-only-raw", 0.6, ">= 60%"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="host:port of a broker (default: start one)")
    parser.add_argument(
        "--sentences",
        "--records",
        dest="records",
        metavar="N",
        type=int,
        default=100_000,
        help="input sentences (100000)",
    )
    parser.add_argument("--partitions", type=int, default=4, help="source partitions (4)")
    parser.add_argument(
        "--commit-interval", type=float, default=1.0, help="seconds between commits (1.0)"
    )
    parser.add_argument("--vocabulary", type=int, default=10_000, help="distinct words (10000)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per variant (1)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="give up a run after this many s (1800)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)} (all)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="readme",
        choices=("readme", "no-outputs", "count-only"),
        help="cProfile one more worker of this variant (readme)",
    )
    parser.add_argument("--skip-embedded", action="store_true", help="leave out embedded")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, report on stderr")
    args = parser.parse_args(argv)
    if min(args.records, args.partitions, args.vocabulary, args.repeat) < 1:
        parser.error("--sentences, --partitions, --vocabulary and --repeat must be >= 1")
    if args.commit_interval <= 0:
        parser.error("--commit-interval must be > 0")
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown or not chosen:
        parser.error(f"--variants takes a subset of {', '.join(VARIANTS)}, got {args.variants!r}")
    if args.skip_embedded and "embedded" in chosen:
        chosen.remove("embedded")
    args.variants = [v for v in VARIANTS if v in chosen]
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
    sides = {key: Side(label, what) for key, (label, what) in VARIANTS.items()}
    on_kafka = [v for v in args.variants if v != "embedded"]
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

        def worker_run(kind: str, broker_url: str, profile: bool = False) -> dict:
            store = tempfile.mkdtemp(prefix="worker-", dir=root)
            try:
                return in_child(
                    sides[kind if broker_url == url else "embedded"].name,
                    run_worker,
                    broker_url,
                    topic,
                    store,
                    n,
                    words,
                    p,
                    ci,
                    limit,
                    kind,
                    profile,
                )
            finally:
                shutil.rmtree(store, ignore_errors=True)

        def count_raw_run() -> dict:
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
                return in_child(
                    sides["count-only-raw"].name,
                    run_raw,
                    bootstrap,
                    topic,
                    changelog,
                    store,
                    n,
                    p,
                    ci,
                    limit,
                )
            finally:
                shutil.rmtree(store, ignore_errors=True)

        def raw_rekey_run() -> dict:
            from statestream.log.base import TopicSpec

            prefix = f"bench-raw-rekey-{uuid.uuid4().hex[:8]}"
            repart, output = f"{prefix}-words-repartition", f"{prefix}-word-counts"
            create_topics(
                url,
                [TopicSpec(repart, p, cleanup_policy="delete"), TopicSpec(output, p)],
            )
            return in_child(
                sides["raw-kafka-python"].name,
                run_raw_rekey,
                bootstrap,
                topic,
                repart,
                output,
                n,
                words,
                ci,
                limit,
            )

        runners: dict[str, Callable[[], dict]] = {
            "readme": lambda: worker_run("readme", url),
            "no-outputs": lambda: worker_run("no-outputs", url),
            "raw-kafka-python": raw_rekey_run,
            "count-only": lambda: worker_run("count-only", url),
            "count-only-raw": count_raw_run,
        }
        for i in range(args.repeat):
            for variant in on_kafka if i % 2 == 0 else on_kafka[::-1]:
                check(sides[variant], runners[variant](), n, words, bootstrap, p)
        if args.profile:
            print(f"profiling one more {args.profile} worker run ...", file=sys.stderr, flush=True)
            profile_text = worker_run(args.profile, url, profile=True)["profile"]
        if "embedded" in args.variants:
            embedded_url = f"embedded://{root}/log"
            print("producing the same sentences to the embedded log ...", file=sys.stderr)
            produced["embedded"] = produce_embedded(embedded_url, topic, n, args.vocabulary, p)
            for _ in range(args.repeat):
                check(sides["embedded"], worker_run("count-only", embedded_url), n, words, None, p)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    out = sys.stderr if args.json else sys.stdout
    ran = [v for v in args.variants if sides[v].runs]
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
        f"{p} partitions; commit interval {ci:g} s; best of R={args.repeat}, "
        "each run in a spawned child",
        file=out,
    )
    print(
        "produce (untimed for the figures): "
        + ", ".join(f"{k} {n / v['seconds']:,.0f} records/s" for k, v in produced.items()),
        file=out,
    )
    print(file=out)
    columns = (
        f"{'variant':<16} {'sentences/s':>11} {'seconds':>8} {'wall':>7} {'CPU us/s.':>9} "
        f"{'commits':>7} {'keys':>6} {'RSS before':>10} {'RSS peak':>9}  what"
    )
    print(columns, file=out)
    print("-" * (len(columns) + 66), file=out)
    for variant in ran:
        side = sides[variant]
        best = side.best
        print(
            f"{side.name:<16} {side.rate:>11,.0f} {best['seconds']:>8.1f} {best['wall']:>7.1f} "
            f"{best['cpu'] / best['records'] * 1e6:>9.0f} {best['commits']:>7} "
            f"{best['keys']:>6,} {best['rss_before_kb'] / 1024:>6.0f} MiB "
            f"{best['rss_peak_kb'] / 1024:>5.0f} MiB  {side.description}",
            file=out,
        )
    print(
        "seconds: first partition ready to last final commit; wall: the whole run() / "
        "subscribe..close; CPU us/s.: process CPU time (all threads) per sentence",
        file=out,
    )
    ratios = {}
    for top, bottom, target, reads in RATIOS:
        if sides[top].runs and sides[bottom].runs:
            ratio = sides[top].rate / sides[bottom].rate
            ratios[f"{top}/{bottom}"] = ratio
            print(
                f"{sides[top].name} / {sides[bottom].name}: {ratio:.2f} (target {reads}: "
                f"{'met' if ratio >= target else 'MISSED'})",
                file=out,
            )
    print(file=out)
    for variant in ran:
        print(f"{sides[variant].name}: RSS over the fastest run", file=out)
        for line in rss_summary(sides[variant].best):
            print(line, file=out)
    print(f"total time {total:.0f} s", file=out)
    if profile_text is not None:
        print(file=out)
        print(
            f"cProfile of one {args.profile} worker run (in its child, one profiler per thread):",
            file=out,
        )
        print(profile_text, file=out)
    if args.json:
        json.dump(
            {
                "records": n,
                "sentences": n,
                "words": words,
                "partitions": p,
                "commit_interval": ci,
                "vocabulary": args.vocabulary,
                "repeat": args.repeat,
                "produce": produced,
                "total_seconds": total,
                "ratios": ratios,
                "sides": [sides[v].as_json() for v in ran],
                "profile": profile_text,
            },
            sys.stdout,
            indent=2,
        )
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
