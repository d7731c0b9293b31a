"""LevelDB-specific behaviour: crash safety, locking, permissions, URLs."""

from __future__ import annotations

import dataclasses
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from statestream.config import LevelDBOptions
from statestream.errors import (
    ConfigurationError,
    StateStreamError,
    StoreError,
    StoreLockedError,
    StorePermissionError,
)
from statestream.stores.leveldb import LevelDBStore
from statestream.stores.registry import open_store
from tests.stores import crash_writer

REPO_ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class LineReader:
    """Reads lines from a child's stdout pipe without ever blocking past a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self._eof = False

    def readline(self, timeout: float) -> str | None:
        """Return the next line without its newline, or ``None`` at end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if self._eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"child printed no line within {timeout} s")
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if ready:
                chunk = os.read(self._fd, 65536)
                if chunk:
                    self._buffer += chunk
                else:
                    self._eof = True
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def rest(self) -> list[str]:
        """Every complete line left once the child is dead."""
        lines = []
        while (line := self.readline(timeout=10)) is not None:
            lines.append(line)
        return lines


# -- crash safety -------------------------------------------------------------


def test_kill_9_leaves_exactly_the_batches_up_to_the_offset(tmp_path: Path) -> None:
    """SIGKILL a writer mid-stream: data must equal batches 0..offset, nothing more or less."""
    seed = random.randrange(2**32)
    timing = random.Random(seed)
    model: dict[bytes, bytes] = {}
    applied = -1  # the last batch index folded into model
    for round_no in range(3):
        stderr_path = tmp_path / f"writer-{round_no}.err"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.stores.crash_writer", str(tmp_path / "data")],
                cwd=REPO_ROOT,
                env=_child_env(),
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert proc.stdout is not None
        try:
            reader = LineReader(proc.stdout)
            started = reader.readline(timeout=60)
            errors = stderr_path.read_text()
            assert started == f"started {applied + 1}", errors
            last_reported = applied
            while last_reported < applied + 300:
                line = reader.readline(timeout=60)
                assert line is not None, f"writer died early: {stderr_path.read_text()}"
                last_reported = int(line)
            time.sleep(timing.uniform(0.0, 0.3))
            proc.kill()
            assert proc.wait(timeout=30) == -signal.SIGKILL
            for line in reader.rest():
                last_reported = max(last_reported, int(line))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()

        store = LevelDBStore(str(tmp_path / "data"), crash_writer.TABLE, crash_writer.PARTITION)
        try:
            offset = store.offset()
            context = f"round {round_no}, timing seed {seed}, offset {offset}"
            assert offset is not None, context
            # Batches the writer reported as written were acknowledged: kill -9
            # must not lose them (sync=false covers process crashes).
            assert offset >= last_reported, context
            for i in range(applied + 1, offset + 1):
                crash_writer.apply(model, i)
            applied = offset
            assert dict(store.iterate()) == model, context
            assert store.count() == len(model), context
            # Metadata rides in the same WriteBatch: it matches the offset exactly.
            assert store.meta(crash_writer.EPOCH) == crash_writer.expected_epoch(offset), context
        finally:
            store.close()
    assert applied >= 900


def test_crash_writer_batches_are_deterministic_and_mixed() -> None:
    # The crash test rebuilds the writer's state from batch(i): it must only depend on i.
    assert crash_writer.batch(17) == crash_writer.batch(17)
    batches = [crash_writer.batch(i) for i in range(500)]
    values = [v for b in batches for v in b.values()]
    assert any(v is None for v in values)
    assert any(v is not None and len(v) > 32 * 1024 for v in values)  # one log block
    assert len({k for b in batches for k in b}) > 150


# -- locking ------------------------------------------------------------------


def test_second_open_in_this_process_raises_locked(tmp_path: Path) -> None:
    first = LevelDBStore(str(tmp_path), "t", 0)
    try:
        first.write({b"a": b"1"}, 1)
        with pytest.raises(StoreLockedError) as info:
            LevelDBStore(str(tmp_path), "t", 0)
        assert isinstance(info.value, StateStreamError)
        assert first.path in str(info.value)
        with pytest.raises(StoreLockedError):
            open_store(f"leveldb://{tmp_path}", "t", 0)
        # The failed opens did not disturb the owner, nor lock its neighbours.
        assert first.get(b"a") == b"1"
        LevelDBStore(str(tmp_path), "t", 1).close()
    finally:
        first.close()
    # close() released the lock before returning: handover is immediate.
    second = LevelDBStore(str(tmp_path), "t", 0)
    try:
        assert second.get(b"a") == b"1"
        assert second.offset() == 1
    finally:
        second.close()


