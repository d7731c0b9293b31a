"""The per-call policy dicts of one store (timeouts, key sending, TTL, query filters).

Built once per store from its options; immutable afterwards except for the
query filters :meth:`Policies.query_between` builds per call. Used by the
thread that owns the store.
"""

from __future__ import annotations

from typing import Any

import aerospike
from aerospike_helpers import expressions as exp

from statestream.config import AerospikeOptions
from statestream.stores.aerospike.layout import PARTITION_BIN, RANK_BIN

__all__ = ["Policies"]


class Policies:
    """The per-call policy dicts of one store, built once from its options."""

    def __init__(self, options: AerospikeOptions, partition: int) -> None:
        timeouts = {
            "total_timeout": options.total_timeout,
            "socket_timeout": options.socket_timeout,
            "max_retries": options.max_retries,
        }
        deletes = {"durable_delete": True} if options.durable_delete else {}
        record_ttl = {"ttl": aerospike.TTL_NEVER_EXPIRE if options.ttl == -1 else options.ttl}
        self.read: dict[str, Any] = dict(timeouts)
        self.batch: dict[str, Any] = dict(timeouts)
        self.remove: dict[str, Any] = {**timeouts, **deletes}
        self.record_remove: dict[str, Any] = dict(deletes)
        self.record_write: dict[str, Any] = {
            "key": aerospike.POLICY_KEY_SEND,
            **(record_ttl if options.ttl else {}),
        }
        # The offset record never expires, whatever the data's TTL (its
        # operation says so in its meta).
        self.offset_write: dict[str, Any] = {**timeouts, "key": aerospike.POLICY_KEY_SEND}
        # A query's socket idle limit is capped by its page limit: a frozen
        # server fails the query within query_timeout, never the client's
        # 30 s socket default.
        socket = options.socket_timeout or options.query_timeout
        self._partition = exp.Eq(exp.IntBin(PARTITION_BIN), partition)
        self.query: dict[str, Any] = {
            "total_timeout": options.query_timeout,
            "socket_timeout": min(socket, options.query_timeout),
            "max_retries": options.max_retries,
            "expressions": self._partition.compile(),
        }
        self.by_name: dict[str, dict[str, Any]] = {
            "read": self.read,
            "offset_write": self.offset_write,
            "remove": self.remove,
        }

    def query_between(self, lo: int | None, hi: int | None) -> dict[str, Any]:
        """The query policy for key ranks from ``lo`` to ``hi`` (both inclusive; ``None``: open)."""
        if lo is None and hi is None:
            return self.query
        rank = exp.IntBin(RANK_BIN)
        limits = [
            *([] if lo is None else [exp.GE(rank, lo)]),
            *([] if hi is None else [exp.LE(rank, hi)]),
        ]
        in_range = limits[0] if len(limits) == 1 else exp.And(*limits)
        unranked = exp.Not(exp.BinExists(RANK_BIN))
        keep = exp.And(self._partition, exp.Or(unranked, in_range))
        return {**self.query, "expressions": keep.compile()}
