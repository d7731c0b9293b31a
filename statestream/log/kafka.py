"""The Kafka transport, on kafka-python: the only statestream module that imports ``kafka``.

Opened by URL through :func:`statestream.log.open_transport`::

    kafka://broker1:9092,broker2:9092?client_id=orders&linger_ms=10

Options are the fields of :class:`~statestream.log.kafka_options.KafkaOptions`.
Every kafka-python error is wrapped in a typed statestream error
(``raise ... from exc``), so callers never see ``kafka.errors``.

Choices worth knowing:

* Keyed records are routed by :func:`statestream.log.partitioner.default_partition`
  and sent with an explicit partition, so routing is statestream's and identical
  on both transports. Records without key and partition are left to
  kafka-python's sticky partitioner (it fills one batch at a time); their
  partition is known as soon as ``send`` returns.
* ``flush()`` raises :class:`~statestream.errors.ProduceError` once per failed
  record to every thread that has sent on the producer (see
  :meth:`KafkaRecordProducer.flush`).
* kafka-python runs rebalance listeners on its own I/O thread, where the
  consumer's blocking calls are forbidden. :class:`KafkaGroupMember` therefore
  runs the consumer's ``poll`` and ``close`` on a helper thread while the
  calling (poll) thread waits, and serves the listener's callbacks on the
  calling thread: callbacks run on the poll thread, inside ``poll``, and may
  commit, seek and look up committed offsets, as the protocol promises.
  While the member (re)joins its group, ``poll`` waits for the join to finish
  (see :meth:`KafkaGroupMember.poll`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import kafka.errors as kerrors
from kafka import (
    AsyncConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
)
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.future import Future as KafkaFuture
from kafka.structs import OffsetAndMetadata

from statestream.config import options_from_strings
from statestream.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    GroupError,
    LogError,
    OffsetOutOfRangeError,
    ProduceError,
    StateStreamError,
    TopicExistsError,
    TopicNotFoundError,
    TransactionError,
)
from statestream.log.base import (
    Admin,
    Fetcher,
    GroupMember,
    IsolationLevel,
    Producer,
    RebalanceListener,
    ResetPolicy,
    TopicDescription,
    TopicSpec,
    Transport,
    normalize_policy,
)
from statestream.log.kafka_options import KafkaOptions
from statestream.log.partitioner import default_partition
from statestream.types import Headers, Record, TopicPartition

if TYPE_CHECKING:
    from statestream.log import TransportURL

__all__ = [
    "KafkaFetcher",
    "KafkaGroupMember",
    "KafkaRecordProducer",
    "KafkaTopicAdmin",
    "KafkaTransport",
    "open_kafka",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
_RESETS = {"error": "none", "earliest": "earliest", "latest": "latest"}
_ISOLATION_LEVELS = ("read_uncommitted", "read_committed")
# Failed records remembered for threads that have not flushed since.
_FAILURE_LOG_SIZE = 1000
# Unchecked futures send() lets pile up before it drops the acknowledged ones.
_PENDING_PRUNE_AT = 100_000
_UNKNOWN_TOPIC = kerrors.UnknownTopicOrPartitionError.errno

_UNAVAILABLE = (
    kerrors.KafkaTimeoutError,
    kerrors.KafkaConnectionError,
    kerrors.NodeNotReadyError,
    kerrors.MetadataEmptyBrokerList,
)
_GROUP_ERRORS = (
    kerrors.CommitFailedError,
    kerrors.IllegalGenerationError,
    kerrors.UnknownMemberIdError,
    kerrors.RebalanceInProgressError,
    kerrors.FencedInstanceIdError,
    kerrors.GroupAuthorizationFailedError,
    kerrors.InvalidGroupIdError,
    kerrors.GroupMaxSizeReachedError,
)
_INVALID_TOPIC_ERRORS = (
    kerrors.InvalidConfigurationError,
    kerrors.InvalidReplicationFactorError,
    kerrors.InvalidPartitionsError,
    kerrors.PolicyViolationError,
    kerrors.InvalidTopicError,
)


# --------------------------------------------------------------------- helpers


def _translate(exc: BaseException, what: str, bootstrap: str) -> LogError:
    """Return the statestream error for kafka-python error ``exc`` raised while ``what``."""
    if isinstance(exc, kerrors.UnknownTopicOrPartitionError):
        return TopicNotFoundError(f"{what}: the topic or partition does not exist ({exc})")
    if isinstance(exc, kerrors.TopicAlreadyExistsError):
        return TopicExistsError(f"{what}: the topic already exists")
    if isinstance(exc, _UNAVAILABLE):
        return BrokerUnavailableError(
            f"{what}: no answer from the Kafka cluster at {bootstrap} ({exc}); check that "
            "the brokers are running and reachable from this machine"
        )
    if isinstance(exc, _GROUP_ERRORS):
        return GroupError(
            f"{what}: group membership failed ({exc}); the member's partitions will be "
            "reassigned and resume from the last committed offsets"
        )
    if isinstance(exc, kerrors.ProducerFencedError | kerrors.InvalidProducerEpochError):
        return TransactionError(
            f"{what}: another producer with the same transactional id is active and fenced "
            f"this one ({exc}); close this producer"
        )
    if isinstance(exc, kerrors.TransactionAbortedError | kerrors.InvalidTxnStateError):
        return TransactionError(f"{what}: {exc}")
    if isinstance(exc, kerrors.OffsetOutOfRangeError):
        return OffsetOutOfRangeError(f"{what}: offset out of range ({exc})")
    if isinstance(exc, kerrors.AuthorizationError):
        return LogError(f"{what}: not authorized ({exc}); check the client's ACLs")
    return LogError(f"{what} failed: {exc}")


@contextlib.contextmanager
def _kafka_errors(what: str, bootstrap: str) -> Iterator[None]:
    """Translate kafka-python errors raised in the block (not for hot paths)."""
    try:
        yield
    except StateStreamError:
        raise
    except kerrors.KafkaError as exc:
        raise _translate(exc, what, bootstrap) from exc


def _unstick_parked_records(consumer: Any) -> None:
    """Work around a kafka-python 3.0 stall of partitions paused mid-hand-out.

    Its fetcher parks the records of a partition that is paused while they are
    being handed out, and gives them back after ``resume`` only when its
    in-line slot is ``None``; but it leaves an exhausted (falsy) record set in
    that slot, and it never fetches a partition that has parked records. The
    partition would then never be read again. Clearing the exhausted set before
    each poll lets the parked records come back.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current:
        fetcher._next_partition_records = None  # type: ignore[union-attr]


