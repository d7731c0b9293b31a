"""Failover of a killed worker's partitions, with and without standby replicas.

Run::

    .venv/bin/python benchmarks/bench_failover.py [--bootstrap HOST:PORT] [--keys N]
        [--partitions P] [--replicas 1,0] [--commit-interval S] [--session-timeout-ms MS]
        [--rate R] [--timeout S] [--json]

Without ``--bootstrap`` a throwaway broker is started with
``scripts/kafka_broker.py`` (Java and Maven needed) and stopped at the end.

For each standby setting (``--replicas``, default ``1,0``: one standby per
partition, then none), in the same run and on the same broker:

1. two ``statestream worker`` processes (``bench_failover:app``: this file
   is also the app; a key count into table ``counts``, LevelDB stores, each
   worker with its own data directory, as on two machines) join one group on
   a fresh source topic of P partitions (default 4) with
   ``--num-standby-replicas`` set; the session timeout is
   ``--session-timeout-ms`` (default 6000, the broker's minimum);
2. N records (default 1,000,000) with N distinct keys are produced, untimed,
   with a plain kafka-python ``KafkaProducer`` (partition ``i % P``), and the
   workers count them: a table of N keys, half of it on each worker. ``load``
   is the time from the first record produced to the group's commit of all;
3. once every standby copy reports lag 0 (the status file each worker
   rewrites every 2 s), a trickle of R records a second (default 200, new
   keys) starts, and one second later the worker that joined second is
   killed with SIGKILL.

Measured from the kill (log times of the survivor, which has millisecond
stamps; its processor writes the offset it processed, with the time, at
most every 10 ms per partition):

``assigned``
    until the survivor logs ``assigned partitions`` with the dead worker's
    partitions: the session timeout, then the rebalance;
``ready``
    until its last ``partition N ready: replayed X changelog records`` line
    for them (the restore done);
``processing``
    until it processed, on every one of them, a record produced after the
    kill: the partitions are live again, with their full state.

``replayed`` is the sum of X over the dead worker's partitions, next to the
size of their changelogs at the kill. At the end the survivor is stopped and
its stores (plus the changelog past them) are read back: the counts must add
up to every record produced (``exact``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from _shared import load_broker_module, package_version  # benchmarks/ is on sys.path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
APP_SPEC = "bench_failover:app"
#: Seconds between two progress writes of one partition in the app.
PROGRESS_EVERY_S = 0.01
POLL_S = 0.02

_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
_ASSIGNED = re.compile(_STAMP + r".*assigned partitions \[([\d, ]*)\]", re.MULTILINE)
_READY = re.compile(
    _STAMP + r".*partition (\d+) ready: replayed (\d+) changelog records", re.MULTILINE
)
_HELD = re.compile(r"(assigned|revoked|lost) partitions \[([\d, ]*)\]")
_STANDBY = re.compile(r"standby partitions \[([\d, ]*)\] \(warm-up \[([\d, ]*)\]\)")


# -- the app the workers run (``bench_failover:app``) -----------------------------------


def make_app(app_id: str, source: str, progress_dir: str | None) -> Any:
    """A key count of ``source`` into table ``counts``; progress files in ``progress_dir``."""
    from statestream import App, Processor, Table
    from statestream.context import Context, Message

    class KeyCount(Processor):
        topics = (source,)
        counts: Table[str, int] = Table("counts", default=int)

        def __init__(self) -> None:
            self._written = 0.0

        def process(self, message: Message, ctx: Context) -> None:
            self.counts[message.key] += 1
            now = time.time()
            if progress_dir and now - self._written >= PROGRESS_EVERY_S:
                self._written = now
                path = os.path.join(progress_dir, f"{os.getpid()}-p{message.partition}")
                with open(f"{path}.tmp", "w") as fh:
                    fh.write(f"{message.offset} {now}")
                os.replace(f"{path}.tmp", path)

    return App(app_id, processors=[KeyCount])


def __getattr__(name: str) -> Any:
    # Built on first access, so importing this file builds no app.
    if name == "app":
        env = os.environ
        return make_app(
            env["BENCH_FAILOVER_APP_ID"],
            env["BENCH_FAILOVER_SOURCE"],
            env.get("BENCH_FAILOVER_PROGRESS"),
        )
    raise AttributeError(name)


# -- the log -------------------------------------------------------------------------


def numbers(text: str) -> set[int]:
    return {int(n) for n in text.replace(",", " ").split()}


def log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def kafka_producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1024 * 1024)


def produce_keys(bootstrap: str, topic: str, keys: int, partitions: int) -> None:
    """``keys`` records with distinct keys, round robin over the partitions."""
    producer = kafka_producer(bootstrap)
    try:
        for i in range(keys):
            producer.send(topic, key=b'"k%09d"' % i, value=b"1", partition=i % partitions)
        producer.flush()
    finally:
        producer.close()


class Trickle(threading.Thread):
    """``rate`` records a second with new keys until stopped."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: int) -> None:
        super().__init__(name="trickle", daemon=True)
        self.bootstrap, self.topic, self.partitions, self.rate = bootstrap, topic, partitions, rate
        self.sent = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        producer = kafka_producer(self.bootstrap)
        started = time.monotonic()
        try:
            while not self.stopping.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    key = b'"t%09d"' % self.sent
                    producer.send(
                        self.topic, key=key, value=b"1", partition=self.sent % self.partitions
                    )
                    self.sent += 1
                producer.flush()
                self.stopping.wait(0.02)
        finally:
            producer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


