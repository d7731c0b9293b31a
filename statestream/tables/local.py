"""``LocalOffsets``: which table partitions this process holds a local copy of, and how far.

The assignor reports these offsets to the group leader at every rebalance
(so partitions go to the member closest to the changelog end), and
``statestream tables`` shows them. The owners of the stores write them: the
partition threads (after a restore and at every commit, step 4 of the
commit protocol) and the standby thread (after every batch it applies).

Running workers also write a small status file (:func:`write_status`) into
their data directory (rewritten every two seconds; ignored once stale or once
its writer's process is gone), which ``statestream tables`` reads to show each
partition's role (active, restoring, standby, warm-up), offset and lag while
the stores are locked by the worker, and each global table's copy (role
``global``) per topic partition.

Thread ownership: any thread; every method takes the index's lock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from statestream.types import TopicPartition

__all__ = [
    "STATUS_STALE_AFTER",
    "LocalOffsets",
    "read_endpoint",
    "read_global_status",
    "read_status",
    "status_path",
    "write_status",
]


class LocalOffsets:
    """A thread-safe map of changelog partition to the local store's offset.

    The offset is the store's: the last changelog offset applied to it
    (``None``: a store with no state yet, which counts as no copy).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offsets: dict[TopicPartition, int] = {}

    def set(self, changelog: TopicPartition, offset: int | None) -> None:
        """Record the local store's offset of ``changelog`` (None forgets it)."""
        with self._lock:
            if offset is None:
                self._offsets.pop(changelog, None)
            else:
                self._offsets[changelog] = offset

    def forget(self, changelog: TopicPartition) -> None:
        """The local copy of ``changelog`` is gone (deleted, or it lived in memory)."""
        with self._lock:
            self._offsets.pop(changelog, None)

    def snapshot(self) -> Mapping[TopicPartition, int]:
        """Return a copy of every known offset."""
        with self._lock:
            return dict(self._offsets)

    def get(self, changelog: TopicPartition) -> int | None:
        """Return the local store's offset of ``changelog``, if there is a copy."""
        with self._lock:
            return self._offsets.get(changelog)


#: Seconds after which a status file no longer describes a running worker.
STATUS_STALE_AFTER = 30.0


def status_path(data_dir: str, app_id: str) -> str:
    """Where a worker of ``app_id`` with data directory ``data_dir`` writes its status."""
    return os.path.join(data_dir, f"{app_id}.worker-status.json")


def write_status(
    path: str,
    partitions: Mapping[int, Mapping[str, Any]],
    global_tables: Mapping[str, Mapping[str, Any]] | None = None,
    endpoint: str | None = None,
) -> None:
    """Atomically write a worker's view of its partitions (see :func:`read_status`).

    ``partitions`` maps partition number to ``{"role": ..., "tables": {name:
    {"offset": int | None, "lag": int | None}}}``; roles are ``active``,
    ``restoring``, ``standby`` and ``warm-up``. ``global_tables`` maps each
    global table's name to ``{"topic": ..., "partitions": {"<n>": {"offset":
    ..., "lag": ...}}}`` (see :func:`read_global_status`).
    """
    document = {
        "pid": os.getpid(),
        "written": time.time(),
        "partitions": {str(p): dict(v) for p, v in sorted(partitions.items())},
        "globals": {name: dict(v) for name, v in sorted((global_tables or {}).items())},
        # The worker's HTTP endpoint (statestream inspect asks it for held stores).
        "endpoint": endpoint,
    }
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(document, fh)
    os.replace(tmp, path)


def read_endpoint(path: str) -> str | None:
    """The HTTP endpoint of the running worker whose status file is ``path``, or None."""
    document = _read_fresh(path)
    endpoint = None if document is None else document.get("endpoint")
    return endpoint if isinstance(endpoint, str) else None


def read_status(path: str) -> dict[int, dict[str, Any]] | None:
    """Return the partitions of a running worker's status file, or None.

    None when there is no file, it is unreadable, or it was last written more
    than :data:`STATUS_STALE_AFTER` seconds ago (the worker stopped).
    """
    document = _read_fresh(path)
    if document is None:
        return None
    try:
        return {int(p): dict(v) for p, v in document["partitions"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_global_status(path: str) -> dict[str, dict[int, dict[str, Any]]] | None:
    """Return ``{global table: {topic partition: {"offset", "lag"}}}`` of a running worker.

    None as for :func:`read_status`; ``{}`` from a worker without global tables.
    """
    document = _read_fresh(path)
    if document is None:
        return None
    try:
        return {
            name: {int(p): dict(v) for p, v in table["partitions"].items()}
            for name, table in document.get("globals", {}).items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _read_fresh(path: str) -> dict[str, Any] | None:
    """The status document at ``path``, unless missing, unreadable, stale, or
    written by a process that is gone (the file is in a local data directory,
    so its writer ran on this machine)."""
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
        if time.time() - float(document["written"]) > STATUS_STALE_AFTER:
            return None
        if not _alive(int(document["pid"])):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return document if isinstance(document, dict) else None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, run by another user
    return True