def _ktp(tp: TopicPartition) -> Any:
    return KafkaTopicPartition(tp[0], tp[1])


def _tp(ktp: Any) -> TopicPartition:
    return TopicPartition(ktp.topic, ktp.partition)


def _to_records(polled: Mapping[Any, list[Any]]) -> list[Record]:
    """Convert kafka-python's ``{tp: [ConsumerRecord]}`` into statestream records."""
    out: list[Record] = []
    append = out.append
    for batch in polled.values():
        for r in batch:
            headers = r.headers
            append(
                Record(
                    r.topic,
                    r.partition,
                    r.offset,
                    r.key,
                    r.value,
                    r.timestamp,
                    tuple(headers) if headers else (),
                )
            )
    return out


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or host.endswith(":") or (host.count(":") and not host.startswith("[")):
        return address.strip("[]"), DEFAULT_PORT  # no port, or a bare IPv6 address
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"broker address {address!r} has an invalid port {port!r}")
    return host.strip("[]"), int(port)


def _probe(addresses: Sequence[str], timeout: float) -> None:
    """Fail fast when no bootstrap address accepts a TCP connection.

    Cheaper and clearer than kafka-python's bootstrap timeout, and it leaves no
    client I/O threads behind when nothing listens.
    """
    deadline = time.monotonic() + timeout
    failures = []
    for address in addresses:
        host, port = _split_address(address)
        remaining = max(0.1, deadline - time.monotonic())
        try:
            with socket.create_connection((host, port), timeout=min(remaining, 2.0)):
                return
        except OSError as exc:
            failures.append(f"{address} ({exc.strerror or exc})")
    raise BrokerUnavailableError(
        f"no Kafka broker reachable at {', '.join(failures)}; check that the brokers are "
        "running and that the host and port in the broker URL are right"
    )


# ------------------------------------------------------------------- transport


def open_kafka(url: TransportURL) -> KafkaTransport:
    """Open the Kafka transport for a parsed ``kafka://`` URL.

    Connects once (within ``bootstrap_timeout_ms``) so that a wrong address
    fails here with :class:`~statestream.errors.BrokerUnavailableError`
    naming the addresses tried.
    """
    if not url.hosts:
        raise ConfigurationError(
            f"kafka broker URL needs at least one host, e.g. 'kafka://host:9092', got {url.raw!r}"
        )
    if url.path not in ("", "/"):
        raise ConfigurationError(
            f"kafka broker URL takes no path (got {url.path!r} in {url.raw!r}); "
            "use 'kafka://host:9092,host2:9092?option=value'"
        )
    options = options_from_strings(KafkaOptions, url.options, "kafka broker URL")
    addresses = []
    for host in url.hosts:
        name, port = _split_address(host)
        addresses.append(f"[{name}]:{port}" if ":" in name else f"{name}:{port}")
    return KafkaTransport(addresses, options, url=url.raw)


