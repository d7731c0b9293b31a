"""Logging of the ``statestream`` command: levels per logger, text or JSON lines, and
the Kafka client's connection errors turned into one statestream line.

:func:`configure_logging` installs one handler on the root logger and
returns a :class:`LoggingSetup`, which undoes it on :meth:`~LoggingSetup.close`.
Contract:

* **Levels** (:func:`parse_log_levels`): ``LEVEL[,LOGGER=LEVEL...]``, e.g.
  ``INFO,kafka=DEBUG,statestream.recovery=DEBUG``. The bare level is the
  root logger's (statestream and the app's own loggers); client-library
  loggers (:data:`CLIENT_LOGGERS`: kafka-python's ``kafka``) log at WARNING
  or the bare level, whichever is higher, unless a ``LOGGER=LEVEL`` item
  names them or one of their children.
* **Format**: ``text`` (``time LEVEL logger: message``) or ``json``, one
  object per line with ``time`` (UTC, ISO 8601, milliseconds), ``level``,
  ``logger``, ``thread``, ``message``, the fields of :data:`EXTRA_FIELDS` a
  log call passes with ``extra=`` (``partition``, ``table``, ...), and
  ``error`` (the traceback) when the call logs an exception. Secrets are
  hidden in both (the ``redact`` function given).
* **Connection errors**: while brokers cannot be reached kafka-python logs
  several WARNING and ERROR lines per retry (hundreds a second across a
  worker's clients). The handler's filter counts them in a
  :class:`BrokerWatch` and drops them, unless a ``LOGGER=LEVEL`` item
  names the client logger they come from; :class:`OutageReporter` then logs
  one WARNING on ``statestream.broker`` every few seconds while it lasts, and
  one INFO when connections succeed again. The watch hears of successes
  from kafka-python's ``Connected`` line, for which ``kafka.net.connection``
  is set to INFO internally (its other INFO lines are still dropped unless
  asked for).

This module does not import kafka-python (only ``statestream.log.kafka``
does): its errors are recognised by class name. Only the command line
calls :func:`configure_logging`; applications that run a
:class:`~statestream.worker.runner.Worker` themselves may call it too, or
configure logging as they like.

Thread ownership: the setup and the reporter belong to the thread that made
them (they are started and closed there); the filter, the formatters and
the watch are called from every thread that logs and are thread-safe.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, Literal, NamedTuple

from statestream.errors import ConfigurationError

__all__ = [
    "CLIENT_LOGGERS",
    "EXTRA_FIELDS",
    "LOG_FORMATS",
    "BrokerWatch",
    "JsonFormatter",
    "LogLevels",
    "LoggingSetup",
    "Outage",
    "OutageReporter",
    "TextFormatter",
    "configure_logging",
    "parse_log_levels",
]

#: Loggers of client libraries, quiet (WARNING) unless named in the levels.
CLIENT_LOGGERS = ("kafka",)
#: Fields a log call may pass with ``extra=`` that JSON lines carry.
EXTRA_FIELDS = ("partition", "partitions", "table", "topic")
#: Output formats of :func:`configure_logging`.
LOG_FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]

_LEVELS: Mapping[str, int] = MappingProxyType(
    {
        "DEBUG": logging.DEBUG,
        "INFO": logging.INFO,
        "WARNING": logging.WARNING,
        "WARN": logging.WARNING,
        "ERROR": logging.ERROR,
        "CRITICAL": logging.CRITICAL,
    }
)
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: kafka-python's logger whose INFO line ``<conn>: Connected`` says a broker answered.
_CONNECTION_LOGGER = "kafka.net.connection"
#: Exception classes (by name, anywhere in the MRO) that mean "cannot reach a broker".
_CONNECTION_ERRORS = frozenset(
    {
        "KafkaConnectionError",
        "NodeNotReadyError",
        "NoBrokersAvailable",
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "ConnectionError",  # the builtin: refused, reset, broken pipe
        "TimeoutError",
    }
)
#: kafka-python messages about unreachable brokers that carry no exception.
_CONNECTION_PHRASES = (
    "No node available",
    "socket disconnected",
    "not ready; waiting",
    "Request timed out after",
    "Unable to bootstrap",
    "Bootstrap attempt",
    # A receive on a connection closed under it: kafka-python logs the error
    # it hit (even an AttributeError on its closed socket, with a traceback)
    # and reconnects.
    "Error receiving network data",
)


# -- levels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLevels:
    """The bare level, and the levels of loggers named explicitly."""

    default: int = logging.INFO
    named: Mapping[str, int] = field(default_factory=dict)

    def client_default(self) -> int:
        """The level of a client-library logger the levels do not name."""
        return max(logging.WARNING, self.default)

    def wanted(self, logger: str) -> int:
        """The level ``logger`` logs at under these levels (the most specific name wins)."""
        name = logger
        while True:
            if name in self.named:
                return self.named[name]
            if "." not in name:
                break
            name = name.rpartition(".")[0]
        return self.client_default() if name in CLIENT_LOGGERS else self.default

    def names_client(self, logger: str) -> bool:
        """Whether a named item covers client logger ``logger`` (``kafka=`` covers ``kafka.x``)."""
        return any(logger == name or logger.startswith(name + ".") for name in self.named)


def parse_log_levels(text: str) -> LogLevels:
    """Parse ``LEVEL[,LOGGER=LEVEL...]`` (case-insensitive level names), e.g. ``INFO,kafka=DEBUG``.

    The bare level may be left out (``kafka=INFO``: the default stays INFO)
    and is given at most once. Raises :class:`ConfigurationError` naming
    the item that does not parse.
    """
    default: int | None = None
    named: dict[str, int] = {}
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ConfigurationError(
            "log level must be LEVEL[,LOGGER=LEVEL...], e.g. INFO or INFO,kafka=DEBUG; got ''"
        )
    for item in items:
        name, sep, level_text = item.partition("=")
        level = _LEVELS.get((level_text if sep else name).strip().upper())
        if level is None or (sep and not name.strip()) or (not sep and not item):
            raise ConfigurationError(
                f"log level item {item!r} is not LEVEL or LOGGER=LEVEL (levels: DEBUG, INFO, "
                f"WARNING, ERROR, CRITICAL), in {text!r}"
            )
        if not sep:
            if default is not None:
                raise ConfigurationError(f"log level {text!r} gives the bare level twice")
            default = level
        else:
            named[name.strip()] = level
    return LogLevels(logging.INFO if default is None else default, MappingProxyType(named))


# -- the outage watch -------------------------------------------------------------------


class Outage(NamedTuple):
    """Connection errors without a successful connection since ``started`` (monotonic s)."""

    started: float
    seconds: float
    errors: int


class BrokerWatch:
    """Counts hidden connection errors and tells whether brokers are unreachable now.

    An outage starts with a connection error and ends with a successful
    connection, or once no error came for ``quiet`` seconds (kafka-python
    retries at least every ``reconnect_backoff_max_ms``, 1 s by default, so
    silence means it stopped failing). Thread-safe.
    """

    def __init__(self, quiet: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._quiet = quiet
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None
        self._last_error = 0.0
        self._errors = 0
        #: Connection errors hidden since the watch was made.
        self.total_errors = 0
        self._ended: Outage | None = None

    def failed(self) -> None:
        """A connection error was logged (and hidden)."""
        now = self._clock()
        with self._lock:
            self._end_if_quiet(now)
            if self._started is None:
                self._started, self._errors = now, 0
            self._errors += 1
            self.total_errors += 1
            self._last_error = now

    def connected(self) -> None:
        """A connection to a broker succeeded: an outage, if any, is over."""
        now = self._clock()
        with self._lock:
            if self._started is not None:
                self._end(Outage(self._started, now - self._started, self._errors))

    def outage(self) -> Outage | None:
        """The outage going on now, or None."""
        now = self._clock()
        with self._lock:
            self._end_if_quiet(now)
            if self._started is None:
                return None
            return Outage(self._started, now - self._started, self._errors)

    def take_ended(self) -> Outage | None:
        """The outage that ended since this was last called, or None.

        Several that ended in between are returned as one, from the start
        of the first to the end of the last.
        """
        with self._lock:
            self._end_if_quiet(self._clock())
            ended, self._ended = self._ended, None
            return ended

    def _end_if_quiet(self, now: float) -> None:
        if self._started is not None and now - self._last_error >= self._quiet:
            self._end(Outage(self._started, self._last_error - self._started, self._errors))

    def _end(self, outage: Outage) -> None:
        # Outages ending before the last one was taken are one outage: the
        # first connections after a long one often fail again at once, and
        # the reporter must still hear of the outage it reported.
        first = self._ended
        if first is not None:
            end = outage.started + outage.seconds
            outage = Outage(first.started, end - first.started, first.errors + outage.errors)
        self._ended = outage
        self._started = None


def _is_connection_error(record: logging.LogRecord) -> bool:
    """Whether a client library's record says a broker could not be reached."""
    if record.levelno < logging.WARNING:
        return False
    candidates: list[object] = []
    if isinstance(record.args, tuple):
        candidates.extend(record.args)
    if record.exc_info and record.exc_info[1] is not None:
        candidates.append(record.exc_info[1])
    for candidate in candidates:
        if isinstance(candidate, BaseException) and any(
            cls.__name__ in _CONNECTION_ERRORS for cls in type(candidate).__mro__
        ):
            return True
    template = str(record.msg)
    if any(phrase in template for phrase in _CONNECTION_PHRASES):
        return True
    # Messages formatted before logging (f-strings) carry the error's name.
    return "KafkaConnectionError" in template


