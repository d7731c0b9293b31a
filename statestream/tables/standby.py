"""``StandbyReplica``: one table partition's local store kept up to date from its changelog.

The changelog reader's standby mode (:class:`~statestream.tables.recovery.ChangelogReader`):
records are applied in changelog order with the restore's fencing; a record
of uncommitted work (its source offset at or past the committed source
offset) is not applied until the committed offset passes it. Meanwhile the
replica pauses its changelog partition and reads again from that record, so
nothing is lost and nothing is applied around it. The store's offset moves
with every batch applied, written atomically with the data, so a promotion
(or a restart) restores only what the replica has not applied.

Thread ownership: the standby thread (:mod:`statestream.worker.standby`),
which owns the fetcher it passes in; the store goes to a partition thread
when the partition becomes active on this member.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from statestream.log.base import Fetcher
from statestream.stores.base import Store
from statestream.tables.recovery import ChangelogReader, Derive, clear_reason
from statestream.types import Record, TopicPartition

__all__ = ["StandbyReplica"]

log = logging.getLogger("statestream.standby")


class StandbyReplica:
    """Tails ``changelog`` into ``store`` (see the module docstring)."""

    def __init__(
        self,
        table: str,
        partition: int,
        store: Store,
        changelog: TopicPartition,
        committed: Mapping[str, int | None],
        *,
        batch_size: int = 10_000,
        derive: Derive | None = None,
    ) -> None:
        self.table = table
        self.partition = partition
        self.store = store
        self.changelog = changelog
        self.batch_size = batch_size
        self.derive = derive
        self.reader = ChangelogReader(
            store, changelog, committed, batch_size, mode="standby", derive=derive
        )
        #: Records applied since the replica started.
        self.applied = 0

    def start(self, fetcher: Fetcher) -> None:
        """Check the store against the changelog and seek past its offset.

        The fetcher must have ``changelog`` assigned. A store the changelog
        cannot continue (recreated changelog, history removed by retention)
        is cleared first, as a restore would.
        """
        low, high = fetcher.watermarks(self.changelog)
        offset = self.store.offset()
        cleared = clear_reason(offset, low, high, offset is None and self.store.count() > 0)
        if cleared is not None:
            log.warning(
                "standby %s: %s",
                self.changelog,
                cleared,
                extra={"table": self.table, "partition": self.changelog.partition},
            )
            self.store.clear()
            offset = None
        self.reader = ChangelogReader(
            self.store,
            self.changelog,
            self.reader.committed,
            self.batch_size,
            mode="standby",
            derive=self.derive,
        )
        fetcher.seek(self.changelog, low if offset is None else offset + 1)

    def apply(self, records: list[Record], fetcher: Fetcher) -> None:
        """Apply this replica's ``records`` (in offset order) and write them with their offset."""
        reader = self.reader
        before = reader.applied
        reader.take(records)
        reader.flush()
        self.applied += reader.applied - before
        if reader.waiting is not None:
            # Read the waiting record (and everything after it) again later.
            fetcher.seek(self.changelog, reader.waiting[0])
            fetcher.pause([self.changelog])

    def committed_moved(self, committed: Mapping[str, int | None], fetcher: Fetcher) -> None:
        """Take the source topics' new committed offsets; resume if no longer waiting."""
        self.reader.committed = committed
        if self.reader.waiting is not None and self.reader.resume():
            fetcher.resume([self.changelog])

    @property
    def waiting(self) -> bool:
        """Whether the replica waits for the source offsets to be committed."""
        return self.reader.waiting is not None

    def offset(self) -> int | None:
        """The store's offset: the last changelog offset applied."""
        return self.store.offset()

    def lag(self, high: int) -> int:
        """Changelog offsets not applied yet, given the high watermark ``high``."""
        offset = self.store.offset()
        return max(high - (0 if offset is None else offset + 1), 0)
