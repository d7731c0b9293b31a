"""A damaged LevelDB store is detected and never used: write-ahead log, MANIFEST, CURRENT, tables.

Each test damages a store's files the way a failing disk, a partial copy or a
stray tool does, then checks that opening or reading the store raises
``StoreCorruptedError`` naming the store's directory and the damaged file, and
that no read returned wrong data before that. Damage a crash itself causes (a
write-ahead log cut short) must instead open as exactly the batches up to the
recorded offset. ``destroy_store`` must then throw the store away so that it
can be rebuilt.

plyvel is imported here only to set up damage: compacting a closed store.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import plyvel
import pytest

from statestream.config import LevelDBOptions
from statestream.errors import StoreCorruptedError, StoreError, StoreLockedError
from statestream.stores.base import Store
from statestream.stores.leveldb import LevelDBStore
from statestream.stores.registry import destroy_store
from tests.stores import crash_writer

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCK = 32768  # LevelDB log-format block size (write-ahead log and MANIFEST)
HEADER = 7  # checksum (4), length (2), type (1)
TABLE_KEYS = 3000


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def log_records(data: bytes) -> list[tuple[int, int, int]]:
    """``(position, payload length, type)`` of each physical record of a log-format file."""
    records = []
    pos = 0
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0:
            break
        records.append((pos, length, kind))
        pos += HEADER + length
    return records


def flip(path: Path, position: int, count: int = 4) -> None:
    """Invert ``count`` bytes of ``path`` at ``position``."""
    with path.open("r+b") as f:
        f.seek(position)
        old = f.read(count)
        f.seek(position)
        f.write(bytes(b ^ 0xFF for b in old))


def truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


def assert_destroy_rebuilds(data_dir: Path, table: str = "t", partition: int = 0) -> None:
    """What the table layer does on StoreCorruptedError: destroy, then open afresh.

    Called while the caller still holds the error (and its traceback): a
    store that failed to open must not keep its directory locked.
    """
    destroy_store(f"leveldb://{data_dir}", table, partition)
    with LevelDBStore(str(data_dir), table, partition) as store:
        assert (store.count(), store.offset(), store.meta("epoch")) == (0, None, None)


# -- the write-ahead log --------------------------------------------------------


def crash_after(data_dir: Path, batches: int) -> Path:
    """Write crash_writer batches ``0..batches-1`` in a child that then dies of SIGKILL."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.stores.crash_writer",
            str(data_dir),
            "--stop-after",
            str(batches),
        ],
        cwd=REPO_ROOT,
        env=_child_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    return data_dir / crash_writer.TABLE / str(crash_writer.PARTITION)


def only_log(store_dir: Path) -> Path:
    logs = sorted(store_dir.glob("*.log"))
    assert len(logs) == 1, logs  # nothing was flushed: every batch is in this log
    return logs[0]


def open_crashed(data_dir: Path) -> LevelDBStore:
    return LevelDBStore(str(data_dir), crash_writer.TABLE, crash_writer.PARTITION)


def assert_batches_up_to_offset(store: Store) -> int:
    """The store holds exactly crash_writer batches ``0..offset``; return the offset."""
    offset = store.offset()
    assert offset is not None
    model: dict[bytes, bytes] = {}
    for i in range(offset + 1):
        crash_writer.apply(model, i)
    assert dict(store.iterate()) == model, f"offset {offset}"
    assert store.meta(crash_writer.EPOCH) == crash_writer.expected_epoch(offset)
    return offset


def test_a_crash_alone_leaves_a_store_that_opens(tmp_path: Path) -> None:
    # The control for the tests below: SIGKILL after the writes loses nothing.
    crash_after(tmp_path, 300)
    with open_crashed(tmp_path) as store:
        assert assert_batches_up_to_offset(store) == 299


