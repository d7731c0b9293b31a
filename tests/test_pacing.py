"""``Pacer``: while the worker is busy, queries together get ``share`` of each window."""

from __future__ import annotations

import time

import pytest

from statestream.config import AppConfig
from statestream.errors import ConfigurationError
from statestream.query.pacing import DEFAULT_SHARE, Pacer


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_busy_worker_gives_queries_their_share_of_each_window() -> None:
    pacer = Pacer(lambda: True, share=0.1, window=0.05)
    started = time.monotonic()
    for _ in range(20):
        with pacer.pace():
            spin(0.005)  # each read takes its window's whole budget
    elapsed = time.monotonic() - started
    # 20 reads of 5 ms at 5 ms per 50 ms window: about 20 windows.
    assert elapsed >= 19 * 0.05 * 0.9
    assert elapsed < 20 * 0.05 * 2


def test_an_idle_worker_answers_unpaced() -> None:
    pacer = Pacer(lambda: False, share=0.1, window=0.05)
    started = time.monotonic()
    for _ in range(20):
        with pacer.pace():
            spin(0.005)
    assert time.monotonic() - started < 20 * 0.005 * 3


def test_the_share_is_a_setting_checked_when_the_app_is_made() -> None:
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ConfigurationError, match="query_share must be above 0"):
            AppConfig.resolve("pacing", query_share=bad)
    assert AppConfig.resolve("pacing", query_share=1).query_share == 1.0
    assert AppConfig.resolve("pacing").query_share == DEFAULT_SHARE


def test_a_share_of_one_never_waits() -> None:
    pacer = Pacer(lambda: True, share=1.0, window=0.05)
    started = time.monotonic()
    for _ in range(20):
        with pacer.pace():
            spin(0.005)
    assert time.monotonic() - started < 20 * 0.005 * 3
