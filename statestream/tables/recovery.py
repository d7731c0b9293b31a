"""Restoring a table partition from its changelog (the Table Recovery of the design).

Replay changelog records from the store's offset + 1 to the high watermark,
skipping records whose source offset is at or beyond the committed source
offset (they belong to work that will be processed again), and apply them to
the store in batches, each written atomically with the offset of the last
record it covers. Progress is therefore durable: a restore that is stopped
(crash, revoke) resumes where the store's offset says.

Edge cases handled (each has a test):

* empty changelog (low == high): nothing to do, nothing cleared;
* compaction gaps and transaction markers: the loop ends on
  ``position >= high``, never on a record count;
* store offset below the low watermark (retention removed history the store
  never saw): clear the store and rebuild from the low watermark;
* store offset at or above the high watermark (the changelog was recreated):
  clear and rebuild, with a warning, never a crash loop;
* a revoke while restoring: ``cancel`` is checked between polls; the batches
  applied so far stay, with their offset;
* no progress at all for ``stall_timeout`` seconds: :class:`RestoreError`
  naming the partition and offsets, instead of hanging;
* records of a fenced writer (an epoch lower than one already seen in the
  changelog partition, see :mod:`statestream.tables.headers`) are skipped;
  the highest epoch seen is kept in the store's metadata with its offset, so
  a restore that starts in the middle of the changelog knows it.

Skipped records (uncommitted or fenced) may shadow a committed record of
their key under compaction, so their keys are repaired by the owner (see
``TableManager``). Until that repair is written, the store's offset is held
just below the first skipped record (the data after it is still applied):
a crash or a cancelled restore before the repair reads those records again
and the repair is not forgotten.

One reader, three modes (:class:`ChangelogReader`): **restoring** (above:
read to the high watermark, then the partition processes), **standby**
(tail for ever, see :mod:`statestream.tables.standby`) and **global** (see
below). The first two apply records the same way, with the same fencing;
they differ in what an uncommitted record means. A restore skips it (its
work is redone) and leaves its key to the owner's repair. A standby cannot
know yet whether the record's work will be committed, so it stops at the
record and waits until the committed source offset passes it, then applies
it; records are applied in changelog order, never around a waiting one. A
fenced record's key is pending in both modes; a standby holds its offset
below the first fenced record until a record of a live writer has rewritten
every pending key (the new owner's repair does), so a promotion before that
reads them again.

The **global** mode feeds a global table's copy
(:mod:`statestream.tables.globaltable`) from its topic, which any producer
writes (``ctx.send`` of any processor, any client): there are no source or
epoch headers to fence on, so every record is applied as it is, a ``None``
value deleting its key (a record without a key has nothing to apply and is
counted as skipped). One store holds every partition of the topic, so the
reader does not write the store's offset: it writes the offset of the last
record read of *its* partition into the store's metadata
(:func:`global_offset_name`), atomically with the batch, so a restart reads
each partition from its own offset. Batching and progress reports are the
other modes'.

Thread ownership: runs on the thread that owns the store (the partition
thread, or the standby thread; for a global copy, the global reader thread
while it holds the copy's lock); it owns the fetcher it is given.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from statestream.errors import RestoreError
from statestream.log.base import Fetcher
from statestream.stores.base import Store
from statestream.tables.headers import epoch_of, pack_epoch, source_of, unpack_epoch
from statestream.tables.restore_events import RestoreTracker
from statestream.types import Record, TopicPartition

__all__ = [
    "EPOCH_META",
    "ChangelogReader",
    "Derive",
    "ReaderMode",
    "RestoreOutcome",
    "RestoreProgress",
    "clear_reason",
    "global_offset_name",
    "restore",
    "should_skip",
    "stored_epoch",
    "stored_global_offset",
]

#: How a :class:`ChangelogReader` treats a record of uncommitted work
#: (``"global"``: there is no such thing, every record is applied).
ReaderMode = Literal["restoring", "standby", "global"]

#: Store metadata name of the highest writer epoch applied (8 bytes).
EPOCH_META = "epoch"

log = logging.getLogger("statestream.recovery")

# A global offset in store metadata: 8 bytes big-endian (offsets are signed 64-bit).
_GLOBAL_OFFSET = struct.Struct(">q")


@dataclass(frozen=True)
class RestoreProgress:
    """A progress report for one changelog partition."""

    changelog: TopicPartition
    done: int  # records read so far (applied or skipped)
    remaining: int  # offsets left up to the high watermark at start
    rate: float  # records read per second so far
    eta: float | None  # seconds left at that rate (None before any progress)


@dataclass(frozen=True)
class RestoreOutcome:
    """What a restore did."""

    changelog: TopicPartition
    applied: int
    skipped: int
    cleared: str | None  # why the store was cleared first, if it was
    completed: bool  # False when cancelled
    offset: int | None  # the store's offset afterwards
    #: Keys of records skipped as uncommitted or fenced. Such a record may
    #: supersede a committed one under compaction, so the owner rewrites these
    #: keys' restored values to the changelog (see TableManager).
    skipped_keys: frozenset[bytes] = frozenset()
    #: Records skipped because their writer was fenced (a lower epoch).
    fenced: int = 0
    #: The highest writer epoch seen, up to the end of what was read.
    epoch: int | None = None
    #: The last changelog offset read (the store's offset once repaired).
    end: int | None = None


ProgressCallback = Callable[[RestoreProgress], None]

#: Adds the store entries a changelog record implies besides itself to a batch:
#: ``derive(key, value, batch)``. A windowed table's time index is kept only
#: in its store (it follows from the window keys), so restores and standbys
#: derive it from the window records they apply.
Derive = Callable[[bytes, "bytes | None", dict[bytes, "bytes | None"]], None]


def should_skip(source: tuple[str, int] | None, committed: Mapping[str, int | None]) -> bool:
    if source is None:
        return False  # not written by a statestream commit: apply it
    topic, offset = source
    floor = committed.get(topic)
    # No committed offset: no source record of that topic was committed, so
    # every change it produced belongs to work that will be redone.
    return floor is None or offset >= floor


def stored_epoch(store: Store) -> int | None:
    """Return the highest writer epoch ``store`` applied (its metadata), if any."""
    return unpack_epoch(store.meta(EPOCH_META))


def global_offset_name(partition: int) -> str:
    """Store metadata name of the last offset applied of topic partition ``partition``
    (global mode: one store holds every partition of a global table's topic)."""
    return f"offset_{partition}"


def stored_global_offset(store: Store, partition: int) -> int | None:
    """Return the last offset of topic partition ``partition`` applied to a global copy."""
    raw = store.meta(global_offset_name(partition))
    if raw is None or len(raw) != _GLOBAL_OFFSET.size:
        return None
    offset: int = _GLOBAL_OFFSET.unpack(raw)[0]
    return offset


def clear_reason(offset: int | None, low: int, high: int, has_data: bool) -> str | None:
    if offset is not None and offset >= high:
        return (
            f"store offset {offset} is at or beyond the changelog's high watermark {high}: "
            "the changelog was recreated; rebuilding the store from it"
        )
    if offset is not None and offset + 1 < low:
        return (
            f"store offset {offset} is below the changelog's low watermark {low}: retention "
            "removed records the store never saw; rebuilding the store from the changelog"
        )
    if offset is None and has_data:
        return "store has data but no offset; rebuilding it from the changelog"
    return None


class ChangelogReader:
    """Applies one changelog partition's records to its store (see the module docstring).

    ``committed`` maps each source topic to its committed offset for the
    partition; a standby's caller replaces it as the offsets move (a global
    reader ignores it: pass ``{}``).
    """

    def __init__(
        self,
        store: Store,
        changelog: TopicPartition,
        committed: Mapping[str, int | None],
        batch_size: int = 10_000,
        progress: ProgressCallback | None = None,
        progress_interval: float = 1.0,
        mode: ReaderMode = "restoring",
        *,
        derive: Derive | None = None,
    ) -> None:
        self.store = store
        self.mode = mode
        #: Adds the store-only entries each applied record implies (see Derive).
        self.derive = derive
        self.changelog = changelog
        self.committed = committed
        #: (standby) The record the reader waits at, and the source offset it waits for.
        self.waiting: tuple[int, tuple[str, int]] | None = None
        self.batch_size = batch_size
        self.progress = progress
        self.progress_interval = progress_interval
        self.applied = 0
        self.skipped = 0
        self.fenced = 0
        self.skipped_keys: set[bytes] = set()
        self.batch: dict[bytes, bytes | None] = {}
        self.last_offset: int | None = None
        self.epoch = None if mode == "global" else stored_epoch(store)
        self.written_epoch = self.epoch
        #: (global) The offset of this partition last written to the store's metadata.
        self.written: int | None = None
        if mode == "global":
            self.written = self.last_offset = stored_global_offset(store, changelog.partition)
        # Set at the first skipped record: (offset just below it, epoch then).
        self.hold: tuple[int | None, int | None] | None = None
        self.began = self.last_report = time.monotonic()

    def flush(self) -> None:
        """Write the batch with the offset of the last record read (if anything moved).

        While a skipped record awaits its repair, the offset (and epoch)
        written stay those just below it. In global mode the offset goes to
        the partition's metadata entry, not to the store's offset.
        """
        if self.mode == "global":
            self._flush_global()
            return
        last, epoch = (self.last_offset, self.epoch) if self.hold is None else self.hold
        if last is None:
            if self.batch:
                self.store.write(self.batch, None)
            self.batch = {}
            return
        if self.batch or last != self.store.offset() or epoch != self.written_epoch:
            meta = None if epoch is None else {EPOCH_META: pack_epoch(epoch)}
            self.store.write(self.batch, last, meta)
            self.written_epoch = epoch
        self.batch = {}

    def _flush_global(self) -> None:
        last = self.last_offset
        if last is None:
            # Nothing read yet (records have offsets, so nothing to apply either).
            self.batch = {}
            return
        if self.batch or last != self.written:
            name = global_offset_name(self.changelog.partition)
            self.store.write(self.batch, None, {name: _GLOBAL_OFFSET.pack(last)})
            self.written = last
        self.batch = {}

    def _skip(self, record: Record) -> None:
        if self.hold is None:
            below = record.offset - 1
            # Restores start past the store's offset, so this never moves it back.
            self.hold = (below if below >= 0 else None, self.epoch)
        if record.key is not None:
            self.skipped_keys.add(record.key)

    def take(self, records: list[Record], high: int | None = None) -> None:
        """Apply or skip ``records`` (those below ``high``, if given) into the batch.

        In standby mode, reading stops at the first record of uncommitted
        work: :attr:`waiting` names it, and the records from it on are not
        taken (the caller reads them again once the committed offset passed it).
        In global mode every record is applied as it is.
        """
        if self.mode == "global":
            self._take_global(records, high)
            return
        for record in records:
            if high is not None and record.offset >= high:
                continue  # written after the restore began: the owner processes it
            epoch, fence = epoch_of(record)
            highest = self.epoch
            if epoch is not None and highest is not None and epoch < highest:
                # Written by a member that had lost the partition.
                self.fenced += 1
                if not fence:
                    self._skip(record)
            elif fence:
                self.epoch = epoch
            else:
                if epoch is not None:
                    self.epoch = epoch
                if not self._take_live(record):
                    break
            self.last_offset = record.offset
        if len(self.batch) >= self.batch_size:
            self.flush()

    def _take_global(self, records: list[Record], high: int | None) -> None:
        batch = self.batch
        for record in records:
            if high is not None and record.offset >= high:
                continue
            if record.key is None:
                self.skipped += 1  # nothing to key it by: not table data
            else:
                batch[record.key] = record.value
                self.applied += 1
            self.last_offset = record.offset
        if len(batch) >= self.batch_size:
            self.flush()

    def _take_live(self, record: Record) -> bool:
        """Apply (or skip) a record of a live writer; False: a standby waits at it."""
        source = source_of(record)
        if should_skip(source, self.committed):
            if self.mode == "standby":
                assert source is not None  # should_skip is False without one
                self.waiting = (record.offset, source)
                return False
            self.skipped += 1
            self._skip(record)
            return True
        if record.key is not None:
            self.batch[record.key] = record.value
            if self.derive is not None:
                self.derive(record.key, record.value, self.batch)
            if self.hold is not None and self.mode == "standby":
                self._rewritten(record.key)
        self.applied += 1
        return True

    def _rewritten(self, key: bytes) -> None:
        # A live writer wrote a pending key again: its fenced record no longer
        # matters. With none pending, the offset may move past them.
        self.skipped_keys.discard(key)
        if not self.skipped_keys:
            self.hold = None

    def resume(self) -> bool:
        """(Standby) Stop waiting if the committed offset passed the waited record.

        Returns True when reading may go on from :attr:`waiting`'s offset.
        """
        if self.waiting is None:
            return True
        if should_skip(self.waiting[1], self.committed):
            return False
        self.waiting = None
        return True

    def report(self, left: int, force: bool = False) -> None:
        """Call the progress callback at most every ``progress_interval`` seconds."""
        now = time.monotonic()
        if self.progress is None or (not force and now - self.last_report < self.progress_interval):
            return
        self.last_report = now
        done = self.applied + self.skipped
        rate = done / max(now - self.began, 1e-9)
        eta = left / rate if rate > 0 else None
        self.progress(RestoreProgress(self.changelog, done, left, rate, eta))

    def outcome(self, cleared: str | None, completed: bool) -> RestoreOutcome:
        """Summarize the run."""
        return RestoreOutcome(
            self.changelog,
            self.applied,
            self.skipped,
            cleared,
            completed,
            self.written if self.mode == "global" else self.store.offset(),
            frozenset(self.skipped_keys),
            self.fenced,
            self.epoch,
            self.last_offset if self.last_offset is not None else self.store.offset(),
        )


def _fields(changelog: TopicPartition) -> dict[str, object]:
    """The fields of a changelog partition's log lines (statestream.logs)."""
    return {"topic": changelog.topic, "partition": changelog.partition}


def restore(
    store: Store,
    fetcher: Fetcher,
    changelog: TopicPartition,
    committed: Mapping[str, int | None],
    *,
    batch_size: int = 10_000,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
    progress_interval: float = 1.0,
    stall_timeout: float = 60.0,
    poll_timeout: float = 0.5,
    derive: Derive | None = None,
    tracker: RestoreTracker | None = None,
) -> RestoreOutcome:
    """Bring ``store`` up to the changelog's high watermark (see module docstring).

    ``committed`` maps each source topic to its committed offset (the next
    offset to process) for this partition. The fetcher is assigned
    ``changelog`` only. ``tracker`` hears where the pass starts and ends and
    the position after each batch read (it reports to the listeners).
    """
    fetcher.assign([changelog])
    low, high = fetcher.watermarks(changelog)
    offset = store.offset()
    cleared = clear_reason(offset, low, high, offset is None and store.count() > 0)
    if cleared is not None:
        log.warning("%s: %s", changelog, cleared, extra=_fields(changelog))
        store.clear()
        offset = None
    run = ChangelogReader(
        store, changelog, committed, batch_size, progress, progress_interval, derive=derive
    )
    start = low if offset is None else offset + 1
    if tracker is not None:
        tracker.begin(start, high, cleared)
    if start >= high:
        return run.outcome(cleared, True)
    fetcher.seek(changelog, start)
    last_progress = time.monotonic()
    while (position := fetcher.position(changelog)) < high:
        if cancel is not None and cancel.is_set():
            run.flush()
            log.info(
                "%s: restore cancelled at offset %s of %s",
                changelog,
                position,
                high,
                extra=_fields(changelog),
            )
            return run.outcome(cleared, False)
        records = fetcher.poll(timeout=poll_timeout, max_records=batch_size)
        if records:
            last_progress = time.monotonic()
            before = run.applied + run.skipped + run.fenced
            run.take(records, high)
            if tracker is not None:
                done = run.applied + run.skipped + run.fenced - before
                tracker.batch(fetcher.position(changelog), done)
        elif time.monotonic() - last_progress > stall_timeout:
            run.flush()
            raise RestoreError(
                f"restoring {changelog} made no progress for {stall_timeout:.0f}s at position "
                f"{position} (high watermark {high}); check the broker, then restart: the "
                "store keeps what was applied"
            )
        run.report(max(high - position, 0))
    # Offsets past the last record read (transaction markers, compaction
    # gaps) count as done too, so a restart does not look at them again.
    run.last_offset = high - 1
    run.flush()
    run.report(0, force=True)
    if tracker is not None:
        tracker.reached(high)
    # The partition's "ready" line sums what was replayed; this one is worth
    # a line of its own only when it replayed something.
    log.log(
        logging.INFO if run.applied or run.skipped or run.fenced else logging.DEBUG,
        "%s: restored %d records (%d skipped as uncommitted, %d fenced) of %d offsets",
        changelog,
        run.applied,
        run.skipped,
        run.fenced,
        high - start,
        extra=_fields(changelog),
    )
    return run.outcome(cleared, True)
