"""The ``statestream`` command: help, bad arguments, ``tables`` and ``demo``, in subprocesses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statestream.config import APP_ENV
from tests.worker.helpers import (
    REPO_ROOT,
    WorkerProcess,
    clean_env,
    make_sentences,
    open_embedded,
    processed_all,
    produce,
    wait_for,
    watermarks,
)

pytestmark = pytest.mark.timeout(120)

DEMO = (sys.executable, "-m", "statestream.cli", "demo")


def run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statestream.cli", *args],
        cwd=REPO_ROOT,
        env=clean_env(**env),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("worker", "tables", "demo"):
        assert command in result.stdout


def test_worker_help_shows_every_environment_variable() -> None:
    result = run("worker", "--help")
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())  # argparse wraps lines
    for name, env in APP_ENV.items():
        flag = "--" + name.replace("_", "-")
        if name == "web_token":  # a secret: from the environment only
            assert flag not in help_text
        else:
            assert flag in help_text, name
        assert env in help_text, env
    assert "STATESTREAM_LOG_LEVEL" in help_text


def test_worker_help_shows_the_current_environment_value() -> None:
    result = run("worker", "--help", STATESTREAM_COMMIT_INTERVAL="7.5")
    assert result.returncode == 0, result.stderr
    assert "currently '7.5'" in " ".join(result.stdout.split())


def test_unknown_command_exits_2() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_worker_without_an_app_exits_2() -> None:
    result = run("worker")
    assert result.returncode == 2
    assert "app" in result.stderr


def test_unknown_flag_exits_2(tmp_path: Path) -> None:
    result = run("worker", "examples.wordcount:app", "--no-such-flag")
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr


def test_wrong_flag_type_exits_2() -> None:
    result = run("worker", "examples.wordcount:app", "--partitions", "many")
    assert result.returncode == 2
    assert "--partitions" in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("notamodule:app", "cannot import module 'notamodule'"),
        ("os:path", "not a statestream App"),
        ("examples.wordcount:nothing", "not a statestream App"),
        ("examples.wordcount", "module:attribute"),
    ],
)
def test_bad_app_exits_1_with_a_message(tmp_path: Path, spec: str, message: str) -> None:
    result = run("worker", spec, "--data-dir", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("statestream: error:"), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "name"),
    [
        ("--error-policy", "bogus", "error_policy"),
        ("--commit-interval", "0", "commit_interval"),
        ("--processing-guarantee", "maybe_once", "processing_guarantee"),
        ("--broker-url", "nonsense", "broker URL"),
    ],
)
def test_bad_setting_exits_1_naming_it(tmp_path: Path, flag: str, value: str, name: str) -> None:
    result = run("worker", "examples.wordcount:app", "--data-dir", str(tmp_path), flag, value)
    assert result.returncode == 1, result.stderr
    assert "statestream: error:" in result.stderr
    assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_from_the_environment_exits_1(tmp_path: Path) -> None:
    result = run(
        "worker",
        "examples.wordcount:app",
        "--data-dir",
        str(tmp_path),
        STATESTREAM_ERROR_POLICY="bogus",
    )
    assert result.returncode == 1, result.stderr
    assert "error_policy" in result.stderr


def test_missing_source_topic_without_partitions_exits_1(tmp_path: Path) -> None:
    result = run("worker", "examples.wordcount:app", "--data-dir", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "statestream: error: source topic 'sentences' does not exist" in result.stderr
    assert "--partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_worker_on_a_held_embedded_log_exits_1(tmp_path: Path) -> None:
    transport = open_embedded(tmp_path)
    try:
        produce(transport, "sentences", make_sentences(5), 1)
    finally:
        transport.close()
    first = WorkerProcess(
        "tests.worker.wordcount_app:app", ["--data-dir", str(tmp_path)], tmp_path / "first.log"
    )
    try:
        wait_for(lambda: "assigned partitions" in first.log(), 30, "the first worker to start")
        result = run("worker", "tests.worker.wordcount_app:app", "--data-dir", str(tmp_path))
        assert result.returncode == 1, result.stderr
        assert "statestream: error:" in result.stderr
        assert str(tmp_path / "log") in result.stderr
        assert "Traceback" not in result.stderr
        assert first.stop() == 0, first.log()
    finally:
        first.ensure_stopped()


def test_tables_lists_tables_and_changelog_topics(tmp_path: Path) -> None:
    result = run("tables", "examples.wordcount:app", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "app 'wordcount'" in result.stdout
    assert "table counts: changelog wordcount-counts-changelog" in result.stdout


def test_tables_shows_partition_states_after_a_run(tmp_path: Path) -> None:
    transport = open_embedded(tmp_path)
    try:
        produce(transport, "sentences", make_sentences(50, seed=21), 2)
        highs = watermarks(transport, "sentences", 2)
    finally:
        transport.close()
    progress = tmp_path / "progress"
    progress.mkdir()
    worker = WorkerProcess(
        "tests.worker.wordcount_app:app",
        ["--data-dir", str(tmp_path), "--commit-interval", "0.1"],
        tmp_path / "worker.log",
        {"WORDCOUNT_PROGRESS_DIR": str(progress)},
    )
    try:
        wait_for(lambda: processed_all(progress, highs), 30, "the worker to process the input")
        # While the worker runs, the embedded log is held: `tables` says so.
        held = run("tables", "examples.wordcount:app", "--data-dir", str(tmp_path))
        assert held.returncode == 0, held.stderr
        assert "the embedded log is held by" in held.stdout
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    result = run("tables", "examples.wordcount:app", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "wordcount-counts-changelog (2 partitions, compact)" in result.stdout
    assert "  partition  state        local offset  changelog end  lag\n" in result.stdout
    for p in (0, 1):
        # A stopped worker's store: its offset is the changelog's last (no lag).
        row = re.search(rf"^  {p} +idle +(\d+) +(\d+) +0$", result.stdout, re.MULTILINE)
        assert row, result.stdout
        assert int(row[1]) + 1 == int(row[2])


def test_demo_runs_and_is_exact(tmp_path: Path) -> None:
    result = run("demo", "--data-dir", str(tmp_path), "--events", "2000", "--rate", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exact" in result.stdout
    assert "MISMATCH" not in result.stdout
    assert "from event 0 " in result.stdout.splitlines()[0]


def test_demo_killed_mid_run_resumes_exact(tmp_path: Path) -> None:
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [*DEMO, "--data-dir", str(tmp_path), "--events", "5000", "--rate", "1000"],
            cwd=REPO_ROOT,
            env=clean_env(PYTHONUNBUFFERED="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: re.search(r"processed +[1-9]\d* this run", log_path.read_text()),
                30,
                "the demo to make progress",
            )
            time.sleep(0.5)
            assert proc.poll() is None, "the demo finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "exact" not in log_path.read_text()

    result = run("demo", "--data-dir", str(tmp_path), "--events", "500", "--rate", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    match = re.search(r"from event (\d+)", first)
    assert match, first
    resumed_from = int(match.group(1))
    assert 0 < resumed_from < 5000
    last = result.stdout.strip().splitlines()[-1]
    assert last.endswith(": exact"), result.stdout
    assert f"(target {resumed_from + 500})" in last
    assert f"events committed of {resumed_from + 500} written" in last


def test_demo_rejects_negative_events(tmp_path: Path) -> None:
    result = run("demo", "--data-dir", str(tmp_path), "--events", "-1")
    assert result.returncode == 2
    assert "--events" in result.stderr