class Worker:
    """``statestream worker bench_failover:app`` in a subprocess, stderr to a file."""

    def __init__(self, name: str, args: list[str], root: Path, env: dict[str, str]) -> None:
        self.name = name
        self.data_dir = root / f"data-{name}"
        self.log_path = root / f"worker-{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "statestream.cli", "worker", APP_SPEC, *args,
             "--data-dir", str(self.data_dir)],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def held(self) -> set[int]:
        parts: set[int] = set()
        for action, text in _HELD.findall(self.log()):
            parts = parts | numbers(text) if action == "assigned" else parts - numbers(text)
        return parts

    def standbys(self) -> tuple[set[int], set[int]]:
        found = _STANDBY.findall(self.log())
        return (numbers(found[-1][0]), numbers(found[-1][1])) if found else (set(), set())

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"worker {self.name} exited with {self.proc.returncode}:\n"
                             f"{self.log()[-3000:]}")  # fmt: skip

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def wait(what: str, condition: Any, timeout: float, workers: list[Worker]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            worker.check()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_S)


# -- one run ---------------------------------------------------------------------------


def standby_lags(worker: Worker, app_id: str) -> dict[int, int | None]:
    """Lag of each standby copy from the worker's status file (empty before it is written)."""
    from statestream.tables.local import read_status, status_path

    status = read_status(status_path(str(worker.data_dir), app_id)) or {}
    return {
        p: entry.get("tables", {}).get("counts", {}).get("lag")
        for p, entry in status.items()
        if entry.get("role") in ("standby", "warm-up")
    }


def count_state(
    url: str, app: Any, store_url: str, source: str, committed: dict[int, int]
) -> tuple[int, int]:
    """``(keys, sum of counts)`` in the stores at ``store_url`` plus the changelog past them."""
    from statestream.log import open_transport
    from statestream.tables import TableManager

    transport = open_transport(url)
    tables = app.tables()
    manager = TableManager(app.app_id, tables, transport, store_url)
    keys = total = 0
    try:
        for p, offset in committed.items():
            manager.open_partition(p)
            try:
                manager.restore_partition(p, {source: offset}, claim=False)
                manager.bind(p)
                for _, value in tables[0].items():
                    keys += 1
                    total += value
            finally:
                manager.close_partition(p)
    finally:
        manager.close()
        transport.close()
    return keys, total


