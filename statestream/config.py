"""Configuration as frozen dataclasses, and the one place that parses settings.

Settings reach components through constructors. This module (and the command
line) are the only places that read the environment; everything else is
handed a frozen dataclass.

``options_from_strings`` turns string settings (a URL query string, environment
variables) into a typed dataclass, rejecting unknown names and values that do
not parse, with messages that name the setting.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from statestream.errors import ConfigurationError

__all__ = [
    "DEFAULT_STORE_URL",
    "LevelDBOptions",
    "env_setting",
    "options_from_strings",
    "parse_bool",
    "parse_size",
]

#: Where tables live when no store URL is configured: LevelDB under ./statestream-data.
DEFAULT_STORE_URL = "leveldb://./statestream-data"

_T = TypeVar("_T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_bool(name: str, text: str) -> bool:
    """Parse ``1/0``, ``true/false``, ``yes/no``, ``on/off`` (any case)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"setting {name!r} must be true or false, got {text!r}")


def parse_size(name: str, text: str) -> int:
    """Parse a byte count: ``4096``, ``64k``, ``8m``, ``1g`` (binary units)."""
    cleaned = text.strip().lower().removesuffix("b").removesuffix("i")
    multiplier = 1
    if cleaned and cleaned[-1] in _SIZE_SUFFIXES:
        multiplier = _SIZE_SUFFIXES[cleaned[-1]]
        cleaned = cleaned[:-1]
    try:
        value = int(cleaned) * multiplier
    except ValueError:
        raise ConfigurationError(
            f"setting {name!r} must be a size such as 4096, 64k, 8m or 1g, got {text!r}"
        ) from None
    if value < 0:
        raise ConfigurationError(f"setting {name!r} must not be negative, got {text!r}")
    return value


def _parse_value(name: str, annotation: Any, text: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.strip().lower() in ("", "none", "null"):
            return None
        return _parse_value(name, args[0], text)
    if annotation is bool:
        return parse_bool(name, text)
    if annotation is int:
        if name.endswith("_size") or name.endswith("_bytes"):
            return parse_size(name, text)
        try:
            return int(text)
        except ValueError:
            raise ConfigurationError(f"setting {name!r} must be an integer, got {text!r}") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigurationError(f"setting {name!r} must be a number, got {text!r}") from None
    return text


def options_from_strings(cls: type[_T], values: Mapping[str, str], what: str) -> _T:
    """Build dataclass ``cls`` from string ``values``; unknown names are an error.

    ``what`` names the source in messages (for example ``"leveldb store URL"``).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} in {what}; known options: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {name: _parse_value(name, hints[name], text) for name, text in values.items()}
    return cls(**kwargs)


def env_setting(name: str, default: str) -> str:
    """Return environment variable ``name``, or ``default`` when unset or empty."""
    value = os.environ.get(name, "")
    return value if value else default


@dataclass(frozen=True)
class LevelDBOptions:
    """Tuning for :class:`~statestream.stores.leveldb.LevelDBStore`.

    Set through the store URL query string, e.g.
    ``leveldb:///var/lib/app?sync=true&lru_cache_size=64m``.
    """

    #: fsync every batch. False (default) survives a process crash (kill -9) but
    #: may lose the last batches on power loss; they are then replayed from the
    #: changelog, because the offset is lost together with them.
    sync: bool = False
    #: Memtable size in bytes before it is flushed to a sorted table file.
    write_buffer_size: int = 4 << 20
    #: Block cache in bytes, per store (one store per table and partition).
    lru_cache_size: int = 8 << 20
    #: Data block size in bytes.
    block_size: int = 4096
    #: Bits per key of the bloom filter; 0 disables it. Speeds up misses.
    bloom_filter_bits: int = 10
    #: Compress blocks with snappy.
    compression: bool = True
    #: File handles LevelDB may keep open, per store.
    max_open_files: int = 256
    #: Check checksums on every read (slower; catches disk corruption early).
    paranoid_checks: bool = False

    def __post_init__(self) -> None:
        for name in ("write_buffer_size", "lru_cache_size", "block_size", "max_open_files"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"leveldb option {name} must be positive")
        if self.bloom_filter_bits < 0:
            raise ConfigurationError("leveldb option bloom_filter_bits must be >= 0")
