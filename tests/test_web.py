"""The worker's HTTP endpoint: JSON answers, health, the token, and redirects between workers.

One worker on the embedded log (a thread of this process) answers
``/tables``, keys, ranges and ``/health``; with a token set, requests
without it get 401 and the token appears in no answer. Two workers on the
real broker advertise their endpoints through the group: every key is
answered by either worker, directly, by a redirect to its owner, or
proxied with ``?proxy=1``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statestream import App, Processor, Table
from statestream.errors import QueryError
from statestream.log import Transport, open_transport
from statestream.log.base import TopicSpec
from statestream.worker import Worker
from tests.worker.global_helpers import Running
from tests.worker.helpers import wait_for

PARTITIONS = 4
TOKEN = "s3cr3t-token-for-tests"


class Counter(Processor):
    topics = ("words",)
    counts = Table("counts", default=int)

    def process(self, message: Any, ctx: Any) -> None:
        self.counts[message.value] += 1


def fetch(url: str, token: str | None = None, redirect: bool = True) -> tuple[int, Any, dict]:
    """GET ``url``: (status, parsed JSON body or text, headers)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    opener = urllib.request.build_opener(*([] if redirect else [_NoRedirect()]))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            status, body, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, body, got = exc.code, exc.read(), dict(exc.headers)
    text = body.decode()
    try:
        return status, json.loads(text), got
    except json.JSONDecodeError:
        return status, text, got


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def produce(transport: Transport, topic: str, words: list[str]) -> None:
    producer = transport.producer()
    try:
        for word in words:
            data = json.dumps(word).encode()
            producer.send(topic, data, data)
        producer.flush()
    finally:
        producer.close()


def words_log(tmp_path: Path) -> Transport:
    """The embedded log under ``tmp_path``, with its ``words`` topic."""
    transport = open_transport(f"embedded://{tmp_path}/log")
    admin = transport.admin()
    admin.ensure_topic(TopicSpec("words", PARTITIONS))
    admin.close()
    return transport


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Running, Transport, str]]:
    transport = words_log(tmp_path)
    app = App(
        "web",
        [Counter],
        broker_url=f"embedded://{tmp_path}/log",
        store_url=f"leveldb://{tmp_path}/stores",
        commit_interval=0.05,
        web_port=0,
    )
    running = Running(app, transport)
    try:
        wait_for(lambda: running.worker.endpoint, 30, "the endpoint")
        assert running.worker.endpoint is not None
        yield running, transport, running.worker.endpoint
    finally:
        running.stop()
        transport.close()


def test_the_endpoint_answers_tables_keys_ranges_and_health(
    embedded: tuple[Running, Transport, str],
) -> None:
    _, transport, url = embedded
    assert url.startswith("http://127.0.0.1:"), "binds to the loopback by default"
    produce(transport, "words", ["apple", "apple", "avocado", "banana"])
    wait_for(lambda: fetch(f"{url}/tables/counts/keys/apple")[0] == 200, 30, "apple committed")
    status, body, headers = fetch(f"{url}/tables/counts/keys/apple")
    assert headers["Content-Type"] == "application/json"
    assert (body["found"], body["value"], body["copy"], body["table"]) == (
        True,
        2,
        "active",
        "counts",
    )
    status, body, _ = fetch(f"{url}/tables/counts/keys/cherry")
    assert (status, body["found"], body["value"]) == (404, False, None)
    status, body, _ = fetch(f"{url}/tables")
    assert (status, body) == (200, {"tables": ["counts"]})
    wait_for(lambda: fetch(f"{url}/tables/counts/keys/banana")[0] == 200, 30, "banana committed")
    status, body, _ = fetch(f"{url}/tables/counts?prefix=a")
    assert status == 200
    assert sorted((i["key"], i["value"]) for i in body["items"]) == [("apple", 2), ("avocado", 1)]
    status, body, _ = fetch(f"{url}/tables/counts?limit=1")
    assert body["more"] is True
    status, body, _ = fetch(f"{url}/tables/nope/keys/x")
    assert (status, body["error"]) == (404, "unknown_table")
    status, body, _ = fetch(f"{url}/tables/counts?limit=zero")
    assert (status, body["error"]) == (400, "bad_request")
    status, body, _ = fetch(f"{url}/nowhere")
    assert status == 404
    status, body, _ = fetch(f"{url}/health")
    assert (status, body["status"], body["restoring"]) == (200, "ready", [])
    assert sorted(body["partitions"]) == list(range(PARTITIONS))


