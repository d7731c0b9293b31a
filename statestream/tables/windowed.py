"""``WindowedTable``: a table whose values live in windows of event time.

Declared from a plain table::

    per_minute = Table("per-minute", default=int).tumbling(60_000, grace=5_000)

    def process(self, message, ctx):
        self.per_minute[message.key] += 1              # every window holding the record
        count = self.per_minute[message.key].current()  # WindowedValue(start, end, value)

Four kinds (all windows are half-open ``[start, end)``, in milliseconds):

* ``tumbling(size)``: back-to-back windows aligned to the epoch; one per record;
* ``hopping(size, step)``: windows of ``size`` starting every ``step`` (which
  divides ``size``); a record belongs to ``size / step`` of them. Each key
  keeps one aggregate per step (a *slice*); a window's value merges the
  slices it holds (``merge``, default ``+``);
* ``sliding(size)``: windows defined by the records themselves: two records
  share a window when their times differ by less than ``size``; each record
  has the window of the ``size`` ms ending with it, and the window starting
  just after it (if a later record falls in it). Values are merges of the
  records inside, so ``merge`` (default ``+``) combines two partial values;
* ``session(gap)``: per key, records no more than ``gap`` apart form one
  session; a record bridging two sessions merges them (with ``merge``).

Event time is the record's timestamp, or ``event_time(message)``. Stream
time, closing, lateness, retention and the store layout are described in
:mod:`statestream.tables.windowed_shard`; docs/windows.md explains them for
users.

Thread ownership: like :class:`~statestream.tables.table.Table`: one object
for every partition thread, each seeing its own partition's windows.
"""

from __future__ import annotations

import datetime
import operator
import threading
from collections.abc import Callable, Iterator
from typing import Any

from statestream.errors import ConfigurationError, TableError
from statestream.stores.base import Store
from statestream.tables.recovery import Derive
from statestream.tables.shard import ALWAYS_JSON, EntryState, TableShard
from statestream.tables.table import Table, _TableView
from statestream.tables.windowed_shard import (
    ClosedWindow,
    LateRecord,
    TaggedCodec,
    WindowedShard,
    WindowedValue,
    WindowKind,
    WindowSpec,
    derive_index,
)
from statestream.types import TopicPartition

__all__ = ["ClosedWindow", "LateRecord", "WindowSet", "WindowedTable", "WindowedValue"]

#: object.__new__, for building WindowSets without their __init__.
_new_object = object.__new__
_DELETED = EntryState.DELETED
_SET = EntryState.SET
#: Most WindowSets a view keeps (see _WindowedView._sets); it starts over beyond.
_MAX_SETS = 100_000

#: Default retention of closed windows: one day, like Kafka Streams.
DEFAULT_RETENTION = 86_400_000
#: Extra time windowed changelogs keep records past a window's life.
CHANGELOG_MARGIN = 86_400_000

Duration = int | datetime.timedelta


def duration(table: str, option: str, value: object, *, positive: bool) -> int:
    """Return ``value`` (int ms or timedelta) as int milliseconds, or raise ConfigurationError."""
    if isinstance(value, datetime.timedelta):
        ms = value // datetime.timedelta(milliseconds=1)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        raise ConfigurationError(
            f"table {table!r}: {option} must be an int of milliseconds or a timedelta, "
            f"got {value!r}"
        )
    if ms < (1 if positive else 0):
        need = "positive" if positive else ">= 0"
        raise ConfigurationError(f"table {table!r}: {option} must be {need}, got {ms} ms")
    return ms


