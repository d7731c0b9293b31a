"""A LevelDB writer for the crash test, run as a child process and killed with SIGKILL.

``python -m tests.stores.crash_writer DATA_DIR`` opens the store, resumes the
deterministic stream after its recorded offset, prints ``started N`` and then
the index of every ``REPORT_EVERY``-th batch once ``write`` has returned, and
writes batch ``i`` with offset ``i`` until it is killed.

The test imports :func:`batch` and :func:`apply` to rebuild the expected state.
"""

from __future__ import annotations

import os
import random
import sys

from statestream.stores.leveldb import LevelDBStore

TABLE = "crash"
PARTITION = 3
KEY_SPACE = 200
REPORT_EVERY = 50


def batch(i: int) -> dict[bytes, bytes | None]:
    """Return batch ``i`` of the stream: a few puts and deletes, derived from ``i`` alone."""
    rng = random.Random(i)
    changes: dict[bytes, bytes | None] = {}
    for _ in range(rng.randint(1, 6)):
        key = b"k%03d" % rng.randrange(KEY_SPACE)
        if rng.random() < 0.3:
            changes[key] = None
        else:
            # Now and then a large value, so batches straddle LevelDB's 32 KiB
            # log blocks and a kill can land between the fragments of one record.
            repeat = rng.randint(2000, 10000) if rng.random() < 0.05 else rng.randint(1, 8)
            changes[key] = b"%d:" % i + key * repeat
    return changes


def apply(model: dict[bytes, bytes], i: int) -> None:
    """Apply batch ``i`` to ``model`` in place."""
    for key, value in batch(i).items():
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value


def main(data_dir: str) -> None:
    store = LevelDBStore(data_dir, TABLE, PARTITION)
    offset = store.offset()
    i = 0 if offset is None else offset + 1
    parent = os.getppid()
    print(f"started {i}", flush=True)
    while True:
        store.write(batch(i), i)
        if i % REPORT_EVERY == 0:
            # A dead parent closes the pipe (BrokenPipeError ends us); the
            # ppid check covers a parent that died without closing it.
            print(i, flush=True)
            if os.getppid() != parent:
                return
        i += 1


if __name__ == "__main__":
    main(sys.argv[1])
