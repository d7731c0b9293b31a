"""Driving windowed tables without a worker: a manager over one partition, fed messages.

What a worker's partition thread does, per the spec: the manager's event
source returns the message being processed, ``begin_record`` names its
source, and after each record ``take_closed()`` hands over the windows its
writes closed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from statestream.context import Message
from statestream.log import Transport
from statestream.stores.base import Store
from statestream.tables import Table, TableManager

SOURCE = "stream"
#: Keys of the generated tests: "a" is a prefix of "ab".
KEYS = ["a", "b", "ab"]
_ids = itertools.count()


def unique_app_id(label: str = "w") -> str:
    """An app id (so changelog topics) no other manager of this process uses."""
    return f"{label}{next(_ids)}"


class Feeder:
    """Feeds records to one partition of ``manager`` as a worker would."""

    def __init__(self, manager: TableManager, partition: int = 0) -> None:
        self.manager = manager
        self.partition = partition
        self.message: Message | None = None
        self.offset = 0
        manager.set_event_source(partition, lambda: self.message)

    def begin(self, key: Any, t: int, value: Any = None, offset: int | None = None) -> Message:
        """Start processing a record of ``key`` at event time ``t`` (the record's timestamp)."""
        if offset is None:
            offset = self.offset
        self.offset = offset + 1
        self.message = Message(SOURCE, self.partition, offset, key, value, t)
        self.manager.begin_record(self.partition, SOURCE, offset)
        return self.message

    def take_closed(self, table: str) -> list[tuple[Any, Any, Any]]:
        """The windows of ``table`` closed since the last call: ``(ClosedWindow, key, value)``."""
        shard = self.manager.windowed(table, self.partition)
        return list(shard.take_closed())

    def late(self, table: str) -> int:
        return int(self.manager.windowed(table, self.partition).late)


def open_manager(
    transport: Transport,
    tables: Sequence[Table[Any, Any]],
    *,
    store_url: str = "memory://",
    stores: Mapping[str, Store] | None = None,
    app_id: str | None = None,
    committed: int | None = None,
) -> TableManager:
    """A manager with partition 0 of ``tables`` open, restored, bound to this thread."""
    manager = TableManager(app_id or unique_app_id(), list(tables), transport, store_url)
    manager.ensure_changelogs(1)
    manager.open_partition(0, stores)
    manager.restore_partition(0, {SOURCE: committed})
    manager.bind(0)
    return manager


def windows(table: Table[Any, Any], key: Any) -> list[tuple[int, int, Any]]:
    """Every stored window of ``key`` as plain ``(start, end, value)`` tuples, by start."""
    return [tuple(w) for w in table[key].all()]


def as_tuple(value: Any) -> tuple[int, int, Any] | None:
    return None if value is None else tuple(value)


def all_items(table: Table[Any, Any]) -> Iterator[tuple[Any, tuple[int, int, Any]]]:
    for key, window in table.items():
        yield key, tuple(window)


# -- one operation on table and model alike ------------------------------------------

OPS = ("add", "sub", "update", "set", "del")


def table_op(table: Table[Any, Any], op: str, key: Any, amount: int) -> None:
    """Do ``op`` on the bound windowed ``table`` (at the current record's time)."""
    if op == "add":
        table[key] += amount
    elif op == "sub":
        table[key] -= amount
    elif op == "update":
        # Not commutative with +: the order updates are applied in shows.
        table[key].update(lambda v: v * 2 + amount)
    elif op == "set":
        table[key] = amount
    elif op == "del":
        del table[key]
    else:
        raise ValueError(op)


def model_op(model: Any, op: str, key: Any, t: int, amount: int) -> Any:
    """Do ``op`` on the reference model; return its
    :class:`~tests.tables.window_model.WriteOutcome` (``None`` for a delete)."""
    if op == "add":
        return model.write(key, t, lambda v: v + amount)
    if op == "sub":
        return model.write(key, t, lambda v: v - amount)
    if op == "update":
        return model.write(key, t, lambda v: v * 2 + amount)
    if op == "set":
        return model.assign(key, t, amount)
    if op == "del":
        model.delete(key)
        return None
    raise ValueError(op)


def apply_op(table: Table[Any, Any], model: Any, op: str, key: Any, t: int, amount: int) -> Any:
    """Do ``op`` on the table and on the model alike; return the model's outcome."""
    table_op(table, op, key, amount)
    return model_op(model, op, key, t, amount)


def check_closed(name: str, model: Any, reports: list[tuple[Any, Any, Any]], expected: Any) -> None:
    """``take_closed()`` returned exactly the model's closings, in due order."""
    got = [(cw.table, key, cw.start, cw.end, value) for cw, key, value in reports]
    want = [(name, c.key, c.start, c.end, c.value) for c in expected]
    assert sorted(got, key=repr) == sorted(want, key=repr), f"closed {got} != model {want}"
    dues = [model.due((start, end)) for _, _, start, end, _ in got]
    assert dues == sorted(dues), f"closed windows not in due order: {got}"


def check_state(table: Table[Any, Any], model: Any, keys: Sequence[Any]) -> None:
    """Every window of ``keys`` (and the key set, items, stream time) equals the model's."""
    for key in keys:
        assert windows(table, key) == model.all(key), f"windows of {key!r}"
    assert sorted(table.keys(), key=repr) == sorted(model.live_keys(), key=repr)
    assert sorted(all_items(table), key=repr) == sorted(model.items(), key=repr)
    assert table.stream_time() == model.stream_time  # type: ignore[attr-defined]


def build(
    kind: str,
    name: str,
    params: Mapping[str, int],
    default: Any = int,
    cache_size: int = 50_000,
    **options: Any,
) -> tuple[Table[Any, Any], Any]:
    """A windowed table of ``kind`` and its reference model, from the same parameters."""
    from tests.tables.window_model import WindowModel

    base: Table[Any, Any] = Table(name, default=default, cache_size=cache_size)
    common: dict[str, Any] = {
        "grace": params.get("grace", 0),
        "retention": params.get("retention", 86_400_000),
    }
    common.update(options)
    if kind == "tumbling":
        table = base.tumbling(params["size"], **common)
    elif kind == "hopping":
        table = base.hopping(size=params["size"], step=params["step"], **common)
    elif kind == "sliding":
        table = base.sliding(params["size"], **common)
    else:
        table = base.session(gap=params["gap"], **common)
    model = WindowModel(
        kind,
        size=params.get("size", 0),
        step=params.get("step", 0),
        gap=params.get("gap", 0),
        grace=common["grace"],
        retention=common["retention"],
        default=default,
    )
    return table, model


# -- strategies of the sequence tests and state machines --------------------------


@st.composite
def params_for(draw: st.DrawFn, kind: str) -> dict[str, int]:
    params = {
        "grace": draw(st.sampled_from([0, 0, 3, 12])),
        "retention": draw(st.sampled_from([0, 4, 25, 400])),
    }
    if kind == "session":
        params["gap"] = draw(st.integers(1, 15))
    else:
        params["size"] = draw(st.integers(1, 20))
        if kind == "hopping":
            params["step"] = step = draw(st.integers(1, 6))
            params["size"] = step * draw(st.integers(1, 5))
    return params


def ops_for(kind: str) -> st.SearchStrategy[tuple[str, str, int, int]]:
    names = ["add", "add", "update", "sub", "del"] + (
        [] if kind in ("sliding", "hopping") else ["set"]
    )
    return st.tuples(
        st.sampled_from(names),
        st.sampled_from(KEYS),
        # Relative to stream time: mostly ahead, else out of order or late.
        st.integers(0, 20) | st.integers(0, 20) | st.integers(-50, -1),
        st.integers(-3, 9),
    )