def _divisor_near(size: int, step: int) -> int:
    """The divisor of ``size`` closest to ``step`` (the smaller one on a tie)."""
    best = 1
    for d in range(1, int(size**0.5) + 1):
        if size % d == 0:
            for c in (d, size // d):
                if (abs(c - step), c) < (abs(best - step), best):
                    best = c
    return best


class WindowedTable(Table[Any, Any]):
    """A table of windows per key (see the module docstring). Made by ``Table.tumbling`` & co."""

    def __init__(
        self,
        base: Table[Any, Any],
        kind: WindowKind,
        size: Duration,
        step: Duration | None = None,
        *,
        grace: Duration = 0,
        retention: Duration = DEFAULT_RETENTION,
        event_time: Callable[[Any], int] | None = None,
        on_late: Callable[[LateRecord], None] | None = None,
        final_topic: str | None = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        self.__dict__.update(
            {k: v for k, v in base.__dict__.items() if k not in ("_local", "_late_lock")}
        )
        self._local = threading.local()
        name = base.name
        size_name = "gap" if kind == "session" else "size"
        size_ms = duration(name, size_name, size, positive=True)
        step_ms = size_ms if step is None else duration(name, "step", step, positive=True)
        if step_ms > size_ms:
            raise ConfigurationError(
                f"table {name!r}: hopping step {step_ms} ms must not exceed the window size "
                f"{size_ms} ms (a larger step leaves times no window covers)"
            )
        if kind == "hopping" and size_ms % step_ms:
            raise ConfigurationError(
                f"table {name!r}: hopping window size {size_ms} ms must be a whole number of "
                f"steps ({step_ms} ms): windows are stored as one slice per step; pick a "
                f"step that divides the size (for example {_divisor_near(size_ms, step_ms)} ms)"
            )
        for option, fn in (("event_time", event_time), ("on_late", on_late), ("merge", merge)):
            if fn is not None and not callable(fn):
                raise ConfigurationError(f"table {name!r}: {option} must be callable, got {fn!r}")
        if final_topic is not None and (
            not isinstance(final_topic, str)
            or not final_topic
            or not all(c.isalnum() or c in "._-" for c in final_topic)
        ):
            raise ConfigurationError(
                f"table {name!r}: final_topic must be a topic name (letters, digits, '.', '_', "
                f"'-'), got {final_topic!r}"
            )
        self.spec = WindowSpec(
            kind,
            size_ms,
            step_ms,
            duration(name, "grace", grace, positive=False),
            duration(name, "retention", retention, positive=False),
            (merge or operator.add) if kind in ("sliding", "session", "hopping") else None,
        )
        self.event_time = event_time
        self.on_late = on_late
        #: Topic each closed window's final value is sent to (None: not sent).
        self.final_topic = final_topic
        self._late_total = 0
        self._late_lock = threading.Lock()

    # -- what the manager and the worker use ----------------------------------------

    def make_shard(self, partition: int, store: Store, changelog: TopicPartition) -> TableShard:
        """Return the shard of ``partition``, its windowed state attached (the manager calls it).

        Values are stored with the table's codec behind a tag byte, which
        tells them apart from statestream's own index and metadata values.
        """
        shard = TableShard(
            self.name,
            partition,
            store,
            self.key_codec,
            TaggedCodec(self.value_codec),
            changelog,
            cache_size=self.cache_size,
        )
        windowed = WindowedShard(
            self.name,
            self.spec,
            shard,
            default=self.default,
            event_time=self.event_time,
            on_late=self.on_late,
            count_late=self._count_late,
        )
        shard.windowed = windowed
        return shard

    def derive(self) -> Derive:
        """Rebuild the time index from restored window records (it is not changelogged)."""
        return derive_index(self.spec)

    def changelog_retention_ms(self) -> int:
        """``retention.ms`` of the changelog: a window's whole life, and a day more."""
        spec = self.spec
        return spec.longest + spec.grace + spec.retention + CHANGELOG_MARGIN

    def _count_late(self, n: int) -> None:
        with self._late_lock:
            self._late_total += n

    def late_count(self) -> int:
        """Late writes dropped on every partition of this worker (any thread)."""
        with self._late_lock:
            return self._late_total

    def windowed_shard(self) -> WindowedShard:
        """The windowed state of the partition bound on this thread."""
        windowed = self.shard().windowed
        if windowed is None:
            raise TableError(f"table {self.name!r}: its shard was opened without windows")
        return windowed

    def view(self, shard: TableShard) -> Table[Any, Any]:
        view: _WindowedView = object.__new__(_WindowedView)
        view.__dict__.update(self.__dict__)
        view._shard = shard
        view._table = self
        windowed = shard.windowed
        assert windowed is not None  # (make_shard attached it)
        view._windowed = windowed
        view._sets = {}
        return view

    # -- the mapping API ---------------------------------------------------------------

    def __getitem__(self, key: Any) -> WindowSet:
        # The binding is read directly (as Table does): `table[key] += x`
        # runs this and __setitem__ for every write.
        try:  # (an attribute read, not a getattr(..., None) call)
            windowed = self._local.shard.windowed
        except AttributeError:
            windowed = None  # no partition bound on this thread: windowed_shard() raises
        # WindowSet(shard, key) without a Python __init__ frame (see _WindowedView).
        found: WindowSet = _new_object(WindowSet)
        found.shard = self.windowed_shard() if windowed is None else windowed
        found.key = key
        return found

    def __setitem__(self, key: Any, value: Any) -> None:
        if type(value) is WindowSet and value.key == key:
            try:  # (no getattr(..., None) call: this runs after every `table[key] += x`)
                if value.shard is self._local.shard.windowed:
                    return  # `table[key] += x` already updated the windows in place
            except AttributeError:
                pass  # no partition bound on this thread: the checks below raise
        if isinstance(value, WindowSet):
            if value.key != key or value.shard is not self.windowed_shard():
                raise TableError(
                    f"windowed table {self.name!r}: the windows of one key cannot be "
                    "assigned to another key or table"
                )
            return  # `table[key] += x` already updated the windows in place
        self.windowed_shard().assign(key, value)

    def __delitem__(self, key: Any) -> None:
        if not self.windowed_shard().delete_key(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return bool(self.windowed_shard().windows(key))

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``'s current window (see WindowSet.current), or ``default``."""
        found = self[key].current()
        return default if found is None else found.value

    def __iter__(self) -> Iterator[Any]:
        return self.windowed_shard().keys()

    def __len__(self) -> int:
        return sum(1 for _ in iter(self))

    def items(self) -> Iterator[tuple[Any, WindowedValue]]:  # type: ignore[override]
        """Yield ``(key, WindowedValue)`` for every window of the partition (a scan)."""
        return self.windowed_shard().items()

    def values(self) -> Iterator[WindowedValue]:  # type: ignore[override]
        """Yield every window of the partition (a scan)."""
        return (window for _, window in self.windowed_shard().items())

    def range(self, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        raise TableError(
            f"windowed table {self.name!r} is read per key: table[key].range(t1, t2) "
            "gives the key's windows between two times"
        )

    def prefix(self, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        raise TableError(
            f"windowed table {self.name!r} is read per key: iterate the table for its keys"
        )

    def stream_time(self) -> int | None:
        """The bound partition's stream time: the highest event time written (None: none)."""
        return self.windowed_shard().stream_time()

    def __repr__(self) -> str:
        return f"<WindowedTable {self.name!r} {self.spec.kind}>"


class _WindowedView(_TableView[Any, Any], WindowedTable):
    """A :class:`WindowedTable` fixed to one shard (see :meth:`Table.view`)."""

    #: The shard's windowed state (its ``windowed``, kept here: one lookup less per write).
    _windowed: WindowedShard
    #: The WindowSet of each str key asked for (up to _MAX_SETS): one lookup
    #: instead of making one, and freeing it, per `table[key] += x`. A
    #: WindowSet holds only its shard and key, so it never goes stale.
    _sets: dict[str, WindowSet]

    def __getitem__(self, key: Any) -> WindowSet:
        if type(key) is str:
            found = self._sets.get(key)
            if found is not None:
                return found
        # WindowSet(windowed, key) without running a Python __init__.
        found = _new_object(WindowSet)
        found.shard = self._windowed
        found.key = key
        if type(key) is str:
            sets = self._sets
            if len(sets) >= _MAX_SETS:
                sets.clear()
            sets[key] = found
        return found

    def __setitem__(self, key: Any, value: Any) -> None:
        if type(value) is WindowSet and value.shard is self._windowed and value.key == key:
            return  # `table[key] += x` already updated the windows in place
        WindowedTable.__setitem__(self, key, value)


class WindowSet:
    """The windows of one key (what ``table[key]`` returns): read them, or update them.

    Updates (``+=``, ``-=``, :meth:`update`) go to every open window holding
    the current record's event time. Reads return :class:`WindowedValue`
    (``start``, ``end``, ``value``) and see uncommitted writes.
    """

    __slots__ = ("key", "shard")

    def __init__(self, shard: WindowedShard, key: Any) -> None:
        self.shard = shard
        self.key = key

    def update(self, fn: Callable[[Any], Any]) -> WindowSet:
        """Set each window's value to ``fn(value)`` (a new window starts at ``default()``)."""
        self.shard.update(self.key, fn)
        return self

    def __iadd__(self, amount: Any) -> WindowSet:
        # The per-record fast path of WindowWrites.add, here rather than there:
        # `table[key] += x` runs this for every word of a record, and a call
        # is a good part of its cost. add (a record's first +=, which checks
        # its time and sets _fast_ok when the conditions hold) hands back the
        # entry to add to when the key is in the fast path, so that case
        # updates it here too.
        shard = self.shard
        key = self.key
        if shard._fast_ok:
            entry = shard._fast.get(key)
            if entry is None and type(key) is int:  # (not 1.0 or True: see _fast_ints)
                entry = shard._fast_ints.get(key)
            if entry is None or entry.state is _DELETED:
                # The record's time was checked (see add): only the key's store
                # key is new to the fast path (mostly: its first write in this window).
                shard._add_in_fast(key, amount)
                return self
        else:
            entry = shard.add(key, amount)
            if entry is None:
                return self  # add did the write
        # TableShard._update(entry, entry.obj + amount, SET), inline (most
        # windowed writes run this): a change there is one here.
        buffer = shard.shard
        value = entry.obj + amount
        if buffer._json and type(value) in ALWAYS_JSON:
            encoded = None  # (encoded at the commit)
        else:
            encoded = buffer.value_codec.encode(value)
        kb = entry.kb
        undo = buffer._undo
        if kb not in undo:
            undo[kb] = (entry.obj, entry.encoded, entry.state, entry.source)
        entry.obj = value
        entry.encoded = encoded
        entry.state = _SET
        entry.source = buffer.source
        buffer._touched.add(kb)
        return self

    def __isub__(self, amount: Any) -> WindowSet:
        self.shard.update(self.key, lambda value: value - amount)
        return self

    def current(self) -> WindowedValue | None:
        """The window of the current record's time (tumbling: the one holding it;
        hopping: the newest holding it; sliding: the one ending with it; session:
        the session holding it), or None if it has no value."""
        return self.shard.at(self.key, self.shard.now())

    def at(self, t: int) -> WindowedValue | None:
        """Like :meth:`current`, for event time ``t`` (milliseconds)."""
        return self.shard.at(self.key, t)

    def windows_at(self, t: int) -> list[WindowedValue]:
        """Every window holding time ``t``, by start."""
        return self.shard.windows_at(self.key, t)

    def range(self, t1: int, t2: int) -> list[WindowedValue]:
        """Windows overlapping ``[t1, t2)`` (``start < t2`` and ``end > t1``), by start."""
        return self.shard.overlapping(self.key, t1, t2)

    def latest(self) -> WindowedValue | None:
        """The window with the latest start, or None."""
        found = self.shard.windows(self.key, reverse=True, limit=1)
        return found[0] if found else None

    def all(self) -> list[WindowedValue]:
        """Every window of the key, by start."""
        return self.shard.windows(self.key)

    def __repr__(self) -> str:
        return f"<windows of {self.key!r} in {self.shard.name!r}>"
