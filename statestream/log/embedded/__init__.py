"""The embedded log: a durable, single-process log in one directory, with Kafka's semantics.

``embedded:///var/lib/myapp/log`` or ``embedded://./relative/dir``, with
:class:`EmbeddedOptions` in the query string (for example
``?sync=true&cleanup_interval_ms=5000``; an unknown option is a
:class:`~statestream.errors.ConfigurationError`). It is the zero-infrastructure
default transport: an application runs on it unchanged, with no broker.

What it shares with Kafka (and the transport contract suite checks):
per-partition offsets from 0 that never repeat (not after compaction, a
restart, or deleting and recreating a topic, which starts again at 0),
keyed records with headers and millisecond timestamps, the default murmur2
partitioner, watermarks, ``delete``/``compact``/``compact,delete`` cleanup
policies with ``retention.ms``, ``delete.retention.ms``,
``min.compaction.lag.ms`` and ``min.cleanable.dirty.ratio``, durable group
offsets, transactions whose records and group offsets commit atomically.

What differs, because there is one process and no broker:

* One process owns the directory (LevelDB's lock): a second open raises
  :class:`~statestream.errors.LogLockedError` naming the path. While it
  holds the log, the owner serves a small local socket in the directory
  (:mod:`statestream.log.embedded.local_socket`, client in
  :mod:`statestream.log.embedded.local_client`) through which
  ``statestream produce`` and ``statestream consume`` reach it.
* A group has one member, which owns every partition of its topics.
* Records are written (and become visible) on ``flush()``, after
  ``auto_flush_ms``, or when a producer's buffer is full. A flushed record
  survives kill -9; with ``sync=true`` it also survives power loss.
* Transactional records are written only at commit, so read-committed and
  read-uncommitted fetchers read the same, committed, records.
* Retention and compaction run on a background thread every
  ``cleanup_interval_ms``, and on demand through :meth:`EmbeddedTransport.compact`
  and :meth:`EmbeddedTransport.enforce_retention`. Segment, replication and
  compression settings are accepted and ignored.

The package, one idea per module:

* :mod:`~statestream.log.embedded.transport`: the transport and its admin
  (what ``open_transport("embedded://...")`` returns);
* :mod:`~statestream.log.embedded.producer`: the shared producer (buffered
  sends, a flush is one WriteBatch, sticky errors, transactions);
* :mod:`~statestream.log.embedded.clients`: fetchers and the group member;
* :mod:`~statestream.log.embedded.storage`: the LevelDB database, write and
  read paths (the only module that imports plyvel);
* :mod:`~statestream.log.embedded.meta`: options, topics and partitions;
* :mod:`~statestream.log.embedded.codec`: the key layout and record format;
* :mod:`~statestream.log.embedded.cleaner`: retention and compaction.
"""

from statestream.log.embedded.meta import EmbeddedOptions
from statestream.log.embedded.transport import EmbeddedAdmin, EmbeddedTransport, open_embedded

__all__ = ["EmbeddedAdmin", "EmbeddedOptions", "EmbeddedTransport", "open_embedded"]
