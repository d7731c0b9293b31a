"""Throughput of the statestream stores against the raw structure or engine below them.

Run::

    .venv/bin/python benchmarks/bench_stores.py [--n N] [--batch B] [--repeat R] [--json]
        [--checks] [--cpu]

What is measured, for each store (``MemoryStore``; ``LevelDBStore`` in a temporary
directory; ``AerospikeStore`` when a server is given, see below), each figure in
operations per second where **one operation is one key**:

``put``
    ``store.write({key: value}, offset)`` once per key, offsets 0, 1, 2, ...: a
    one-key batch with an offset is how a store is written.
``batch_write``
    ``store.write(batch, offset)`` with batches of B keys (default 100), one offset
    per batch. Reported as keys/s (batches/s = keys/s / B).
``get``
    ``store.get(key)`` for every key, in a random order different from the
    insertion order; every key exists.
``get_many``
    ``store.get_many(keys)`` on that lookup order cut into chunks of B; keys/s.
``iterate``
    ``store.iterate()`` over the whole store (no bounds), consumed by
    ``collections.deque(..., maxlen=0)``; pairs/s.

Each figure is printed next to a *raw baseline* measured in the same run, on the
same data, in the same order:

* ``MemoryStore`` against a plain ``dict``: ``d[k] = v`` per key (for ``put`` and
  ``batch_write``, the loop runs over the same one-key / B-key dicts the store
  gets), ``d.get(k)``, ``[d.get(k) for k in chunk]``. ``dict`` has no order, so for
  ``iterate`` the baseline is a ``sortedcontainers.SortedDict`` holding the same
  pairs, scanned as ``(k, sd[k]) for k in sd.irange()`` -- the structure and
  access path ``MemoryStore`` uses -- not ``sorted(d.items())``, which would
  charge a sort to the baseline. Note that ``MemoryStore`` keeps a ``SortedDict``,
  so its write ratios include the cost of keeping keys sorted, not only the
  store's own code.
* ``LevelDBStore`` against raw plyvel on a separate temporary database opened with
  the same options (the :class:`~statestream.config.LevelDBOptions` defaults:
  write buffer, block cache, block size, bloom filter, snappy compression,
  ``sync``, ``paranoid_checks``; reads pass the store's ``verify_checksums``):
  ``db.put(k, v)``; ``db.write_batch()`` + ``put`` per key + ``write()``;
  ``db.get(k)``; ``[db.get(k) for k in chunk]`` (plyvel has no multi-get);
  ``db.iterator()``. The store's extra work is part of what is
  measured: it prefixes every key with one byte and puts the offset record into
  each batch (so a store ``put`` is a two-entry WriteBatch, while the raw
  ``db.put`` is one entry).
* ``AerospikeStore``, only when ``STATESTREAM_TEST_AEROSPIKE=host:port`` is set
  (namespace ``STATESTREAM_TEST_AEROSPIKE_NAMESPACE``, default ``test``; without
  it one line says the rows were skipped): ``put``, ``batch_write``, ``get`` and
  ``get_many`` (no ``iterate``: it is a scan) against the raw ``aerospike``
  client, the same client object the store uses: ``client.put(k, {"v": v})``;
  ``client.batch_write(BatchRecords([Write(k, [ops.write("v", v)]), ...]))`` per
  B-key batch; ``client.get(k)``; ``client.batch_read(chunk)``. Both sides use
  the :class:`~statestream.config.AerospikeOptions` default timeouts, send the
  user key (``POLICY_KEY_SEND``) with writes and build the key tuple
  ``(namespace, set, bytearray(key))`` inside the timed loop. The store's extra
  work is part of what is measured: a 5-byte key prefix, a partition bin and a
  key-rank bin next to the value, the batch's size check, a result check per
  record, and the offset record written after every ``write`` (a store ``put``
  is a one-record ``batch_write`` plus a generation-checked ``operate`` of the
  offset record: two round trips against the raw one; see docs/aerospike.md
  for why). Each run uses its own sets (``ssbench<random>.store-w`` and so on),
  truncated at the end. The goals for a real server, in the same run:
  ``batch_write`` at least 85% and ``get_many`` at least 90% of the raw client;
  the table says whether each was met (never an assertion).
  ``--aerospike-fake`` (not in ``--help``) runs these rows on the tests'
  in-process fake client instead: that checks the code path and the shape of
  the output only, its figures say nothing about a server (the fake spends
  most of the time in Python per bin, which a server does not), and the goals
  are not judged.

Fairness: both sides get the same keys (``b"key:%08d"``, shuffled), the same
100-byte random values, the same batch dicts and lookup lists (built before
timing). Writes start from a fresh, empty database (or dict, or Aerospike set:
the previous run's records are removed, untimed) for every timed run; reads use
databases loaded the same way (the same B-key batches), then fully compacted,
so the LSM shape does not favour either side. Opening,
loading and closing are never timed. Store and raw runs alternate; one warm-up
pass of each is discarded and sizes the runs: a pass (all N keys once) shorter
than 0.3 s is repeated within a run, on fresh state each time for writes, and
the run counts the mean per pass. The garbage collector is off while timing (as
in ``timeit``), and the **best** (fastest) of R timed runs is reported, not the
median: it is the figure least disturbed by other activity on the machine.

Reading the table: ``ratio`` = store ops/s / raw ops/s. 100% means the store
adds nothing measurable; 50% means the store layer costs as much as the engine
itself. Ratios are far more stable across machines than the absolute figures.
With ``--json`` the table goes to stderr and a JSON document to stdout.
``--cpu`` times with this process's CPU time instead of the wall clock: on a
machine shared with other work, far steadier (LevelDB's background threads
are counted, so writes still pay for compaction).

``--checks`` measures something else, instead of the rows above: the cost of
the LevelDB store's integrity checks, ``LevelDBStore`` with them against the
same store with both off (``paranoid_checks=false&verify_checksums=false``),
one row group per setting (``paranoid_checks`` alone, ``verify_checksums``
alone, both: the defaults), same workload, same pairing of runs:

``open_wal``
    opening a closed store whose write-ahead log holds the last batches (up to
    one memtable, ``write_buffer_size``): LevelDB replays it at open, which is
    where ``paranoid_checks`` acts. Each open is of a fresh copy (untimed), and
    closing is untimed; opens/s.
``open``
    opening a compacted store (nothing to replay); opens/s. The last row
    compares it, with the defaults, against a bare ``plyvel.DB`` open of the
    same directory: that is the whole price of a store open, including the
    check of ``CURRENT`` and the ``MANIFEST`` that runs whatever the options.
``batch_write``, ``get``, ``get_many``, ``iterate``
    as above, keys/s; reads run on compacted copies of one loaded store, larger
    than the block cache, as state usually is. ``verify_checksums`` costs a
    checksum of each block read from a table file, and LevelDB does not cache
    blocks it reads from a memory-mapped file, so point reads pay it each time.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TextIO, TypeVar

import plyvel
from sortedcontainers import SortedDict

from statestream.config import LevelDBOptions
from statestream.stores.leveldb import LevelDBStore
from statestream.stores.memory import MemoryStore

T = TypeVar("T")

VALUE_SIZE = 100
SEED = 20240601
#: Shortest timed run; quicker passes are repeated within it (as ``timeit`` autoranges).
MIN_RUN_SECONDS = 0.3
MAX_PASSES = 50
TABLE = "bench"
PARTITION = 0


# -- workload -----------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Every input of every measurement, built once before any timing."""

    n: int
    batch: int
    #: ``(key, value)`` in insertion order (keys shuffled).
    pairs: list[tuple[bytes, bytes]]
    #: The same pairs as one-key dicts, the argument of a single-put ``write``.
    singles: list[dict[bytes, bytes]]
    #: The same pairs cut into dicts of ``batch`` keys, in insertion order.
    batches: list[dict[bytes, bytes]]
    #: Every key once, in a random order different from the insertion order.
    lookups: list[bytes]
    #: ``lookups`` cut into lists of ``batch`` keys.
    lookup_chunks: list[list[bytes]]


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """Yield consecutive slices of ``items`` of length ``size`` (the last may be shorter)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def make_workload(n: int, batch: int) -> Workload:
    rng = random.Random(SEED)
    keys = [b"key:%08d" % i for i in range(n)]
    rng.shuffle(keys)
    pairs = [(key, rng.randbytes(VALUE_SIZE)) for key in keys]
    lookups = list(keys)
    rng.shuffle(lookups)
    return Workload(
        n=n,
        batch=batch,
        pairs=pairs,
        singles=[{key: value} for key, value in pairs],
        batches=[dict(chunk) for chunk in chunks(pairs, batch)],
        lookups=lookups,
        lookup_chunks=list(chunks(lookups, batch)),
    )


# -- timing -------------------------------------------------------------------


@dataclass
class Clock:
    """The clock of every measurement: the wall clock, or with ``--cpu`` this
    process's CPU time (LevelDB's background threads included), which other
    load on a shared machine disturbs far less."""

    now: Callable[[], float] = time.perf_counter


CLOCK = Clock()


def timed(run: Callable[[], object]) -> float:
    """Return the time of ``run()`` in seconds (see :class:`Clock`), with the GC off."""
    gc.collect()
    gc.disable()
    try:
        start = CLOCK.now()
        run()
        return CLOCK.now() - start
    finally:
        gc.enable()


Trial = Callable[[], float]


def on_fresh(
    open_: Callable[[], T], run: Callable[[T], object], close: Callable[[T], None]
) -> Trial:
    """A trial that times ``run`` on a freshly opened target; opening and closing are untimed."""

    def trial() -> float:
        target = open_()
        try:
            return timed(lambda: run(target))
        finally:
            close(target)

    return trial


def on_shared(target: T, run: Callable[[T], object]) -> Trial:
    """A trial that times ``run`` on a long-lived (read-only) target."""
    return lambda: timed(lambda: run(target))


@dataclass
class Result:
    store: str
    operation: str
    raw_baseline: str
    #: Keys per pass (every operation touches every key once per pass).
    ops_per_run: int
    #: Passes per timed run (see :func:`compare`).
    store_passes: int
    raw_passes: int
    #: Seconds per pass, one entry per timed run.
    store_seconds: list[float]
    raw_seconds: list[float]

    @property
    def store_ops_per_s(self) -> float:
        return self.ops_per_run / min(self.store_seconds)

    @property
    def raw_ops_per_s(self) -> float:
        return self.ops_per_run / min(self.raw_seconds)

    @property
    def ratio(self) -> float:
        return self.store_ops_per_s / self.raw_ops_per_s

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(
            store_ops_per_s=self.store_ops_per_s,
            raw_ops_per_s=self.raw_ops_per_s,
            ratio=self.ratio,
        )
        return data


def passes_for(seconds: float) -> int:
    """How many passes make one timed run last at least ``MIN_RUN_SECONDS``."""
    return max(1, min(MAX_PASSES, math.ceil(MIN_RUN_SECONDS / max(seconds, 1e-9))))


def sample(trial: Trial, passes: int) -> float:
    """Seconds per pass, averaged over ``passes`` consecutive passes (one timed run)."""
    return sum(trial() for _ in range(passes)) / passes


def compare(
    store: str,
    operation: str,
    raw_baseline: str,
    ops_per_run: int,
    store_trial: Trial,
    raw_trial: Trial,
    repeat: int,
) -> Result:
    """Warm both sides up once, then time ``repeat`` runs of each, alternating which goes first.

    The warm-up pass also sizes the runs: a side whose pass is shorter than
    ``MIN_RUN_SECONDS`` repeats it (each on fresh state where state matters) and
    reports the mean per pass, so that short passes are not at the mercy of
    scheduler noise.
    """
    store_passes = passes_for(store_trial())
    raw_passes = passes_for(raw_trial())
    store_seconds: list[float] = []
    raw_seconds: list[float] = []
    for i in range(repeat):
        if i % 2 == 0:
            store_seconds.append(sample(store_trial, store_passes))
            raw_seconds.append(sample(raw_trial, raw_passes))
        else:
            raw_seconds.append(sample(raw_trial, raw_passes))
            store_seconds.append(sample(store_trial, store_passes))
    result = Result(
        store,
        operation,
        raw_baseline,
        ops_per_run,
        store_passes,
        raw_passes,
        store_seconds,
        raw_seconds,
    )
    print(
        f"progress: {store:<8} {operation:<12} {result.ratio:7.1%}",
        file=sys.stderr,
        flush=True,
    )
    return result


def drain(iterable: Iterable[object]) -> None:
    """Consume an iterable as cheaply as Python allows."""
    collections.deque(iterable, maxlen=0)


# -- MemoryStore vs dict --------------------------------------------------------


def bench_memory(w: Workload, repeat: int) -> list[Result]:
    def new_store() -> MemoryStore:
        return MemoryStore(TABLE, PARTITION)

    def new_dict() -> dict[bytes, bytes]:
        return {}

    def close_store(store: MemoryStore) -> None:
        store.close()

    def drop_dict(d: dict[bytes, bytes]) -> None:
        d.clear()

    def store_put(store: MemoryStore) -> None:
        write = store.write
        for offset, changes in enumerate(w.singles):
            write(changes, offset)

    def dict_put(d: dict[bytes, bytes]) -> None:
        for changes in w.singles:
            for key, value in changes.items():
                d[key] = value

    def store_batch(store: MemoryStore) -> None:
        write = store.write
        for offset, changes in enumerate(w.batches):
            write(changes, offset)

    def dict_batch(d: dict[bytes, bytes]) -> None:
        for changes in w.batches:
            for key, value in changes.items():
                d[key] = value

    loaded = new_store()
    store_batch(loaded)
    plain = dict(w.pairs)
    ordered = SortedDict(plain)
    check_loaded(w, loaded.get, loaded.count(), loaded.iterate())

    def store_get(store: MemoryStore) -> None:
        get = store.get
        for key in w.lookups:
            get(key)

    def dict_get(d: dict[bytes, bytes]) -> None:
        get = d.get
        for key in w.lookups:
            get(key)

    def store_get_many(store: MemoryStore) -> None:
        get_many = store.get_many
        for keys in w.lookup_chunks:
            get_many(keys)

    def dict_get_many(d: dict[bytes, bytes]) -> None:
        get = d.get
        for keys in w.lookup_chunks:
            [get(key) for key in keys]

    def store_iterate(store: MemoryStore) -> None:
        drain(store.iterate())

    def sorted_pairs(sd: SortedDict) -> Iterator[tuple[bytes, bytes]]:
        for key in sd.irange():
            yield key, sd[key]

    def sorted_iterate(sd: SortedDict) -> None:
        drain(sorted_pairs(sd))

    name = "memory"
    try:
        return [
            compare(
                name, "put", "dict: d[k] = v", w.n,
                on_fresh(new_store, store_put, close_store),
                on_fresh(new_dict, dict_put, drop_dict),
                repeat,
            ),
            compare(
                name, "batch_write", "dict: d[k] = v per key", w.n,
                on_fresh(new_store, store_batch, close_store),
                on_fresh(new_dict, dict_batch, drop_dict),
                repeat,
            ),
            compare(
                name, "get", "dict: d.get(k)", w.n,
                on_shared(loaded, store_get),
                on_shared(plain, dict_get),
                repeat,
            ),
            compare(
                name, "get_many", "dict: [d.get(k) for k in chunk]", w.n,
                on_shared(loaded, store_get_many),
                on_shared(plain, dict_get_many),
                repeat,
            ),
            compare(
                name, "iterate", "SortedDict: irange() + sd[k]", w.n,
                on_shared(loaded, store_iterate),
                on_shared(ordered, sorted_iterate),
                repeat,
            ),
        ]  # fmt: skip
    finally:
        loaded.close()


# -- LevelDBStore vs plyvel -------------------------------------------------------


def open_raw(path: str, opts: LevelDBOptions) -> Any:
    """Open a plyvel DB with exactly the options ``LevelDBStore`` passes for ``opts``."""
    return plyvel.DB(
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


def compact(path: str, opts: LevelDBOptions) -> None:
    """Fully compact the (closed) database at ``path``."""
    db = open_raw(path, opts)
    try:
        db.compact_range()
    finally:
        db.close()


def check_loaded(
    w: Workload,
    get: Callable[[bytes], bytes | None],
    count: int,
    pairs: Iterable[tuple[bytes, bytes]],
) -> None:
    """Make sure a loaded target holds exactly the workload (untimed)."""
    if count != w.n:
        raise SystemExit(f"loaded {count} keys, expected {w.n}")
    expected = dict(w.pairs)
    for key in w.lookups[:1000]:
        if get(key) != expected[key]:
            raise SystemExit(f"wrong value for {key!r}")
    if list(pairs) != sorted(w.pairs):
        raise SystemExit("iteration does not match the loaded pairs")


def bench_leveldb(w: Workload, repeat: int, root: str, opts: LevelDBOptions) -> list[Result]:
    sequence = iter(range(1 << 30))

    def new_dir() -> str:
        return tempfile.mkdtemp(prefix=f"db{next(sequence)}-", dir=root)

    def new_store() -> LevelDBStore:
        return LevelDBStore(new_dir(), TABLE, PARTITION, opts)

    def new_raw() -> tuple[Any, str]:
        path = new_dir()
        return open_raw(path, opts), path

    def close_store(store: LevelDBStore) -> None:
        store.close()
        shutil.rmtree(os.path.dirname(os.path.dirname(store.path)))

    def close_raw(target: tuple[Any, str]) -> None:
        db, path = target
        db.close()
        shutil.rmtree(path)

    def store_put(store: LevelDBStore) -> None:
        write = store.write
        for offset, changes in enumerate(w.singles):
            write(changes, offset)

    def raw_put(target: tuple[Any, str]) -> None:
        put = target[0].put
        for key, value in w.pairs:
            put(key, value)

    def store_batch(store: LevelDBStore) -> None:
        write = store.write
        for offset, changes in enumerate(w.batches):
            write(changes, offset)

    def raw_batch(target: tuple[Any, str]) -> None:
        write_batch = target[0].write_batch
        sync = opts.sync
        for changes in w.batches:
            batch = write_batch(sync=sync)
            put = batch.put
            for key, value in changes.items():
                put(key, value)
            batch.write()

    # Read targets: loaded the same way (same batches), closed, compacted, reopened.
    store_dir = new_dir()
    loading = LevelDBStore(store_dir, TABLE, PARTITION, opts)
    store_batch(loading)
    loading.close()
    compact(loading.path, opts)
    loaded = LevelDBStore(store_dir, TABLE, PARTITION, opts)

    raw_dir = new_dir()
    raw_db = open_raw(raw_dir, opts)
    raw_batch((raw_db, raw_dir))
    raw_db.close()
    compact(raw_dir, opts)
    raw_db = open_raw(raw_dir, opts)

    check_loaded(w, loaded.get, loaded.count(), loaded.iterate())
    check_loaded(w, raw_db.get, sum(1 for _ in raw_db.iterator()), raw_db.iterator())

    def store_get(store: LevelDBStore) -> None:
        get = store.get
        for key in w.lookups:
            get(key)

    # Reads use the store's read options too: the checksum verification it
    # does by default is measured on its own by --checks.
    verify = opts.verify_checksums

    def raw_get(db: Any) -> None:
        get = db.get
        for key in w.lookups:
            get(key, verify_checksums=verify)

    def store_get_many(store: LevelDBStore) -> None:
        get_many = store.get_many
        for keys in w.lookup_chunks:
            get_many(keys)

    def raw_get_many(db: Any) -> None:
        get = db.get
        for keys in w.lookup_chunks:
            [get(key, verify_checksums=verify) for key in keys]

    def store_iterate(store: LevelDBStore) -> None:
        drain(store.iterate())

    def raw_iterate(db: Any) -> None:
        drain(db.iterator(verify_checksums=verify))

    name = "leveldb"
    try:
        return [
            compare(
                name, "put", "plyvel: db.put(k, v)", w.n,
                on_fresh(new_store, store_put, close_store),
                on_fresh(new_raw, raw_put, close_raw),
                repeat,
            ),
            compare(
                name, "batch_write", "plyvel: WriteBatch put + write", w.n,
                on_fresh(new_store, store_batch, close_store),
                on_fresh(new_raw, raw_batch, close_raw),
                repeat,
            ),
            compare(
                name, "get", "plyvel: db.get(k)", w.n,
                on_shared(loaded, store_get),
                on_shared(raw_db, raw_get),
                repeat,
            ),
            compare(
                name, "get_many", "plyvel: [db.get(k) for k in chunk]", w.n,
                on_shared(loaded, store_get_many),
                on_shared(raw_db, raw_get_many),
                repeat,
            ),
            compare(
                name, "iterate", "plyvel: db.iterator()", w.n,
                on_shared(loaded, store_iterate),
                on_shared(raw_db, raw_iterate),
                repeat,
            ),
        ]  # fmt: skip
    finally:
        loaded.close()
        raw_db.close()


# -- AerospikeStore vs the raw aerospike client -----------------------------------

AEROSPIKE_ENV = "STATESTREAM_TEST_AEROSPIKE"
AEROSPIKE_NAMESPACE_ENV = "STATESTREAM_TEST_AEROSPIKE_NAMESPACE"
AEROSPIKE_SKIPPED = (
    f"aerospike rows skipped: set {AEROSPIKE_ENV}=host:port (namespace from "
    f"{AEROSPIKE_NAMESPACE_ENV}, default 'test') to include them"
)
AEROSPIKE_FAKE_WARNING = (
    "aerospike-fake rows: in-process FAKE client (tests/fakes/aerospike.py), no server; "
    "these figures say nothing about a real Aerospike server"
)
#: Ratios a real server run should reach (store ops/s over raw ops/s, same run).
AEROSPIKE_GOALS = {"batch_write": 0.85, "get_many": 0.90}
#: Store tables (sets ``prefix + table``) and raw sets, all unique to the run.
AEROSPIKE_STORE_WRITES = "store-w"
AEROSPIKE_STORE_READS = "store-r"
AEROSPIKE_RAW_WRITES = "raw-w"
AEROSPIKE_RAW_READS = "raw-r"
#: The store's value bin; the raw side writes only this bin.
AEROSPIKE_VALUE_BIN = "v"
#: Keys per untimed batch_remove when emptying a raw set.
AEROSPIKE_REMOVE_CHUNK = 5000


@dataclass
class AerospikeTarget:
    """The cluster of the Aerospike rows (a server, or the fake): one client, this run's sets."""

    label: str
    fake: bool
    hosts: tuple[tuple[str, int], ...]
    namespace: str
    options: Any  # AerospikeOptions, with this run's set_prefix
    pool: Any  # ClientPool: the stores and the raw side share its one client
    lease: Any
    client_version: str

    @property
    def client(self) -> Any:
        return self.lease.client

    def set_name(self, table: str) -> str:
        return str(self.options.set_prefix + table)

    def sets(self) -> list[str]:
        return [
            self.set_name(table)
            for table in (
                AEROSPIKE_STORE_WRITES,
                AEROSPIKE_STORE_READS,
                AEROSPIKE_RAW_WRITES,
                AEROSPIKE_RAW_READS,
            )
        ]

    def info(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "fake": self.fake,
            "hosts": [f"{address}:{port}" for address, port in self.hosts],
            "namespace": self.namespace,
            "sets": self.sets(),
            "client": self.client_version,
        }

    def close(self) -> None:
        """Truncate this run's sets and release the client."""
        try:
            for set_name in self.sets():
                self.client.truncate(self.namespace, set_name, 0)
        finally:
            self.lease.release()


