"""``statestream produce`` and ``statestream consume``: records in and out without code.

Both work on Kafka and on the embedded log. An embedded log held by a
running worker is reached through the local socket it serves
(:mod:`statestream.log.embedded.local_socket`); otherwise the command opens
the log itself. The parser entries and flags are in :mod:`statestream.cli`.

Thread ownership: the command's main thread (a signal handler only sets the
stop event of ``consume --follow``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from statestream.errors import (
    DecodeError,
    LogLockedError,
    SerializationError,
    StateStreamError,
    TopicMismatchError,
    TopicNotFoundError,
)
from statestream.log.base import TopicSpec
from statestream.serde import Codec, get_codec
from statestream.types import Record, TopicPartition

if TYPE_CHECKING:
    from statestream.log.base import Fetcher, Producer, Transport

__all__ = ["json_default", "run_consume", "run_produce", "text_field"]


class _TopicLog(Protocol):
    """What ``produce`` and ``consume`` need of a log; owned by the command's main thread.

    :class:`_TransportLog` does it through a transport this process opened;
    :class:`~statestream.log.embedded.local_client.LocalLogClient` through
    the local socket of an embedded log another process holds.
    """

    def describe(self, topic: str) -> int | None:
        """Return the topic's partition count, or ``None`` if it does not exist."""
        ...

    def ensure_topic(self, topic: str, partitions: int) -> int:
        """Create the topic if missing; return its partition count."""
        ...

    def produce(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[int, int]]:
        """Write ``(key, value)`` records; return their ``(partition, offset)`` once written."""
        ...

    def watermarks(self, topic: str) -> list[tuple[int, int]]:
        """Return ``(low, high)`` of every partition, by partition."""
        ...

    def fetch(
        self, topic: str, positions: Mapping[int, int], wait: float
    ) -> tuple[list[Record], dict[int, int]]:
        """Return records from ``positions`` (waiting up to ``wait`` s) and the next positions."""
        ...

    def close(self) -> None:
        """Release the log."""
        ...


