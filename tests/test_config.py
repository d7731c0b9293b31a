"""Parsing string settings into typed, frozen configuration."""

from __future__ import annotations

import dataclasses

import pytest

from statestream.config import (
    LevelDBOptions,
    env_setting,
    options_from_strings,
    parse_bool,
    parse_size,
)
from statestream.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("Off", False)],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert parse_bool("x", text) is expected


def test_parse_bool_rejects() -> None:
    with pytest.raises(ConfigurationError, match="'sync' must be true or false, got 'maybe'"):
        parse_bool("sync", "maybe")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("64k", 65536), ("8m", 8 << 20), ("1g", 1 << 30), ("16MiB", 16 << 20)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size("s", text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1", "1.5m"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError, match="'cache_size'"):
        parse_size("cache_size", text)


def test_options_from_strings_types_and_units() -> None:
    opts = options_from_strings(
        LevelDBOptions,
        {"sync": "true", "lru_cache_size": "64m", "bloom_filter_bits": "0"},
        "test",
    )
    assert opts == LevelDBOptions(sync=True, lru_cache_size=64 << 20, bloom_filter_bits=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.sync = False  # type: ignore[misc]


def test_options_from_strings_unknown_and_bad() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) colour in where.*known"):
        options_from_strings(LevelDBOptions, {"colour": "red"}, "where")
    with pytest.raises(ConfigurationError, match="'max_open_files' must be an integer"):
        options_from_strings(LevelDBOptions, {"max_open_files": "many"}, "where")
    with pytest.raises(ConfigurationError, match="'block_size' must be a size"):
        options_from_strings(LevelDBOptions, {"block_size": "big"}, "where")


def test_leveldb_options_validate() -> None:
    with pytest.raises(ConfigurationError, match="write_buffer_size must be positive"):
        LevelDBOptions(write_buffer_size=0)
    with pytest.raises(ConfigurationError, match="bloom_filter_bits"):
        LevelDBOptions(bloom_filter_bits=-1)


def test_env_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATESTREAM_X", raising=False)
    assert env_setting("STATESTREAM_X", "d") == "d"
    monkeypatch.setenv("STATESTREAM_X", "")
    assert env_setting("STATESTREAM_X", "d") == "d"
    monkeypatch.setenv("STATESTREAM_X", "v")
    assert env_setting("STATESTREAM_X", "d") == "v"
