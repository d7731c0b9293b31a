"""``statestream inspect``: a table's keys and values, decoded, read-only, beside a worker.

The tables are written by real workers (subprocesses) on the embedded log;
``inspect`` runs in this process through :func:`statestream.cli.main`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from statestream import App, Processor, Table
from statestream.cli import main
from statestream.context import Context, Message
from statestream.errors import ConfigurationError, StoreHeldError
from statestream.inspect_store import Entry, Query, TableLayout, TableReader, app_table
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.serde import JsonCodec
from statestream.stores.base import StoreURL
from statestream.stores.memory import MemoryStore
from statestream.stores.registry import StoreRegistry, open_store
from tests.worker.helpers import (
    REPO_ROOT,
    WorkerProcess,
    clean_env,
    expected_counts,
    make_sentences,
    non_empty,
    open_embedded,
    processed_all,
    produce,
    read_topic,
    wait_for,
    watermarks,
)

pytestmark = pytest.mark.timeout(180)

WORDCOUNT = "tests.worker.wordcount_app:app"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    for name in ("STATESTREAM_BROKER_URL", "STATESTREAM_STORE_URL", "STATESTREAM_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(["inspect", *argv])
        except SystemExit as exc:  # bad arguments
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _lines(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines()]


def _counts(out: str) -> dict[int, dict[str, int]]:
    found: dict[int, dict[str, int]] = {}
    for partition, key, value in _lines(out):
        found.setdefault(int(partition), {})[key] = int(value)
    return found


class WordCountRun:
    """A word count run to its end on the embedded log under ``tmp``: the expected tables."""

    def __init__(self, tmp: Path, *flags: str) -> None:
        self.tmp = tmp
        transport = open_embedded(tmp)
        try:
            produce(transport, "sentences", make_sentences(120, seed=11), 2)
            self.highs = watermarks(transport, "sentences", 2)
        finally:
            transport.close()
        self.progress = tmp / "progress"
        self.progress.mkdir()
        self.worker = WorkerProcess(
            WORDCOUNT,
            ["--data-dir", str(tmp), "--commit-interval", "0.1", *flags],
            tmp / "worker.log",
            {"WORDCOUNT_PROGRESS_DIR": str(self.progress)},
        )

    def wait_processed(self) -> None:
        wait_for(lambda: processed_all(self.progress, self.highs), 60, "the input processed")

    def stop(self) -> dict[int, dict[str, int]]:
        """Stop the worker; return the counts it committed, per partition."""
        assert self.worker.stop() == 0, self.worker.log()
        transport = open_embedded(self.tmp)
        try:
            return non_empty(expected_counts(read_topic(transport, "sentences", 2)))
        finally:
            transport.close()


@pytest.fixture
def wordcount(tmp_path: Path) -> Iterator[WordCountRun]:
    made = WordCountRun(tmp_path)
    yield made
    made.worker.ensure_stopped()


def test_inspect_refuses_a_store_a_running_worker_holds_then_lists_it(
    wordcount: WordCountRun, run: Run
) -> None:
    wordcount.wait_processed()
    code, out, err = run("--table", "counts", WORDCOUNT, "--data-dir", str(wordcount.tmp))
    assert code == 1
    assert out == ""
    assert (
        "statestream: error: the store of table 'counts' partition 0 is held by a running " in err
    )
    assert "(its LevelDB lock is taken)" in err
    assert "stop that worker to inspect it" in err
    expected = wordcount.stop()
    assert set(expected) == {0, 1}

    code, out, err = run(
        "--table", "counts", WORDCOUNT, "--data-dir", str(wordcount.tmp), "--limit", "0"
    )
    assert code == 0, err
    assert _counts(out) == expected
    # Partition order, then key order (json strings sort like the words).
    keys = [(int(p), k) for p, k, _ in _lines(out)]
    assert keys == sorted(keys)

    # The same store by URL, decoded with the default json codecs.
    code, by_url, err = run(
        "--table", "counts", f"leveldb://{wordcount.tmp}/wordcount", "--limit", "0"
    )
    assert code == 0, err
    assert by_url == out

    code, out, err = run(
        "--table", "counts", WORDCOUNT, "--data-dir", str(wordcount.tmp), "--partition", "1",
        "--limit", "0",
    )  # fmt: skip
    assert code == 0, err
    assert _counts(out) == {1: expected[1]}

    code, out, err = run(
        "--table", "counts", WORDCOUNT, "--data-dir", str(wordcount.tmp), "--prefix", "c",
        "--limit", "0",
    )  # fmt: skip
    assert code == 0, err
    wanted = {
        p: {k: v for k, v in counts.items() if k.startswith("c")} for p, counts in expected.items()
    }
    assert _counts(out) == non_empty(wanted)
    assert wanted[0]  # charlie is in the input: the prefix check is not vacuous

    code, out, err = run(
        "--table", "counts", WORDCOUNT, "--data-dir", str(wordcount.tmp), "--limit", "3"
    )
    assert code == 0, err
    first = sorted(expected[0].items())[:3]
    assert [(p, k, int(v)) for p, k, v in _lines(out)] == [("0", k, v) for k, v in first]
    assert "stopped at --limit 3" in err

    code, out, err = run(
        "--table", "counts", WORDCOUNT, "--data-dir", str(wordcount.tmp), "--json", "--limit", "0"
    )
    assert code == 0, err
    items = [json.loads(line) for line in out.splitlines()]
    assert {(i["partition"], i["key"]): i["value"] for i in items} == {
        (p, k): v for p, counts in expected.items() for k, v in counts.items()
    }
    assert "stopped at --limit" not in err


def test_inspect_names_what_is_wrong(tmp_path: Path, run: Run) -> None:
    # No worker ran with this data directory.
    code, _, err = run("--table", "counts", WORDCOUNT, "--data-dir", str(tmp_path))
    assert code == 1
    assert "table 'counts' has no store at leveldb://" in err
    code, _, err = run("--table", "nope", WORDCOUNT, "--data-dir", str(tmp_path))
    assert code == 1
    assert "app 'wordcount' has no table 'nope'; its tables: counts" in err
    code, _, err = run("--table", "counts", "bogus://somewhere")
    assert code == 1
    assert "unknown store scheme 'bogus'" in err
    code, _, err = run("--table", "counts", "memory://")
    assert code == 1
    assert "lives in memory" in err
    code, _, err = run("--table", "counts", "wordcount")
    assert code == 1
    assert "inspect needs an app (module:attribute" in err
    code, _, err = run("--table", "counts", "no_such_module:app")
    assert code == 1
    assert "cannot import module 'no_such_module'" in err
    code, _, err = run("--table", "counts", f"leveldb://{tmp_path}", "--partition", "7")
    assert code == 1
    assert "has no store of partition 7" in err
    code, _, err = run("--table", "counts", f"leveldb://{tmp_path}", "--limit", "-1")
    assert code == 1
    assert "--limit must be >= 0" in err
    for line in err.splitlines():
        assert "Traceback" not in line


def test_inspect_asks_the_endpoint_of_the_worker_that_holds_the_store(
    tmp_path: Path, run: Run
) -> None:
    wordcount = WordCountRun(tmp_path, "--web-port", "0")
    try:
        wordcount.wait_processed()
        args = ("--table", "counts", WORDCOUNT, "--data-dir", str(tmp_path), "--limit", "0")

        def answered() -> str | None:
            code, out, _ = run(*args)
            return out if code == 0 and out else None

        seen = wait_for(answered, 60, "inspect answered through the endpoint")
        time.sleep(0.5)  # the last commits land
        code, seen, err = run(*args)
        assert code == 0, err
        code, prefixed, err = run(*args, "--prefix", "c")
        assert code == 0, err
        expected = wordcount.stop()
    finally:
        wordcount.worker.ensure_stopped()
    assert _counts(seen) == expected
    assert _counts(prefixed) == {
        p: {k: v for k, v in counts.items() if k.startswith("c")}
        for p, counts in expected.items()
        if any(k.startswith("c") for k in counts)
    }


def test_a_held_store_goes_to_the_ask_worker_seam(tmp_path: Path) -> None:
    url = f"leveldb://{tmp_path}"
    store = open_store(url, "counts", 0)  # held, as by a running worker
    store.write({JsonCodec().encode("k"): JsonCodec().encode(1)}, 0)
    layout = TableLayout("counts", url, JsonCodec(), JsonCodec())
    asked: list[tuple[int, Query]] = []

    def ask(layout: TableLayout, partition: int, query: Query) -> list[Entry] | None:
        asked.append((partition, query))
        return [Entry(partition, "from", "the worker")]

    try:
        reader = TableReader(layout, ask_worker=ask)
        assert reader.partitions() == [0]
        assert list(reader.entries([0], Query("f", 5))) == [Entry(0, "from", "the worker")]
        assert asked == [(0, Query("f", 5))]
        with pytest.raises(StoreHeldError, match="held by a running worker"):
            list(TableReader(layout).entries([0]))
        with pytest.raises(StoreHeldError, match="could not be asked"):
            list(TableReader(layout, ask_worker=lambda *a: None).entries([0]))
    finally:
        store.close()
    # Released: read here, and the store is unchanged by the reads.
    assert list(TableReader(layout).entries([0])) == [Entry(0, "k", 1)]
    with open_store(url, "counts", 0) as again:
        assert again.offset() == 0


def _cli(tmp: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statestream.cli", *args, "--data-dir", str(tmp)],
        cwd=REPO_ROOT,
        env=clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_inspect_shows_a_windowed_tables_windows(tmp_path: Path, run: Run) -> None:
    clicks = [
        {"key": "ada", "value": {"page": "/", "ts": 0}},
        {"key": "ada", "value": {"page": "/a", "ts": 30000}},
        {"key": "bob", "value": {"page": "/", "ts": 45000}},
        {"key": "ada", "value": {"page": "/b", "ts": 75000}},
    ]
    lines = "".join(json.dumps(c) + "\n" for c in clicks)
    produced = _cli(tmp_path, "produce", "clicks", "--json", "--partitions", "1", stdin=lines)
    assert produced.returncode == 0, produced.stderr
    worker = WorkerProcess("examples.clicks:app", ["--data-dir", str(tmp_path)], tmp_path / "w.log")
    try:
        # The last click closes the first minute: both finals mean all four were processed.
        def finals() -> bool:
            consumed = _cli(tmp_path, "consume", "clicks-per-minute")
            return consumed.stdout.count("\n") == 2

        wait_for(finals, 60, "the first minute's final counts", interval=0.5)
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    args = ("--table", "clicks-per-minute", "examples.clicks:app", "--data-dir", str(tmp_path))
    code, out, err = run(*args)
    assert code == 0, err
    assert _lines(out) == [
        ["0", "ada", "0", "60000", "2"],
        ["0", "ada", "60000", "120000", "1"],
        ["0", "bob", "0", "60000", "1"],
    ]
    code, out, err = run(*args, "--json", "--prefix", "b")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"partition": 0, "key": "bob", "start": 0, "end": 60000, "value": 1}
    ]


def test_app_table_knows_windowed_and_global_tables(tmp_path: Path) -> None:
    from examples.clicks import app as clicks_app
    from tests.worker.global_app import app as global_app

    layout = app_table(clicks_app, "clicks-per-minute")
    assert layout.windowed
    assert not layout.global_table
    assert layout.store_url == clicks_app.config.store_url
    lookup = app_table(global_app.with_settings(data_dir=str(tmp_path)), "lookup")
    assert lookup.global_table
    assert not lookup.windowed
    # One store holds a global table: partition 0, whatever is asked.
    with pytest.raises(ConfigurationError, match="is a global table"):
        TableReader(lookup).partitions(3)


# -- statestream tables ---------------------------------------------------------------------


def _tables(tmp: Path, *extra: str) -> str:
    result = _cli(tmp, "tables", WORDCOUNT, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _rows(out: str, table: str) -> dict[int, list[str]]:
    """The partition rows under ``table``'s header: partition -> [state, offset, end, lag]."""
    section = out.split(f"table {table}: ", 1)[1].split("\ntable ", 1)[0]
    return {
        int(fields[0]): fields[1:]
        for fields in (line.split() for line in section.splitlines())
        if fields and fields[0].isdigit()
    }


