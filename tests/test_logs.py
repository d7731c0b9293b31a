"""Logging (statestream.logs): the --log-level syntax, JSON lines, quiet client loggers,
and one statestream line instead of kafka-python's flood while brokers are unreachable."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statestream.errors import ConfigurationError
from statestream.log import open_transport
from statestream.logs import (
    BrokerWatch,
    LoggingSetup,
    configure_logging,
    parse_log_levels,
)
from tests.connect_proxy import ConnectProxy
from tests.worker.helpers import (
    WorkerProcess,
    make_sentences,
    open_embedded,
    processed_all,
    produce,
    wait_for,
    watermarks,
)

WORDCOUNT = "tests.worker.wordcount_app:app"


@pytest.fixture
def configured() -> Iterator[list[LoggingSetup]]:
    """Setups made by a test, closed after it (they change the root logger)."""
    made: list[LoggingSetup] = []
    yield made
    for setup in made:
        setup.close()


def _setup(
    made: list[LoggingSetup], levels: str, log_format: str = "text", **kwargs: Any
) -> io.StringIO:
    stream = io.StringIO()
    made.append(
        configure_logging(parse_log_levels(levels), log_format, stream=stream, **kwargs)  # type: ignore[arg-type]
    )
    return stream


# -- the --log-level syntax ---------------------------------------------------------------


def test_levels_parse_a_bare_level_and_named_loggers() -> None:
    levels = parse_log_levels("debug, kafka=INFO ,statestream.recovery=error")
    assert levels.default == logging.DEBUG
    assert dict(levels.named) == {"kafka": logging.INFO, "statestream.recovery": logging.ERROR}
    assert levels.wanted("statestream.recovery") == logging.ERROR
    assert levels.wanted("statestream.worker") == logging.DEBUG
    assert levels.wanted("kafka.net.connection") == logging.INFO  # the parent's item
    assert parse_log_levels("kafka=DEBUG").default == logging.INFO


def test_client_loggers_default_to_warning_or_the_bare_level_if_higher() -> None:
    assert parse_log_levels("DEBUG").wanted("kafka.coordinator") == logging.WARNING
    assert parse_log_levels("ERROR").wanted("kafka.coordinator") == logging.ERROR
    assert parse_log_levels("DEBUG").wanted("kafkaesque") == logging.DEBUG  # not a child


@pytest.mark.parametrize("text", ["", "LOUD", "INFO,DEBUG", "=INFO", "kafka=", "kafka=LOUD", ","])
def test_bad_levels_are_configuration_errors_quoting_the_item(text: str) -> None:
    with pytest.raises(ConfigurationError, match="log level"):
        parse_log_levels(text)


# -- formats and levels in effect ----------------------------------------------------------


def test_json_lines_carry_the_fields_a_call_gives(configured: list[LoggingSetup]) -> None:
    stream = _setup(configured, "INFO", "json", redact=lambda s: s.replace("hunter2", "***"))
    log = logging.getLogger("statestream.test")
    log.info("partition %d ready", 3, extra={"partition": 3, "table": "counts"})
    log.debug("not at INFO")
    try:
        raise ValueError("password hunter2")
    except ValueError:
        log.exception("it failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["message"] == "partition 3 ready"
    assert (first["level"], first["logger"], first["partition"], first["table"]) == (
        "INFO",
        "statestream.test",
        3,
        "counts",
    )
    assert first["time"].endswith("Z")
    assert "T" in first["time"]
    assert first["thread"] == "MainThread"
    assert "error" not in first
    assert "topic" not in first
    assert second["level"] == "ERROR"
    assert "ValueError: password ***" in second["error"]
    assert "hunter2" not in stream.getvalue()


def test_kafka_loggers_are_quiet_unless_named(configured: list[LoggingSetup]) -> None:
    stream = _setup(configured, "INFO")
    logging.getLogger("kafka.coordinator").info("Successfully joined group")
    logging.getLogger("kafka.coordinator").warning("Heartbeat failed")
    logging.getLogger("statestream.worker").info("assigned partitions [0]")
    out = stream.getvalue()
    assert "Successfully joined group" not in out
    assert "WARNING kafka.coordinator: Heartbeat failed" in out
    assert "INFO statestream.worker: assigned partitions [0]" in out
    configured.pop().close()
    stream = _setup(configured, "INFO,kafka=DEBUG")
    logging.getLogger("kafka.coordinator").debug("Sending JoinGroup")
    assert "DEBUG kafka.coordinator: Sending JoinGroup" in stream.getvalue()


def test_close_restores_the_levels_and_removes_the_handler(configured: list[LoggingSetup]) -> None:
    kafka = logging.getLogger("kafka")
    before = (kafka.level, logging.getLogger().level, list(logging.getLogger().handlers))
    setup = configure_logging(parse_log_levels("DEBUG,kafka=ERROR"), stream=io.StringIO())
    assert kafka.level == logging.ERROR
    setup.close()
    assert (kafka.level, logging.getLogger().level, list(logging.getLogger().handlers)) == before


# -- connection errors ----------------------------------------------------------------------


class KafkaConnectionError(Exception):
    """Named like kafka-python's: the filter recognises errors by class name."""


