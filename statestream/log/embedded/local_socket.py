"""The local socket: other processes read and write an embedded log while one process holds it.

An embedded log belongs to the one process that opened it (a second open
raises :class:`~statestream.errors.LogLockedError`). While it is open, its
transport serves a Unix domain socket, ``statestream.sock`` in the log
directory, so that commands such as ``statestream produce`` and ``statestream
consume`` can work on the log of a running worker. The socket exists only
while a process holds the log: it is created when the transport opens (after
the directory's lock is taken) and removed when the transport closes. It is
made ``0600`` before it accepts connections, so only the log's owner (and
root) can connect; on Linux the peer's user id is checked as well.

The protocol is JSON lines over one connection: each request is one UTF-8
JSON object ending with a newline, at most :data:`MAX_REQUEST_BYTES`, and gets
one reply line. Every request carries ``"v": 1`` and an ``"op"``; keys and
values travel as base64 strings (``null``: none)::

    {"v": 1, "op": "describe", "topic": T}        -> {"ok": true, "partitions": N | null}
    {"v": 1, "op": "ensure", "topic": T, "partitions": N}
                                                   -> {"ok": true, "partitions": M, "created": B}
    {"v": 1, "op": "produce", "topic": T, "records": [[KEY, VALUE], ...]}
                                                   -> {"ok": true, "offsets": [[P, O], ...]}
    {"v": 1, "op": "watermarks", "topic": T}      -> {"ok": true, "watermarks": [[LOW, HIGH], ...]}
    {"v": 1, "op": "fetch", "topic": T, "positions": {"P": O, ...},
     "max_records": N, "wait_ms": MS}
        -> {"ok": true, "records": [[P, O, TIMESTAMP, KEY, VALUE], ...], "positions": {"P": O}}

``ensure`` creates a missing topic (cleanup policy ``delete``) and returns the
partition count of the topic as it is. ``produce`` (at most
:data:`MAX_PRODUCE_RECORDS` records) partitions keyed records with Kafka's
default partitioner, spreads keyless ones, and replies only after the records
are written to the log, with the partition and offset of each. ``fetch``
reads from the given positions (a position outside a partition's range jumps
to its low watermark), waits up to ``wait_ms`` (at most :data:`MAX_WAIT_MS`)
for records, and returns the positions to fetch from next; headers are not
carried. A refused request gets ``{"ok": false, "error": KIND, "message":
TEXT}`` with ``KIND`` one of ``bad_request``, ``topic_not_found``,
``topic_mismatch``, ``produce_failed``, ``busy`` or ``log_error``; a
request that is too large or not JSON also closes the connection.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from statestream.errors import (
    ConfigurationError,
    LogError,
    ProduceError,
    StateStreamError,
    TopicExistsError,
    TopicMismatchError,
    TopicNotFoundError,
)
from statestream.log.base import TopicSpec, Transport
from statestream.types import TopicPartition

__all__ = [
    "MAX_FETCH_RECORDS",
    "MAX_PRODUCE_RECORDS",
    "MAX_REQUEST_BYTES",
    "MAX_WAIT_MS",
    "PROTOCOL_VERSION",
    "SOCKET_NAME",
    "LocalLogServer",
    "LocalSocketError",
    "socket_address",
    "socket_path",
]

_logger = logging.getLogger(__name__)

SOCKET_NAME = "statestream.sock"
PROTOCOL_VERSION = 1
#: Largest request line (newline included) the server reads.
MAX_REQUEST_BYTES = 8 << 20
#: Largest reply line the client reads (a fetch reply carries up to
#: ``_REPLY_RECORD_BYTES`` of keys and values, base64 adds a third).
MAX_REPLY_BYTES = 64 << 20
MAX_PRODUCE_RECORDS = 10_000
MAX_FETCH_RECORDS = 5_000
MAX_WAIT_MS = 1_000
#: Connections served at once; one more is told ``busy`` and closed.
MAX_CONNECTIONS = 16
#: A fetch reply stops taking records once their keys and values reach this.
_REPLY_RECORD_BYTES = 4 << 20
#: A connection that sends nothing for this long is closed (seconds).
_IDLE_TIMEOUT = 300.0
#: Longest socket path bound or connected directly (``sun_path`` holds 108 bytes).
_MAX_ADDRESS = 100


class LocalSocketError(LogError):
    """A request over an embedded log's local socket failed.

    Raised by :class:`~statestream.log.embedded.local_client.LocalLogClient`
    when no process serves the socket (the process holding the log stopped,
    or it serves none), the connection was lost, or the server refused the
    request as malformed or busy; the message says which. Check that the
    process holding the log (usually a worker) is running, and run the
    command again; with no process holding the log, commands open it directly.
    """


class _BadRequestError(StateStreamError):
    """A request the server refuses (never leaves this module)."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        #: The connection is closed after the reply (the framing may be lost).
        self.fatal = fatal


