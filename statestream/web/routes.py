"""What each path of the HTTP endpoint answers.

``GET /tables``, ``GET /tables/{name}/keys/{key}``,
``GET /tables/{name}?prefix=&start=&end=&limit=&partition=&standby=``,
``GET /health`` and ``GET /metrics`` (docs/queries.md has the shapes). Keys
in paths and parameters are strings; ``?json=1`` reads them as JSON instead
(for int or list keys of a json key codec). A key whose partition another
worker holds is answered with a redirect (307) to that worker's endpoint, or
fetched from it and relayed with ``?proxy=1``; the owner is known from the
group's assignment. Nothing here returns settings (no URL, no token).

Thread ownership: any thread (the server's request threads); the query
service and the health function are thread-safe.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from statestream.errors import (
    KeyNotLocalError,
    PartitionNotReadyError,
    QueryError,
    SerializationError,
    StoreError,
    UnknownTableError,
)
from statestream.query import QueryService
from statestream.tables.window_layout import WindowedValue

__all__ = ["Reply", "Routes"]

#: Seconds a proxied request waits for the owning worker.
PROXY_TIMEOUT = 10.0


@dataclass
class Reply:
    """An HTTP answer: status, body, content type, extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(document, default=_jsonable, separators=(",", ":")).encode()
    return Reply(status, body, headers=headers or {})


def _jsonable(value: Any) -> Any:
    """JSON for what codecs decode to beyond JSON's own types."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def _windows(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], WindowedValue):
        return [{"start": w.start, "end": w.end, "value": w.value} for w in value]
    return value


def _error(status: int, kind: str, message: str, **extra: Any) -> Reply:
    return _json(status, {"error": kind, "message": message, **extra})


class Routes:
    """The endpoint's paths (see the module docstring)."""

    def __init__(
        self,
        queries: QueryService,
        health: Callable[[], tuple[bool, Mapping[str, Any]]],
        metrics: Callable[[], bytes] | None = None,
        *,
        token: str | None = None,
    ) -> None:
        self.queries = queries
        self.health = health
        self.metrics = metrics
        # A proxied request carries this worker's token on (the workers of one
        # app share it).
        self._proxy_headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    def get(self, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> Reply:
        """Answer ``GET path?query``."""
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        try:
            if parts == ["health"]:
                ready, details = self.health()
                return _json(200 if ready else 503, dict(details))
            if parts == ["metrics"]:
                if self.metrics is None:
                    return _error(404, "not_found", "this worker keeps no metrics")
                return Reply(200, self.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            if parts == ["tables"]:
                return _json(200, {"tables": self.queries.table_names()})
            if len(parts) == 2 and parts[0] == "tables":
                return self._range(parts[1], query)
            if len(parts) == 4 and parts[0] == "tables" and parts[2] == "keys":
                return self._key(parts[1], parts[3], query, headers)
        except UnknownTableError as exc:
            return _error(404, "unknown_table", str(exc))
        except PartitionNotReadyError as exc:
            return _error(503, "not_ready", str(exc), partition=exc.partition)
        except (QueryError, SerializationError, ValueError) as exc:
            return _error(400, "bad_request", str(exc))
        except StoreError as exc:
            return _error(500, "store_error", str(exc))
        return _error(404, "not_found", f"no such path {path!r}; see GET /tables")

    # -- paths -------------------------------------------------------------------------

    def _key(
        self, table: str, raw_key: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Reply:
        key = _key(raw_key, query)
        standby = _flag(query, "standby")
        try:
            answer = self.queries.get(table, key, standby=standby)
        except KeyNotLocalError as exc:
            return self._elsewhere(exc, f"/tables/{_quote(table)}/keys/{_quote(raw_key)}", query)
        document = answer.document()
        document["value"] = _windows(document["value"])
        return _json(200 if answer.found else 404, document)

    def _range(self, table: str, query: Mapping[str, str]) -> Reply:
        limit = int(query.get("limit", "100"))
        partition = query.get("partition")
        page = self.queries.range(
            table,
            prefix=_opt_key("prefix", query),
            start=_opt_key("start", query),
            end=_opt_key("end", query),
            limit=limit,
            partition=None if partition is None else int(partition),
            standby=_flag(query, "standby"),
        )
        document = page.document()
        if page.missing:
            owners = {p: self.queries.source.owner(p) for p in page.missing}
            document["owners"] = {str(p): o for p, o in owners.items() if o}
        return _json(200, document)

    def _elsewhere(self, exc: KeyNotLocalError, path: str, query: Mapping[str, str]) -> Reply:
        owner = exc.owner
        if owner is None:
            return _error(421, "not_here", str(exc), partition=exc.partition)
        forwarded = {k: v for k, v in query.items() if k != "proxy"}
        target = owner + path + ("?" + urllib.parse.urlencode(forwarded) if forwarded else "")
        if not _flag(query, "proxy"):
            return _json(
                307,
                {"error": "elsewhere", "location": target, "partition": exc.partition},
                {"Location": target},
            )
        return _relay(target, self._proxy_headers)


def _relay(target: str, headers: Mapping[str, str]) -> Reply:
    request = urllib.request.Request(target, headers=dict(headers))  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=PROXY_TIMEOUT) as response:  # noqa: S310
            return Reply(response.status, response.read(), response.headers.get_content_type())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), exc.headers.get_content_type())
    except (urllib.error.URLError, OSError) as exc:
        return _error(502, "owner_unreachable", f"the owning worker did not answer: {exc}")


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("1", "true", "yes")


def _key(raw: str, query: Mapping[str, str]) -> Any:
    if not _flag(query, "json"):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"json=1 but the key {raw!r} is not JSON: {exc}") from exc


def _opt_key(name: str, query: Mapping[str, str]) -> Any:
    raw = query.get(name)
    return None if raw is None else _key(raw, query)
