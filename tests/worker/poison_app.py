"""An app with a poison record, run by the error-policy tests (``tests.worker.poison_app:app``).

Topic ``events`` carries ``{"n": 3}`` values keyed by account; table
``totals`` adds them up per key. A value with ``"poison": true`` is added to
the table first and then raises, so a correct rollback leaves no trace of it.
"""

from __future__ import annotations

from statestream import App, Processor, Table
from statestream.context import Context, Message

APP_ID = "poison"
SOURCE = "events"
DEAD_LETTERS = f"{APP_ID}-dead-letters"


class PoisonError(Exception):
    """Raised for a record marked poison."""


class Totals(Processor):
    topics = (SOURCE,)
    totals: Table[str, int] = Table("totals", default=int)
    seen: Table[str, int] = Table("seen", default=int)

    def process(self, message: Message, ctx: Context) -> None:
        self.seen["records"] += 1
        self.totals[message.key] += int(message.value["n"])
        if message.value.get("poison"):
            raise PoisonError(f"poison record for {message.key}")


app = App(APP_ID, processors=[Totals])
