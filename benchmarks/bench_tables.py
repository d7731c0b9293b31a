"""Throughput of ``Table`` reads and writes, next to the bare ``LevelDBStore`` below them.

Run::

    .venv/bin/python benchmarks/bench_tables.py [--n N] [--commit-every C] [--repeat R] [--json]

The table side is what a processor does: a ``TableManager`` on the embedded log
(``embedded:///<tmp>/log``) with a LevelDB store (``leveldb:///<tmp>/...``), one
table (default ``json`` key and value codecs), partition 0 opened with
``open_partition``, restored with ``restore_partition(0, {})`` and bound to the
thread with ``bind(0)``. For every operation ``begin_record(0, "bench-src", i)``
and then ``table[k] = v`` or ``table[k]``; every C operations (default 1000)
``manager.commit(0, lambda: None)``, which produces the dirty keys to the
changelog with their source headers, flushes, and writes them to the store in
one batch with the changelog offset.

``set``
    N fresh keys (``"key:%08d"``, shuffled) assigned a 100-character string each,
    committed every C operations; the clock covers the whole loop, commits
    included. The share of that time spent inside ``manager.commit`` is shown.
``get``
    ``table[k]`` for every key, in a random order different from the insertion
    order, on a table loaded by a ``set`` pass (every key exists); a commit every
    C operations (it finds nothing dirty and empties the read buffer).

The raw baseline, measured in the same run on the same data, is the
``LevelDBStore`` itself, opened with the same (default) options:

* ``set``: ``store.write(batch, offset)`` with exactly the batches the commits
  write (the same encoded keys and values, C per batch, one offset each);
* ``get``: ``store.get(encoded_key)`` for the same lookups.

So the ratio shows everything the table layer adds: codecs, the buffer, the
changelog produce and flush on the embedded log, the commit protocol. It is
not a like-for-like comparison of durability: the table side also writes the
changelog.

Fairness: keys, values, encoded batches and lookup lists are built before
timing. Writes start from fresh, empty directories each run; reads use a store
and a table loaded the same way (the same batches). Opening, restoring and
closing are untimed. Table and raw runs alternate; one warm-up run of each is
discarded; the garbage collector is off while timing; the best (fastest) of R
runs is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import plyvel
from _shared import package_version  # benchmarks/ is on sys.path

from statestream.config import LevelDBOptions
from statestream.log import open_transport
from statestream.serde import get_codec
from statestream.stores.leveldb import LevelDBStore
from statestream.tables.manager import TableManager
from statestream.tables.table import Table

SEED = 20240601
VALUE_CHARS = 100
TABLE = "bench"
PARTITION = 0
SOURCE_TOPIC = "bench-src"
APP_ID = "bench"


@dataclass(frozen=True)
class Workload:
    n: int
    commit_every: int
    #: ``(key, value)`` in insertion order (the table's objects).
    pairs: list[tuple[str, str]]
    #: Every key once, in a random order different from the insertion order.
    lookups: list[str]
    #: The encoded pairs cut into the batches a commit writes.
    batches: list[dict[bytes, bytes]]
    #: ``lookups``, encoded.
    encoded_lookups: list[bytes]


def make_workload(n: int, commit_every: int) -> Workload:
    rng = random.Random(SEED)
    keys = [f"key:{i:08d}" for i in range(n)]
    rng.shuffle(keys)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    pairs = [(key, "".join(rng.choices(letters, k=VALUE_CHARS))) for key in keys]
    lookups = list(keys)
    rng.shuffle(lookups)
    key_codec, value_codec = get_codec("json"), get_codec("json")
    batches = [
        {key_codec.encode(k): value_codec.encode(v) for k, v in pairs[i : i + commit_every]}
        for i in range(0, n, commit_every)
    ]
    return Workload(
        n=n,
        commit_every=commit_every,
        pairs=pairs,
        lookups=lookups,
        batches=batches,
        encoded_lookups=[key_codec.encode(k) for k in lookups],
    )


def timed(run: Callable[[], object]) -> float:
    """Return the wall time of ``run()`` in seconds, with the garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    finally:
        gc.enable()


