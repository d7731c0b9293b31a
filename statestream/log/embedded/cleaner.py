"""Retention and compaction for the embedded log: Kafka's log cleaner, per partition.

Retention (topics whose policy includes ``delete``) removes the oldest
records while their timestamp is more than ``retention.ms`` old, as a prefix,
and moves the log start offset (the low watermark) past them, like Kafka
deleting whole segments.

Compaction (policy includes ``compact``) follows Kafka's cleaner: a map of
key -> latest offset is built from the *dirty* records (written since the
partition's compaction checkpoint), then every record from the log start up
to the end of the dirty range whose key has a later record is deleted. Kept
records keep their offsets and the low watermark does not move: compaction
leaves gaps, as in Kafka. A tombstone (``None`` value) that is the latest for
its key is kept for ``delete.retention.ms`` after the first compaction that
saw it (its *horizon* is stored in the record, as KIP-534 stores it in the
batch header), then removed. ``min.compaction.lag.ms`` keeps younger records
out of the dirty range.

The key map is bounded (:data:`MAX_MAP_KEYS`); a dirty range with more
distinct keys is compacted over several passes, so memory stays bounded like
Kafka's ``log.cleaner.dedupe.buffer.size``. The cost of a pass is a scan of
the partition's live records, which is why the background cleaner waits for
``min.cleanable.dirty.ratio`` while an explicit ``compact()`` (``force``) does not.

:func:`cleanup` holds the log's ``cleaner_lock``, so passes, topic deletion
and closing never overlap. Producers are never blocked: they only append
past the offsets a pass looks at.
"""

from __future__ import annotations

from statestream.log.embedded.codec import OFFSET, peek_record, with_horizon
from statestream.log.embedded.meta import NO_TOMBSTONES, Partition
from statestream.log.embedded.storage import EmbeddedLog

__all__ = ["MAX_MAP_KEYS", "cleanup", "purge_deleted"]

#: Distinct keys one compaction pass maps (about 100 bytes of memory each).
MAX_MAP_KEYS = 1_000_000
#: Deletes and rewrites per WriteBatch, so a large pass does not build one huge batch.
_CHUNK = 10_000


def cleanup(
    log: EmbeddedLog,
    now_ms: int,
    *,
    retention: bool = True,
    compaction: bool = True,
    force: bool = False,
) -> int:
    """Apply retention and/or compaction to every partition; return the records removed.

    ``force`` compacts every compacted partition with anything to do,
    ignoring ``min.cleanable.dirty.ratio`` (retention needs no forcing).
    Returns early if the log closes meanwhile.
    """
    removed = 0
    with log.cleaner_lock:
        if log.closing:
            return 0
        purge_deleted(log)
        for topic in log.topics():
            for part in topic.partitions:
                if log.closing or topic.deleted:
                    return removed
                if retention and topic.delete:
                    removed += _retain(log, part, now_ms)
                if compaction and topic.compact:
                    removed += _compact(log, part, now_ms, force)
    return removed


def purge_deleted(log: EmbeddedLog) -> None:
    """Delete records of deleted topics (the caller holds ``cleaner_lock``)."""
    for topic_id in log.orphan_topic_ids():
        log.purge_records(topic_id, _CHUNK)


def _delete_below(log: EmbeddedLog, part: Partition, stop: int) -> int:
    removed = 0
    while not log.closing:
        keys = []
        for offset, _ in log.scan(part, 0, stop, values=False):
            keys.append(part.key(offset))
            if len(keys) >= _CHUNK:
                break
        if not keys:
            break
        log.write([], keys)
        removed += len(keys)
    return removed


def _retain(log: EmbeddedLog, part: Partition, now_ms: int) -> int:
    retention_ms = part.topic.retention_ms
    if retention_ms < 0:
        return 0
    # Kafka deletes a segment once now - its largest timestamp > retention.ms.
    cutoff = now_ms - retention_ms
    high = part.high
    new_low = high
    for offset, raw in log.scan(part, part.low, high):
        if peek_record(raw).timestamp >= cutoff:
            new_low = offset
            break
    if new_low > part.low:
        # The log start moves before the records go, so no fetcher ever
        # mistakes a half-deleted prefix for a compaction gap.
        log.write([(part.start_key, OFFSET.pack(new_low))])
        part.low = new_low
        log.notify()
    # Also removes what a crash left below the log start.
    return _delete_below(log, part, part.low)


def _compaction_due(part: Partition, now_ms: int, force: bool) -> bool:
    dirty = part.high - max(part.cleaned, part.low)
    due = part.tombstone_due
    tombstones_due = due is None or due <= now_ms
    if part.high <= part.low or (dirty <= 0 and not tombstones_due):
        return False
    if force or tombstones_due:
        return True
    live = part.clean_live
    return live is None or dirty / (dirty + live) >= part.topic.dirty_ratio


def _key_map(log: EmbeddedLog, part: Partition, now_ms: int) -> tuple[dict[bytes, int], int]:
    """Map each key of the dirty range to its latest offset; return the map and the range's end."""
    high = part.high
    min_lag_ms = part.topic.min_lag_ms
    lag_cutoff = now_ms - min_lag_ms if min_lag_ms else None
    latest: dict[bytes, int] = {}
    for offset, raw in log.scan(part, max(part.cleaned, part.low), high):
        meta = peek_record(raw)
        if lag_cutoff is not None and meta.timestamp > lag_cutoff:
            return latest, offset
        key = meta.key
        if key is not None:
            if len(latest) >= MAX_MAP_KEYS and key not in latest:
                return latest, offset
            latest[key] = offset
    return latest, high


def _compact(log: EmbeddedLog, part: Partition, now_ms: int, force: bool) -> int:
    if not _compaction_due(part, now_ms, force):
        return 0
    target = part.high
    removed = 0
    while True:
        before = part.cleaned
        removed += _compact_pass(log, part, now_ms)
        # More passes while the key map filled up before the dirty range ended
        # (a young record under min.compaction.lag.ms stops progress instead).
        if log.closing or part.cleaned >= target or part.cleaned <= before:
            return removed


def _compact_pass(log: EmbeddedLog, part: Partition, now_ms: int) -> int:
    latest, end = _key_map(log, part, now_ms)
    delete_retention_ms = part.topic.delete_retention_ms
    removed = kept = 0
    next_due = NO_TOMBSTONES
    deletes: list[bytes] = []
    rewrites: list[tuple[bytes, bytes]] = []
    for offset, raw in log.scan(part, part.low, end):
        meta = peek_record(raw)
        newest = latest.get(meta.key) if meta.key is not None else None
        if newest is not None and newest > offset:
            deletes.append(part.key(offset))
        elif meta.tombstone:
            horizon = meta.horizon
            if horizon is None:
                horizon = now_ms + delete_retention_ms
                if horizon > now_ms:
                    rewrites.append((part.key(offset), with_horizon(raw, horizon)))
            if horizon <= now_ms:
                deletes.append(part.key(offset))
            else:
                next_due = min(next_due, horizon)
                kept += 1
        else:
            kept += 1
        if len(deletes) + len(rewrites) >= _CHUNK:
            if log.closing:
                return removed
            log.write(rewrites, deletes)
            removed += len(deletes)
            deletes, rewrites = [], []
    if log.closing:
        return removed
    rewrites.append((part.clean_key, OFFSET.pack(end)))
    log.write(rewrites, deletes)
    removed += len(deletes)
    part.cleaned = end
    part.clean_live = kept
    part.tombstone_due = next_due
    return removed
