"""Cost of the co-partitioning guard on table writes (statestream.tables.keyguard).

Run::

    .venv/bin/python benchmarks/bench_keyguard.py [--keys N] [--repeat R]

Writes N distinct keys (default 100,000, every one new to the shard: the
guard's worst case, since keys already buffered are never checked again) into
a ``TableShard`` on a memory store, with and without a ``KeyGuard``, and
prints the best of R interleaved runs of each. All keys belong to the
shard's partition, so the guard checks its sample without ever stopping at a
warning. Target: the guard costs under 5% of table-update throughput.
"""

from __future__ import annotations

import argparse
import time

from statestream.log.partitioner import default_partition
from statestream.serde import get_codec
from statestream.stores.memory import MemoryStore
from statestream.tables.keyguard import KeyGuard
from statestream.tables.shard import TableShard
from statestream.types import TopicPartition

PARTITIONS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    codec = get_codec("json")
    keys: list[str] = []
    i = 0
    while len(keys) < args.keys:
        key = f"k{i}"
        if default_partition(codec.encode(key), PARTITIONS) == 0:
            keys.append(key)
        i += 1
    best = {False: float("inf"), True: float("inf")}
    for _ in range(args.repeat):
        for guarded in (False, True):
            shard = TableShard(
                "t", 0, MemoryStore("t", 0), codec, codec, TopicPartition("c", 0), cache_size=10**9
            )
            if guarded:
                shard.key_guard = KeyGuard(
                    "t", 0, PARTITIONS, codec, lambda _topic: codec, strict=False, warned=set()
                )
            shard.begin(("source", 0))
            started = time.perf_counter()
            for key in keys:
                shard.set(key, 1)
            best[guarded] = min(best[guarded], time.perf_counter() - started)
    plain, guarded_s = best[False], best[True]
    print(f"{len(keys):,} new keys, best of {args.repeat}:")
    print(f"  without the guard  {len(keys) / plain:>12,.0f} writes/s")
    print(f"  with the guard     {len(keys) / guarded_s:>12,.0f} writes/s")
    print(f"  cost               {(guarded_s / plain - 1) * 100:>+11.1f}%  (target: under 5%)")


if __name__ == "__main__":
    main()
