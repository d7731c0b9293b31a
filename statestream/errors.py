"""The statestream error tree.

Everything statestream raises subclasses :class:`StateStreamError`, so an
operator can catch one class. Backend exceptions (plyvel, aerospike,
kafka-python) never escape raw: they are wrapped with ``raise ... from exc`` so
the cause stays in the traceback. Each class says when it is raised and what to
do about it.
"""

from __future__ import annotations


class StateStreamError(Exception):
    """Base class of every error statestream raises."""


class ConfigurationError(StateStreamError, ValueError):
    """A setting, URL or option is invalid.

    Raised at construction time, before any data is touched. Fix the setting
    named in the message; nothing needs cleaning up.
    """


class UnknownTableError(ConfigurationError):
    """A command named a table the app does not declare.

    The message lists the app's tables and global tables; use one of them.
    """


class UnknownStoreSchemeError(ConfigurationError):
    """A store URL names a scheme no built-in or installed store handles.

    The message lists the schemes that are known. Fix the URL, or install the
    package that registers the scheme under the ``statestream.stores`` entry
    point group.
    """


class SerializationError(StateStreamError):
    """A key or value could not be encoded or decoded by its codec."""


class EncodeError(SerializationError, TypeError):
    """An object cannot be encoded by the configured codec.

    The message names the codec and the type of the object. Convert the value
    to something the codec supports, or configure another codec.
    """


class DecodeError(SerializationError, ValueError):
    """Bytes could not be decoded by the configured codec.

    Usually a producer wrote with another codec than the one configured. The
    message names the codec and shows the start of the bytes.
    """


class UnsafeCodecError(ConfigurationError):
    """A codec that can execute code on decode (pickle) was requested implicitly.

    Pickle is only available as ``PickleCodec(trusted=True)``: a changelog is
    input, and unpickling input runs arbitrary code.
    """


class StoreError(StateStreamError):
    """A state store operation failed.

    Subclasses say why. A plain ``StoreError`` wraps an unexpected backend
    error (its ``__cause__``); check the store's disk or server, then restart:
    the store's data and offset only ever move together, so a restart recovers.
    """


class StoreClosedError(StoreError):
    """An operation was attempted on a store after ``close()``.

    A store belongs to one (table, partition) while the partition is assigned;
    after a revoke or shutdown it is closed. Open a new store instead.
    """


class InvalidKeyError(StoreError, TypeError):
    """A store was given a key or value that is not ``bytes``.

    Stores are bytes-level. Encode keys and values with a codec first (tables
    do this for you).
    """


class InvalidTableNameError(ConfigurationError):
    """A table name cannot be used to name store files or topics.

    Use letters, digits, ``.``, ``_`` and ``-`` only, not starting with ``.``,
    at most 200 characters.
    """


class OffsetRegressionError(StoreError):
    """A write tried to move a store's changelog offset backwards.

    Offsets only move forward; a lower offset means a stale writer or a
    recreated changelog. The write was not applied. Clear the store (it will be
    rebuilt from the changelog) if the changelog was recreated.
    """


class InvalidOffsetError(StoreError, ValueError):
    """A changelog offset given to a store is not a non-negative integer.

    Offsets are Kafka offsets: integers from 0. The write was not applied.
    """


class StoreLockedError(StoreError):
    """The store's files are held by another process (or another open handle).

    Two owners of one (table, partition) would corrupt each other's view. The
    message names the path: stop the other process, or give this one another
    data directory.
    """


class StoreHeldError(StoreLockedError):
    """``statestream inspect`` found a LevelDB store held by a running worker.

    LevelDB lets one process open a store, and the worker holding it is
    that process. The message names the table, partition and path. Inspect
    the store once the worker has stopped (or a copy of it: a standby's on
    another machine, or one a worker with another data directory restored).
    """


class StoreNotFoundError(StoreError):
    """``statestream inspect`` found no store of the table (or partition) asked for.

    The message names the store URL looked in. Check ``--data-dir`` or
    ``--store-url`` (they must be the worker's), the table name and the
    partition; a partition this machine never held has no local store.
    """


class StorePermissionError(StoreError, PermissionError):
    """The store's data directory cannot be created or written.

    The message names the path. Fix its ownership or permissions, or point the
    store URL at a writable directory.
    """


class StoreCorruptedError(StoreError):
    """The store's files exist but are damaged (the message names the file).

    A worker handles it: a store found damaged when it opens is deleted and
    rebuilt from its changelog at once; one found damaged by a read or a
    write while the partition processes ends the partition's task, which
    deletes its stores, and the worker starts a new task that rebuilds them
    (``statestream.worker.rebuilds`` bounds how often). Outside a worker,
    delete it with ``statestream.stores.destroy_store`` and let the next
    worker rebuild it.
    """


