"""State stores: bytes-level, ordered, with the changelog offset stored atomically.

Choose one by URL with :func:`open_store`; see :mod:`statestream.stores.base`
for the contract every store honours. Backends are imported only when their
scheme is used, so the ``aerospike`` client need not be installed to use
LevelDB.
"""

from statestream.stores.base import Changes, Meta, Store, StoreURL
from statestream.stores.registry import StoreRegistry, destroy_store, open_store, parse_store_url

__all__ = [
    "Changes",
    "Meta",
    "Store",
    "StoreRegistry",
    "StoreURL",
    "destroy_store",
    "open_store",
    "parse_store_url",
]