def run_once(args: argparse.Namespace, bootstrap: str, replicas: int, root: Path) -> dict[str, Any]:
    from statestream.log import open_transport
    from statestream.log.base import TopicSpec
    from statestream.types import TopicPartition

    tag = uuid.uuid4().hex[:8]
    app_id, source = f"bench-failover-{tag}", f"bench-failover-{tag}-src"
    parts = range(args.partitions)
    progress = root / "progress"
    progress.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(BENCH_DIR), str(REPO_ROOT), env.get("PYTHONPATH")])
    )
    env.update(BENCH_FAILOVER_APP_ID=app_id, BENCH_FAILOVER_SOURCE=source,
               BENCH_FAILOVER_PROGRESS=str(progress))  # fmt: skip
    group = f"session_timeout_ms={args.session_timeout_ms}&heartbeat_interval_ms=500"
    worker_args = [
        "--broker-url", f"kafka://{bootstrap}?{group}",
        "--partitions", str(args.partitions),
        "--commit-interval", str(args.commit_interval),
        "--num-standby-replicas", str(replicas),
        "--probing-rebalance-interval", "2",
    ]  # fmt: skip
    transport = open_transport(f"kafka://{bootstrap}")
    admin = transport.admin()
    admin.ensure_topic(TopicSpec(source, args.partitions))
    admin.close()
    fetcher = transport.fetcher()
    member = transport.group_member(app_id)
    trickle: Trickle | None = None
    workers: list[Worker] = []
    try:

        def highs(topic: str) -> dict[int, int]:
            return {p: fetcher.watermarks(TopicPartition(topic, p))[1] for p in parts}

        def committed() -> dict[int, int]:
            return {p: member.committed(TopicPartition(source, p)) or 0 for p in parts}

        a = Worker("a", worker_args, root, env)
        workers.append(a)
        wait("worker a to join", lambda: a.held() == set(parts), args.timeout, workers)
        b = Worker("b", worker_args, root, env)
        workers.append(b)

        def settled() -> bool:
            actives, copies = [w.held() for w in workers], [w.standbys() for w in workers]
            if not all(actives) or sum(map(len, actives)) != len(parts):
                return False
            if any(warm for _, warm in copies):
                return False
            return sum(len(s) for s, _ in copies) == replicas * len(parts)

        wait("the workers to split the partitions", settled, args.timeout, workers)
        print(f"progress: {replicas} standby: producing {args.keys:,} keys ...", file=sys.stderr)
        started = time.perf_counter()
        produce_keys(bootstrap, source, args.keys, args.partitions)
        loaded = highs(source)
        wait("the group to commit every key", lambda: committed() == loaded, args.timeout, workers)
        load_s = time.perf_counter() - started

        def caught_up() -> bool:
            lags = [standby_lags(w, app_id) for w in workers]
            return sum(map(len, lags)) == replicas * len(parts) and all(
                lag == 0 for mine in lags for lag in mine.values()
            )

        wait("the standbys to catch up", caught_up, args.timeout, workers)
        if not settled():
            raise SystemExit("the assignment changed while the standbys caught up")
        dead = b.held()
        trickle = Trickle(bootstrap, source, args.partitions, args.rate)
        trickle.start()
        time.sleep(1.0)
        mark = len(a.log())
        killed_at = time.time()
        b.stop(signal.SIGKILL)
        after_kill = highs(source)
        changelog = highs(f"{app_id}-counts-changelog")
        workers.remove(b)
        print(f"progress: {replicas} standby: killed b holding {sorted(dead)}", file=sys.stderr)

        def processing() -> dict[int, float] | None:
            found: dict[int, float] = {}
            for p in dead:
                try:
                    offset, at = (progress / f"{a.proc.pid}-p{p}").read_text().split()
                except (OSError, ValueError):
                    return None
                if int(offset) < after_kill[p]:
                    return None
                found[p] = float(at)
            return found

        processed = wait("the survivor to process new input", processing, args.timeout, workers)
        text = a.log()[mark:]
        assigned = [log_time(s) for s, ps in _ASSIGNED.findall(text) if dead <= numbers(ps)]
        ready = {int(p): (log_time(s), int(n)) for s, p, n in _READY.findall(text)}
        trickle.stop()
        total = args.keys + trickle.sent
        wait("the final commit", lambda: sum(committed().values()) == total, args.timeout, workers)
        final = committed()
        code = a.stop()
        workers.remove(a)
        store_url = f"leveldb://{a.data_dir}/{app_id}"
        keys, counted = count_state(
            f"kafka://{bootstrap}", make_app(app_id, source, None), store_url, source, final
        )
    finally:
        if trickle is not None:
            trickle.stop()
        for worker in workers:
            worker.stop(signal.SIGKILL)
        member.close()
        fetcher.close()
        transport.close()
    return {
        "replicas": replicas,
        "load_s": load_s,
        "dead_partitions": sorted(dead),
        "assigned_s": assigned[0] - killed_at if assigned else None,
        "ready_s": max(ready[p][0] for p in dead) - killed_at,
        "processing_s": max(processed.values()) - killed_at,
        "replayed": sum(ready[p][1] for p in dead),
        "changelog": sum(changelog[p] for p in dead),
        "keys": keys,
        "exact": keys == total and counted == total and code == 0,
        "survivor_exit": code,
    }


