"""Describe an app's tables and global tables from outside a worker: topics, stores, local state.

Used by ``statestream tables``. Opens the log and each local store briefly;
a store (or embedded log) held by a running worker is reported as such. URLs
are shown with their secrets as ``***``.
"""

from __future__ import annotations

from collections.abc import Iterator

from statestream.app import App
from statestream.errors import LogLockedError, StateStreamError, StoreLockedError
from statestream.log import open_transport
from statestream.secrets import redact_text, redact_url, url_secrets
from statestream.stores.registry import open_store
from statestream.tables.local import read_global_status, read_status, status_path
from statestream.tables.recovery import stored_global_offset
from statestream.tables.windowed import WindowedTable
from statestream.types import TopicPartition

__all__ = ["describe_global_tables", "describe_tables"]


def describe_tables(app: App) -> Iterator[str]:
    """Yield human-readable lines about every table of ``app``."""
    config = app.config
    yield (
        f"app {config.app_id!r}: broker {redact_url(config.broker_url)}, "
        f"store {redact_url(config.store_url)}"
    )
    try:
        transport = open_transport(config.broker_url)
    except LogLockedError:
        yield "  (the embedded log is held by a running worker: stop it to inspect partitions)"
        for table in app.tables():
            yield f"table {table.name}: changelog {config.app_id}-{table.name}-changelog"
        return
    running = read_status(status_path(config.data_dir, config.app_id))
    if running is not None:
        yield "  (a worker runs with this data directory: roles, offsets and lags as it reports)"
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
            for p in range(described.partitions):
                low, high = fetcher.watermarks(TopicPartition(topic, p))
                reported = (running or {}).get(p)
                if reported is not None and table.name in reported.get("tables", {}):
                    local = _reported(reported["role"], reported["tables"][table.name], high)
                else:
                    local = _local(store_url, table.name, p, high)
                yield f"  partition {p}: changelog offsets {low}..{high}, {local}"
        fetcher.close()
        admin.close()
    finally:
        transport.close()


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


def _reported(role: str, table: dict[str, object], high: int) -> str:
    """One partition's line from a running worker's report."""
    offset = table.get("offset")
    if isinstance(offset, int):
        behind = max(high - 1 - offset, 0)
        where = f"local offset {offset}, lag {behind}"
    else:
        where = "no local state yet"
    return f"{role} on this worker, {where}"


def _local(store_url: str, table: str, partition: int, high: int) -> str:
    try:
        store = open_store(store_url, table, partition)
    except StoreLockedError:
        return "local store held by a running worker (active)"
    except StateStreamError as exc:
        # A store's message may quote its URL, or the options decoded from it.
        return f"local store unavailable: {redact_text(str(exc), url_secrets(store_url))}"
    try:
        offset = store.offset()
        if not store.persistent:
            return "in-memory store (restored on each start)"
        if offset is None:
            return "no local state (a full restore on assignment)"
        behind = max(high - 1 - offset, 0)
        state = "up to date" if behind == 0 else f"{behind} offsets behind"
        return f"local store at offset {offset} ({state})"
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
