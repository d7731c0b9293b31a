"""Clicks per user per minute, on event time, with each minute's final count sent out.

Topic ``clicks`` is keyed by user; each value carries its event time in
milliseconds, ``{"page": "/", "ts": 1700000000000}``. ``per_minute`` counts
clicks per user in tumbling one-minute windows of *event* time (the ``ts``
field, not the time the record arrived), accepts clicks up to 10 s late, and
once a minute can no longer change sends its final count to
``clicks-per-minute``, keyed by user: ``{"start": ..., "end": ..., "value": 3}``.

Run it on the embedded log::

    printf '%s\\n' \\
      '{"key": "ada", "value": {"page": "/", "ts": 0}}' \\
      '{"key": "ada", "value": {"page": "/a", "ts": 30000}}' \\
      '{"key": "bob", "value": {"page": "/", "ts": 45000}}' \\
      '{"key": "ada", "value": {"page": "/b", "ts": 75000}}' \\
      | statestream produce clicks --json --partitions 1
    statestream worker examples.clicks:app
    statestream consume clicks-per-minute

The record at 75 s moves stream time past the first minute plus its grace
(60 s + 10 s), so the first minute closes: ``ada`` 2 and ``bob`` 1 are sent.
The second minute stays open until a record at 130 s or later arrives.
"""

from __future__ import annotations

from statestream import App, Processor, Table
from statestream.context import Context, Message
from statestream.tables.windowed import ClosedWindow


class ClicksPerMinute(Processor):
    topics = ["clicks"]
    per_minute = Table("clicks-per-minute", default=int).tumbling(
        60_000,
        grace=10_000,
        retention=3_600_000,
        event_time=lambda message: message.value["ts"],
        final_topic="clicks-per-minute",
    )

    def process(self, message: Message, ctx: Context) -> None:
        self.per_minute[message.key] += 1

    def on_window_close(self, key: str, window: ClosedWindow, value: int) -> None:
        if value >= 100:
            print(f"{key} clicked {value} times between {window.start} and {window.end}")


app = App("clicks", processors=[ClicksPerMinute])
