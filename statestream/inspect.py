"""Describe an app's tables and global tables from outside a worker: topics, stores, local state.

Used by ``statestream tables``. Opens the log and each local store briefly;
a store (or embedded log) held by a running worker is reported as such, and
a running worker's own report (its status file) is shown instead. URLs are
shown with their secrets as ``***``. Thread ownership: the calling thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from statestream.app import App
from statestream.errors import LogLockedError, StateStreamError, StoreLockedError
from statestream.log import open_transport
from statestream.secrets import redact_text, redact_url, url_secrets
from statestream.stores.registry import StoreRegistry, open_store, parse_store_url
from statestream.tables.local import read_global_status, read_status, status_path
from statestream.tables.recovery import stored_global_offset
from statestream.tables.windowed import WindowedTable
from statestream.types import TopicPartition

__all__ = ["describe_global_tables", "describe_tables"]


#: Columns of a table's partitions, each padded to its width.
_COLUMNS = (
    ("partition", 9),
    ("state", 11),
    ("local offset", 12),
    ("changelog end", 13),
    ("lag", 0),
)


class _Row(NamedTuple):
    """One table partition as ``statestream tables`` shows it (``None``: not known)."""

    state: str
    offset: int | None
    end: int | None
    lag: int | None
    note: str = ""


def _line(partition: object, state: object, offset: object, end: object, lag: object) -> str:
    cells = [partition, state, offset, end, lag]
    shown = ("-" if cell is None else str(cell) for cell in cells)
    return (
        "  "
        + "  ".join(
            f"{text:<{width}}" for text, (_, width) in zip(shown, _COLUMNS, strict=True)
        ).rstrip()
    )


def _header() -> str:
    return _line(*(name for name, _ in _COLUMNS))


def describe_tables(app: App) -> Iterator[str]:
    """Yield human-readable lines about every table of ``app``.

    Per table partition: its state here, the local store's offset, the
    changelog end (next offset) and the lag (offsets the local copy is
    behind that end); states are those a running worker with this data
    directory reports (``active``, ``restoring``, ``standby``, ``warm-up``),
    else what the local store shows (``idle``: a copy no process has open;
    ``empty``; ``held``: open in a process that reports nothing here;
    ``in-memory``; ``unavailable``, with the reason on the next line).
    """
    config = app.config
    yield (
        f"app {config.app_id!r}: broker {redact_url(config.broker_url)}, "
        f"store {redact_url(config.store_url)}"
    )
    running = read_status(status_path(config.data_dir, config.app_id))
    if running is not None:
        yield "  (a worker runs with this data directory: states, offsets and lags as it reports)"
    try:
        transport = open_transport(config.broker_url)
    except LogLockedError:
        yield from _without_log(app, running)
        return
    try:
        admin = transport.admin()
        fetcher = transport.fetcher()
        for table in app.tables():
            topic = f"{config.app_id}-{table.name}-changelog"
            described = admin.describe_topic(topic)
            store_url = table.store_url or config.store_url
            shown = redact_url(store_url)
            if described is None:
                yield f"table {table.name}: changelog {topic} (not created yet), store {shown}"
                continue
            yield (
                f"table {table.name}: changelog {topic} ({described.partitions} partitions, "
                f"{described.cleanup_policy}), store {shown}"
            )
            if isinstance(table, WindowedTable):
                yield f"  {_windows(table)}"
            yield _header()
            for p in range(described.partitions):
                low, high = fetcher.watermarks(TopicPartition(topic, p))
                reported = (running or {}).get(p)
                if reported is not None and table.name in reported.get("tables", {}):
                    row = _reported(reported["role"], reported["tables"][table.name], high)
                else:
                    row = _local(store_url, table.name, p, low, high)
                yield _line(p, row.state, row.offset, row.end, row.lag)
                if row.note:
                    yield f"    {row.note}"
        fetcher.close()
        admin.close()
    finally:
        transport.close()


def _without_log(app: App, running: dict[int, dict[str, Any]] | None) -> Iterator[str]:
    """The tables while a running worker holds the embedded log: its report only."""
    config = app.config
    if running is None:
        yield "  (the embedded log is held by a running worker: stop it to inspect partitions)"
    else:
        yield "  (the embedded log is held by the worker: changelog ends are not shown)"
    for table in app.tables():
        yield f"table {table.name}: changelog {config.app_id}-{table.name}-changelog"
        rows = {
            p: entry["tables"][table.name]
            for p, entry in sorted((running or {}).items())
            if table.name in entry.get("tables", {})
        }
        if not rows:
            continue
        yield _header()
        for p, reported in rows.items():
            offset, lag = reported.get("offset"), reported.get("lag")
            yield _line(
                p,
                running[p]["role"] if running else None,
                offset if isinstance(offset, int) else None,
                None,
                lag if isinstance(lag, int) else None,
            )


def _windows(table: WindowedTable) -> str:
    """One line naming a windowed table's windows (milliseconds)."""
    spec = table.spec
    if spec.kind == "hopping":
        shape = f"hopping windows of {spec.size} ms every {spec.step} ms"
    elif spec.kind == "session":
        shape = f"sessions with a gap of {spec.size} ms"
    else:
        shape = f"{spec.kind} windows of {spec.size} ms"
    final = "" if table.final_topic is None else f", final values to {table.final_topic}"
    return f"{shape}, grace {spec.grace} ms, retention {spec.retention} ms{final}"


