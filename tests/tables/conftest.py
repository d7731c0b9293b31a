"""Fixtures for table tests: an embedded transport (and Kafka where marked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from statestream.log import Transport, open_transport


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Transport]:
    """A fresh embedded log, closed after the test."""
    transport = open_transport(f"embedded://{tmp_path}/log")
    yield transport
    transport.close()
