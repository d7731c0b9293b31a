"""Global tables in workers: restored before processing, tailed, restarted, failing cleanly.

The embedded-log tests run a worker in this process (sharing its transport,
so the test writes and reads while it runs, and reads the global table
directly); the Kafka tests run two worker processes of
``tests.worker.global_app`` and look at each one's copy through its answers
to probes, its log and its status file.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statestream import App, GlobalTable, Processor, Table
from statestream.context import Context, Message
from statestream.errors import (
    ConfigurationError,
    RestoreError,
    StoreError,
    TableContextError,
)
from statestream.inspect import describe_global_tables
from statestream.log import Transport, open_transport
from statestream.tables.globaltable import GlobalCopy
from statestream.tables.local import read_global_status, status_path
from statestream.worker.globals import (
    GlobalTablesThread,
    check_global_stores,
    ensure_global_topics,
)
from tests.worker.conftest import PARTITIONS, Cluster
from tests.worker.global_helpers import (
    GLOBAL_APP,
    FlakyFetcher,
    FlakyTransport,
    Probes,
    Running,
    contents,
    log_restored,
    make_topic,
    marks,
    offsets_behind,
    restored_counts,
    send,
    tables_output,
)
from tests.worker.helpers import produce, read_topic, wait_for, watermarks

# -- an embedded-log worker ----------------------------------------------------------


@pytest.fixture
def embedded_log(tmp_path: Path) -> Iterator[Transport]:
    transport = open_transport(f"embedded://{tmp_path}/log")
    yield transport
    transport.close()


def lookup_app(
    tmp_path: Path, topic: str | None = None
) -> tuple[App, GlobalTable[str, int], list[int]]:
    """An app whose processor writes its global table and notes what its copy held."""
    table: GlobalTable[str, int] = GlobalTable("lookup", topic=topic)
    global_topic = topic or "gt-lookup-changelog"
    first_sizes: list[int] = []

    class Lookup(Processor):
        topics = ("commands",)
        lookup = table

        def __init__(self) -> None:
            self.first = True

        def process(self, message: Message, ctx: Context) -> None:
            if self.first:  # the copy was complete before anything was processed
                self.first = False
                first_sizes.append(len(self.lookup))
            command = message.value
            if "put" in command:
                ctx.send(global_topic, command["put"][0], command["put"][1])
            elif "delete" in command:
                ctx.send(global_topic, command["delete"], None)

    app = App(
        "gt", [Lookup], broker_url=f"embedded://{tmp_path}/log",
        store_url=f"leveldb://{tmp_path}/stores", data_dir=str(tmp_path / "data"),
        partitions=2, commit_interval=0.1,
    )  # fmt: skip
    return app, table, first_sizes


def test_embedded_worker_restores_before_processing_tails_and_restarts(
    embedded_log: Transport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="statestream.globals")
    app, table, first_sizes = lookup_app(tmp_path)
    topic = app.global_topic(table)
    make_topic(embedded_log, topic, 2)
    make_topic(embedded_log, "commands", 2, policy="delete")
    model = {f"pre-{i}": i for i in range(300)}
    # Keyed like ctx.send keys them: a key's writes are ordered within its partition only.
    send(embedded_log, topic, [(k, v, None) for k, v in model.items()])
    # The first record of each partition reports the copy's size before any write.
    send(embedded_log, "commands", [(f"first-{p}", {"noop": p}, p) for p in range(2)])

    # Slow fetches: the restore takes seconds, processing would start at once.
    running = Running(app, FlakyTransport(embedded_log, delay=0.1))  # type: ignore[arg-type]
    commands: list[tuple[Any, Any, int | None]] = [
        (f"w-{i}", {"put": [f"w-{i}", i]}, i % 2) for i in range(50)
    ]
    commands += [(f"pre-{i}", {"delete": f"pre-{i}"}, i % 2) for i in range(10)]
    send(embedded_log, "commands", commands)
    model.update({f"w-{i}": i for i in range(50)})
    for i in range(10):
        del model[f"pre-{i}"]
    # Any thread reads the copy: here, the test's.
    wait_for(lambda: contents(table) == model, 30, "the processors' writes in the copy")
    assert first_sizes == [300, 300]
    assert table["w-7"] == 7
    assert "pre-3" not in table
    with pytest.raises(Exception, match=r"ctx\.send"):
        table["x"] = 1
    status_file = status_path(str(tmp_path / "data"), "gt")

    def caught_up() -> bool:
        reported = (read_global_status(status_file) or {}).get("lookup", {})
        return len(reported) == 2 and all(e["lag"] == 0 for e in reported.values())

    wait_for(caught_up, 10, "lag 0 in the status file")
    running.stop()
    assert running.error is None
    with pytest.raises(TableContextError):
        table.get("w-1")  # the worker stopped: no copy to read

    # Restart with the store kept: only what was written since is read.
    send(embedded_log, topic, [(f"late-{i}", i, None) for i in range(20)])
    model.update({f"late-{i}": i for i in range(20)})
    expected = offsets_behind(f"leveldb://{tmp_path}/stores", marks(embedded_log, topic, 2))
    assert expected == 20
    caplog.clear()
    running = Running(app, embedded_log)
    wait_for(lambda: restored_counts(caplog), 30, "the restore")
    assert restored_counts(caplog) == [20]
    assert dict(table.items()) == model
    running.stop()

    # Restart with the store deleted: everything is read again.
    shutil.rmtree(tmp_path / "stores" / "lookup")
    caplog.clear()
    running = Running(app, embedded_log)
    wait_for(lambda: restored_counts(caplog), 30, "the rebuild")
    in_topic = sum(len(records) for records in read_topic(embedded_log, topic, 2).values())
    assert restored_counts(caplog) == [in_topic]
    assert dict(table.items()) == model
    running.stop()
    assert running.error is None
    # `statestream tables` without a running worker: the copy's offsets on disk.
    highs = marks(embedded_log, topic, 2)
    embedded_log.close()  # the command opens the log itself
    Path(status_file).unlink()  # else it describes the worker that just stopped
    lines = list(describe_global_tables(app))
    assert lines[0].startswith("global table lookup: topic gt-lookup-changelog (2 partitions)")
    for p in range(2):
        line = f"  partition {p}: local copy at offset {highs[p][1] - 1}, 0 offsets behind"
        assert line in lines


def test_a_named_topic_with_its_own_partition_count(
    embedded_log: Transport, tmp_path: Path
) -> None:
    app, table, first_sizes = lookup_app(tmp_path, topic="countries")
    make_topic(embedded_log, "countries", 3, policy="delete")  # used as it is
    make_topic(embedded_log, "commands", 2, policy="delete")
    send(embedded_log, "countries", [(f"c{i}", i, i % 3) for i in range(30)])
    send(embedded_log, "commands", [("k", {"noop": 0}, 0)])
    running = Running(app, embedded_log)
    try:
        wait_for(lambda: first_sizes, 30, "the first record")
        assert first_sizes == [30]
        assert dict(table.items()) == {f"c{i}": i for i in range(30)}
    finally:
        running.stop()


def test_a_store_error_in_the_reader_stops_the_worker(
    embedded_log: Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, table, _ = lookup_app(tmp_path)
    make_topic(embedded_log, "commands", 2, policy="delete")
    running = Running(app, embedded_log)
    wait_for(lambda: table._copy is not None and running.worker.status().ready, 30, "ready")

    def broken(self: GlobalCopy, records: Any) -> int:
        raise StoreError("the disk is gone")

    monkeypatch.setattr(GlobalCopy, "apply", broken)
    send(embedded_log, "commands", [("k", {"put": ["k", 1]}, 0)])
    running.thread.join(30)
    assert not running.thread.is_alive(), "the worker kept running"
    assert isinstance(running.error, StoreError)
    assert table._copy is None  # stopped, copy closed


# -- the reader thread alone -------------------------------------------------------------


def reader_thread(
    transport: Transport, tmp_path: Path, **options: Any
) -> tuple[GlobalTablesThread, GlobalTable[str, int], FlakyTransport]:
    app, table, _ = lookup_app(tmp_path)
    admin = transport.admin()
    ensure_global_topics(admin, app, 2)
    admin.close()
    wrapped = FlakyTransport(transport)
    thread = GlobalTablesThread(app, wrapped, **options)  # type: ignore[arg-type]
    return thread, table, wrapped


def test_log_errors_are_retried_with_one_warning(
    embedded_log: Transport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thread, table, wrapped = reader_thread(embedded_log, tmp_path)
    thread.start()
    try:
        assert thread.wait_ready(threading.Event())
        with caplog.at_level(logging.DEBUG, logger="statestream.globals"):
            fetcher = wrapped.made[0]
            fetcher.fail = 4
            wait_for(lambda: fetcher.fail == 0, 20, "four failed polls")
            send(embedded_log, "gt-lookup-changelog", [("k", 1, 0)])
            wait_for(lambda: table.get("k") == 1, 20, "the record after the errors")
        retries = [r for r in caplog.records if "broker went away" in r.getMessage()]
        assert len(retries) == 4
        assert [r.levelno for r in retries].count(logging.WARNING) == 1  # rate limited
        assert thread.failure is None
    finally:
        thread.stop()


def test_a_restore_that_cannot_finish_raises(embedded_log: Transport, tmp_path: Path) -> None:
    thread, table, wrapped = reader_thread(embedded_log, tmp_path, stall_timeout=0.5)
    send(embedded_log, "gt-lookup-changelog", [(f"k{i}", i, i % 2) for i in range(5)])
    original = wrapped.fetcher

    def stalled(**options: Any) -> FlakyFetcher:
        made = original(**options)
        made.stall = True
        return made

    wrapped.fetcher = stalled  # type: ignore[method-assign]
    thread.start()
    try:
        with pytest.raises(RestoreError, match=r"no progress .*lookup-changelog"):
            thread.wait_ready(threading.Event())
    finally:
        thread.stop()
    with pytest.raises(TableContextError):
        len(table)


def test_stop_joins_the_thread_and_closes_the_stores(
    embedded_log: Transport, tmp_path: Path
) -> None:
    thread, table, _ = reader_thread(embedded_log, tmp_path)
    thread.start()
    assert thread.wait_ready(threading.Event())
    copy = table.copy
    running = thread._thread
    assert running is not None
    thread.stop()
    assert not running.is_alive()
    assert copy.store.closed
    with pytest.raises(TableContextError):
        table.get("k")


def test_named_topics_are_created_if_missing_and_used_as_they_are(
    embedded_log: Transport, tmp_path: Path
) -> None:
    make_topic(embedded_log, "existing", 1, policy="delete")

    class Reads(Processor):
        topics = ("s",)
        a: GlobalTable[str, int] = GlobalTable("a", topic="existing")
        b: GlobalTable[str, int] = GlobalTable("b", topic="missing")
        c: GlobalTable[str, int] = GlobalTable("c")

        def process(self, message: Message, ctx: Context) -> None:
            pass

    app = App("named", [Reads], broker_url=f"embedded://{tmp_path}/log")
    admin = embedded_log.admin()
    try:
        ensure_global_topics(admin, app, 4)
        existing = admin.describe_topic("existing")
        missing = admin.describe_topic("missing")
        default = admin.describe_topic("named-c-changelog")
    finally:
        admin.close()
    assert existing is not None
    assert missing is not None
    assert default is not None
    assert (existing.partitions, existing.cleanup_policy) == (1, "delete")
    assert (missing.partitions, missing.cleanup_policy) == (4, "compact")
    assert (default.partitions, default.cleanup_policy) == (4, "compact")


# -- declaring -------------------------------------------------------------------------


def _app(*tables: Any, **settings: Any) -> App:
    attributes: dict[str, Any] = {"topics": ("src",), "process": lambda self, m, c: None}
    attributes.update({f"t{i}": t for i, t in enumerate(tables)})
    proc = type("Proc", (Processor,), attributes)
    return App("decl", [proc], **settings)


def test_declaring_global_tables() -> None:
    countries: GlobalTable[str, str] = GlobalTable("countries", value_codec="str")
    app = _app(countries, GlobalTable("rates", topic="fx-rates"), Table("counts"))
    assert [t.name for t in app.global_tables()] == ["countries", "rates"]
    assert [t.name for t in app.tables()] == ["counts"]
    assert app.global_topic(countries) == "decl-countries-changelog"
    assert app.global_topic(app.global_tables()[1]) == "fx-rates"
    # ctx.send to the topic encodes with the table's codecs.
    assert [c.name for c in app.codecs("decl-countries-changelog")] == ["json", "str"]


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ((GlobalTable("x"), Table("x")), "both named 'x'"),
        ((GlobalTable("x"), GlobalTable("x")), "two different global tables"),
        ((GlobalTable("g", topic="decl-counts-changelog"), Table("counts")), "cannot read topic"),
        ((GlobalTable("a", topic="t"), GlobalTable("b", topic="t")), "both read topic 't'"),
        ((GlobalTable("a", topic="src", value_codec="str"),), "other codecs"),
    ],
)
def test_bad_declarations(tables: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _app(*tables)


def test_a_shared_store_is_refused() -> None:
    pytest.importorskip("aerospike")
    app = _app(GlobalTable("g"), store_url="aerospike://127.0.0.1:3000/test")
    with pytest.raises(ConfigurationError, match="needs a local store"):
        check_global_stores(app)
    check_global_stores(
        _app(GlobalTable("g", store_url="memory://"), store_url=app.config.store_url)
    )


# -- two workers on Kafka ----------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_two_kafka_workers_see_each_others_writes_and_restart(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster
    app_id = f"globals{cluster.suffix}"
    topic = f"{app_id}-lookup-changelog"
    source = f"commands{cluster.suffix}"
    with cluster.log() as log:
        make_topic(log, topic, PARTITIONS)
        model = {f"pre-{i}": i for i in range(500)}
        send(log, topic, [(k, v, None) for k, v in model.items()])
        produce(log, source, [], PARTITIONS)
        a = cluster.worker("a", app=GLOBAL_APP)
        b = cluster.worker("b", app=GLOBAL_APP)
        probes = Probes(cluster, log)
        # Whoever answers, its copy held every prefilled key before processing.
        probes.wait_until({a.pid, b.pid}, model, "both workers answering with the prefill")
        assert all(len(x["items"]) >= 500 for x in probes.answers())

        # Each worker's processors write the partitions it owns; both copies get all.
        commands: list[tuple[Any, Any, int | None]] = [
            (f"w-{i}", {"put": [f"w-{i}", i]}, None) for i in range(200)
        ]
        commands += [(f"pre-{i}", {"delete": f"pre-{i}"}, None) for i in range(50)]
        send(log, source, commands)
        model.update({f"w-{i}": i for i in range(200)})
        for i in range(50):
            del model[f"pre-{i}"]
        probes.wait_until({a.pid, b.pid}, model, "both copies with every worker's writes")
        assert len({x["pid"] for x in probes.answers() if x["items"] == model}) == 2

        def shown_global() -> str | None:
            out = tables_output(cluster, "b")
            return out if out.count("global on this worker") == PARTITIONS else None

        out = wait_for(shown_global, 30, "role global in `statestream tables`")
        assert re.search(r"partition \d: global on this worker, local offset \d+, lag 0", out)

        # Restart b with its store: it reads only the records written while it was down.
        assert b.stop() == 0, b.log()
        store_url = f"leveldb://{cluster.data_dir('b')}/{app_id}"
        send(log, source, [(f"x-{i}", {"put": [f"x-{i}", i]}, None) for i in range(40)])
        model.update({f"x-{i}": i for i in range(40)})
        probes.wait_until({a.pid}, model, "worker a with the writes made while b was down")
        highs = watermarks(log, topic, PARTITIONS)
        behind = offsets_behind(store_url, {p: (0, h) for p, h in highs.items()})
        assert behind >= 40
        b = cluster.worker("b", app=GLOBAL_APP)
        wait_for(lambda: log_restored(b), 60, "b's restore")
        assert log_restored(b) == [behind]
        probes.wait_until({b.pid}, model, "the restarted worker with every write")

        # Restart b without its store: a full rebuild.
        assert b.stop() == 0, b.log()
        shutil.rmtree(cluster.data_dir("b") / app_id / "lookup")
        b = cluster.worker("b", app=GLOBAL_APP)
        wait_for(lambda: log_restored(b), 60, "b's rebuild")
        assert log_restored(b) == [sum(watermarks(log, topic, PARTITIONS).values())]
        probes.wait_until({b.pid}, model, "the rebuilt worker with every write")
        assert a.stop() == 0, a.log()
        assert b.stop() == 0, b.log()
