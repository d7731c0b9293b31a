"""Clicks per key and 100 ms window, with final results (``tests.worker.windowed_app:app``).

Sums the (json int) values of topic ``clicks`` per key and event-time window
into a tumbling table with ``final_topic``; ``on_window_close`` also sends
each closed window to ``click-closes`` through the record's context.

Environment (read at import; the names of ``tests/worker/conftest.py``'s
Cluster, which starts workers with them):

* ``WORDCOUNT_SUFFIX``: appended to the app id and topic names.
* ``WORDCOUNT_PROGRESS_DIR``: the last processed offset of each partition is
  kept in ``p<partition>`` there (see ``tests.worker.helpers.read_progress``).
* ``WORDCOUNT_DELAY``: seconds to sleep per record.
"""

from __future__ import annotations

import os
import time
from typing import Any

from statestream import App, Processor, Table
from statestream.context import Context, Message

SUFFIX = os.environ.get("WORDCOUNT_SUFFIX", "")
APP_ID = f"windowed{SUFFIX}"
SOURCE = f"clicks{SUFFIX}"
FINALS = f"click-finals{SUFFIX}"
CLOSES = f"click-closes{SUFFIX}"
TABLE = "clicks-per-window"
SIZE = 100
GRACE = 50

_PROGRESS_DIR = os.environ.get("WORDCOUNT_PROGRESS_DIR")
_DELAY = float(os.environ.get("WORDCOUNT_DELAY") or 0)


def _write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class Clicks(Processor):
    topics = (SOURCE,)
    outputs = (CLOSES,)
    per_window = Table(TABLE, default=int).tumbling(SIZE, grace=GRACE, final_topic=FINALS)

    def __init__(self) -> None:
        self.ctx: Context | None = None

    def process(self, message: Message, ctx: Context) -> None:
        self.ctx = ctx
        self.per_window[message.key] += int(message.value)
        if _DELAY:
            time.sleep(_DELAY)
        if _PROGRESS_DIR:
            _write(os.path.join(_PROGRESS_DIR, f"p{message.partition}"), str(message.offset))

    def on_window_close(self, key: Any, window: Any, value: Any) -> None:
        assert self.ctx is not None, "a window closed outside the processing of a record"
        self.ctx.send(
            CLOSES,
            key,
            {"table": window.table, "start": window.start, "end": window.end, "value": value},
        )


app = App(APP_ID, processors=[Clicks])
