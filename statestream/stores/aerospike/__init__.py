"""``AerospikeStore``: remote, shared state on an Aerospike cluster.

URL ``aerospike://host1:3000,host2:3000/namespace`` with
:class:`~statestream.config.AerospikeOptions` in the query string, e.g.
``aerospike://db1:3000,db2:3000/state?set_prefix=orders.&ttl=86400``. A host
without a port uses 3000; IPv6 addresses go in brackets (``[::1]:3000``).

Layout: one set per table, named ``set_prefix + table``. The partitions of a
table share its set, and a record's user key is
``<partition, 4 bytes big-endian><kind, 1 byte><store key>``, so keys of
different partitions, and the offset records, can never collide. Data records
(kind ``d``) keep the value in bin ``v`` and the partition number in bin
``p``, which the partition's queries filter on; the offset record of a
partition (kind ``o``) keeps the changelog offset in bin ``o`` and the
store's metadata in map bin ``m`` (name -> bytes), and has no ``p`` bin, so
no query sees it. User keys are sent to the server
(``POLICY_KEY_SEND``): without them the server keeps only a digest and a query
could not give keys back.

Clients: one client per process and connection settings, shared by every
store through a :class:`ClientPool` and closed when the last of its stores
closes.

This package is the only one that imports aerospike; ``batching`` and
``iteration`` are plain arithmetic and sorting and import it neither.
"""

from __future__ import annotations

from statestream.stores.aerospike.clients import (
    ClientFactory,
    ClientLease,
    ClientPool,
    client_config,
    parse_hosts,
)
from statestream.stores.aerospike.store import AerospikeStore

__all__ = [
    "AerospikeStore",
    "ClientFactory",
    "ClientLease",
    "ClientPool",
    "client_config",
    "parse_hosts",
]