class _ClientFilter(logging.Filter):
    """The handler's filter: hides client connection errors (counted) and lines below
    the wanted level of loggers this module turned up."""

    def __init__(self, levels: LogLevels, watch: BrokerWatch) -> None:
        super().__init__()
        self._levels = levels
        self._watch = watch
        self._connection_floor = levels.wanted(_CONNECTION_LOGGER)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not any(name == c or name.startswith(c + ".") for c in CLIENT_LOGGERS):
            return True
        if name == _CONNECTION_LOGGER and record.levelno == logging.INFO:
            if str(record.msg).endswith(": Connected"):
                self._watch.connected()
            return record.levelno >= self._connection_floor
        if _is_connection_error(record):
            self._watch.failed()
            return self._levels.names_client(name)
        return True


# -- formats ----------------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` (and the traceback), with secrets redacted."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__(_TEXT_FORMAT)
        self._redact = redact or _same

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring), with secrets redacted."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self._redact = redact or _same

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        document: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": self._redact(record.getMessage()),
        }
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["error"] = self._redact(self.formatException(record.exc_info))
        elif record.stack_info:
            document["error"] = self._redact(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def _same(text: str) -> str:
    return text


# -- the setup --------------------------------------------------------------------------


class LoggingSetup:
    """What :func:`configure_logging` installed; :meth:`close` removes it again."""

    def __init__(
        self,
        handler: logging.Handler,
        watch: BrokerWatch,
        previous: dict[str, int],
    ) -> None:
        self.handler = handler
        #: Connection errors hidden from the log, for :class:`OutageReporter`.
        self.watch = watch
        self._previous = previous
        self._reporter: OutageReporter | None = None

    def report_outages(
        self,
        describe: Callable[[], str] | None = None,
        *,
        where: str = "",
        interval: float = 5.0,
    ) -> OutageReporter:
        """Start the thread that logs outages of :attr:`watch` (see :class:`OutageReporter`).

        Once per setup: a second call returns the running reporter with
        ``describe`` and ``where`` replaced.
        """
        if self._reporter is None:
            self._reporter = OutageReporter(self.watch, describe, interval, where=where)
            self._reporter.start()
        else:
            if describe is not None:
                self._reporter.describe = describe
            self._reporter.where = where or self._reporter.where
        return self._reporter

    def close(self) -> None:
        """Stop the reporter, remove the handler and restore the levels changed."""
        if self._reporter is not None:
            self._reporter.stop()
            self._reporter = None
        root = logging.getLogger()
        root.removeHandler(self.handler)
        self.handler.close()
        for name, level in self._previous.items():
            logging.getLogger(name or None).setLevel(level)


def configure_logging(
    levels: LogLevels,
    log_format: LogFormat = "text",
    *,
    stream: IO[str] | None = None,
    redact: Callable[[str], str] | None = None,
    watch: BrokerWatch | None = None,
) -> LoggingSetup:
    """Log to ``stream`` (default: standard error) as the module docstring says.

    Adds one handler to the root logger and sets the levels of the root, of
    the client loggers and of every named logger; :meth:`LoggingSetup.close`
    undoes exactly that.
    """
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(
            f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
        )
    watch = watch or BrokerWatch()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(redact) if log_format == "json" else TextFormatter(redact)
    )
    handler.setFormatter(formatter)
    handler.addFilter(_ClientFilter(levels, watch))
    wanted: dict[str, int] = {"": levels.default}
    for client in CLIENT_LOGGERS:
        wanted[client] = levels.client_default()
    wanted.update(levels.named)
    # The success line the watch needs is INFO; the filter drops what the
    # levels did not ask for.
    if levels.wanted(_CONNECTION_LOGGER) > logging.INFO:
        wanted[_CONNECTION_LOGGER] = logging.INFO
    previous: dict[str, int] = {}
    for name, level in wanted.items():
        logger = logging.getLogger(name or None)
        previous[name] = logger.level
        logger.setLevel(level)
    logging.getLogger().addHandler(handler)
    return LoggingSetup(handler, watch, previous)


