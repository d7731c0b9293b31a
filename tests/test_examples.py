"""The examples in ``examples/`` do what their docstrings say, run as a user runs them."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from statestream.log.base import TopicSpec
from tests.worker.helpers import WorkerProcess, open_embedded, read_topic, wait_for

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
