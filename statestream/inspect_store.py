"""Read one table's stores from outside a worker: what ``statestream inspect`` prints.

Read-only: each store is opened, read in key order and closed; nothing is
written to it (LevelDB may tidy its own files when a store opens, as it
does for any open). The app is imported, never run: no topic is created,
no group joined, no processor instantiated.

What is read, per partition of the table:

* a store no process holds: read here;
* a LevelDB store a running worker holds (its lock is taken): handed to
  ``ask_worker`` if one is given (the seam for asking the worker, e.g.
  through a query endpoint); without one, or when it answers ``None``,
  :class:`~statestream.errors.StoreHeldError` says that a worker holds it.
  Every store asked for is opened before anything is read, so a refusal
  comes before any output;
* a shared store (Aerospike) is read here even beside a live worker. It
  holds committed state only: the commit protocol applies a batch to the
  store after its source offsets are committed.

Partitions: the ones asked for; otherwise those the store has (LevelDB
lists its directories); otherwise, for a store that cannot tell, the
changelog's partition count from the app's log.

Decoding: with an app, the table's key and value codecs; with a store
URL, the codecs given. A key or value the codec cannot decode is returned
as its bytes and counted in :attr:`TableReader.undecodable`. A windowed
table yields one entry per window, with its start and end: with the app,
read through the table's own shard (so a hopping table's slices are merged
into its windows, as the app reads them); with a store URL, the window rows
as stored (layout in :mod:`statestream.tables.window_layout`; a hopping
table's rows are its slices). Time indexes, sliding point aggregates and
metadata rows are skipped.

Thread ownership: the calling thread (the command's main thread).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from statestream.app import App
from statestream.errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    LogLockedError,
    StoreHeldError,
    StoreLockedError,
    StoreNotFoundError,
    UnknownTableError,
)
from statestream.log import open_transport
from statestream.secrets import redact_url
from statestream.serde import Codec, RawCodec, encode_prefix
from statestream.stores.base import Store
from statestream.stores.registry import StoreRegistry, parse_store_url
from statestream.tables.table import Table
from statestream.tables.windowed import WindowedTable
from statestream.tables.windowed_shard import TaggedCodec
from statestream.tables.windows import decode_window_key
from statestream.types import TopicPartition

__all__ = [
    "AskWorker",
    "Entry",
    "Query",
    "TableLayout",
    "TableReader",
    "app_table",
    "ask_endpoint",
    "url_table",
]

#: First byte of a windowed table's window rows (statestream.tables.windowed_shard).
_WINDOW_TAG = b"w"


@dataclass(frozen=True)
class TableLayout:
    """Where one table's stores are and how to decode them."""

    name: str
    store_url: str
    key_codec: Codec
    value_codec: Codec
    windowed: bool = False
    #: A global table: one store (partition 0) holding every key.
    global_table: bool = False
    #: The app, when known: its log tells a shared store's partition count.
    app: App | None = None
    #: The app's table, when known: a windowed table's windows are read through it.
    table: Table[Any, Any] | None = None


class Query(NamedTuple):
    """Which entries: keys starting with ``prefix`` (None: all), at most ``limit`` (None: all)."""

    prefix: str | None = None
    limit: int | None = None


class Entry(NamedTuple):
    """One key of a table's store, decoded; ``window`` is ``(start, end)`` in ms, or None."""

    partition: int
    key: Any
    value: Any
    window: tuple[int, int] | None = None


#: Asked for the entries of a store a running worker holds: ``(layout, partition,
#: query)`` -> the entries, or ``None`` if the worker cannot be asked.
AskWorker = Callable[[TableLayout, int, Query], Iterable[Entry] | None]


def ask_endpoint(endpoint: str, token: str | None = None, timeout: float = 10.0) -> AskWorker:
    """An :data:`AskWorker` that asks the worker's HTTP endpoint (docs/queries.md).

    ``GET {endpoint}/tables/{name}?partition=&prefix=&limit=`` answers the
    worker's committed entries of the partition; it answers ``None`` (the
    worker cannot be asked) when the endpoint does not answer, the worker
    does not hold the partition active, or the table is windowed (the
    endpoint reads those per key).
    """

    def ask(layout: TableLayout, partition: int, query: Query) -> list[Entry] | None:
        if layout.windowed:
            return None
        params: dict[str, str] = {"partition": str(partition)}
        if query.prefix is not None:
            params["prefix"] = query.prefix
        params["limit"] = str(min(query.limit or _MAX_ASKED, _MAX_ASKED))
        url = (
            f"{endpoint}/tables/{urllib.parse.quote(layout.name, safe='')}?"
            + urllib.parse.urlencode(params)
        )
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                page = json.loads(response.read())
        except (OSError, ValueError):
            return None
        if page.get("missing"):
            return None
        return [Entry(partition, item["key"], item["value"]) for item in page["items"]]

    return ask