class OffsetRecordChangedError(StoreCorruptedError):
    """A remote store's offset record vanished or changed under the store.

    The store writes its offset record only over the version it last saw
    (Aerospike: a generation check). The record was gone (a server restart
    that lost an in-memory namespace, a truncate) or another writer had
    replaced it (a second owner of the partition). The store's data can no
    longer be trusted, so nothing old is written back. A worker handles it
    as damage: it deletes the partition's records and rebuilds them from the
    changelog (the message says which of the two happened). Outside a
    worker, destroy the store and let the next worker rebuild it.
    """


class LogError(StateStreamError):
    """A log (Kafka or the embedded log) operation failed.

    Subclasses say why; a plain ``LogError`` wraps an unexpected client error
    (see its ``__cause__``).
    """


class UnknownTransportSchemeError(ConfigurationError):
    """A broker URL names a transport that does not exist.

    Use ``kafka://host:9092[,host2:9092]`` or ``embedded:///path/to/dir``.
    """


class BrokerUnavailableError(LogError):
    """No broker answered at the configured address.

    The message lists the addresses tried. Check the broker is running and
    reachable from this machine, and the URL's host and port.
    """


class TopicNotFoundError(LogError):
    """A topic that must exist does not.

    Create it (statestream creates changelog topics itself), or fix the name.
    """


class TopicMismatchError(LogError):
    """A topic exists with a partition count or cleanup policy other than expected.

    Routing state by partition depends on these; statestream never repairs
    them silently. Recreate the topic with the settings in the message, or
    change the application's configuration to match it.
    """


class OffsetOutOfRangeError(LogError):
    """A fetch position is below the log start or beyond its end.

    Raised when the fetcher's reset policy is ``"error"``. Seek to a valid
    offset (the message gives the partition's range), or configure the
    fetcher with ``reset="earliest"`` or ``"latest"``.
    """


class ProduceError(LogError):
    """A record could not be written to the log.

    Nothing after the failed record is acknowledged; the caller must not
    commit source offsets past it. Check the broker and retry the batch.
    """


class TransactionError(LogError):
    """A transactional operation failed or is not supported by the transport.

    The transaction was aborted (or never began): nothing in it is visible to
    read-committed fetchers. Restart processing from the committed offsets.
    """


class LogLockedError(LogError):
    """The embedded log's directory is held by another process.

    Only one process may own an embedded log. Stop the other process, or use
    another directory in the broker URL.
    """


class GroupError(LogError):
    """Group membership or offset commit failed (for example a rebalance fenced us).

    Processing of the affected partitions must stop; they will be reassigned
    and resume from the last committed offsets.
    """


class TopicExistsError(LogError):
    """``create_topic`` was asked to create a topic that already exists.

    Use ``ensure_topic`` to create-or-validate instead.
    """


class StoreConnectionError(StoreError):
    """A remote store's servers cannot be reached, or refused this client.

    Raised when a store opens (the message lists the hosts tried) or when the
    cluster goes away under an open store. Check that the hosts and ports in
    the store URL are right and reachable from this machine, and the user,
    password and TLS settings. Nothing was written; open the store again once
    the servers answer.
    """


class StoreTimeoutError(StoreError, TimeoutError):
    """A remote store call did not finish within its timeout, retries included.

    Retries are bounded (``max_retries``) and so is the time they may take
    (``total_timeout``), so a slow or unreachable server surfaces here instead
    of blocking a partition thread. A write that timed out may or may not have
    been applied, but its changelog offset was not recorded, so replaying from
    the recorded offset repairs it. Check the cluster's health and the network,
    or raise the timeout in the store URL.
    """


class RecordTooLargeError(StoreError):
    """A value is larger than the remote store accepts in one record.

    Aerospike limits a record (key, value and overhead) to its namespace's
    ``max-record-size`` (1 MiB by default). The message names the table,
    partition and key. Keep values smaller (split them over several keys), or
    raise the namespace's ``max-record-size``. The batch's changelog offset was
    not recorded, so the batch is replayed once the limit allows it.
    """


class NamespaceNotFoundError(StoreError, ConfigurationError):
    """The store URL names a namespace the Aerospike cluster does not have.

    Namespaces are part of the server configuration, not created on demand.
    Fix the namespace in the store URL, or add it to the configuration of
    every node of the cluster. Nothing was written.
    """


