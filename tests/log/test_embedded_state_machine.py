"""The embedded log, driven by random operations, behaves like lists of records.

The model is one list of records per partition plus two watermarks, and the
cleanup rules written out plainly: compaction keeps the latest record per
key, a tombstone gets a horizon (``now + delete.retention.ms``) from the first
compaction that sees it and goes at the first compaction at or after it;
retention drops the prefix of records older than ``now - retention.ms`` and
moves the low watermark. Time is a counter the machine advances, handed to
``compact(now_ms=...)`` and ``enforce_retention(now_ms=...)``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statestream.errors import OffsetOutOfRangeError
from statestream.log.base import TopicSpec
from statestream.log.embedded import EmbeddedOptions, EmbeddedTransport
from statestream.log.embedded.producer import EmbeddedProducer
from statestream.types import Headers, Record, TopicPartition

T0 = 1_700_000_000_000
RETENTION_MS = 3_000
TOMBSTONE_MS = 1_000
GROUP = "g"
SPECS = {
    "plain": TopicSpec("plain", 2, "delete", retention_ms=RETENTION_MS),
    "table": TopicSpec("table", 2, "compact", config={"delete.retention.ms": str(TOMBSTONE_MS)}),
    "both": TopicSpec(
        "both", 1, "compact,delete", retention_ms=RETENTION_MS,
        config={"delete.retention.ms": str(TOMBSTONE_MS)},
    ),
}  # fmt: skip
OPTIONS = EmbeddedOptions(cleanup_interval_ms=0, auto_flush_ms=0)

topics = st.sampled_from(sorted(SPECS))
keys = st.sampled_from([b"", b"a", b"b", b"c", b"\x00", b"\xff" * 3])
values = st.one_of(st.none(), st.binary(max_size=6))
headers = st.lists(
    st.tuples(st.sampled_from(["h", "trace", "é"]), st.binary(max_size=3)), max_size=2
).map(tuple)
ages = st.integers(min_value=0, max_value=4_000)  # how far a record's timestamp lags "now"


@dataclass
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int
    horizon: int | None = None

    def as_tuple(self) -> tuple[object, ...]:
        return (self.offset, self.key, self.value, self.headers, self.timestamp)


@dataclass
class Part:
    records: list[Rec] = field(default_factory=list)
    low: int = 0
    high: int = 0


@dataclass
class Sent:
    tp: TopicPartition
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int
    delivery: object


def as_tuple(record: Record) -> tuple[object, ...]:
    return (record.offset, record.key, record.value, record.headers, record.timestamp)


class EmbeddedLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="embedded-machine-")
        self.now = T0
        self.model: dict[TopicPartition, Part] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.pending: list[Sent] = []
        self.transport = EmbeddedTransport(self.dir, OPTIONS)
        for spec in SPECS.values():
            self.transport.admin().create_topic(spec)
            for partition in range(spec.partitions):
                self.model[TopicPartition(spec.name, partition)] = Part()
        self.producer: EmbeddedProducer = self.transport.producer()

    def teardown(self) -> None:
        self.transport.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- producing --------------------------------------------------------------

    def _tp(self, topic: str, partition: int) -> TopicPartition:
        return TopicPartition(topic, partition % SPECS[topic].partitions)

    @rule(
        topic=topics, partition=st.integers(0, 1), key=st.one_of(st.none(), keys),
        value=values, headers=headers, age=ages,
    )  # fmt: skip
    def send(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None,
        headers: Headers, age: int,
    ) -> None:  # fmt: skip
        if key is None and topic != "plain":
            key = b"k"  # compacted topics refuse keyless records
        tp = self._tp(topic, partition)
        ts = self.now - age
        delivery = self.producer.send(
            topic, key, value, partition=tp.partition, headers=headers, timestamp=ts
        )
        self.pending.append(Sent(tp, key, value, headers, ts, delivery))

    def _model_flush(self) -> None:
        for sent in self.pending:
            part = self.model[sent.tp]
            part.records.append(Rec(part.high, sent.key, sent.value, sent.headers, sent.timestamp))
            assert sent.delivery.offset == part.high  # type: ignore[attr-defined]
            part.high += 1
        self.pending = []

    @rule()
    def flush(self) -> None:
        self.producer.flush()
        self._model_flush()

    @rule(
        items=st.lists(st.tuples(topics, st.integers(0, 1), keys, values), min_size=1, max_size=4),
        commit=st.booleans(),
        offset=st.integers(0, 50),
    )
    def transaction(
        self, items: list[tuple[str, int, bytes, bytes | None]], commit: bool, offset: int
    ) -> None:
        producer = self.transport.producer(transactional_id="tx")
        try:
            producer.begin_transaction()
            sent = []
            for topic, partition, key, value in items:
                tp = self._tp(topic, partition)
                delivery = producer.send(
                    topic, key, value, partition=tp.partition, timestamp=self.now
                )
                sent.append((tp, key, value, delivery))
            source = TopicPartition("plain", 0)
            producer.send_offsets_to_transaction({source: offset}, GROUP)
            if not commit:
                producer.abort_transaction()
                return
            producer.commit_transaction()
        finally:
            producer.close()
        self.committed[source] = offset
        touched = []
        for tp, key, value, delivery in sent:
            part = self.model[tp]
            part.records.append(Rec(part.high, key, value, (), self.now))
            assert delivery.offset == part.high
            part.high += 1
            if tp not in touched:
                touched.append(tp)
        for tp in touched:
            self.model[tp].high += 1  # the commit marker's offset

    # -- time and cleanup -----------------------------------------------------------

    @rule(ms=st.integers(0, 2_500))
    def advance_time(self, ms: int) -> None:
        self.now += ms

    @rule()
    def compact(self) -> None:
        expected = 0
        for tp, part in self.model.items():
            if "compact" not in SPECS[tp.topic].cleanup_policy:
                continue
            latest = {r.key: r.offset for r in part.records}
            kept = []
            for r in part.records:
                if latest[r.key] > r.offset:
                    continue
                if r.value is None:
                    if r.horizon is None:
                        r.horizon = self.now + TOMBSTONE_MS
                    if r.horizon <= self.now:
                        continue
                kept.append(r)
            expected += len(part.records) - len(kept)
            part.records = kept
        assert self.transport.compact(now_ms=self.now) == expected

    @rule()
    def enforce_retention(self) -> None:
        expected = 0
        cutoff = self.now - RETENTION_MS
        for tp, part in self.model.items():
            if "delete" not in SPECS[tp.topic].cleanup_policy:
                continue
            new_low = next((r.offset for r in part.records if r.timestamp >= cutoff), part.high)
            kept = [r for r in part.records if r.offset >= new_low]
            expected += len(part.records) - len(kept)
            part.records = kept
            part.low = max(part.low, new_low)
        assert self.transport.enforce_retention(now_ms=self.now) == expected

    # -- topics, groups, restarts -------------------------------------------------------

    @rule(topic=topics)
    def recreate_topic(self, topic: str) -> None:
        self.flush()
        admin = self.transport.admin()
        admin.delete_topic(topic)
        admin.create_topic(SPECS[topic])
        for tp in list(self.model):
            if tp.topic == topic:
                self.model[tp] = Part()
                self.committed.pop(tp, None)

    @rule(topic=topics, partition=st.integers(0, 1), offset=st.integers(0, 50))
    def commit(self, topic: str, partition: int, offset: int) -> None:
        tp = self._tp(topic, partition)
        member = self.transport.group_member(GROUP)
        try:
            member.commit({tp: offset})
        finally:
            member.close()
        self.committed[tp] = offset

    @rule()
    def reopen(self) -> None:
        self.producer.close()  # flushes what is pending
        self._model_flush()
        self.transport.close()
        self.transport = EmbeddedTransport(self.dir, OPTIONS)
        self.producer = self.transport.producer()

    # -- reading --------------------------------------------------------------------------

    @rule(
        topic=topics, partition=st.integers(0, 1), shift=st.integers(-2, 2),
        from_low=st.booleans(), max_records=st.integers(1, 4),
    )  # fmt: skip
    def fetch(
        self, topic: str, partition: int, shift: int, from_low: bool, max_records: int
    ) -> None:
        tp = self._tp(topic, partition)
        part = self.model[tp]
        start = max(0, (part.low if from_low else part.high) + shift)
        fetcher = self.transport.fetcher(isolation_level="read_committed")
        try:
            fetcher.assign([tp])
            fetcher.seek(tp, start)
            if not part.low <= start <= part.high:
                with pytest.raises(
                    OffsetOutOfRangeError, match=re.escape(f"position {start} of {tp}")
                ):
                    fetcher.poll()
                return
            got: list[Record] = []
            while fetcher.position(tp) < part.high:
                batch = fetcher.poll(max_records=max_records)
                assert len(batch) <= max_records
                got += batch
            assert fetcher.position(tp) == part.high
            assert [as_tuple(r) for r in got] == [
                r.as_tuple() for r in part.records if r.offset >= start
            ]
            assert all(r.topic == tp.topic and r.partition == tp.partition for r in got)
        finally:
            fetcher.close()

    @invariant()
    def watermarks_and_commits_match(self) -> None:
        fetcher = self.transport.fetcher()
        member = self.transport.group_member(GROUP)
        try:
            for tp, part in self.model.items():
                assert fetcher.watermarks(tp) == (part.low, part.high), tp
                assert member.committed(tp) == self.committed.get(tp)
        finally:
            fetcher.close()
            member.close()


EmbeddedLogMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    report_multiple_bugs=False,
)
TestEmbeddedLog = EmbeddedLogMachine.TestCase