#: The most entries one request to a worker's endpoint asks for (its range limit).
_MAX_ASKED = 10_000


def app_table(app: App, name: str) -> TableLayout:
    """The layout of ``app``'s table (or global table) ``name``.

    Raises :class:`~statestream.errors.UnknownTableError` listing the app's
    tables when it has none of that name.
    """
    store_url = app.config.store_url
    for table in app.tables():
        if table.name == name:
            return TableLayout(
                name,
                table.store_url or store_url,
                table.key_codec,
                table.value_codec,
                windowed=isinstance(table, WindowedTable),
                app=app,
                table=table,
            )
    for global_table in app.global_tables():
        if global_table.name == name:
            return TableLayout(
                name,
                global_table.store_url or store_url,
                global_table.key_codec,
                global_table.value_codec,
                global_table=True,
                app=app,
            )
    tables = ", ".join(sorted(t.name for t in app.tables())) or "none"
    global_tables = ", ".join(sorted(t.name for t in app.global_tables()))
    also = f"; global tables: {global_tables}" if global_tables else ""
    raise UnknownTableError(f"app {app.app_id!r} has no table {name!r}; its tables: {tables}{also}")


def url_table(
    url: str, name: str, key_codec: Codec, value_codec: Codec, *, windowed: bool = False
) -> TableLayout:
    """The layout of table ``name`` in the stores at ``url``, decoded with the codecs given."""
    StoreRegistry().check(url)  # a bad URL or an unknown scheme fails here
    return TableLayout(name, url, key_codec, value_codec, windowed=windowed)


