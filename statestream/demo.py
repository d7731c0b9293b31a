"""A self-contained demo of durable state: page views counted per page.

It generates a deterministic stream of page-view events (event ``i`` is always
the same), counts views per page, and every ``commit_every`` events writes the
changed counts to a LevelDB store *together with the offset of the last event*
in one atomic batch. Stop it at any moment (Ctrl-C, or kill -9) and start it
again: it resumes after the stored offset, and its counts are checked against
a recount of events ``0..offset`` from scratch.

Until the worker exists this exercises the store layer directly; it needs no
broker and no configuration.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from statestream.serde import JsonCodec, StrCodec
from statestream.stores.leveldb import LevelDBStore

__all__ = ["DemoResult", "event", "run_demo"]

PAGES = ("/", "/pricing", "/docs", "/blog", "/signup", "/login", "/about", "/careers")
USERS = 50


def event(index: int) -> tuple[str, str]:
    """Return the (user, page) of event ``index``; the same index always gives the same event."""
    rng = random.Random(index)  # noqa: S311 - reproducible data, not secrets
    return f"user-{rng.randrange(USERS):02d}", PAGES[min(int(rng.paretovariate(1.2)) - 1, 7)]


def recount(last_offset: int) -> dict[str, int]:
    """Count views per page for events ``0..last_offset`` from scratch."""
    counts: dict[str, int] = {}
    for i in range(last_offset + 1):
        page = event(i)[1]
        counts[page] = counts.get(page, 0) + 1
    return counts


@dataclass(frozen=True)
class DemoResult:
    """What a demo run did: where it started and stopped, and the counts it holds."""

    resumed_from: int | None
    last_offset: int | None
    counts: dict[str, int]
    verified: bool


def run_demo(
    data_dir: str,
    events: int,
    commit_every: int = 500,
    report: Callable[[str], None] = print,
    pause: float = 0.0,
) -> DemoResult:
    """Process ``events`` more events into the store under ``data_dir``.

    Thread ownership: runs on the calling thread, which owns the store.
    Returns after verifying the stored counts against a recount.
    """
    keys, values = StrCodec(), JsonCodec()
    store = LevelDBStore(data_dir, "page-views", 0)
    try:
        resumed_from = store.offset()
        start = 0 if resumed_from is None else resumed_from + 1
        if resumed_from is None:
            report(f"starting fresh in {data_dir}")
        else:
            report(f"resuming after event {resumed_from} (state restored from {data_dir})")
        dirty: dict[str, int] = {}
        began = time.perf_counter()
        for i in range(start, start + events):
            page = event(i)[1]
            if page not in dirty:
                stored = store.get(keys.encode(page))
                dirty[page] = 0 if stored is None else int(values.decode(stored))
            dirty[page] += 1
            if (i + 1 - start) % commit_every == 0 or i == start + events - 1:
                # Data and offset in one atomic batch: after a crash the store
                # holds exactly the events up to the offset it records.
                store.write({keys.encode(p): values.encode(c) for p, c in dirty.items()}, i)
                dirty.clear()
                done = i + 1 - start
                if done % (commit_every * 10) == 0 or done == events:
                    rate = done / max(time.perf_counter() - began, 1e-9)
                    report(f"  committed through event {i}  ({done}/{events}, {rate:,.0f}/s)")
                if pause:
                    time.sleep(pause)
        last = store.offset()
        counts = {keys.decode(k): int(values.decode(v)) for k, v in store.iterate()}
    finally:
        store.close()
    expected = recount(last) if last is not None else {}
    verified = counts == expected
    for page, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        report(f"  {page:<10} {count:>8}")
    report(
        f"{sum(counts.values())} views through event {last}: "
        + ("matches a recount from scratch" if verified else "DOES NOT MATCH a recount")
    )
    return DemoResult(resumed_from, last, counts, verified)
