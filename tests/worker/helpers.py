"""Helpers for worker tests: worker subprocesses, input, waiting, and reading results.

An embedded log is owned by one process, so with ``embedded://`` a test
writes its input before starting a worker and reads results only after the
worker exited; with ``kafka://`` it may do both while workers run.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.tables import Table, TableManager
from statestream.types import Record, TopicPartition

REPO_ROOT = Path(__file__).resolve().parents[2]

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu")  # fmt: skip


# -- waiting -------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Return the first truthy ``condition()``; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- input ---------------------------------------------------------------------------


def make_sentences(count: int, seed: int = 0, start: int = 0) -> list[tuple[str, str]]:
    """``count`` reproducible ``(key, sentence)`` pairs; words may repeat in a sentence."""
    rng = random.Random(seed)
    return [
        (f"s-{start + i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))))
        for i in range(count)
    ]


def produce(
    transport: Transport,
    topic: str,
    items: Iterable[tuple[Any, Any]],
    partitions: int,
    *,
    partition: int | None = None,
) -> None:
    """Create ``topic`` if needed and write json-encoded ``(key, value)`` items, flushed."""
    produce_raw(
        transport,
        topic,
        ((_json(k), _json(v)) for k, v in items),
        partitions,
        partition=partition,
    )


def produce_raw(
    transport: Transport,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes | None]],
    partitions: int,
    *,
    partition: int | None = None,
) -> None:
    """Create ``topic`` if needed and write ``(key bytes, value bytes)`` items, flushed."""
    admin = transport.admin()
    try:
        admin.ensure_topic(TopicSpec(topic, partitions))
    finally:
        admin.close()
    producer = transport.producer()
    try:
        for key, value in items:
            producer.send(topic, key, value, partition=partition)
        producer.flush()
    finally:
        producer.close()


def _json(value: Any) -> bytes | None:
    return None if value is None else json.dumps(value).encode()


# -- reading the log -----------------------------------------------------------------


def watermarks(transport: Transport, topic: str, partitions: int) -> dict[int, int]:
    """High watermark (next offset) of each partition of ``topic``."""
    fetcher = transport.fetcher()
    try:
        return {p: fetcher.watermarks(TopicPartition(topic, p))[1] for p in range(partitions)}
    finally:
        fetcher.close()


def read_topic(transport: Transport, topic: str, partitions: int) -> dict[int, list[Record]]:
    """Every record of ``topic`` up to its current high watermarks, per partition."""
    fetcher = transport.fetcher(reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        highs = {tp: fetcher.watermarks(tp)[1] for tp in tps}
        fetcher.assign(tps)
        for tp in tps:
            fetcher.seek_to_beginning(tp)
        records: dict[int, list[Record]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 30
        while any(fetcher.position(tp) < highs[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} up to {highs}")
            for record in fetcher.poll(timeout=0.2, max_records=5000):
                if record.offset < highs[record.tp]:
                    records[record.partition].append(record)
        return records
    finally:
        fetcher.close()


def committed_offsets(
    transport: Transport, group: str, topic: str, partitions: int
) -> dict[int, int | None]:
    """The group's committed offset of each partition of ``topic``."""
    member = transport.group_member(group)
    try:
        return {p: member.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        member.close()


def expected_counts(records: Mapping[int, Sequence[Record]]) -> dict[int, dict[str, int]]:
    """Exact word counts per source partition (the table is sharded by partition)."""
    return {
        p: dict(
            Counter(word for r in recs for word in json.loads(r.value or b'""').lower().split())
        )
        for p, recs in records.items()
    }


def read_tables(
    transport: Transport,
    app_id: str,
    tables: Sequence[Table[Any, Any]],
    store_url: str,
    source: str,
    committed: Mapping[int, int | None],
) -> dict[int, dict[str, dict[Any, Any]]]:
    """Restore each partition as of ``committed`` and return ``{partition: {table: contents}}``.

    With the worker's own ``store_url`` this reads its local stores (plus the
    changelog past their offsets); with ``memory://`` it rebuilds everything
    from the changelogs. The stores must not be held by a running worker.
    """
    manager = TableManager(app_id, list(tables), transport, store_url)
    result: dict[int, dict[str, dict[Any, Any]]] = {}
    try:
        for p, offset in committed.items():
            manager.open_partition(p)
            try:
                manager.restore_partition(p, {source: offset}, claim=False)
                manager.bind(p)
                result[p] = {t.name: dict(t.items()) for t in tables}
            finally:
                manager.close_partition(p)
    finally:
        manager.close()
    return result


def non_empty(counts: Mapping[int, Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Drop empty partitions, so results and expectations compare cleanly."""
    return {p: dict(c) for p, c in counts.items() if c}


# -- worker processes ----------------------------------------------------------------

_ASSIGNED = re.compile(r"(assigned|revoked) partitions \[([\d, ]*)\]")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without STATESTREAM_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class WorkerProcess:
    """``statestream worker APP ...`` in a subprocess; its stderr goes to a file."""

    def __init__(
        self,
        app: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        command: str = "worker",
    ) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "statestream.cli", command, app, *args],
            cwd=REPO_ROOT,
            env=clean_env(**(env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """kill -9, and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code; fail (killing the worker) if it does not exit in time."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            raise AssertionError(
                f"worker did not exit within {timeout}s; its log:\n{self.log()[-4000:]}"
            ) from None
        self._log.close()
        return code

    def stop(self, timeout: float = 15.0, signum: int = signal.SIGTERM) -> int:
        """Stop gracefully and return the exit code."""
        if self.alive():
            self.send(signum)
        return self.wait(timeout)

    def partitions(self) -> set[int]:
        """Partitions the worker holds now, from its "assigned/revoked partitions" log lines."""
        held: set[int] = set()
        for action, numbers in _ASSIGNED.findall(self.log()):
            parts = {int(n) for n in numbers.replace(",", " ").split()}
            if action == "assigned":
                held |= parts
            else:
                held -= parts
        return held

    def ensure_stopped(self) -> None:
        """Teardown: make sure nothing is left running."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        if not self._log.closed:
            self._log.close()


def read_progress(progress_dir: Path) -> dict[int, int]:
    """Last processed offset per partition, as written by ``wordcount_app``."""
    found: dict[int, int] = {}
    for path in progress_dir.glob("p*"):
        if path.name.endswith(".tmp"):
            continue
        try:
            found[int(path.name[1:])] = int(path.read_text())
        except ValueError:
            continue  # being replaced
    return found


def reset_progress(progress_dir: Path, committed: Mapping[int, int]) -> None:
    """Set the progress of each partition back to its committed offset (after a crash)."""
    for p, offset in committed.items():
        path = progress_dir / f"p{p}"
        if offset > 0:
            path.write_text(str(offset - 1))
        else:
            path.unlink(missing_ok=True)


def first_offsets(progress_dir: Path, pid: int) -> dict[int, int]:
    """First offset processed per partition by process ``pid`` (``wordcount_app``)."""
    prefix = f"first-{pid}-p"
    return {
        int(path.name[len(prefix) :]): int(path.read_text())
        for path in progress_dir.glob(f"{prefix}*")
        if not path.name.endswith(".tmp")
    }


def processed_all(progress_dir: Path, highs: Mapping[int, int]) -> bool:
    """True once every partition's last record (``high - 1``) was processed."""
    progress = read_progress(progress_dir)
    return all(progress.get(p, -1) >= high - 1 for p, high in highs.items() if high > 0)


def open_embedded(data_dir: Path) -> Transport:
    """The embedded log of a worker run with ``--data-dir data_dir``."""
    return open_transport(f"embedded://{data_dir}/log")
