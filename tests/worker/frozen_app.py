"""Key count app run by ``test_frozen_worker.py`` (``tests.worker.frozen_app:app``).

Counts the records of topic ``sentences`` per key (json key) into table
``counts``; no output topic, so the two workers of the test spend their CPU
on the table. It takes the names and environment of
:mod:`tests.worker.wordcount_app` (``WORDCOUNT_SUFFIX``,
``WORDCOUNT_PROGRESS_DIR``, ``WORDCOUNT_DELAY``), so the worker tests'
``Cluster`` starts it unchanged, and it keeps the same progress files
(``p<partition>``: last processed offset).

At import it prints which ``statestream`` package the worker process runs,
so a test can check that its workers run the tree under test.
"""

from __future__ import annotations

import os
import sys
import time

import statestream
from statestream import App, Processor, Table
from statestream.context import Context, Message
from tests.worker.wordcount_app import APP_ID, SOURCE

#: Start of the line naming the ``statestream`` package file, in the worker's log.
RUNS_LINE = "frozen_app runs statestream from "

_PROGRESS_DIR = os.environ.get("WORDCOUNT_PROGRESS_DIR")
_DELAY = float(os.environ.get("WORDCOUNT_DELAY") or 0)

print(f"{RUNS_LINE}{statestream.__file__}", file=sys.stderr, flush=True)


class KeyCount(Processor):
    topics = (SOURCE,)
    counts: Table[str, int] = Table("counts", default=int)

    def process(self, message: Message, ctx: Context) -> None:
        self.counts[message.key] += 1
        if _DELAY:
            time.sleep(_DELAY)
        if _PROGRESS_DIR:
            path = os.path.join(_PROGRESS_DIR, f"p{message.partition}")
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(str(message.offset))
            os.replace(tmp, path)


app = App(APP_ID, processors=[KeyCount])
