"""``app.query`` while the worker runs: reads per second, and what a busy reader costs the worker.

Run::

    .venv/bin/python benchmarks/bench_queries.py [--sentences N] [--partitions P]
        [--idle-seconds S] [--repeat R] [--json]

The app is bench_worker.py's ``count only`` word count (LevelDB stores,
embedded log, commit interval 1 s). Three parts, each in a spawned child
(fresh interpreter, LevelDB directories and log), in one run:

``worker``
    the worker processes N sentences (default 200,000), no reader;
``worker + reader``
    the same, while one thread of the same process calls
    ``app.query("counts", word)`` for random words of the vocabulary as fast
    as it can (a busy reader: no pause between answers; 1 ms after a refusal,
    while the worker starts or stops);
``idle reads``
    once the worker processed everything, the same reader for S seconds
    (default 5) against the idle worker.

Reported: the worker's sentences/s with and without the reader (clock: first
``on_assigned`` to last ``on_revoked``, as in bench_worker.py) and their
ratio (target: the busy reader costs at most 15%), reads/s during processing
and when idle. A reader in the worker's process shares its interpreter lock:
each read's Python (locating the key, decoding) runs while no partition
thread does; LevelDB's own work runs without the lock.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_worker as bw

TARGET_COST = 0.15


def _reader(app: Any, words: list[str], stop: threading.Event, counts: list[int]) -> None:
    """Query random words until ``stop``, without pause between answers; count answers
    and refusals (the worker not started or stopping, a partition not restored:
    after those it waits 1 ms, as a client retrying would)."""
    from statestream.errors import QueryError

    rng = random.Random(7)
    query = app.query
    while not stop.is_set():
        try:
            query(bw.TABLE, rng.choice(words))
            counts[0] += 1
        except QueryError:
            counts[1] += 1
            time.sleep(0.001)  # not running yet or any more, or not restored: as a client would


def run(url: str, topic: str, records: int, vocab: int, mode: str, idle: float, progress: Any):
    """Child: one worker run (``mode``: "plain", "reader" or "idle")."""
    from statestream.worker.runner import Worker, WorkerStatus

    store_dir = tempfile.mkdtemp(prefix="statestream-bench-queries-")
    try:
        app = bw._wordcount_app(f"bench-q-{uuid.uuid4().hex[:8]}", topic, url, store_dir, 1.0)
        words = bw.vocabulary(vocab)[0]
        stop = threading.Event()
        counts = [0, 0]
        reader = threading.Thread(target=_reader, args=(app, words, stop, counts), daemon=True)
        done = threading.Event()
        marks: dict[str, float] = {}

        def on_status(status: WorkerStatus) -> None:
            processed = status.counters.get("processed", 0)
            progress[0] = processed
            if processed >= records and not done.is_set():
                done.set()
                marks["processed"] = time.perf_counter()
                if mode != "idle":
                    worker.request_stop()

        worker = Worker(app, on_status=on_status, status_interval=0.05)
        if mode == "reader":
            reader.start()
        thread = threading.Thread(target=worker.run)
        thread.start()
        idle_reads = 0.0
        if mode == "idle":
            done.wait(600)
            time.sleep(1.5)  # the last commit lands
            reader.start()
            time.sleep(idle)
            stop.set()
            reader.join()
            idle_reads = counts[0] / idle
            worker.request_stop()
        thread.join()
        stop.set()
        if reader.is_alive():
            reader.join()
        seconds = max(bw._HOOK_TIMES["revoked"]) - min(bw._HOOK_TIMES["assigned"])
        return {
            "seconds": seconds,
            "records": records,
            "reads": counts[0],
            "refused": counts[1],
            "idle_reads_per_s": idle_reads,
        }
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--vocabulary", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each part (best kept)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="statestream-bench-queries-log-")
    try:
        url = f"embedded://{root}/log"
        topic = "sentences"
        print(f"producing {args.sentences:,} sentences ...", file=sys.stderr)
        bw.produce_embedded(url, topic, args.sentences, args.vocabulary, args.partitions)
        best: dict[str, dict] = {}
        for i in range(args.repeat):
            for mode in ("plain", "reader", "idle") if i % 2 == 0 else ("reader", "plain", "idle"):
                res = bw.in_child(
                    f"{mode} {i + 1}",
                    run,
                    url,
                    topic,
                    args.sentences,
                    args.vocabulary,
                    mode,
                    args.idle_seconds,
                )
                rate = res["records"] / res["seconds"]
                print(f"progress: {mode}: {rate:,.0f} sentences/s", file=sys.stderr)
                if mode not in best or rate > best[mode]["records"] / best[mode]["seconds"]:
                    best[mode] = res
    finally:
        shutil.rmtree(root, ignore_errors=True)
    plain = best["plain"]["records"] / best["plain"]["seconds"]
    busy = best["reader"]["records"] / best["reader"]["seconds"]
    reads_busy = best["reader"]["reads"] / best["reader"]["seconds"]
    reads_idle = best["idle"]["idle_reads_per_s"]
    cost = 1 - busy / plain
    report = {
        "sentences": args.sentences,
        "worker_sentences_per_s": plain,
        "worker_with_reader_sentences_per_s": busy,
        "cost": cost,
        "reads_per_s_busy": reads_busy,
        "reads_per_s_idle": reads_idle,
        "refused_while_restoring": best["reader"]["refused"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"statestream query benchmark: {args.sentences:,} sentences, {args.partitions} "
        f"partitions, LevelDB, embedded log; best of {args.repeat} runs each"
    )
    print(f"  worker alone            {plain:>10,.0f} sentences/s")
    print(
        f"  worker + busy reader    {busy:>10,.0f} sentences/s  ({cost:.1%} slower; target <= 15%: "
        f"{'met' if cost <= TARGET_COST else 'MISSED'})"
    )
    print(f"  reads/s while busy      {reads_busy:>10,.0f}")
    print(f"  reads/s, worker idle    {reads_idle:>10,.0f}")
    print(f"  reads refused (partition not ready or elsewhere) {best['reader']['refused']:,}")
    print(
        "command line:\n  .venv/bin/python benchmarks/bench_queries.py "
        + " ".join(argv or sys.argv[1:])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
