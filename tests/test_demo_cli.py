"""The ``statestream`` command and its demo: state survives stops and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statestream.cli import build_parser, main
from statestream.demo import recount, run_demo
from statestream.stores.leveldb import LevelDBStore


def test_demo_resumes_with_exact_counts(tmp_path: Path) -> None:
    lines: list[str] = []
    first = run_demo(str(tmp_path), 1200, commit_every=100, report=lines.append)
    assert first.resumed_from is None
    assert first.last_offset == 1199
    assert first.verified
    assert first.counts == recount(1199)
    second = run_demo(str(tmp_path), 700, commit_every=100, report=lines.append)
    assert second.resumed_from == 1199
    assert second.last_offset == 1899
    assert second.counts == recount(1899)
    assert any("resuming after event 1199" in line for line in lines)


def test_demo_survives_kill_9(tmp_path: Path) -> None:
    """Kill the demo mid-stream; the store holds exactly the events up to its offset."""
    cmd = [
        sys.executable, "-m", "statestream.cli", "demo", "--data-dir", str(tmp_path),
        "--events", "10000000", "--commit-every", "50",
    ]  # fmt: skip
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # the store is open and processing
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = LevelDBStore(str(tmp_path), "page-views", 0)
        try:
            offset = store.offset()
            assert offset is not None
            stored = {k.decode(): int(v) for k, v in store.iterate()}
        finally:
            store.close()
        assert stored == recount(offset)


def test_cli_demo_exit_code_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data-dir", str(tmp_path), "--events", "300"]) == 0
    out = capsys.readouterr().out
    assert "matches a recount from scratch" in out


def test_cli_help_shows_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "STATESTREAM_DATA_DIR" in out
    assert "STATESTREAM_DEMO_EVENTS" in out


def test_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["demo", "--data-dir", str(tmp_path), "--commit-every", "0"]) == 2
    assert "--commit-every" in capsys.readouterr().err


def test_cli_reports_store_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    held = LevelDBStore(str(tmp_path), "page-views", 0)
    try:
        assert main(["demo", "--data-dir", str(tmp_path), "--events", "10"]) == 1
    finally:
        held.close()
    err = capsys.readouterr().err
    assert "statestream: error:" in err
    assert str(tmp_path) in err
