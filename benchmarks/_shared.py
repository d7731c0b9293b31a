"""Helpers shared by the benchmark scripts.

The scripts run as ``python benchmarks/bench_x.py``, so this directory is on
``sys.path`` (in spawned child processes too) and they import this module as
``_shared``.
"""

from __future__ import annotations

import importlib.util
import resource
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_broker_module() -> ModuleType:
    """Import ``scripts/kafka_broker.py`` by path (scripts/ is not a package)."""
    name = "statestream_kafka_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "kafka_broker.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load scripts/kafka_broker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package_version(name: str) -> str:
    """Return an installed distribution's version, or ``"unknown"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def peak_rss_kb() -> int:
    """This process's peak RSS in KiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


@dataclass
class Side:
    """One side of a comparison and its runs (dicts with ``records``, ``seconds``,
    ``rss_before_kb`` and ``rss_peak_kb``)."""

    name: str
    description: str
    runs: list[dict] = field(default_factory=list)

    @property
    def best(self) -> dict:
        return min(self.runs, key=lambda r: r["seconds"])

    @property
    def rate(self) -> float:
        best = self.best
        return float(best["records"] / best["seconds"])

    @property
    def rss_peak_kb(self) -> int:
        return max(r["rss_peak_kb"] for r in self.runs)

    @property
    def rss_before_kb(self) -> int:
        return max(r["rss_before_kb"] for r in self.runs)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "records_per_s": self.rate,
            "rss_peak_kb": self.rss_peak_kb,
            "rss_before_kb": self.rss_before_kb,
            "runs": [{k: v for k, v in r.items() if k != "profile"} for r in self.runs],
        }