# -- the report ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="host:port of a broker (default: start one)")
    parser.add_argument("--keys", type=int, default=1_000_000, help="table keys (1000000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions (4)")
    parser.add_argument("--replicas", default="1,0", help="standby settings to run (1,0)")
    parser.add_argument("--commit-interval", type=float, default=1.0, help="seconds (1.0)")
    parser.add_argument("--session-timeout-ms", type=int, default=6000, help="ms (6000)")
    parser.add_argument("--rate", type=int, default=200, help="records/s after the load (200)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per step (900)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    args = parser.parse_args(argv)
    args.replica_list = [int(r) for r in args.replicas.split(",") if r.strip()]
    if min(args.keys, args.partitions, args.rate) < 1 or min(args.replica_list) < 0:
        parser.error("--keys, --partitions and --rate must be >= 1, --replicas >= 0")
    return args


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="statestream-bench-failover-"))
    broker = None
    results = []
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            print("starting a Kafka broker (scripts/kafka_broker.py) ...", file=sys.stderr)
            broker = load_broker_module().start_broker()
            bootstrap = broker.bootstrap
        for replicas in args.replica_list:
            results.append(run_once(args, bootstrap, replicas, root / f"standbys-{replicas}"))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    out = sys.stderr if args.json else sys.stdout
    print(
        f"statestream failover benchmark: Python {platform.python_version()}, kafka-python "
        f"{package_version('kafka-python')}, {os.cpu_count()} CPUs",
        file=out,
    )
    print(
        f"{args.keys:,} keys over {args.partitions} partitions on 2 workers, LevelDB; "
        f"session timeout {args.session_timeout_ms} ms (heartbeat 500 ms); commit interval "
        f"{args.commit_interval} s; {args.rate} records/s after the load; kill -9 of one",
        file=out,
    )
    print(file=out)
    columns = (
        f"{'standbys':>8} {'load s':>8} {'assigned':>9} {'ready':>7} {'processing':>11} "
        f"{'replayed':>10} {'changelog':>10} {'share':>7}  exact"
    )
    print(columns, file=out)
    print("-" * len(columns), file=out)
    for r in results:
        share = r["replayed"] / r["changelog"] if r["changelog"] else 0.0
        print(
            f"{r['replicas']:>8} {r['load_s']:>8.1f} {fmt(r['assigned_s']):>9} "
            f"{fmt(r['ready_s']):>7} {fmt(r['processing_s']):>11} {r['replayed']:>10,} "
            f"{r['changelog']:>10,} {share:>7.1%}  {'yes' if r['exact'] else 'NO'}",
            file=out,
        )
    print(
        "seconds from the kill: assigned = survivor given the dead worker's partitions, "
        "ready = their restores done, processing = new input processed on all of them; "
        "replayed = changelog records the survivor replayed for them, of changelog records "
        "they had",
        file=out,
    )
    print(f"total time {total:.0f} s", file=out)
    if args.json:
        json.dump({"args": vars(args), "results": results}, sys.stdout, indent=2)
        print()
    return 0 if all(r["exact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
