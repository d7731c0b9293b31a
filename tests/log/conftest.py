"""Transport fixtures: every contract test runs on the embedded log and on Kafka.

``transport`` is parametrized over both; the Kafka variant uses the real broker
from ``tests/plugins/kafka.py`` (and is marked ``kafka``). ``topic_name`` makes
names no other test uses, since the Kafka broker is shared by the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from statestream.log import Transport, open_transport
from tests.plugins.kafka import make_topic_name

TRANSPORT_KINDS = ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)]


@pytest.fixture(params=TRANSPORT_KINDS)
def transport_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a fresh embedded log, or for the session's Kafka broker."""
    if request.param == "embedded":
        return f"embedded://{tmp_path}/log"
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    return f"kafka://{bootstrap}"


@pytest.fixture
def transport(transport_url: str) -> Iterator[Transport]:
    """An open transport of each kind, closed after the test."""
    opened = open_transport(transport_url)
    yield opened
    opened.close()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test (safe on a shared broker)."""
    return make_topic_name(request.node.name[:40])