def test_connection_errors_are_counted_and_hidden(configured: list[LoggingSetup]) -> None:
    watch = BrokerWatch()
    stream = _setup(configured, "INFO", watch=watch)
    net = logging.getLogger("kafka.net.manager")
    net.error("Connection failed: %s", KafkaConnectionError("111 ECONNREFUSED"))
    logging.getLogger("kafka.cluster").warning("No node available for metadata refresh")
    logging.getLogger("kafka.cluster").warning("Topic t is not available during auto-create")
    assert stream.getvalue().count("\n") == 1  # only the unrelated warning
    assert "auto-create" in stream.getvalue()
    outage = watch.outage()
    assert outage is not None
    assert outage.errors == 2
    # The success line: kafka.net.connection is at INFO for it, but its INFO
    # lines stay hidden at the client's WARNING.
    logging.getLogger("kafka.net.connection").info("%s: Connected", "<conn node_id=1>")
    assert "Connected" not in stream.getvalue()
    assert watch.outage() is None
    ended = watch.take_ended()
    assert ended is not None
    assert ended.errors == 2
    assert watch.take_ended() is None


def test_a_receive_on_a_closed_connection_is_a_connection_error(
    configured: list[LoggingSetup],
) -> None:
    """kafka-python logs a traceback when it reads a socket closed under it (an
    AttributeError on ``None``) and reconnects: counted, not shown."""
    watch = BrokerWatch()
    stream = _setup(configured, "INFO", watch=watch)
    sock = None
    try:
        sock.recv(4096)  # type: ignore[attr-defined]
    except AttributeError:
        logging.getLogger("kafka.net.transport").exception(
            "%s: Error receiving network data closing socket", "<KafkaTCPTransport [none] (closed)>"
        )
    assert "Traceback" not in stream.getvalue()
    assert "Error receiving" not in stream.getvalue()
    assert watch.total_errors == 1


def test_naming_kafka_shows_its_connection_errors(configured: list[LoggingSetup]) -> None:
    watch = BrokerWatch()
    stream = _setup(configured, "INFO,kafka=WARNING", watch=watch)
    logging.getLogger("kafka.net.manager").error(
        "Connection failed: %s", KafkaConnectionError("111 ECONNREFUSED")
    )
    assert "Connection failed: 111 ECONNREFUSED" in stream.getvalue()
    assert watch.total_errors == 1  # still counted for the statestream line


def test_an_outage_ends_after_a_quiet_period_without_a_success_line() -> None:
    now = [100.0]
    watch = BrokerWatch(quiet=10.0, clock=lambda: now[0])
    watch.failed()
    now[0] = 105.0
    watch.failed()
    now[0] = 114.0
    assert watch.outage() == (100.0, 14.0, 2)
    now[0] = 115.0
    assert watch.outage() is None
    assert watch.take_ended() == (100.0, 5.0, 2)


def test_outages_ending_before_the_reporter_looks_are_reported_as_one() -> None:
    now = [0.0]
    watch = BrokerWatch(clock=lambda: now[0])
    watch.failed()
    now[0] = 8.0
    watch.connected()
    watch.failed()  # the first reconnects fail again
    now[0] = 8.5
    watch.connected()
    assert watch.take_ended() == (0.0, 8.5, 2)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_a_client_at_a_closed_port_logs_one_statestream_line_not_kafka_errors(
    configured: list[LoggingSetup],
) -> None:
    """kafka-python itself, retrying a port nobody listens on (no broker needed)."""
    from kafka import KafkaConsumer

    stream = _setup(configured, "INFO")
    configured[-1].report_outages(lambda: "the test waits for nothing", interval=1.0)
    consumer = KafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{_closed_port()}",
        api_version=(3, 0),  # no version probe: straight to the retries
        reconnect_backoff_max_ms=200,
        enable_auto_commit=False,
        request_timeout_ms=3000,
    )
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
    finally:
        consumer.close()
    out = stream.getvalue()
    kafka_lines = [line for line in out.splitlines() if " kafka." in line]
    assert kafka_lines == [], out
    assert configured[-1].watch.total_errors > 3
    assert "WARNING statestream.broker: Kafka brokers unreachable for " in out, out
    assert "the test waits for nothing" in out


