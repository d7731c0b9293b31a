"""Produce and fetch throughput of each transport, next to raw kafka-python.

Run::

    .venv/bin/python benchmarks/bench_log.py [--bootstrap HOST:PORT] [--n N] [--size BYTES]
        [--partitions P] [--repeat R] [--linger-ms MS] [--batch-size BYTES] [--json]

Without ``--bootstrap`` a throwaway broker is started with
``scripts/kafka_broker.py`` (Java and Maven needed) and stopped at the end.

What is measured, in records per second:

``produce``
    N keyed records (keys ``b"key:%08d"``, random values of ``--size`` bytes,
    the same list every time) sent to a fresh topic of P partitions, then one
    ``flush()``; the clock stops when the last record is acknowledged.
``fetch``
    The same N records read back from offset 0 of every partition by one
    fetcher with manual assignment, polling up to 500 records at a time,
    until all N have been returned.

Each figure is measured for:

* **raw kafka-python**: ``KafkaProducer.send(topic, key=, value=)`` (its own
  murmur2 partitioner) and ``KafkaConsumer.poll()`` (records counted, not
  converted), built with exactly the keyword arguments the transport gives
  kafka-python (same acks, linger, batch size, idempotence, fetch sizes);
* **the Kafka transport**: ``Producer.send`` / ``Fetcher.poll`` from
  ``open_transport("kafka://...")`` with the same settings in its URL; its
  extra work (statestream's partitioner, delivery tracking, conversion to
  ``Record``) is what the ratio shows;
* **the embedded log**: ``open_transport("embedded:///tmpdir")``, when it
  can be opened (otherwise the table says why not).

On Kafka, ``send_batch`` is measured too: the same records grouped by
partition (``i % P``, outside the clock), one ``Producer.send_batch`` per
partition (the list of ``(key, value, ())`` built inside the clock, as the
changelog writer builds its own), then one ``flush()``; its ratio to raw
``KafkaProducer.send`` is printed without a target.

Fairness: the topic and the client are created (and the topic's metadata
fetched) before the clock starts; raw and transport runs alternate; one
warm-up run of each is discarded; the garbage collector is off while timing;
the best of R runs is reported. Targets (issue 4): the Kafka transport at
least 85% of raw kafka-python for both figures, the embedded log at least as
fast as the Kafka transport. Run it on an otherwise idle machine: the broker
shares the CPU with the client, so other load shows up as noise.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from _shared import load_broker_module  # benchmarks/ is on sys.path
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition

from statestream.config import options_from_strings
from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.log.kafka_options import KafkaOptions
from statestream.types import TopicPartition

SEED = 20240601
REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_RECORDS = 500
POLL_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Workload:
    """The records every run sends, built once before any timing."""

    n: int
    partitions: int
    pairs: list[tuple[bytes, bytes]]


def make_workload(n: int, size: int, partitions: int) -> Workload:
    rng = random.Random(SEED)
    return Workload(n, partitions, [(b"key:%08d" % i, rng.randbytes(size)) for i in range(n)])


def timed(run: Callable[[], object]) -> float:
    """Return the wall time of ``run()`` in seconds, with the garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    finally:
        gc.enable()


@dataclass
class Figure:
    """One client's runs of one operation."""

    client: str
    operation: str
    n: int
    seconds: list[float] = field(default_factory=list)
    unavailable: str | None = None

    @property
    def best(self) -> float | None:
        """Records per second of the fastest run."""
        return self.n / min(self.seconds) if self.seconds else None

    def as_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "operation": self.operation,
            "records": self.n,
            "seconds": self.seconds,
            "records_per_s": self.best,
            "unavailable": self.unavailable,
        }


Trial = Callable[[], float]


def alternate(trials: dict[str, Trial], figures: dict[str, Figure], repeat: int) -> None:
    """Run every trial once to warm up, then ``repeat`` times, alternating clients."""
    for trial in trials.values():
        trial()
    for _ in range(repeat):
        for name, trial in trials.items():
            figures[name].seconds.append(trial())


# -- one trial per client and operation -----------------------------------------


def fresh_topic(transport: Transport, workload: Workload) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    transport.admin().create_topic(TopicSpec(name, workload.partitions))
    return name


def transport_produce(transport: Transport, workload: Workload) -> Trial:
    def trial() -> float:
        topic = fresh_topic(transport, workload)
        producer = transport.producer()
        try:
            producer.partitions_for(topic)  # metadata outside the clock, as for raw

            def run() -> None:
                send = producer.send
                for key, value in workload.pairs:
                    send(topic, key, value)
                producer.flush()

            return timed(run)
        finally:
            producer.close()
            transport.admin().delete_topic(topic)

    return trial