def open_aerospike(fake: bool) -> AerospikeTarget | None:
    """Connect to the cluster of the Aerospike rows, or return ``None`` when they are skipped.

    ``fake``: the in-process fake client of the tests instead of a server.
    """
    address = os.environ.get(AEROSPIKE_ENV, "")
    if not fake and not address:
        return None
    # Imported here: the aerospike client is an optional extra.
    from aerospike import exception as as_exc

    from statestream.config import AerospikeOptions
    from statestream.stores.aerospike import ClientPool, client_config, parse_hosts

    options = AerospikeOptions(set_prefix=f"ssbench{uuid.uuid4().hex[:8]}.")
    if fake:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.fakes.aerospike import FakeServer

        # The fake logs every call for the tests' assertions: keep no log here.
        server = FakeServer(calls=collections.deque(maxlen=0))  # type: ignore[arg-type]
        label, version = "aerospike-fake", "fake (tests/fakes/aerospike.py)"
        hosts: tuple[tuple[str, int], ...] = (("127.0.0.1", 3000),)
        namespace = "test"
        pool = ClientPool(server.client)
    else:
        label, version = "aerospike", f"aerospike {metadata.version('aerospike')}"
        hosts = parse_hosts([host.strip() for host in address.split(",")])
        namespace = os.environ.get(AEROSPIKE_NAMESPACE_ENV, "") or "test"
        pool = ClientPool()
    try:
        lease = pool.acquire(client_config(hosts, options))
    except as_exc.AerospikeError as exc:
        raise SystemExit(
            f"cannot connect to Aerospike at {address} ({AEROSPIKE_ENV}): {exc}"
        ) from exc
    return AerospikeTarget(label, fake, hosts, namespace, options, pool, lease, version)


