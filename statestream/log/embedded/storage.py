"""The storage engine of the embedded log: one LevelDB database (plyvel) per directory.

:class:`EmbeddedLog` owns the database, the topic and partition metadata, the
write path (offset assignment under one lock, one WriteBatch per flush) and
the read path (range scans). The clients in :mod:`statestream.log.embedded.clients`
and the cleaner in :mod:`statestream.log.embedded.cleaner` work through it;
:mod:`statestream.log.embedded` puts a :class:`~statestream.log.base.Transport`
in front of it.

Besides ``stores/leveldb.py``, the embedded log's modules are the only ones
that import plyvel.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import plyvel

from statestream.errors import (
    ConfigurationError,
    GroupError,
    LogError,
    LogLockedError,
    ProduceError,
    TopicExistsError,
    TopicNotFoundError,
    TransactionError,
)
from statestream.log.base import TopicSpec
from statestream.log.embedded.codec import (
    FORMAT_VERSION,
    NEXT_TOPIC_ID_KEY,
    OFFSET,
    U32,
    VERSION_KEY,
    TopicMeta,
    decode_record,
    decode_topic,
    encode_topic,
    group_key,
    parse_group_key,
    topic_key,
)
from statestream.log.embedded.meta import (
    NO_TOMBSTONES,
    EmbeddedDelivery,
    EmbeddedOptions,
    Partition,
    Topic,
)
from statestream.types import Record, TopicPartition

__all__ = ["EmbeddedLog", "Pending"]


#: Records of one flush or transaction: encoded values and their deliveries, by partition.
Pending = Mapping[Partition, Sequence[tuple[bytes, EmbeddedDelivery]]]


class EmbeddedLog:
    """The database of one embedded log directory, shared by all its clients.

    Thread-safe. Writes (appends, commits, topic changes) take ``write_lock``,
    which is also what makes offset assignment race-free; reads take no lock
    beyond a reader count that lets :meth:`close` wait for them. Pollers sleep
    on a condition that every write notifies.
    """

    def __init__(self, path: str, options: EmbeddedOptions) -> None:
        self.path = path
        self.options = options
        self.write_lock = threading.Lock()
        #: Held by a cleanup pass, topic deletion and close: one at a time.
        self.cleaner_lock = threading.Lock()
        self._data_cv = threading.Condition()
        self._generation = 0
        #: Bumped when topics are created or deleted (group members re-check assignments).
        self.metadata_generation = 0
        self._readers = 0
        self._readers_cv = threading.Condition()
        #: Set when closing starts: long cleaner passes check it and stop early.
        self.closing = False
        self.closed = False
        self._topics: dict[str, Topic] = {}
        self._group_owners: dict[str, object] = {}
        self._db = self._open()
        try:
            self._next_topic_id = self._load()
        except plyvel.Error as exc:
            self._db.close()
            raise LogError(f"cannot read embedded log at {self.path!r}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    # -- opening -------------------------------------------------------------

    def _open(self) -> Any:
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise LogError(
                f"cannot create embedded log directory {self.path!r} ({exc}); make it "
                "writable by this user or choose another directory in the broker URL"
            ) from exc
        opts = self.options
        try:
            db = plyvel.DB(
                self.path,
                create_if_missing=True,
                write_buffer_size=opts.write_buffer_size,
                max_open_files=opts.max_open_files,
                lru_cache_size=opts.lru_cache_size,
                block_size=opts.block_size,
                bloom_filter_bits=10,
                compression="snappy" if opts.compression else None,
            )
        except plyvel.IOError as exc:
            message = str(exc)
            if "lock" in message.lower():
                raise LogLockedError(
                    f"embedded log directory {self.path!r} is held by another process or by "
                    f"another open transport in this process ({message}); stop the other "
                    "process (or close the other transport), or use another directory in "
                    "the broker URL"
                ) from exc
            raise LogError(f"cannot open embedded log at {self.path!r}: {message}") from exc
        except plyvel.Error as exc:
            raise LogError(
                f"cannot open embedded log at {self.path!r} ({exc}); if it is corrupted, "
                "move the directory away (its records are lost) and start again"
            ) from exc
        version = db.get(VERSION_KEY)
        if version is None:
            db.put(VERSION_KEY, FORMAT_VERSION, sync=True)
        elif version != FORMAT_VERSION:
            db.close()
            raise LogError(
                f"embedded log at {self.path!r} has format version {version!r}; this "
                f"statestream reads {FORMAT_VERSION!r}. Use the statestream version that "
                "wrote it, or another directory"
            )
        return db

    def _load(self) -> int:
        db = self._db
        raw_next = db.get(NEXT_TOPIC_ID_KEY)
        next_id = U32.unpack(raw_next)[0] if raw_next is not None else 1
        for key, raw in db.iterator(prefix=b"t"):
            name = key[1:].decode()
            try:
                topic = Topic(name, decode_topic(raw), self.options)
            except (ValueError, KeyError, ConfigurationError) as exc:
                raise LogError(
                    f"embedded log at {self.path!r} has unreadable metadata for topic "
                    f"{name!r} ({exc}); move the directory away and start again"
                ) from exc
            for part in topic.partitions:
                part.high = self._read_offset(part.next_key)
                part.low = self._read_offset(part.start_key)
                part.cleaned = self._read_offset(part.clean_key)
            self._topics[name] = topic
        return next_id

    def _read_offset(self, key: bytes) -> int:
        raw = self._db.get(key)
        return 0 if raw is None else int(OFFSET.unpack(raw)[0])

    def orphan_topic_ids(self) -> list[int]:
        """Return ids of topics that have records but no metadata (deleted topics)."""
        live = {t.topic_id for t in self._topics.values()}
        found: list[int] = []
        with self.reading():
            topic_id = 0
            while True:
                with self._db.iterator(start=b"r" + U32.pack(topic_id), stop=b"s") as it:
                    first = next(it, None)
                if first is None:
                    return found
                topic_id = U32.unpack_from(first[0], 1)[0]
                if topic_id not in live:
                    found.append(topic_id)
                if topic_id == 0xFFFFFFFF:
                    return found
                topic_id += 1

    # -- plumbing --------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """Yield the database for reading; :meth:`close` waits for every reader."""
        with self._readers_cv:
            if self.closed:
                raise LogError(f"embedded log at {self.path!r} is closed")
            self._readers += 1
        try:
            yield self._db
        except plyvel.Error as exc:
            raise LogError(f"reading embedded log at {self.path!r} failed: {exc}") from exc
        finally:
            with self._readers_cv:
                self._readers -= 1
                if not self._readers:
                    self._readers_cv.notify_all()

    def check_open(self) -> None:
        """Raise ``LogError`` if the log is closed."""
        if self.closed:
            raise LogError(f"embedded log at {self.path!r} is closed")

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        """Write puts and deletes in one batch (fsynced when ``sync`` is set)."""
        try:
            batch = self._db.write_batch(sync=self.options.sync)
            for key, value in puts:
                batch.put(key, value)
            for key in deletes:
                batch.delete(key)
            batch.write()
        except (plyvel.Error, RuntimeError) as exc:
            raise LogError(f"writing embedded log at {self.path!r} failed: {exc}") from exc

    @property
    def generation(self) -> int:
        """A counter bumped by every change readers may wait for."""
        return self._generation

    def notify(self) -> None:
        """Wake every poller (new records, topic changes, close)."""
        with self._data_cv:
            self._generation += 1
            self._data_cv.notify_all()

    def wait(self, generation: int, timeout: float) -> None:
        """Sleep until something changed since ``generation``, or ``timeout`` seconds."""
        with self._data_cv:
            if self._generation == generation and not self.closed:
                self._data_cv.wait(timeout)

    # -- topics ------------------------------------------------------------------

    def find_topic(self, name: str) -> Topic | None:
        """Return the live topic ``name``, or ``None``."""
        return self._topics.get(name)

    def topic(self, name: str) -> Topic:
        """Return the live topic ``name``; raise ``TopicNotFoundError`` if missing."""
        topic = self._topics.get(name)
        if topic is None:
            self.check_open()
            raise TopicNotFoundError(
                f"topic {name!r} does not exist in the embedded log at {self.path!r}; "
                "create it first (Admin.create_topic or ensure_topic)"
            )
        return topic

    def partition(self, tp: TopicPartition) -> Partition:
        """Return partition ``tp``; raise ``TopicNotFoundError`` if it does not exist."""
        topic = self.topic(tp.topic)
        if not 0 <= tp.partition < len(topic.partitions):
            raise TopicNotFoundError(
                f"partition {tp} does not exist: topic {tp.topic!r} has partitions "
                f"0 to {len(topic.partitions) - 1}"
            )
        return topic.partitions[tp.partition]

    def topics(self) -> list[Topic]:
        """Return every live topic."""
        return list(self._topics.values())

    def create_topic(self, spec: TopicSpec) -> None:
        """Create ``spec``'s topic; ``TopicExistsError`` if it exists."""
        config = spec.topic_config()
        with self.write_lock:
            self.check_open()
            if spec.name in self._topics:
                raise TopicExistsError(
                    f"topic {spec.name!r} already exists in the embedded log at {self.path!r}"
                )
            meta = TopicMeta(self._next_topic_id, spec.partitions, config)
            topic = Topic(spec.name, meta, self.options)  # validates the config
            for part in topic.partitions:
                part.clean_live = 0
                part.tombstone_due = NO_TOMBSTONES
            self.write(
                [
                    (topic_key(spec.name), encode_topic(meta)),
                    (NEXT_TOPIC_ID_KEY, U32.pack(self._next_topic_id + 1)),
                ]
            )
            self._next_topic_id += 1
            self._topics[spec.name] = topic
            self.metadata_generation += 1
        self.notify()

    def drop_topic(self, name: str) -> Topic | None:
        """Remove topic ``name``'s metadata and committed offsets; return it (records stay).

        The caller holds ``cleaner_lock`` and purges the records afterwards
        with :meth:`purge_records`.
        """
        with self.write_lock:
            self.check_open()
            topic = self._topics.get(name)
            if topic is None:
                return None
            deletes = [topic_key(name)]
            for part in topic.partitions:
                deletes += (part.next_key, part.start_key, part.clean_key)
            # Kafka drops the committed offsets of a deleted topic too, so a
            # topic created again under the name starts without them.
            with self.reading() as db:
                for key in db.iterator(prefix=b"g", include_value=False):
                    if parse_group_key(key)[1] == name:
                        deletes.append(key)
            self.write([], deletes)
            del self._topics[name]
            topic.deleted = True
            self.metadata_generation += 1
        self.notify()
        return topic

    # -- records -----------------------------------------------------------------

    def append(
        self,
        pending: Pending,
        *,
        group_offsets: Mapping[tuple[str, TopicPartition], int] | None = None,
        transaction: bool = False,
    ) -> None:
        """Write ``pending`` records (and ``group_offsets``) in one batch, assigning offsets.

        Records of a topic deleted since they were sent fail (``ProduceError``
        after the others are written). A ``transaction`` is all or nothing
        (``TransactionError``) and, like Kafka's commit marker, takes one more
        offset in each partition it wrote to.
        """
        with self.write_lock:
            self.check_open()
            if transaction:
                self._check_topics_alive(pending, group_offsets or {})
            batch = self._db.write_batch(sync=self.options.sync)
            written, lost = _fill_batch(batch, pending, 1 if transaction else 0)
            for (group, tp), committed in (group_offsets or {}).items():
                batch.put(group_key(group, tp.topic, tp.partition), OFFSET.pack(committed))
            try:
                batch.write()
            except (plyvel.Error, RuntimeError) as exc:
                message = f"writing to the embedded log at {self.path!r} failed: {exc}"
                _fail(pending.values(), message)
                raise (TransactionError if transaction else ProduceError)(message) from exc
            for part, high, _, _ in written:
                part.high = high
        if written:
            self.notify()
        for _, _, base, items in written:
            for offset, (_, delivery) in enumerate(items, base):
                delivery._offset = offset
        if lost:
            names = ", ".join(sorted({p.topic.name for p in lost}))
            message = f"topic(s) {names} were deleted before the records were flushed"
            _fail((pending[part] for part in lost), message)
            raise ProduceError(message)

    def _check_topics_alive(
        self, pending: Pending, group_offsets: Mapping[tuple[str, TopicPartition], int]
    ) -> None:
        gone = {p.topic.name for p in pending if p.topic.deleted}
        gone.update(tp.topic for _, tp in group_offsets if tp.topic not in self._topics)
        if gone:
            raise TransactionError(
                f"topic(s) {', '.join(sorted(gone))} were deleted during the transaction; "
                "it was aborted"
            )

    def read(self, part: Partition, start: int, max_records: int) -> tuple[list[Record], int]:
        """Return up to ``max_records`` records of ``part`` from ``start``, and the next position.

        The position after the last record read, or the high watermark when
        the scan reached it (jumping gaps left by compaction and markers).
        """
        high = part.high
        if start >= high or max_records <= 0:
            return [], start
        prefix = part.prefix
        plen = len(prefix)
        name = part.topic.name
        index = part.index
        unpack_from = OFFSET.unpack_from
        records: list[Record] = []
        append = records.append
        with (
            self.reading() as db,
            db.iterator(start=prefix + OFFSET.pack(start), stop=prefix + OFFSET.pack(high)) as it,
        ):
            for key, raw in it:
                offset = unpack_from(key, plen)[0]
                append(decode_record(name, index, offset, raw))
                if len(records) >= max_records:
                    return records, offset + 1
        return records, high

    def scan(
        self, part: Partition, start: int, stop: int, *, values: bool = True
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, raw record)`` for offsets in ``[start, stop)`` (for the cleaner).

        With ``values=False`` the raw record is ``b""``. The caller holds
        ``cleaner_lock``, which :meth:`close` takes, so the database stays open.
        """
        prefix = part.prefix
        plen = len(prefix)
        unpack_from = OFFSET.unpack_from
        lo = prefix + OFFSET.pack(start)
        hi = prefix + OFFSET.pack(stop)
        try:
            if values:
                with self._db.iterator(start=lo, stop=hi) as it:
                    for key, raw in it:
                        yield unpack_from(key, plen)[0], raw
            else:
                with self._db.iterator(start=lo, stop=hi, include_value=False) as it:
                    for key in it:
                        yield unpack_from(key, plen)[0], b""
        except (plyvel.Error, RuntimeError) as exc:
            raise LogError(f"reading embedded log at {self.path!r} failed: {exc}") from exc

    def purge_records(self, topic_id: int, chunk: int = 10_000) -> None:
        """Delete every record of topic id ``topic_id`` (caller holds ``cleaner_lock``)."""
        lo = b"r" + U32.pack(topic_id)
        hi = b"r" + U32.pack(topic_id + 1) if topic_id < 0xFFFFFFFF else b"s"
        while not self.closing:
            with self._db.iterator(start=lo, stop=hi, include_value=False) as it:
                keys = [key for key, _ in zip(it, range(chunk), strict=False)]
            if not keys:
                return
            self.write([], keys)

    # -- groups ------------------------------------------------------------------

    def claim_group(self, group: str, owner: object) -> None:
        """Make ``owner`` the group's only member; ``GroupError`` if another holds it."""
        with self.write_lock:
            self.check_open()
            holder = self._group_owners.get(group)
            if holder is not None and holder is not owner:
                raise GroupError(
                    f"group {group!r} already has a member in this process; the embedded log "
                    "gives one member all partitions, so a second one would get none. Close "
                    "the first member, or use another group id"
                )
            self._group_owners[group] = owner

    def group_holder(self, group: str) -> object | None:
        """Return the member holding ``group``, or ``None``."""
        return self._group_owners.get(group)

    def release_group(self, group: str, owner: object) -> None:
        """Release ``group`` if ``owner`` holds it."""
        with self.write_lock:
            if self._group_owners.get(group) is owner:
                del self._group_owners[group]

    def commit_offsets(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Durably store ``group``'s committed offsets (validated by the caller)."""
        puts = [
            (group_key(group, tp.topic, tp.partition), OFFSET.pack(offset))
            for tp, offset in offsets.items()
        ]
        with self.write_lock:
            self.check_open()
            for tp in offsets:
                self.partition(tp)  # the topic may have gone since validation
            self.write(puts)

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        """Return ``group``'s committed offset for ``tp``, or ``None``."""
        with self.reading() as db:
            raw = db.get(group_key(group, tp.topic, tp.partition))
        return None if raw is None else int(OFFSET.unpack(raw)[0])

    # -- closing ---------------------------------------------------------------

    def close(self) -> None:
        """Close the database once writers, readers and the cleaner are done. Idempotent."""
        self.closing = True
        with self.cleaner_lock, self.write_lock:
            with self._readers_cv:
                if self.closed:
                    return
                self.closed = True
                while self._readers:
                    self._readers_cv.wait()
            try:
                self._db.close()
            except (plyvel.Error, RuntimeError) as exc:
                raise LogError(f"closing embedded log at {self.path!r} failed: {exc}") from exc
            finally:
                self.notify()


_Written = list[tuple[Partition, int, int, Sequence[tuple[bytes, EmbeddedDelivery]]]]


def _fill_batch(batch: Any, pending: Pending, marker: int) -> tuple[_Written, list[Partition]]:
    """Put ``pending`` into ``batch`` from each partition's high watermark (caller holds the
    write lock); return ``(partition, new high, first offset, items)`` and deleted partitions."""
    written: _Written = []
    lost: list[Partition] = []
    put = batch.put
    pack = OFFSET.pack
    for part, items in pending.items():
        if part.topic.deleted:
            lost.append(part)
            continue
        base = offset = part.high
        prefix = part.prefix
        for raw, _ in items:
            put(prefix + pack(offset), raw)
            offset += 1
        offset += marker
        put(part.next_key, pack(offset))
        written.append((part, offset, base, items))
    return written, lost


def _fail(batches: Iterable[Sequence[tuple[bytes, EmbeddedDelivery]]], message: str) -> None:
    for items in batches:
        for _, delivery in items:
            delivery.fail(message)