class _TransportLog:
    """A :class:`_TopicLog` on a transport this process opened (it closes it)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        try:
            self._admin = transport.admin()
        except BaseException:
            transport.close()
            raise
        self._producer: Producer | None = None
        self._fetcher: Fetcher | None = None
        self._positions: dict[int, int] = {}

    def describe(self, topic: str) -> int | None:
        description = self._admin.describe_topic(topic)
        return None if description is None else description.partitions

    def ensure_topic(self, topic: str, partitions: int) -> int:
        return self._admin.ensure_topic(TopicSpec(topic, partitions)).partitions

    def produce(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[int, int]]:
        if self._producer is None:
            self._producer = self._transport.producer()
        deliveries = [self._producer.send(topic, key, value) for key, value in records]
        self._producer.flush()
        return [(d.partition, d.offset) for d in deliveries]

    def _reader(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = self._transport.fetcher(reset="earliest")
        return self._fetcher

    def watermarks(self, topic: str) -> list[tuple[int, int]]:
        count = self.describe(topic)
        if count is None:
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return [self._reader().watermarks(TopicPartition(topic, p)) for p in range(count)]

    def fetch(
        self, topic: str, positions: Mapping[int, int], wait: float
    ) -> tuple[list[Record], dict[int, int]]:
        fetcher = self._reader()
        tps = {p: TopicPartition(topic, p) for p in positions}
        if dict(positions) != self._positions:
            fetcher.assign(tps.values())
            for p, tp in tps.items():
                fetcher.seek(tp, positions[p])
        records = fetcher.poll(timeout=wait, max_records=500)
        self._positions = {p: fetcher.position(tp) for p, tp in tps.items()}
        return records, dict(self._positions)

    def close(self) -> None:
        self._transport.close()


def _log_url(args: argparse.Namespace) -> str:
    if args.broker_url:
        return str(args.broker_url)
    path = os.path.join(args.data_dir, "log")
    return (
        f"embedded://{path}" if os.path.isabs(path) else f"embedded://./{path.removeprefix('./')}"
    )


def _open_log(url: str) -> _TopicLog:
    """Open the log; an embedded log another process holds is reached through its socket."""
    from statestream.log import open_transport, parse_transport_url
    from statestream.log.embedded.local_client import LocalLogClient
    from statestream.log.embedded.local_socket import LocalSocketError

    attempts = 0
    while True:
        try:
            return _TransportLog(open_transport(url))
        except LogLockedError as locked:
            try:
                return LocalLogClient(parse_transport_url(url).local_path())
            except LocalSocketError as exc:
                # The holder may be starting or stopping: the log or its socket is about to free up.
                attempts += 1
                if attempts == 3:
                    raise LogLockedError(
                        f"{locked}; that process serves no local socket for other commands "
                        f"({exc}), so stop it first"
                    ) from exc
        time.sleep(0.2)


def _codecs(args: argparse.Namespace) -> tuple[Codec, Codec]:
    """Return the key and value codecs named by the flags (pickle is refused by name)."""
    value_codec = get_codec(args.codec)
    return get_codec(args.key_codec or args.codec), value_codec


class _InputError(StateStreamError):
    """A line of standard input cannot be made into a record.

    ``statestream produce`` stops at that line (the lines before it are
    written) and names it. Fix the line, or choose the input format
    (``--key-separator``, ``--json``) and codecs that match the input.
    """


def _text_input(codec: Codec, raw: bytes) -> Any:
    if codec.name == "raw":
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _InputError("it is not UTF-8 text; use --codec raw for bytes") from None


def _json_input(codec: Codec, value: Any) -> Any:
    return value.encode("utf-8") if codec.name == "raw" and isinstance(value, str) else value


def _parse_line(
    line: bytes, args: argparse.Namespace, key_codec: Codec, codec: Codec
) -> tuple[bytes | None, bytes | None]:
    if args.json:
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise _InputError(f"it is not json ({exc})") from None
        if not isinstance(item, dict) or "value" not in item or set(item) - {"key", "value"}:
            raise _InputError('it must be a json object {"key": ..., "value": ...}')
        key = item.get("key")
        return (
            None if key is None else key_codec.encode(_json_input(key_codec, key)),
            codec.encode(_json_input(codec, item["value"])),
        )
    if args.key_separator:
        key_part, found, value_part = line.partition(args.key_separator.encode("utf-8"))
        if not found:
            raise _InputError(
                f"it has no key separator {args.key_separator!r} (a line without a key needs "
                "--json, or no --key-separator)"
            )
        return (
            key_codec.encode(_text_input(key_codec, key_part)),
            codec.encode(_text_input(codec, value_part)),
        )
    return None, codec.encode(_text_input(codec, line))


def _stdin_chunks() -> Iterator[list[bytes]]:
    """Yield the lines of standard input (no line endings) in the groups they arrive in.

    A group is what one read returned (a terminal's line, a pipe's buffer),
    so lines typed by hand are written at once and piped ones in batches.
    """
    fd = sys.stdin.fileno()
    pending = bytearray()
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            if pending:
                yield [bytes(pending).removesuffix(b"\r")]
            return
        pending += data
        cut = pending.rfind(b"\n")
        if cut >= 0:
            lines = bytes(pending[:cut]).split(b"\n")
            del pending[: cut + 1]
            yield [line.removesuffix(b"\r") for line in lines]


def _prepare_topic(log: _TopicLog, args: argparse.Namespace, where: str) -> None:
    count = log.describe(args.topic)
    if count is None:
        if args.partitions is None:
            raise TopicNotFoundError(
                f"topic {args.topic!r} does not exist on {where}; pass --partitions N (or set "
                "STATESTREAM_PARTITIONS) to create it with N partitions, or create it first "
                "(a worker run with --partitions creates its source topics)"
            )
        count = log.ensure_topic(args.topic, args.partitions)
    if args.partitions is not None and count != args.partitions:
        raise TopicMismatchError(
            f"topic {args.topic!r} exists with {count} partitions, but --partitions (or "
            f"STATESTREAM_PARTITIONS) asks for {args.partitions}; pass --partitions {count}, "
            "or leave it out to write to the topic as it is"
        )


def run_produce(args: argparse.Namespace, redact: Callable[[str], str]) -> int:
    """``statestream produce``: write stdin's lines to ``args.topic``; return the exit code."""
    key_codec, codec = _codecs(args)
    url = _log_url(args)
    log = _open_log(url)
    written = 0
    number = 0
    try:
        _prepare_topic(log, args, redact(url))
        for lines in _stdin_chunks():
            batch: list[tuple[bytes | None, bytes | None]] = []
            try:
                for line in lines:
                    number += 1
                    if not (args.json and not line.strip()):
                        batch.append(_parse_line(line, args, key_codec, codec))
            finally:
                # Lines before a bad one (or an interrupt) are still written.
                if batch:
                    written += len(log.produce(args.topic, batch))
    except (_InputError, SerializationError) as exc:
        print(
            f"statestream: error: line {number} of the input: {exc}; the lines before it "
            f"were written ({written} records to {args.topic})",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"statestream: interrupted; wrote {written} records to {args.topic}", file=sys.stderr)
        return 130
    finally:
        log.close()
    print(f"wrote {written} records to {args.topic}", file=sys.stderr)
    return 0


