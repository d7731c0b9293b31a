"""Tables: dict-like, partitioned, durable state with changelogs and recovery.

:class:`Table` is what processors use; :class:`TableManager` owns the shards
of the assigned partitions, runs the commit protocol and restores partitions
from their changelogs. :class:`GlobalTable` is a complete, read-only copy of
a topic on every worker (its :class:`GlobalCopy`).
"""

from statestream.tables.globaltable import GlobalCopy, GlobalTable
from statestream.tables.manager import PartitionState, PendingCommit, TableManager
from statestream.tables.recovery import RestoreOutcome, RestoreProgress, restore
from statestream.tables.shard import Change, TableShard
from statestream.tables.table import Table

__all__ = [
    "Change",
    "GlobalCopy",
    "GlobalTable",
    "PartitionState",
    "PendingCommit",
    "RestoreOutcome",
    "RestoreProgress",
    "Table",
    "TableManager",
    "TableShard",
    "restore",
]