def test_tables_shows_state_local_offset_changelog_end_and_lag(wordcount: WordCountRun) -> None:
    wordcount.wait_processed()
    status = wordcount.tmp / "wordcount.worker-status.json"
    wait_for(status.exists, 30, "the worker's status file")
    running = _tables(wordcount.tmp)
    assert "(a worker runs with this data directory" in running
    # The worker holds the embedded log: states, offsets and lags from its report.
    rows = _rows(running, "counts")
    assert sorted(rows) == [0, 1]
    for state, offset, end, lag in rows.values():
        assert (state, end, lag) == ("active", "-", "0")
        assert int(offset) > 0
    wordcount.stop()
    stopped = _tables(wordcount.tmp)
    assert "a worker runs" not in stopped  # its process is gone
    rows = _rows(stopped, "counts")
    for state, offset, end, lag in rows.values():
        assert (state, lag) == ("idle", "0")
        assert int(offset) == int(end) - 1
    # Another store directory has no copy: a restore would replay the whole changelog.
    fresh = _rows(
        _tables(wordcount.tmp, "--store-url", f"leveldb://{wordcount.tmp}/elsewhere"), "counts"
    )
    assert {p: (s, o, lag) for p, (s, o, _, lag) in fresh.items()} == {
        p: ("empty", "-", end) for p, (_, _, end, _) in rows.items()
    }
    assert not (wordcount.tmp / "elsewhere").exists()  # tables creates no store


