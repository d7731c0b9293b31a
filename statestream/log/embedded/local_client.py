"""``LocalLogClient``: reach an embedded log that another process holds.

It speaks the protocol of :mod:`statestream.log.embedded.local_socket` to the
process holding the log (usually a worker), for ``statestream produce`` and
``statestream consume``.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from statestream.errors import LogError, ProduceError, TopicMismatchError, TopicNotFoundError
from statestream.log.embedded.local_socket import (
    MAX_FETCH_RECORDS,
    MAX_PRODUCE_RECORDS,
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    MAX_WAIT_MS,
    PROTOCOL_VERSION,
    LocalSocketError,
    socket_address,
    socket_path,
)
from statestream.types import Record

__all__ = ["LocalLogClient"]

_T = TypeVar("_T")


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


_ERRORS: Mapping[str, type[LogError]] = {
    "topic_not_found": TopicNotFoundError,
    "topic_mismatch": TopicMismatchError,
    "produce_failed": ProduceError,
}


class LocalLogClient:
    """The few operations ``statestream produce`` and ``consume`` need, over a log's socket.

    Connects to the local socket of the embedded log in ``log_dir`` (raises
    :class:`LocalSocketError` if nothing serves it). Owned by one thread.
    Errors the server reports arrive as the error the log raised
    (:class:`~statestream.errors.TopicNotFoundError`,
    :class:`~statestream.errors.TopicMismatchError`,
    :class:`~statestream.errors.ProduceError`), anything else as
    :class:`LocalSocketError`.
    """

    def __init__(self, log_dir: str, timeout: float = 30.0) -> None:
        self.path = socket_path(log_dir)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with socket_address(self.path) as address:
                sock.connect(address)
        except OSError as exc:
            sock.close()
            raise LocalSocketError(
                f"no process serves the embedded log's local socket {self.path!r} ({exc})"
            ) from exc
        self._sock = sock
        self._reader = sock.makefile("rb")

    def _call(self, op: str, parse: Callable[[dict[str, Any]], _T], **fields: Any) -> _T:
        """Send one request and return ``parse(reply)``; raise the error the server reports."""
        request = json.dumps({"v": PROTOCOL_VERSION, "op": op, **fields}, separators=(",", ":"))
        try:
            self._sock.sendall(request.encode("utf-8") + b"\n")
            line = self._reader.readline(MAX_REPLY_BYTES + 1)
        except OSError as exc:
            raise LocalSocketError(
                f"the process holding the embedded log stopped answering on {self.path!r} "
                f"({exc}); check it is running and try again"
            ) from exc
        if not line.endswith(b"\n"):
            raise LocalSocketError(
                f"the process holding the embedded log closed {self.path!r} before replying "
                "(it may have stopped); check it is running and try again"
            )
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise LocalSocketError(f"malformed reply on {self.path!r}: {line[:80]!r}")
        if reply.get("ok") is True:
            try:
                return parse(reply)
            except (KeyError, TypeError, ValueError) as exc:
                raise LocalSocketError(f"malformed {op} reply on {self.path!r}: {exc!r}") from exc
        message = str(reply.get("message", "no message"))
        raise _ERRORS.get(str(reply.get("error")), LocalSocketError)(
            f"{message} (via the embedded log's local socket {self.path!r})"
        )

    def describe(self, topic: str) -> int | None:
        """Return the topic's partition count, or ``None`` if it does not exist."""
        return self._call(
            "describe",
            lambda r: None if r["partitions"] is None else int(r["partitions"]),
            topic=topic,
        )

    def ensure_topic(self, topic: str, partitions: int) -> int:
        """Create the topic with ``partitions`` if missing; return its partition count."""
        return self._call(
            "ensure", lambda r: int(r["partitions"]), topic=topic, partitions=partitions
        )

    def produce(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[int, int]]:
        """Write ``(key, value)`` records; return each one's ``(partition, offset)``.

        Returns once the log wrote them. Sent in requests that fit
        :data:`MAX_REQUEST_BYTES`; a record too large for one raises
        :class:`LocalSocketError` before anything else of its request is sent.
        """
        acks: list[tuple[int, int]] = []
        batch: list[list[str | None]] = []
        size = 0
        limit = MAX_REQUEST_BYTES - 4096
        for key, value in records:
            item = [_b64(key), _b64(value)]
            item_size = len(item[0] or "") + len(item[1] or "") + 16
            if item_size > limit:
                raise LocalSocketError(
                    f"a record of {len(key or b'') + len(value or b'')} bytes is larger than "
                    f"the local socket takes ({limit * 3 // 4} bytes); write it while no "
                    "process holds the log, or through Kafka"
                )
            if batch and (size + item_size > limit or len(batch) >= MAX_PRODUCE_RECORDS):
                acks += self._produce_batch(topic, batch)
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            acks += self._produce_batch(topic, batch)
        return acks

    def _produce_batch(self, topic: str, batch: list[list[str | None]]) -> list[tuple[int, int]]:
        return self._call(
            "produce",
            lambda r: [(int(p), int(o)) for p, o in r["offsets"]],
            topic=topic,
            records=batch,
        )

    def watermarks(self, topic: str) -> list[tuple[int, int]]:
        """Return ``(low, high)`` of every partition of ``topic``, by partition."""
        return self._call(
            "watermarks", lambda r: [(int(lo), int(hi)) for lo, hi in r["watermarks"]], topic=topic
        )

    def fetch(
        self, topic: str, positions: Mapping[int, int], wait: float, max_records: int = 500
    ) -> tuple[list[Record], dict[int, int]]:
        """Return records from ``positions`` (waiting up to ``wait`` s) and the next positions."""

        def parse(reply: dict[str, Any]) -> tuple[list[Record], dict[int, int]]:
            records = [
                Record(topic, int(p), int(o), _decode(k), _decode(v), int(ts))
                for p, o, ts, k, v in reply["records"]
            ]
            return records, {int(p): int(o) for p, o in reply["positions"].items()}

        return self._call(
            "fetch",
            parse,
            topic=topic,
            positions={str(p): o for p, o in positions.items()},
            max_records=min(max_records, MAX_FETCH_RECORDS),
            wait_ms=max(0, min(int(wait * 1000), MAX_WAIT_MS)),
        )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._reader.close()
        self._sock.close()

    def __repr__(self) -> str:
        return f"LocalLogClient({self.path!r})"


def _decode(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)
