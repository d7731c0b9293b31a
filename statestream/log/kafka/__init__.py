"""The Kafka transport, on kafka-python: the only statestream module that imports ``kafka``.

Opened by URL through :func:`statestream.log.open_transport`::

    kafka://broker1:9092,broker2:9092?client_id=orders&linger_ms=10

Options are the fields of :class:`~statestream.log.kafka_options.KafkaOptions`.
Every kafka-python error is wrapped in a typed statestream error
(``raise ... from exc``), so callers never see ``kafka.errors``.

Choices worth knowing:

* Keyed records are routed by :func:`statestream.log.partitioner.default_partition`
  and sent with an explicit partition, so routing is statestream's and identical
  on both transports. Records without key and partition are left to
  kafka-python's sticky partitioner (it fills one batch at a time); their
  partition is known as soon as ``send`` returns.
* producer errors are sticky: the first failed delivery is re-raised as
  :class:`~statestream.errors.ProduceError` by every later ``send``,
  ``send_batch`` and ``flush`` on every thread until the producer is closed
  (see :class:`KafkaRecordProducer`).
* kafka-python runs rebalance listeners on its own I/O thread, where the
  consumer's blocking calls are forbidden. :class:`KafkaGroupMember` therefore
  runs the consumer's ``poll`` and ``close`` on a helper thread while the
  calling (poll) thread waits, and serves the listener's callbacks on the
  calling thread: callbacks run on the poll thread, inside ``poll``, and may
  commit, seek and look up committed offsets, as the protocol promises.
  While the member (re)joins its group, ``poll`` waits for the join to finish
  (see :meth:`KafkaGroupMember.poll`).
"""

from statestream.log.kafka.admin import KafkaTopicAdmin
from statestream.log.kafka.consumer import KafkaFetcher
from statestream.log.kafka.group import KafkaGroupMember
from statestream.log.kafka.producer import KafkaRecordProducer
from statestream.log.kafka.transport import KafkaTransport, open_kafka

__all__ = [
    "KafkaFetcher",
    "KafkaGroupMember",
    "KafkaRecordProducer",
    "KafkaTopicAdmin",
    "KafkaTransport",
    "open_kafka",
]
