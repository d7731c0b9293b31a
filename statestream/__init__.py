"""statestream: stream processing with durable, fault-tolerant, queryable state.

The package is layered (lowest first): ``errors``/``serde``/``config``, then
``stores``, then ``log``, ``tables``, the user-facing API and the worker. A layer
only imports the layers below it; ``setup.cfg`` holds the import-linter contract
that keeps it so.
"""

from statestream.app import App
from statestream.context import Context, Message
from statestream.errors import StateStreamError
from statestream.processor import Processor, repartition
from statestream.tables.globaltable import GlobalTable
from statestream.tables.table import Table
from statestream.tables.windowed import ClosedWindow, LateRecord, WindowedTable, WindowedValue

__all__ = [
    "App",
    "ClosedWindow",
    "Context",
    "GlobalTable",
    "LateRecord",
    "Message",
    "Processor",
    "StateStreamError",
    "Table",
    "WindowedTable",
    "WindowedValue",
    "__version__",
    "repartition",
]

__version__ = "0.1.0"
