"""``App``: an application id, its processors and its settings.

::

    app = App("wordcount", processors=[WordCount])

Settings not given are read from ``STATESTREAM_*`` environment variables,
then defaults (see :class:`~statestream.config.AppConfig`): with none at all
the app runs on an embedded log and LevelDB under ``./statestream-data``.
Run it with ``statestream worker mymodule:app``.

``listeners`` (or :meth:`App.add_listener`) are objects told of the worker's
assignments, restores, commits and revocations, also when the CLI runs the
app (see :mod:`statestream.listeners` for the methods and their threads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from statestream.config import AppConfig
from statestream.errors import ConfigurationError, NotRunningError, QueryError
from statestream.processor import REPARTITION_PREFIX, Processor
from statestream.query import Answer, Page, QueryService
from statestream.query.running import running
from statestream.serde import Codec, get_codec
from statestream.tables.globaltable import GlobalTable
from statestream.tables.table import Table
from statestream.tables.windowed import WindowedTable

__all__ = ["App"]


class App:
    """A statestream application. Immutable once built (but for :meth:`add_listener`,
    called before a worker runs it); safe to share between threads."""

    def __init__(
        self,
        app_id: str,
        processors: Sequence[type[Processor]],
        *,
        topic_codecs: Mapping[str, tuple[str | Codec, str | Codec]] | None = None,
        listeners: Sequence[object] = (),
        **settings: Any,
    ) -> None:
        self.config = AppConfig.resolve(app_id, **settings)
        # The service of the worker running this very object (attach_queries).
        self._queries: QueryService | None = None
        self._listeners = list(listeners)
        self._settings = dict(settings)
        self._topic_codecs = dict(topic_codecs or {})
        if not processors:
            raise ConfigurationError(f"app {app_id!r} needs at least one Processor subclass")
        for proc in processors:
            if not (isinstance(proc, type) and issubclass(proc, Processor)):
                raise ConfigurationError(f"{proc!r} is not a Processor subclass")
            proc.validate()
        self.processors = tuple(processors)
        # Repartition streams named in `topics` become internal topics.
        self._topics: dict[type[Processor], tuple[str, ...]] = {
            proc: tuple(self._resolve(t) for t in proc.topics) for proc in self.processors
        }
        # Every topic's codecs are resolved here, so the app stays read-only
        # once built (partition threads look codecs up concurrently).
        codecs = {
            topic: (get_codec(proc.key_codec), get_codec(proc.value_codec))
            for proc in self.processors
            for topic in self._topics[proc]
        }
        codecs.update(
            {topic: (get_codec(k), get_codec(v)) for topic, (k, v) in (topic_codecs or {}).items()}
        )
        self._codecs = codecs
        self._default_codecs = (get_codec("json"), get_codec("json"))
        names: dict[str, Table[Any, Any]] = {}
        for proc in self.processors:
            for table in proc.tables():
                if names.get(table.name, table) is not table:
                    raise ConfigurationError(f"two different tables are named {table.name!r}")
                names[table.name] = table
        # One internal table per repartition topic read: the last (offset,
        # sequence) applied per origin partition, which makes re-sent records
        # (a crash between flush and commit upstream) count once.
        self._dedup: dict[str, Table[Any, Any]] = {}
        for topic in self.repartition_topics():
            stream = topic[len(self.app_id) + 1 : -len("-repartition")]
            seen: Table[Any, Any] = Table(f"{stream}-repartition-seen")
            if seen.name in names:
                raise ConfigurationError(f"table name {seen.name!r} is reserved for statestream")
            self._dedup[topic] = names[seen.name] = seen
        self._tables = list(names.values())
        self._globals = self._collect_globals(set(names))

    @property
    def listeners(self) -> tuple[object, ...]:
        """The app's listeners (see :mod:`statestream.listeners`), in the order added."""
        return tuple(self._listeners)

    def add_listener(self, listener: object) -> None:
        """Add a listener: any object with some of the methods of :mod:`statestream.listeners`.

        Workers take the app's listeners when they are created: add them
        before that (at import time, for an app run by ``statestream worker``).
        """
        self._listeners.append(listener)

    @property
    def app_id(self) -> str:
        """The application id (consumer group and changelog topic prefix)."""
        return self.config.app_id

    def tables(self) -> list[Table[Any, Any]]:
        """Every table declared by the app's processors."""
        return list(self._tables)

    def global_tables(self) -> list[GlobalTable[Any, Any]]:
        """Every global table declared by the app's processors."""
        return list(self._globals.values())

    def global_topic(self, table: GlobalTable[Any, Any]) -> str:
        """The topic that feeds ``table``: its ``topic``, else ``<app id>-<name>-changelog``."""
        return table.topic or f"{self.app_id}-{table.name}-changelog"

    def _collect_globals(self, table_names: set[str]) -> dict[str, GlobalTable[Any, Any]]:
        """Find the global tables; check their names and topics; register their codecs.

        Names are unique across tables and global tables (both name stores).
        A global table's topic is its own: not another's, not a table's
        changelog or a repartition stream (their records are not table data
        as they are). Its codecs are the topic's, so ``ctx.send`` to it
        encodes them; ``topic_codecs`` may name them instead.
        """
        found: dict[str, GlobalTable[Any, Any]] = {}
        for proc in self.processors:
            for table in proc.global_tables():
                if found.get(table.name, table) is not table:
                    raise ConfigurationError(
                        f"two different global tables are named {table.name!r}"
                    )
                if table.name in table_names:
                    raise ConfigurationError(
                        f"a table and a global table are both named {table.name!r}; table names "
                        "are unique across both kinds (they name the local stores): rename one"
                    )
                found[table.name] = table
        internal = {f"{self.app_id}-{name}-changelog" for name in table_names}
        internal.update(self.repartition_topics())
        readers: dict[str, str] = {}
        for name, table in found.items():
            topic = self.global_topic(table)
            if topic in internal:
                raise ConfigurationError(
                    f"global table {name!r} cannot read topic {topic!r}: statestream writes it "
                    "for a table or a repartition stream; name a topic of its own"
                )
            if topic in readers:
                raise ConfigurationError(
                    f"global tables {readers[topic]!r} and {name!r} both read topic {topic!r}; "
                    "declare one and use it from both processors"
                )
            readers[topic] = name
            codecs = (table.key_codec, table.value_codec)
            current = self._codecs.get(topic)
            if topic in self._topic_codecs:
                continue
            if current is not None and (current[0].name, current[1].name) != (
                codecs[0].name,
                codecs[1].name,
            ):
                raise ConfigurationError(
                    f"topic {topic!r} is read by a processor with other codecs than global "
                    f"table {name!r}'s; declare the same codecs on both"
                )
            self._codecs[topic] = codecs
        return found

    def _resolve(self, topic: str) -> str:
        if topic.startswith(REPARTITION_PREFIX):
            return self.repartition_topic(topic[len(REPARTITION_PREFIX) :])
        return topic

    def dedup_table(self, topic: str) -> Table[Any, Any] | None:
        """The internal table that drops re-sent records of repartition ``topic``."""
        return self._dedup.get(topic)

    def repartition_topic(self, stream: str) -> str:
        """The internal topic of repartition stream ``stream``: ``<app>-<stream>-repartition``."""
        return f"{self.app_id}-{stream}-repartition"

    def topics_of(self, processor: type[Processor]) -> tuple[str, ...]:
        """The source topics of ``processor``, repartition streams resolved."""
        return self._topics[processor]

    def source_topics(self) -> list[str]:
        """Every source topic (repartition topics included), in declaration order."""
        seen: dict[str, None] = {}
        for proc in self.processors:
            for topic in self._topics[proc]:
                seen[topic] = None
        return list(seen)

    def repartition_topics(self) -> list[str]:
        """The internal repartition topics among the source topics."""
        internal = {
            self._resolve(t)
            for proc in self.processors
            for t in proc.topics
            if t.startswith(REPARTITION_PREFIX)
        }
        return [t for t in self.source_topics() if t in internal]

    def output_topics(self) -> list[str]:
        """Every declared output topic, windowed tables' final topics included."""
        seen: dict[str, None] = {}
        for proc in self.processors:
            for topic in proc.outputs:
                seen[topic] = None
        for table in self._tables:
            if isinstance(table, WindowedTable) and table.final_topic is not None:
                seen[table.final_topic] = None
        return list(seen)

    def codecs(self, topic: str) -> tuple[Codec, Codec]:
        """Return ``(key codec, value codec)`` for ``topic``.

        Source topics use their processor's codecs unless ``topic_codecs``
        says otherwise; other topics default to json.
        """
        return self._codecs.get(topic, self._default_codecs)

    def with_settings(self, **settings: Any) -> App:
        """Return a copy of the app with some settings given (the CLI's flags).

        ``None`` values are ignored; settings derived from others (the broker
        and store URLs from the data directory) follow unless given. The
        copy has the same listeners.
        """
        merged = {**self._settings, **{k: v for k, v in settings.items() if v is not None}}
        return App(
            self.app_id,
            self.processors,
            topic_codecs=self._topic_codecs,
            listeners=self._listeners,
            **merged,
        )

    # -- queries (docs/queries.md) ---------------------------------------------------

    def query(
        self, table: str, key: Any, *, standby: bool = False, partition: int | None = None
    ) -> Answer:
        """The committed value of ``key`` in ``table``, read from any thread.

        Answered by the worker running this app in this process, from the
        key's partition if it holds it (``standby=True``: or from its standby
        copy, whose lag the answer carries). Windowed tables answer the key's
        windows; global tables, this worker's copy. Raises NotRunningError,
        KeyNotLocalError (with the owning worker's endpoint when known),
        PartitionNotReadyError or UnknownTableError.
        """
        return self._queries_or_raise().get(table, key, standby=standby, partition=partition)

    def query_range(
        self,
        table: str,
        *,
        prefix: Any = None,
        start: Any = None,
        end: Any = None,
        limit: int = 100,
        partition: int | None = None,
        standby: bool = False,
    ) -> Page:
        """Up to ``limit`` committed ``(key, value)`` pairs per partition held here: keys
        from ``start`` to ``end`` (exclusive) and/or starting with ``prefix``."""
        return self._queries_or_raise().range(
            table,
            prefix=prefix,
            start=start,
            end=end,
            limit=limit,
            partition=partition,
            standby=standby,
        )

    def attach_queries(self, service: QueryService | None) -> None:
        """(Worker) Answer :meth:`query` with ``service`` (None: no worker runs the app)."""
        self._queries = service

    def _queries_or_raise(self) -> QueryService:
        service = self._queries
        if service is not None:
            return service
        # Another App object of this app id (statestream worker runs a copy).
        found = running(self.app_id)
        if len(found) == 1:
            return found[0]
        if found:
            raise QueryError(
                f"app {self.app_id!r}: {len(found)} workers run it in this process; query "
                "through the app object each one runs (worker.app), or worker.queries"
            )
        raise NotRunningError(
            f"app {self.app_id!r}: no worker runs it in this process, so there is no state "
            "to read; start Worker(app).run() (or statestream worker) here, or ask a "
            "running worker's HTTP endpoint (--web-port)"
        )

    def __repr__(self) -> str:
        return f"<App {self.app_id!r} processors={[p.__name__ for p in self.processors]}>"
