"""The examples in ``examples/`` do what their docstrings say, run as a user runs them."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import examples.clicks
from statestream.log.base import TopicSpec
from tests.worker.helpers import (
    REPO_ROOT,
    WorkerProcess,
    clean_env,
    open_embedded,
    read_topic,
    wait_for,
)

PARTITIONS = 4


def test_orders_are_enriched_with_their_customers(tmp_path: Path) -> None:
    rng = random.Random(5)
    customers = {f"c{i}": {"name": f"customer {i}"} for i in range(30)}
    orders = {f"o{i}": {"customer": rng.choice(sorted(customers)), "amount": i} for i in range(300)}
    transport = open_embedded(tmp_path)
    try:
        admin = transport.admin()
        for topic in ("customers", "orders"):
            admin.ensure_topic(TopicSpec(topic, PARTITIONS))
        producer = transport.producer()
        # Half the orders come before any customer: they wait for theirs.
        items = list(orders.items())
        for key, value in items[:150]:
            producer.send("orders", json.dumps(key).encode(), json.dumps(value).encode())
        for key, value in customers.items():
            producer.send("customers", json.dumps(key).encode(), json.dumps(value).encode())
        for key, value in items[150:]:
            producer.send("orders", json.dumps(key).encode(), json.dumps(value).encode())
        producer.flush()
        producer.close()
    finally:
        transport.close()
    worker = WorkerProcess(
        "examples.orders:app",
        ["--data-dir", str(tmp_path), "--partitions", str(PARTITIONS)],
        tmp_path / "worker.log",
    )
    try:
        wait_for(lambda: worker.log().count("ready: replayed") == PARTITIONS, 30, "ready")
        time.sleep(3)  # 330 records take well under a second
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    transport = open_embedded(tmp_path)
    try:
        records = read_topic(transport, "enriched-orders", PARTITIONS)
    finally:
        transport.close()
    enriched = {
        json.loads(r.key or b"null"): json.loads(r.value or b"null")
        for recs in records.values()
        for r in recs
    }
    assert set(enriched) == set(orders)
    for order_id, order in orders.items():
        assert enriched[order_id] == {
            **order,
            "id": order_id,
            "customer_data": customers[order["customer"]],
        }


def test_clicks_example_runs_as_its_docstring_says(tmp_path: Path) -> None:
    """examples/clicks.py: the docstring's commands, run as written, print its output."""
    doc = examples.clicks.__doc__ or ""
    lines = re.findall(r"'(\{\"key\".*?\})' \\", doc)
    assert len(lines) == 4, doc

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "statestream.cli", *args, "--data-dir", str(tmp_path)],
            cwd=REPO_ROOT,
            env=clean_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    produced = cli(
        "produce", "clicks", "--json", "--partitions", "1", stdin="\n".join(lines) + "\n"
    )
    assert produced.returncode == 0, produced.stderr
    worker = WorkerProcess("examples.clicks:app", ["--data-dir", str(tmp_path)], tmp_path / "w.log")
    try:
        wait_for(lambda: "ready: replayed" in worker.log(), 30, "ready")
        time.sleep(2)  # four records
        assert worker.stop() == 0, worker.log()
    finally:
        worker.ensure_stopped()
    consumed = cli("consume", "clicks-per-minute")
    assert consumed.returncode == 0, consumed.stderr
    finals = {
        fields[2]: json.loads(fields[3])
        for fields in (line.split("\t") for line in consumed.stdout.splitlines())
    }
    # The record at 75 s closes the first minute (60 s + 10 s grace); the
    # second minute stays open.
    assert finals == {
        "ada": {"start": 0, "end": 60000, "value": 2},
        "bob": {"start": 0, "end": 60000, "value": 1},
    }
    tables = cli("tables", "examples.clicks:app")
    assert tables.returncode == 0, tables.stderr
    assert "(1 partitions, compact,delete)" in tables.stdout
    assert (
        "tumbling windows of 60000 ms, grace 10000 ms, retention 3600000 ms, "
        "final values to clicks-per-minute"
    ) in tables.stdout