class KafkaTransport(Transport):
    """Makes kafka-python clients for one cluster. Thread-safe.

    Holds one admin client, shared by every :meth:`admin` handle and used by
    producers to tell a missing topic from slow metadata. Closing the
    transport closes every client it made; stop the threads using them first.
    """

    def __init__(
        self, bootstrap: Sequence[str], options: KafkaOptions | None = None, *, url: str = ""
    ) -> None:
        self.options = options or KafkaOptions()
        self.bootstrap = list(bootstrap)
        self.url = url or "kafka://" + ",".join(self.bootstrap)
        self._where = ",".join(self.bootstrap)
        self._lock = threading.Lock()
        self._clients: list[Producer | Fetcher | GroupMember] = []
        self._closed = False
        if self.options.proxy_url is None:
            _probe(self.bootstrap, self.options.bootstrap_timeout_ms / 1000)
        self._admin_client = self._construct(KafkaAdminClient, self.options.admin_config())

    def _construct(self, cls: Any, config: dict[str, Any]) -> Any:
        """Build a kafka-python client, translating connection and setting errors."""
        try:
            return cls(bootstrap_servers=self.bootstrap, **config)
        except kerrors.KafkaConfigurationError as exc:
            raise ConfigurationError(f"invalid Kafka client setting: {exc}") from exc
        except _UNAVAILABLE as exc:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {self._where} within "
                f"{self.options.bootstrap_timeout_ms} ms ({exc}); check that the brokers are "
                "running, the URL's host and port, and its security settings"
            ) from exc
        except kerrors.KafkaError as exc:
            raise LogError(f"cannot connect to the Kafka cluster at {self._where}: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"the Kafka transport for {self._where} is closed; open a new one")

    def _register(self, client: Producer | Fetcher | GroupMember) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._clients.append(client)
        if closed:  # closed while the client was being built
            client.close()
            self._check_open()

    def _forget(self, client: Producer | Fetcher | GroupMember) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._clients.remove(client)

    def topic_exists(self, topic: str) -> bool:
        """Ask the cluster (not a client's cache) whether ``topic`` exists."""
        with _kafka_errors(f"looking up topic {topic!r}", self._where):
            [info] = self._admin_client.describe_topics([topic])
        code = info["error_code"]
        if code == _UNKNOWN_TOPIC:
            return False
        if code:
            raise _translate(kerrors.for_code(code)(), f"looking up topic {topic!r}", self._where)
        return True

    def admin(self) -> KafkaTopicAdmin:
        """Return a topic admin (shares the transport's admin client)."""
        self._check_open()
        return KafkaTopicAdmin(self)

    def producer(self, *, transactional_id: str | None = None) -> KafkaRecordProducer:
        """Return a producer; with ``transactional_id`` its transactions are initialised."""
        self._check_open()
        config = self.options.producer_config()
        if transactional_id is not None:
            config["transactional_id"] = transactional_id
        kp = self._construct(KafkaProducer, config)
        producer = KafkaRecordProducer(self, kp, transactional_id)
        self._register(producer)
        if transactional_id is not None:
            try:
                kp.init_transactions()
            except kerrors.KafkaError as exc:
                producer.close()
                raise TransactionError(
                    f"cannot initialise transactions for transactional id {transactional_id!r}: "
                    f"{exc}"
                ) from exc
        return producer

    def _consumer(
        self,
        group_id: str | None,
        isolation_level: IsolationLevel,
        reset: ResetPolicy,
        client_id: str | None = None,
    ) -> Any:
        if isolation_level not in _ISOLATION_LEVELS:
            raise ConfigurationError(
                f"isolation_level must be one of {', '.join(_ISOLATION_LEVELS)}, "
                f"got {isolation_level!r}"
            )
        if reset not in _RESETS:
            raise ConfigurationError(f"reset must be one of {', '.join(_RESETS)}, got {reset!r}")
        self._check_open()
        config = self.options.consumer_config()
        config.update(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=_RESETS[reset],
            isolation_level=isolation_level,
        )
        if client_id is not None:
            config["client_id"] = client_id
        return self._construct(KafkaConsumer, config)

    def fetcher(
        self,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        reset: ResetPolicy = "error",
    ) -> KafkaFetcher:
        """Return a fetcher (a consumer without group, manual assignment)."""
        consumer = self._consumer(None, isolation_level, reset)
        fetcher = KafkaFetcher(self, consumer, reset)
        self._register(fetcher)
        return fetcher

    def group_member(
        self,
        group_id: str,
        *,
        isolation_level: IsolationLevel = "read_uncommitted",
        reset: ResetPolicy = "earliest",
        client_id: str | None = None,
    ) -> KafkaGroupMember:
        """Return a member of ``group_id`` (joins on its first poll after subscribe)."""
        if not group_id:
            raise ConfigurationError("group_id must be a non-empty string")
        consumer = self._consumer(group_id, isolation_level, reset, client_id)
        member = KafkaGroupMember(self, consumer, group_id, reset)
        self._register(member)
        return member

    @property
    def supports_transactions(self) -> bool:
        """Kafka brokers from 0.11 on run transactions."""
        return True

    def close(self) -> None:
        """Close every client this transport made, then its admin client."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = list(self._clients)
        errors: list[BaseException] = []
        for client in reversed(clients):
            try:
                client.close()
            except Exception as exc:  # close the rest anyway
                errors.append(exc)
        with contextlib.suppress(Exception):
            self._admin_client.close()
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return f"KafkaTransport({self._where!r})"


# ----------------------------------------------------------------------- admin


class KafkaTopicAdmin(Admin):
    """Topic administration through the transport's admin client. Thread-safe.

    :meth:`describe_topic` reports the effective ``cleanup.policy`` and, in
    ``config``, the settings given explicitly for the topic (Kafka names, as
    strings), not the broker's defaults.
    """

    def __init__(self, transport: KafkaTransport) -> None:
        self._transport = transport
        self._client = transport._admin_client
        self._where = transport._where

    def describe_topic(self, name: str) -> TopicDescription | None:
        """Return the topic's description, or ``None`` if it does not exist."""
        what = f"describing topic {name!r}"
        with _kafka_errors(what, self._where):
            [info] = self._client.describe_topics([name])
            code = info["error_code"]
            if code == _UNKNOWN_TOPIC:
                return None
            if code:
                raise kerrors.for_code(code)()
            resource = ConfigResource(ConfigResourceType.TOPIC, name)
            described = self._client.describe_configs([resource], config_filter="all")
        entries = described.get("topic", {}).get(name) or {}
        if not entries:  # deleted between the two requests
            return None
        policy = entries.get("cleanup.policy", {}).get("value") or "delete"
        explicit = {
            key: entry["value"]
            for key, entry in entries.items()
            if entry.get("config_source") == "DYNAMIC_TOPIC_CONFIG" and entry["value"] is not None
        }
        explicit["cleanup.policy"] = normalize_policy(policy)
        return TopicDescription(
            name=name,
            partitions=len(info["partitions"]),
            cleanup_policy=normalize_policy(policy),
            config=explicit,
        )

    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic and wait (up to ``request_timeout_ms``) until it has leaders."""
        options = self._transport.options
        what = f"creating topic {spec.name!r}"
        definition = {
            "num_partitions": spec.partitions,
            "replication_factor": options.replication_factor,
            "configs": spec.topic_config(),
        }
        try:
            self._client.create_topics({spec.name: definition})
        except kerrors.TopicAlreadyExistsError as exc:
            raise TopicExistsError(
                f"topic {spec.name!r} already exists; use ensure_topic() to create it or "
                "check the existing one"
            ) from exc
        except _INVALID_TOPIC_ERRORS as exc:
            raise ConfigurationError(
                f"the cluster refused to create topic {spec.name!r} with {spec.partitions} "
                f"partitions, replication_factor={options.replication_factor} and config "
                f"{spec.topic_config()}: {exc}"
            ) from exc
        except kerrors.KafkaError as exc:
            raise _translate(exc, what, self._where) from exc
        try:
            self._client.wait_for_topics([spec.name], timeout_ms=options.request_timeout_ms)
        except kerrors.KafkaError:
            # Created; clients wait for its leaders themselves.
            log.debug("topic %s created but not ready yet", spec.name)

    def delete_topic(self, name: str) -> None:
        """Delete the topic and wait (up to ``request_timeout_ms``) until it is gone."""
        what = f"deleting topic {name!r}"
        try:
            self._client.delete_topics([name])
        except kerrors.UnknownTopicOrPartitionError:
            return
        except kerrors.KafkaError as exc:
            raise _translate(exc, what, self._where) from exc
        # Deletion completes asynchronously; until it has, the name cannot be
        # reused and clients still see the topic.
        deadline = time.monotonic() + self._transport.options.request_timeout_ms / 1000
        while time.monotonic() < deadline and self._transport.topic_exists(name):
            time.sleep(0.05)

    def list_topics(self) -> set[str]:
        """Return the names of all topics except Kafka's internal ones."""
        with _kafka_errors("listing topics", self._where):
            infos = self._client.describe_topics()
        return {
            info["name"] for info in infos if not info.get("is_internal") and not info["error_code"]
        }


# -------------------------------------------------------------------- producer


class _KafkaDelivery:
    """A :class:`~statestream.log.base.Delivery` wrapping kafka-python's record future."""

    __slots__ = ("_future", "_partition")

    def __init__(self, future: Any, partition: int) -> None:
        self._future = future
        self._partition = partition

    @property
    def done(self) -> bool:
        return bool(self._future.is_done)

    @property
    def partition(self) -> int:
        return self._partition

    @property
    def offset(self) -> int:
        future = self._future
        if not future.is_done:
            raise ProduceError(
                f"record for partition {self._partition} is not acknowledged yet; call flush() "
                "before reading its offset"
            )
        if future.exception is not None:
            raise ProduceError(
                f"record for partition {self._partition} was not written: {future.exception}"
            ) from future.exception
        offset: int = future.value.offset
        return offset

    def __repr__(self) -> str:
        state = "pending" if not self._future.is_done else "failed"
        if self._future.is_done and self._future.exception is None:
            state = f"offset={self._future.value.offset}"
        return f"<KafkaDelivery partition={self._partition} {state}>"


def _future_partition(future: Any) -> int:
    # kafka-python picks the partition inside send() and keeps it on the
    # batch's future; it is final once send() returns.
    tp = getattr(getattr(future, "_produce_future", None), "topic_partition", None)
    partition = getattr(tp, "partition", None)
    return partition if isinstance(partition, int) else -1


class KafkaRecordProducer(Producer):
    """Writes records with a ``KafkaProducer``. Thread-safe: shared by all partition threads.

    :meth:`flush` waits for every record sent so far and raises
    :class:`~statestream.errors.ProduceError` if any record failed that the
    calling thread has not been told about yet: each failure is reported
    once to every thread that sent on this producer before it was detected.
    A thread therefore never commits past a failed record, whoever sent it.
    """

    def __init__(self, transport: KafkaTransport, producer: Any, transactional_id: str | None):
        self._transport = transport
        self._kp = producer
        self._transactional_id = transactional_id
        # Partition count per topic, for routing keys. Refreshed from the
        # client's metadata on every flush(), so a topic that grows is routed
        # by its new count from the next commit on (kafka-python itself only
        # notices new partitions when its metadata is refreshed).
        self._counts: dict[str, int] = {}
        self._pending: collections.deque[Any] = collections.deque()
        self._check_lock = threading.Lock()
        self._failures: list[tuple[int, Any]] = []
        self._failure_seq = 0
        self._prune_at = _PENDING_PRUNE_AT
        self._threads = threading.local()
        self._closed = False

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers = (),
        timestamp: int | None = None,
    ) -> _KafkaDelivery:
        """Queue one record; a keyed record without partition goes where Kafka's
        default partitioner puts it (computed here, sent explicitly)."""
        count = self._counts.get(topic)
        if count is None:
            count = self._learn_topic(topic)
        if partition is None and key is not None:
            partition = default_partition(key, count)
        threads = self._threads
        if not hasattr(threads, "seen"):
            threads.seen = self._failure_seq
        try:
            future = self._kp.send(
                topic,
                value=value,
                key=key,
                headers=list(headers) if headers else None,
                partition=partition,
                timestamp_ms=timestamp,
            )
        except kerrors.KafkaError as exc:
            raise ProduceError(f"cannot send a record to {topic}[{partition}]: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ProduceError(f"record for {topic}[{partition}] rejected: {exc}") from exc
        pending = self._pending
        pending.append(future)
        if len(pending) > self._prune_at:
            with self._check_lock:
                self._drain_locked(finished_only=True)
        return _KafkaDelivery(future, _future_partition(future) if partition is None else partition)

    def _learn_topic(self, topic: str) -> int:
        # kafka-python would wait max_block_ms for metadata of a missing
        # topic; the admin client answers at once.
        if not self._transport.topic_exists(topic):
            raise TopicNotFoundError(
                f"topic {topic!r} does not exist; create it first (Admin.ensure_topic)"
            )
        with _kafka_errors(f"fetching metadata of topic {topic!r}", self._transport._where):
            count = len(self._kp.partitions_for(topic))
        self._counts[topic] = count
        return count

    def _refresh_counts(self) -> None:
        # The client's cached metadata, read without waiting (partitions_for
        # would block for a topic that disappeared).
        cluster = getattr(self._kp, "_metadata", None)
        if cluster is None:
            return
        for topic in list(self._counts):
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                self._counts[topic] = len(partitions)
            else:
                self._counts.pop(topic, None)  # looked up afresh by the next send

    def _drain_locked(self, *, finished_only: bool = False) -> None:
        """Move finished futures out of the pending queue, logging failures.

        ``finished_only`` (the pruning done by ``send``) stops at the first
        unfinished future, so it costs O(1) per record however many are in
        flight; records finish roughly in the order they were sent.
        """
        pending = self._pending
        unfinished = []
        while True:
            try:
                future = pending.popleft()
            except IndexError:
                break
            if not future.is_done:
                if finished_only:
                    pending.appendleft(future)
                    break
                unfinished.append(future)
            elif future.exception is not None:
                self._failure_seq += 1
                self._failures.append((self._failure_seq, future))
        pending.extend(unfinished)
        self._prune_at = len(pending) + _PENDING_PRUNE_AT
        if len(self._failures) > _FAILURE_LOG_SIZE:
            del self._failures[:-_FAILURE_LOG_SIZE]

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything sent is acknowledged; raise ``ProduceError`` on failure."""
        try:
            self._kp.flush(timeout)
        except kerrors.KafkaTimeoutError as exc:
            raise ProduceError(
                f"records were not acknowledged within {timeout} s; nothing after the first "
                "unacknowledged record may be committed"
            ) from exc
        except kerrors.KafkaError as exc:
            raise ProduceError(f"flush failed: {exc}") from exc
        self._refresh_counts()
        threads = self._threads
        with self._check_lock:
            seen = getattr(threads, "seen", self._failure_seq)
            self._drain_locked()
            unseen = [future for seq, future in self._failures if seq > seen]
            threads.seen = self._failure_seq
        if unseen:
            first = unseen[0]
            tp = getattr(getattr(first, "_produce_future", None), "topic_partition", None)
            where = f"{tp[0]}[{tp[1]}]" if tp is not None else "the log"
            raise ProduceError(
                f"{len(unseen)} record(s) were not written; the first, to {where}, failed "
                f"with: {first.exception}"
            ) from first.exception

    def partitions_for(self, topic: str) -> int:
        """Return the topic's partition count (``TopicNotFoundError`` if missing)."""
        if topic not in self._counts:
            return self._learn_topic(topic)
        with _kafka_errors(f"fetching metadata of topic {topic!r}", self._transport._where):
            count = len(self._kp.partitions_for(topic))
        self._counts[topic] = count
        return count

    # -- transactions

    def _require_transactions(self, what: str) -> None:
        if self._transactional_id is None:
            raise TransactionError(
                f"cannot {what}: this producer has no transactional id; create it with "
                "transport.producer(transactional_id=...)"
            )

    def _transaction_error(self, exc: BaseException, what: str) -> TransactionError:
        error = _translate(exc, what, self._transport._where)
        if isinstance(error, TransactionError):
            return error
        return TransactionError(
            f"{what} failed: {exc}; abort the transaction and reprocess from the committed offsets"
        )

    def begin_transaction(self) -> None:
        """Start a transaction."""
        self._require_transactions("begin a transaction")
        try:
            self._kp.begin_transaction()
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "begin_transaction") from exc

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: Any
    ) -> None:
        """Commit ``offsets`` for ``group`` (``GroupMember.group_metadata()`` or a group
        id) as part of the current transaction."""
        self._require_transactions("send offsets to a transaction")
        converted = {_ktp(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
        try:
            self._kp.send_offsets_to_transaction(converted, group)
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "send_offsets_to_transaction") from exc

    def commit_transaction(self) -> None:
        """Commit the current transaction (its records are flushed first)."""
        self._require_transactions("commit a transaction")
        try:
            self._kp.commit_transaction()
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "commit_transaction") from exc
        with self._check_lock:
            self._drain_locked()

    def abort_transaction(self) -> None:
        """Abort the current transaction; failures of its records are forgotten."""
        self._require_transactions("abort a transaction")
        try:
            self._kp.abort_transaction()
        except kerrors.KafkaError as exc:
            raise self._transaction_error(exc, "abort_transaction") from exc
        with self._check_lock:
            self._pending.clear()
            self._failures.clear()

    def close(self) -> None:
        """Flush (up to ``delivery_timeout_ms``) and close; raise ``ProduceError`` if
        records failed."""
        if self._closed:
            return
        self._closed = True
        timeout = self._transport.options.delivery_timeout_ms / 1000
        try:
            self.flush(timeout)
        finally:
            try:
                self._kp.close(timeout=timeout)
            finally:
                self._transport._forget(self)