def bench_aerospike(w: Workload, repeat: int, target: AerospikeTarget) -> list[Result]:
    import aerospike
    from aerospike import exception as as_exc
    from aerospike_helpers.batch.records import BatchRecords, Write
    from aerospike_helpers.operations import operations as ops

    from statestream.stores.aerospike import AerospikeStore

    client = target.client
    namespace = target.namespace
    opts = target.options
    # The raw calls get the limits the store passes (the AerospikeOptions defaults)
    # and, for writes, the user key sent to the server, as the store sends it.
    timeouts = {
        "total_timeout": opts.total_timeout,
        "socket_timeout": opts.socket_timeout,
        "max_retries": opts.max_retries,
    }
    read_policy = dict(timeouts)
    batch_policy = dict(timeouts)
    write_policy = {**timeouts, "key": aerospike.POLICY_KEY_SEND}
    record_write_policy = {"key": aerospike.POLICY_KEY_SEND}
    value_bin = AEROSPIKE_VALUE_BIN

    def open_store(table: str) -> AerospikeStore:
        return AerospikeStore(target.hosts, namespace, table, PARTITION, opts, pool=target.pool)

    def new_store() -> AerospikeStore:
        return open_store(AEROSPIKE_STORE_WRITES)

    def empty_store(store: AerospikeStore) -> None:
        store.clear()
        store.close()

    raw_writes = target.set_name(AEROSPIKE_RAW_WRITES)
    raw_reads = target.set_name(AEROSPIKE_RAW_READS)

    def new_raw() -> str:
        return raw_writes

    def empty_raw(set_name: str) -> None:
        keys = [(namespace, set_name, bytearray(key)) for key, _ in w.pairs]
        for start in range(0, len(keys), AEROSPIKE_REMOVE_CHUNK):
            client.batch_remove(
                keys[start : start + AEROSPIKE_REMOVE_CHUNK], policy_batch=batch_policy
            )

    def store_put(store: AerospikeStore) -> None:
        write = store.write
        for offset, changes in enumerate(w.singles):
            write(changes, offset)

    def raw_put(set_name: str) -> None:
        put = client.put
        for key, value in w.pairs:
            put((namespace, set_name, bytearray(key)), {value_bin: value}, policy=write_policy)

    def store_batch(store: AerospikeStore) -> None:
        write = store.write
        for offset, changes in enumerate(w.batches):
            write(changes, offset)

    def raw_batch(set_name: str) -> None:
        batch_write = client.batch_write
        for changes in w.batches:
            records = [
                Write(
                    (namespace, set_name, bytearray(key)),
                    [ops.write(value_bin, value)],
                    policy=record_write_policy,
                )
                for key, value in changes.items()
            ]
            batch_write(BatchRecords(records), policy_batch=batch_policy)

    # Read targets: loaded the same way (the same B-key batches), kept for the run.
    loaded = open_store(AEROSPIKE_STORE_READS)
    try:
        store_batch(loaded)
        raw_batch(raw_reads)

        def raw_value(key: bytes) -> bytes | None:
            try:
                _, _, bins = client.get((namespace, raw_reads, bytearray(key)), policy=read_policy)
            except as_exc.RecordNotFound:
                return None
            return bytes(bins[value_bin])

        rows = client.query(namespace, raw_reads).results({"total_timeout": 600_000})
        raw_pairs = sorted((bytes(key[2]), bytes(bins[value_bin])) for key, _, bins in rows)
        check_loaded(w, loaded.get, loaded.count(), loaded.iterate())
        check_loaded(w, raw_value, len(raw_pairs), raw_pairs)

        def store_get(store: AerospikeStore) -> None:
            get = store.get
            for key in w.lookups:
                get(key)

        def raw_get(set_name: str) -> None:
            get = client.get
            for key in w.lookups:
                get((namespace, set_name, bytearray(key)), policy=read_policy)

        def store_get_many(store: AerospikeStore) -> None:
            get_many = store.get_many
            for keys in w.lookup_chunks:
                get_many(keys)

        def raw_get_many(set_name: str) -> None:
            batch_read = client.batch_read
            for keys in w.lookup_chunks:
                batch_read(
                    [(namespace, set_name, bytearray(key)) for key in keys], policy=batch_policy
                )

        name = target.label
        return [
            compare(
                name, "put", "client.put(k, {v})", w.n,
                on_fresh(new_store, store_put, empty_store),
                on_fresh(new_raw, raw_put, empty_raw),
                repeat,
            ),
            compare(
                name, "batch_write", "client.batch_write(BatchRecords of Write)", w.n,
                on_fresh(new_store, store_batch, empty_store),
                on_fresh(new_raw, raw_batch, empty_raw),
                repeat,
            ),
            compare(
                name, "get", "client.get(k)", w.n,
                on_shared(loaded, store_get),
                on_shared(raw_reads, raw_get),
                repeat,
            ),
            compare(
                name, "get_many", "client.batch_read(chunk)", w.n,
                on_shared(loaded, store_get_many),
                on_shared(raw_reads, raw_get_many),
                repeat,
            ),
        ]  # fmt: skip
    finally:
        loaded.close()