def socket_path(log_dir: str) -> str:
    """Return the path of the local socket of the embedded log in ``log_dir``."""
    return os.path.join(os.path.abspath(log_dir), SOCKET_NAME)


@contextlib.contextmanager
def socket_address(path: str) -> Iterator[str]:
    """Yield an address for ``path`` that fits ``sun_path``.

    A long path is reached through ``/proc/self/fd`` and a descriptor of its
    directory (Linux); elsewhere it raises ``OSError(ENAMETOOLONG)``.
    """
    if len(os.fsencode(path)) <= _MAX_ADDRESS:
        yield path
        return
    if not os.path.isdir("/proc/self/fd"):
        raise OSError(errno.ENAMETOOLONG, "socket path too long for this system", path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise _BadRequestError(f"{what} must be a base64 string or null, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _BadRequestError(f"{what} is not valid base64") from None


def _field_int(request: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = request.get(name)
    if type(value) is not int or not low <= value <= high:
        raise _BadRequestError(f"{name!r} must be an integer from {low} to {high}, got {value!r}")
    return value


def _field_topic(request: Mapping[str, Any]) -> str:
    topic = request.get("topic")
    if not isinstance(topic, str) or not topic:
        raise _BadRequestError(f"'topic' must be a non-empty string, got {topic!r}")
    return topic


def _partition_count(transport: Transport, topic: str) -> int:
    admin = transport.admin()
    description = admin.describe_topic(topic)
    if description is None:
        raise TopicNotFoundError(f"topic {topic!r} does not exist")
    return description.partitions


class LocalLogServer:
    """Serves an open embedded log's topics on its local socket (see the module docstring).

    Made and stopped by the transport that owns the log; requests run
    through that transport's thread-safe admin, producers and fetchers (a
    producer or fetcher per request, closed before the reply), so nothing
    here touches the log's storage directly. Threads: one accept thread and
    one per connection, all daemon threads; :meth:`stop` (any thread,
    idempotent) closes the listening socket and every connection, waits
    briefly for requests in progress and removes the socket file.
    """

    def __init__(self, transport: Transport, log_dir: str) -> None:
        """Bind the socket in ``log_dir`` and start serving; raise ``OSError`` if it cannot.

        The caller must hold the log (its directory lock): a socket file
        found there is a stale one left by a process that died, and is replaced.
        """
        self.path = socket_path(log_dir)
        self._transport = transport
        self._lock = threading.Lock()
        self._stopping = False
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._uid = os.getuid() if hasattr(os, "getuid") else None
        self._listener = self._bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve, name=f"statestream-embedded-socket:{log_dir}", daemon=True
        )
        self._thread.start()

    @classmethod
    def start(cls, transport: Transport, log_dir: str) -> LocalLogServer | None:
        """Return a running server, or ``None`` (with a warning) if the socket cannot be made.

        The log works without it; only other processes lose access while this one holds it.
        """
        try:
            return cls(transport, log_dir)
        except OSError as exc:
            _logger.warning(
                "not serving the embedded log at %s to other processes: cannot create its "
                "local socket %s (%s)",
                log_dir,
                socket_path(log_dir),
                exc,
            )
            return None

    def _bind(self) -> socket.socket:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise OSError(errno.EEXIST, "exists and is not a socket", self.path)
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with socket_address(self.path) as address:
                listener.bind(address)
                # Before listen(): until then every connection is refused.
                os.chmod(address, 0o600)
            listener.listen(MAX_CONNECTIONS)
            # A client that gave up between select() and accept() must not block the loop.
            listener.setblocking(False)
        except OSError:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        return listener

    # -- connections -----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            except (OSError, ValueError):
                return
            if self._stopping or self._wake_r in ready:
                return
            try:
                conn, _ = self._listener.accept()  # blocking, unlike the listener
            except OSError:
                continue
            self._admit(conn)

    def _peer_allowed(self, conn: socket.socket) -> bool:
        if self._uid is None or not hasattr(socket, "SO_PEERCRED"):
            return True
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return False
        uid: int = struct.unpack("3i", creds)[1]
        return uid in (self._uid, 0)

    def _admit(self, conn: socket.socket) -> None:
        if not self._peer_allowed(conn):
            conn.close()
            return
        thread = threading.Thread(
            target=self._handle, args=(conn,), name="statestream-embedded-socket-conn", daemon=True
        )
        with self._lock:
            admitted = not self._stopping and len(self._connections) < MAX_CONNECTIONS
            if admitted:
                self._connections[conn] = thread
        if admitted:
            thread.start()
            return
        with contextlib.suppress(OSError):
            conn.settimeout(1.0)
            conn.sendall(
                _reply_error("busy", f"the log serves {MAX_CONNECTIONS} connections at most")
            )
        conn.close()

    def _handle(self, conn: socket.socket) -> None:
        reader = None
        try:
            conn.settimeout(_IDLE_TIMEOUT)
            reader = conn.makefile("rb")
            while True:
                line = reader.readline(MAX_REQUEST_BYTES + 1)
                if not line.endswith(b"\n"):
                    if len(line) > MAX_REQUEST_BYTES:
                        conn.sendall(
                            _reply_error(
                                "bad_request",
                                f"request larger than {MAX_REQUEST_BYTES} bytes",
                            )
                        )
                    return  # too large, or the client went away mid-line
                reply, keep = self._answer(line)
                conn.sendall(reply)
                if not keep:
                    return
        except (OSError, ValueError):
            return  # idle timeout, reset by the client, or closed by stop()
        finally:
            if reader is not None:
                reader.close()
            conn.close()
            with self._lock:
                self._connections.pop(conn, None)

    # -- requests --------------------------------------------------------------------

    def _answer(self, line: bytes) -> tuple[bytes, bool]:
        """Return the reply line to request ``line`` and whether the connection stays open."""
        try:
            try:
                request = json.loads(line)
            except (ValueError, RecursionError):
                raise _BadRequestError("request is not a JSON object", fatal=True) from None
            if not isinstance(request, dict):
                raise _BadRequestError("request is not a JSON object", fatal=True)
            if request.get("v") != PROTOCOL_VERSION:
                raise _BadRequestError(
                    f"protocol version {request.get('v')!r} is not served (this log serves "
                    f"version {PROTOCOL_VERSION}: use the statestream version of the process "
                    "holding the log)"
                )
            op = request.get("op")
            handler = self._OPS.get(op) if isinstance(op, str) else None
            if handler is None:
                raise _BadRequestError(f"unknown op {op!r}; known: {', '.join(sorted(self._OPS))}")
            result = handler(self, request)
        except _BadRequestError as exc:
            return _reply_error("bad_request", str(exc)), not exc.fatal
        except StateStreamError as exc:
            return _reply_error(_error_kind(exc), str(exc)), True
        except Exception as exc:  # keep serving whatever one request hit
            _logger.exception("local socket request on %s failed", self.path)
            return _reply_error("log_error", f"the request failed: {exc}"), True
        result["ok"] = True
        return json.dumps(result, separators=(",", ":")).encode("utf-8") + b"\n", True

    def _describe(self, request: Mapping[str, Any]) -> dict[str, Any]:
        description = self._transport.admin().describe_topic(_field_topic(request))
        return {"partitions": None if description is None else description.partitions}

    def _ensure(self, request: Mapping[str, Any]) -> dict[str, Any]:
        topic = _field_topic(request)
        partitions = _field_int(request, "partitions", 1, 100_000)
        admin = self._transport.admin()
        created = False
        if admin.describe_topic(topic) is None:
            try:
                spec = TopicSpec(topic, partitions)
            except ConfigurationError as exc:
                raise _BadRequestError(str(exc)) from None
            with contextlib.suppress(TopicExistsError):
                admin.create_topic(spec)
                created = True
        return {"partitions": _partition_count(self._transport, topic), "created": created}

    def _produce(self, request: Mapping[str, Any]) -> dict[str, Any]:
        topic = _field_topic(request)
        items = request.get("records")
        if not isinstance(items, list) or len(items) > MAX_PRODUCE_RECORDS:
            raise _BadRequestError(
                f"'records' must be a list of at most {MAX_PRODUCE_RECORDS} records"
            )
        records: list[tuple[bytes | None, bytes | None]] = []
        for i, item in enumerate(items):
            if not isinstance(item, list) or len(item) != 2:
                raise _BadRequestError(f"record {i} must be [key, value]")
            records.append((_unb64(item[0], f"key of record {i}"), _unb64(item[1], "value")))
        producer = self._transport.producer()
        try:
            deliveries = [producer.send(topic, key, value) for key, value in records]
            producer.flush()
            offsets = [[d.partition, d.offset] for d in deliveries]
        finally:
            producer.close()
        return {"offsets": offsets}

    def _watermarks(self, request: Mapping[str, Any]) -> dict[str, Any]:
        topic = _field_topic(request)
        count = _partition_count(self._transport, topic)
        fetcher = self._transport.fetcher()
        try:
            marks = [list(fetcher.watermarks(TopicPartition(topic, p))) for p in range(count)]
        finally:
            fetcher.close()
        return {"watermarks": marks}

    def _fetch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        topic = _field_topic(request)
        max_records = _field_int(request, "max_records", 1, MAX_FETCH_RECORDS)
        wait_ms = _field_int(request, "wait_ms", 0, MAX_WAIT_MS)
        given = request.get("positions")
        if not isinstance(given, dict) or not given:
            raise _BadRequestError("'positions' must be a non-empty object of partition: offset")
        count = _partition_count(self._transport, topic)
        positions: dict[int, int] = {}
        for key, offset in given.items():
            if not key.isdigit() or int(key) >= count:
                raise _BadRequestError(
                    f"topic {topic!r} has partitions 0 to {count - 1}, not {key!r}"
                )
            if type(offset) is not int or offset < 0:
                raise _BadRequestError(f"position of partition {key} must be an offset >= 0")
            positions[int(key)] = offset
        fetcher = self._transport.fetcher(reset="earliest")
        try:
            tps = [TopicPartition(topic, p) for p in positions]
            fetcher.assign(tps)
            for tp in tps:
                fetcher.seek(tp, positions[tp.partition])
            records = fetcher.poll(timeout=wait_ms / 1000, max_records=max_records)
            after = {tp.partition: fetcher.position(tp) for tp in tps}
        finally:
            fetcher.close()
        shown: list[list[Any]] = []
        size = 0
        for record in records:
            if shown and size >= _REPLY_RECORD_BYTES:
                # The rest is fetched again from here by the next request.
                after[record.partition] = min(after[record.partition], record.offset)
                continue
            size += len(record.key or b"") + len(record.value or b"")
            shown.append(
                [
                    record.partition,
                    record.offset,
                    record.timestamp,
                    _b64(record.key),
                    _b64(record.value),
                ]
            )
        return {"records": shown, "positions": {str(p): o for p, o in after.items()}}

    _OPS: Mapping[str, Callable[[LocalLogServer, Mapping[str, Any]], dict[str, Any]]] = {
        "describe": _describe,
        "ensure": _ensure,
        "produce": _produce,
        "watermarks": _watermarks,
        "fetch": _fetch,
    }

    # -- stopping --------------------------------------------------------------------

    def stop(self, timeout: float = 3.0) -> None:
        """Stop serving and remove the socket file (idempotent; any thread).

        Waits up to ``timeout`` seconds for requests in progress (a fetch
        waits at most :data:`MAX_WAIT_MS`), so the log can close after them.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            connections = dict(self._connections)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + timeout
        for thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))


def _error_kind(exc: StateStreamError) -> str:
    if isinstance(exc, TopicNotFoundError):
        return "topic_not_found"
    if isinstance(exc, TopicMismatchError):
        return "topic_mismatch"
    if isinstance(exc, ProduceError):
        return "produce_failed"
    return "log_error"


def _reply_error(kind: str, message: str) -> bytes:
    reply = {"ok": False, "error": kind, "message": message}
    return json.dumps(reply, separators=(",", ":")).encode("utf-8") + b"\n"
