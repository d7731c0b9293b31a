"""Pytest plugin: a real Apache Kafka broker for tests marked ``kafka``.

Load it with ``pytest_plugins = ["tests.plugins.kafka"]`` (or ``-p
tests.plugins.kafka``). It provides:

* ``kafka_broker`` (session): the :class:`Broker` from
  ``scripts/kafka_broker.py``, started on first use and stopped at the end
  of the session (also when the session is interrupted).
* ``kafka_bootstrap`` (session): its ``"host:port"`` bootstrap string.
* ``unique_topic`` (function): a topic name no other test uses;
  :func:`make_topic_name` does the same outside fixtures.

Environment:

* ``STATESTREAM_TEST_KAFKA=host:port`` uses that already-running broker
  instead of starting one (it is never stopped by the plugin).
* ``STATESTREAM_REQUIRE_KAFKA=1`` turns "no broker" (no Java/Maven, start
  failure, unreachable external broker) from a skip into a test failure,
  so a run that is meant to exercise Kafka cannot pass by skipping.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:  # scripts/ is not a package; at runtime it is loaded by path
    from scripts.kafka_broker import Broker

__all__ = [
    "EXTERNAL_ENV",
    "REQUIRE_ENV",
    "kafka_bootstrap",
    "kafka_broker",
    "load_broker_module",
    "make_topic_name",
    "unique_topic",
]

EXTERNAL_ENV = "STATESTREAM_TEST_KAFKA"
REQUIRE_ENV = "STATESTREAM_REQUIRE_KAFKA"

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka_broker.py"
# One fixed module name, so every importer shares one module object (and
# one Broker / BrokerUnavailable class) however often it is loaded.
_MODULE_NAME = "statestream_kafka_broker"


class _State:
    """Per-process plugin state (one pytest session per process)."""

    # The broker this plugin started and has not stopped yet.
    active: Broker | None = None
    # Why the broker could not be provided, for the end-of-run banner.
    unavailable_reason: str | None = None


_state = _State()


def load_broker_module() -> ModuleType:
    """Import ``scripts/kafka_broker.py`` by path (once per process)."""
    module = sys.modules.get(_MODULE_NAME)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, _SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing: dataclasses look their module up in
    # sys.modules while the class body is processed.
    sys.modules[_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE_NAME]
        raise
    return module


def _kafka_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(reason: str) -> NoReturn:
    """Skip (or, with STATESTREAM_REQUIRE_KAFKA=1, fail) the requesting test.

    pytest caches a session fixture's outcome, so this runs once and every
    later test asking for the broker gets the same skip/failure at once.
    """
    _state.unavailable_reason = reason
    message = f"KAFKA BROKER UNAVAILABLE: {reason}"
    if _kafka_required():
        pytest.fail(
            f"{message}\n({REQUIRE_ENV} is set, so this is an error, not a skip)", pytrace=False
        )
    pytest.skip(message)


def _stop_active() -> None:
    """Stop the broker this plugin started, if it still runs. Safe to call
    from several teardown paths; only the first call does anything."""
    broker, _state.active = _state.active, None
    if broker is not None:
        broker.stop()


# Last line of defence for exits that skip pytest's own teardown. (A hard
# kill of the test process is covered by the broker's parent-death signal,
# see start_broker(die_with_parent=True).)
atexit.register(_stop_active)


def make_topic_name(label: str = "topic") -> str:
    """A topic name that is unique per call: ``label`` squeezed to Kafka's
    legal characters (letters, digits, '-'; no '.'/'_' so names cannot
    collide in metric names) plus a random suffix, under the 249-char limit."""
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", label).strip("-")[:80] or "topic"
    return f"t-{slug}-{uuid.uuid4().hex[:12]}"


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``kafka`` marker, so the plugin works under
    --strict-markers even where the ini file does not list it."""
    config.addinivalue_line("markers", "kafka: needs the real Kafka broker")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the broker even if the session ends early (Ctrl-C, -x, internal
    error), when fixture teardown may not have run."""
    _stop_active()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Make a missing broker impossible to overlook in the output."""
    if _state.unavailable_reason is not None:
        lines = _state.unavailable_reason.strip().splitlines()
        first_line = lines[0] if lines else "no reason given"
        terminalreporter.write_sep(
            "!",
            f"KAFKA BROKER UNAVAILABLE: kafka tests did not run: {first_line}",
            red=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    """The session's Kafka broker (started on first request).

    With STATESTREAM_TEST_KAFKA=host:port, a handle on that broker instead
    (checked for reachability, never stopped). Skips the test, or fails it
    under STATESTREAM_REQUIRE_KAFKA=1, when no broker can be had.
    """
    module = load_broker_module()
    external = os.environ.get(EXTERNAL_ENV, "").strip()
    broker: Broker | None = None
    failure = ""
    try:
        broker = module.external_broker(external) if external else module.start_broker()
    except (module.BrokerUnavailable, ValueError) as exc:
        failure = f"{EXTERNAL_ENV}={external}: {exc}" if external else str(exc)
    if broker is None:
        # Outside the except block, so the skip/failure report is not
        # cluttered with "during handling of the above exception".
        _unavailable(failure)
    if external:
        yield broker  # someone else's broker: never stopped here
        return
    _state.active = broker
    try:
        yield broker
    finally:
        _stop_active()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: Broker) -> str:
    """``"host:port"`` of the session's broker, for ``bootstrap_servers``."""
    return kafka_broker.bootstrap


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name derived from the test's name (not created)."""
    return make_topic_name(request.node.name)
