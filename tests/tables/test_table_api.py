"""The ``Table`` API through a bound shard: dict semantics, defaults, queries, commits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statestream.errors import EncodeError, TableContextError, TopicMismatchError
from statestream.log import Transport
from statestream.log.base import TopicSpec
from statestream.tables import PartitionState, Table, TableManager
from statestream.tables.headers import epoch_of, source_of
from statestream.types import TopicPartition
from tests.tables.helpers import SOURCE, Node, read_all


class Harness:
    """A node plus a committed source offset, with helpers to process and commit."""

    def __init__(self, transport: Transport, tmp_path: Path, default: Any = None) -> None:
        self.node = Node(
            transport, tmp_path / "stores", lambda: [Table("t", default=default)], app_id="app"
        )
        self.committed: int | None = None
        self.offset = 0
        self.node.start({SOURCE: None})

    @property
    def table(self) -> Table[Any, Any]:
        return self.node.table("t")

    @property
    def manager(self) -> TableManager:
        assert self.node.manager is not None
        return self.node.manager

    def record(self) -> int:
        """Begin the next source record; return its offset."""
        offset = self.offset
        self.manager.begin_record(0, SOURCE, offset)
        self.offset += 1
        return offset

    def commit(self) -> None:
        def commit_source() -> None:
            self.committed = self.offset

        self.manager.commit(0, commit_source)

    def restart(self, wipe: bool = False) -> None:
        self.node.crash(wipe=wipe)
        self.node.start({SOURCE: self.committed})
        self.offset = self.committed or 0

    def changelog(self) -> list[Any]:
        """The changelog's data records (fence markers left out)."""
        records = read_all(self.node.transport, TopicPartition("app-t-changelog", 0))
        return [r for r in records if not epoch_of(r)[1]]


