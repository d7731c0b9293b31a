"""Word count app run by the worker tests (``tests.worker.wordcount_app:app``).

Counts the words of topic ``sentences`` (json key, json string value) into
table ``counts`` and sends every new count to ``word-counts``, with a header
naming the source record, so tests can check each output value exactly.

Environment (read once, at import, so each worker process can be told apart):

* ``WORDCOUNT_SUFFIX``: appended to the app id and both topic names, so tests
  sharing one Kafka broker do not see each other's topics and groups.
* ``WORDCOUNT_PROGRESS_DIR``: if set, the last processed offset of each
  partition is kept in ``p<partition>`` there, and the first offset this
  process processed in ``first-<pid>-p<partition>``.
* ``WORDCOUNT_DELAY``: seconds to sleep per record (keeps a run mid-stream
  long enough to kill it).
"""

from __future__ import annotations

import os
import time

from statestream import App, Processor, Table
from statestream.context import Context, Message

SUFFIX = os.environ.get("WORDCOUNT_SUFFIX", "")
APP_ID = f"wordcount{SUFFIX}"
SOURCE = f"sentences{SUFFIX}"
OUTPUT = f"word-counts{SUFFIX}"
#: Header of every output record: "<source partition>:<source offset>".
SOURCE_HEADER = "source"

_PROGRESS_DIR = os.environ.get("WORDCOUNT_PROGRESS_DIR")
_DELAY = float(os.environ.get("WORDCOUNT_DELAY") or 0)


def _write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class WordCount(Processor):
    topics = (SOURCE,)
    outputs = (OUTPUT,)
    counts: Table[str, int] = Table("counts", default=int)

    def __init__(self) -> None:
        self._seen_first = False

    def process(self, message: Message, ctx: Context) -> None:
        source = f"{message.partition}:{message.offset}".encode()
        for word in str(message.value).lower().split():
            self.counts[word] += 1
            ctx.send(OUTPUT, word, self.counts[word], headers=((SOURCE_HEADER, source),))
        if _DELAY:
            time.sleep(_DELAY)
        if _PROGRESS_DIR:
            if not self._seen_first:
                self._seen_first = True
                first = os.path.join(_PROGRESS_DIR, f"first-{os.getpid()}-p{message.partition}")
                _write(first, str(message.offset))
            _write(os.path.join(_PROGRESS_DIR, f"p{message.partition}"), str(message.offset))


app = App(APP_ID, processors=[WordCount])
