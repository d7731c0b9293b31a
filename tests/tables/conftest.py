"""Fixtures for table tests: an embedded transport (and Kafka where marked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from statestream.log import Transport, open_transport


@pytest.fixture(scope="module")
def transport(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Transport]:
    """An embedded log shared by the tests of one module (each uses its own app ids)."""
    path: Path = tmp_path_factory.mktemp("tables")
    opened = open_transport(f"embedded://{path}/log")
    yield opened
    opened.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Transport]:
    """A fresh embedded log, closed after the test."""
    transport = open_transport(f"embedded://{tmp_path}/log")
    yield transport
    transport.close()
