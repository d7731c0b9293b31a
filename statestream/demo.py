"""``statestream demo``: a stateful app on the embedded log, no broker needed.

A generator thread writes page-view events (``{"user": ..., "page": ...}``,
keyed by user) to topic ``page-views`` at a steady rate while a worker counts
views per page and per user into two tables. Progress is printed live. Stop
it at any time (Ctrl-C or SIGTERM stops gracefully; even kill -9 is fine) and
run it again: state is restored, generation resumes after the last event
written, and at the end the counts are checked against the number of events
whose processing was committed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from statestream.app import App
from statestream.context import Context, Message
from statestream.log import open_transport
from statestream.log.base import TopicSpec, Transport
from statestream.processor import Processor
from statestream.serde import JsonCodec
from statestream.tables.manager import TableManager
from statestream.tables.table import Table
from statestream.types import TopicPartition
from statestream.worker.runner import Worker, WorkerStatus

__all__ = ["DemoResult", "PageViews", "event", "make_app", "run_demo"]

TOPIC = "page-views"
PARTITIONS = 4
PAGES = ("/", "/pricing", "/docs", "/blog", "/signup", "/login", "/about", "/careers")


def event(index: int) -> dict[str, str]:
    """Return event ``index``; the same index always gives the same event."""
    rng = random.Random(index)  # noqa: S311 - reproducible data, not secrets
    page = PAGES[min(int(rng.paretovariate(1.2)) - 1, len(PAGES) - 1)]
    return {"user": f"user-{rng.randrange(50):02d}", "page": page}


class PageViews(Processor):
    """Counts views per page and per user."""

    topics = (TOPIC,)
    by_page: Table[str, int] = Table("views-by-page", default=int)
    by_user: Table[str, int] = Table("views-by-user", default=int)

    def process(self, message: Message, ctx: Context) -> None:
        self.by_page[message.value["page"]] += 1
        self.by_user[message.value["user"]] += 1


def make_app(data_dir: str, commit_interval: float = 0.5) -> App:
    """The demo app, with its state and log under ``data_dir``."""
    return App(
        "demo", [PageViews], data_dir=data_dir, partitions=PARTITIONS,
        commit_interval=commit_interval,
    )  # fmt: skip


@dataclass(frozen=True)
class DemoResult:
    """What the demo holds after a run."""

    events_written: int
    events_committed: int
    by_page: dict[str, int]
    views_by_user: int
    exact: bool


def _produce(
    transport: Transport,
    start: int,
    count: int,
    rate: float,
    stop: threading.Event,
    failed: list[BaseException],
) -> None:
    """Write events ``start .. start+count-1`` at ``rate`` per second (generator thread)."""
    try:
        _produce_events(transport, start, count, rate, stop)
    except BaseException as exc:  # handed to the main thread, which reports it
        failed.append(exc)
        stop.set()


def _produce_events(
    transport: Transport, start: int, count: int, rate: float, stop: threading.Event
) -> None:
    codec = JsonCodec()
    producer = transport.producer()
    began = time.monotonic()
    try:
        for i in range(start, start + count):
            if stop.is_set():
                break
            item = event(i)
            producer.send(TOPIC, codec.encode(item["user"]), codec.encode(item))
            if rate > 0 and (i - start) % 100 == 99:
                producer.flush()
                ahead = (i - start + 1) / rate - (time.monotonic() - began)
                if ahead > 0:
                    stop.wait(ahead)
        producer.flush()
    finally:
        producer.close()


def _written(app: App) -> int:
    transport = open_transport(app.config.broker_url)
    try:
        transport.admin().ensure_topic(TopicSpec(TOPIC, PARTITIONS))
        fetcher = transport.fetcher()
        total = 0
        for p in range(PARTITIONS):
            total += fetcher.watermarks(TopicPartition(TOPIC, p))[1]
        fetcher.close()
        return total
    finally:
        transport.close()


def read_state(app: App) -> DemoResult:
    """Read the demo's committed state and check it (nothing else may hold the log)."""
    transport = open_transport(app.config.broker_url)
    manager = TableManager(app.app_id, app.tables(), transport, app.config.store_url)
    try:
        member = transport.group_member(app.app_id)
        committed = [member.committed(TopicPartition(TOPIC, p)) or 0 for p in range(PARTITIONS)]
        member.close()
        fetcher = transport.fetcher()
        written = sum(fetcher.watermarks(TopicPartition(TOPIC, p))[1] for p in range(PARTITIONS))
        fetcher.close()
        by_page: dict[str, int] = {}
        by_user = 0
        for p in range(PARTITIONS):
            manager.open_partition(p)
            manager.restore_partition(p, {TOPIC: committed[p]}, claim=False)
            manager.bind(p)
            for page, n in PageViews.by_page.items():
                by_page[page] = by_page.get(page, 0) + n
            by_user += sum(PageViews.by_user.values())
            manager.close_partition(p)
    finally:
        manager.close()
        transport.close()
    total = sum(committed)
    exact = sum(by_page.values()) == total == by_user
    return DemoResult(written, total, by_page, by_user, exact)


def run_demo(
    data_dir: str,
    events: int,
    rate: float = 2000.0,
    report: Callable[[str], None] = print,
    worker_ready: Callable[[Worker], None] | None = None,
) -> DemoResult:
    """Write ``events`` more events and process them; stop when all are committed.

    Thread ownership: the caller's thread becomes the worker's poll thread; a
    generator thread writes events. ``worker_ready`` receives the worker (so a
    signal handler can call ``request_stop``).
    """
    app = make_app(data_dir)
    start = _written(app)
    report(
        f"statestream demo: {events} page views from event {start} at {rate:.0f}/s into "
        f"{data_dir} (Ctrl-C stops gracefully; run again to resume)"
    )
    stop_producing = threading.Event()
    failed: list[BaseException] = []
    # One process owns an embedded log: the generator and the worker share it.
    transport = open_transport(app.config.broker_url)
    generator = threading.Thread(
        target=_produce,
        args=(transport, start, events, rate, stop_producing, failed),
        daemon=True,
    )
    target = start + events
    worker: Worker

    def on_status(status: WorkerStatus) -> None:
        done = status.counters.get("processed", 0)
        restoring = ", ".join(
            f"{name} {p.done}/{p.done + p.remaining}" for name, p in status.restoring.items()
        )
        report(
            f"  processed {done:>7} this run | partitions ready {status.ready}"
            + (f" | restoring {restoring}" if restoring else "")
        )
        if failed or (done >= events and not generator.is_alive()):
            worker.request_stop()

    worker = Worker(app, on_status=on_status, status_interval=1.0, transport=transport)
    if worker_ready is not None:
        worker_ready(worker)
    generator.start()
    try:
        worker.run()
    finally:
        stop_producing.set()
        generator.join()
        transport.close()
    if failed:
        raise failed[0]
    result = read_state(app)
    for page, n in sorted(result.by_page.items(), key=lambda kv: -kv[1]):
        report(f"  {page:<10} {n:>8}")
    verdict = "exact" if result.exact else "MISMATCH"
    report(
        f"{result.events_committed} events committed of {result.events_written} written "
        f"(target {target}); views by page {sum(result.by_page.values())}, by user "
        f"{result.views_by_user}: {verdict}"
    )
    return result
