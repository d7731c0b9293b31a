"""App run by ``statestream worker`` in the progress tests (``tests.progress_app:app``).

It keeps the last value per key in table ``values`` (memory stores restore
their whole changelog at every start). Its listener, added with
``App.add_listener`` as an app run by the CLI would, appends one json line
per restore event to the file named by ``PROGRESS_EVENTS`` (if set).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from statestream import App, Processor, Table
from statestream.context import Context, Message
from statestream.listeners import BatchRestored, RestoreEnded, RestoreStarted


class Keep(Processor):
    topics = ("items",)
    values: Table[str, Any] = Table("values")

    def process(self, message: Message, ctx: Context) -> None:
        self.values[message.key] = message.value


class EventFile:
    """Writes restore events as json lines (one writer at a time: a lock)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _write(self, kind: str, **fields: Any) -> None:
        if self.path is None:
            return
        with self._lock, open(self.path, "a") as out:
            out.write(json.dumps({"event": kind, **fields}) + "\n")

    def on_restore_start(self, event: RestoreStarted) -> None:
        self._write("start", partition=event.partition, start=event.start, end=event.end)

    def on_batch_restored(self, event: BatchRestored) -> None:
        self._write("batch", partition=event.partition, position=event.position, end=event.end)

    def on_restore_end(self, event: RestoreEnded) -> None:
        self._write("end", partition=event.partition, position=event.position)


app = App("progress", processors=[Keep])
app.add_listener(EventFile(os.environ.get("PROGRESS_EVENTS")))
