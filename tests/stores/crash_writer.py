"""A LevelDB writer for the crash test, run as a child process and killed with SIGKILL.

``python -m tests.stores.crash_writer DATA_DIR`` opens the store, resumes the
deterministic stream after its recorded offset, prints ``started N`` and then
the index of every ``REPORT_EVERY``-th batch once ``write`` has returned, and
writes batch ``i`` with offset ``i`` (and, every ``META_EVERY``-th batch,
metadata ``epoch`` = ``i``) until it is killed. With ``--stop-after N`` it
writes batches up to ``N - 1`` and then kills itself with SIGKILL, leaving the
files exactly as a crash does.

The test imports :func:`batch`, :func:`apply` and :func:`expected_epoch` to
rebuild the expected state.
"""

from __future__ import annotations

import argparse
import os
import random
import signal

from statestream.stores.leveldb import LevelDBStore

TABLE = "crash"
PARTITION = 3
KEY_SPACE = 200
REPORT_EVERY = 50
META_EVERY = 7
EPOCH = "epoch"


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


def meta(i: int) -> dict[str, bytes] | None:
    """Return the metadata written with batch ``i``, or ``None``."""
    return {EPOCH: i.to_bytes(8, "big")} if i % META_EVERY == 0 else None


def expected_epoch(offset: int) -> bytes:
    """Return the ``epoch`` metadata a store holding batches ``0..offset`` must have."""
    return (offset - offset % META_EVERY).to_bytes(8, "big")


def main(data_dir: str, stop_after: int | None = None) -> None:
    store = LevelDBStore(data_dir, TABLE, PARTITION)
    offset = store.offset()
    i = 0 if offset is None else offset + 1
    parent = os.getppid()
    print(f"started {i}", flush=True)
    while True:
        store.write(batch(i), i, meta(i))
        if stop_after is not None and i + 1 >= stop_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if i % REPORT_EVERY == 0:
            # A dead parent closes the pipe (BrokenPipeError ends us); the
            # ppid check covers a parent that died without closing it.
            print(i, flush=True)
            if os.getppid() != parent:
                return
        i += 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("--stop-after", type=int)
    args = parser.parse_args()
    main(args.data_dir, args.stop_after)