# -- integrity checks: LevelDBStore with them against without -----------------------

CHECKS_OFF = LevelDBOptions(paranoid_checks=False, verify_checksums=False)
CHECK_VARIANTS = {
    "paranoid": LevelDBOptions(paranoid_checks=True, verify_checksums=False),
    "verify": LevelDBOptions(paranoid_checks=False, verify_checksums=True),
    "both": LevelDBOptions(),
}


def bench_checks(w: Workload, repeat: int, root: str) -> list[Result]:
    """Rows of ``--checks``: each integrity setting against both checks off."""
    if not CHECK_VARIANTS["both"].paranoid_checks or not CHECK_VARIANTS["both"].verify_checksums:
        raise SystemExit("--checks compares against the defaults, which have a check off")
    sequence = iter(range(1 << 30))

    def new_dir() -> str:
        return tempfile.mkdtemp(prefix=f"chk{next(sequence)}-", dir=root)

    def load(data_dir: str, compacted: bool) -> str:
        """Write the workload into a store; return its directory (closed)."""
        store = LevelDBStore(data_dir, TABLE, PARTITION, CHECKS_OFF)
        write = store.write
        for offset, changes in enumerate(w.batches):
            write(changes, offset)
        store.close()
        if compacted:
            compact(store.path, CHECKS_OFF)
        return data_dir

    # Templates, built once: a store whose WAL holds its last memtable, and a
    # compacted one. Every measured store is a copy of one of them.
    wal_template = load(new_dir(), compacted=False)
    compacted_template = load(new_dir(), compacted=True)

    def copy_of(template: str) -> str:
        target = new_dir()
        shutil.copytree(template, target, dirs_exist_ok=True)
        return target

    def open_trial(template: str, opts: LevelDBOptions, fresh: bool) -> Trial:
        shared = None if fresh else copy_of(template)

        def trial() -> float:
            data_dir = copy_of(template) if fresh else shared
            assert data_dir is not None
            opened: list[LevelDBStore] = []
            try:
                return timed(lambda: opened.append(LevelDBStore(data_dir, TABLE, PARTITION, opts)))
            finally:
                for store in opened:
                    store.close()
                if fresh:
                    shutil.rmtree(data_dir)

        return trial

    def raw_open_trial(template: str) -> Trial:
        data_dir = copy_of(template)
        path = os.path.join(data_dir, TABLE, str(PARTITION))
        opts = CHECK_VARIANTS["both"]

        def trial() -> float:
            opened: list[Any] = []
            try:
                return timed(lambda: opened.append(open_raw(path, opts)))
            finally:
                for db in opened:
                    db.close()

        return trial

    def write_trial(opts: LevelDBOptions) -> Trial:
        def new_store() -> LevelDBStore:
            return LevelDBStore(new_dir(), TABLE, PARTITION, opts)

        def run(store: LevelDBStore) -> None:
            write = store.write
            for offset, changes in enumerate(w.batches):
                write(changes, offset)

        def close(store: LevelDBStore) -> None:
            store.close()
            shutil.rmtree(os.path.dirname(os.path.dirname(store.path)))

        return on_fresh(new_store, run, close)

    def store_get(store: LevelDBStore) -> None:
        get = store.get
        for key in w.lookups:
            get(key)

    def store_get_many(store: LevelDBStore) -> None:
        get_many = store.get_many
        for keys in w.lookup_chunks:
            get_many(keys)

    def store_iterate(store: LevelDBStore) -> None:
        drain(store.iterate())

    readers = {
        name: LevelDBStore(copy_of(compacted_template), TABLE, PARTITION, opts)
        for name, opts in {"off": CHECKS_OFF, **CHECK_VARIANTS}.items()
    }
    off = readers["off"]
    check_loaded(w, off.get, off.count(), off.iterate())
    baseline = "leveldb, both checks off"
    results: list[Result] = []
    try:
        for name, opts in CHECK_VARIANTS.items():
            label = f"{name}"
            reader = readers[name]
            check_loaded(w, reader.get, reader.count(), reader.iterate())
            results += [
                compare(
                    label, "open_wal", baseline, 1,
                    open_trial(wal_template, opts, fresh=True),
                    open_trial(wal_template, CHECKS_OFF, fresh=True),
                    repeat,
                ),
                compare(
                    label, "open", baseline, 1,
                    open_trial(compacted_template, opts, fresh=False),
                    open_trial(compacted_template, CHECKS_OFF, fresh=False),
                    repeat,
                ),
                compare(
                    label, "batch_write", baseline, w.n,
                    write_trial(opts), write_trial(CHECKS_OFF), repeat,
                ),
                compare(
                    label, "get", baseline, w.n,
                    on_shared(reader, store_get), on_shared(off, store_get), repeat,
                ),
                compare(
                    label, "get_many", baseline, w.n,
                    on_shared(reader, store_get_many), on_shared(off, store_get_many), repeat,
                ),
                compare(
                    label, "iterate", baseline, w.n,
                    on_shared(reader, store_iterate), on_shared(off, store_iterate), repeat,
                ),
            ]  # fmt: skip
        results.append(
            compare(
                "both", "open", "plyvel.DB open, same options", 1,
                open_trial(compacted_template, CHECK_VARIANTS["both"], fresh=False),
                raw_open_trial(compacted_template),
                repeat,
            )
        )  # fmt: skip
    finally:
        for reader in readers.values():
            reader.close()
    return results


