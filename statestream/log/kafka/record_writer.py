"""Writing Kafka records straight into the open batch of kafka-python's accumulator.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.

Why: after :mod:`statestream.log.kafka.batch` skipped ``KafkaProducer.send``,
most of the remaining cost of a changelog record (about 7 µs) was
kafka-python encoding it field by field, with a function call per varint,
and creating a future for it. :class:`RecordWriter` encodes a record with
table lookups and one join (header blocks are encoded once per distinct
headers), appends it to the batch's buffer, and creates a future only for
the last record written to each batch, which is all the changelog writer
needs.

The record format is Kafka's v2 record (KIP-98). The result is checked at
construction: the same records are written into two fresh kafka-python
batch builders, one by kafka-python itself and one by this module, and the
finished batches must be byte-identical; :func:`record_writer` returns
``None`` otherwise (and for kafka-python versions this was not written
against), and the caller uses the accumulator path (the transport logs a
warning saying why).

The private state touched, all of kafka-python 3.0: the accumulator's
per-partition lock and batch deques, ``ProducerBatch`` (its records builder,
produce future and per-record future list), ``MemoryRecordsBuilder`` and
``DefaultRecordBatchBuilder`` (buffer, counters, timestamps).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import kafka
from kafka.producer.future import FutureRecordMetadata
from kafka.record.memory_records import MemoryRecordsBuilder

from statestream.log.kafka._common import Disabled, _not_told
from statestream.types import Headers

__all__ = ["UNWATCHED", "RecordWriter", "record_writer"]

Records = Sequence[tuple[bytes | None, bytes | None, Headers]]


def _varint(value: int) -> bytes:
    """Kafka's zigzag varint (record fields are signed)."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append(0x80 | (zigzag & 0x7F))
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_SMALL = [_varint(n) for n in range(1 << 14)]
_SMALL_LIMIT = len(_SMALL)
_NULL = _varint(-1)
_ATTRIBUTES = b"\x00"
_NO_HEADERS = _varint(0)


