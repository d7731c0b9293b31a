"""Child process for ``test_kill9.py``: counts keys of a source topic into a table.

Usage: ``python -m tests.tables.kill9_worker BROKER_URL STORE_DIR COMMIT_EVERY DELAY SUFFIX``
(``SUFFIX`` makes topic, group and app names unique on a shared broker).
Restores the table as of the group's committed source offset, then processes
the source to its end, committing every ``COMMIT_EVERY`` records through the
full commit protocol. Prints ``READY`` after restoring and ``DONE`` at the end.
"""

from __future__ import annotations

import sys
import time

from statestream.log import open_transport
from statestream.tables import Table, TableManager
from statestream.types import TopicPartition

SOURCE = "source"
GROUP = "counter"
APP_ID = "kill9"


def main(url: str, store_dir: str, commit_every: int, delay: float, suffix: str) -> None:
    source, group, app_id = SOURCE + suffix, GROUP + suffix, APP_ID + suffix
    transport = open_transport(url)
    tp = TopicPartition(source, 0)
    member = transport.group_member(group, reset="earliest")
    member.subscribe([source])
    counts: Table[str, int] = Table("counts", default=int)
    manager = TableManager(app_id, [counts], transport, f"leveldb://{store_dir}")
    manager.ensure_changelogs(1)
    manager.open_partition(0)
    committed = member.committed(tp)
    manager.restore_partition(0, {source: committed})
    manager.bind(0)
    print("READY", flush=True)
    fetcher = transport.fetcher()
    fetcher.assign([tp])
    _, high = fetcher.watermarks(tp)
    fetcher.close()
    last: int | None = None if committed is None else committed - 1
    since_commit = 0

    def commit() -> None:
        assert last is not None
        manager.commit(0, lambda: member.commit({tp: last + 1}))

    while last is None or last + 1 < high:
        for record in member.poll(timeout=0.2):
            manager.begin_record(0, record.topic, record.offset)
            assert record.value is not None
            counts[record.value.decode()] += 1
            last = record.offset
            since_commit += 1
            if since_commit >= commit_every:
                commit()
                since_commit = 0
            if delay:
                time.sleep(delay)
    if since_commit:
        commit()
    manager.close()
    member.close()
    transport.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
