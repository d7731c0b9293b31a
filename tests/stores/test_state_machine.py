"""Every store, driven by random operations, behaves like a dict plus an offset and metadata.

The model is deliberately naive: a dict, an optional int, a dict of metadata,
and range filtering written out in plain Python (it does not reuse the
library's bound helpers, so a mistake there cannot hide here).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from statestream.errors import InvalidKeyError, InvalidMetadataError, OffsetRegressionError

if TYPE_CHECKING:
    from statestream.stores.base import Store
    from tests.stores.conftest import StoreFactory

# A small alphabet so that keys collide, share prefixes and sit on the
# interesting edges (empty key, NUL, 0xff runs).
INTERESTING = [b"", b"\x00", b"\xff", b"\xff\xff", b"a", b"a\xff", b"ab", b"b"]
keys = st.one_of(
    st.sampled_from(INTERESTING),
    st.lists(st.sampled_from([0x00, 0x01, 0x61, 0x62, 0xFE, 0xFF]), max_size=3).map(bytes),
)
values = st.binary(max_size=4)
batches = st.dictionaries(keys, st.one_of(st.none(), values), max_size=6)
bounds = st.one_of(st.none(), keys)
bad_keys = st.sampled_from(["s", 1, None, 2.5, True])
bad_values = st.sampled_from(["s", 1, bytearray(b"x"), memoryview(b"x")])
# Few names, so writes overwrite each other's metadata; one looks like a key.
META_NAMES = ["epoch", "stream_time", "d"]
metas = st.one_of(
    st.none(), st.dictionaries(st.sampled_from(META_NAMES), st.binary(max_size=8), max_size=3)
)
bad_metas = st.sampled_from([{"bad name": b"x"}, {"": b"x"}, {"epoch": "s"}, {"epoch": None}])

MACHINE_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # One clear failure, shrunk, beats minutes spent hunting for more.
    report_multiple_bugs=False,
)


def model_range(
    model: dict[bytes, bytes],
    start: bytes | None,
    end: bytes | None,
    prefix: bytes | None,
    reverse: bool,
) -> list[tuple[bytes, bytes]]:
    pairs = []
    for key in sorted(model):
        if start is not None and key < start:
            continue
        if end is not None and key >= end:
            continue
        if prefix is not None and key[: len(prefix)] != prefix:
            continue
        pairs.append((key, model[key]))
    if reverse:
        pairs.reverse()
    return pairs


class StoreMachine(RuleBasedStateMachine):
    """Compares one store with ``model`` (its data) and ``model_offset``."""

    def __init__(self, kind: StoreFactory) -> None:
        super().__init__()
        self.workdir = Path(tempfile.mkdtemp(prefix="statestream-machine-"))
        self.factory = kind.start(self.workdir)
        self.persistent = kind.persistent
        self.table = "t"
        self.partition = 0
        self.store: Store = self.factory.open(self.table, self.partition)
        self.model: dict[bytes, bytes] = {}
        self.model_offset: int | None = None
        self.model_meta: dict[str, bytes] = {}

    def teardown(self) -> None:
        try:
            self.factory.cleanup()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @initialize(table=st.sampled_from(["t", "t0"]), partition=st.integers(0, 2))
    def neighbours(self, table: str, partition: int) -> None:
        # A populated neighbour store (another table or partition) must never
        # leak into the store under test.
        if (table, partition) == (self.table, self.partition):
            return
        neighbour = self.factory.open(table, partition)
        neighbour.write(
            dict.fromkeys(INTERESTING, b"neighbour"), 1000, dict.fromkeys(META_NAMES, b"n")
        )

    # -- rules -----------------------------------------------------------

    @rule(
        batch=batches,
        kind=st.sampled_from(["forward", "forward", "same", "none", "back"]),
        step=st.integers(1, 5),
        meta=metas,
    )
    def write(
        self,
        batch: dict[bytes, bytes | None],
        kind: str,
        step: int,
        meta: dict[str, bytes] | None = None,
    ) -> None:
        current = self.model_offset
        if kind == "back" and current is not None and current > 0:
            lower = max(0, current - step)
            with pytest.raises(OffsetRegressionError):
                self.store.write(batch, lower, meta)
            return  # the invariants check that nothing changed
        if kind == "none":
            offset = None
        elif kind == "same" and current is not None:
            offset = current
        else:
            offset = step - 1 if current is None else current + step
        if meta is None and offset is not None and step == 1:
            self.store.write(batch, offset)  # the two-argument form of existing callers
        else:
            self.store.write(batch, offset, meta)
        for key, value in batch.items():
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value
        if offset is not None:
            self.model_offset = offset
        self.model_meta.update(meta or {})

    @rule(
        batch=batches,
        bad_key=bad_keys,
        bad_value=bad_values,
        as_value=st.booleans(),
        position=st.integers(0, 6),
    )
    def write_with_a_bad_item(
        self,
        batch: dict[bytes, bytes | None],
        bad_key: object,
        bad_value: object,
        as_value: bool,
        position: int,
    ) -> None:
        items: list[tuple[object, object]] = list(batch.items())
        bad_item = (b"\x00bad", bad_value) if as_value else (bad_key, b"x")
        items.insert(position, bad_item)
        offset = None if self.model_offset is None else self.model_offset + 1
        with pytest.raises(InvalidKeyError):
            self.store.write(dict(items), offset, {"epoch": b"never"})  # type: ignore[arg-type]

    @rule(batch=batches, meta=bad_metas)
    def write_with_bad_metadata(
        self, batch: dict[bytes, bytes | None], meta: dict[str, bytes]
    ) -> None:
        offset = None if self.model_offset is None else self.model_offset + 1
        with pytest.raises(InvalidMetadataError):
            self.store.write(batch, offset, meta)

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.store.get(key) == self.model.get(key)

    @rule(key_list=st.lists(keys, max_size=6))
    def get_many(self, key_list: list[bytes]) -> None:
        assert self.store.get_many(key_list) == [self.model.get(key) for key in key_list]

    @rule(start=bounds, end=bounds, prefix=bounds, reverse=st.booleans())
    def iterate(
        self, start: bytes | None, end: bytes | None, prefix: bytes | None, reverse: bool
    ) -> None:
        got = list(self.store.iterate(start=start, end=end, prefix=prefix, reverse=reverse))
        assert got == model_range(self.model, start, end, prefix, reverse)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), reverse=st.booleans())
    def iterate_between_stored_keys(self, data: st.DataObject, reverse: bool) -> None:
        # Bounds equal to stored keys hit the inclusive/exclusive edges exactly.
        stored = st.sampled_from(sorted(self.model))
        start = data.draw(st.one_of(st.none(), stored), label="start")
        end = data.draw(st.one_of(st.none(), stored), label="end")
        prefix = data.draw(st.one_of(st.none(), stored), label="prefix")
        got = list(self.store.iterate(start=start, end=end, prefix=prefix, reverse=reverse))
        assert got == model_range(self.model, start, end, prefix, reverse)

    @rule()
    def count(self) -> None:
        assert self.store.count() == len(self.model)

    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.clear()
        self.model_offset = None
        self.model_meta.clear()

    @rule()
    def close_and_reopen(self) -> None:
        self.store.close()
        self.store = self.factory.open(self.table, self.partition)
        if not self.persistent:
            self.model.clear()
            self.model_offset = None
            self.model_meta.clear()

    @rule()
    def destroy_and_reopen(self) -> None:
        # What the table layer does with a damaged store: destroy, rebuild.
        self.store.close()
        self.factory.destroy(self.table, self.partition)
        self.store = self.factory.open(self.table, self.partition)
        self.model.clear()
        self.model_offset = None
        self.model_meta.clear()

    @precondition(lambda self: self.persistent)
    @rule(batch=batches, step=st.integers(1, 5), meta=metas)
    def write_close_reopen(
        self, batch: dict[bytes, bytes | None], step: int, meta: dict[str, bytes] | None
    ) -> None:
        # The batch written right before a close is the one most likely to be lost.
        self.write(batch, "forward", step, meta)
        self.close_and_reopen()

    # -- invariants --------------------------------------------------------

    @invariant()
    def offset_matches(self) -> None:
        assert self.store.offset() == self.model_offset

    @invariant()
    def meta_matches(self) -> None:
        for name in META_NAMES:
            assert self.store.meta(name) == self.model_meta.get(name), name

    @invariant()
    def contents_match(self) -> None:
        expected = sorted(self.model.items())
        assert list(self.store.iterate()) == expected
        assert list(self.store.iterate(reverse=True)) == expected[::-1]


def test_store_behaves_like_a_dict(store_kind: StoreFactory) -> None:
    run_state_machine_as_test(lambda: StoreMachine(store_kind), settings=MACHINE_SETTINGS)
