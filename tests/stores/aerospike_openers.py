"""The Aerospike backends of the store tests: the in-process fake, or a real server.

``Backend`` opens Aerospike stores on a fresh fake cluster, or on the real
server named by ``STATESTREAM_TEST_AEROSPIKE=host:port`` (namespace
``STATESTREAM_TEST_AEROSPIKE_NAMESPACE``, default ``test``). The backings are
how the Aerospike store joins the contract suite (see ``conftest.py``).

Runs against a real server use set names unique to the run, empty each set
before a test first uses it, and truncate them all when the run ends.
"""

from __future__ import annotations

import atexit
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statestream.config import AerospikeOptions
from statestream.stores.aerospike import AerospikeStore, ClientPool, client_config, parse_hosts
from statestream.stores.base import Store
from tests.fakes.aerospike import FakeServer

#: Opens the store of ``(table, partition)``.
Opener = Callable[[str, int], Store]
#: Destroys the store of ``(table, partition)``, as ``registry.destroy_store`` does.
Destroyer = Callable[[str, int], None]


@dataclass(frozen=True)
class Backing:
    """How one test reaches a store type's backing state (shared by its opens and destroys)."""

    open: Opener
    destroy: Destroyer


REAL_ADDRESS = os.environ.get("STATESTREAM_TEST_AEROSPIKE", "")
REAL_NAMESPACE = os.environ.get("STATESTREAM_TEST_AEROSPIKE_NAMESPACE", "") or "test"
# Unique to this run, so runs against a shared server never see each other's sets.
RUN_PREFIX = f"sst{uuid.uuid4().hex[:8]}."
FAKE_HOSTS = [("127.0.0.1", 3000)]
_SET_NAME = re.compile(r"[A-Za-z0-9._\-]{1,63}")


# -- backends: the fake, or a real server ---------------------------------------


class RealCluster:
    """The real server of this run: an admin client, the sets used, truncation at exit."""

    def __init__(self, address: str, namespace: str) -> None:
        self.hosts = parse_hosts([address])
        self.namespace = namespace
        self.pool = ClientPool()
        # Held for the whole run, so the stores' client stays connected between tests.
        self._lease = self.pool.acquire(client_config(self.hosts, AerospikeOptions()))
        self.client = self._lease.client
        self.sets: set[str] = set()
        atexit.register(self.truncate_all)

    def empty_set(self, set_name: str) -> None:
        self.sets.add(set_name)
        query = self.client.query(self.namespace, set_name)
        rows = query.results({"total_timeout": 60000}, {"nobins": True})
        keys = [(self.namespace, set_name, None, key[3]) for key, _, _ in rows]
        for start in range(0, len(keys), 1000):
            self.client.batch_remove(keys[start : start + 1000])

    def records(self, set_name: str) -> list[tuple[Any, dict[str, Any]]]:
        rows = self.client.query(self.namespace, set_name).results({"total_timeout": 60000})
        return [(key[2], bins) for key, _, bins in rows]

    def truncate_all(self) -> None:
        for set_name in sorted(self.sets):
            self.client.truncate(self.namespace, set_name, 0)
        self.sets.clear()
        self._lease.release()


_real_clusters: list[RealCluster] = []


def real_cluster() -> RealCluster:
    if not _real_clusters:
        _real_clusters.append(RealCluster(REAL_ADDRESS, REAL_NAMESPACE))
    return _real_clusters[0]


class Backend:
    """Opens Aerospike stores for one test, on the fake or on the real server."""

    def __init__(self, kind: str, server: FakeServer | None = None) -> None:
        self.kind = kind
        self.stores: list[AerospikeStore] = []
        self._emptied: set[str] = set()
        if kind == "fake":
            self.server = server or FakeServer()
            self.hosts = FAKE_HOSTS
            self.namespace = "test"
            self.pool = ClientPool(self.server.client)
            self.prefix = ""
        else:
            self.cluster = real_cluster()
            self.hosts = list(self.cluster.hosts)
            self.namespace = self.cluster.namespace
            self.pool = self.cluster.pool
            self.prefix = RUN_PREFIX

    def open(self, table: str = "t", partition: int = 0, **options: Any) -> AerospikeStore:
        options.setdefault("set_prefix", self.prefix)
        set_name = options["set_prefix"] + table if isinstance(table, str) else ""
        if self.kind == "real" and _SET_NAME.fullmatch(set_name) and set_name not in self._emptied:
            self.cluster.empty_set(set_name)
            self._emptied.add(set_name)
        store = AerospikeStore(
            self.hosts,
            self.namespace,
            table,
            partition,
            AerospikeOptions(**options),
            pool=self.pool,
        )
        self.stores.append(store)
        return store

    def destroy(self, table: str = "t", partition: int = 0, **options: Any) -> None:
        """``AerospikeStore.destroy_partition`` with this backend's client and set prefix."""
        options.setdefault("set_prefix", self.prefix)
        AerospikeStore.destroy_partition(
            self.hosts,
            self.namespace,
            table,
            partition,
            AerospikeOptions(**options),
            pool=self.pool,
        )

    def records(self, set_name: str) -> list[tuple[Any, dict[str, Any]]]:
        if self.kind == "fake":
            return self.server.set_records(self.namespace, set_name)
        return self.cluster.records(set_name)

    def close(self) -> None:
        for store in self.stores:
            store.close()


def fake_aerospike_backing(workdir: Path) -> Backing:
    """Contract-suite backing: a fresh fake cluster per test."""
    backend = Backend("fake")
    return Backing(backend.open, backend.destroy)


def real_aerospike_backing(workdir: Path) -> Backing:
    """Contract-suite backing: the real server, sets emptied before first use."""
    backend = Backend("real")
    return Backing(backend.open, backend.destroy)