def _behind(offset: int | None, low: int, high: int) -> int:
    """Offsets a copy at ``offset`` (None: no state) is behind a changelog ending at ``high``."""
    return max(high - low, 0) if offset is None else max(high - 1 - offset, 0)


def _reported(role: str, table: dict[str, object], high: int) -> _Row:
    """One partition's row from a running worker's report."""
    offset = table.get("offset")
    if isinstance(offset, int):
        return _Row(role, offset, high, _behind(offset, 0, high))
    lag = table.get("lag")
    return _Row(role, None, high, lag if isinstance(lag, int) else None)


def _local(store_url: str, table: str, partition: int, low: int, high: int) -> _Row:
    registry = StoreRegistry()
    try:
        registry.check(store_url)  # bad options: unavailable, with the reason
        if not registry.store_class(parse_store_url(store_url).scheme).persistent:
            return _Row("in-memory", None, high, None, "(restored on each start)")
        # Opening would create a store that is not there.
        if not registry.exists(store_url, table, partition):
            return _Row("empty", None, high, _behind(None, low, high))
        store = registry.open(store_url, table, partition)
    except StoreLockedError:
        return _Row("held", None, high, None, "(its store is open in a running process)")
    except StateStreamError as exc:
        # A store's message may quote its URL, or the options decoded from it.
        reason = redact_text(str(exc), url_secrets(store_url))
        return _Row("unavailable", None, high, None, f"(local store unavailable: {reason})")
    try:
        offset = store.offset()
        state = "empty" if offset is None else "idle"
        return _Row(state, offset, high, _behind(offset, low, high))
    finally:
        store.close()


def describe_global_tables(app: App) -> Iterator[str]:
    """Yield lines about every global table of ``app``: topic, and this worker's copy.

    A running worker's copy is shown with role ``global`` and its lag per
    topic partition, as the worker reports it.
    """
    config = app.config
    running = read_global_status(status_path(config.data_dir, config.app_id)) or {}
    try:
        transport = open_transport(config.broker_url)
    except LogLockedError:
        transport = None  # a running worker holds the embedded log: its report only
    try:
        admin = None if transport is None else transport.admin()
        fetcher = None if transport is None else transport.fetcher()
        for table in app.global_tables():
            topic = app.global_topic(table)
            store_url = table.store_url or config.store_url
            described = None if admin is None else admin.describe_topic(topic)
            shape = "" if described is None else f" ({described.partitions} partitions)"
            yield f"global table {table.name}: topic {topic}{shape}, store {redact_url(store_url)}"
            reported = running.get(table.name)
            if reported is not None:
                for p, entry in sorted(reported.items()):
                    yield f"  partition {p}: global on this worker, {_global_entry(entry)}"
            elif transport is None:
                yield "  (the embedded log is held by another process: stop it to inspect the copy)"
            elif described is not None and fetcher is not None:
                highs = [
                    fetcher.watermarks(TopicPartition(topic, p))[1]
                    for p in range(described.partitions)
                ]
                yield from _global_local(store_url, table.name, highs)
        for client in (fetcher, admin):
            if client is not None:
                client.close()
    finally:
        if transport is not None:
            transport.close()


def _global_entry(entry: dict[str, object]) -> str:
    offset, lag = entry.get("offset"), entry.get("lag")
    where = f"local offset {offset}" if isinstance(offset, int) else "nothing applied yet"
    return f"{where}, lag {lag if isinstance(lag, int) else 'unknown'}"


def _global_local(store_url: str, name: str, highs: list[int]) -> Iterator[str]:
    try:
        store = open_store(store_url, name, 0)
    except StoreLockedError:
        yield "  local copy held by a running worker"
        return
    except StateStreamError as exc:
        yield f"  local copy unavailable: {redact_text(str(exc), url_secrets(store_url))}"
        return
    try:
        if not store.persistent:
            yield "  in-memory copy (restored on each start)"
            return
        for p, high in enumerate(highs):
            offset = stored_global_offset(store, p)
            behind = high if offset is None else max(high - 1 - offset, 0)
            yield f"  partition {p}: local copy at offset {offset}, {behind} offsets behind"
    finally:
        store.close()
