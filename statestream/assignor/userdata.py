"""What members tell the group leader, and what the leader tells them back.

Both are small versioned JSON documents (never pickle: every member of the
group reads them):

* subscription: ``{"v": 1, "active": [0, 2], "offsets": {"<changelog>": {"0": 123}}}``,
  the tasks the member had active and the offset of every local store copy;
* assignment: ``{"v": 1, "standby": [1, 3], "warmup": [3], "probe": true}``,
  the member's standby tasks, which of them are warm-ups, and whether this
  member asks for the probing rebalance.

Data a member cannot read (another version, another program in the group)
counts as a member with no local state: it is logged, never fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from statestream.types import TopicPartition

__all__ = ["AssignmentInfo", "SubscriptionInfo", "decode_assignment", "decode_subscription"]

log = logging.getLogger("statestream.assignor")

_VERSION = 1


@dataclass(frozen=True)
class SubscriptionInfo:
    """One member's report at a rebalance."""

    active: frozenset[int] = frozenset()
    offsets: Mapping[TopicPartition, int] = field(default_factory=dict)
    #: The member's HTTP endpoint (``http://host:port``), if it runs one.
    endpoint: str | None = None

    def encode(self) -> bytes:
        """Return the JSON bytes of this report."""
        by_topic: dict[str, dict[str, int]] = {}
        for tp, offset in sorted(self.offsets.items()):
            by_topic.setdefault(tp.topic, {})[str(tp.partition)] = offset
        document: dict[str, object] = {
            "v": _VERSION,
            "active": sorted(self.active),
            "offsets": by_topic,
        }
        if self.endpoint is not None:
            document["endpoint"] = self.endpoint
        return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class AssignmentInfo:
    """One member's assignment beyond its active partitions."""

    active: frozenset[int] = frozenset()
    standby: frozenset[int] = frozenset()
    warmup: frozenset[int] = frozenset()
    probe: bool = False
    generation: int = -1
    #: Every task's active owner's HTTP endpoint, for the members that run one
    #: (queries for keys held elsewhere are redirected there).
    owners: Mapping[int, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Return the JSON bytes of the parts the group carries (not active, generation)."""
        document: dict[str, object] = {
            "v": _VERSION,
            "standby": sorted(self.standby),
            "warmup": sorted(self.warmup),
            "probe": self.probe,
        }
        if self.owners:
            document["owners"] = {str(task): url for task, url in sorted(self.owners.items())}
        return json.dumps(document, separators=(",", ":")).encode()


def _ints(value: object) -> frozenset[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ValueError(f"expected a list of partition numbers, got {value!r}")
    return frozenset(value)


def _owners(value: object) -> dict[int, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k.isdigit() and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"owners must map partition numbers to URLs, got {value!r:.100}")
    return {int(k): v for k, v in value.items()}


def _document(raw: bytes, what: str) -> dict[str, object] | None:
    if not raw:
        return None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable %s data (%s)", what, exc)
        return None
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        log.warning("ignoring %s data of another version: %.100r", what, raw)
        return None
    return document


def decode_subscription(raw: bytes) -> SubscriptionInfo:
    """Read a member's report; unreadable data reads as no state (and is logged)."""
    document = _document(raw, "subscription")
    if document is None:
        return SubscriptionInfo()
    try:
        offsets: dict[TopicPartition, int] = {}
        by_topic = document.get("offsets", {})
        if not isinstance(by_topic, dict):
            raise ValueError(f"offsets must be an object, got {by_topic!r}")
        for topic, partitions in by_topic.items():
            if not isinstance(partitions, dict):
                raise ValueError(f"offsets of {topic!r} must be an object")
            for partition, offset in partitions.items():
                if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                    raise ValueError(f"offset of {topic}[{partition}] must be >= 0")
                offsets[TopicPartition(str(topic), int(partition))] = offset
        endpoint = document.get("endpoint")
        return SubscriptionInfo(
            _ints(document.get("active", [])),
            offsets,
            endpoint if isinstance(endpoint, str) else None,
        )
    except ValueError as exc:
        log.warning("ignoring malformed subscription data: %s", exc)
        return SubscriptionInfo()


def decode_assignment(raw: bytes, active: Iterable[int], generation: int) -> AssignmentInfo:
    """Read this member's assignment data; unreadable data reads as no standbys."""
    document = _document(raw, "assignment")
    actives = frozenset(active)
    if document is None:
        return AssignmentInfo(actives, generation=generation)
    try:
        standby = _ints(document.get("standby", []))
        warmup = _ints(document.get("warmup", [])) & standby
        return AssignmentInfo(
            actives,
            standby,
            warmup,
            bool(document.get("probe", False)),
            generation,
            _owners(document.get("owners", {})),
        )
    except ValueError as exc:
        log.warning("ignoring malformed assignment data: %s", exc)
        return AssignmentInfo(actives, generation=generation)
