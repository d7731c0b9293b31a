"""kill -9 never loses a flushed record of the embedded log, nor corrupts or repeats one.

A child process (this module run with ``python -m``) appends deterministic
records in batches, flushes, checks the offsets it got and prints the high
watermarks after every flush; every few batches it compacts, so a kill can
also land inside a compaction pass. The parent SIGKILLs it at random moments,
reopens the directory and checks that everything reported is there, intact,
numbered contiguously (the stream topic) and compacted correctly (the table).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from statestream.log.base import TopicSpec
from statestream.log.embedded import EmbeddedOptions, EmbeddedTransport
from statestream.types import Headers, Record, TopicPartition

STREAM = TopicSpec("stream", 3, "delete", retention_ms=-1)
TABLE = TopicSpec("table", 1, "compact", config={"delete.retention.ms": "0"})
OPTIONS = EmbeddedOptions(cleanup_interval_ms=0, auto_flush_ms=0)
ROUNDS = 6
ROOT = Path(__file__).resolve().parents[2]


# -- the deterministic content of every offset --------------------------------------


def stream_record(partition: int, offset: int) -> tuple[bytes, bytes, Headers, int]:
    """Key, value, headers and timestamp of the stream record at ``offset``."""
    digest = hashlib.sha256(b"%d:%d" % (partition, offset)).digest()
    # Now and then a value larger than LevelDB's 32 KiB log block, so a kill
    # can land between the fragments of one batch.
    repeat = 1500 if digest[0] == 0 and digest[1] < 100 else 1 + digest[1] % 8
    headers = (("offset", b"%d" % offset),) if digest[2] % 2 else ()
    return b"k%d" % offset, digest * repeat, headers, 1_700_000_000_000 + offset


def table_record(offset: int) -> tuple[bytes, bytes | None]:
    """Key and value (``None``: a tombstone) of the table record at ``offset``."""
    key = b"key-%d" % (offset * 7919 % 97)
    value = None if offset % 11 == 0 else hashlib.sha256(b"t%d" % offset).digest()
    return key, value


# -- the child ---------------------------------------------------------------------------


def child(path: str) -> None:
    transport = EmbeddedTransport(path, OPTIONS)
    admin = transport.admin()
    admin.ensure_topic(STREAM)
    admin.ensure_topic(TABLE)
    fetcher = transport.fetcher()
    highs = [fetcher.watermarks(TopicPartition("stream", p))[1] for p in range(3)]
    table_high = fetcher.watermarks(TopicPartition("table", 0))[1]
    producer = transport.producer()
    rng = random.Random(os.getpid())
    print("started", *highs, table_high, flush=True)
    batches = 0
    while True:
        expected = []
        for _ in range(rng.randint(1, 150)):
            partition = rng.randrange(3)
            key, value, headers, ts = stream_record(partition, highs[partition])
            delivery = producer.send(
                "stream", key, value, partition=partition, headers=headers, timestamp=ts
            )
            expected.append((delivery, highs[partition]))
            highs[partition] += 1
        for _ in range(rng.randint(0, 20)):
            table_key, table_value = table_record(table_high)
            delivery = producer.send("table", table_key, table_value, partition=0)
            expected.append((delivery, table_high))
            table_high += 1
        producer.flush()
        for delivery, offset in expected:
            if delivery.offset != offset:
                print("mismatch", delivery, offset, flush=True)
                sys.exit(3)
        print("flushed", *highs, table_high, flush=True)
        batches += 1
        if batches % 4 == 0:
            transport.compact()
        # Keeps the log small enough to verify quickly; kills still land
        # inside sends, flushes and compactions alike.
        time.sleep(0.002)


# -- the parent ------------------------------------------------------------------------------


def read_all(transport: EmbeddedTransport, tp: TopicPartition) -> tuple[list[Record], int, int]:
    fetcher = transport.fetcher()
    fetcher.assign([tp])
    low, high = fetcher.watermarks(tp)
    fetcher.seek(tp, low)
    records: list[Record] = []
    while fetcher.position(tp) < high:
        records += fetcher.poll(max_records=5000)
    fetcher.close()
    return records, low, high


def check_log(path: Path, reported: list[int]) -> list[int]:
    """Check the log against what the child reported; return its high watermarks."""
    with EmbeddedTransport(str(path), OPTIONS) as transport:
        highs = []
        for partition in range(3):
            records, low, high = read_all(transport, TopicPartition("stream", partition))
            assert low == 0
            assert high >= reported[partition], (partition, high, reported)
            assert [r.offset for r in records] == list(range(high)), "gap or repeat in a stream"
            for r in records:
                assert (r.key, r.value, r.headers, r.timestamp) == stream_record(
                    partition, r.offset
                ), f"stream[{partition}] offset {r.offset} is damaged"
            highs.append(high)

        records, low, high = read_all(transport, TopicPartition("table", 0))
        assert high >= reported[3], (high, reported)
        offsets = [r.offset for r in records]
        assert offsets == sorted(set(offsets)), "table offsets repeat or go backwards"
        last_in_log: dict[bytes, Record] = {}
        for r in records:
            assert (r.key, r.value) == table_record(r.offset), f"table offset {r.offset} damaged"
            assert r.key is not None
            last_in_log[r.key] = r
        latest: dict[bytes, int] = {}
        for offset in range(high):
            latest[table_record(offset)[0]] = offset
        for key, offset in latest.items():
            if table_record(offset)[1] is None:  # a tombstone: kept, or removed with the key
                assert key not in last_in_log or last_in_log[key].offset == offset, key
            else:
                assert key in last_in_log, key
                assert last_in_log[key].offset == offset, key
        highs.append(high)
    return highs


def test_flushed_records_survive_kill_9(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "log"
    reported = [0, 0, 0, 0]
    on_disk: list[int] = []
    kills_after_first_flush = 0
    for round_ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.log.test_embedded_kill", str(path)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        started = proc.stdout.readline().split()
        assert started[:1] == ["started"], (started, proc.stderr.read())  # type: ignore[union-attr]
        if round_:
            assert [int(x) for x in started[1:]] == on_disk, "the child saw another log"
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,))
        reader.start()
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join()
        assert not any(line.startswith("mismatch") for line in lines), (seed, lines[-3:])
        # The kill may cut the last line short: only whole lines were reported.
        flushed = [
            line.split() for line in lines if line.startswith("flushed") and line.endswith("\n")
        ]
        if flushed:
            kills_after_first_flush += 1
            reported = [int(x) for x in flushed[-1][1:]]
        on_disk = check_log(path, reported)
    assert kills_after_first_flush >= ROUNDS // 2, f"the child rarely got to flush (seed {seed})"
    assert sum(reported[:3]) > 0


if __name__ == "__main__":
    child(sys.argv[1])
