"""Window arithmetic and window-key encoding for windowed tables (event time, milliseconds).

Pure functions, no state: which windows a record at event time ``t`` belongs
to, and how a (key, window) pair is laid out in a store so that every window
of one key is contiguous and ordered by window start *numerically* in every
store (stores order keys by bytes, and JSON numbers do not sort).

Layout of a windowed store key::

    len(key) : 4 bytes, big-endian
    key      : the table key as its key codec encodes it
    start    : 8 bytes, big-endian, sign bit flipped (so negative times sort first)
    end      : 8 bytes, the same

The length prefix makes one key's windows a contiguous range no other key's
windows fall into (a key that is a prefix of another is told apart by the
length), so window reads and expiry are range scans
(:func:`key_range`), never full-store scans.

Windows are half-open: ``[start, end)``. Thread ownership: none (pure).
"""

from __future__ import annotations

import struct

__all__ = [
    "Window",
    "decode_time",
    "decode_window_key",
    "encode_time",
    "encode_window_key",
    "hopping_windows",
    "key_prefix",
    "key_range",
    "left_window",
    "right_window",
    "tumbling_window",
]

#: A window's ``(start, end)`` in milliseconds, ``start`` included, ``end`` excluded.
Window = tuple[int, int]

_LENGTH = struct.Struct(">I")
_BOUNDS = struct.Struct(">QQ")
_TIME = struct.Struct(">Q")
# Shifts signed 64-bit times onto unsigned ones, keeping their order (the
# sign bit flipped: negative times sort first).
_OFFSET = 1 << 63
_MIN, _MAX = -(1 << 63), (1 << 63) - 1


def _check_time(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not _MIN <= value <= _MAX:
        raise ValueError(f"{name} must be an int of 64 bits (milliseconds), got {value!r}")


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int of milliseconds, got {value!r}")


def encode_time(t: int) -> bytes:
    """Return ``t`` as 8 bytes that sort like the number (sign bit flipped, big-endian)."""
    return _TIME.pack(t + _OFFSET)


def decode_time(raw: bytes, at: int = 0) -> int:
    """Return the time :func:`encode_time` wrote at ``raw[at:at + 8]``."""
    (shifted,) = _TIME.unpack_from(raw, at)
    return int(shifted) - _OFFSET


def key_prefix(key: bytes) -> bytes:
    """Return the part of a windowed store key that names ``key`` (length, then key)."""
    return _LENGTH.pack(len(key)) + key


def encode_window_key(key: bytes, window: Window) -> bytes:
    """Return the store key of ``key`` (encoded) in ``window``."""
    start, end = window
    _check_time("window start", start)
    _check_time("window end", end)
    if end < start:
        raise ValueError(f"window end {end} is before its start {start}")
    return _LENGTH.pack(len(key)) + key + _BOUNDS.pack(start + _OFFSET, end + _OFFSET)


def decode_window_key(raw: bytes) -> tuple[bytes, Window]:
    """Return ``(key, (start, end))`` of a store key made by :func:`encode_window_key`."""
    if len(raw) < _LENGTH.size + _BOUNDS.size:
        raise ValueError(f"not a windowed store key (too short): {raw!r}")
    (length,) = _LENGTH.unpack_from(raw)
    if len(raw) != _LENGTH.size + length + _BOUNDS.size:
        raise ValueError(f"not a windowed store key (length {length} does not match): {raw!r}")
    key = raw[_LENGTH.size : _LENGTH.size + length]
    start, end = _BOUNDS.unpack_from(raw, _LENGTH.size + length)
    return key, (start - _OFFSET, end - _OFFSET)


def key_range(
    key: bytes, start_from: int | None = None, start_to: int | None = None
) -> tuple[bytes, bytes]:
    """Return store bounds ``[low, high)`` of the windows of ``key`` starting in the range.

    The windows are those with ``start_from <= start < start_to``.

    ``None`` leaves a side open (within the key's windows).
    """
    prefix = _LENGTH.pack(len(key)) + key
    if start_from is None:
        low = prefix
    else:
        _check_time("start_from", start_from)
        low = prefix + struct.pack(">Q", start_from + _OFFSET)
    if start_to is None:
        # Longer than, and above, every 16-byte window suffix of this key.
        high = prefix + b"\xff" * (_BOUNDS.size + 1)
    else:
        _check_time("start_to", start_to)
        high = prefix + struct.pack(">Q", start_to + _OFFSET)
    return low, high


def tumbling_window(t: int, size: int) -> Window:
    """The tumbling window of ``size`` ms containing event time ``t`` (aligned to the epoch)."""
    _check_time("event time", t)
    _check_size("window size", size)
    start = t - t % size  # Python's % floors, so negative times align too
    return (start, start + size)


def hopping_windows(t: int, size: int, step: int) -> list[Window]:
    """Every hopping window of ``size`` ms advancing by ``step`` ms that contains ``t``, by start.

    Windows start at multiples of ``step`` (aligned to the epoch); ``step``
    must not exceed ``size`` (a larger step leaves gaps no window covers).
    """
    _check_time("event time", t)
    _check_size("window size", size)
    _check_size("window step", step)
    if step > size:
        raise ValueError(f"window step {step} must not exceed the window size {size}")
    last = t - t % step  # the latest start at or before t
    windows: list[Window] = []
    start = last
    while start > t - size:
        windows.append((start, start + size))
        start -= step
    windows.reverse()
    return windows


def left_window(t: int, size: int) -> Window:
    """The sliding window of ``size`` ms that ends with event time ``t`` (``t`` included)."""
    return (t - size + 1, t + 1)


def right_window(t: int, size: int) -> Window:
    """The sliding window of ``size`` ms that starts just after event time ``t``."""
    return (t + 1, t + 1 + size)