@dataclass
class Result:
    operation: str
    raw_baseline: str
    ops: int
    table_seconds: list[float] = field(default_factory=list)
    raw_seconds: list[float] = field(default_factory=list)
    #: Seconds inside ``manager.commit`` during each table run.
    commit_seconds: list[float] = field(default_factory=list)

    @property
    def table_ops_per_s(self) -> float:
        return self.ops / min(self.table_seconds)

    @property
    def raw_ops_per_s(self) -> float:
        return self.ops / min(self.raw_seconds)

    @property
    def ratio(self) -> float:
        return self.table_ops_per_s / self.raw_ops_per_s

    @property
    def commit_share(self) -> float:
        best = self.table_seconds.index(min(self.table_seconds))
        return self.commit_seconds[best] / self.table_seconds[best]

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(
            table_ops_per_s=self.table_ops_per_s,
            raw_ops_per_s=self.raw_ops_per_s,
            ratio=self.ratio,
            commit_share=self.commit_share,
        )
        return data


class TableSide:
    """A manager on a fresh embedded log and LevelDB directory, partition 0 bound."""

    def __init__(self, root: str) -> None:
        self.root = tempfile.mkdtemp(prefix="tables-", dir=root)
        self.transport = open_transport(f"embedded://{self.root}/log")
        self.table: Table[str, str] = Table(TABLE)
        self.manager = TableManager(
            APP_ID, [self.table], self.transport, f"leveldb://{self.root}/store"
        )
        self.manager.ensure_changelogs(1)
        self.manager.open_partition(PARTITION)
        self.manager.restore_partition(PARTITION, {})
        self.manager.bind(PARTITION)

    def close(self) -> None:
        try:
            self.manager.close()
            self.transport.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def open_raw(root: str) -> tuple[LevelDBStore, str]:
    path = tempfile.mkdtemp(prefix="raw-", dir=root)
    return LevelDBStore(path, TABLE, PARTITION), path


def close_raw(store: LevelDBStore, path: str) -> None:
    store.close()
    shutil.rmtree(path, ignore_errors=True)


def table_set(side: TableSide, w: Workload) -> tuple[float, float]:
    """Run the ``set`` loop; return (total seconds, seconds inside commit)."""
    manager, table = side.manager, side.table
    begin, commit = manager.begin_record, manager.commit
    every = w.commit_every
    in_commit = 0.0

    def noop() -> None:
        return None

    def run() -> None:
        nonlocal in_commit
        clock = time.perf_counter
        for i, (key, value) in enumerate(w.pairs, 1):
            begin(PARTITION, SOURCE_TOPIC, i - 1)
            table[key] = value
            if i % every == 0:
                t = clock()
                commit(PARTITION, noop)
                in_commit += clock() - t
        if w.n % every:
            t = clock()
            commit(PARTITION, noop)
            in_commit += clock() - t

    return timed(run), in_commit


def table_get(side: TableSide, w: Workload) -> tuple[float, float]:
    manager, table = side.manager, side.table
    begin, commit = manager.begin_record, manager.commit
    every = w.commit_every
    in_commit = 0.0

    def noop() -> None:
        return None

    def run() -> None:
        nonlocal in_commit
        clock = time.perf_counter
        for i, key in enumerate(w.lookups, 1):
            begin(PARTITION, SOURCE_TOPIC, i - 1)
            table[key]
            if i % every == 0:
                t = clock()
                commit(PARTITION, noop)
                in_commit += clock() - t
        if w.n % every:
            t = clock()
            commit(PARTITION, noop)
            in_commit += clock() - t

    return timed(run), in_commit


def raw_set(store: LevelDBStore, w: Workload) -> float:
    def run() -> None:
        write = store.write
        for offset, batch in enumerate(w.batches):
            write(batch, offset)

    return timed(run)


def raw_get(store: LevelDBStore, w: Workload) -> float:
    def run() -> None:
        get = store.get
        for key in w.encoded_lookups:
            get(key)

    return timed(run)