HOLDER = textwrap.dedent(
    """
    import sys
    from statestream.stores.leveldb import LevelDBStore

    store = LevelDBStore(sys.argv[1], "t", 0)
    store.write({b"owner": b"child"}, 7)
    print("ready", flush=True)
    sys.stdin.read()
    store.close()
    print("closed", flush=True)
    """
)


@pytest.mark.parametrize("release", ["close", "kill"])
def test_store_held_by_another_process_raises_locked(tmp_path: Path, release: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        cwd=REPO_ROOT,
        env=_child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        reader = LineReader(proc.stdout)
        line = reader.readline(timeout=60)
        if line != "ready":
            proc.kill()
            raise AssertionError(f"holder failed: {proc.communicate()[1].decode()}")
        path = os.path.join(str(tmp_path), "t", "0")
        with pytest.raises(StoreLockedError) as info:
            LevelDBStore(str(tmp_path), "t", 0)
        assert path in str(info.value)
        assert "another process" in str(info.value)
        if release == "close":
            proc.stdin.close()
            assert reader.readline(timeout=30) == "closed"
            assert proc.wait(timeout=30) == 0
        else:
            proc.kill()
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
    store = LevelDBStore(str(tmp_path), "t", 0)
    try:
        assert store.get(b"owner") == b"child"
        assert store.offset() == 7
    finally:
        store.close()


# -- permissions --------------------------------------------------------------


def _open_unprivileged(data_dir: Path, table: str = "t", partition: int = 0) -> tuple[str, str]:
    """Open a store as a user that owns nothing here; return (exception name or "ok", message).

    Root ignores file modes, so as root the attempt runs in a forked child that
    has dropped to ``nobody``. It forks without exec: the child keeps the
    modules already imported here and needs no read access to the interpreter
    or the virtualenv.
    """
    if os.geteuid() != 0:
        try:
            LevelDBStore(str(data_dir), table, partition).close()
        except Exception as exc:
            return type(exc).__name__, str(exc)
        return "ok", ""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                LevelDBStore(str(data_dir), table, partition).close()
                result = "ok\n"
            except Exception as exc:
                result = f"{type(exc).__name__}\n{exc}"
            os.write(write_fd, result.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed to run"
    name, _, message = output.partition("\n")
    return name, message


def _make_writable(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory the unprivileged opener can reach (pytest's tmp dirs are private to root)."""
    if os.geteuid() == 0:
        path = Path(tempfile.mkdtemp(prefix="statestream-perm-"))
        path.chmod(0o755)
    else:
        path = tmp_path
    try:
        yield path
    finally:
        _make_writable(path)
        if path != tmp_path:
            shutil.rmtree(path)


def test_unprivileged_opener_works_in_a_writable_dir(shared_dir: Path) -> None:
    # The control for the tests below: the opener can reach and use shared_dir.
    writable = shared_dir / "writable"
    writable.mkdir()
    writable.chmod(0o777)
    assert _open_unprivileged(writable) == ("ok", "")
    assert (writable / "t" / "0" / "CURRENT").exists()


def test_unwritable_data_dir_raises_permission_error(shared_dir: Path) -> None:
    data = shared_dir / "data"
    data.mkdir()
    data.chmod(0o555)
    name, message = _open_unprivileged(data)
    assert name == "StorePermissionError", message
    assert str(data) in message
    assert "permission" in message.lower()
    assert issubclass(StorePermissionError, StateStreamError)
    assert issubclass(StorePermissionError, PermissionError)


def test_unwritable_table_dir_raises_permission_error(shared_dir: Path) -> None:
    data = shared_dir / "data"
    (data / "t").mkdir(parents=True)
    data.chmod(0o777)
    (data / "t").chmod(0o555)
    name, message = _open_unprivileged(data)
    assert name == "StorePermissionError", message
    assert str(data / "t") in message


def test_existing_unwritable_store_raises_permission_error(shared_dir: Path) -> None:
    data = shared_dir / "data"
    with LevelDBStore(str(data), "t", 0) as store:
        store.write({b"a": b"1"}, 1)
    store_dir = data / "t" / "0"
    # The table directory is writable; only the database itself is not.
    data.chmod(0o777)
    (data / "t").chmod(0o777)
    for entry in store_dir.iterdir():
        entry.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    store_dir.chmod(0o555)
    name, message = _open_unprivileged(data)
    assert name == "StorePermissionError", f"{name}: {message}"
    assert str(store_dir) in message


def test_open_error_that_is_not_a_lock_is_not_reported_as_locked(tmp_path: Path) -> None:
    # A file where the database directory should be: LevelDB's message names
    # the LOCK file, but nobody holds a lock.
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "0").write_bytes(b"not a database")
    with pytest.raises(StoreError) as info:
        LevelDBStore(str(tmp_path), "t", 0)
    assert not isinstance(info.value, StoreLockedError), str(info.value)
    assert str(tmp_path / "t" / "0") in str(info.value)


# -- URLs ---------------------------------------------------------------------


def test_url_with_absolute_dir(tmp_path: Path) -> None:
    url = f"leveldb://{tmp_path}/data"
    assert url.startswith("leveldb:///")
    store = open_store(url, "t", 2)
    try:
        assert isinstance(store, LevelDBStore)
        assert store.path == os.path.join(str(tmp_path / "data"), "t", "2")
        assert (tmp_path / "data" / "t" / "2" / "CURRENT").exists()
        assert store.options == LevelDBOptions()
        store.write({b"a": b"1"}, 3)
    finally:
        store.close()
    with open_store(url, "t", 2) as reopened:
        assert reopened.get(b"a") == b"1"
        assert reopened.offset() == 3


def test_url_with_relative_dir_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("leveldb://./rel/dir", "t", 0) as store:
        store.write({b"a": b"1"}, 0)
    assert (tmp_path / "rel" / "dir" / "t" / "0" / "CURRENT").exists()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with open_store("leveldb://../rel/dir", "t", 0) as store:
        assert store.get(b"a") == b"1"


def test_url_with_localhost_is_a_local_path(tmp_path: Path) -> None:
    with open_store(f"leveldb://localhost{tmp_path}/data", "t", 0) as store:
        assert isinstance(store, LevelDBStore)
        assert store.path == os.path.join(str(tmp_path / "data"), "t", "0")


def test_url_options_land_in_store_options(tmp_path: Path) -> None:
    with open_store(f"leveldb://{tmp_path}?sync=true&lru_cache_size=16m", "t", 0) as store:
        assert isinstance(store, LevelDBStore)
        assert store.options == dataclasses.replace(
            LevelDBOptions(), sync=True, lru_cache_size=16 * 2**20
        )
        store.write({b"a": b"1"}, 0)
        assert store.get(b"a") == b"1"


def test_every_url_option_is_parsed(tmp_path: Path) -> None:
    query = (
        "sync=on&write_buffer_size=1m&lru_cache_size=64k&block_size=8192&bloom_filter_bits=0"
        "&compression=false&max_open_files=64&paranoid_checks=no&verify_checksums=off"
    )
    with open_store(f"leveldb://{tmp_path}?{query}", "t", 0) as store:
        assert isinstance(store, LevelDBStore)
        assert store.options == LevelDBOptions(
            sync=True,
            write_buffer_size=2**20,
            lru_cache_size=64 * 2**10,
            block_size=8192,
            bloom_filter_bits=0,
            compression=False,
            max_open_files=64,
            paranoid_checks=False,
            verify_checksums=False,
        )


def test_unknown_url_option_lists_known_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(f"leveldb://{tmp_path}/data?sync=true&colour=blue", "t", 0)
    message = str(info.value)
    assert "colour" in message
    for option in dataclasses.fields(LevelDBOptions):
        assert option.name in message
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("sync", "maybe"),
        ("compression", "2"),
        ("lru_cache_size", "lots"),
        ("lru_cache_size", "-1k"),
        ("write_buffer_size", "1x"),
        ("max_open_files", "many"),
        ("block_size", "0"),
        ("bloom_filter_bits", "-1"),
    ],
)
def test_bad_url_option_value_names_the_option(tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(f"leveldb://{tmp_path}/data?{option}={value}", "t", 0)
    assert option in str(info.value)
    assert not (tmp_path / "data").exists()


def test_repeated_url_option_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(f"leveldb://{tmp_path}/data?sync=true&sync=false", "t", 0)
    assert "sync" in str(info.value)


@pytest.mark.parametrize("host", ["example.com", "db1:9000", "a,b", "localhost:1"])
def test_url_with_a_host_is_rejected(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(f"leveldb://{host}{tmp_path}/data", "t", 0)
    assert "directory" in str(info.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("url", ["leveldb://", "leveldb:///", "leveldb://?sync=true"])
def test_url_without_a_directory_is_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(url, "t", 0)
    assert "directory" in str(info.value)