def transport_produce_batches(transport: Transport, workload: Workload) -> Trial:
    """``send_batch`` (what the changelog writer uses): one batch per partition."""
    by_partition: list[list[tuple[bytes, bytes]]] = [[] for _ in range(workload.partitions)]
    for i, pair in enumerate(workload.pairs):
        by_partition[i % workload.partitions].append(pair)

    def trial() -> float:
        topic = fresh_topic(transport, workload)
        producer = transport.producer()
        try:
            producer.partitions_for(topic)

            def run() -> None:
                for partition, pairs in enumerate(by_partition):
                    producer.send_batch(topic, partition, [(k, v, ()) for k, v in pairs])
                producer.flush()

            return timed(run)
        finally:
            producer.close()
            transport.admin().delete_topic(topic)

    return trial


def transport_fetch(transport: Transport, topic: str, workload: Workload) -> Trial:
    tps = [TopicPartition(topic, p) for p in range(workload.partitions)]

    def trial() -> float:
        fetcher = transport.fetcher()
        try:
            fetcher.assign(tps)
            for tp in tps:
                fetcher.seek(tp, 0)

            def run() -> None:
                count = 0
                poll = fetcher.poll
                while count < workload.n:
                    count += len(poll(POLL_TIMEOUT_S, POLL_RECORDS))

            return timed(run)
        finally:
            fetcher.close()

    return trial


def raw_produce(
    bootstrap: str, options: KafkaOptions, transport: Transport, workload: Workload
) -> Trial:
    def trial() -> float:
        topic = fresh_topic(transport, workload)
        producer = KafkaProducer(bootstrap_servers=bootstrap, **options.producer_config())
        try:
            producer.partitions_for(topic)

            def run() -> None:
                send = producer.send
                for key, value in workload.pairs:
                    send(topic, key=key, value=value)
                producer.flush()

            return timed(run)
        finally:
            producer.close()
            transport.admin().delete_topic(topic)

    return trial


def raw_fetch(bootstrap: str, options: KafkaOptions, topic: str, workload: Workload) -> Trial:
    tps = [KafkaTopicPartition(topic, p) for p in range(workload.partitions)]

    def trial() -> float:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",
            **options.consumer_config(),
        )
        try:
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)

            def run() -> None:
                count = 0
                poll = consumer.poll
                timeout_ms = int(POLL_TIMEOUT_S * 1000)
                while count < workload.n:
                    for batch in poll(timeout_ms=timeout_ms, max_records=POLL_RECORDS).values():
                        count += len(batch)

            return timed(run)
        finally:
            consumer.close(autocommit=False)

    return trial


def fill(transport: Transport, workload: Workload) -> str:
    """Create a topic holding the workload (untimed), for the fetch runs."""
    topic = fresh_topic(transport, workload)
    producer = transport.producer()
    try:
        for key, value in workload.pairs:
            producer.send(topic, key, value)
        producer.flush()
    finally:
        producer.close()
    return topic


# -- the two transports ---------------------------------------------------------


def bench_kafka(
    bootstrap: str, query: dict[str, str], workload: Workload, repeat: int
) -> list[Figure]:
    options = options_from_strings(KafkaOptions, query, "benchmark settings")
    transport = open_transport(f"kafka://{bootstrap}?{urlencode(query)}")
    figures = {
        name: Figure(name, op, workload.n)
        for name, op in [
            ("raw produce", "produce"),
            ("kafka produce", "produce"),
            ("kafka send_batch", "send_batch"),
            ("raw fetch", "fetch"),
            ("kafka fetch", "fetch"),
        ]
    }
    try:
        alternate(
            {
                "raw produce": raw_produce(bootstrap, options, transport, workload),
                "kafka produce": transport_produce(transport, workload),
                "kafka send_batch": transport_produce_batches(transport, workload),
            },
            figures,
            repeat,
        )
        topic = fill(transport, workload)
        try:
            alternate(
                {
                    "raw fetch": raw_fetch(bootstrap, options, topic, workload),
                    "kafka fetch": transport_fetch(transport, topic, workload),
                },
                figures,
                repeat,
            )
        finally:
            transport.admin().delete_topic(topic)
    finally:
        transport.close()
    for name, figure in figures.items():
        figure.client = "kafka-python (raw)" if name.startswith("raw") else "kafka transport"
    return list(figures.values())


def bench_embedded(root: str, workload: Workload, repeat: int) -> list[Figure]:
    produce = Figure("embedded log", "produce", workload.n)
    fetch = Figure("embedded log", "fetch", workload.n)
    try:
        transport = open_transport(f"embedded://{root}/log")
    except Exception as exc:  # not written yet, or plyvel missing: say so, measure the rest
        reason = f"{type(exc).__name__}: {exc}"
        produce.unavailable = fetch.unavailable = reason
        return [produce, fetch]
    try:
        alternate({"produce": transport_produce(transport, workload)}, {"produce": produce}, repeat)
        topic = fill(transport, workload)
        alternate({"fetch": transport_fetch(transport, topic, workload)}, {"fetch": fetch}, repeat)
    finally:
        transport.close()
    return [produce, fetch]