@pytest.fixture
def h(embedded: Transport, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(embedded, tmp_path)
    yield harness
    harness.node.crash()


@pytest.fixture
def hd(embedded: Transport, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(embedded, tmp_path, default=list)
    yield harness
    harness.node.crash()


# -- dict semantics --------------------------------------------------------------------


def test_dict_semantics(h: Harness) -> None:
    t = h.table
    h.record()
    with pytest.raises(KeyError):
        t["missing"]
    with pytest.raises(KeyError):
        del t["missing"]
    t["a"] = 1
    t["b"] = {"nested": [1, 2]}
    assert t["a"] == 1
    assert t.get("b") == {"nested": [1, 2]}
    assert t.get("zz") is None
    assert t.get("zz", 5) == 5
    assert "a" in t
    assert "zz" not in t
    assert len(t) == 2
    del t["a"]
    assert "a" not in t
    assert len(t) == 1
    t.update({"c": 3, "d": 4})
    assert t.pop("c") == 3
    assert t.setdefault("e", 9) == 9
    assert sorted(t) == ["b", "d", "e"]
    assert dict(t.items()) == {"b": {"nested": [1, 2]}, "d": 4, "e": 9}
    assert list(t.values()) == [{"nested": [1, 2]}, 4, 9]
    h.commit()
    h.restart(wipe=True)
    assert dict(h.table.items()) == {"b": {"nested": [1, 2]}, "d": 4, "e": 9}


def test_overwrite_and_delete_within_one_interval_writes_last_state(h: Harness) -> None:
    h.record()
    h.table["a"] = 1
    h.record()
    h.table["a"] = 2
    h.table["b"] = 1
    h.record()
    del h.table["b"]
    h.commit()
    records = h.changelog()
    # "b" never reached the store: a tombstone for it is allowed, a value is not.
    assert [(r.key, r.value) for r in records if r.value is not None] == [(b'"a"', b"2")]
    h.restart(wipe=True)
    assert dict(h.table.items()) == {"a": 2}


# -- default factory -------------------------------------------------------------------


def test_default_getitem_stores_the_default_and_commits_it(hd: Harness) -> None:
    hd.record()
    assert hd.table["k"] == []
    assert "k" in hd.table
    assert len(hd.table) == 1
    hd.commit()
    assert [r.key for r in hd.changelog()] == [b'"k"']
    hd.restart(wipe=True)
    assert dict(hd.table.items()) == {"k": []}


def test_default_get_and_contains_store_nothing(hd: Harness) -> None:
    hd.record()
    assert hd.table.get("k") is None
    assert "k" not in hd.table
    assert len(hd.table) == 0
    hd.commit()
    assert hd.changelog() == []
    hd.restart()
    assert dict(hd.table.items()) == {}


def test_default_increment(embedded: Transport, tmp_path: Path) -> None:
    harness = Harness(embedded, tmp_path, default=int)
    for key in ["a", "b", "a", "a"]:
        harness.record()
        harness.table[key] += 1
    harness.commit()
    harness.restart(wipe=True)
    assert dict(harness.table.items()) == {"a": 3, "b": 1}
    harness.node.crash()


# -- in-place mutation -----------------------------------------------------------------


def test_in_place_mutation_of_a_stored_list_is_committed(hd: Harness) -> None:
    hd.record()
    hd.table["k"] = [1]
    hd.commit()
    hd.restart()  # the list now comes from the store, not the buffer
    offset = hd.record()
    hd.table["k"].append(2)
    assert hd.table["k"] == [1, 2]  # same object on every read
    hd.commit()
    records = hd.changelog()
    assert records[-1].value == b"[1,2]" or records[-1].value.replace(b" ", b"") == b"[1,2]"
    assert source_of(records[-1]) == (SOURCE, offset)
    hd.restart(wipe=True)
    assert hd.table["k"] == [1, 2]
    hd.restart(wipe=False)
    assert hd.table["k"] == [1, 2]


def test_in_place_mutation_through_get_and_default(hd: Harness) -> None:
    hd.record()
    hd.table["a"].append("x")  # default list, mutated in place
    hd.commit()
    hd.record()
    value = hd.table.get("a")
    value.append("y")
    hd.commit()
    hd.restart(wipe=True)
    assert dict(hd.table.items()) == {"a": ["x", "y"]}


def test_unchanged_reads_write_nothing(hd: Harness) -> None:
    hd.record()
    hd.table["a"] = [1]
    hd.commit()
    before = len(hd.changelog())
    hd.record()
    assert hd.table["a"] == [1]
    assert list(hd.table.items()) == [("a", [1])]
    hd.commit()
    assert len(hd.changelog()) == before


# -- range and prefix ------------------------------------------------------------------


def test_range_and_prefix_merge_buffer_over_store(h: Harness) -> None:
    t = h.table
    h.record()
    for key in ["a1", "a2", "b1", "b2", "c1"]:
        t[key] = key.upper()
    h.commit()
    h.record()
    t["a3"] = "new"  # buffered put
    del t["b1"]  # buffered delete of a stored key
    t["a1"] = "changed"  # buffered overwrite
    t["b0"] = "B0"
    assert list(t.items()) == [
        ("a1", "changed"),
        ("a2", "A2"),
        ("a3", "new"),
        ("b0", "B0"),
        ("b2", "B2"),
        ("c1", "C1"),
    ]
    assert list(t.range("a2", "b2")) == [("a2", "A2"), ("a3", "new"), ("b0", "B0")]
    assert list(t.range("a2", "b2", reverse=True)) == [("b0", "B0"), ("a3", "new"), ("a2", "A2")]
    assert list(t.range(None, "a3")) == [("a1", "changed"), ("a2", "A2")]
    assert list(t.range("b1")) == [("b2", "B2"), ("c1", "C1")]
    assert list(t.prefix("a")) == [("a1", "changed"), ("a2", "A2"), ("a3", "new")]
    assert list(t.prefix("b", reverse=True)) == [("b2", "B2"), ("b0", "B0")]
    assert list(t.prefix("z")) == []
    assert list(t.keys()) == ["a1", "a2", "a3", "b0", "b2", "c1"]
    h.commit()
    h.restart(wipe=True)
    assert list(h.table.prefix("b")) == [("b0", "B0"), ("b2", "B2")]


def test_reverse_scan_includes_keys_both_buffered_and_stored(h: Harness) -> None:
    t = h.table
    h.record()
    for key in ["a", "b", "c"]:
        t[key] = 1
    h.commit()
    h.record()
    t["b"] = 2  # buffered overwrite of a stored key
    assert t["c"] == 1  # a plain read also puts "c" in the buffer
    forward = list(t.items())
    assert forward == [("a", 1), ("b", 2), ("c", 1)]
    assert list(t.range(reverse=True)) == forward[::-1]
    assert list(t.prefix("b", reverse=True)) == [("b", 2)]


def test_len_with_buffered_puts_and_deletes(h: Harness) -> None:
    t = h.table
    h.record()
    t["a"] = 1
    t["b"] = 2
    h.commit()
    h.record()
    assert len(t) == 2
    t["c"] = 3  # new key
    t["a"] = 10  # overwrite: no change in length
    assert len(t) == 3
    del t["b"]  # stored key deleted
    assert len(t) == 2
    del t["c"]  # buffered-only key deleted
    assert len(t) == 1
    t["b"] = 5  # re-added
    assert len(t) == 2
    h.commit()
    assert len(t) == 2


# -- errors ------------------------------------------------------------------------------


def test_table_outside_processing_raises_context_error(h: Harness) -> None:
    unbound = Table("other")
    with pytest.raises(TableContextError):
        unbound["x"] = 1
    with pytest.raises(TableContextError):
        len(unbound)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            h.table.get("x")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], TableContextError)
    h.manager.close_partition(0)
    with pytest.raises(TableContextError):
        h.table.get("x")