class StoreWriteRejectedError(StoreError):
    """The store's server refused a write because of its own configuration.

    For Aerospike: a record TTL on a namespace that cannot expire records (no
    ``nsup-period`` and no ``allow-ttl-without-nsup``), or a set or namespace
    past its stop-writes limit. The message says which. Change the server
    configuration or the store option it names; the batch's changelog offset
    was not recorded, so nothing is lost.
    """


class TableError(StateStreamError):
    """A table was used in a way its contract does not allow."""


class TableContextError(TableError):
    """A table was read or written outside the processing of a partition.

    Tables are sharded by source partition: inside ``process()`` a table
    reads and writes the shard of the partition being processed. Outside it
    there is no current shard. Use the table only from ``process()`` (or bind
    a shard explicitly with ``table.bound_to(shard)`` in tools and tests).
    """


class EventTimeError(TableError, ValueError):
    """A windowed table's event time is not an int of milliseconds (or none could be found).

    The event time is the record's timestamp unless the table names an
    ``event_time`` function; fix that function so it returns an ``int`` of
    milliseconds since the epoch (``int(seconds * 1000)``). Windowed tables
    can only be written while a record is processed, which is what gives the
    write its time.
    """


class RestoreError(StateStreamError):
    """Restoring a table partition from its changelog failed or stalled.

    The message names the changelog partition and the offsets involved. The
    store keeps every batch applied so far with its offset; restarting resumes
    from there.
    """


class CommitError(StateStreamError):
    """A step of the commit protocol failed.

    The message says which step. Nothing after the failed step happened, so
    restarting recovers exact state: records of an unfinished commit are
    reprocessed, and changelog records they produced are skipped on restore.
    """


class DamagedStoresError(CommitError):
    """Step 4 of a commit found the stores of some partitions damaged.

    A store write found its data gone (for example an
    :class:`OffsetRecordChangedError` after a server restart that lost an
    in-memory namespace). Those partitions' changelog records and source
    offsets are committed; their stores were not written. Every other
    partition of the commit completed all four steps. ``damaged`` maps each
    damaged partition to its store's error. A worker handles it: it deletes
    those partitions' stores and rebuilds them from their changelogs in
    place, with a warning. Outside a worker, destroy the named stores and
    let the next worker rebuild them.
    """

    def __init__(self, message: str, damaged: dict[int, StoreCorruptedError]) -> None:
        super().__init__(message)
        self.damaged = damaged


class ProcessingError(StateStreamError):
    """A record could not be decoded or processed, and the error policy is ``stop``.

    The message names the topic, partition and offset, and the cause is
    attached. Fix the processor (or the data), or choose the ``skip`` or
    ``dead_letter`` policy; on restart processing resumes at that record.
    """


class WorkerError(StateStreamError):
    """The worker cannot run (bad topics, a partition thread died, a commit failed)."""


class InvalidMetadataError(InvalidKeyError, ValueError):
    """A store was given a metadata name or value it cannot store.

    Raised by ``Store.write(..., meta=...)`` and ``Store.meta(name)`` before
    anything is written: the whole batch, its offset and its metadata were
    not applied. Names are short ASCII identifiers (a letter or ``_``, then
    letters, digits or ``_``; at most 32 characters) and values are ``bytes``
    of at most 4096 bytes. Fix the caller; the message names the bad item.
    """


class QueryError(StateStreamError):
    """A query (``app.query``, the HTTP endpoint) could not be answered as asked.

    The subclasses say why; each message names the table, the key's
    partition and what to do.
    """


class NotRunningError(QueryError):
    """``app.query`` was called while no worker runs the app in this process.

    Queries read the state a running worker holds: start ``Worker(app).run()``
    (or ``statestream worker``) in this process first, or ask a running
    worker's HTTP endpoint (``--web-port``).
    """


class KeyNotLocalError(QueryError):
    """The key's partition is not held by this worker (another one owns it).

    ``partition`` is the key's partition and ``owner`` the owning worker's
    HTTP endpoint when the group told us (``None`` otherwise). Ask that
    worker, or pass ``standby=True`` to read this worker's standby copy if
    it keeps one.
    """

    def __init__(self, message: str, *, partition: int, owner: str | None = None) -> None:
        super().__init__(message)
        self.partition = partition
        self.owner = owner


class PartitionNotReadyError(QueryError):
    """The key's partition is here but not readable yet: it is restoring or moving.

    Ask again in a moment (``GET /health`` turns ready when every active
    partition is restored), or pass ``standby=True`` for a standby copy.
    """

    def __init__(self, message: str, *, partition: int) -> None:
        super().__init__(message)
        self.partition = partition
