"""Helpers shared by the benchmark scripts.

The scripts run as ``python benchmarks/bench_x.py``, so this directory is on
``sys.path`` (in spawned child processes too) and they import this module as
``_shared``.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

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
