"""Aerospike failures as statestream errors: the client's exceptions and result codes.

The client reports a failure two ways: a raised exception (a whole call
failed) or a result code per record of a batch (the call itself returned,
possibly with result 0). Both go through :class:`Failures`, so one code
means one statestream error whichever way it came, and every error says
what the server did, for which table, partition and key, and what to do.

A per-record failure carries no exception of the client's; the error is
still chained (``raise ... from``) to the client's exception class for that
code, built here (:func:`client_exception`), so ``__cause__`` always names
the server's error.

Immutable once built; used by the thread that owns its store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aerospike import exception as as_exc

from statestream.config import AerospikeOptions
from statestream.errors import (
    NamespaceNotFoundError,
    RecordTooLargeError,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
    StoreWriteRejectedError,
)

__all__ = ["OK", "Failures", "client_exception"]

OK = 0
NOT_FOUND = 2
BATCH_FAILED = -16
#: Timeout (9), max retries exceeded (-12), no response (-15: what a batch
#: reports per record when the server stops answering), query timeout (212).
TIMEOUT_CODES = frozenset({9, -12, -15, 212})
CONNECTION_CODES = frozenset({-10, -9, -8, -7, -6, -4, 11})
SECURITY_CODES = range(50, 90)
TOO_BIG = 13
NAMESPACE_NOT_FOUND = 20
FORBIDDEN_CODES = frozenset({10, 22})


def _exception_classes() -> dict[int, type[as_exc.AerospikeError]]:
    classes: dict[int, type[as_exc.AerospikeError]] = {}
    for value in vars(as_exc).values():
        if isinstance(value, type) and issubclass(value, as_exc.AerospikeError):
            code = getattr(value, "code", None)
            if isinstance(code, int):
                classes.setdefault(code, value)
    return classes


_CLASSES = _exception_classes()


def client_exception(code: int, message: str) -> as_exc.AerospikeError:
    """The client's exception for result ``code`` (a server or client error of its own)."""
    cls = _CLASSES.get(code, as_exc.ServerError if code > 0 else as_exc.ClientError)
    exc = cls(code, message, "batch record", 0, False)
    exc.code, exc.msg = code, message
    return exc


class Failures:
    """Turns the client's exceptions and result codes of one store into statestream errors."""

    def __init__(
        self,
        table: str,
        partition: int,
        hosts: Sequence[tuple[str, int]],
        namespace: str,
        options: AerospikeOptions,
    ) -> None:
        self._where = f"table {table!r} partition {partition}"
        self._hosts = ", ".join(f"{address}:{port}" for address, port in hosts)
        self._namespace = namespace
        self._options = options

    def wrap(
        self,
        exc: as_exc.AerospikeError,
        action: str,
        key: bytes | None = None,
        *,
        query: bool = False,
    ) -> StoreError:
        """Return the statestream error for ``exc`` (raise it ``from exc``)."""
        return self.for_code(exc.code, exc.msg or str(exc), action, key, query=query)

    def check_batch(
        self,
        batch: Any,
        keys: Sequence[bytes],
        action: str,
        sizes: Sequence[int | None] | None = None,
    ) -> None:
        """Raise for the first failed record of ``batch`` ("not found" is not a failure).

        The error names the first failing key and its result code, and is
        chained to the client's exception for that code.
        """
        # The batch's own result can be 0 while records failed: check each one.
        for n, (record, key) in enumerate(zip(batch.batch_records, keys, strict=True)):
            code = record.result
            if code not in (OK, NOT_FOUND):
                detail = record.message or "the record failed"
                failed = sum(1 for r in batch.batch_records if r.result not in (OK, NOT_FOUND))
                if failed > 1:
                    detail += f"; {failed} of {len(keys)} records of the batch failed"
                size = sizes[n] if sizes is not None else None
                raise self.for_code(code, detail, action, key, size) from client_exception(
                    code, record.message or ""
                )
        if batch.result not in (OK, NOT_FOUND, BATCH_FAILED):
            raise self.for_code(batch.result, "the batch failed", action) from client_exception(
                batch.result, "the batch failed"
            )

    def for_code(
        self,
        code: int | None,
        detail: str,
        action: str,
        key: bytes | None = None,
        size: int | None = None,
        *,
        query: bool = False,
    ) -> StoreError:
        """Return the statestream error for an Aerospike result code."""
        where = self._where
        if key is not None:
            where += f" key {key!r:.60}"
        if size is not None:
            where += f" (value of {size} bytes)"
        cause = f"{detail} (Aerospike code {code})"
        opts = self._options
        if code in TIMEOUT_CODES:
            if query:
                socket = min(opts.socket_timeout or opts.query_timeout, opts.query_timeout)
                limit = (
                    f"query_timeout={opts.query_timeout} ms per page of the query "
                    f"(socket_timeout={socket} ms)"
                )
            else:
                limit = f"total_timeout={opts.total_timeout} ms with max_retries={opts.max_retries}"
            return StoreTimeoutError(
                f"Aerospike {action} for {where} timed out: the server did not answer within "
                f"{limit}: {cause}. The server is overloaded, frozen or unreachable: check the "
                "cluster and the network, or raise the timeout in the store URL; a write that "
                "timed out did not move the store's offset, so replaying repairs it"
            )
        if code in CONNECTION_CODES or (code is not None and code in SECURITY_CODES):
            return StoreConnectionError(
                f"Aerospike {action} for {where} failed: cannot use the cluster at "
                f"{self._hosts}: {cause}. Check that the hosts are reachable and the user, "
                "password and TLS settings in the store URL; a server also closes the "
                f"connection on a request over its message limit (max_batch_bytes="
                f"{opts.max_batch_bytes} bounds the store's batches)"
            )
        if code == TOO_BIG:
            return RecordTooLargeError(
                f"Aerospike {action} for {where} failed: the record is larger than namespace "
                f"{self._namespace!r} allows ({cause}); keep values smaller or raise the "
                "namespace's max-record-size (and the store's max_record_size option with it)"
            )
        if code == NAMESPACE_NOT_FOUND:
            return NamespaceNotFoundError(
                f"Aerospike {action} for {where} failed: the cluster at {self._hosts} has no "
                f"namespace {self._namespace!r} ({cause}); fix the namespace in the store URL "
                "or add it to the cluster's configuration"
            )
        if code in FORBIDDEN_CODES:
            hint = "check the namespace's and set's stop-writes limits"
            if opts.ttl > 0:
                hint = (
                    f"records are written with ttl={opts.ttl}: namespace {self._namespace!r} "
                    "needs nsup-period (or allow-ttl-without-nsup) set, or drop ttl from the "
                    "store URL"
                )
            return StoreWriteRejectedError(
                f"Aerospike {action} for {where} was refused by the server: {cause}; {hint}"
            )
        return StoreError(f"Aerospike {action} for {where} failed on the server: {cause}")
