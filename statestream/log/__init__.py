"""The transport layer: one log protocol, two implementations, chosen by URL.

``kafka://host:9092[,host2:9092][?option=value...]`` uses a Kafka cluster
(:mod:`statestream.log.kafka`, the only module that imports kafka-python).
``embedded:///path/to/dir`` uses the embedded durable log
(:mod:`statestream.log.embedded`), the zero-infrastructure default.
Implementations are imported only when their scheme is used. Messages and
reprs show a URL with its secrets as ``***`` (:func:`statestream.secrets.redact_url`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from statestream.errors import ConfigurationError, UnknownTransportSchemeError
from statestream.log.base import (
    Admin,
    Delivery,
    Fetcher,
    GroupMember,
    Producer,
    RebalanceListener,
    TopicDescription,
    TopicSpec,
    Transport,
)
from statestream.secrets import redact_url

__all__ = [
    "DEFAULT_BROKER_URL",
    "TRANSPORTS",
    "Admin",
    "Delivery",
    "Fetcher",
    "GroupMember",
    "Producer",
    "RebalanceListener",
    "TopicDescription",
    "TopicSpec",
    "Transport",
    "TransportURL",
    "open_transport",
    "parse_transport_url",
]

#: Used when no broker URL is configured: an embedded log in ./statestream-data/log.
DEFAULT_BROKER_URL = "embedded://./statestream-data/log"

#: scheme -> "module:function" taking a TransportURL and returning a Transport.
TRANSPORTS: Mapping[str, str] = {
    "kafka": "statestream.log.kafka:open_kafka",
    "embedded": "statestream.log.embedded:open_embedded",
}


class TransportURL:
    """A parsed broker URL: scheme, hosts, path and options (one value each).

    ``raw`` is the URL as given, secrets included: show :attr:`redacted` instead.
    """

    __slots__ = ("hosts", "options", "path", "raw", "scheme")

    def __init__(
        self, raw: str, scheme: str, hosts: tuple[str, ...], path: str, options: dict[str, str]
    ) -> None:
        self.raw = raw
        self.scheme = scheme
        self.hosts = hosts
        self.path = path
        self.options = options

    @property
    def redacted(self) -> str:
        """The URL with its secrets as ``***``, for messages and logs."""
        return redact_url(self.raw)

    def local_path(self) -> str:
        """Return the directory of a local URL (``x:///abs`` or ``x://./rel``)."""
        if self.hosts and self.hosts not in (("localhost",), (".",), ("..",)):
            raise ConfigurationError(
                f"{self.scheme} URLs name a directory, not a host: use "
                f"'{self.scheme}:///absolute/dir' or '{self.scheme}://./relative/dir', "
                f"got {self.redacted!r}"
            )
        base = self.hosts[0] if self.hosts and self.hosts[0] in (".", "..") else ""
        path = base + self.path
        if not path or path == "/":
            raise ConfigurationError(f"{self.scheme} URL needs a directory, got {self.redacted!r}")
        return path

    def __repr__(self) -> str:
        return f"TransportURL({self.redacted!r})"


def parse_transport_url(url: str) -> TransportURL:
    """Split a broker URL; a repeated option, or credentials before the host, are errors."""
    if not isinstance(url, str) or "://" not in url:
        shown = repr(redact_url(url)) if isinstance(url, str) else f"a {type(url).__name__}"
        raise ConfigurationError(
            f"broker URL must look like 'kafka://host:9092' or 'embedded:///path', got {shown}"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 address
        raise ConfigurationError(f"broker URL {redact_url(url)!r} is malformed: {exc}") from None
    if "@" in parts.netloc:
        # No transport reads user information: it would be taken for a host
        # name (and shown, password and all, in connection errors).
        raise ConfigurationError(
            "broker URL takes no credentials before the host; give them as options, e.g. "
            "'kafka://host:9092?security_protocol=SASL_SSL&sasl_mechanism=PLAIN"
            f"&sasl_plain_username=...&sasl_plain_password=...', got {redact_url(url)!r}"
        )
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in options:
            raise ConfigurationError(
                f"option {name!r} is given twice in broker URL {redact_url(url)!r}"
            )
        options[name] = value
    hosts = tuple(h for h in parts.netloc.split(",") if h)
    return TransportURL(url, parts.scheme.lower(), hosts, parts.path, options)


def open_transport(url: str | None = None) -> Transport:
    """Open the transport for ``url`` (default: :data:`DEFAULT_BROKER_URL`)."""
    parsed = parse_transport_url(url or DEFAULT_BROKER_URL)
    target = TRANSPORTS.get(parsed.scheme)
    if target is None:
        raise UnknownTransportSchemeError(
            f"unknown broker URL scheme {parsed.scheme!r} in {parsed.redacted!r}; known: "
            f"{', '.join(sorted(TRANSPORTS))} (e.g. 'kafka://host:9092' or "
            "'embedded:///var/lib/myapp/log')"
        )
    module_name, _, func = target.partition(":")
    module = importlib.import_module(module_name)
    transport: Transport = getattr(module, func)(parsed)
    return transport