# -- the reporter -----------------------------------------------------------------------


class OutageReporter(threading.Thread):
    """Logs brokers being unreachable: one WARNING every ``interval`` seconds.

    The first line comes once an outage has lasted ``interval`` seconds
    (shorter ones are logged at DEBUG when they end); a line saying the
    brokers answer again follows an outage that was reported. ``describe``
    returns what the process waits for, e.g. ``"the worker waits to commit
    partitions [0, 1]"``; it is called on this thread and must be
    thread-safe. ``where`` names the brokers (a URL with its secrets
    hidden). Logs on ``statestream.broker``.

    Thread ownership: its own daemon thread; :meth:`stop` from the thread that
    started it.
    """

    def __init__(
        self,
        watch: BrokerWatch,
        describe: Callable[[], str] | None = None,
        interval: float = 5.0,
        *,
        where: str = "",
    ) -> None:
        super().__init__(name="statestream-broker-watch", daemon=True)
        self.watch = watch
        #: Says what the process waits for (replaceable while running).
        self.describe = describe or _waiting
        #: Names the brokers in the lines (replaceable while running).
        self.where = where
        self.interval = interval
        self._stopping = threading.Event()
        self._log = logging.getLogger("statestream.broker")

    def run(self) -> None:
        reported: float | None = None  # start of the outage reported last
        next_line = 0.0
        tick = min(1.0, self.interval / 2)
        while not self._stopping.wait(tick):
            ended = self.watch.take_ended()
            if ended is not None:
                if ended.started == reported:
                    self._log.info(
                        "Kafka brokers answer again%s after %.0f s unreachable "
                        "(%d connection errors)",
                        f" ({self.where})" if self.where else "",
                        ended.seconds,
                        ended.errors,
                    )
                else:
                    self._log.debug(
                        "%d Kafka connection errors in %.1f s, then connected again",
                        ended.errors,
                        ended.seconds,
                    )
                reported = None
            outage = self.watch.outage()
            if outage is None or outage.seconds < self.interval:
                continue
            now = time.monotonic()
            if outage.started != reported or now >= next_line:
                reported, next_line = outage.started, now + self.interval
                self._log.warning(
                    "Kafka brokers unreachable for %.0f s%s: %s; %d connection errors hidden "
                    "(--log-level INFO,kafka=WARNING shows them)",
                    outage.seconds,
                    f" ({self.where})" if self.where else "",
                    self._describe(),
                    outage.errors,
                )

    def _describe(self) -> str:
        try:
            return self.describe()
        except Exception as exc:  # a report must never stop the reporter
            return f"(cannot tell what it waits for: {type(exc).__name__}: {exc})"

    def stop(self) -> None:
        """Stop and join the thread (a no-op if it never started)."""
        self._stopping.set()
        if self.is_alive():
            self.join()


def _waiting() -> str:
    return "waiting for them to come back"
