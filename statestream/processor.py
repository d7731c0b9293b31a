"""``Processor``: the one class users subclass.

::

    class WordCount(Processor):
        topics = ["sentences"]
        counts = Table("counts", default=int)

        def process(self, message, ctx):
            for word in message.value.split():
                self.counts[word] += 1

Class attributes configure it: ``topics`` (source topics, co-partitioned),
``outputs`` (topics it sends to; created with the source partition count if
missing), ``key_codec``/``value_codec`` for its source topics, and
``error_policy`` (overrides the app's). Tables and global tables are
declared as class attributes and found automatically.

One instance is created per assigned partition, on that partition's thread,
so instance attributes are private to a partition and need no locking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from statestream.context import Context, Message
from statestream.errors import ConfigurationError
from statestream.serde import Codec
from statestream.tables.globaltable import GlobalTable
from statestream.tables.table import Table
from statestream.tables.windowed_shard import ClosedWindow

__all__ = ["REPARTITION_PREFIX", "Processor", "repartition"]

#: How a repartition stream is named in ``topics`` until the app resolves it.
REPARTITION_PREFIX = "repartition:"


def repartition(stream: str) -> str:
    """Name the repartition stream ``stream`` as a source in ``Processor.topics``.

    The app resolves it to the internal topic ``<app id>-<stream>-repartition``,
    which :meth:`Context.group_by` writes to. ``stream`` takes the characters
    of a topic name.
    """
    if not stream or not all(c.isalnum() or c in "._-" for c in stream):
        raise ConfigurationError(
            f"repartition stream names take letters, digits, '.', '_' and '-', got {stream!r}"
        )
    return REPARTITION_PREFIX + stream


class Processor:
    """Subclass it, name the source topics, declare tables, implement ``process``."""

    topics: ClassVar[Sequence[str]] = ()
    outputs: ClassVar[Sequence[str]] = ()
    key_codec: ClassVar[str | Codec] = "json"
    value_codec: ClassVar[str | Codec] = "json"
    error_policy: ClassVar[str | None] = None

    def process(self, message: Message, ctx: Context) -> None:
        """Handle one source record. Runs on the record's partition thread."""
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def on_assigned(self, partition: int) -> None:
        """Called on the partition thread once ``partition`` is restored and ready."""

    def on_window_close(self, key: Any, window: ClosedWindow, value: Any) -> None:
        """Called when a window of a windowed table this class declares closes.

        ``window`` names the table and the bounds (``[start, end)``, ms);
        ``value`` is the window's final value. Runs on the partition thread,
        as part of processing the record whose write moved stream time past
        the window's end plus grace, so ``ctx.send`` outputs commit with that
        record. At-least-once: after a crash a window may close (and this be
        called) again; it is never skipped.
        """

    def on_revoked(self, partition: int) -> None:
        """Called on the partition thread before ``partition`` is closed.

        After the partition's final commit when it is revoked or the worker
        stops; without a commit when it was lost (another member owns it
        already) or the worker stops on a fatal error.
        """

    @classmethod
    def tables(cls) -> list[Table[Any, Any]]:
        """Return the tables declared on this class and its bases."""
        found: dict[str, Table[Any, Any]] = {}
        for table in cls.table_attributes().values():
            found[table.name] = table
        return list(found.values())

    @classmethod
    def table_attributes(cls) -> dict[str, Table[Any, Any]]:
        """Return ``{attribute name: table}`` for the tables declared on this class
        and its bases (a subclass's attribute wins)."""
        found: dict[str, Table[Any, Any]] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                if isinstance(value, Table):
                    found[attribute] = value
        return found

    @classmethod
    def global_tables(cls) -> list[GlobalTable[Any, Any]]:
        """Return the global tables declared on this class and its bases
        (a subclass's attribute wins; the app checks that names are unique)."""
        found: dict[str, GlobalTable[Any, Any]] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                if isinstance(value, GlobalTable):
                    found[attribute] = value
        return list({id(t): t for t in found.values()}.values())

    @classmethod
    def validate(cls) -> None:
        """Raise :class:`ConfigurationError` if the class is not usable."""
        if isinstance(cls.topics, str) or not cls.topics:
            raise ConfigurationError(
                f"{cls.__name__}.topics must be a non-empty list of topic names, got {cls.topics!r}"
            )
        if cls.process is Processor.process:
            raise ConfigurationError(f"{cls.__name__} must implement process(self, message, ctx)")