def test_health_is_not_ready_before_the_worker_runs(tmp_path: Path) -> None:
    app = App("web-h", [Counter], broker_url=f"embedded://{tmp_path}/log", web_port=0)
    ready, details = Worker(app).health()
    assert (ready, details["in_group"]) == (False, False)


def test_a_token_is_required_and_never_shown(tmp_path: Path) -> None:
    transport = words_log(tmp_path)
    app = App(
        "web-t",
        [Counter],
        broker_url=f"embedded://{tmp_path}/log",
        store_url=f"leveldb://{tmp_path}/stores",
        web_port=0,
        web_token=TOKEN,
    )
    assert TOKEN not in repr(app.config)
    running = Running(app, transport)
    try:
        url = wait_for(lambda: running.worker.endpoint, 30, "the endpoint")
        wait_for(lambda: fetch(f"{url}/health", TOKEN)[0] == 200, 30, "ready")
        for path in ("/health", "/tables", "/tables/counts/keys/x", "/metrics"):
            status, body, headers = fetch(url + path)
            assert status == 401, path
            assert headers.get("WWW-Authenticate") == "Bearer"
            assert fetch(url + path, "wrong")[0] == 401
        for path in ("/health", "/tables", "/tables/counts/keys/x", "/tables/counts"):
            status, body, _ = fetch(url + path, TOKEN)
            assert status in (200, 404), path
            assert TOKEN not in json.dumps(body)
    finally:
        running.stop()
        transport.close()


