"""A damaged LevelDB store is never used: it is rebuilt from the changelog, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from statestream.log import Transport
from statestream.tables import Table
from tests.tables.helpers import SOURCE, Node

KEYS = 200


def tables() -> list[Table[Any, Any]]:
    return [Table("t")]


def fill(node: Node) -> dict[str, int]:
    manager = node.manager
    assert manager is not None
    table = node.table("t")
    for i in range(KEYS):
        manager.begin_record(0, SOURCE, i)
        table[f"k{i}"] = i
    manager.commit(0, lambda: None)
    return {f"k{i}": i for i in range(KEYS)}


def garble_manifest(store_dir: Path) -> None:
    (manifest,) = store_dir.glob("MANIFEST-*")
    data = bytearray(manifest.read_bytes())
    data[10:14] = bytes(b ^ 0xFF for b in data[10:14])
    manifest.write_bytes(bytes(data))


def delete_current(store_dir: Path) -> None:
    (store_dir / "CURRENT").unlink()


@pytest.mark.parametrize("damage", [garble_manifest, delete_current])
def test_a_store_damaged_at_open_is_rebuilt_from_the_changelog(
    embedded: Transport, tmp_path: Path, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(embedded, tmp_path / "stores", tables)
    node.start({SOURCE: None})
    expected = fill(node)
    node.crash()
    damage(tmp_path / "stores" / "t" / "0")
    with caplog.at_level(logging.WARNING, logger="statestream.tables"):
        node.start({SOURCE: KEYS})
    assert "damaged" in caplog.text
    assert "rebuilding it from the changelog" in caplog.text
    assert dict(node.table("t").items()) == expected
    node.crash()