# -- broker ---------------------------------------------------------------------


class BrokerHandle:
    """The broker to measure against: given, or started here and stopped on exit."""

    def __init__(self, bootstrap: str | None) -> None:
        self.bootstrap = bootstrap
        self._broker: Any = None

    def __enter__(self) -> str:
        if self.bootstrap is None:
            print("starting a Kafka broker (scripts/kafka_broker.py) ...", file=sys.stderr)
            self._broker = load_broker_module().start_broker()
            self.bootstrap = self._broker.bootstrap
        assert self.bootstrap is not None
        return self.bootstrap

    def __exit__(self, *exc: object) -> None:
        if self._broker is not None:
            self._broker.stop()


# -- report ---------------------------------------------------------------------


def find(figures: list[Figure], client: str, operation: str) -> Figure | None:
    return next((f for f in figures if f.client == client and f.operation == operation), None)


def ratio(num: Figure | None, den: Figure | None) -> float | None:
    if num is None or den is None or num.best is None or den.best is None:
        return None
    return num.best / den.best


def report_lines(figures: list[Figure]) -> Iterator[str]:
    clients = ["kafka-python (raw)", "kafka transport", "embedded log"]
    yield f"{'client':<20} {'produce rec/s':>14} {'fetch rec/s':>13}"
    for client in clients:
        cells = []
        for operation in ("produce", "fetch"):
            figure = find(figures, client, operation)
            best = figure.best if figure else None
            cells.append(f"{best:,.0f}" if best is not None else "-")
        yield f"{client:<20} {cells[0]:>14} {cells[1]:>13}"
    batches = find(figures, "kafka transport", "send_batch")
    if batches is not None and batches.best is not None:
        note = "(produce through Producer.send_batch)"
        yield f"{'kafka send_batch':<20} {batches.best:>14,.0f}  {note}"
    for figure in figures:
        if figure.unavailable and figure.operation == "produce":
            yield f"{figure.client}: unavailable ({figure.unavailable})"
    yield ""
    checks = [
        ("kafka transport / raw kafka-python", "kafka transport", "kafka-python (raw)", 0.85),
        ("embedded log / kafka transport", "embedded log", "kafka transport", 1.0),
    ]
    value = ratio(batches, find(figures, "kafka-python (raw)", "produce"))
    if value is not None:
        yield f"{'send_batch / raw kafka-python send':<36} {'produce':<8} {value:7.1%}"
    for label, num, den, target in checks:
        for operation in ("produce", "fetch"):
            value = ratio(find(figures, num, operation), find(figures, den, operation))
            if value is None:
                yield f"{label:<36} {operation:<8} n/a"
                continue
            verdict = "ok" if value >= target else "BELOW TARGET"
            yield (f"{label:<36} {operation:<8} {value:7.1%}  (target >= {target:.0%}: {verdict})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="host:port of a broker (default: start one)")
    parser.add_argument("--n", type=int, default=200_000, help="records per run (200000)")
    parser.add_argument("--size", type=int, default=100, help="value bytes (100)")
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions (4)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (3)")
    parser.add_argument("--linger-ms", type=int, default=5, help="producer linger (5)")
    parser.add_argument("--batch-size", default="64k", help="producer batch size (64k)")
    parser.add_argument("--skip-embedded", action="store_true", help="measure Kafka only")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    query = {
        "client_id": "statestream-bench",
        "linger_ms": str(args.linger_ms),
        "batch_size": str(args.batch_size),
    }
    workload = make_workload(args.n, args.size, args.partitions)
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="statestream-bench-log-")
    try:
        with BrokerHandle(args.bootstrap) as bootstrap:
            figures = bench_kafka(bootstrap, query, workload, args.repeat)
        if args.skip_embedded:
            figures += [Figure("embedded log", op, args.n, unavailable="skipped") for op in
                        ("produce", "fetch")]  # fmt: skip
        else:
            figures += bench_embedded(root, workload, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    out = sys.stderr if args.json else sys.stdout
    print(
        f"bench_log: {args.n} records of {args.size} bytes, {args.partitions} partitions, "
        f"settings {query}, best of {args.repeat}; python {platform.python_version()}, "
        f"{total:.0f}s total",
        file=out,
    )
    for line in report_lines(figures):
        print(line, file=out)
    if args.json:
        json.dump(
            {
                "records": args.n,
                "value_bytes": args.size,
                "partitions": args.partitions,
                "settings": query,
                "total_seconds": total,
                "results": [f.as_json() for f in figures],
            },
            sys.stdout,
            indent=2,
        )
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
