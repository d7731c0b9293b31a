"""``Table``: the dict-like API a processor uses.

A table is declared once (usually as a class attribute of a ``Processor``) and
is sharded by source partition, like Kafka Streams and Faust: while a record
of partition *p* is processed, the table reads and writes the shard of *p*.
The partition thread binds its shards before processing (see
:meth:`Table.bind`), so the same ``Table`` object serves every partition
thread at once, each seeing only its own partition.

Default values: with ``default=int``, reading a missing key with ``table[k]``
stores and returns ``int()``, like ``collections.defaultdict`` (so
``table[k] += 1`` and ``table[k].append(x)`` work). ``table.get(k)`` and
``k in table`` never store anything.

In-place mutation of a value read from the table (``table[k].append(x)``) is
detected at commit and written; see :mod:`statestream.tables.shard`.

Range and prefix queries run in the order of the *encoded* keys: for ``str``
keys under the ``str`` or ``json`` codec that is string order (UTF-8 byte
order); JSON numbers do not sort numerically.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from statestream.errors import ConfigurationError, TableContextError
from statestream.serde import Codec, get_codec
from statestream.stores.base import Store, check_table_name
from statestream.tables.shard import TableShard
from statestream.types import TopicPartition

if TYPE_CHECKING:
    from statestream.tables.recovery import Derive
    from statestream.tables.windowed import LateRecord, WindowedTable

__all__ = ["Table"]

K = TypeVar("K")
V = TypeVar("V")


class Table(MutableMapping[K, V], Generic[K, V]):
    """A named, partitioned, durable dict.

    Thread ownership: a ``Table`` may be shared by all partition threads; each
    thread sees the shard it bound with :meth:`bind`. The shards themselves
    belong to their partition threads.
    """

    def __init__(
        self,
        name: str,
        *,
        default: Callable[[], V] | None = None,
        key_codec: str | Codec | None = "json",
        value_codec: str | Codec | None = "json",
        store_url: str | None = None,
        cache_size: int = 50_000,
        strict_keys: bool = False,
    ) -> None:
        check_table_name(name)
        if cache_size < 0:
            raise ConfigurationError(f"table {name!r}: cache_size must be >= 0, got {cache_size}")
        self.name = name
        self.default = default
        self.key_codec = get_codec(key_codec)
        self.value_codec = get_codec(value_codec)
        #: Overrides the app's store URL for this table (None: the app's).
        self.store_url = store_url
        #: Committed values kept decoded per partition between commits.
        self.cache_size = cache_size
        #: A key written on a partition it does not hash to is an error, not
        #: a warning (see statestream.tables.keyguard; the app can set it too).
        self.strict_keys = strict_keys
        self._local = threading.local()

    def make_shard(self, partition: int, store: Store, changelog: TopicPartition) -> TableShard:
        """Return this table's shard of ``partition`` over ``store`` (the manager calls it)."""
        return TableShard(
            self.name,
            partition,
            store,
            self.key_codec,
            self.value_codec,
            changelog,
            cache_size=self.cache_size,
        )

    def derive(self) -> Derive | None:
        """How this table's store-only entries follow from its changelog records (None: none)."""
        return None

    # -- windows (see statestream.tables.windowed) ---------------------------------

    def tumbling(
        self,
        size: int | datetime.timedelta,
        *,
        grace: int | datetime.timedelta = 0,
        retention: int | datetime.timedelta = 86_400_000,
        event_time: Callable[[Any], int] | None = None,
        on_late: Callable[[LateRecord], None] | None = None,
        final_topic: str | None = None,
    ) -> WindowedTable:
        """This table as back-to-back windows of ``size`` (ms or timedelta) on event time.

        ``grace``: how long after a window's end late records are still
        counted; ``retention``: how long a closed window stays readable;
        ``event_time``: the event time of a message (default: its timestamp);
        ``on_late``: called with each dropped late record (default: logged);
        ``final_topic``: where each window's final value goes once it closes.
        """
        from statestream.tables.windowed import WindowedTable

        return WindowedTable(
            self,
            "tumbling",
            size,
            grace=grace,
            retention=retention,
            event_time=event_time,
            on_late=on_late,
            final_topic=final_topic,
        )

    def hopping(
        self,
        size: int | datetime.timedelta,
        step: int | datetime.timedelta,
        *,
        grace: int | datetime.timedelta = 0,
        retention: int | datetime.timedelta = 86_400_000,
        event_time: Callable[[Any], int] | None = None,
        on_late: Callable[[LateRecord], None] | None = None,
        final_topic: str | None = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> WindowedTable:
        """This table as windows of ``size`` starting every ``step`` (``step`` divides ``size``).

        A write goes to its step's *slice* (``+=`` adds to it, ``update(fn)``
        applies ``fn`` to it); a window's value is ``merge`` (default ``+``)
        of the slices it holds, in time order, so it cannot be assigned. A
        record is late once the oldest window holding it closed. Other
        options: see :meth:`tumbling`.
        """
        from statestream.tables.windowed import WindowedTable

        return WindowedTable(
            self,
            "hopping",
            size,
            step,
            grace=grace,
            retention=retention,
            event_time=event_time,
            on_late=on_late,
            final_topic=final_topic,
            merge=merge,
        )

    def sliding(
        self,
        size: int | datetime.timedelta,
        *,
        grace: int | datetime.timedelta = 0,
        retention: int | datetime.timedelta = 86_400_000,
        event_time: Callable[[Any], int] | None = None,
        on_late: Callable[[LateRecord], None] | None = None,
        final_topic: str | None = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> WindowedTable:
        """This table as sliding windows: records less than ``size`` apart share a window.

        ``merge(a, b)`` combines two partial values (default ``a + b``).
        Other options: see :meth:`tumbling`.
        """
        from statestream.tables.windowed import WindowedTable

        return WindowedTable(
            self,
            "sliding",
            size,
            grace=grace,
            retention=retention,
            event_time=event_time,
            on_late=on_late,
            final_topic=final_topic,
            merge=merge,
        )

    def session(
        self,
        gap: int | datetime.timedelta,
        *,
        grace: int | datetime.timedelta = 0,
        retention: int | datetime.timedelta = 86_400_000,
        event_time: Callable[[Any], int] | None = None,
        on_late: Callable[[LateRecord], None] | None = None,
        final_topic: str | None = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> WindowedTable:
        """This table as per-key sessions: records at most ``gap`` apart form one.

        A record bridging two sessions merges them with ``merge(a, b)``
        (default ``a + b``). Other options: see :meth:`tumbling`.
        """
        from statestream.tables.windowed import WindowedTable

        return WindowedTable(
            self,
            "session",
            gap,
            grace=grace,
            retention=retention,
            event_time=event_time,
            on_late=on_late,
            final_topic=final_topic,
            merge=merge,
        )

    # -- binding -----------------------------------------------------------------

    def shard(self) -> TableShard:
        """Return the shard bound on this thread; raise ``TableContextError`` if none."""
        shard: TableShard | None = getattr(self._local, "shard", None)
        if shard is None:
            raise TableContextError(
                f"table {self.name!r} has no partition bound on this thread: tables are "
                "sharded by source partition and can only be used while a record is "
                "processed (or inside table.bind(shard))"
            )
        return shard

    def bind(self, shard: TableShard | None) -> None:
        """Make ``shard`` this thread's current shard (``None`` unbinds)."""
        self._local.shard = shard

    def release(self, shard: TableShard) -> None:
        """Unbind ``shard`` if it is this thread's current shard (it is being closed)."""
        if getattr(self._local, "shard", None) is shard:
            self._local.shard = None

    def view(self, shard: TableShard) -> Table[K, V]:
        """Return this table fixed to ``shard``, whichever thread uses it.

        The worker gives each partition's processor instances such views
        (as instance attributes shadowing the class's tables), so
        ``self.counts[k]`` reaches its shard without a thread-local lookup.
        A view equals and hashes like its table.
        """
        view: _TableView[K, V] = object.__new__(_TableView)
        view.__dict__.update(self.__dict__)
        view._shard = shard
        view._table = self
        return view

    @contextlib.contextmanager
    def bound_to(self, shard: TableShard) -> Iterator[Table[K, V]]:
        """Bind ``shard`` for the duration of a ``with`` block (tools and tests)."""
        previous = getattr(self._local, "shard", None)
        self._local.shard = shard
        try:
            yield self
        finally:
            self._local.shard = previous

    # -- the mapping API ---------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        # The binding is read directly (not through shard()): this and
        # __setitem__ run for every table access of every record.
        shard = getattr(self._local, "shard", None)
        if shard is None:
            shard = self.shard()  # raises
        result: V = shard.get_or_create(key, self.default)
        return result

    def __setitem__(self, key: K, value: V) -> None:
        shard = getattr(self._local, "shard", None)
        if shard is None:
            shard = self.shard()  # raises
        shard.set(key, value)

    def __delitem__(self, key: K) -> None:
        if not self.shard().delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self.shard().contains(key)

    def get(self, key: K, default: Any = None) -> Any:
        """Return the value of ``key`` or ``default``; never stores a default."""
        return self.shard().get(key, default)

    def __iter__(self) -> Iterator[K]:
        for key, _ in self.shard().iterate():
            yield key

    def __len__(self) -> int:
        return len(self.shard())

    def items(self) -> Iterator[tuple[K, V]]:  # type: ignore[override]
        """Yield ``(key, value)`` pairs of the current partition in key order."""
        return self.shard().iterate()

    def values(self) -> Iterator[V]:  # type: ignore[override]
        """Yield the values of the current partition in key order."""
        return (value for _, value in self.shard().iterate())

    def keys(self) -> Iterator[K]:  # type: ignore[override]
        """Yield the keys of the current partition in key order."""
        return iter(self)

    def range(
        self, start: K | None = None, end: K | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[K, V]]:
        """Yield pairs with ``start <= key < end`` (encoded-key order)."""
        return self.shard().iterate(start=start, end=end, reverse=reverse)

    def prefix(self, prefix: Any, *, reverse: bool = False) -> Iterator[tuple[K, V]]:
        """Yield pairs whose key starts with ``prefix`` (a ``str`` for json/str keys)."""
        return self.shard().iterate(prefix=prefix, reverse=reverse)

    def __repr__(self) -> str:
        return f"<Table {self.name!r}>"

    # Tables are declared once and compared by identity.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


class _TableView(Table[K, V]):
    """A :class:`Table` fixed to one shard (see :meth:`Table.view`)."""

    _shard: TableShard
    _table: Table[K, V]

    def shard(self) -> TableShard:
        return self._shard

    def bind(self, shard: TableShard | None) -> None:
        raise TableContextError(f"a view of table {self.name!r} is fixed to its partition")

    def __getitem__(self, key: K) -> V:
        result: V = self._shard.get_or_create(key, self.default)
        return result

    def __setitem__(self, key: K, value: V) -> None:
        self._shard.set(key, value)

    def __repr__(self) -> str:
        return f"<Table {self.name!r} partition {self._shard.partition}>"

    def __eq__(self, other: object) -> bool:
        return other is self._table or (
            isinstance(other, _TableView) and other._table is self._table
        )

    def __hash__(self) -> int:
        return id(self._table)
