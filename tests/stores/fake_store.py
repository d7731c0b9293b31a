"""A third-party-style store for the registry tests, reached only through an entry point.

Nothing imports this module directly: the registry tests check that it is
imported only when a URL uses its scheme.
"""

from __future__ import annotations

from typing import ClassVar

from statestream.stores.memory import MemoryStore


class FakeStore(MemoryStore):
    """A memory store under the ``fake`` scheme."""

    scheme: ClassVar[str] = "fake"


class NotAStore:
    """Registered by a test as a store, which it is not."""