def bench(w: Workload, repeat: int, root: str) -> list[Result]:
    every = w.commit_every
    set_result = Result("set", f"store.write(batch of {every}, offset)", w.n)
    get_result = Result("get", "store.get(k)", w.n)

    def set_table_trial() -> tuple[float, float]:
        side = TableSide(root)
        try:
            return table_set(side, w)
        finally:
            side.close()

    def set_raw_trial() -> float:
        store, path = open_raw(root)
        try:
            return raw_set(store, w)
        finally:
            close_raw(store, path)

    # Reads: one table and one store, loaded the same way, kept for all runs.
    loaded_side = TableSide(root)
    loaded_raw, loaded_path = open_raw(root)
    try:
        table_set(loaded_side, w)
        raw_set(loaded_raw, w)
        check(loaded_side, loaded_raw, w)
        for result, table_trial, raw_trial in [
            (set_result, set_table_trial, set_raw_trial),
            (get_result, lambda: table_get(loaded_side, w), lambda: raw_get(loaded_raw, w)),
        ]:
            table_trial()  # warm-up, discarded
            raw_trial()
            for i in range(repeat):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for which in order:
                    if which == 0:
                        seconds, in_commit = table_trial()
                        result.table_seconds.append(seconds)
                        result.commit_seconds.append(in_commit)
                    else:
                        result.raw_seconds.append(raw_trial())
            print(
                f"progress: {result.operation:<4} {result.ratio:7.1%}", file=sys.stderr, flush=True
            )
    finally:
        loaded_side.close()
        close_raw(loaded_raw, loaded_path)
    return [set_result, get_result]


def check(side: TableSide, store: LevelDBStore, w: Workload) -> None:
    """Both sides hold every key with its value (spot check) before reads are timed."""
    shard = side.manager.shard(TABLE, PARTITION)
    if shard.store.count() != w.n or store.count() != w.n:
        raise SystemExit(f"load check failed: {shard.store.count()} / {store.count()} keys")
    for key, value in w.pairs[:: max(1, w.n // 100)]:
        if side.table[key] != value:
            raise SystemExit(f"load check failed: table[{key!r}]")
    shard.discard()
    encoded = w.batches[0]
    for key, value in encoded.items():
        if store.get(key) != value:
            raise SystemExit(f"load check failed: store.get({key!r})")


def header(args: argparse.Namespace, root: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "statestream": package_version("statestream"),
        "plyvel": plyvel.__version__,
        "leveldb": plyvel.__leveldb_version__,
        "n": args.n,
        "commit_every": args.commit_every,
        "repeat": args.repeat,
        "statistic": "best of R runs (fastest), after one warm-up run",
        "value": f"{VALUE_CHARS}-character str, json codec (keys: json str)",
        "leveldb_options": dataclasses.asdict(LevelDBOptions()),
        "tmpdir": os.path.dirname(root),
    }


def print_table(info: dict[str, Any], results: list[Result], total: float, out: Any) -> None:
    print(
        f"statestream table benchmark: Python {info['python']}, statestream "
        f"{info['statestream']}, plyvel {info['plyvel']}, LevelDB {info['leveldb']}, "
        f"{info['cpus']} CPUs",
        file=out,
    )
    print(
        f"N={info['n']:,} ops, commit every {info['commit_every']} ops, values "
        f"{info['value']}, {info['statistic']}, R={info['repeat']}",
        file=out,
    )
    print(
        "table: TableManager on embedded:// log + leveldb:// store; raw: LevelDBStore, "
        f"default LevelDBOptions; under {info['tmpdir']}",
        file=out,
    )
    print(file=out)
    columns = (
        f"{'operation':<9} {'table ops/s':>12} {'raw ops/s':>12} {'ratio':>7} {'commit':>7}  raw"
    )
    print(columns, file=out)
    print("-" * (len(columns) + 30), file=out)
    for r in results:
        print(
            f"{r.operation:<9} {r.table_ops_per_s:>12,.0f} {r.raw_ops_per_s:>12,.0f} "
            f"{r.ratio:>7.1%} {r.commit_share:>7.1%}  {r.raw_baseline}",
            file=out,
        )
    print("commit = share of the table run spent inside manager.commit", file=out)
    print(file=out)
    print(f"total time {total:.1f} s", file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="operations (default 100000)")
    parser.add_argument(
        "--commit-every", type=int, default=1000, help="ops per commit (default 1000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs each (default 3)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    args = parser.parse_args(argv)
    if args.n < 1 or args.commit_every < 1 or args.repeat < 1:
        parser.error("--n, --commit-every and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    workload = make_workload(args.n, args.commit_every)
    root = tempfile.mkdtemp(prefix="statestream-bench-tables-")
    try:
        info = header(args, root)
        results = bench(workload, args.repeat, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    print_table(info, results, total, sys.stderr if args.json else sys.stdout)
    if args.json:
        document = dict(info, total_seconds=total, results=[r.as_json() for r in results])
        json.dump(document, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
