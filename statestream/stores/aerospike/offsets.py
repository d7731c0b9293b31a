"""The offset record of one partition, written only over the version the store saw.

The record (kind ``o``) holds the changelog offset (bin ``o``) and the
metadata (map bin ``m``). The store reads it once, when it opens, and then
keeps it current itself, so it must notice when the server's copy stopped
being the one it wrote: a server restart that lost an in-memory namespace
removes it, a second owner of the partition replaces it. Writing the cached
offset back then would claim that an empty (or foreign) set holds the
state up to that offset: silent state loss.

So every write is conditional, a guarantee of the server's: over the
generation last read or written (``POLICY_GEN_EQ`` with the record required
to exist), or, while the store saw no record, only if there still is none
(``POLICY_EXISTS_CREATE``). A refused write raises
:class:`~statestream.errors.OffsetRecordChangedError`, saying whether the
record vanished or changed. Two cases look like refusals but are not, and
are checked by reading the record back before anything is raised: a write
the client retried after a timeout whose first attempt was applied (the
retry then finds its own generation), and a write that timed out in doubt
(the next write first reads which of the two versions the server holds).

Thread ownership: the thread that owns the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aerospike
from aerospike import exception as as_exc
from aerospike_helpers.operations import operations as ops

from statestream.errors import InvalidMetadataError, OffsetRecordChangedError, StoreCorruptedError
from statestream.stores.aerospike.failures import Failures
from statestream.stores.base import check_meta_name

__all__ = ["META_BIN", "OFFSET_BIN", "OffsetRecord"]

OFFSET_BIN = "o"
META_BIN = "m"

#: What the record holds: offset, metadata.
State = tuple["int | None", dict[str, bytes]]


class OffsetRecord:
    """Offset and metadata of one partition, and the generation they were seen at."""

    def __init__(
        self,
        client: Any,
        key: tuple[str, str, bytearray],
        policies: Mapping[str, Mapping[str, Any]],
        failures: Failures,
        where: str,
    ) -> None:
        self._client = client
        self._key = key
        self._read_policy = dict(policies["read"])
        self._write_policy = dict(policies["offset_write"])
        self._remove_policy = dict(policies["remove"])
        self._failures = failures
        self._where = where
        self.offset: int | None = None
        self.meta: dict[str, bytes] = {}
        #: Generation of the record as last read or written; ``None``: no record.
        self._gen: int | None = None
        #: The state a write that timed out tried to store (it may be applied).
        self._in_doubt: State | None = None

    def load(self) -> None:
        """Read the record (raise StoreCorruptedError if it is not one of ours)."""
        found = self._read()
        if found is None:
            self.offset, self.meta, self._gen = None, {}, None
        else:
            (self.offset, self.meta), self._gen = found
        self._in_doubt = None

    def _read(self) -> tuple[State, int] | None:
        try:
            _, meta, bins = self._client.get(self._key, policy=self._read_policy)
        except as_exc.RecordNotFound:
            return None
        except as_exc.AerospikeError as exc:
            raise self._failures.wrap(exc, "read the offset record") from exc
        return self._parse(bins or {}), int(meta["gen"])

    def _parse(self, bins: Mapping[str, Any]) -> State:
        offset = bins.get(OFFSET_BIN)
        raw_meta = bins.get(META_BIN, {})
        # A record written with metadata before any offset has no offset bin.
        valid = offset is None or (
            isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0
        )
        meta: dict[str, bytes] = {}
        if isinstance(raw_meta, Mapping):
            for name, value in raw_meta.items():
                if not _is_meta_name(name) or not isinstance(value, bytes | bytearray):
                    valid = False
                    break
                meta[name] = bytes(value)
        else:
            valid = False
        if not valid:
            raise StoreCorruptedError(
                f"the offset record of {self._where} is malformed ({dict(bins)!r:.80}); "
                "destroy the store (statestream.stores.registry.destroy_store) and it is "
                "rebuilt from the changelog"
            )
        return offset, meta

    def write(self, offset: int | None, meta: Mapping[str, bytes] | None) -> None:
        """Store ``offset`` (``None``: keep it) and merge ``meta`` in, over the version seen.

        Raises OffsetRecordChangedError if the server's record is not that version.
        """
        if self._in_doubt is not None:
            self._settle()
        merged = {**self.meta, **meta} if meta else self.meta
        new_offset = self.offset if offset is None else offset
        # A bin left out of the write keeps its value on the server.
        operations = []
        if offset is not None:
            operations.append(ops.write(OFFSET_BIN, offset))
        if meta:
            operations.append(ops.write(META_BIN, dict(merged)))
        policy = dict(self._write_policy)
        record_meta: dict[str, Any] = {"ttl": aerospike.TTL_NEVER_EXPIRE}
        if self._gen is None:
            policy["exists"] = aerospike.POLICY_EXISTS_CREATE
        else:
            policy["exists"] = aerospike.POLICY_EXISTS_UPDATE
            policy["gen"] = aerospike.POLICY_GEN_EQ
            record_meta["gen"] = self._gen
        try:
            _, written, _ = self._client.operate(self._key, operations, record_meta, policy)
        except as_exc.RecordNotFound as exc:
            raise self._changed("is gone", exc) from exc
        except (as_exc.RecordGenerationError, as_exc.RecordExistsError) as exc:
            # Our own write, retried by the client after its first attempt landed?
            found = self._read()
            if found is None or found[0] != (new_offset, merged):
                raise self._changed("was replaced by another writer", exc) from exc
            gen = found[1]
        except as_exc.AerospikeError as exc:
            if exc.in_doubt or exc.code in (9, -12, -15):
                self._in_doubt = (new_offset, dict(merged))
            raise self._failures.wrap(exc, "write the offset record") from exc
        else:
            gen = int(written["gen"])
        self.offset, self.meta, self._gen = new_offset, dict(merged), gen

    def _settle(self) -> None:
        """After a write in doubt: adopt the server's version if it is ours, old or new."""
        assert self._in_doubt is not None
        found = self._read()
        state = None if found is None else found[0]
        if found is None and self._gen is None:
            self._in_doubt = None  # never created: still none
            return
        if state in ((self.offset, self.meta), self._in_doubt):
            assert found is not None
            (self.offset, self.meta), self._gen = found
            self._in_doubt = None
            return
        what = "is gone" if found is None else "was replaced by another writer"
        raise self._changed(what, None)

    def remove(self) -> None:
        """Remove the record (there may be none)."""
        try:
            self._client.remove(self._key, policy=self._remove_policy)
        except as_exc.RecordNotFound:
            pass
        except as_exc.AerospikeError as exc:
            raise self._failures.wrap(exc, "remove the offset record") from exc
        self.offset, self.meta, self._gen, self._in_doubt = None, {}, None, None

    def _changed(self, what: str, exc: as_exc.AerospikeError | None) -> OffsetRecordChangedError:
        seen = "none" if self._gen is None else f"generation {self._gen}"
        code = "" if exc is None else f" (Aerospike code {exc.code})"
        return OffsetRecordChangedError(
            f"the offset record of {self._where} {what} since this store read or wrote it "
            f"(it saw {seen}, offset {self.offset}){code}: the server lost data (a restart "
            "of an in-memory namespace, a truncate) or another worker writes this "
            "partition. The old offset was not written back; the partition's records are "
            "rebuilt from the changelog (a worker does it: destroy the store otherwise)"
        )


def _is_meta_name(name: object) -> bool:
    try:
        check_meta_name(name)
    except InvalidMetadataError:
        return False
    return True