class _SharedStore(MemoryStore):
    """A stand-in for a remote store (Aerospike): every handle of a (table, partition)
    sees the same data, and it cannot list its partitions."""

    scheme = "sharedmem"
    persistent = True
    shared = True
    cluster: ClassVar[dict[tuple[str, int], Any]] = {}

    @classmethod
    def from_url(cls, url: StoreURL, table: str, partition: int) -> _SharedStore:
        store = cls(table, partition)
        store._data = cls.cluster.setdefault((table, partition), store._data)
        return store


class _Shared(Processor):
    topics = ("in",)
    table: Table[str, int] = Table("t", store_url="sharedmem://")

    def process(self, message: Message, ctx: Context) -> None:
        self.table[message.key] = message.value


def test_a_shared_store_is_read_beside_its_writer_over_the_changelogs_partitions(
    tmp_path: Path,
) -> None:
    app = App("sh", processors=[_Shared]).with_settings(data_dir=str(tmp_path))
    registry = StoreRegistry(extra={"sharedmem": _SharedStore})
    log = open_transport(app.config.broker_url)
    admin = log.admin()
    admin.ensure_topic(TopicSpec("sh-t-changelog", 3))
    admin.close()
    log.close()
    writer = registry.open("sharedmem://", "t", 1)  # a live worker's handle, left open
    try:
        writer.write({b'"k"': b"5"}, 0)
        reader = TableReader(app_table(app, "t"), registry=registry)
        assert reader.partitions() == [0, 1, 2]  # the changelog's partitions
        assert list(reader.entries(reader.partitions())) == [Entry(1, "k", 5)]
        # While a worker holds the embedded log, only --partitions can tell.
        held = open_transport(app.config.broker_url)
        try:
            with pytest.raises(ConfigurationError, match="give --partition N"):
                reader.partitions()
            sized = app.with_settings(partitions=2)
            assert TableReader(app_table(sized, "t"), registry=registry).partitions() == [0, 1]
        finally:
            held.close()
    finally:
        writer.close()


