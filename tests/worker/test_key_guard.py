"""The co-partitioning guard: a table key written on a partition it does not hash to.

A word count without re-keying on unkeyed input writes every word on every
partition: the worker must say so once per table (naming the table, the key,
both partitions and the re-keying API), and refuse with ``strict_keys``.
With keyed input whose keys are the table keys there is no warning, also
when the table's key codec differs from the topic's.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from statestream.errors import ConfigurationError
from statestream.log.base import TopicSpec
from statestream.log.partitioner import default_partition
from statestream.serde import JsonCodec, get_codec
from statestream.tables.keyguard import KeyGuard
from tests.worker.helpers import WorkerProcess, open_embedded, produce, wait_for

PARTITIONS = 4

NAIVE_APP = """
from statestream import App, Processor, Table


class WordCount(Processor):
    topics = ["sentences"]
    counts = Table("counts", default=int, strict_keys={strict})
    lengths = Table("lengths", default=int)

    def process(self, message, ctx):
        for word in message.value.split():
            self.counts[word] += 1
            self.lengths[word] = len(word)


app = App("naive", processors=[WordCount])
"""

KEYED_APP = """
from statestream import App, Processor, Table


class KeyCount(Processor):
    topics = ["sentences"]
    key_codec = "str"
    counts = Table("counts", default=int, strict_keys=True)

    def process(self, message, ctx):
        self.counts[message.key] += 1


app = App("keyed", processors=[KeyCount])
"""


def _run(tmp_path: Path, source: str, records: list[tuple[str | None, str]]) -> WorkerProcess:
    (tmp_path / "guard_app.py").write_text(source)
    transport = open_embedded(tmp_path)
    try:
        produce(transport, "sentences", records, PARTITIONS)
    finally:
        transport.close()
    return WorkerProcess(
        "guard_app:app",
        ["--data-dir", str(tmp_path), "--partitions", str(PARTITIONS)],
        tmp_path / "worker.log",
        {"PYTHONPATH": str(tmp_path)},
    )


def test_unkeyed_words_warn_once_per_table(tmp_path: Path) -> None:
    sentences = [(None, "the quick brown fox jumps over the lazy dog")] * 40
    worker = _run(tmp_path, NAIVE_APP.format(strict=False), sentences)
    try:
        wait_for(lambda: worker.log().count("was written on partition") >= 2, 30, "warnings")
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    pattern = (
        r"table '(\w+)': key '(\w+)' was written on partition (\d), "
        r"but topic 'sentences' partitions that key to (\d)"
    )
    warnings = re.findall(pattern, worker.log())
    assert sorted(w[0] for w in warnings) == ["counts", "lengths"], worker.log()
    for _table, key, written, home in warnings:
        assert int(written) != int(home)
        assert default_partition(JsonCodec().encode(key), PARTITIONS) == int(home)
    assert "ctx.group_by" in worker.log()


def test_strict_keys_stops_the_worker(tmp_path: Path) -> None:
    sentences = [(None, "the quick brown fox jumps over the lazy dog")] * 40
    worker = _run(tmp_path, NAIVE_APP.format(strict=True), sentences)
    try:
        code = worker.wait(60)
    finally:
        worker.ensure_stopped()
    assert code == 1, worker.log()
    assert "strict_keys is set" in worker.log()
    assert "table 'counts'" in worker.log()


def test_keys_of_the_source_topic_pass_even_with_another_codec(tmp_path: Path) -> None:
    # The topic's keys are str-encoded, the table's json: hashing the table's
    # bytes would give false alarms; the guard hashes as the topic encodes.
    records = [(f"user-{i}", "x") for i in range(200)]
    transport = open_embedded(tmp_path)
    try:
        producer = transport.producer()
        transport.admin().ensure_topic(TopicSpec("sentences", PARTITIONS))
        for key, _value in records:
            producer.send("sentences", key.encode(), b'"x"')  # partitioned by the str bytes
        producer.flush()
        producer.close()
    finally:
        transport.close()
    (tmp_path / "guard_app.py").write_text(KEYED_APP)
    worker = WorkerProcess(
        "guard_app:app",
        ["--data-dir", str(tmp_path), "--partitions", str(PARTITIONS)],
        tmp_path / "worker.log",
        {"PYTHONPATH": str(tmp_path)},
    )
    try:
        wait_for(lambda: worker.log().count("ready: replayed") == PARTITIONS, 30, "ready")
        time.sleep(2)  # every record processed (200 records take milliseconds)
        assert worker.alive(), worker.log()
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    assert "was written on partition" not in worker.log()


def test_the_guard_itself(caplog: pytest.LogCaptureFixture) -> None:
    json_codec, str_codec = get_codec("json"), get_codec("str")
    home = default_partition(b"alice", PARTITIONS)
    other = (home + 1) % PARTITIONS
    warned: set[str] = set()
    ok = KeyGuard(
        "t", home, PARTITIONS, json_codec, lambda t: str_codec, strict=True, warned=warned
    )
    ok(json_codec.encode("alice"), "users")  # hashed as "alice" (str), not '"alice"'
    wrong = KeyGuard(
        "t", other, PARTITIONS, json_codec, lambda t: str_codec, strict=False, warned=warned
    )
    with caplog.at_level(logging.WARNING, "statestream.tables"):
        wrong(json_codec.encode("alice"), "users")
        wrong(json_codec.encode("alice"), "users")
    assert caplog.text.count("was written on partition") == 1
    strict = KeyGuard(
        "t", other, PARTITIONS, json_codec, lambda t: str_codec, strict=True, warned=set()
    )
    with pytest.raises(ConfigurationError, match="strict_keys"):
        strict(json_codec.encode("alice"), "users")
    strict(json_codec.encode("alice"), None)  # no source record: nothing to compare
