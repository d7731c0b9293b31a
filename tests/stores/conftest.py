"""Fixtures shared by the store tests: one factory per store type.

Every store runs the same contract suite through the ``store_factory`` fixture.
A new store joins the suite by adding one :class:`StoreFactory` to
``STORE_FACTORIES``; its ``make_backing`` receives a fresh per-test working
directory and returns the functions that open and destroy ``(table, partition)``.
Anything they must share (a data directory, a fake server) lives in those
closures, so a store closed and opened again within one test sees the same
backing state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from statestream.stores.base import Store
from statestream.stores.leveldb import LevelDBStore
from statestream.stores.memory import MemoryStore
from statestream.stores.registry import destroy_store
from tests.stores.aerospike_openers import (
    REAL_ADDRESS,
    Backing,
    Opener,
    fake_aerospike_backing,
    real_aerospike_backing,
)

#: Aerospike's default record limit is 1 MiB including overhead; set names
#: (prefix + table) are at most 63 characters.
AEROSPIKE_MAX_VALUE = 1_000_000
AEROSPIKE_MAX_TABLE = 40

__all__ = ["Backing", "Opener", "StoreFactory"]


@dataclass
class StoreFactory:
    """Opens stores of one type; ``start`` binds it to a working directory.

    ``persistent`` says whether data and offset must survive ``close()``.
    ``max_value_size`` and ``max_table_name`` declare a backend's documented
    limits (Aerospike: 1 MiB records, 63-character set names); the contract
    checks that going past them raises a typed error instead of succeeding.
    """

    name: str
    persistent: bool
    make_backing: Callable[[Path], Backing]
    max_value_size: int | None = None
    max_table_name: int = 200
    _backing: Backing | None = None
    _opened: list[Store] = field(default_factory=list)

    def start(self, workdir: Path) -> StoreFactory:
        """Return a copy of this factory whose stores live under ``workdir``."""
        return dataclasses.replace(self, _backing=self.make_backing(workdir), _opened=[])

    def _started(self) -> Backing:
        if self._backing is None:
            raise RuntimeError(f"store factory {self.name!r} used before start()")
        return self._backing

    def open(self, table: str = "t", partition: int = 0) -> Store:
        """Open (or reopen) the store of ``table``/``partition``."""
        store = self._started().open(table, partition)
        self._opened.append(store)
        return store

    def destroy(self, table: str = "t", partition: int = 0) -> None:
        """Destroy the (closed) store of ``table``/``partition``, as ``destroy_store`` does."""
        self._started().destroy(table, partition)

    def cleanup(self) -> None:
        """Close every store this factory opened (so files and locks are released)."""
        errors: list[BaseException] = []
        for store in self._opened:
            try:
                store.close()
            except Exception as exc:
                errors.append(exc)
        self._opened.clear()
        if errors:
            raise errors[0]


def _memory_backing(workdir: Path) -> Backing:
    def destroy_memory(table: str, partition: int) -> None:
        destroy_store("memory://", table, partition)

    return Backing(MemoryStore, destroy_memory)


def _leveldb_backing(workdir: Path) -> Backing:
    def open_leveldb(table: str, partition: int) -> Store:
        return LevelDBStore(str(workdir), table, partition)

    def destroy_leveldb(table: str, partition: int) -> None:
        destroy_store(f"leveldb://{workdir}", table, partition)

    return Backing(open_leveldb, destroy_leveldb)


STORE_FACTORIES: list[StoreFactory] = [
    StoreFactory("memory", persistent=False, make_backing=_memory_backing),
    StoreFactory("leveldb", persistent=True, make_backing=_leveldb_backing),
    StoreFactory(
        "aerospike-fake",
        persistent=True,
        make_backing=fake_aerospike_backing,
        max_value_size=AEROSPIKE_MAX_VALUE,
        max_table_name=AEROSPIKE_MAX_TABLE,
    ),
]
if REAL_ADDRESS:
    STORE_FACTORIES.append(
        StoreFactory(
            "aerospike-real",
            persistent=True,
            make_backing=real_aerospike_backing,
            max_value_size=AEROSPIKE_MAX_VALUE,
            max_table_name=AEROSPIKE_MAX_TABLE,
        )
    )


@pytest.fixture(params=STORE_FACTORIES, ids=[factory.name for factory in STORE_FACTORIES])
def store_kind(request: pytest.FixtureRequest) -> StoreFactory:
    """The unstarted factory of each store type (for tests that need many fresh stores)."""
    kind: StoreFactory = request.param
    return kind


@pytest.fixture
def store_factory(store_kind: StoreFactory, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory for stores of each type, backed by this test's ``tmp_path``."""
    factory = store_kind.start(tmp_path)
    yield factory
    factory.cleanup()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    """A fresh, empty store of table ``"t"``, partition 0, of each type."""
    return store_factory.open("t", 0)