def test_inspect_reads_a_global_tables_copy(tmp_path: Path, run: Run) -> None:
    def run_worker(name: str) -> None:
        worker = WorkerProcess(
            "tests.worker.global_app:app",
            ["--data-dir", str(tmp_path), "--partitions", "2"],
            tmp_path / f"{name}.log",
        )
        try:
            # Global tables are restored to their topic's end before anything is processed.
            wait_for(lambda: "ready: replayed" in worker.log(), 60, "the worker to be ready")
            assert worker.stop() == 0, worker.log()
        finally:
            worker.ensure_stopped()

    run_worker("first")  # creates the table's (compacted) topic
    lines = "".join(
        json.dumps({"key": k, "value": v}) + "\n" for k, v in (("b", 2), ("a", 1), ("b", 3))
    )
    produced = _cli(tmp_path, "produce", "globals-lookup-changelog", "--json", stdin=lines)
    assert produced.returncode == 0, produced.stderr
    run_worker("second")
    code, out, err = run(
        "--table", "lookup", "tests.worker.global_app:app", "--data-dir", str(tmp_path)
    )
    assert code == 0, err
    assert _lines(out) == [["0", "a", "1"], ["0", "b", "3"]]


class _Hops(Processor):
    """Counts per key in hopping windows of 10 s every 5 s (``tests.test_inspect_cli:hops``)."""

    topics = ("hops",)
    per_window = Table("hops-per-window", default=int).hopping(
        10_000, 5_000, grace=1_000_000, event_time=lambda message: message.value["ts"]
    )

    def process(self, message: Message, ctx: Context) -> None:
        self.per_window[message.key] += 1
        progress = os.environ.get("WORDCOUNT_PROGRESS_DIR")
        if progress:
            Path(progress, f"p{message.partition}").write_text(str(message.offset))


