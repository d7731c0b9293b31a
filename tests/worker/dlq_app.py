"""Dead-letter app run by ``test_outputs_survive_kill.py`` (``tests.worker.dlq_app:app``).

Topic ``sentences<suffix>`` (the worker tests' names, see
:mod:`tests.worker.wordcount_app`) carries ``{"n": int}`` values keyed by
account; table ``totals`` adds them up per key, and a value with
``"poison": true`` raises after touching the table: the dead-letter policy
sends it to ``<app id>-dead-letters``, with its table change rolled back.
``WORDCOUNT_DELAY`` seconds are spent per record, so a kill lands mid-stream.
"""

from __future__ import annotations

import os
import time

from statestream import App, Processor, Table
from statestream.context import Context, Message
from tests.worker.wordcount_app import APP_ID, SOURCE

_DELAY = float(os.environ.get("WORDCOUNT_DELAY") or 0)


class PoisonError(Exception):
    """Raised for a record marked poison."""


class Totals(Processor):
    topics = (SOURCE,)
    error_policy = "dead_letter"
    totals: Table[str, int] = Table("totals", default=int)

    def process(self, message: Message, ctx: Context) -> None:
        self.totals[message.key] += int(message.value["n"])
        if _DELAY:
            time.sleep(_DELAY)
        if message.value.get("poison"):
            raise PoisonError(f"poison record for {message.key}")


app = App(APP_ID, processors=[Totals])
