"""The per-record fast path of ``table[key] += x`` on windowed tables, in a worker.

A record's first ``+=`` checks its event time; its later ones go straight to
the window (statestream.tables.window_state, ``_fast_ok``). The check holds
for one record only: the next record's writes land in its own window, and a
write once the record ended (here: in ``on_revoked``) finds no record and
raises, as it does without the fast path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from statestream import App, Processor, Table
from statestream.errors import TableContextError
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.worker import Worker, WorkerStatus

pytestmark = pytest.mark.timeout(120)

SIZE = 1_000
#: (words, timestamp): the second record starts a new window for the same words.
RECORDS = [("a b a c", 10), ("a b", 20), ("b c c", SIZE + 5), ("a", 2 * SIZE + 1)]


def test_each_record_writes_its_own_window_and_none_after_it_ends(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Count(Processor):
        topics = ("fast-words",)
        counts = Table("counts", default=int).tumbling(SIZE)

        def process(self, message: Any, ctx: Any) -> None:
            for word in message.value.split():
                self.counts[word] += 1

        def on_revoked(self, partition: int) -> None:
            seen["windows"] = {
                word: [(w.start, w.end, w.value) for w in self.counts[word].all()] for word in "abc"
            }
            try:
                self.counts["a"] += 1
            except TableContextError as exc:
                seen["error"] = exc

    url = f"embedded://{tmp_path}/log"
    transport = open_transport(url)
    admin = transport.admin()
    admin.ensure_topic(TopicSpec("fast-words", 1))
    admin.close()
    producer = transport.producer()
    for words, ts in RECORDS:
        producer.send("fast-words", None, json.dumps(words).encode(), timestamp=ts)
    producer.flush()
    producer.close()
    app = App(
        "fast-app",
        [Count],
        broker_url=url,
        store_url=f"leveldb://{tmp_path}/stores",
        data_dir=str(tmp_path),
    )

    def on_status(status: WorkerStatus) -> None:
        if status.counters.get("processed", 0) >= len(RECORDS):
            worker.request_stop()

    worker = Worker(app, transport=transport, on_status=on_status, status_interval=0.05)
    assert worker.run() == 0
    transport.close()
    assert seen["windows"] == {
        "a": [(0, SIZE, 3), (2 * SIZE, 3 * SIZE, 1)],
        "b": [(0, SIZE, 2), (SIZE, 2 * SIZE, 1)],
        "c": [(0, SIZE, 1), (SIZE, 2 * SIZE, 2)],
    }
    assert isinstance(seen.get("error"), TableContextError), seen
    assert "no record is being processed" in str(seen["error"])
