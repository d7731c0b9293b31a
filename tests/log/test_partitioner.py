"""The murmur2 partitioner matches Kafka's Java client and kafka-python."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from statestream.log.partitioner import default_partition, murmur2


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


# Vectors from the Java client's own unit tests of Utils.murmur2.
@pytest.mark.parametrize(
    ("key", "java_hash"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_matches_java_client(key: bytes, java_hash: int) -> None:
    assert _signed(murmur2(key)) == java_hash


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_matches_kafka_python(key: bytes, partitions: int) -> None:
    expected = (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions
    assert default_partition(key, partitions) == expected
