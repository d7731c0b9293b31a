"""``KafkaTopicAdmin``: topic administration on a Kafka cluster.

Part of the Kafka transport (see :mod:`statestream.log.kafka`), the only
statestream package that imports kafka-python.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import kafka.errors as kerrors
from kafka.admin import ConfigResource, ConfigResourceType

from statestream.errors import (
    ConfigurationError,
    TopicExistsError,
)
from statestream.log.base import (
    Admin,
    TopicDescription,
    TopicSpec,
    normalize_policy,
)
from statestream.log.kafka._common import (
    _INVALID_TOPIC_ERRORS,
    _UNKNOWN_TOPIC,
    _kafka_errors,
    _ktp,
    _tp,
    _translate,
)
from statestream.types import TopicPartition

if TYPE_CHECKING:  # at run time transport imports this module
    from statestream.log.kafka.transport import KafkaTransport

log = logging.getLogger("statestream.log.kafka")


class KafkaTopicAdmin(Admin):
    """Topic administration through the transport's admin client. Thread-safe.

    :meth:`describe_topic` reports the effective ``cleanup.policy`` and, in
    ``config``, the settings given explicitly for the topic (Kafka names, as
    strings), not the broker's defaults.
    """

    def __init__(self, transport: KafkaTransport) -> None:
        self._transport = transport
        self._client = transport._admin_client
        self._where = transport._where

    def describe_topic(self, name: str) -> TopicDescription | None:
        """Return the topic's description, or ``None`` if it does not exist."""
        what = f"describing topic {name!r}"
        with _kafka_errors(what, self._where):
            [info] = self._client.describe_topics([name])
            code = info["error_code"]
            if code == _UNKNOWN_TOPIC:
                return None
            if code:
                raise kerrors.for_code(code)()
            resource = ConfigResource(ConfigResourceType.TOPIC, name)
            described = self._client.describe_configs([resource], config_filter="all")
        entries = described.get("topic", {}).get(name) or {}
        if not entries:  # deleted between the two requests
            return None
        policy = entries.get("cleanup.policy", {}).get("value") or "delete"
        explicit = {
            key: entry["value"]
            for key, entry in entries.items()
            if entry.get("config_source") == "DYNAMIC_TOPIC_CONFIG" and entry["value"] is not None
        }
        explicit["cleanup.policy"] = normalize_policy(policy)
        return TopicDescription(
            name=name,
            partitions=len(info["partitions"]),
            cleanup_policy=normalize_policy(policy),
            config=explicit,
        )

    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic and wait (up to ``request_timeout_ms``) until it has leaders."""
        options = self._transport.options
        what = f"creating topic {spec.name!r}"
        definition = {
            "num_partitions": spec.partitions,
            "replication_factor": options.replication_factor,
            "configs": spec.topic_config(),
        }
        try:
            self._client.create_topics({spec.name: definition})
        except kerrors.TopicAlreadyExistsError as exc:
            raise TopicExistsError(
                f"topic {spec.name!r} already exists; use ensure_topic() to create it or "
                "check the existing one"
            ) from exc
        except _INVALID_TOPIC_ERRORS as exc:
            raise ConfigurationError(
                f"the cluster refused to create topic {spec.name!r} with {spec.partitions} "
                f"partitions, replication_factor={options.replication_factor} and config "
                f"{spec.topic_config()}: {exc}"
            ) from exc
        except kerrors.KafkaError as exc:
            raise _translate(exc, what, self._where) from exc
        try:
            self._client.wait_for_topics([spec.name], timeout_ms=options.request_timeout_ms)
        except kerrors.KafkaError:
            # Created; clients wait for its leaders themselves.
            log.debug("topic %s created but not ready yet", spec.name)

    def delete_topic(self, name: str) -> None:
        """Delete the topic and wait (up to ``request_timeout_ms``) until it is gone."""
        what = f"deleting topic {name!r}"
        try:
            self._client.delete_topics([name])
        except kerrors.UnknownTopicOrPartitionError:
            return
        except kerrors.KafkaError as exc:
            raise _translate(exc, what, self._where) from exc
        # Deletion completes asynchronously; until it has, the name cannot be
        # reused and clients still see the topic.
        deadline = time.monotonic() + self._transport.options.request_timeout_ms / 1000
        while time.monotonic() < deadline and self._transport.topic_exists(name):
            time.sleep(0.05)

    def committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """Return the group's committed offset of each partition (``None``: none)."""
        wanted = [TopicPartition(*tp) for tp in partitions]
        if not wanted:
            return {}
        what = f"fetching the committed offsets of group {group_id!r}"
        with _kafka_errors(what, self._where):
            found = self._client.list_group_offsets({group_id: [_ktp(tp) for tp in wanted]})
        offsets = {_tp(ktp): meta.offset for ktp, meta in found.get(group_id, {}).items()}
        return {
            tp: (offset if offset is not None and offset >= 0 else None)
            for tp in wanted
            for offset in (offsets.get(tp),)
        }

    def list_topics(self) -> set[str]:
        """Return the names of all topics except Kafka's internal ones."""
        with _kafka_errors("listing topics", self._where):
            infos = self._client.describe_topics()
        return {
            info["name"] for info in infos if not info.get("is_internal") and not info["error_code"]
        }


# -------------------------------------------------------------------- producer