@pytest.mark.parametrize("which", ["first", "early", "middle", "late", "last"])
def test_garbled_write_ahead_log_is_detected_at_open(tmp_path: Path, which: str) -> None:
    store_dir = crash_after(tmp_path, 300)
    log = only_log(store_dir)
    records = log_records(log.read_bytes())
    assert len(records) > 300
    index = {
        "first": 0,
        "early": 5,
        "middle": len(records) // 2,
        "late": len(records) - 5,
        "last": len(records) - 1,
    }[which]
    position, length, _ = records[index]
    flip(log, position + HEADER + length // 2, count=1)
    with pytest.raises(StoreCorruptedError) as info:
        open_crashed(tmp_path)
    message = str(info.value)
    assert str(store_dir) in message
    assert log.name in message
    assert "write-ahead log" in message
    assert_destroy_rebuilds(tmp_path, crash_writer.TABLE, crash_writer.PARTITION)


def test_garbled_record_header_in_the_write_ahead_log_is_detected(tmp_path: Path) -> None:
    store_dir = crash_after(tmp_path, 300)
    log = only_log(store_dir)
    records = log_records(log.read_bytes())
    position, _, _ = records[len(records) // 3]
    flip(log, position, count=HEADER)
    with pytest.raises(StoreCorruptedError, match="write-ahead log"):
        open_crashed(tmp_path)


@pytest.mark.parametrize("cut", ["block", "header", "payload", "half", "tenth"])
def test_write_ahead_log_cut_short_opens_as_the_batches_up_to_the_offset(
    tmp_path: Path, cut: str
) -> None:
    # A log cut short is what a crash leaves (with sync=false, also a power
    # loss): the store must open, and hold exactly the batches up to its offset.
    store_dir = crash_after(tmp_path, 300)
    log = only_log(store_dir)
    size = log.stat().st_size
    records = log_records(log.read_bytes())
    position, length, _ = records[len(records) * 2 // 3]
    size_after = {
        "block": (size // 2) // BLOCK * BLOCK,
        "header": position + 3,
        "payload": position + HEADER + length // 2,
        "half": size // 2,
        "tenth": size // 10,
    }[cut]
    truncate(log, size_after)
    with open_crashed(tmp_path) as store:
        offset = assert_batches_up_to_offset(store)
    assert offset < 299


def test_zeroed_tail_of_the_write_ahead_log_is_detected_or_consistent(tmp_path: Path) -> None:
    # Some file systems leave a zero-filled tail after a power loss.
    store_dir = crash_after(tmp_path, 300)
    log = only_log(store_dir)
    size = log.stat().st_size
    with log.open("r+b") as f:
        f.seek(size - 5000)
        f.write(b"\0" * 5000)
    outcome: LevelDBStore | StoreCorruptedError
    try:
        outcome = open_crashed(tmp_path)
    except StoreCorruptedError as exc:
        outcome = exc
    if isinstance(outcome, StoreCorruptedError):
        assert log.name in str(outcome)
        return
    with outcome:
        assert assert_batches_up_to_offset(outcome) < 299


# -- table files ------------------------------------------------------------------


def table_value(i: int, compressible: bool) -> bytes:
    if compressible:
        return b"value %06d " % i * 8
    return random.Random(i).randbytes(100)


def table_model(compressible: bool) -> dict[bytes, bytes]:
    return {b"k%05d" % i: table_value(i, compressible) for i in range(TABLE_KEYS)}


def compacted_store(data_dir: Path, compressible: bool) -> Path:
    """Write a store, close it and compact it into table files; return its directory."""
    with LevelDBStore(str(data_dir), "t", 0) as store:
        model = table_model(compressible)
        keys = list(model)
        for i in range(0, len(keys), 100):
            store.write({key: model[key] for key in keys[i : i + 100]}, i, {"epoch": b"%d" % i})
        path = Path(store.path)
    # The store's own table options, so compaction writes tables as it would.
    db = plyvel.DB(str(path), bloom_filter_bits=LevelDBOptions().bloom_filter_bits)
    try:
        db.compact_range()
    finally:
        db.close()
    assert not any(f.stat().st_size for f in path.glob("*.log"))
    return path


def largest_table(store_dir: Path) -> Path:
    tables = sorted(store_dir.glob("*.ldb"), key=lambda f: f.stat().st_size)
    assert tables
    return tables[-1]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def index_block(table: Path) -> tuple[int, int]:
    """``(position, size)`` of a table file's index block, read from its footer."""
    data = table.read_bytes()
    footer = len(data) - 48
    _, pos = _varint(data, footer)  # metaindex offset
    _, pos = _varint(data, pos)  # metaindex size
    offset, pos = _varint(data, pos)
    size, _ = _varint(data, pos)
    return offset, size


def filter_block(table: Path) -> tuple[int, int]:
    """``(position, size)`` of a table file's bloom filter block, from its metaindex."""
    data = table.read_bytes()
    metaindex, _ = _varint(data, len(data) - 48)
    shared, pos = _varint(data, metaindex)
    unshared, pos = _varint(data, pos)
    _, pos = _varint(data, pos)  # value length
    assert shared == 0
    assert data[pos : pos + unshared].startswith(b"filter.")
    offset, pos = _varint(data, pos + unshared)
    size, _ = _varint(data, pos)
    return offset, size


ReadAll = Callable[[Store, dict[bytes, bytes]], None]


def _get_each(store: Store, model: dict[bytes, bytes]) -> None:
    for key, value in model.items():
        assert store.get(key) == value, key


def _get_many(store: Store, model: dict[bytes, bytes]) -> None:
    keys = list(model)
    for i in range(0, len(keys), 50):
        chunk = keys[i : i + 50]
        assert store.get_many(chunk) == [model[key] for key in chunk]


def _iterate(store: Store, model: dict[bytes, bytes]) -> None:
    assert list(store.iterate()) == sorted(model.items())


def _iterate_reverse(store: Store, model: dict[bytes, bytes]) -> None:
    assert list(store.iterate(reverse=True)) == sorted(model.items(), reverse=True)


def _count(store: Store, model: dict[bytes, bytes]) -> None:
    assert store.count() == len(model)


READS: dict[str, ReadAll] = {
    "get": _get_each,
    "get_many": _get_many,
    "iterate": _iterate,
    "iterate_reverse": _iterate_reverse,
    "count": _count,
}


def test_compacted_store_reads_back_whole(tmp_path: Path) -> None:
    # The control for the tests below: the undamaged table files read back.
    for compressible in (False, True):
        compacted_store(tmp_path / str(compressible), compressible)
        with LevelDBStore(str(tmp_path / str(compressible)), "t", 0) as store:
            for read in READS.values():
                read(store, table_model(compressible))
            assert store.meta("epoch") == b"%d" % (TABLE_KEYS - 100)


@pytest.mark.parametrize("read", list(READS.values()), ids=list(READS))
@pytest.mark.parametrize("where", [0.02, 0.5, 0.8])
@pytest.mark.parametrize("compressible", [False, True], ids=["raw-blocks", "snappy-blocks"])
def test_garbled_table_block_is_detected_at_open_or_first_read(
    tmp_path: Path, compressible: bool, where: float, read: ReadAll
) -> None:
    store_dir = compacted_store(tmp_path, compressible)
    table = largest_table(store_dir)
    data_end, _ = index_block(table)
    flip(table, int(data_end * where))
    with (
        pytest.raises(StoreCorruptedError) as info,
        LevelDBStore(str(tmp_path), "t", 0) as store,
    ):
        # Wrong data before the error fails the test (an AssertionError).
        read(store, table_model(compressible))
    message = str(info.value)
    assert str(store_dir) in message
    assert "table" in message


@pytest.mark.parametrize("part", ["index", "footer"])
def test_garbled_table_index_or_footer_is_detected(tmp_path: Path, part: str) -> None:
    store_dir = compacted_store(tmp_path, compressible=False)
    table = largest_table(store_dir)
    index, size = index_block(table)
    flip(table, index + size // 2 if part == "index" else table.stat().st_size - 4)
    with (
        pytest.raises(StoreCorruptedError) as info,
        LevelDBStore(str(tmp_path), "t", 0) as store,
    ):
        _get_each(store, table_model(compressible=False))
    assert str(store_dir) in str(info.value)
    assert_destroy_rebuilds(tmp_path)


def test_garbled_bloom_filter_is_detected_and_ignored(tmp_path: Path) -> None:
    # A zeroed filter says "absent" for every key. paranoid_checks verifies
    # the filter when the table opens and LevelDB then reads without it, so
    # the damage costs speed, never data: no error, and every key is found.
    store_dir = compacted_store(tmp_path, compressible=False)
    table = largest_table(store_dir)
    offset, size = filter_block(table)
    with table.open("r+b") as f:
        f.seek(offset)
        f.write(b"\0" * (size - 1))
    with LevelDBStore(str(tmp_path), "t", 0) as store:
        _get_each(store, table_model(compressible=False))
        _get_many(store, table_model(compressible=False))


def test_damage_met_by_a_compaction_fails_the_writes_after_it(tmp_path: Path) -> None:
    # Even with reads unchecked, paranoid_checks verifies what a compaction
    # reads: the compaction fails instead of copying the damage into a new
    # table with a valid checksum, and LevelDB then refuses every write.
    store_dir = compacted_store(tmp_path, compressible=False)
    table = largest_table(store_dir)
    data_end, _ = index_block(table)
    flip(table, data_end // 2)
    options = LevelDBOptions(verify_checksums=False, write_buffer_size=64 << 10)

    def write_until_refused(store: LevelDBStore) -> None:
        # LevelDB stops writes once level 0 holds 12 tables until a compaction
        # makes room, so these writes cannot all succeed.
        for i in range(40_000):
            store.write({b"k%05d" % (i % TABLE_KEYS): b"x" * 100}, TABLE_KEYS + i)

    with (
        LevelDBStore(str(tmp_path), "t", 0, options) as store,
        pytest.raises(StoreCorruptedError) as info,
    ):
        write_until_refused(store)
    assert str(store_dir) in str(info.value)


def test_truncated_table_file_is_detected(tmp_path: Path) -> None:
    store_dir = compacted_store(tmp_path, compressible=False)
    table = largest_table(store_dir)
    truncate(table, table.stat().st_size // 2)
    with (
        pytest.raises(StoreCorruptedError) as info,
        LevelDBStore(str(tmp_path), "t", 0) as store,
    ):
        _iterate(store, table_model(compressible=False))
    assert table.name in str(info.value)


def test_missing_table_file_is_detected_at_open(tmp_path: Path) -> None:
    store_dir = compacted_store(tmp_path, compressible=False)
    table = largest_table(store_dir)
    table.unlink()
    with pytest.raises(StoreCorruptedError) as info:
        LevelDBStore(str(tmp_path), "t", 0)
    assert table.name in str(info.value)
    assert str(store_dir) in str(info.value)


# -- MANIFEST and CURRENT --------------------------------------------------------------


def flushed_store(data_dir: Path) -> tuple[Path, dict[bytes, bytes]]:
    """A closed store whose MANIFEST has many records: small memtables, many flushes."""
    options = LevelDBOptions(write_buffer_size=64 << 10)
    model: dict[bytes, bytes] = {}
    with LevelDBStore(str(data_dir), "t", 0, options) as store:
        for i in range(3000):
            changes = {b"k%05d" % i: random.Random(i).randbytes(100)}
            store.write(changes, i)
            model.update(changes)
        path = Path(store.path)
    return path, model


def manifest_of(store_dir: Path) -> Path:
    name = (store_dir / "CURRENT").read_text().strip()
    return store_dir / name


def _garble_record(which: int) -> Callable[[Path], Path]:
    def damage(store_dir: Path) -> Path:
        manifest = manifest_of(store_dir)
        records = log_records(manifest.read_bytes())
        position, length, _ = records[which]
        flip(manifest, position + HEADER + length // 2, count=1)
        return manifest

    return damage


def _garble_last_length(store_dir: Path) -> Path:
    # LevelDB reads a record running past the end of the file as one a crash
    # cut short, and silently opens the version before it.
    manifest = manifest_of(store_dir)
    position, _, _ = log_records(manifest.read_bytes())[-1]
    with manifest.open("r+b") as f:
        f.seek(position + 4)
        f.write(b"\xff\x7f")
    return manifest


def _cut_manifest(fraction: float) -> Callable[[Path], Path]:
    def damage(store_dir: Path) -> Path:
        manifest = manifest_of(store_dir)
        truncate(manifest, int(manifest.stat().st_size * fraction))
        return manifest

    return damage


def _cut_last_record(store_dir: Path) -> Path:
    manifest = manifest_of(store_dir)
    position, length, _ = log_records(manifest.read_bytes())[-1]
    truncate(manifest, position + HEADER + length // 2)
    return manifest


def _delete_manifest(store_dir: Path) -> Path:
    manifest = manifest_of(store_dir)
    manifest.unlink()
    return manifest


def _empty_manifest(store_dir: Path) -> Path:
    manifest = manifest_of(store_dir)
    truncate(manifest, 0)
    return manifest


def _delete_current(store_dir: Path) -> Path:
    (store_dir / "CURRENT").unlink()
    return store_dir / "CURRENT"


def _write_current(content: bytes) -> Callable[[Path], Path]:
    def damage(store_dir: Path) -> Path:
        (store_dir / "CURRENT").write_bytes(content)
        return store_dir / "CURRENT"

    return damage


MANIFEST_DAMAGE: dict[str, Callable[[Path], Path]] = {
    "garble-first-record": _garble_record(0),
    "garble-middle-record": _garble_record(3),
    "garble-last-record": _garble_record(-1),
    "garble-last-length": _garble_last_length,
    "cut-in-half": _cut_manifest(0.5),
    "cut-last-record": _cut_last_record,
    "delete-manifest": _delete_manifest,
    "empty-manifest": _empty_manifest,
    "delete-current": _delete_current,
    "current-names-a-missing-manifest": _write_current(b"MANIFEST-999999\n"),
    "current-garbled": _write_current(b"MANIF\xffST-0000x9\n"),
    "current-empty": _write_current(b""),
    "current-without-newline": _write_current(b"MANIFEST-000002"),
}


def test_flushed_store_has_a_manifest_of_many_records(tmp_path: Path) -> None:
    # The control for the tests below.
    store_dir, model = flushed_store(tmp_path)
    assert len(log_records(manifest_of(store_dir).read_bytes())) > 5
    with LevelDBStore(str(tmp_path), "t", 0) as store:
        assert dict(store.iterate()) == model
        assert store.offset() == 2999


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE.values()), ids=list(MANIFEST_DAMAGE))
def test_damaged_manifest_or_current_is_detected_at_open(
    tmp_path: Path, damage: Callable[[Path], Path]
) -> None:
    store_dir, _ = flushed_store(tmp_path)
    damaged = damage(store_dir)
    with pytest.raises(StoreCorruptedError) as info:
        LevelDBStore(str(tmp_path), "t", 0)
    message = str(info.value)
    assert str(store_dir) in message
    assert damaged.name in message or "CURRENT" in message, message
    assert_destroy_rebuilds(tmp_path)


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE.values()), ids=list(MANIFEST_DAMAGE))
def test_destroy_store_throws_a_damaged_store_away(
    tmp_path: Path, damage: Callable[[Path], Path]
) -> None:
    store_dir, _ = flushed_store(tmp_path)
    damage(store_dir)
    (store_dir / "stray-file").write_bytes(b"not LevelDB's")
    destroy_store(f"leveldb://{tmp_path}", "t", 0)
    assert not store_dir.exists()
    with LevelDBStore(str(tmp_path), "t", 0) as store:
        assert (store.count(), store.offset(), store.meta("epoch")) == (0, None, None)


def test_store_whose_creation_was_interrupted_opens_as_new(tmp_path: Path) -> None:
    # A crash while LevelDB creates a database leaves no CURRENT and no data.
    store_dir = tmp_path / "t" / "0"
    store_dir.mkdir(parents=True)
    (store_dir / "LOCK").write_bytes(b"")
    (store_dir / "MANIFEST-000001").write_bytes(b"")
    with LevelDBStore(str(tmp_path), "t", 0) as store:
        assert (store.count(), store.offset()) == (0, None)
        store.write({b"a": b"1"}, 0)
    with LevelDBStore(str(tmp_path), "t", 0) as store:
        assert store.get(b"a") == b"1"


def test_reopening_through_flushes_and_compactions_never_reports_damage(tmp_path: Path) -> None:
    options = LevelDBOptions(write_buffer_size=64 << 10)
    model: dict[bytes, bytes] = {}
    offset = 0
    for round_no in range(6):
        with LevelDBStore(str(tmp_path), "t", 0, options) as store:
            assert dict(store.iterate()) == model, round_no
            for _ in range(700):
                changes = {b"k%04d" % (offset % 1500): random.Random(offset).randbytes(120)}
                store.write(changes, offset, {"epoch": b"%d" % offset})
                model.update(changes)
                offset += 1
    with LevelDBStore(str(tmp_path), "t", 0) as store:
        assert dict(store.iterate()) == model
        assert (store.offset(), store.meta("epoch")) == (offset - 1, b"%d" % (offset - 1))


# -- destroy_store -----------------------------------------------------------------------


def test_destroy_store_refuses_a_store_that_is_open(tmp_path: Path) -> None:
    store = LevelDBStore(str(tmp_path), "t", 0)
    try:
        store.write({b"a": b"1"}, 1)
        with pytest.raises(StoreLockedError) as info:
            destroy_store(f"leveldb://{tmp_path}", "t", 0)
        assert store.path in str(info.value)
        assert store.get(b"a") == b"1"
    finally:
        store.close()
    destroy_store(f"leveldb://{tmp_path}", "t", 0)
    assert not Path(store.path).exists()


def test_destroy_store_removes_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "0").write_bytes(b"not a database")
    with pytest.raises(StoreError):
        LevelDBStore(str(tmp_path), "t", 0)
    destroy_store(f"leveldb://{tmp_path}", "t", 0)
    with LevelDBStore(str(tmp_path), "t", 0) as store:
        assert store.count() == 0


def test_destroy_store_leaves_other_partitions_and_tables(tmp_path: Path) -> None:
    for table, partition in (("t", 0), ("t", 1), ("t0", 0)):
        with LevelDBStore(str(tmp_path), table, partition) as store:
            store.write({b"a": table.encode()}, partition)
    destroy_store(f"leveldb://{tmp_path}", "t", 0)
    assert sorted(os.listdir(tmp_path)) == ["t", "t0"]
    assert os.listdir(tmp_path / "t") == ["1"]


# -- options -------------------------------------------------------------------------


class _Recorder:
    """Stands in for a plyvel DB (or prefixed DB), recording the keyword arguments of reads."""

    def __init__(self, target: object, calls: list[tuple[str, dict[str, object]]]) -> None:
        self._target = target
        self._calls = calls

    def get(self, key: bytes, default: object = None, **kwargs: object) -> object:
        self._calls.append(("get", kwargs))
        return self._target.get(key, default, **kwargs)  # type: ignore[attr-defined]

    def iterator(self, **kwargs: object) -> object:
        self._calls.append(("iterator", kwargs))
        return self._target.iterator(**kwargs)  # type: ignore[attr-defined]

    def prefixed_db(self, prefix: bytes) -> _Recorder:
        return _Recorder(self._target.prefixed_db(prefix), self._calls)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._target, name)


@pytest.mark.parametrize("checks", [True, False], ids=["on", "off"])
def test_integrity_options_reach_leveldb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checks: bool
) -> None:
    from statestream.stores import leveldb

    opened: list[dict[str, object]] = []
    calls: list[tuple[str, dict[str, object]]] = []
    real = plyvel.DB

    def recording_db(path: str, **kwargs: object) -> _Recorder:
        opened.append(kwargs)
        return _Recorder(real(path, **kwargs), calls)

    monkeypatch.setattr(leveldb.plyvel, "DB", recording_db)
    options = LevelDBOptions(paranoid_checks=checks, verify_checksums=checks)
    with LevelDBStore(str(tmp_path), "t", 0, options) as store:
        store.write({b"a": b"1"}, 0)
        store.get(b"a")
        store.get_many([b"a"])
        list(store.iterate())
        list(store.iterate(reverse=True))
        store.count()
    assert opened[0]["paranoid_checks"] is checks
    assert {name for name, _ in calls} == {"get", "iterator"}
    assert all(kwargs["verify_checksums"] is checks for _, kwargs in calls), calls


def test_integrity_checks_are_on_by_default() -> None:
    defaults = LevelDBOptions()
    assert (defaults.paranoid_checks, defaults.verify_checksums) == (True, True)