# -- output -------------------------------------------------------------------


def header(
    args: argparse.Namespace,
    opts: LevelDBOptions,
    root: str,
    aerospike_target: AerospikeTarget | None,
) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "plyvel": plyvel.__version__,
        "leveldb": plyvel.__leveldb_version__,
        "n": args.n,
        "batch": args.batch,
        "repeat": args.repeat,
        "statistic": "best of R runs (fastest), after one warm-up pass",
        "value_size": VALUE_SIZE,
        "leveldb_options": dataclasses.asdict(opts),
        "tmpdir": os.path.dirname(root),
        "checks": args.checks,
        "clock": "process CPU time" if args.cpu else "wall clock",
        "aerospike": (
            aerospike_target.info() if aerospike_target else {"skipped": AEROSPIKE_SKIPPED}
        ),
    }


def print_table(info: dict[str, Any], results: list[Result], total: float, out: TextIO) -> None:
    print(
        f"statestream store benchmark: Python {info['python']} "
        f"({info['python_implementation']}), plyvel {info['plyvel']}, "
        f"LevelDB {info['leveldb']}, {info['cpus']} CPUs",
        file=out,
    )
    print(
        f"N={info['n']:,} keys, B={info['batch']} keys/batch, values {info['value_size']} bytes, "
        f"{info['statistic']}, R={info['repeat']}, {info['clock']}",
        file=out,
    )
    opts = ", ".join(f"{k}={v}" for k, v in info["leveldb_options"].items())
    print(f"LevelDB options (both sides): {opts}; databases under {info['tmpdir']}", file=out)
    aero = info["aerospike"]
    if "skipped" not in aero:
        print(
            f"Aerospike ({aero['label']}): namespace {aero['namespace']!r} at "
            f"{', '.join(aero['hosts'])}, client {aero['client']}, AerospikeOptions defaults "
            f"(both sides); sets {', '.join(aero['sets'])} (truncated at the end)",
            file=out,
        )
        if aero["fake"]:
            print(f"*** {AEROSPIKE_FAKE_WARNING} ***", file=out)
    print("ops/s counts keys (batch_write, get_many: keys/s; iterate: pairs/s)", file=out)
    if info.get("checks"):
        print(
            "--checks: LevelDBStore with the named integrity check(s) on against both off "
            "('raw' column); open and open_wal count opens/s",
            file=out,
        )
    print(file=out)
    width = max(8, *(len(r.store) for r in results))
    columns = (
        f"{'store':<{width}} {'operation':<12} {'ops/s':>12} {'raw ops/s':>12} {'ratio':>7}  raw"
    )
    print(columns, file=out)
    print("-" * (len(columns) + 34), file=out)
    for r in results:
        print(
            f"{r.store:<{width}} {r.operation:<12} {r.store_ops_per_s:>12,.0f} "
            f"{r.raw_ops_per_s:>12,.0f} {r.ratio:>7.1%}  {r.raw_baseline}",
            file=out,
        )
    if "skipped" in aero:
        print(aero["skipped"], file=out)
    else:
        print(aerospike_goals(results, aero["label"], aero["fake"]), file=out)
    print(file=out)
    print(f"total time {total:.1f} s", file=out)