# -- the worker ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_worker_json_log_lines_all_parse_and_carry_partitions(tmp_path: Path) -> None:
    transport = open_embedded(tmp_path)
    try:
        produce(transport, "sentences", make_sentences(40, seed=4), 2)
        highs = watermarks(transport, "sentences", 2)
    finally:
        transport.close()
    progress = tmp_path / "progress"
    progress.mkdir()
    worker = WorkerProcess(
        WORDCOUNT,
        ["--data-dir", str(tmp_path), "--log-format", "json"],
        tmp_path / "worker.log",
        {"WORDCOUNT_PROGRESS_DIR": str(progress)},
    )
    try:
        wait_for(lambda: processed_all(progress, highs), 60, "the worker to process the input")
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    lines = [json.loads(line) for line in worker.log().splitlines()]
    assert {"time", "level", "logger", "thread", "message"} <= set(lines[0])
    ready = {line["partition"]: line for line in lines if " ready: " in line["message"]}
    assert sorted(ready) == [0, 1]
    assert ready[1]["message"].startswith("partition 1 ready")
    assigned = [line for line in lines if line["message"].startswith("assigned partitions")]
    assert assigned
    assert assigned[0]["partitions"] == [0, 1]


def test_worker_rejects_a_bad_log_level_naming_the_flag(tmp_path: Path) -> None:
    worker = WorkerProcess(
        WORDCOUNT, ["--data-dir", str(tmp_path), "--log-level", "INFO,kafka"], tmp_path / "w.log"
    )
    assert worker.wait(30) == 2
    assert "--log-level" in worker.log()
    assert "'kafka'" in worker.log()


@pytest.mark.kafka
@pytest.mark.timeout(180)
def test_worker_reports_an_outage_in_statestream_lines_without_kafka_errors(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """All the worker's connections go through a proxy the test takes down for 8 s.

    Within the session timeout (45 s by default): a longer outage loses the
    group membership, and the next commit then stops the worker (a
    GroupError, by design).
    """
    suffix = f"-{uuid.uuid4().hex[:10]}"
    transport = open_transport(f"kafka://{kafka_bootstrap}")
    try:
        produce(transport, f"sentences{suffix}", make_sentences(30, seed=5), 2)
        highs = watermarks(transport, f"sentences{suffix}", 2)
    finally:
        transport.close()
    progress = tmp_path / "progress"
    progress.mkdir()
    proxy = ConnectProxy()
    url = f"kafka://{kafka_bootstrap}?proxy_url={proxy.url}"
    worker = WorkerProcess(
        WORDCOUNT,
        ["--data-dir", str(tmp_path), "--broker-url", url, "--partitions", "2"],
        tmp_path / "worker.log",
        {"WORDCOUNT_SUFFIX": suffix, "WORDCOUNT_PROGRESS_DIR": str(progress)},
    )
    try:
        # Taken down while processing (an outage while a partition starts is
        # another story: its metadata lookups time out).
        wait_for(lambda: processed_all(progress, highs), 60, "the worker to process the input")
        proxy.down()
        time.sleep(8)
        proxy.up()
        wait_for(lambda: "answer again" in worker.log(), 30, "the worker to see brokers again")
        assert worker.stop(30) == 0, worker.log()
    finally:
        worker.ensure_stopped()
        proxy.close()
    out = worker.log()
    unreachable = [line for line in out.splitlines() if "Kafka brokers unreachable for" in line]
    assert 1 <= len(unreachable) <= 3, out
    assert "WARNING statestream.broker:" in unreachable[0]
    assert "the worker waits to" in unreachable[0]
    assert f"(kafka://{kafka_bootstrap})" in unreachable[0]  # the hosts, not the options
    for noise in ("ECONNREFUSED", "Connection lost", "No node available", "Traceback"):
        assert noise not in out, out
    assert not [line for line in out.splitlines() if " INFO kafka." in line], out
