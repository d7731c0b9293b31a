"""A global-table app run by the worker tests (``tests.worker.global_app:app``).

Topic ``commands`` carries json objects; the processor of each record:

* ``{"put": [key, value]}``: writes ``key`` to the global table ``lookup``
  through its topic (``ctx.send``);
* ``{"delete": key}``: deletes it the same way;
* ``{"probe": n}``: answers on ``probes`` with what this worker's copy holds
  (``{"pid", "partition", "probe", "items"}``), so tests see each worker's copy.

Environment: ``WORDCOUNT_SUFFIX`` (set by the tests' ``Cluster``) is appended
to the app id and the topic names, so tests sharing a broker stay apart.
"""

from __future__ import annotations

import os

from statestream import App, GlobalTable, Processor
from statestream.context import Context, Message

SUFFIX = os.environ.get("WORDCOUNT_SUFFIX", "")
APP_ID = f"globals{SUFFIX}"
SOURCE = f"commands{SUFFIX}"
PROBES = f"probes{SUFFIX}"
#: The global table's topic (the default: ``<app id>-<name>-changelog``).
LOOKUP_TOPIC = f"{APP_ID}-lookup-changelog"


class Commands(Processor):
    topics = (SOURCE,)
    outputs = (PROBES,)
    lookup: GlobalTable[str, int] = GlobalTable("lookup")

    def process(self, message: Message, ctx: Context) -> None:
        command = message.value
        if "put" in command:
            key, value = command["put"]
            ctx.send(LOOKUP_TOPIC, key, value)
        elif "delete" in command:
            ctx.send(LOOKUP_TOPIC, command["delete"], None)
        else:
            answer = {
                "pid": os.getpid(),
                "partition": message.partition,
                "probe": command["probe"],
                "items": dict(self.lookup.items()),
            }
            ctx.send(PROBES, message.key, answer)


app = App(APP_ID, processors=[Commands])