def test_unencodable_value_fails_at_assignment(h: Harness) -> None:
    h.record()
    with pytest.raises(EncodeError):
        h.table["k"] = object()
    with pytest.raises(EncodeError):
        h.table["k"] = {1, 2}
    assert "k" not in h.table
    h.commit()
    assert h.changelog() == []


# -- changelog records ---------------------------------------------------------------------


def test_changelog_records_carry_source_headers(h: Harness) -> None:
    h.record()
    h.table["a"] = 1
    second = h.record()
    h.table["b"] = 2
    third = h.record()
    h.table["a"] = 3
    del h.table["b"]
    h.commit()
    records = {r.key: r for r in h.changelog()}
    assert set(records) == {b'"a"', b'"b"'}
    assert records[b'"a"'].value == b"3"
    assert records[b'"b"'].value is None  # tombstone
    assert source_of(records[b'"a"']) == (SOURCE, third)
    assert source_of(records[b'"b"']) == (SOURCE, third)
    assert second == 1


def test_changelog_topic_with_wrong_partition_count_is_rejected(
    embedded: Transport, tmp_path: Path
) -> None:
    admin = embedded.admin()
    admin.create_topic(TopicSpec("app-t-changelog", 2, cleanup_policy="compact"))
    admin.close()
    manager = TableManager("app", [Table("t")], embedded, f"leveldb://{tmp_path}/s")
    with pytest.raises(TopicMismatchError):
        manager.ensure_changelogs(1)
    manager.ensure_changelogs(2)
    manager.close()


def test_changelog_topic_with_wrong_policy_is_rejected(embedded: Transport, tmp_path: Path) -> None:
    admin = embedded.admin()
    admin.create_topic(TopicSpec("app-t-changelog", 1, cleanup_policy="delete"))
    admin.close()
    manager = TableManager("app", [Table("t")], embedded, f"leveldb://{tmp_path}/s")
    with pytest.raises(TopicMismatchError):
        manager.ensure_changelogs(1)
    manager.close()


def test_created_changelog_is_compacted_with_the_partition_count(
    embedded: Transport, tmp_path: Path
) -> None:
    manager = TableManager("app", [Table("t"), Table("u")], embedded, f"leveldb://{tmp_path}/s")
    manager.ensure_changelogs(3)
    admin = embedded.admin()
    for name in ["app-t-changelog", "app-u-changelog"]:
        description = admin.describe_topic(name)
        assert description is not None
        assert description.partitions == 3
        assert description.cleanup_policy == "compact"
    admin.close()
    manager.close()


def test_partition_states_through_a_lifecycle(embedded: Transport, tmp_path: Path) -> None:
    table: Table[str, int] = Table("s", default=int)
    manager = TableManager("lifecycle", [table], embedded, f"leveldb://{tmp_path}")
    manager.ensure_changelogs(2)
    manager.open_partition(0)
    manager.open_partition(1)
    assert manager.states() == {
        ("s", 0): PartitionState.RESTORING,
        ("s", 1): PartitionState.RESTORING,
    }
    manager.restore_partition(0, {})
    assert manager.states()[("s", 0)] is PartitionState.READY
    assert manager.states()[("s", 1)] is PartitionState.RESTORING
    manager.close_partition(0)
    assert manager.states()[("s", 0)] is PartitionState.CLOSED
    assert manager.partitions() == [1]
    manager.close()
    assert manager.states() == {("s", 0): PartitionState.CLOSED, ("s", 1): PartitionState.CLOSED}


def test_a_view_is_fixed_to_its_shard_from_any_thread(h: Harness) -> None:
    shard = h.manager.shard("t", 0)
    view = h.table.view(shard)
    # Equal to its table (and hashed alike), so it can stand in for it.
    assert view == h.table
    assert h.table == view
    assert hash(view) == hash(h.table)
    assert {h.table: 1}[view] == 1
    h.record()
    seen: list[Any] = []

    def other_thread() -> None:
        # No binding on this thread: the plain table refuses, the view works.
        with pytest.raises(TableContextError):
            h.table["x"] = 0
        view["x"] = 1
        seen.append(view.get("x"))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    assert seen == [1]
    assert h.table["x"] == 1  # the same shard, through this thread's binding
    with pytest.raises(TableContextError, match="fixed to its partition"):
        view.bind(shard)
    h.commit()
    assert dict(view.items()) == {"x": 1}
