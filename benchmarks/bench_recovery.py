"""Restore rate of a table partition from its changelog, next to a bare consumer.

Run::

    .venv/bin/python benchmarks/bench_recovery.py [--bootstrap HOST:PORT] [--records N]
        [--keys K] [--batch B] [--repeat R] [--profile] [--skip-embedded] [--json]

Without ``--bootstrap`` a throwaway broker is started with
``scripts/kafka_broker.py`` (Java and Maven needed) and stopped at the end.

The changelog: one topic of one partition (``delete`` policy: a compacted topic
would be compacted by the broker under the test) holding N records (default
1,000,000), keys ``b"key:%06d"`` drawn at random from K (default 100,000) so
most keys are overwritten several times, 100-byte random values, and on every
record the statestream source headers (``source_headers("bench-src", i)``). It
is produced once, untimed, with a plain kafka-python ``KafkaProducer``
(``acks=1``, ``linger_ms=20``, 1 MiB batches).

Measured, in records per second, each run in a fresh child process
(``multiprocessing`` spawn) restoring into a fresh LevelDB directory:

``statestream``
    ``statestream.tables.recovery.restore(store, fetcher, tp, {"bench-src": 2**62},
    batch_size=B)`` with a ``LevelDBStore`` (default ``LevelDBOptions``) and the
    fetcher a ``TableManager`` uses (``transport.fetcher(isolation_level=
    "read_committed", reset="earliest")`` of ``open_transport("kafka://...")``).
    Every record is applied (its source offset is below the committed one), so
    the header check runs on all of them and nothing is skipped.
``raw``
    A bare kafka-python ``KafkaConsumer`` built with the same keyword arguments
    the transport gives it (manual ``assign``, ``seek_to_beginning``, the end
    offset from ``end_offsets``), polling up to B records at a time until the
    position reaches the end offset, putting every record's key and value into a
    plyvel ``WriteBatch`` written every B records, on a database opened with the
    same options as the store. No headers are read, no offset is stored, keys
    are not prefixed: it is the floor of the work.
``embedded``
    The same restore as ``statestream`` from the embedded log
    (``embedded:///<tmp>/log``), filled with the same records through the
    embedded transport's producer (untimed).

The clock covers the restore only (from the first ``assign`` to the last batch
written); opening the transport, the consumer and the store is untimed.
``ratio`` is statestream / raw (target: at least 80%). Peak RSS is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` read in each child after its run
(``before``: the same, read after imports and opening, before restoring), the
largest over the R runs. A restore that streamed keeps the difference small
whatever N is; loading the changelog into memory would add ~N x 150 bytes.

Sides alternate; one warm-up run of each is discarded; the best (fastest) of R
timed runs is reported. ``--profile`` runs one more statestream restore under
cProfile in its child and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _shared import (  # benchmarks/ is on sys.path
    Side,
    load_broker_module,
    package_version,
    peak_rss_kb,
)

SEED = 20240601
VALUE_SIZE = 100
SOURCE_TOPIC = "bench-src"
COMMITTED = 2**62
POLL_TIMEOUT_S = 0.5
REPO_ROOT = Path(__file__).resolve().parents[1]
TABLE = "bench"


# -- the changelog ----------------------------------------------------------------


def records(n: int, keys: int) -> Any:
    """Yield ``(key, value, headers)`` for the changelog, deterministically."""
    from statestream.tables.headers import source_headers

    rng = random.Random(SEED)
    for i in range(n):
        key = b"key:%06d" % rng.randrange(keys)
        yield key, rng.randbytes(VALUE_SIZE), source_headers(SOURCE_TOPIC, i)


def produce_kafka(bootstrap: str, topic: str, n: int, keys: int) -> float:
    """Create the topic and fill it with kafka-python (untimed for the report)."""
    from kafka import KafkaProducer

    from statestream.log import open_transport
    from statestream.log.base import TopicSpec

    transport = open_transport(f"kafka://{bootstrap}")
    try:
        admin = transport.admin()
        admin.ensure_topic(TopicSpec(topic, 1, cleanup_policy="delete"))
        admin.close()
    finally:
        transport.close()
    started = time.perf_counter()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        enable_idempotence=False,
    )
    try:
        send = producer.send
        for key, value, headers in records(n, keys):
            send(topic, key=key, value=value, headers=list(headers), partition=0)
        producer.flush()
    finally:
        producer.close()
    return time.perf_counter() - started


def produce_embedded(url: str, topic: str, n: int, keys: int) -> float:
    from statestream.log import open_transport
    from statestream.log.base import TopicSpec

    transport = open_transport(url)
    try:
        admin = transport.admin()
        admin.ensure_topic(TopicSpec(topic, 1, cleanup_policy="delete"))
        admin.close()
        started = time.perf_counter()
        producer = transport.producer()
        try:
            send = producer.send
            for key, value, headers in records(n, keys):
                send(topic, key, value, partition=0, headers=headers)
            producer.flush()
        finally:
            producer.close()
        return time.perf_counter() - started
    finally:
        transport.close()


# -- the restores (each in its own child process) ---------------------------------


def restore_statestream(url: str, topic: str, store_dir: str, batch: int, profile: bool) -> dict:
    """Child: restore ``topic``[0] into a fresh LevelDBStore through statestream."""
    from statestream.log import open_transport
    from statestream.stores.leveldb import LevelDBStore
    from statestream.tables.recovery import restore
    from statestream.types import TopicPartition

    transport = open_transport(url)
    store = LevelDBStore(store_dir, TABLE, 0)
    fetcher = transport.fetcher(isolation_level="read_committed", reset="earliest")
    tp = TopicPartition(topic, 0)
    before = peak_rss_kb()
    profiler = cProfile.Profile() if profile else None
    try:
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        outcome = restore(store, fetcher, tp, {SOURCE_TOPIC: COMMITTED}, batch_size=batch)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        result = {
            "seconds": seconds,
            "records": outcome.applied + outcome.skipped,
            "applied": outcome.applied,
            "skipped": outcome.skipped,
            "offset": outcome.offset,
            "keys": store.count(),
            "rss_before_kb": before,
            "rss_peak_kb": peak_rss_kb(),
        }
    finally:
        fetcher.close()
        store.close()
        transport.close()
    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)
        result["profile"] = text.getvalue()
    return result


def restore_raw(bootstrap: str, topic: str, db_dir: str, batch: int) -> dict:
    """Child: a bare KafkaConsumer writing every record into plyvel WriteBatches."""
    import plyvel
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition

    from statestream.config import LevelDBOptions
    from statestream.log.kafka_options import KafkaOptions

    opts = LevelDBOptions()
    db = plyvel.DB(
        db_dir,
        create_if_missing=True,
        paranoid_checks=opts.paranoid_checks,
        write_buffer_size=opts.write_buffer_size,
        max_open_files=opts.max_open_files,
        lru_cache_size=opts.lru_cache_size,
        block_size=opts.block_size,
        bloom_filter_bits=opts.bloom_filter_bits,
        compression="snappy" if opts.compression else None,
    )
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **KafkaOptions().consumer_config(),
    )
    ktp = KafkaTopicPartition(topic, 0)
    before = peak_rss_kb()
    try:
        started = time.perf_counter()
        consumer.assign([ktp])
        consumer.seek_to_beginning(ktp)
        end = consumer.end_offsets([ktp])[ktp]
        count = 0
        pending = 0
        wb = db.write_batch(sync=opts.sync)
        poll = consumer.poll
        timeout_ms = int(POLL_TIMEOUT_S * 1000)
        while consumer.position(ktp) < end:
            for part in poll(timeout_ms=timeout_ms, max_records=batch).values():
                put = wb.put
                for record in part:
                    put(record.key, record.value)
                pending += len(part)
                count += len(part)
            if pending >= batch:
                wb.write()
                wb = db.write_batch(sync=opts.sync)
                pending = 0
        wb.write()
        seconds = time.perf_counter() - started
        keys = sum(1 for _ in db.iterator(include_value=False))
        return {
            "seconds": seconds,
            "records": count,
            "keys": keys,
            "rss_before_kb": before,
            "rss_peak_kb": peak_rss_kb(),
        }
    finally:
        consumer.close(autocommit=False)
        db.close()


def in_child(target: Any, *args: Any) -> dict:
    """Run ``target(*args)`` in a fresh spawned process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        result: dict = pool.apply(target, args)
    return result