def aerospike_goals(results: list[Result], label: str, fake: bool) -> str:
    """One line: each Aerospike goal, its ratio in this run, and whether it was met."""
    parts = []
    for operation, goal in AEROSPIKE_GOALS.items():
        row = next((r for r in results if r.store == label and r.operation == operation), None)
        if row is None:
            continue
        verdict = "not judged" if fake else ("met" if row.ratio >= goal else "NOT met")
        parts.append(f"{operation} {row.ratio:.1%} (goal >= {goal:.0%}: {verdict})")
    note = " -- fake client: shape only, measure on a server" if fake else ""
    return "aerospike goals: " + "; ".join(parts) + note


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Store throughput vs the raw dict / plyvel baseline."
    )
    parser.add_argument("--n", type=int, default=200_000, help="keys (default 200000)")
    parser.add_argument("--batch", type=int, default=100, help="keys per batch (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs each (default 3)")
    parser.add_argument(
        "--json", action="store_true", help="JSON to stdout (the table then goes to stderr)"
    )
    parser.add_argument(
        "--checks",
        action="store_true",
        help="instead of the store rows: the cost of the LevelDB integrity checks",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time with this process's CPU time instead of the wall clock (steadier on a "
        "busy machine; LevelDB's background threads count)",
    )
    # Runs the Aerospike rows on the tests' in-process fake client (checks the code
    # path without a server; the figures mean nothing).
    parser.add_argument("--aerospike-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n < 1 or args.batch < 1 or args.repeat < 1:
        parser.error("--n, --batch and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    CLOCK.now = time.process_time if args.cpu else time.perf_counter
    started = time.perf_counter()
    opts = LevelDBOptions()
    # Connect first: an unreachable server fails the run before the long local part.
    aerospike_target = open_aerospike(args.aerospike_fake)
    try:
        workload = make_workload(args.n, args.batch)
        root = tempfile.mkdtemp(prefix="statestream-bench-")
        try:
            info = header(args, opts, root, aerospike_target)
            if args.checks:
                results = bench_checks(workload, args.repeat, root)
            else:
                results = bench_memory(workload, args.repeat)
                results += bench_leveldb(workload, args.repeat, root, opts)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if aerospike_target is not None and not args.checks:
            results += bench_aerospike(workload, args.repeat, aerospike_target)
    finally:
        if aerospike_target is not None:
            aerospike_target.close()
    total = time.perf_counter() - started
    print_table(info, results, total, sys.stderr if args.json else sys.stdout)
    if args.json:
        document = dict(info, total_seconds=total, results=[r.as_json() for r in results])
        json.dump(document, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