def _v(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < _SMALL_LIMIT else _varint(n)


def _header_block(headers: Headers) -> bytes:
    parts = [_v(len(headers))]
    for name, value in headers:
        raw_name = name.encode("utf-8")
        parts.append(_v(len(raw_name)))
        parts.append(raw_name)
        if value is None:
            parts.append(_NULL)
        else:
            parts.append(_v(len(value)))
            parts.append(bytes(value))
    return b"".join(parts)


class _Unwatched:
    """Stands in the batch's per-record future list for records nobody waits on.

    kafka-python reads that list only to split a batch the broker found too
    large, rebinding each entry to its record's new batch by position; the
    placeholder keeps the positions right and ignores the rebind. The parts
    are watched all the same: :class:`~statestream.log.kafka.batch.SplitWatch`
    gives each part whose last entry is a placeholder a future of its own.
    """

    __slots__ = ()

    def rebind(self, new_produce_future: Any, new_batch_index: int) -> None:
        return None


UNWATCHED = _Unwatched()


class RecordWriter:
    """Appends records to the open batch of one partition (caller holds its lock)."""

    def fill(
        self,
        batch: Any,
        records: Records,
        start: int,
        timestamp_ms: int,
        now: float,
        header_blocks: dict[int, bytes],
    ) -> tuple[int, Any]:
        """Write ``records[start:]`` into ``batch`` while they fit.

        Returns how many were written and the future of the last of them
        (``None`` if none fit). ``batch`` must be open: still the last batch
        of its deque, not drained, under the accumulator's partition lock.
        """
        builder_wrapper = batch.records
        builder = builder_wrapper._builder
        buffer = builder._buffer
        limit = builder._batch_size
        first_timestamp = builder._first_timestamp
        delta = _v(timestamp_ms - first_timestamp)
        offset = builder_wrapper._next_offset
        first_offset = offset
        end = len(records)
        index = start
        key = value = None
        size = 0
        while index < end:
            key, value, headers = records[index]
            if key is None and value is None:
                break  # refused by the caller's ordinary path, with its error
            if not headers:
                block = _NO_HEADERS
            elif type(headers) is tuple:
                # By identity: records sharing a headers object (the
                # changelog writer's, per source record) share its block.
                # The caller's records keep every key object alive.
                cached = header_blocks.get(id(headers))
                if cached is None:
                    cached = header_blocks[id(headers)] = _header_block(headers)
                block = cached
            else:
                block = _header_block(tuple(headers))
            body = b"".join(
                (
                    _ATTRIBUTES,
                    delta,
                    _v(offset),
                    _NULL if key is None else _v(len(key)),
                    b"" if key is None else key,
                    _NULL if value is None else _v(len(value)),
                    b"" if value is None else value,
                    block,
                )
            )
            size = len(body)
            prefix = _v(size)
            if len(buffer) + len(prefix) + size > limit:
                break
            buffer += prefix
            buffer += body
            offset += 1
            index += 1
        written = offset - first_offset
        if not written:
            return 0, None
        builder._num_records += written
        builder._last_offset = offset - 1
        builder._max_timestamp = max(builder._max_timestamp, timestamp_ms)
        builder_wrapper._next_offset = offset
        future = FutureRecordMetadata(
            batch.produce_future,
            offset - 1,
            timestamp_ms,
            None,
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            -1,
        )
        futures = batch._record_futures
        if written > 1:
            futures.extend([UNWATCHED] * (written - 1))
        futures.append(future)
        batch.last_append = now
        batch.max_record_size = max(batch.max_record_size, size)
        return written, future


def _self_check(writer: RecordWriter) -> bool:
    """Write sample records with kafka-python and with ``writer``; compare the batches."""
    from kafka.producer.producer_batch import ProducerBatch
    from kafka.structs import TopicPartition

    samples: list[tuple[bytes | None, bytes | None, Headers]] = [
        (b"k", b"v", ()),
        (None, b"value without key", (("h", b"1"),)),
        (b"tombstone", None, (("a", b""), ("b", b"x" * 200))),
        (b"x" * 300, b"y" * 20_000, (("\u00e9", b"\x00\xff"),)),
        (b"", b"", (("n", b"2"), ("n", b"3"))),
    ]
    now = time.monotonic()
    base = int(time.time() * 1000)
    theirs = MemoryRecordsBuilder(2, 0, 1 << 20)
    ours = MemoryRecordsBuilder(2, 0, 1 << 20)
    theirs.append(base, b"first", b"1", [])
    ours.append(base, b"first", b"1", [])
    for key, value, headers in samples:
        theirs.append(base + 7, key, value, list(headers))
    batch = ProducerBatch(TopicPartition("check", 0), ours, now=now)
    written, future = writer.fill(batch, samples, 0, base + 7, now, {})
    if written != len(samples) or future is None:
        return False
    theirs.close()
    ours.close()
    return bytes(theirs.buffer()) == bytes(ours.buffer())


_WRITER_OFF = "send_batch appends every record through kafka-python's accumulator (slower)"


def record_writer(report: Disabled = _not_told) -> RecordWriter | None:
    """Return a writer if the installed kafka-python is one it was checked against.

    Otherwise ``None``, after telling ``report`` why.
    """
    version = getattr(kafka, "__version__", "")
    if not version.startswith("3.0."):
        report(
            "the record writer", f"it was checked on kafka-python 3.0, not {version}; {_WRITER_OFF}"
        )
        return None
    writer = RecordWriter()
    try:
        ok = _self_check(writer)
    except Exception as exc:  # any surprise in the internals: use the slower path
        report("the record writer", f"its self-check failed ({exc!r}); {_WRITER_OFF}")
        return None
    if not ok:
        report("the record writer", f"its output differs from kafka-python's; {_WRITER_OFF}")
        return None
    return writer