hops = App("hops", processors=[_Hops])


def test_inspect_merges_a_hopping_tables_slices_into_its_windows(tmp_path: Path, run: Run) -> None:
    lines = "".join(
        json.dumps({"key": "ada", "value": {"ts": ts}}) + "\n" for ts in (1_000, 6_000, 12_000)
    )
    produced = _cli(tmp_path, "produce", "hops", "--json", "--partitions", "1", stdin=lines)
    assert produced.returncode == 0, produced.stderr
    progress = tmp_path / "progress"
    progress.mkdir()
    worker = WorkerProcess(
        "tests.test_inspect_cli:hops",
        ["--data-dir", str(tmp_path)],
        tmp_path / "w.log",
        {"WORDCOUNT_PROGRESS_DIR": str(progress)},
    )
    try:
        wait_for(lambda: processed_all(progress, {0: 3}), 60, "the three records processed")
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    code, out, err = run(
        "--table", "hops-per-window", "tests.test_inspect_cli:hops", "--data-dir", str(tmp_path)
    )
    assert code == 0, err
    # Every window of 10 s starting at a multiple of 5 s that holds a record.
    assert _lines(out) == [
        ["0", "ada", "-5000", "5000", "1"],
        ["0", "ada", "0", "10000", "2"],
        ["0", "ada", "5000", "15000", "2"],
        ["0", "ada", "10000", "20000", "1"],
    ]
    # By store URL the rows are the table's slices of one step each.
    code, out, err = run("--table", "hops-per-window", f"leveldb://{tmp_path}/hops", "--windowed")
    assert code == 0, err
    assert _lines(out) == [
        ["0", "ada", "0", "5000", "1"],
        ["0", "ada", "5000", "10000", "1"],
        ["0", "ada", "10000", "15000", "1"],
    ]
