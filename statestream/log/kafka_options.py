"""Settings of the Kafka transport, one frozen dataclass, no kafka-python import.

Set through the broker URL's query string, for example::

    kafka://broker1:9092,broker2:9092?client_id=orders&linger_ms=10
    kafka://broker:9093?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512
        &sasl_plain_username=app&sasl_plain_password=secret&ssl_cafile=/etc/ca.pem

Names are kafka-python's (which follow the Java client's, with ``_`` for
``.``). Unknown names are an error that lists the known ones. The defaults
favour low latency with reasonable batching: a producer waits at most
``linger_ms`` for a batch to fill, a fetcher waits at most
``fetch_max_wait_ms`` for data, and an unreachable cluster is reported after
``bootstrap_timeout_ms`` rather than the client's default 30 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from statestream.errors import ConfigurationError
from statestream.secrets import MaskedStr, redact_url, url_secrets

__all__ = ["KafkaOptions"]

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "GSSAPI", "OAUTHBEARER", "SCRAM-SHA-256", "SCRAM-SHA-512")
_ACKS = {"all": -1, "-1": -1, "1": 1, "0": 0}
_COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True)
class KafkaOptions:
    """Tuning and security of the Kafka transport (see the module docstring)."""

    # -- every client ----------------------------------------------------------

    #: Client name sent with every request; shows up in broker logs and quotas.
    client_id: str = "statestream"
    #: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    security_protocol: str = "PLAINTEXT"
    #: PLAIN, GSSAPI, OAUTHBEARER, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*).
    sasl_mechanism: str | None = None
    #: User name for PLAIN and SCRAM.
    sasl_plain_username: str | None = None
    #: Password for PLAIN and SCRAM (kept out of repr).
    sasl_plain_password: str | None = field(default=None, repr=False)
    #: Kerberos service name for GSSAPI.
    sasl_kerberos_service_name: str = "kafka"
    #: Kerberos domain for GSSAPI (default: the broker's host name).
    sasl_kerberos_domain_name: str | None = None
    #: CA bundle (PEM file) to verify brokers with; default: the system's.
    ssl_cafile: str | None = None
    #: Client certificate chain (PEM file), for mutual TLS.
    ssl_certfile: str | None = None
    #: Client private key (PEM file), for mutual TLS.
    ssl_keyfile: str | None = None
    #: Password of ``ssl_keyfile`` (kept out of repr).
    ssl_password: str | None = field(default=None, repr=False)
    #: Certificate revocation list (PEM file).
    ssl_crlfile: str | None = None
    #: Check that the broker certificate matches its host name.
    ssl_check_hostname: bool = True
    #: OpenSSL cipher list; default: OpenSSL's.
    ssl_ciphers: str | None = None
    #: SOCKS5 proxy for broker connections, e.g. ``socks5://proxy:1080``.
    proxy_url: str | None = None
    #: Milliseconds to wait for the first broker to answer before giving up
    #: with BrokerUnavailableError. Kept short: a wrong address should fail fast.
    bootstrap_timeout_ms: int = 5_000
    #: Milliseconds to wait for a broker's answer to one request.
    request_timeout_ms: int = 30_000
    #: Milliseconds between retries of a failed request.
    retry_backoff_ms: int = 100
    #: Milliseconds before reconnecting to a broker, doubling up to the max.
    reconnect_backoff_ms: int = 50
    #: Upper bound of the reconnect backoff, milliseconds.
    reconnect_backoff_max_ms: int = 1_000
    #: Milliseconds after which cluster metadata is refreshed even if nothing failed.
    metadata_max_age_ms: int = 300_000
    #: Milliseconds after which idle connections are closed.
    connections_max_idle_ms: int = 540_000
    #: Broker protocol version such as ``3.7``; default: ask the broker.
    api_version: str | None = None

    # -- admin -----------------------------------------------------------------

    #: Replicas of topics statestream creates; -1: the broker's default.replication.factor.
    replication_factor: int = -1

    # -- producer --------------------------------------------------------------

    #: Acknowledgements a write waits for: ``all`` (every in-sync replica), the only
    #: value accepted (``1`` and ``0`` raise ConfigurationError): a changelog record
    #: must not be lost once its source offset is committed.
    acks: str = "all"
    #: Milliseconds a batch may wait for more records before it is sent. 5 ms
    #: costs little latency and lets busy partitions fill batches.
    linger_ms: int = 5
    #: Bytes per partition batch (``64k`` works). Larger batches, fewer requests.
    batch_size: int = 64 * 1024
    #: none, gzip, snappy, lz4 or zstd (the last three need their Python package).
    compression_type: str = "none"
    #: Exactly-once per partition writes (no duplicates on retry); needs acks=all.
    enable_idempotence: bool = True
    #: Unacknowledged requests per connection (at most 5 with idempotence).
    max_in_flight_requests_per_connection: int = 5
    #: Milliseconds a record may take from send to acknowledgement, retries included.
    delivery_timeout_ms: int = 120_000
    #: Milliseconds ``send`` may block waiting for topic metadata, and
    #: transactions for their coordinator.
    max_block_ms: int = 10_000
    #: Largest produce request in bytes (``1m`` works); also the largest record.
    max_request_size: int = 1024 * 1024
    #: Milliseconds a transaction may stay open before the broker aborts it.
    transaction_timeout_ms: int = 60_000

    # -- consumers (fetchers and group members) --------------------------------

    #: Bytes a fetch waits for before the broker answers (up to fetch_max_wait_ms).
    fetch_min_bytes: int = 1
    #: Milliseconds the broker holds a fetch open when there is no data yet.
    fetch_max_wait_ms: int = 100
    #: Bytes one fetch response may carry (soft limit, ``50m`` works).
    fetch_max_bytes: int = 50 * 1024 * 1024
    #: Bytes one partition may contribute to a fetch response (``1m`` works).
    max_partition_fetch_bytes: int = 1024 * 1024
    #: Verify record checksums (catches corruption; costs some CPU).
    check_crcs: bool = True
    #: Milliseconds without heartbeat after which a group member is dropped.
    session_timeout_ms: int = 45_000
    #: Milliseconds between heartbeats (at most a third of the session timeout).
    heartbeat_interval_ms: int = 3_000
    #: Milliseconds allowed between polls of a group member before it is
    #: considered stuck and its partitions are reassigned.
    max_poll_interval_ms: int = 300_000

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        if protocol not in _SECURITY_PROTOCOLS:
            raise ConfigurationError(
                f"kafka option security_protocol must be one of {', '.join(_SECURITY_PROTOCOLS)}; "
                f"got {self.security_protocol!r}"
            )
        object.__setattr__(self, "security_protocol", protocol)
        if self.sasl_mechanism is not None:
            mechanism = self.sasl_mechanism.upper()
            if mechanism not in _SASL_MECHANISMS:
                raise ConfigurationError(
                    f"kafka option sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}; "
                    f"got {self.sasl_mechanism!r}"
                )
            object.__setattr__(self, "sasl_mechanism", mechanism)
        if protocol.startswith("SASL_") and self.sasl_mechanism is None:
            raise ConfigurationError(
                f"kafka option security_protocol={protocol} needs sasl_mechanism "
                f"({', '.join(_SASL_MECHANISMS)})"
            )
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
            self.sasl_plain_username is None or self.sasl_plain_password is None
        ):
            raise ConfigurationError(
                f"kafka option sasl_mechanism={self.sasl_mechanism} needs "
                "sasl_plain_username and sasl_plain_password"
            )
        if self.acks.lower() not in _ACKS:
            raise ConfigurationError(f"kafka option acks must be all; got {self.acks!r}")
        if _ACKS[self.acks.lower()] != -1:
            raise ConfigurationError(
                f"kafka option acks={self.acks} is refused: statestream's producers write "
                "changelogs, and a changelog record acknowledged by one replica (acks=1), or "
                "by none (acks=0), can be lost after its source offset was committed, leaving "
                "the restored state wrong; with acks=0 kafka-python also reports offset -1 or "
                "0 for every batch, which would become store offsets. Use acks=all (the "
                "default); enable_idempotence=false does not lift this"
            )
        compression = self.compression_type.lower()
        if compression not in _COMPRESSION:
            raise ConfigurationError(
                f"kafka option compression_type must be one of {', '.join(_COMPRESSION)}; "
                f"got {self.compression_type!r}"
            )
        object.__setattr__(self, "compression_type", compression)
        self._check_numbers()
        self._api_version_tuple()  # validates the format

    def _check_numbers(self) -> None:
        positive = (
            "bootstrap_timeout_ms",
            "request_timeout_ms",
            "batch_size",
            "delivery_timeout_ms",
            "max_block_ms",
            "max_request_size",
            "transaction_timeout_ms",
            "fetch_max_bytes",
            "max_partition_fetch_bytes",
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "max_poll_interval_ms",
            "max_in_flight_requests_per_connection",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigurationError(
                    f"kafka option {name} must be positive, got {getattr(self, name)}"
                )
        non_negative = (
            "retry_backoff_ms",
            "reconnect_backoff_ms",
            "reconnect_backoff_max_ms",
            "metadata_max_age_ms",
            "connections_max_idle_ms",
            "linger_ms",
            "fetch_min_bytes",
            "fetch_max_wait_ms",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigurationError(
                    f"kafka option {name} must not be negative, got {getattr(self, name)}"
                )
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise ConfigurationError(
                "kafka option replication_factor must be -1 (broker default) or at least 1, "
                f"got {self.replication_factor}"
            )
        if not self.fetch_max_wait_ms < self.request_timeout_ms < self.connections_max_idle_ms:
            raise ConfigurationError(
                "kafka options must satisfy fetch_max_wait_ms < request_timeout_ms < "
                f"connections_max_idle_ms; got {self.fetch_max_wait_ms}, "
                f"{self.request_timeout_ms}, {self.connections_max_idle_ms}"
            )
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigurationError(
                "kafka option heartbeat_interval_ms must be below session_timeout_ms; got "
                f"{self.heartbeat_interval_ms} and {self.session_timeout_ms}"
            )
        if self.enable_idempotence and self.max_in_flight_requests_per_connection > 5:
            raise ConfigurationError(
                "kafka option max_in_flight_requests_per_connection must be at most 5 with "
                "enable_idempotence=true"
            )
        if not self.enable_idempotence and self.max_in_flight_requests_per_connection != 1:
            # Without idempotence, a retried or split batch may land after a
            # later one: in a compacted changelog an older value would then win.
            raise ConfigurationError(
                "kafka option enable_idempotence=false needs "
                "max_in_flight_requests_per_connection=1 (got "
                f"{self.max_in_flight_requests_per_connection}): with more requests in "
                "flight, retried or split batches land out of order and a changelog could "
                "keep an older value; keep enable_idempotence=true (the default) instead"
            )

    def _api_version_tuple(self) -> tuple[int, ...] | None:
        if self.api_version is None:
            return None
        try:
            parts = tuple(int(p) for p in self.api_version.split("."))
        except ValueError:
            parts = ()
        if not 2 <= len(parts) <= 3:
            raise ConfigurationError(
                f"kafka option api_version must look like 3.7 or 2.8.1, got {self.api_version!r}"
            )
        return parts

    def __repr__(self) -> str:
        # Passwords are left out (repr=False); proxy_url may carry the proxy's
        # user and password (``socks5://user:pw@proxy:1080``).
        shown = (
            f"{f.name}={(redact_url(v) if isinstance(v, str) else v)!r}"
            for f in fields(self)
            if f.repr
            for v in (getattr(self, f.name),)
        )
        return f"{type(self).__name__}({', '.join(shown)})"

    # -- kafka-python keyword arguments ----------------------------------------

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments every kafka-python client (admin, producer, consumer) takes.

        Passwords (and a proxy URL holding one) are
        :class:`~statestream.secrets.MaskedStr`: kafka-python logs the admin
        client's keyword arguments at DEBUG level, and they show as ``'***'``.
        """
        proxy = self.proxy_url
        config: dict[str, Any] = {
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": _masked(self.sasl_plain_password),
            "sasl_kerberos_service_name": self.sasl_kerberos_service_name,
            "sasl_kerberos_domain_name": self.sasl_kerberos_domain_name,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": _masked(self.ssl_password),
            "ssl_crlfile": self.ssl_crlfile,
            "ssl_check_hostname": self.ssl_check_hostname,
            "proxy_url": _masked(proxy) if proxy and url_secrets(proxy) else proxy,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "reconnect_backoff_ms": self.reconnect_backoff_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "connections_max_idle_ms": self.connections_max_idle_ms,
            "api_version": self._api_version_tuple(),
        }
        if self.ssl_ciphers is not None:
            # Only the producer and consumer know this one; the admin client
            # is built without it (see admin_config).
            config["ssl_ciphers"] = self.ssl_ciphers
        return config

    def admin_config(self) -> dict[str, Any]:
        """Keyword arguments for ``KafkaAdminClient``."""
        config = self.client_config()
        config.pop("ssl_ciphers", None)
        return config

    def producer_config(self) -> dict[str, Any]:
        """Keyword arguments for ``KafkaProducer`` (without a transactional id)."""
        config = self.client_config()
        config.update(
            acks=_ACKS[self.acks.lower()],
            linger_ms=self.linger_ms,
            batch_size=self.batch_size,
            compression_type=None if self.compression_type == "none" else self.compression_type,
            enable_idempotence=self.enable_idempotence,
            max_in_flight_requests_per_connection=self.max_in_flight_requests_per_connection,
            delivery_timeout_ms=self.delivery_timeout_ms,
            max_block_ms=self.max_block_ms,
            max_request_size=self.max_request_size,
            transaction_timeout_ms=self.transaction_timeout_ms,
            # statestream creates its topics explicitly; a typo must not create one.
            allow_auto_create_topics=False,
        )
        return config

    def consumer_config(self) -> dict[str, Any]:
        """Keyword arguments for ``KafkaConsumer`` (without group or reset settings)."""
        config = self.client_config()
        config.update(
            fetch_min_bytes=self.fetch_min_bytes,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            fetch_max_bytes=self.fetch_max_bytes,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes,
            check_crcs=self.check_crcs,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            allow_auto_create_topics=False,
        )
        return config


def _masked(secret: str | None) -> str | None:
    return None if secret is None else MaskedStr(secret)