# --------------------------------------------------------------------- fetcher


def _out_of_range(consumer: Any, exc: BaseException, where: str) -> OffsetOutOfRangeError:
    """Build an error naming each bad position and the partition's valid range."""
    positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    parts = []
    for ktp, offset in positions.items():
        try:
            low = consumer.beginning_offsets([ktp], 5_000)[ktp]
            high = consumer.end_offsets([ktp], 5_000)[ktp]
        except kerrors.KafkaError:
            parts.append(f"offset {offset} of {_tp(ktp)} is out of range")
        else:
            parts.append(
                f"offset {offset} of {_tp(ktp)} is out of range: valid positions are "
                f"{low} to {high} (low and high watermark)"
            )
    detail = "; ".join(parts) or str(exc)
    return OffsetOutOfRangeError(
        f"{detail}; seek to a valid offset, or use reset='earliest' or 'latest' (broker {where})"
    )


class _ConsumerClient:
    """What :class:`KafkaFetcher` and :class:`KafkaGroupMember` share."""

    def __init__(self, transport: KafkaTransport, consumer: Any, reset: ResetPolicy) -> None:
        self._transport = transport
        self._consumer = consumer
        self._reset = reset
        self._where = transport._where
        self._timeout_ms = transport.options.request_timeout_ms
        self._closed = False

    def assignment(self) -> set[TopicPartition]:
        """Return the current assignment."""
        return {_tp(ktp) for ktp in self._consumer.assignment()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Set the next offset to fetch for ``tp`` (it must be assigned)."""
        ktp = _ktp(tp)
        if ktp not in self._consumer.assignment():
            raise LogError(f"cannot seek {tp}: the partition is not assigned to this consumer")
        if not isinstance(offset, int) or offset < 0:
            if self._reset == "earliest":
                self._consumer.seek_to_beginning(ktp)
            elif self._reset == "latest":
                self._consumer.seek_to_end(ktp)
            else:
                raise OffsetOutOfRangeError(
                    f"cannot seek {tp} to {offset!r}: offsets start at 0; seek to a valid "
                    "offset, or use reset='earliest' or 'latest'"
                )
            return
        self._consumer.seek(ktp, offset)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop returning records of ``partitions`` (unassigned ones are ignored)."""
        assigned = self._consumer.assignment()
        self._consumer.pause(*(k for k in map(_ktp, partitions) if k in assigned))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Return records of ``partitions`` again (unassigned ones are ignored)."""
        assigned = self._consumer.assignment()
        self._consumer.resume(*(k for k in map(_ktp, partitions) if k in assigned))

    def _poll(self, timeout: float, max_records: int) -> list[Record]:
        _unstick_parked_records(self._consumer)
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except kerrors.OffsetOutOfRangeError as exc:
            raise _out_of_range(self._consumer, exc, self._where) from exc
        except kerrors.NoOffsetForPartitionError as exc:
            missing = exc.args[0] if exc.args and isinstance(exc.args[0], set | frozenset) else ()
            names = ", ".join(str(_tp(ktp)) for ktp in missing) or "a partition"
            raise OffsetOutOfRangeError(
                f"no position for {names} and reset='error': seek first, or use "
                "reset='earliest' or 'latest'"
            ) from exc
        except kerrors.KafkaError as exc:
            raise _translate(exc, "polling", self._where) from exc
        return _to_records(polled) if polled else []


class KafkaFetcher(_ConsumerClient, Fetcher):
    """Reads assigned partitions from explicit positions with a group-less ``KafkaConsumer``.

    Thread ownership: one thread (a restore or standby thread). With
    ``reset="error"`` newly assigned partitions start at their low watermark;
    a position out of range makes :meth:`poll` raise
    :class:`~statestream.errors.OffsetOutOfRangeError` naming the valid range.
    For read-committed fetchers the high watermark is the last stable offset.
    """

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment; partitions kept keep their positions."""
        wanted = [_ktp(tp) for tp in partitions]
        consumer = self._consumer
        if not wanted:
            consumer.unsubscribe()
            return
        new = set(wanted) - consumer.assignment()
        consumer.assign(wanted)
        if new and self._reset == "error":
            # kafka-python has no position to start from with reset "none".
            consumer.seek_to_beginning(*new)

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        """Set the position of ``tp`` to its low watermark (resolved lazily)."""
        self._require_assigned(tp)
        self._consumer.seek_to_beginning(_ktp(tp))

    def seek_to_end(self, tp: TopicPartition) -> None:
        """Set the position of ``tp`` to its high watermark (resolved lazily)."""
        self._require_assigned(tp)
        self._consumer.seek_to_end(_ktp(tp))

    def _require_assigned(self, tp: TopicPartition) -> None:
        if _ktp(tp) not in self._consumer.assignment():
            raise LogError(f"{tp} is not assigned to this fetcher; assign() it first")

    def position(self, tp: TopicPartition) -> int:
        """Return the next offset that will be fetched for ``tp``."""
        self._require_assigned(tp)
        with _kafka_errors(f"getting the position of {tp}", self._where):
            position = self._consumer.position(_ktp(tp), timeout_ms=self._timeout_ms)
        if position is None:
            raise BrokerUnavailableError(
                f"the position of {tp} could not be resolved within {self._timeout_ms} ms; "
                f"check the cluster at {self._where}"
            )
        result: int = position
        return result

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        """Return the next records of unpaused assigned partitions (maybe none)."""
        return self._poll(timeout, max_records)

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """Return ``(low, high)``; ``high`` is the last stable offset when reading committed."""
        ktp = _ktp(tp)
        what = f"getting the watermarks of {tp}"
        try:
            low = self._consumer.beginning_offsets([ktp], self._timeout_ms)[ktp]
            high = self._consumer.end_offsets([ktp], self._timeout_ms)[ktp]
        except kerrors.KafkaTimeoutError as exc:
            # A missing topic looks like a timeout to kafka-python.
            if not self._transport.topic_exists(tp.topic):
                raise TopicNotFoundError(f"{what}: topic {tp.topic!r} does not exist") from exc
            raise _translate(exc, what, self._where) from exc
        except kerrors.KafkaError as exc:
            raise _translate(exc, what, self._where) from exc
        return int(low), int(high)

    def close(self) -> None:
        """Close the consumer."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False)
        finally:
            self._transport._forget(self)


# ---------------------------------------------------------------- group member


class _CallerThreadRunner:
    """Runs blocking consumer calls on a helper thread, serving rebalance
    callbacks on the thread that called :meth:`call` while it waits.

    kafka-python invokes listeners on its I/O thread and forbids blocking
    consumer calls there; a listener that commits or looks up offsets must
    run elsewhere, and statestream's protocol says: on the poll thread. The
    helper thread only ever runs ``poll`` and ``close``; every other consumer
    call happens on the poll thread while the helper is idle or blocked
    waiting for a callback, so the consumer is never used by two threads at once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._inbox: queue.SimpleQueue[tuple[int, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[tuple[str, int, Any, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._call_id = 0

    def call(self, fn: Callable[[], Any]) -> Any:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._call_id += 1
        call_id = self._call_id
        self._inbox.put((call_id, fn))
        while True:
            kind, event_id, payload, error = self._events.get()
            if kind == "callback":
                payload()
            elif event_id == call_id:
                if error is not None:
                    raise error
                return payload
            # else: the result of a call whose caller was interrupted; dropped

    def submit_callback(self, thunk: Callable[[], None]) -> None:
        """Ask the thread inside :meth:`call` to run ``thunk`` (from any thread)."""
        self._events.put(("callback", 0, thunk, None))

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            call_id, fn = item
            try:
                result = fn()
            except BaseException as exc:
                self._events.put(("done", call_id, None, exc))
            else:
                self._events.put(("done", call_id, result, None))

    def stop(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join()
            self._thread = None


class _ListenerBridge(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python listener that hands each callback to the waiting poll thread.

    The I/O loop awaits the callback's completion without blocking, so
    heartbeats continue while the statestream listener runs.
    """

    def __init__(self, member: KafkaGroupMember, listener: RebalanceListener) -> None:
        self._member = member
        self._listener = listener

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._dispatch(self._listener.on_revoked, revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._dispatch(self._listener.on_assigned, assigned)

    async def on_partitions_lost(self, lost: Any) -> None:
        # The protocol has no "lost": the partitions are gone either way, and
        # commits made for them now fail with GroupError.
        await self._dispatch(self._listener.on_revoked, lost)

    async def _dispatch(self, method: Callable[[Sequence[TopicPartition]], None], tps: Any) -> None:
        partitions = sorted(_tp(ktp) for ktp in tps)
        if not partitions:
            # kafka-python reports empty revocations and assignments on
            # every rebalance; statestream's listeners hear only changes.
            return
        done = KafkaFuture()
        member = self._member

        def run_on_poll_thread() -> None:
            try:
                method(partitions)
            except BaseException as exc:
                # Raised from poll() once kafka-python has finished the
                # rebalance step; kafka-python itself is told it succeeded.
                if member._listener_error is None:
                    member._listener_error = exc
            finally:
                member._complete(done)

        member._runner.submit_callback(run_on_poll_thread)
        await done


class KafkaGroupMember(_ConsumerClient, GroupMember):
    """A member of a consumer group, on a ``KafkaConsumer`` with ``group_id``.

    Thread ownership: the poll thread only. Rebalance callbacks run on that
    thread, inside :meth:`poll` (and :meth:`close`), while kafka-python's
    I/O thread keeps heartbeating; they are not called with empty partition
    lists. Offsets are committed only by :meth:`commit` (auto-commit is
    off); committed offsets are the next offset to process. With
    ``reset="error"`` a partition without committed offset makes
    :meth:`poll` raise :class:`~statestream.errors.OffsetOutOfRangeError`.
    """

    def __init__(
        self, transport: KafkaTransport, consumer: Any, group_id: str, reset: ResetPolicy
    ) -> None:
        super().__init__(transport, consumer, reset)
        self.group_id = group_id
        self._runner = _CallerThreadRunner(f"statestream-kafka-group-{group_id}")
        self._listener_error: BaseException | None = None
        self._subscribed = False
        self._rebalance_timeout_ms = transport.options.max_poll_interval_ms

    def _complete(self, future: Any) -> None:
        """Resolve a kafka-python future on its I/O thread and wake that thread."""
        net = getattr(self._consumer, "_net", None)
        if net is None or not hasattr(net, "call_soon_threadsafe"):
            future.success(None)  # resumed at the loop's next wake-up
            return
        try:
            net.call_soon_threadsafe(lambda: future.success(None))
        except RuntimeError:  # loop closed: nobody waits any more
            future.success(None)

    def _call(self, fn: Callable[[], Any]) -> Any:
        self._listener_error = None
        try:
            result = self._runner.call(fn)
        except kerrors.KafkaError as exc:
            if self._listener_error is not None:
                raise self._listener_error from exc
            raise
        if self._listener_error is not None:
            error, self._listener_error = self._listener_error, None
            raise error
        return result

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener | None = None) -> None:
        """Join the group for ``topics`` (the join happens in :meth:`poll`)."""
        if isinstance(topics, str):
            raise ConfigurationError(f"subscribe() takes a list of topics, got {topics!r}")
        bridge = _ListenerBridge(self, listener) if listener is not None else None
        with _kafka_errors(f"subscribing group {self.group_id!r}", self._where):
            self._consumer.subscribe(topics=list(topics), listener=bridge)
        self._subscribed = True

    def poll(self, timeout: float = 0.0, max_records: int = 500) -> list[Record]:
        """Return records of assigned, unpaused partitions; runs rebalance callbacks.

        While the member (re)joins the group this blocks until the join is
        complete (at most ``max_poll_interval_ms``, the broker's rebalance
        timeout), whatever ``timeout`` says: the member owns no partitions
        meanwhile, so nothing is held up.
        """
        result: list[Record] = self._call(lambda: self._poll_group(timeout, max_records))
        return result

    def _poll_group(self, timeout: float, max_records: int) -> list[Record]:
        # kafka-python 3.0 applies the result of a join only if a poll() is
        # waiting when the join completes. Otherwise it either starts another
        # join (a short poll timeout can then keep the group rebalancing for
        # ever), or, when the join was started by a metadata change, forgets
        # it and stays "rebalancing" with no partitions. So: whenever a join
        # is due or under way, wait for it in one call, and ask for a fresh
        # join if kafka-python lost track of one.
        coordinator = getattr(self._consumer, "_coordinator", None)
        if self._subscribed and coordinator is not None:
            rejoin = coordinator.need_rejoin()
            if rejoin or coordinator.rebalance_in_progress():
                if not rejoin:
                    coordinator.request_rejoin()
                try:
                    coordinator.poll(timeout_ms=self._rebalance_timeout_ms)
                except kerrors.KafkaError as exc:
                    raise _translate(exc, f"joining group {self.group_id!r}", self._where) from exc
        return self._poll(timeout, max_records)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronously commit ``offsets`` (next offset to process per partition)."""
        if not offsets:
            return
        converted = {_ktp(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
        with _kafka_errors(f"committing offsets of group {self.group_id!r}", self._where):
            self._consumer.commit(converted, timeout_ms=self._timeout_ms)

    def committed(self, tp: TopicPartition) -> int | None:
        """Return the group's committed offset for ``tp``, or ``None``."""
        with _kafka_errors(f"fetching the committed offset of {tp}", self._where):
            offset = self._consumer.committed(_ktp(tp), timeout_ms=self._timeout_ms)
        return None if offset is None or offset < 0 else int(offset)

    def group_metadata(self) -> Any:
        """Return the consumer's group metadata, for ``send_offsets_to_transaction``."""
        return self._consumer.group_metadata()

    def close(self) -> None:
        """Revoke partitions through the listener (on this thread), leave the group."""
        if self._closed:
            return
        self._closed = True
        try:
            with _kafka_errors(f"leaving group {self.group_id!r}", self._where):
                self._call(lambda: self._consumer.close(autocommit=False))
        finally:
            self._runner.stop()
            self._transport._forget(self)
