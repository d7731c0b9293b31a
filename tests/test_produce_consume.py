"""``statestream produce`` and ``consume`` on both transports, with and without a running worker.

On the embedded log a worker holds the log, so the commands reach it
through its local socket (``statestream.sock`` in the log directory); the
socket's own checks (permissions, malformed requests, cleanup) are here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from statestream.errors import LogLockedError
from statestream.log import Transport, open_transport
from statestream.log.embedded.local_client import LocalLogClient
from statestream.log.embedded.local_socket import MAX_REQUEST_BYTES, LocalSocketError, socket_path
from statestream.log.partitioner import default_partition
from statestream.serde import JsonCodec
from tests.worker.helpers import (
    REPO_ROOT,
    WorkerProcess,
    clean_env,
    make_sentences,
    read_progress,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)

WORDCOUNT = "tests.worker.wordcount_app:app"
PARTITIONS = 3
KINDS = ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)]


class Log:
    """Where the commands and the worker of one test run: their flags and names."""

    def __init__(self, kind: str, tmp: Path, bootstrap: str | None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.data_dir = tmp / "data"
        if bootstrap is None:
            self.suffix = ""
            self.flags: tuple[str, ...] = ("--data-dir", str(self.data_dir))
            self.url = f"embedded://{self.data_dir}/log"
        else:
            # The broker is shared by the session: names unique to the test.
            self.suffix = f"-{uuid.uuid4().hex[:10]}"
            self.url = f"kafka://{bootstrap}"
            self.flags = ("--broker-url", self.url)
        self.source = f"sentences{self.suffix}"
        self.output = f"word-counts{self.suffix}"
        self.progress = tmp / "progress"
        self.progress.mkdir()
        self.workers: list[WorkerProcess] = []

    def topic(self, name: str) -> str:
        return f"{name}{self.suffix}"

    def cli(
        self, command: str, *args: str, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``statestream COMMAND ...`` on this log and return what it did."""
        return subprocess.run(
            [sys.executable, "-m", "statestream.cli", command, *args, *self.flags],
            cwd=REPO_ROOT,
            env=clean_env(**env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def consume(self, topic: str, *args: str) -> list[dict[str, Any]]:
        """``consume TOPIC --json ...``: every record, as the objects it printed."""
        result = self.cli("consume", topic, "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def worker(self) -> WorkerProcess:
        """Start a word-count worker that creates its topics with PARTITIONS partitions."""
        worker = WorkerProcess(
            WORDCOUNT,
            [*self.flags, "--data-dir", str(self.data_dir), "--partitions", str(PARTITIONS),
             "--commit-interval", "0.2"],
            self.tmp / f"worker-{len(self.workers)}.log",
            {"WORDCOUNT_SUFFIX": self.suffix, "WORDCOUNT_PROGRESS_DIR": str(self.progress)},
        )  # fmt: skip
        self.workers.append(worker)
        wait_for(lambda: "assigned partitions" in worker.log(), 45, "the worker to start")
        return worker

    def processed(self) -> int:
        """Records of the source topic the worker processed so far."""
        return sum(offset + 1 for offset in read_progress(self.progress).values())


@pytest.fixture(params=KINDS)
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    """A fresh embedded log, or the session's Kafka broker with unique names."""
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    made = Log(request.param, tmp_path, bootstrap)
    yield made
    for worker in made.workers:
        worker.ensure_stopped()


def partition_of(key: Any, partitions: int = PARTITIONS) -> int:
    """Where a json-encoded key goes (Kafka's default partitioner)."""
    return default_partition(JsonCodec().encode(key), partitions)


# -- with a running worker -------------------------------------------------------------


def test_produce_consume_round_trip_with_keys_while_a_worker_runs(log: Log) -> None:
    worker = log.worker()
    sentences = make_sentences(30, seed=7)
    lines = "".join(f"{key}:{text}\n" for key, text in sentences)

    produced = log.cli("produce", log.source, "--key-separator", ":", stdin=lines)
    assert produced.returncode == 0, produced.stderr
    assert f"wrote 30 records to {log.source}" in produced.stderr
    wait_for(lambda: log.processed() == len(sentences), 30, "the worker to process the input")

    records = log.consume(log.source)
    assert sorted((r["key"], r["value"]) for r in records) == sorted(sentences)
    for record in records:
        assert record["partition"] == partition_of(record["key"])
        assert record["topic"] == log.source
    by_partition = Counter(r["partition"] for r in records)
    for partition, count in by_partition.items():
        offsets = [r["offset"] for r in records if r["partition"] == partition]
        assert offsets == list(range(count))

    # The worker's output: one count per word of the input, keyed by the word.
    words = Counter(word for _, text in sentences for word in text.split())
    outputs = wait_for(
        lambda: (found := log.consume(log.output)) and len(found) == words.total() and found,
        30,
        "every output record",
    )
    assert Counter(r["key"] for r in outputs) == words
    assert all(isinstance(r["value"], int) and r["value"] >= 1 for r in outputs)

    # The plain format: partition, offset, key, value, tab-separated.
    plain = log.cli("consume", log.source)
    assert plain.returncode == 0, plain.stderr
    shown = {tuple(line.split("\t")) for line in plain.stdout.splitlines()}
    assert shown == {(str(r["partition"]), str(r["offset"]), r["key"], r["value"]) for r in records}

    assert worker.stop() == 0, worker.log()
    if log.kind == "embedded":
        assert not os.path.exists(socket_path(str(log.data_dir / "log")))


def test_consume_from_the_end_follows_until_sigterm(log: Log) -> None:
    worker = log.worker()
    before = log.cli("produce", log.source, "--key-separator", "=", stdin="old=alpha\n")
    assert before.returncode == 0, before.stderr
    follower = subprocess.Popen(
        [sys.executable, "-m", "statestream.cli", "consume", log.source, "--from", "end",
         "--follow", *log.flags],
        cwd=REPO_ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stdout is not None
    reader = threading.Thread(target=_lines_into, args=(follower.stdout, lines), daemon=True)
    reader.start()
    try:
        # Until the follower has found the end, a record may land before it: ping until one shows.
        for ping in range(20):
            sent = log.cli("produce", log.source, "--key-separator", "=", stdin=f"ping={ping}\n")
            assert sent.returncode == 0, sent.stderr
            with contextlib.suppress(queue.Empty):
                first = lines.get(timeout=2.0)
                break
        else:
            raise AssertionError("the follower printed no record")
        partition, _, key, _ = first.rstrip("\n").split("\t")
        assert key == "ping"
        assert int(partition) == partition_of(key)
        new = log.cli("produce", log.source, "--key-separator", "=", stdin="k1=bravo\nk2=charlie\n")
        assert new.returncode == 0, new.stderr
        seen: set[tuple[str, ...]] = set()
        while len(seen) < 2:
            fields = lines.get(timeout=10.0).rstrip("\n").split("\t")
            if fields[2] != "ping":  # a later ping, if an earlier one was slow to show
                seen.add(tuple(fields))
        assert {f[2:] for f in seen} == {("k1", "bravo"), ("k2", "charlie")}
        assert all(int(f[0]) == partition_of(f[2]) for f in seen)
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(timeout=10) == 0, follower.stderr.read() if follower.stderr else ""
        reader.join(5)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        assert all("\tping\t" in line for line in rest), rest
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert worker.stop() == 0, worker.log()


def _lines_into(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


# -- topics, input formats, codecs -------------------------------------------------------


def test_a_missing_topic_tells_which_flag_to_pass(log: Log) -> None:
    topic = log.topic("missing")
    produced = log.cli("produce", topic, "--key-separator", ":", stdin="a:b\n")
    assert produced.returncode == 1
    assert f"statestream: error: topic '{topic}' does not exist" in produced.stderr
    assert "pass --partitions N" in produced.stderr
    assert "Traceback" not in produced.stderr

    consumed = log.cli("consume", topic)
    assert consumed.returncode == 1
    assert f"topic '{topic}' does not exist" in consumed.stderr
    assert f"statestream produce {topic} --partitions N" in consumed.stderr
    assert "Traceback" not in consumed.stderr

    # The flag (or its environment variable) creates it; another count is refused.
    created = log.cli("produce", topic, stdin="x\n", STATESTREAM_PARTITIONS="2")
    assert created.returncode == 0, created.stderr
    other = log.cli("produce", topic, "--partitions", "5", stdin="y\n")
    assert other.returncode == 1
    assert "exists with 2 partitions" in other.stderr
    assert "--partitions 2" in other.stderr
    assert [r["value"] for r in log.consume(topic)] == ["x"]


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Transport]:
    """An embedded log this test process holds, as a worker would."""
    transport = open_transport(f"embedded://{tmp_path}/data/log")
    yield transport
    transport.close()


@pytest.mark.parametrize("holder", ["nobody", "this process"])
def test_json_lines_and_codecs_on_the_embedded_log(
    holder: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if holder != "nobody":
        request.getfixturevalue("held")
    log = Log("embedded", tmp_path, None)
    _check_json_lines(log)


@pytest.mark.kafka
def test_json_lines_and_codecs_on_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    _check_json_lines(Log("kafka", tmp_path, kafka_bootstrap))


def _check_json_lines(log: Log) -> None:
    topic = log.topic("events")
    items = [
        {"key": {"user": 1, "page": "a"}, "value": {"views": 3}},
        {"key": 42, "value": [1, "two", None]},
        {"value": "no key"},
        {"key": "tab\there", "value": "line\nbreak"},
    ]
    lines = "".join(json.dumps(item) + "\n" for item in items) + "\n"
    produced = log.cli("produce", topic, "--json", "--partitions", "4", stdin=lines)
    assert produced.returncode == 0, produced.stderr
    records = log.consume(topic)
    assert sorted(
        json.dumps([r.get("key"), r["value"]], sort_keys=True) for r in records
    ) == sorted(json.dumps([item.get("key"), item["value"]], sort_keys=True) for item in items)
    for record in records:
        if record["key"] is not None:
            assert record["partition"] == partition_of(record["key"], 4)

    plain = log.cli("consume", topic).stdout.splitlines()
    assert len(plain) == len(items)
    assert any(line.endswith("\ttab\\there\tline\\nbreak") for line in plain), plain

    # A bad line stops the input there; the lines before it are written.
    bad = log.cli(
        "produce", topic, "--json", stdin='{"key": "k", "value": 1}\nnot json\n{"value": 2}\n'
    )
    assert bad.returncode == 1
    assert "line 2 of the input" in bad.stderr
    assert "the lines before it were written (1 records" in bad.stderr
    assert len(log.consume(topic)) == len(items) + 1

    # Other codecs by name; pickle is refused by name.
    texts = log.topic("texts")
    raw = log.cli("produce", texts, "--partitions", "1", "--codec", "str", stdin="plain text\n")
    assert raw.returncode == 0, raw.stderr
    assert log.cli("consume", texts, "--codec", "str").stdout == "0\t0\tnull\tplain text\n"
    shown_as_json = log.cli("consume", texts)
    assert shown_as_json.stdout == "0\t0\tnull\tplain text\n"
    assert "shown as raw text" in shown_as_json.stderr
    refused = log.cli("consume", texts, "--codec", "pickle")
    assert refused.returncode == 1
    assert "pickle codec cannot be chosen by name" in refused.stderr

    # --from end without --follow: nothing, at once.
    assert log.consume(topic, "--from", "end") == []


# -- the local socket -------------------------------------------------------------------


def test_the_socket_exists_only_while_the_log_is_held_and_only_for_its_owner(
    tmp_path: Path,
) -> None:
    log_dir = tmp_path / "log"
    path = socket_path(str(log_dir))
    transport = open_transport(f"embedded://{log_dir}")
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    finally:
        transport.close()
    assert not os.path.exists(path)
    with pytest.raises(LocalSocketError, match="no process serves"):
        LocalLogClient(str(log_dir))

    # A socket file left by a process that died is replaced by the next owner.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    transport = open_transport(f"embedded://{log_dir}")
    try:
        client = LocalLogClient(str(log_dir))
        assert client.describe("nothing") is None
        client.close()
    finally:
        transport.close()
    assert not os.path.exists(path)


def test_the_socket_refuses_malformed_requests(held: Transport, tmp_path: Path) -> None:
    path = socket_path(str(tmp_path / "data" / "log"))

    def ask(conn: socket.socket, data: bytes) -> dict[str, Any]:
        conn.sendall(data)
        reply = conn.makefile("rb").readline()
        assert reply.endswith(b"\n")
        result: dict[str, Any] = json.loads(reply)
        return result

    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(path)
        conn.settimeout(10)
        for request, message in [
            (b'{"op": "describe", "topic": "t"}\n', "protocol version"),
            (b'{"v": 1, "op": "drop", "topic": "t"}\n', "unknown op 'drop'"),
            (b'{"v": 1, "op": "describe"}\n', "'topic' must be a non-empty string"),
            (b'{"v": 1, "op": "ensure", "topic": "t", "partitions": 0}\n', "'partitions'"),
            (b'{"v": 1, "op": "ensure", "topic": "a b", "partitions": 1}\n', "may contain only"),
            (b'{"v": 1, "op": "produce", "topic": "t", "records": [["!!", null]]}\n', "base64"),
            (b'{"v": 1, "op": "produce", "topic": "t", "records": {}}\n', "'records'"),
            (b'{"v": 1, "op": "fetch", "topic": "t", "positions": {}, "max_records": 1, '
             b'"wait_ms": 0}\n', "'positions'"),
        ]:  # fmt: skip
            reply = ask(conn, request)
            assert reply["ok"] is False, reply
            assert reply["error"] == "bad_request", reply
            assert message in reply["message"], reply
        # Well-formed, but the topic is missing: the log's own error, and the connection stays.
        reply = ask(conn, b'{"v": 1, "op": "watermarks", "topic": "nope"}\n')
        assert reply["error"] == "topic_not_found"
        reply = ask(conn, b'{"v": 1, "op": "ensure", "topic": "t", "partitions": 2}\n')
        assert reply == {"ok": True, "partitions": 2, "created": True}
        # Not json: refused, and the connection is closed.
        assert ask(conn, b"hello\n")["error"] == "bad_request"
        assert conn.recv(1) == b""

    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(path)
        conn.settimeout(10)
        reply = ask(conn, b"x" * (MAX_REQUEST_BYTES + 1))
        assert reply["error"] == "bad_request"
        assert "larger than" in reply["message"]

    client = LocalLogClient(str(tmp_path / "data" / "log"))
    try:
        acks = client.produce("t", [(b"k", b"v"), (None, b"w")])
        assert acks[0] == (default_partition(b"k", 2), 0)
        marks = client.watermarks("t")
        assert [low for low, _ in marks] == [0, 0]
        assert sum(high for _, high in marks) == 2
        records, positions = client.fetch("t", {0: 0, 1: 0}, wait=0)
        assert sorted(r.value or b"" for r in records) == [b"v", b"w"]
        assert positions == {p: high for p, (_, high) in enumerate(marks)}
        records, _ = client.fetch("t", positions, wait=0.2)
        assert records == []
    finally:
        client.close()


def test_a_long_log_directory_is_served_too(tmp_path: Path) -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("long socket paths are reached through /proc/self/fd (Linux)")
    log_dir = tmp_path / ("d" * 60) / ("e" * 60) / "log"
    assert len(socket_path(str(log_dir))) > 108
    transport = open_transport(f"embedded://{log_dir}")
    try:
        client = LocalLogClient(str(log_dir))
        assert client.ensure_topic("t", 1) == 1
        client.close()
    finally:
        transport.close()


def test_a_holder_without_a_socket_is_reported(tmp_path: Path) -> None:
    log_dir = tmp_path / "data" / "log"
    transport = open_transport(f"embedded://{log_dir}")
    try:
        os.unlink(socket_path(str(log_dir)))  # as if it could not be made
        result = Log("embedded", tmp_path, None).cli("consume", "t")
        assert result.returncode == 1
        assert "is held by another process" in result.stderr
        assert "serves no local socket" in result.stderr
        with pytest.raises(LogLockedError):
            open_transport(f"embedded://{log_dir}")
    finally:
        transport.close()
