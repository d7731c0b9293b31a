"""``WorkerStores``: where a worker's stores are, for its :class:`QueryService`.

The query threads (``app.query`` callers, the HTTP server's) ask it for the
store of a (table, partition): the partition's active store once restored
(TableManager.query_store, under the manager's lock), else this worker's
standby copy (StandbyThread.query_store). Owners of partitions elsewhere
come from the group's assignment (:meth:`WorkerStores.set_owners`, by the
group client thread).

Thread ownership: any thread; the owner map is replaced whole, never edited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from statestream.stores.base import Store
from statestream.tables.manager import TableManager
from statestream.types import TopicPartition
from statestream.worker.standby import StandbyThread

__all__ = ["WorkerStores"]


class WorkerStores:
    """A worker's :class:`~statestream.query.service.StoreSource`."""

    def __init__(
        self,
        manager: TableManager,
        partitions: Callable[[], int],
        standby: Callable[[], StandbyThread | None],
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._manager = manager
        self._partitions = partitions
        self._standby = standby
        self._busy = busy
        self._owners: Mapping[int, str] = {}

    def partition_count(self) -> int:
        return self._partitions()

    def active_store(self, table: str, partition: int) -> Store | None:
        return self._manager.query_store(table, partition)

    def standby_store(self, table: str, partition: int) -> tuple[Store, int | None] | None:
        standby = self._standby()
        if standby is None:
            return None
        return standby.query_store(TopicPartition(self._manager.changelog_topic(table), partition))

    def owner(self, partition: int) -> str | None:
        return self._owners.get(partition)

    def busy(self) -> bool:
        return self._busy()

    def set_owners(self, owners: Mapping[int, str]) -> None:
        """Partition -> HTTP endpoint of the member holding it active (the assignment's)."""
        self._owners = dict(owners)
