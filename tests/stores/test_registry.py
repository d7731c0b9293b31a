"""Choosing a store by URL: built-in schemes, entry points, and the errors."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path

import pytest

from statestream.errors import ConfigurationError, StateStreamError, UnknownStoreSchemeError
from statestream.stores import registry
from statestream.stores.base import Store
from statestream.stores.memory import MemoryStore
from statestream.stores.registry import StoreRegistry, destroy_store, open_store, parse_store_url

FAKE_MODULE = "tests.stores.fake_store"


def _entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=registry.ENTRY_POINT_GROUP)


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    """Installed entry points, as the registry sees them; tests append to the list."""
    installed: list[EntryPoint] = []

    def entry_points(**params: str) -> EntryPoints:
        return EntryPoints(installed).select(**params)

    monkeypatch.setattr(registry, "entry_points", entry_points)
    # Start every test with the fake store module not yet imported.
    monkeypatch.delitem(sys.modules, FAKE_MODULE, raising=False)
    return installed


def test_memory_url_opens_a_memory_store() -> None:
    store = open_store("memory://", "t", 3)
    try:
        assert type(store) is MemoryStore
        assert store.table == "t"
        assert store.partition == 3
        store.write({b"a": b"1"}, 0)
        assert store.get(b"a") == b"1"
    finally:
        store.close()


def test_scheme_is_case_insensitive() -> None:
    with open_store("MEMORY://", "t", 0) as store:
        assert type(store) is MemoryStore


@pytest.mark.parametrize("url", ["memory://host", "memory:///some/path", "memory://?sync=true"])
def test_memory_url_takes_nothing_else(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(url, "t", 0)
    assert "memory://" in str(info.value)


def test_unknown_scheme_lists_known_schemes() -> None:
    with pytest.raises(UnknownStoreSchemeError) as info:
        open_store("rocksdb:///var/lib/app", "t", 0)
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, StateStreamError)
    message = str(info.value)
    assert "'rocksdb'" in message
    assert "leveldb" in message
    assert "memory" in message
    assert registry.ENTRY_POINT_GROUP in message


@pytest.mark.parametrize("url", ["memory", "leveldb:/var/lib/app", "", "/var/lib/app", None, 5])
def test_url_without_scheme_separator_is_a_configuration_error(url: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(url, "t", 0)  # type: ignore[arg-type]
    assert "scheme://" in str(info.value)


def test_parse_store_url_splits_hosts_path_and_options() -> None:
    parsed = parse_store_url("aerospike://h1:3000,h2:3000/ns?set_prefix=app&x=")
    assert parsed.scheme == "aerospike"
    assert parsed.hosts == ("h1:3000", "h2:3000")
    assert parsed.path == "/ns"
    assert dict(parsed.options) == {"set_prefix": "app", "x": ""}
    assert parsed.raw == "aerospike://h1:3000,h2:3000/ns?set_prefix=app&x="


def test_repeated_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_store_url("memory://?a=1&a=2")
    assert "'a'" in str(info.value)


def test_entry_point_store_is_loaded_lazily(fake_entry_points: list[EntryPoint]) -> None:
    fake_entry_points.append(_entry_point("fake", f"{FAKE_MODULE}:FakeStore"))
    assert FAKE_MODULE not in sys.modules
    # Listing schemes and opening other stores does not import it.
    assert "fake" in StoreRegistry().schemes()
    open_store("memory://", "t", 0).close()
    with pytest.raises(UnknownStoreSchemeError) as info:
        open_store("nope://", "t", 0)
    assert "fake" in str(info.value)
    assert "leveldb" in str(info.value)
    assert "memory" in str(info.value)
    assert FAKE_MODULE not in sys.modules

    store = open_store("fake://", "t", 1)
    try:
        assert FAKE_MODULE in sys.modules
        fake_store_class = sys.modules[FAKE_MODULE].FakeStore
        assert type(store) is fake_store_class
        assert store.partition == 1
        store.write({b"a": b"1"}, 0)
        assert store.get(b"a") == b"1"
    finally:
        store.close()


def test_entry_point_that_is_not_a_store_is_a_configuration_error(
    fake_entry_points: list[EntryPoint],
) -> None:
    fake_entry_points.append(_entry_point("bogus", f"{FAKE_MODULE}:NotAStore"))
    with pytest.raises(ConfigurationError) as info:
        open_store("bogus://", "t", 0)
    assert "bogus" in str(info.value)
    assert "not a Store subclass" in str(info.value)


def test_entry_point_that_is_not_a_class_is_a_configuration_error(
    fake_entry_points: list[EntryPoint],
) -> None:
    fake_entry_points.append(_entry_point("instance", "statestream.stores.memory:__all__"))
    with pytest.raises(ConfigurationError):
        open_store("instance://", "t", 0)


def test_entry_point_that_fails_to_import_is_a_configuration_error(
    fake_entry_points: list[EntryPoint],
) -> None:
    fake_entry_points.append(_entry_point("broken", "tests.stores.no_such_module:Store"))
    with pytest.raises(ConfigurationError) as info:
        open_store("broken://", "t", 0)
    assert "broken" in str(info.value)
    assert "no_such_module" in str(info.value)


def test_builtin_schemes_win_over_entry_points(fake_entry_points: list[EntryPoint]) -> None:
    fake_entry_points.append(_entry_point("memory", f"{FAKE_MODULE}:FakeStore"))
    with open_store("memory://", "t", 0) as store:
        assert type(store) is MemoryStore
    assert FAKE_MODULE not in sys.modules


def test_extra_schemes_of_one_registry(fake_entry_points: list[EntryPoint]) -> None:
    class Special(MemoryStore):
        scheme = "special"

    custom = StoreRegistry(extra={"special": Special})
    assert "special" in custom.schemes()
    with custom.open("special://", "t", 0) as store:
        assert type(store) is Special
    # Other registries are unaffected.
    with pytest.raises(UnknownStoreSchemeError):
        open_store("special://", "t", 0)


def test_listing_schemes_imports_no_backend() -> None:
    # Run in a fresh interpreter: this one has long imported every backend.
    code = (
        "import sys\n"
        "from statestream.stores import StoreRegistry\n"
        "schemes = StoreRegistry().schemes()\n"
        "assert 'leveldb' in schemes and 'memory' in schemes, schemes\n"
        "loaded = [m for m in ('plyvel', 'statestream.stores.leveldb') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from statestream.stores import open_store\n"
        "open_store('memory://', 't', 0).close()\n"
        "assert 'plyvel' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# -- destroy_store --------------------------------------------------------------


def test_destroy_store_of_an_unknown_scheme_lists_known_schemes() -> None:
    with pytest.raises(UnknownStoreSchemeError, match="leveldb"):
        destroy_store("rocksdb:///var/lib/app", "t", 0)


@pytest.mark.parametrize("url", ["memory://host", "memory:///some/path", "memory://?a=1"])
def test_destroy_store_checks_the_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        destroy_store(url, "t", 0)


def test_destroy_default_opens_clears_and_closes_the_store() -> None:
    # A store class that brings no destroy hook of its own gets the default.
    calls: list[str] = []

    class Plain(MemoryStore):
        scheme = "plain"
        destroy = classmethod(Store.destroy.__func__)  # type: ignore[attr-defined]

        def clear(self) -> None:
            calls.append(f"clear {self.table} {self.partition}")

        def _close(self) -> None:
            calls.append("close")

    StoreRegistry(extra={"plain": Plain}).destroy("plain://", "t", 2)
    assert calls == ["clear t 2", "close"]
