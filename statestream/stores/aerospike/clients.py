"""Aerospike clients: host lists, the client config, and one shared client per settings.

Thread ownership: :class:`ClientPool` is thread-safe; a :class:`ClientLease`
belongs to the thread that owns the store holding it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import aerospike
from aerospike import exception as as_exc

from statestream.config import AerospikeOptions
from statestream.errors import ConfigurationError, StoreError

__all__ = ["ClientFactory", "ClientLease", "ClientPool", "client_config", "parse_hosts"]

#: Makes an Aerospike client from a client config; ``aerospike.client`` connects at once.
ClientFactory = Callable[[dict[str, Any]], Any]

DEFAULT_PORT = 3000


def parse_hosts(hosts: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Parse ``host[:port]`` strings (IPv6 in brackets) into ``(address, port)`` pairs."""
    if not hosts:
        raise ConfigurationError(
            "aerospike store URL needs at least one host, e.g. 'aerospike://db1:3000/namespace'"
        )
    parsed = []
    for text in hosts:
        if "@" in text:
            # Only the host: what comes before the '@' holds the password.
            raise ConfigurationError(
                f"aerospike host {text.rpartition('@')[2]!r}: pass credentials as "
                "?user=...&password=..., not in the host list"
            )
        address, port = text, str(DEFAULT_PORT)
        if text.startswith("["):
            address, _, rest = text[1:].partition("]")
            if rest:
                port = rest.removeprefix(":")
        elif text.count(":") == 1:
            address, port = text.split(":")
        if not address or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"aerospike host {text!r} is not 'address[:port]' with a port from 1 to 65535"
            )
        parsed.append((address, int(port)))
    return tuple(parsed)


def client_config(hosts: Sequence[tuple[str, int]], options: AerospikeOptions) -> dict[str, Any]:
    """Return the ``aerospike.client`` config for ``hosts`` and the connection options.

    Stores whose configs are equal share one client (see :class:`ClientPool`).
    """
    config: dict[str, Any] = {
        "hosts": [(a, p, options.tls_name) if options.tls_name else (a, p) for a, p in hosts],
        "connect_timeout": options.connect_timeout,
        "validate_keys": True,  # a misspelt policy key fails loudly instead of being ignored
    }
    if options.user is not None:
        config["user"] = options.user
        config["password"] = options.password or ""
    if options.tls_name is not None:
        config["tls"] = {"enable": True}
        if options.tls_cafile is not None:
            config["tls"]["cafile"] = options.tls_cafile
    return config


def _freeze(value: Any) -> Hashable:
    # Client configs are nested dicts and lists; a frozen copy keys the pool.
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    result: Hashable = value
    return result


class ClientLease:
    """One store's use of a pooled client; :meth:`release` gives it back (idempotent).

    Thread ownership: the thread that owns the store holding the lease.
    """

    def __init__(self, pool: ClientPool, key: Hashable, client: Any) -> None:
        self.client = client
        self._pool = pool
        self._key = key
        self._released = False

    def release(self) -> None:
        """Give the client back; the pool closes it when its last lease is released."""
        if not self._released:
            self._released = True
            self._pool._release(self._key, self.client)


class ClientPool:
    """Shares one Aerospike client per connection settings among stores.

    A client is heavy (a cluster-tending thread, connection pools per node)
    and thread-safe, so every store with the same settings uses the same one;
    it is reference-counted and closed when its last lease is released.
    Clients do not survive ``fork()``: a child process starts with an empty
    pool and leaves the parent's clients alone.

    Thread-safe: partition threads open and close stores concurrently.
    ``acquire`` holds the pool's lock while a new client connects (at most the
    ``connect_timeout``), so two stores never connect twice.
    """

    _shared: ClassVar[ClientPool | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, connect: ClientFactory | None = None) -> None:
        self._connect: ClientFactory = connect or aerospike.client
        self._lock = threading.Lock()
        self._clients: dict[Hashable, tuple[Any, int]] = {}
        self._pid = os.getpid()

    @classmethod
    def shared(cls) -> ClientPool:
        """The process-wide pool used when a store is given none.

        This is a class-level registry on purpose: stores opened by URL
        (``open_store``) have no object through which to share a client, and
        the point is one client per process. It holds no client while no
        store is open. Pass a pool to the store to bypass it.
        """
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def acquire(self, config: Mapping[str, Any]) -> ClientLease:
        """Return a lease on the client for ``config``, connecting one if needed.

        Raises the client's own exception if it cannot connect.
        """
        key = _freeze(config)
        with self._lock:
            if self._pid != os.getpid():
                self._clients.clear()
                self._pid = os.getpid()
            client, count = self._clients.get(key, (None, 0))
            if client is None:
                client = self._connect(dict(config))
            self._clients[key] = (client, count + 1)
        return ClientLease(self, key, client)

    def open_clients(self) -> int:
        """Return how many clients are open (one per distinct connection settings)."""
        with self._lock:
            return len(self._clients)

    def _release(self, key: Hashable, client: Any) -> None:
        with self._lock:
            current, count = self._clients.get(key, (None, 0))
            if current is not client:
                return  # a client from before a fork(), already forgotten
            if count > 1:
                self._clients[key] = (client, count - 1)
                return
            del self._clients[key]
        try:
            client.close()
        except as_exc.AerospikeError as exc:
            raise StoreError(f"closing the Aerospike client failed: {exc}") from exc
