"""``KafkaTransport``: opens clients of one Kafka cluster; ``open_kafka`` builds it from a URL.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import kafka.errors as kerrors
from kafka import (
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
)

from statestream.config import check_instance_id, options_from_strings
from statestream.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    LogError,
    TransactionError,
)
from statestream.log.base import (
    Fetcher,
    GroupMember,
    IsolationLevel,
    PartitionAssignor,
    Producer,
    ResetPolicy,
    Transport,
)
from statestream.log.kafka._common import (
    _ISOLATION_LEVELS,
    _RESETS,
    _UNAVAILABLE,
    _UNKNOWN_TOPIC,
    _check_consumer_internals,
    _check_group_internals,
    _kafka_errors,
    _probe,
    _split_address,
    _translate,
)
from statestream.log.kafka.admin import KafkaTopicAdmin
from statestream.log.kafka.assignor import AssignorBridge
from statestream.log.kafka.consumer import KafkaFetcher
from statestream.log.kafka.group import KafkaGroupMember
from statestream.log.kafka.producer import KafkaRecordProducer
from statestream.log.kafka_options import KafkaOptions

if TYPE_CHECKING:
    from statestream.log import TransportURL

log = logging.getLogger("statestream.log.kafka")


def open_kafka(url: TransportURL) -> KafkaTransport:
    """Open the Kafka transport for a parsed ``kafka://`` URL.

    Connects once (within ``bootstrap_timeout_ms``) so that a wrong address
    fails here with :class:`~statestream.errors.BrokerUnavailableError`
    naming the addresses tried.
    """
    if not url.hosts:
        raise ConfigurationError(
            "kafka broker URL needs at least one host, e.g. 'kafka://host:9092', "
            f"got {url.redacted!r}"
        )
    if url.path not in ("", "/"):
        raise ConfigurationError(
            f"kafka broker URL takes no path (got {url.path!r} in {url.redacted!r}); "
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

    The fast paths and workarounds that rely on kafka-python's internals
    check them when a client is created and turn themselves off if they
    differ; each one that does is logged as one WARNING (per transport)
    saying why and what happens instead.
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
        self._turned_off: set[str] = set()
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

    def _disabled(self, feature: str, detail: str) -> None:
        """Log, once, that ``feature`` turned itself off (a :data:`Disabled`)."""
        with self._lock:
            if feature in self._turned_off:
                return
            self._turned_off.add(feature)
        log.warning("Kafka transport: %s is off: %s", feature, detail)

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
        extra: dict[str, Any] | None = None,
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
        config.update(extra or {})
        consumer = self._construct(KafkaConsumer, config)
        _check_consumer_internals(consumer, self._disabled)
        if group_id is not None:
            _check_group_internals(consumer, self._disabled)
        return consumer

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
        assignor: PartitionAssignor | None = None,
        instance_id: str | None = None,
    ) -> KafkaGroupMember:
        """Return a member of ``group_id`` (joins on its first poll after subscribe).

        ``assignor`` runs inside kafka-python's group protocol (eager
        rebalances; default: kafka-python's range assignor). ``instance_id``
        is Kafka's ``group.instance.id`` (static membership).
        """
        if not group_id:
            raise ConfigurationError("group_id must be a non-empty string")
        extra: dict[str, Any] = {}
        if instance_id is not None:
            extra["group_instance_id"] = check_instance_id(instance_id)
        if assignor is not None:
            extra["partition_assignment_strategy"] = [AssignorBridge(assignor)]
        consumer = self._consumer(group_id, isolation_level, reset, client_id, extra)
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
