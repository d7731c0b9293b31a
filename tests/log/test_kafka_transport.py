"""Kafka-specific behaviour of the Kafka transport, against the real broker.

The transport contract suite covers what both transports share; these tests
pin down what only Kafka has: URL options reaching kafka-python, a fast and
clear error for an unreachable cluster, group rebalances between two
members, transactions with read-committed fetchers, and group offsets
committed inside a transaction.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from statestream.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    OffsetOutOfRangeError,
    ProduceError,
    TopicExistsError,
    TopicNotFoundError,
    TransactionError,
)
from statestream.log import open_transport
from statestream.log.base import TopicSpec
from statestream.log.kafka import KafkaTransport
from statestream.log.kafka.producer import KafkaRecordProducer
from statestream.log.kafka_options import KafkaOptions
from statestream.types import Record, TopicPartition
from tests.log.helpers import read_partition

pytestmark = pytest.mark.kafka

# Short heartbeats so that members notice rebalances within a second; 6 s
# is the broker's smallest allowed session timeout.
FAST_GROUPS = "heartbeat_interval_ms=300&session_timeout_ms=6000"


@pytest.fixture
def transport(kafka_bootstrap: str) -> Iterator[KafkaTransport]:
    opened = open_transport(f"kafka://{kafka_bootstrap}?client_id=test-kafka&{FAST_GROUPS}")
    assert isinstance(opened, KafkaTransport)
    try:
        yield opened
    finally:
        opened.close()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _read_all(fetcher_poll: Callable[[], list[Record]], until: Callable[[], bool]) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + 30
    while not until():
        records.extend(fetcher_poll())
        assert time.monotonic() < deadline, f"stuck after {len(records)} records"
    return records


# ------------------------------------------------------------------ options


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="lingr_ms") as info:
        open_transport("kafka://127.0.0.1:9092?lingr_ms=5")
    assert "linger_ms" in str(info.value)
    assert "security_protocol" in str(info.value)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("security_protocol=TLS", "security_protocol"),
        ("security_protocol=SASL_SSL", "needs sasl_mechanism"),
        ("sasl_mechanism=PLAIN&security_protocol=SASL_PLAINTEXT", "sasl_plain_username"),
        ("acks=1", "acks=1 is refused"),
        ("acks=0&enable_idempotence=false", "acks=0 is refused"),
        ("enable_idempotence=false", "max_in_flight_requests_per_connection=1"),
        ("linger_ms=soon", "linger_ms"),
        ("batch_size=0", "batch_size"),
        ("api_version=latest", "api_version"),
        ("heartbeat_interval_ms=9000&session_timeout_ms=6000", "heartbeat_interval_ms"),
    ],
)
def test_bad_option_values_are_configuration_errors(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_transport(f"kafka://127.0.0.1:9092?{query}")


def test_url_shape_errors() -> None:
    with pytest.raises(ConfigurationError, match="at least one host"):
        open_transport("kafka://")
    with pytest.raises(ConfigurationError, match="no path"):
        open_transport("kafka://127.0.0.1:9092/topic")
    with pytest.raises(ConfigurationError, match="invalid port"):
        open_transport("kafka://127.0.0.1:nine")


def test_options_parse_sizes_and_hide_secrets() -> None:
    from statestream.config import options_from_strings

    options = options_from_strings(
        KafkaOptions,
        {
            "batch_size": "128k",
            "max_request_size": "2m",
            "security_protocol": "sasl_ssl",
            "sasl_mechanism": "scram-sha-512",
            "sasl_plain_username": "app",
            "sasl_plain_password": "s3cret",
            "ssl_cafile": "/etc/ca.pem",
        },
        "test",
    )
    assert options.batch_size == 128 * 1024
    assert options.max_request_size == 2 * 1024 * 1024
    assert options.security_protocol == "SASL_SSL"
    assert options.sasl_mechanism == "SCRAM-SHA-512"
    assert "s3cret" not in repr(options)
    config = options.producer_config()
    assert config["sasl_plain_password"] == "s3cret"
    assert config["ssl_cafile"] == "/etc/ca.pem"
    assert config["batch_size"] == 128 * 1024


def test_options_reach_the_kafka_python_clients(kafka_bootstrap: str) -> None:
    url = (
        f"kafka://{kafka_bootstrap}?client_id=passthrough&linger_ms=7&batch_size=32k"
        "&fetch_max_wait_ms=150&request_timeout_ms=20000&compression_type=gzip"
    )
    transport = open_transport(url)
    try:
        assert isinstance(transport, KafkaTransport)
        assert transport.url == url
        producer = transport.producer()
        kp_config = producer._kp.config  # type: ignore[attr-defined]
        assert kp_config["client_id"] == "passthrough"
        assert kp_config["linger_ms"] == 7
        assert kp_config["batch_size"] == 32 * 1024
        assert kp_config["compression_type"] == "gzip"
        assert kp_config["request_timeout_ms"] == 20000
        fetcher = transport.fetcher(isolation_level="read_committed")
        consumer_config = fetcher._consumer.config  # type: ignore[attr-defined]
        assert consumer_config["fetch_max_wait_ms"] == 150
        assert consumer_config["isolation_level"] == "read_committed"
        assert consumer_config["enable_auto_commit"] is False
        assert consumer_config["group_id"] is None
        member = transport.group_member("g-passthrough", client_id="member-1")
        assert member._consumer.config["client_id"] == "member-1"  # type: ignore[attr-defined]
        assert member._consumer.config["group_id"] == "g-passthrough"  # type: ignore[attr-defined]
    finally:
        transport.close()


def test_unreachable_broker_names_the_address_and_fails_fast() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        open_transport(f"kafka://127.0.0.1:{port}?bootstrap_timeout_ms=2000")
    assert time.monotonic() - started < 5


# -------------------------------------------------------------------- admin


def test_admin_errors_are_typed(transport: KafkaTransport, unique_topic: str) -> None:
    admin = transport.admin()
    spec = TopicSpec(unique_topic, 2, cleanup_policy="compact", config={"segment.ms": "60000"})
    admin.create_topic(spec)
    with pytest.raises(TopicExistsError, match=unique_topic):
        admin.create_topic(spec)
    described = admin.describe_topic(unique_topic)
    assert described is not None
    assert described.partitions == 2
    assert described.cleanup_policy == "compact"
    assert described.config["segment.ms"] == "60000"
    assert unique_topic in admin.list_topics()
    assert not any(name.startswith("__") for name in admin.list_topics())
    with pytest.raises(ConfigurationError, match="refused"):
        admin.create_topic(TopicSpec(unique_topic + "-bad", 1, config={"segment.ms": "-5"}))
    admin.delete_topic(unique_topic)
    assert admin.describe_topic(unique_topic) is None
    admin.delete_topic(unique_topic)  # no error when missing

    producer = transport.producer()
    with pytest.raises(TopicNotFoundError, match=unique_topic):
        producer.send(unique_topic, b"k", b"v")
    with pytest.raises(TopicNotFoundError):
        producer.partitions_for(unique_topic)
    with pytest.raises(TransactionError, match="transactional id"):
        producer.begin_transaction()


# ----------------------------------------------------------------- producer


def test_keyed_sends_use_the_default_partitioner(
    transport: KafkaTransport, unique_topic: str
) -> None:
    from statestream.log.partitioner import default_partition

    transport.admin().create_topic(TopicSpec(unique_topic, 5))
    producer = transport.producer()
    assert producer.partitions_for(unique_topic) == 5
    deliveries = {i: producer.send(unique_topic, b"key-%d" % i, b"v") for i in range(50)}
    keyless = producer.send(unique_topic, None, b"no key")
    producer.flush()
    for i, delivery in deliveries.items():
        assert delivery.partition == default_partition(b"key-%d" % i, 5)
        assert delivery.done
        assert delivery.offset >= 0
    assert 0 <= keyless.partition < 5
    assert keyless.offset >= 0


def test_a_failed_record_fails_every_later_flush_in_every_thread(
    transport: KafkaTransport, unique_topic: str
) -> None:
    # Compacted topics reject records without key: a failure the broker reports.
    transport.admin().create_topic(TopicSpec(unique_topic, 1, cleanup_policy="compact"))
    producer = transport.producer()
    producer.send(unique_topic, b"key", b"fine")
    other_thread_errors: list[BaseException] = []
    ready, sent_bad = threading.Event(), threading.Event()

    def other_thread() -> None:
        producer.send(unique_topic, b"key", b"also fine")  # this thread has sent
        ready.set()
        sent_bad.wait(10)
        for _ in range(2):
            try:
                producer.flush()
            except ProduceError as exc:
                other_thread_errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    ready.wait(10)
    bad = producer.send(unique_topic, None, b"no key")
    with pytest.raises(ProduceError, match="not written"):
        producer.flush()
    sent_bad.set()
    thread.join(10)
    with pytest.raises(ProduceError, match="not written"):
        producer.flush()  # sticky: every later flush raises, in every thread
    assert len(other_thread_errors) == 2
    with pytest.raises(ProduceError):
        _ = bad.offset
    with pytest.raises(ProduceError, match="not written"):
        producer.close()


PATHS = ["record-writer", "accumulator", "record-by-record"]


def _batch_producer(transport: KafkaTransport, path: str) -> KafkaRecordProducer:
    """A producer whose send_batch takes ``path`` (the first is the default)."""
    producer = transport.producer()
    assert isinstance(producer, KafkaRecordProducer)
    # The fast paths must be in use with the kafka-python this suite runs on:
    # if an upgrade changes the internals they rely on, this fails loudly
    # (the producer would silently fall back to slower paths).
    appender = producer._append_batch
    assert appender is not None
    assert appender.writer is not None
    if path == "accumulator":
        appender.writer = None
    elif path == "record-by-record":
        producer._append_batch = None
    return producer


@pytest.mark.parametrize("path", PATHS)
def test_send_batch_failures_fail_flush_and_the_delivery(
    transport: KafkaTransport, unique_topic: str, path: str
) -> None:
    # Compacted topics reject records without key: the whole batch fails.
    transport.admin().create_topic(TopicSpec(unique_topic, 1, cleanup_policy="compact"))
    producer = _batch_producer(transport, path)
    try:
        good = producer.send_batch(unique_topic, 0, [(b"a", b"1", ()), (b"b", b"2", ())])
        producer.flush()
        assert good is not None
        assert good.offset == 1
        bad = producer.send_batch(unique_topic, 0, [(b"c", b"3", ()), (None, b"no key", ())])
        with pytest.raises(ProduceError, match="not written"):
            producer.flush()
        assert bad is not None
        with pytest.raises(ProduceError):
            _ = bad.offset
    finally:
        with contextlib.suppress(ProduceError):
            producer.close()


@pytest.mark.parametrize("path", PATHS)
def test_batches_split_for_the_topic_size_limit_are_exact_or_fail_loudly(
    transport: KafkaTransport, unique_topic: str, path: str
) -> None:
    # The topic takes at most 2 KiB per batch; the producer fills 64 KiB
    # batches, so the broker refuses them and kafka-python splits them in
    # halves until they fit, moving each record's future to its new batch.
    # kafka-python 3.0.12's flush then fails ("Future not done") on every
    # path, plain send() included; whatever it does, a flush that succeeds
    # must report exact offsets, and one that fails must say so.
    transport.admin().create_topic(TopicSpec(unique_topic, 1, config={"max.message.bytes": "2048"}))
    producer = _batch_producer(transport, path)
    records = [(b"key-%04d" % i, b"v" * 40, (("n", b"%d" % i),)) for i in range(600)]
    try:
        first = producer.send_batch(unique_topic, 0, records[:300])
        second = producer.send_batch(unique_topic, 0, records[300:])
        assert first is not None
        assert second is not None
        try:
            producer.flush(timeout=30)
        except ProduceError:
            with pytest.raises(ProduceError):
                _ = (first.offset, second.offset)
            return
        assert (first.offset, second.offset) == (299, 599)
    finally:
        with contextlib.suppress(ProduceError):
            producer.close()
    got = read_partition(transport, TopicPartition(unique_topic, 0))
    assert [(r.key, r.value, r.headers) for r in got] == [(k, v, h) for k, v, h in records]


@pytest.mark.parametrize("path", PATHS)
def test_send_batch_in_transactions(
    transport: KafkaTransport, unique_topic: str, path: str
) -> None:
    transport.admin().create_topic(TopicSpec(unique_topic, 1))
    tp = TopicPartition(unique_topic, 0)
    producer = transport.producer(transactional_id=f"tx-{unique_topic}")
    assert isinstance(producer, KafkaRecordProducer)
    if path == "accumulator":
        assert producer._append_batch is not None
        producer._append_batch.writer = None
    elif path == "record-by-record":
        producer._append_batch = None
    kept = [(b"k%03d" % i, b"kept", (("n", b"%d" % i),)) for i in range(300)]
    try:
        producer.begin_transaction()
        producer.send_batch(unique_topic, 0, [(b"a%03d" % i, b"aborted", ()) for i in range(300)])
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        last = producer.send_batch(unique_topic, 0, kept)
        producer.commit_transaction()
    finally:
        producer.close()
    assert last is not None
    assert last.offset == 300 + 1 + 299  # aborted records, their marker, then ours
    committed = transport.fetcher(isolation_level="read_committed")
    committed.assign([tp])
    _wait_for(lambda: committed.watermarks(tp)[1] == 602, "the commit marker")
    records = _read_all(lambda: committed.poll(0.5), lambda: committed.position(tp) >= 602)
    assert [(r.key, r.value, r.headers) for r in records] == [(k, v, h) for k, v, h in kept]


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_send_batch_with_compression(
    kafka_bootstrap: str, unique_topic: str, compression: str
) -> None:
    # The record writer appends to the uncompressed buffer kafka-python
    # compresses when the batch is closed.
    transport = open_transport(f"kafka://{kafka_bootstrap}?compression_type={compression}")
    try:
        transport.admin().create_topic(TopicSpec(unique_topic, 1))
        producer = transport.producer()
        assert isinstance(producer, KafkaRecordProducer)
        assert producer._append_batch is not None
        assert producer._append_batch.writer is not None
        records = [(b"key-%05d" % i, b"value " * 20, (("n", b"%d" % i),)) for i in range(5000)]
        try:
            last = producer.send_batch(unique_topic, 0, records)
            producer.flush()
        finally:
            producer.close()
        assert last is not None
        assert last.offset == 4999
        got = read_partition(transport, TopicPartition(unique_topic, 0))
        assert [(r.key, r.value, r.headers) for r in got] == [(k, v, h) for k, v, h in records]
    finally:
        transport.close()


def test_send_batch_checks_record_size_like_send(
    transport: KafkaTransport, unique_topic: str
) -> None:
    transport.admin().create_topic(TopicSpec(unique_topic, 1))
    producer = transport.producer()
    huge = b"x" * (transport.options.max_request_size + 1)
    try:
        with pytest.raises(ProduceError, match=rf"{unique_topic}\[0\].*larger than"):
            producer.send_batch(unique_topic, 0, [(b"k", huge, ())])
        with pytest.raises(ProduceError, match="no key and no value"):
            producer.send_batch(unique_topic, 0, [(None, None, ())])
    finally:
        producer.close()


# ------------------------------------------------------------------ fetcher


def test_out_of_range_position_reports_the_valid_range(
    transport: KafkaTransport, unique_topic: str
) -> None:
    transport.admin().create_topic(TopicSpec(unique_topic, 1))
    producer = transport.producer()
    for i in range(3):
        producer.send(unique_topic, b"k", b"%d" % i, partition=0)
    producer.flush()
    tp = TopicPartition(unique_topic, 0)
    fetcher = transport.fetcher(reset="error")
    fetcher.assign([tp])
    assert fetcher.position(tp) == 0  # new partitions start at the low watermark
    fetcher.seek(tp, 10)
    with pytest.raises(OffsetOutOfRangeError, match=r"offset 10 .* 0 to 3"):
        _read_all(lambda: fetcher.poll(0.5), lambda: False)
    latest = transport.fetcher(reset="latest")
    latest.assign([tp])
    latest.seek(tp, 10)
    assert latest.poll(1.0) == []
    assert latest.position(tp) == 3


# ------------------------------------------------------------ group members


class MemberThread:
    """One group member on its own poll thread, as a worker runs it.

    The listener records callbacks and the thread they ran on, commits the
    revoked partitions (a blocking consumer call, allowed on the poll
    thread) and looks up committed offsets of assigned ones.
    """

    def __init__(self, transport: KafkaTransport, group: str, topic: str, name: str) -> None:
        self.member = transport.group_member(group, client_id=name)
        self.topic = topic
        self.events: list[tuple[str, list[TopicPartition]]] = []
        self.callback_threads: set[int] = set()
        self.assigned: set[TopicPartition] = set()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name)
        self.thread.start()

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        self.callback_threads.add(threading.get_ident())
        self.events.append(("revoked", list(partitions)))
        self.member.commit(dict.fromkeys(partitions, 0))

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self.callback_threads.add(threading.get_ident())
        self.events.append(("assigned", list(partitions)))
        for tp in partitions:
            self.member.committed(tp)

    def _run(self) -> None:
        try:
            self.member.subscribe([self.topic], self)
            while not self._stop.is_set():
                self.member.poll(0.1)
                self.assigned = self.member.assignment()
            self.member.close()  # leaves the group, revoking through the listener
            self.assigned = set()
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.errors == []
        assert self.callback_threads == {self.thread.ident}


def _assert_eager(events: list[tuple[str, list[TopicPartition]]]) -> None:
    """Callbacks alternate: assigned, then revoked (of what was assigned), then assigned..."""
    for index, (kind, partitions) in enumerate(events):
        assert kind == ("assigned" if index % 2 == 0 else "revoked"), events
        if kind == "revoked":
            assert partitions == events[index - 1][1], events


def test_rebalance_callbacks_fire_on_join_and_leave(
    transport: KafkaTransport, unique_topic: str
) -> None:
    transport.admin().create_topic(TopicSpec(unique_topic, 4))
    everything = [TopicPartition(unique_topic, p) for p in range(4)]
    group = f"g-{unique_topic}"

    first = MemberThread(transport, group, unique_topic, "first")
    try:
        _wait_for(
            lambda: first.events[-1:] == [("assigned", everything)], "the first member to join"
        )
        _assert_eager(first.events)
        first.events.clear()

        second = MemberThread(transport, group, unique_topic, "second")
        try:

            def split() -> bool:
                mine, theirs = sorted(first.assigned), sorted(second.assigned)
                return (
                    len(mine) == len(theirs) == 2
                    and first.events[-1:] == [("assigned", mine)]
                    and second.events[-1:] == [("assigned", theirs)]
                )

            _wait_for(split, "the partitions to be split between the two members")
            first_events, second_events = list(first.events), list(second.events)
            assert set(first_events[-1][1]) | set(second_events[-1][1]) == set(everything)
            # Eager rebalancing: the first member gave everything back first.
            # (The group may rebalance more than once before it settles.)
            assert first_events[0] == ("revoked", everything)
            _assert_eager(first_events[1:])
            _assert_eager(second_events)
            first.events.clear()
        finally:
            second.stop()
        _assert_eager(second.events)
        assert second.events[-1][0] == "revoked"  # on leaving the group

        _wait_for(
            lambda: first.events[-1:] == [("assigned", everything)],
            "the first member to get every partition back",
        )
    finally:
        first.stop()
    assert first.events[-1] == ("revoked", everything)
    # The commits made in the revoke callbacks reached the group.
    member = transport.group_member(group)
    assert [member.committed(tp) for tp in everything] == [0, 0, 0, 0]
    member.close()


def test_short_polls_always_finish_joining_a_new_topics_group(
    transport: KafkaTransport, unique_topic: str
) -> None:
    # The first join of a group on a topic the member has no metadata for
    # yet assigns nothing; the metadata then triggers a second join. With
    # kafka-python alone that join was sometimes lost and the member stayed
    # without partitions for good (about one start in fifteen).
    for attempt in range(20):
        topic = f"{unique_topic}-{attempt}"
        transport.admin().create_topic(TopicSpec(topic, 4))
        member = transport.group_member(f"g-{topic}")
        member.subscribe([topic])
        deadline = time.monotonic() + 20
        while len(member.assignment()) < 4:
            member.poll(0.05)
            assert time.monotonic() < deadline, f"start {attempt} never got its partitions"
        member.close()


def test_listener_errors_are_raised_from_poll(transport: KafkaTransport, unique_topic: str) -> None:
    transport.admin().create_topic(TopicSpec(unique_topic, 1))

    class Failing:
        def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
            pass

        def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
            if partitions:
                raise RuntimeError("restore failed")

    member = transport.group_member(f"g-{unique_topic}")
    member.subscribe([unique_topic], Failing())

    def poll_for_30s() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            member.poll(0.2)

    with pytest.raises(RuntimeError, match="restore failed"):
        poll_for_30s()
    member.close()


# -------------------------------------------------------------- transactions


def test_read_committed_fetchers_skip_aborted_records(
    transport: KafkaTransport, unique_topic: str
) -> None:
    transport.admin().create_topic(TopicSpec(unique_topic, 1))
    tp = TopicPartition(unique_topic, 0)
    producer = transport.producer(transactional_id=f"tx-{unique_topic}")

    producer.begin_transaction()
    committed_first = [
        producer.send(unique_topic, b"c%d" % i, b"kept", partition=0) for i in range(3)
    ]
    producer.commit_transaction()
    producer.begin_transaction()
    for i in range(3):
        producer.send(unique_topic, b"a%d" % i, b"aborted", partition=0)
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    committed_last = [
        producer.send(unique_topic, b"d%d" % i, b"kept", partition=0) for i in range(2)
    ]
    producer.commit_transaction()
    assert [d.offset for d in committed_first] == [0, 1, 2]  # marker at 3, aborted 4-6, marker 7
    assert [d.offset for d in committed_last] == [8, 9]

    committed = transport.fetcher(isolation_level="read_committed")
    committed.assign([tp])
    # The commit marker after offset 9 is the last entry of the log.
    _wait_for(lambda: committed.watermarks(tp) == (0, 11), "the last stable offset to pass 10")
    records = _read_all(lambda: committed.poll(0.5), lambda: committed.position(tp) >= 11)
    assert [(r.offset, r.key) for r in records] == [
        (0, b"c0"),
        (1, b"c1"),
        (2, b"c2"),
        (8, b"d0"),
        (9, b"d1"),
    ]
    # The position jumped past the marker: stop restores on position >= high.
    assert committed.position(tp) == 11 > records[-1].offset + 1

    everything = transport.fetcher(isolation_level="read_uncommitted")
    everything.assign([tp])
    seen = _read_all(lambda: everything.poll(0.5), lambda: everything.position(tp) >= 11)
    assert [r.value for r in seen].count(b"aborted") == 3


def test_offsets_sent_to_a_transaction_commit_with_it(
    transport: KafkaTransport, unique_topic: str
) -> None:
    transport.admin().create_topic(TopicSpec(unique_topic, 1))
    tp = TopicPartition(unique_topic, 0)
    member = transport.group_member(f"g-{unique_topic}")
    member.subscribe([unique_topic])
    _wait_for(lambda: not member.poll(0.2) and member.assignment() == {tp}, "the member to join")
    producer = transport.producer(transactional_id=f"tx-{unique_topic}")

    seen: list[int | None] = []

    def committed_is(offset: int) -> bool:
        # The coordinator writes the offsets' commit marker after
        # commit_transaction() returns; until then the old offset shows.
        seen.append(member.committed(tp))
        return seen[-1] == offset

    producer.begin_transaction()
    producer.send(unique_topic, b"k", b"committed output", partition=0)
    producer.send_offsets_to_transaction({tp: 5}, member.group_metadata())
    producer.commit_transaction()
    _wait_for(lambda: committed_is(5), "the transaction's offset to be committed")

    producer.begin_transaction()
    producer.send(unique_topic, b"k", b"aborted output", partition=0)
    producer.send_offsets_to_transaction({tp: 9}, member.group_metadata())
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send_offsets_to_transaction({tp: 7}, member.group_metadata())
    producer.commit_transaction()
    _wait_for(lambda: committed_is(7), "the next transaction's offset to be committed")
    assert 9 not in seen
    assert set(seen) <= {None, 5, 7}
    member.close()