# -- the comparison -----------------------------------------------------------------


def run_sides(sides: list[tuple[Side, Any]], repeat: int, root: str, expect: int) -> None:
    """Warm up each side once, then alternate R timed runs; each run in a fresh dir."""
    for i in range(repeat + 1):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for side, make_run in order:
            path = tempfile.mkdtemp(prefix=f"{side.name}-", dir=root)
            try:
                result = make_run(path)
            finally:
                shutil.rmtree(path, ignore_errors=True)
            if result["records"] != expect:
                raise SystemExit(
                    f"{side.name}: read {result['records']} records, expected {expect}"
                )
            rate = result["records"] / result["seconds"]
            label = "warm-up" if i == 0 else f"run {i}"
            print(
                f"progress: {side.name:<11} {label:<7} {rate:>10,.0f} records/s, "
                f"{result['seconds']:.2f} s, peak RSS {result['rss_peak_kb'] / 1024:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
            if i > 0:
                side.runs.append(result)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="host:port of a broker (default: start one)")
    parser.add_argument("--records", type=int, default=1_000_000, help="records (1000000)")
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys (100000)")
    parser.add_argument("--batch", type=int, default=10_000, help="records per batch (10000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (3)")
    parser.add_argument("--profile", action="store_true", help="cProfile one statestream run")
    parser.add_argument("--skip-embedded", action="store_true", help="measure Kafka only")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    args = parser.parse_args(argv)
    if min(args.records, args.keys, args.batch, args.repeat) < 1:
        parser.error("--records, --keys, --batch and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="statestream-bench-recovery-")
    broker = None
    topic = f"bench-recovery-{uuid.uuid4().hex[:8]}-changelog"
    profile_text = None
    produce_seconds: dict[str, float] = {}
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            print("starting a Kafka broker (scripts/kafka_broker.py) ...", file=sys.stderr)
            broker = load_broker_module().start_broker()
            bootstrap = broker.bootstrap
        print(f"producing {args.records:,} records to {topic} ...", file=sys.stderr, flush=True)
        produce_seconds["kafka"] = produce_kafka(bootstrap, topic, args.records, args.keys)
        url = f"kafka://{bootstrap}"
        statestream = Side("statestream", "restore() + LevelDBStore + kafka transport fetcher")
        raw = Side("raw", "bare KafkaConsumer + plyvel WriteBatch")
        run_sides(
            [
                (
                    statestream,
                    lambda d: in_child(restore_statestream, url, topic, d, args.batch, False),
                ),
                (raw, lambda d: in_child(restore_raw, bootstrap, topic, d, args.batch)),
            ],
            args.repeat,
            root,
            args.records,
        )
        if args.profile:
            path = tempfile.mkdtemp(prefix="profile-", dir=root)
            profile_text = in_child(restore_statestream, url, topic, path, args.batch, True)[
                "profile"
            ]
        sides = [statestream, raw]
        if not args.skip_embedded:
            embedded_url = f"embedded://{root}/log"
            print("producing the same records to the embedded log ...", file=sys.stderr)
            produce_seconds["embedded"] = produce_embedded(
                embedded_url, topic, args.records, args.keys
            )
            embedded = Side("embedded", "restore() + LevelDBStore + embedded log fetcher")
            run_sides(
                [
                    (
                        embedded,
                        lambda d: in_child(
                            restore_statestream, embedded_url, topic, d, args.batch, False
                        ),
                    )
                ],
                args.repeat,
                root,
                args.records,
            )
            sides.append(embedded)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    out = sys.stderr if args.json else sys.stdout
    import plyvel

    print(
        f"statestream recovery benchmark: Python {platform.python_version()}, statestream "
        f"{package_version('statestream')}, kafka-python {package_version('kafka-python')}, plyvel "
        f"{plyvel.__version__}, LevelDB {plyvel.__leveldb_version__}, {os.cpu_count()} CPUs",
        file=out,
    )
    print(
        f"changelog: {args.records:,} records, keys from {args.keys:,}, {VALUE_SIZE}-byte values, "
        f"source headers on every record, 1 partition; batches of {args.batch:,}; "
        f"best of R={args.repeat} (one warm-up run discarded), each run in a spawned child",
        file=out,
    )
    print(
        "produce (untimed for the figures): "
        + ", ".join(f"{k} {args.records / s:,.0f} records/s" for k, s in produce_seconds.items()),
        file=out,
    )
    print(file=out)
    columns = (
        f"{'side':<12} {'records/s':>11} {'ratio':>7} {'seconds':>8} {'keys':>8} "
        f"{'RSS before':>11} {'RSS peak':>9}  what"
    )
    print(columns, file=out)
    print("-" * (len(columns) + 40), file=out)
    raw_rate = raw.rate
    for side in sides:
        best = side.best
        print(
            f"{side.name:<12} {side.rate:>11,.0f} {side.rate / raw_rate:>7.1%} "
            f"{best['seconds']:>8.2f} {best['keys']:>8,} "
            f"{side.rss_before_kb / 1024:>8.0f} MiB {side.rss_peak_kb / 1024:>5.0f} MiB  "
            f"{side.description}",
            file=out,
        )
    print("ratio = records/s / raw records/s (target for statestream: >= 80%)", file=out)
    print(f"total time {total:.0f} s", file=out)
    if profile_text is not None:
        print(file=out)
        print("cProfile of one statestream restore (in its child):", file=out)
        print(profile_text, file=out)
    if args.json:
        json.dump(
            {
                "records": args.records,
                "keys": args.keys,
                "batch": args.batch,
                "repeat": args.repeat,
                "produce_seconds": produce_seconds,
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
