"""What a query returns: a key's value, or a page of a range, with where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Answer", "Copy", "Page"]

#: Which copy answered: the partition's active store, a standby copy of it
#: (behind by ``lag`` changelog records), or this worker's global table copy.
Copy = Literal["active", "standby", "global"]


@dataclass(frozen=True)
class Answer:
    """One key's committed value (``found`` False: the key has none).

    ``offset`` is the changelog offset of the last batch the copy applied;
    ``lag`` the changelog records the copy is behind the changelog's end
    (``None`` when unknown; ``0`` for an active partition, whose changelog
    it writes itself). A windowed table's ``value`` is the key's windows, a
    list of :class:`~statestream.tables.windowed.WindowedValue`.
    """

    table: str
    key: Any
    value: Any
    found: bool
    partition: int | None
    copy: Copy
    offset: int | None = None
    lag: int | None = None

    def document(self) -> dict[str, Any]:
        """A JSON-ready dict (values as the codec decoded them)."""
        return {
            "table": self.table,
            "key": self.key,
            "found": self.found,
            "value": self.value,
            "partition": self.partition,
            "copy": self.copy,
            "offset": self.offset,
            "lag": self.lag,
        }


@dataclass
class Page:
    """Up to ``limit`` ``(key, value)`` pairs of a range, in key order per partition.

    ``partitions`` are the partitions read (each from one consistent state
    of its store); ``missing`` those of the table this worker does not hold
    (another worker answers for them); ``more`` whether a partition had
    more pairs than fit.
    """

    table: str
    items: list[tuple[Any, Any, int | None]] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    more: bool = False
    copy: Copy = "active"

    def document(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "table": self.table,
            "items": [{"key": k, "value": v, "partition": p} for k, v, p in self.items],
            "partitions": self.partitions,
            "missing": self.missing,
            "more": self.more,
            "copy": self.copy,
        }