def text_field(obj: Any) -> str:
    """One tab-separated field: strings as they are (escaped), other values as json."""
    if isinstance(obj, bytes):
        text = obj.decode("utf-8", "backslashreplace")
    elif isinstance(obj, str):
        text = obj
    else:
        return json.dumps(obj, ensure_ascii=False, default=json_default)
    return text.translate(_ESCAPES)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def json_default(obj: Any) -> Any:
    """``json.dumps`` default: bytes as text (undecodable bytes escaped), else TypeError."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    raise TypeError(f"{type(obj).__name__} is not json")


class _Printer:
    """Prints records for ``consume``; undecodable keys or values are shown as raw text."""

    def __init__(self, args: argparse.Namespace, key_codec: Codec, codec: Codec) -> None:
        self._json = bool(args.json)
        self._key_codec = key_codec
        self._codec = codec
        self._warned = False

    def _decode(self, codec: Codec, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return codec.decode(data)
        except DecodeError as exc:
            if not self._warned:
                self._warned = True
                print(
                    f"statestream: warning: {exc}; such keys and values are shown as raw text "
                    "(choose codecs with --key-codec and --codec)",
                    file=sys.stderr,
                )
            return bytes(data)

    def show(self, record: Record) -> None:
        key = self._decode(self._key_codec, record.key)
        value = self._decode(self._codec, record.value)
        if self._json:
            item = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": key,
                "value": value,
            }
            print(json.dumps(item, ensure_ascii=False, default=json_default))
        else:
            print(f"{record.partition}\t{record.offset}\t{text_field(key)}\t{text_field(value)}")


def run_consume(
    args: argparse.Namespace,
    redact: Callable[[str], str],
    install_stop: Callable[[Callable[[], None]], None],
) -> int:
    """``statestream consume``: print ``args.topic``'s records; return the exit code."""
    key_codec, codec = _codecs(args)
    url = _log_url(args)
    stop = threading.Event()
    install_stop(stop.set)
    log = _open_log(url)
    try:
        if log.describe(args.topic) is None:
            raise TopicNotFoundError(
                f"topic {args.topic!r} does not exist on {redact(url)}; check the name "
                "and --broker-url (or --data-dir), or create it: statestream produce "
                f"{args.topic} --partitions N"
            )
        marks = log.watermarks(args.topic)
        ends = {p: high for p, (_, high) in enumerate(marks)}
        positions = {
            p: low if args.start == "beginning" else high for p, (low, high) in enumerate(marks)
        }
        printer = _Printer(args, key_codec, codec)
        while not stop.is_set():
            if not args.follow and all(positions[p] >= end for p, end in ends.items()):
                return 0
            records, positions = log.fetch(args.topic, positions, 0.5)
            for record in records:
                if args.follow or record.offset < ends[record.partition]:
                    printer.show(record)
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (e.g. "| head"): that is the end, not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        log.close()
    return 0 if args.follow else 130
