"""Checks of a LevelDB directory that LevelDB itself skips, run before it opens one.

LevelDB trusts ``CURRENT`` and the ``MANIFEST`` more than it should:

* with ``CURRENT`` gone it creates a new, empty database in the directory,
  replays whatever write-ahead logs it finds into it and deletes the table
  files, so the store opens with part of its data and an offset that claims
  the rest;
* a ``MANIFEST`` record whose length field is damaged, in the file's last
  32 KiB block (where a small ``MANIFEST`` lives whole), reads as a record a
  crash cut short: LevelDB opens the version before it, and forgets the table
  files added since.

:func:`damage` finds both, and any other break in the ``MANIFEST``'s framing
(checksums, fragments, a cut), from the file format alone
(``doc/log_format.md`` of LevelDB). LevelDB syncs every ``MANIFEST`` record
before the change it describes takes effect, so a crash leaves no partial
record there; the only exception, power lost within that sync, makes the
store be rebuilt, which is safe. The write-ahead log is left to LevelDB's
``paranoid_checks``: a log a crash cut short is normal there.

Pure file inspection: this module does not import plyvel.
"""

from __future__ import annotations

import os
import re
import struct

import crc32c

__all__ = ["damage", "log_damage", "log_files", "table_files"]

_BLOCK = 32768
_HEADER = struct.Struct("<IHB")  # masked crc32c, payload length, record type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# (inside a fragmented record?, record type) -> inside one after it; other pairs are damage.
_FRAGMENT_ORDER = {
    (False, _FULL): False,
    (False, _FIRST): True,
    (True, _MIDDLE): True,
    (True, _LAST): False,
}
_MASK_DELTA = 0xA282EAD8
_LOG = re.compile(r"\d+\.log")
_TABLE = re.compile(r"\d+\.(?:ldb|sst)")
_CURRENT = re.compile(rb"(MANIFEST-\d+)\n")
# CURRENT holds one file name; anything longer is not CURRENT.
_CURRENT_LIMIT = 256


def _unmask(masked: int) -> int:
    rotated = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def log_damage(data: bytes) -> str | None:
    """Describe the first break in the framing of a log-format file, or ``None``.

    Every record must be whole, within its block, with a matching checksum,
    and fragments must come in order; the file must end on a record boundary.
    """
    if not data:
        return "it is empty"
    view = memoryview(data)
    size = len(data)
    pos = 0
    fragmented = False
    while pos < size:
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER.size:
            # A block's last few bytes are zeros when no header fits there.
            if pos + left > size or any(view[pos : pos + left]):
                return f"its block trailer at byte {pos} is damaged"
            pos += left
            continue
        if size - pos < _HEADER.size:
            return f"it ends inside a record header at byte {pos}"
        masked, length, kind = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > pos + left:
            return f"the record at byte {pos} claims {length} bytes, past the end of its block"
        if end > size:
            return f"the record at byte {pos} is cut short"
        # The checksum covers the type byte and the payload.
        if crc32c.crc32c(view[pos + _HEADER.size - 1 : end]) != _unmask(masked):
            return f"checksum mismatch in the record at byte {pos}"
        after = _FRAGMENT_ORDER.get((fragmented, kind))
        if after is None:
            return f"the record at byte {pos} (type {kind}) breaks the order of fragments"
        fragmented = after
        pos = end
    if fragmented:
        return "it ends inside a fragmented record"
    return None


def log_files(names: list[str]) -> list[str]:
    """The write-ahead logs among a directory listing, oldest first."""
    return sorted((n for n in names if _LOG.fullmatch(n)), key=lambda n: int(n.split(".")[0]))


def table_files(names: list[str]) -> list[str]:
    """The table files among a directory listing, oldest first."""
    return sorted((n for n in names if _TABLE.fullmatch(n)), key=lambda n: int(n.split(".")[0]))


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def damage(path: str) -> str | None:
    """Describe damage to ``CURRENT`` or the ``MANIFEST`` of the database at ``path``.

    ``None`` when they are sound, or when ``path`` holds no database yet (a
    directory without ``CURRENT`` and without data files is one whose creation
    never finished: LevelDB creates it afresh). Raises ``OSError`` when the
    files cannot be read.
    """
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return None  # a new store, or an obstacle LevelDB reports itself
    if "CURRENT" not in names:
        data = log_files(names) + table_files(names)
        if data:
            return (
                f"CURRENT is missing while data files exist ({_listed(data)}); LevelDB "
                "would open the directory as a new store and lose them"
            )
        return None
    with open(os.path.join(path, "CURRENT"), "rb") as f:
        current = f.read(_CURRENT_LIMIT)
    match = _CURRENT.fullmatch(current)
    if match is None:
        return f"CURRENT is damaged ({current[:40]!r}): it must name the MANIFEST file"
    manifest = match.group(1).decode()
    try:
        with open(os.path.join(path, manifest), "rb") as f:
            contents = f.read()
    except FileNotFoundError:
        return f"CURRENT names {manifest}, which is missing"
    problem = log_damage(contents)
    if problem is not None:
        return f"{manifest} is damaged: {problem}"
    return None
