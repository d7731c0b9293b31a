"""Choosing a store by URL: built-in schemes plus the ``statestream.stores`` entry points.

Built-in stores are named by import path and imported only when their scheme
is used. Third-party stores register a :class:`~statestream.stores.base.Store`
subclass under the ``statestream.stores`` entry-point group, keyed by scheme::

    [options.entry_points]
    statestream.stores =
        redis = mypackage.redis_store:RedisStore

They too are imported only when a URL uses their scheme.

:func:`destroy_store` deletes what a (closed) store keeps, through its class's
``destroy`` hook, so that a damaged store can be rebuilt from its changelog.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from urllib.parse import parse_qsl, urlsplit

from statestream.errors import ConfigurationError, UnknownStoreSchemeError
from statestream.secrets import redact_url
from statestream.stores.base import Store, StoreURL

__all__ = [
    "BUILTIN_STORES",
    "ENTRY_POINT_GROUP",
    "StoreRegistry",
    "destroy_store",
    "open_store",
    "parse_store_url",
]

ENTRY_POINT_GROUP = "statestream.stores"

#: scheme -> "module:Class", imported lazily.
BUILTIN_STORES: Mapping[str, str] = {
    "memory": "statestream.stores.memory:MemoryStore",
    "leveldb": "statestream.stores.leveldb:LevelDBStore",
    "aerospike": "statestream.stores.aerospike:AerospikeStore",
}


def parse_store_url(url: str) -> StoreURL:
    """Split a store URL into scheme, hosts, path and options.

    Repeated query options are an error (which one would win is not obvious).
    Messages show the URL with its secrets as ``***``; ``raw`` keeps it as given.
    """
    if not isinstance(url, str) or "://" not in url:
        shown = repr(redact_url(url)) if isinstance(url, str) else f"a {type(url).__name__}"
        raise ConfigurationError(
            f"store URL must look like 'scheme://...', e.g. 'memory://' or "
            f"'leveldb:///var/lib/app', got {shown}"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 address
        raise ConfigurationError(f"store URL {redact_url(url)!r} is malformed: {exc}") from None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, str] = {}
    for name, value in pairs:
        if name in options:
            raise ConfigurationError(
                f"option {name!r} is given twice in store URL {redact_url(url)!r}"
            )
        options[name] = value
    hosts = tuple(h for h in parts.netloc.split(",") if h) if parts.netloc else ()
    return StoreURL(
        raw=url, scheme=parts.scheme.lower(), hosts=hosts, path=parts.path, options=options
    )


class StoreRegistry:
    """Resolves URL schemes to store classes.

    ``extra`` adds or overrides schemes for this registry only (handy in tests
    and embedding); otherwise built-ins come first, then entry points.
    Immutable after construction, so it may be shared between threads.
    """

    def __init__(self, extra: Mapping[str, type[Store]] | None = None) -> None:
        self._extra = dict(extra or {})

    def schemes(self) -> list[str]:
        """Return every scheme known, without importing any store module."""
        names = set(BUILTIN_STORES) | set(self._extra)
        names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        return sorted(names)

    def store_class(self, scheme: str) -> type[Store]:
        """Return the store class for ``scheme``, importing it on first use."""
        if scheme in self._extra:
            return self._extra[scheme]
        if scheme in BUILTIN_STORES:
            module_name, _, attr = BUILTIN_STORES[scheme].partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"the {scheme!r} store needs a package that is not installed ({exc}); "
                    f"install it with: pip install 'statestream[{scheme}]'"
                ) from exc
            cls: type[Store] = getattr(module, attr)
            return cls
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
            try:
                loaded = ep.load()
            except Exception as exc:
                raise ConfigurationError(
                    f"store entry point {ep.name!r} ({ep.value}) failed to import: {exc}"
                ) from exc
            if not (isinstance(loaded, type) and issubclass(loaded, Store)):
                raise ConfigurationError(
                    f"store entry point {ep.name!r} ({ep.value}) is not a Store subclass"
                )
            return loaded
        raise UnknownStoreSchemeError(
            f"unknown store scheme {scheme!r}; known schemes: {', '.join(self.schemes())} "
            f"(third-party stores register under the {ENTRY_POINT_GROUP!r} entry-point group)"
        )

    def open(self, url: str, table: str, partition: int) -> Store:
        """Open the store of ``table``/``partition`` at ``url``."""
        parsed = parse_store_url(url)
        return self.store_class(parsed.scheme).from_url(parsed, table, partition)

    def check(self, url: str) -> None:
        """Raise ``ConfigurationError`` unless ``url`` names a store this registry
        can open with valid options (nothing is opened or imported twice)."""
        parsed = parse_store_url(url)
        self.store_class(parsed.scheme).check_url(parsed)

    def is_shared(self, url: str) -> bool:
        """Whether the store at ``url`` is shared by every worker (see ``Store.shared``)."""
        return self.store_class(parse_store_url(url).scheme).shared

    def exists(self, url: str, table: str, partition: int) -> bool:
        """Whether the store may hold state (see ``Store.exists``); creates nothing."""
        parsed = parse_store_url(url)
        return self.store_class(parsed.scheme).exists(parsed, table, partition)

    def partitions(self, url: str, table: str) -> list[int] | None:
        """The partitions of ``table`` that may hold state at ``url`` (see
        ``Store.partitions``); ``None`` if the store cannot tell. Creates nothing."""
        parsed = parse_store_url(url)
        return self.store_class(parsed.scheme).partitions(parsed, table)

    def destroy(self, url: str, table: str, partition: int) -> None:
        """Delete everything the store of ``table``/``partition`` at ``url`` keeps.

        See :meth:`Store.destroy <statestream.stores.base.Store.destroy>`.
        """
        parsed = parse_store_url(url)
        self.store_class(parsed.scheme).destroy(parsed, table, partition)


def open_store(url: str, table: str, partition: int) -> Store:
    """Open the store of ``table``/``partition`` at ``url`` with the default registry."""
    return StoreRegistry().open(url, table, partition)


def destroy_store(url: str, table: str, partition: int) -> None:
    """Delete the (closed) store of ``table``/``partition`` at ``url``, even a damaged one.

    The next :func:`open_store` of it opens an empty store with no offset and
    no metadata, to be rebuilt from the changelog. LevelDB deletes the store's
    directory (and raises :class:`~statestream.errors.StoreLockedError` while
    the store is open); Aerospike removes the partition's records and its
    offset record; memory has nothing to delete. Destroying a store that does
    not exist does nothing.
    """
    StoreRegistry().destroy(url, table, partition)
