"""The query services of the workers running in this process, by app id.

``statestream worker`` runs a copy of the user's app (``App.with_settings``):
the module's own ``app`` object finds the running worker's service here.

Thread ownership: any thread (one lock).
"""

from __future__ import annotations

import threading

from statestream.query.service import QueryService

__all__ = ["register", "running", "unregister"]

_lock = threading.Lock()
_services: dict[str, list[QueryService]] = {}


def register(app_id: str, service: QueryService) -> None:
    """A worker of ``app_id`` started answering queries."""
    with _lock:
        _services.setdefault(app_id, []).append(service)


def unregister(app_id: str, service: QueryService) -> None:
    """That worker stopped."""
    with _lock:
        found = _services.get(app_id, [])
        if service in found:
            found.remove(service)
        if not found:
            _services.pop(app_id, None)


def running(app_id: str) -> list[QueryService]:
    """The services of the workers of ``app_id`` running in this process."""
    with _lock:
        return list(_services.get(app_id, []))