@pytest.mark.kafka
def test_two_workers_answer_every_key_by_redirect_or_proxy(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic = f"web-words-{suffix}"

    class Words(Processor):
        topics = (topic,)
        counts = Table("counts", default=int)

        def process(self, message: Any, ctx: Any) -> None:
            self.counts[message.value] += 1

    broker = f"kafka://{kafka_bootstrap}?session_timeout_ms=6000&heartbeat_interval_ms=500"
    transport = open_transport(f"kafka://{kafka_bootstrap}")
    admin = transport.admin()
    admin.ensure_topic(TopicSpec(topic, PARTITIONS))
    admin.close()
    workers = []
    try:
        for name in ("a", "b"):
            app = App(
                f"web-{suffix}",
                [Words],
                broker_url=broker,
                store_url=f"leveldb://{tmp_path}/{name}",
                data_dir=str(tmp_path / name),
                commit_interval=0.1,
                web_port=0,
                web_token=TOKEN,
                num_standby_replicas=1,
            )
            workers.append(Running(app, transport))
        urls = [wait_for(lambda w=w: w.worker.endpoint, 60, "an endpoint") for w in workers]
        words = [f"w{i}" for i in range(40)]
        produce(transport, topic, words)

        def settled() -> bool:
            # Both members hold partitions and know each other's endpoint, and
            # every word has been counted by its owner (partitions process at
            # their own pace, so one counted word says nothing of the others).
            for w in workers:
                ready, details = w.worker.health()
                if not ready or not details["partitions"]:
                    return False
            return all(
                fetch(f"{u}/tables/counts/keys/{word}", TOKEN)[0] == 200
                for u in urls
                for word in words
            )

        wait_for(settled, 90, "two members, each with partitions, every word counted")
        redirected = 0
        for url in urls:
            for word in words:
                status, body, headers = fetch(
                    f"{url}/tables/counts/keys/{word}", TOKEN, redirect=False
                )
                if status == 307:
                    redirected += 1
                    assert headers["Location"].split("/tables/")[0] in urls
                    assert headers["Location"].split("/tables/")[0] != url
                else:
                    assert (status, body["value"]) == (200, 1), word
                status, body, _ = fetch(f"{url}/tables/counts/keys/{word}", TOKEN)  # follows
                assert (status, body["value"]) == (200, 1), word
                status, body, _ = fetch(
                    f"{url}/tables/counts/keys/{word}?proxy=1", TOKEN, redirect=False
                )
                assert (status, body["value"]) == (200, 1), word
                assert fetch(f"{url}/tables/counts/keys/{word}?proxy=1")[0] == 401
        assert redirected >= len(words) // 2, "about half the keys live on the other worker"
        # Standby copies: each worker keeps one of the other's partitions.
        first = workers[0].worker
        assert first.queries is not None
        elsewhere = [
            w for w in words if fetch(f"{urls[0]}/tables/counts/keys/{w}", TOKEN, False)[0] == 307
        ]

        def standby_answers() -> bool:
            try:
                answers = [first.app.query("counts", w, standby=True) for w in elsewhere]
            except QueryError:
                return False
            return all(a.copy == "standby" and a.value == 1 for a in answers)

        wait_for(standby_answers, 90, "the standby copies caught up")
        answer = first.app.query("counts", elsewhere[0], standby=True)
        assert answer.lag is None or answer.lag >= 0
        status, body, _ = fetch(f"{urls[0]}/tables/counts/keys/{elsewhere[0]}?standby=1", TOKEN)
        assert (status, body["copy"], body["value"]) == (200, "standby", 1)
    finally:
        for w in workers:
            w.stop()
        transport.close()


def test_metrics_are_served_in_the_prometheus_format(
    embedded: tuple[Running, Transport, str],
) -> None:
    _, transport, url = embedded
    produce(transport, "words", ["apple", "banana"])
    wait_for(lambda: fetch(f"{url}/tables/counts/keys/banana")[0] == 200, 30, "banana committed")
    status, body, headers = fetch(f"{url}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    processed = [
        line
        for line in body.splitlines()
        if line.startswith("statestream_records_processed") and not line.startswith("#")
    ]
    assert processed, body[:500]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in processed) >= 2


def test_health_turns_ready_only_after_every_partition_is_restored(tmp_path: Path) -> None:
    log_url = f"embedded://{tmp_path}/log"
    transport = words_log(tmp_path)
    first = App(
        "web-r", [Counter], broker_url=log_url, store_url=f"leveldb://{tmp_path}/a", web_port=0
    )
    running = Running(first, transport)
    try:
        url = wait_for(lambda: running.worker.endpoint, 30, "the endpoint")
        produce(transport, "words", [f"w{i}" for i in range(200)])
        wait_for(lambda: fetch(f"{url}/tables/counts/keys/w199")[0] == 200, 30, "w199 committed")
    finally:
        running.stop()

    class Probe:
        """Asks /health while a partition restores (a fresh store: from the changelog)."""

        def __init__(self) -> None:
            self.worker: Worker | None = None
            self.during: list[int] = []

        def on_restore_start(self, event: Any) -> None:
            assert self.worker is not None
            assert self.worker.endpoint is not None
            self.during.append(fetch(f"{self.worker.endpoint}/health")[0])

    probe = Probe()
    second = App(
        "web-r",
        [Counter],
        broker_url=log_url,
        store_url=f"leveldb://{tmp_path}/b",
        web_port=0,
        listeners=[probe],
    )
    running = Running(second, transport)
    probe.worker = running.worker
    try:
        url = wait_for(lambda: running.worker.endpoint, 30, "the endpoint")
        wait_for(lambda: fetch(f"{url}/health")[0] == 200, 30, "ready after the restores")
        assert probe.during, "no partition restored"
        assert set(probe.during) == {503}, "ready while a partition restored"
        status, body, _ = fetch(f"{url}/tables/counts/keys/w199")
        assert (status, body["value"]) == (200, 1)
    finally:
        running.stop()
        transport.close()