class TableReader:
    """Reads the entries of one table's stores (see the module docstring)."""

    def __init__(
        self,
        layout: TableLayout,
        *,
        registry: StoreRegistry | None = None,
        ask_worker: AskWorker | None = None,
    ) -> None:
        self.layout = layout
        self._registry = registry or StoreRegistry()
        self._ask_worker = ask_worker
        #: Keys and values returned as bytes because their codec could not decode them.
        self.undecodable = 0
        self._values: Codec = (
            TaggedCodec(layout.value_codec) if layout.windowed else layout.value_codec
        )

    # -- which partitions ----------------------------------------------------------

    def partitions(self, asked: int | None = None) -> list[int]:
        """The partitions to read: ``asked``, or every one the table has a store of."""
        layout = self.layout
        shown = redact_url(layout.store_url)
        if parse_store_url(layout.store_url).scheme == "memory":
            raise ConfigurationError(
                f"table {layout.name!r} lives in memory ({shown}): its state exists only inside "
                "the worker process, so there is no store to inspect"
            )
        if layout.global_table:
            if asked not in (None, 0):
                raise ConfigurationError(
                    f"{layout.name!r} is a global table: one store holds every key, as "
                    f"partition 0; got --partition {asked}"
                )
            asked = 0
        if asked is not None:
            if asked < 0:
                raise ConfigurationError(f"partition must be >= 0, got {asked}")
            if not self._registry.exists(layout.store_url, layout.name, asked):
                raise StoreNotFoundError(
                    f"table {layout.name!r} has no store of partition {asked} at {shown}; "
                    "check --data-dir or --store-url (the worker's) and the partition"
                )
            return [asked]
        found = self._registry.partitions(layout.store_url, layout.name)
        if found is None:
            found = self._changelog_partitions()
        if not found:
            raise StoreNotFoundError(
                f"table {layout.name!r} has no store at {shown}; check --data-dir or "
                "--store-url (they must be the worker's), or run a worker first"
            )
        return found

    def _changelog_partitions(self) -> list[int]:
        """For a store that cannot list its partitions: the changelog's partition count."""
        layout, app = self.layout, self.layout.app
        if app is None:
            raise ConfigurationError(
                f"the store at {redact_url(layout.store_url)} cannot list its partitions; "
                "give --partition N"
            )
        topic = f"{app.app_id}-{layout.name}-changelog"
        try:
            transport = open_transport(app.config.broker_url)
        except LogLockedError:
            count = app.config.partitions
            if count is None:
                raise ConfigurationError(
                    f"cannot tell how many partitions table {layout.name!r} has: its store "
                    "cannot list them and a running worker holds the embedded log; give "
                    "--partition N (or --partitions)"
                ) from None
            return list(range(count))
        try:
            admin = transport.admin()
            try:
                described = admin.describe_topic(topic)
            finally:
                admin.close()
        finally:
            transport.close()
        return [] if described is None else list(range(described.partitions))

    # -- reading -------------------------------------------------------------------

    def entries(self, partitions: Sequence[int], query: Query | None = None) -> Iterator[Entry]:
        """Yield the entries of ``partitions`` in partition order, then key order.

        Every store is opened before the first entry is yielded, and all are
        closed when the iterator is exhausted or closed.
        """
        query = Query() if query is None else query
        if query.limit is not None and query.limit < 0:
            raise ConfigurationError(f"limit must be >= 0, got {query.limit}")
        prefix = self._prefix(query.prefix)
        opened: list[tuple[int, Store | None]] = []
        try:
            for partition in partitions:
                opened.append((partition, self._open(partition)))
            left = query.limit
            for partition, store in opened:
                if left == 0:
                    return
                if store is None:
                    source = self._asked(partition, query._replace(limit=left))
                else:
                    source = self._read(store, partition, prefix)
                for entry in source:
                    yield entry
                    if left is not None:
                        left -= 1
                        if left == 0:
                            break
        finally:
            for _, store in opened:
                if store is not None:
                    store.close()

    def _open(self, partition: int) -> Store | None:
        """Open the partition's store; None: a worker holds it and will be asked."""
        layout = self.layout
        try:
            return self._registry.open(layout.store_url, layout.name, partition)
        except StoreLockedError as exc:
            if self._ask_worker is not None:
                return None
            raise StoreHeldError(
                f"the store of table {layout.name!r} partition {partition} is held by a running "
                "worker (its LevelDB lock is taken), and statestream inspect reads only stores "
                "no process has open; stop that worker to inspect it, or run it with "
                f"--web-port so that inspect asks it. {exc}"
            ) from exc

    def _asked(self, partition: int, query: Query) -> Iterable[Entry]:
        assert self._ask_worker is not None
        answer = self._ask_worker(self.layout, partition, query)
        if answer is None:
            raise StoreHeldError(
                f"the store of table {self.layout.name!r} partition {partition} is held by a "
                "running worker (its LevelDB lock is taken), and the worker could not be asked"
            )
        return answer

    def _prefix(self, prefix: str | None) -> bytes | None:
        if prefix is None:
            return None
        codec = self.layout.key_codec
        try:
            return prefix.encode() if isinstance(codec, RawCodec) else encode_prefix(codec, prefix)
        except EncodeError as exc:
            raise ConfigurationError(f"--prefix {prefix!r}: {exc}") from exc

    def _read(self, store: Store, partition: int, prefix: bytes | None) -> Iterator[Entry]:
        layout = self.layout
        decode_key = layout.key_codec.decode
        if not layout.windowed:
            for kb, vb in store.iterate(prefix=prefix):
                yield Entry(partition, self._decode(decode_key, kb), self._decode_value(vb))
            return
        if isinstance(layout.table, WindowedTable):
            yield from self._windows(layout.table, store, partition, prefix)
            return
        # Without the table, the window rows as stored (a hopping table's are
        # its slices). A row's key starts with the key's length, so one prefix
        # of keys is no byte range: the rows are filtered instead.
        for raw, vb in store.iterate(prefix=_WINDOW_TAG):
            kb, window = decode_window_key(raw[len(_WINDOW_TAG) :])
            if prefix is not None and not kb.startswith(prefix):
                continue
            key = self._decode(decode_key, kb)
            yield Entry(partition, key, self._decode_value(vb), window)

    def _windows(
        self, table: WindowedTable, store: Store, partition: int, prefix: bytes | None
    ) -> Iterator[Entry]:
        """The windows as the table reads them (a hopping table's slices merged).

        Through a shard over ``store`` that is never written or committed.
        """
        app_id = "" if self.layout.app is None else f"{self.layout.app.app_id}-"
        changelog = TopicPartition(f"{app_id}{self.layout.name}-changelog", partition)
        windowed = table.make_shard(partition, store, changelog).windowed
        assert windowed is not None  # a windowed table's shard has its windowed view
        encode = self.layout.key_codec.encode
        for key, window in windowed.items():
            if prefix is None or encode(key).startswith(prefix):
                yield Entry(partition, key, window.value, (window.start, window.end))

    def _decode_value(self, data: bytes) -> Any:
        return self._decode(self._values.decode, data)

    def _decode(self, decode: Callable[[bytes], Any], data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError:
            self.undecodable += 1
            return bytes(data)
