"""Codecs: how keys and values become bytes and back.

A codec is any object with ``name``, ``encode(obj) -> bytes`` and
``decode(data) -> obj``. Built in:

* ``json`` (the default): compact, ``sort_keys=True``, UTF-8. Equal values
  always give equal bytes, which matters for keys: a dict key and the same
  dict built in another order must address the same record. NaN and infinity
  are rejected (they are not JSON). Tuples decode as lists.
* ``raw``: ``bytes`` in, ``bytes`` out (``bytearray``/``memoryview`` accepted
  on encode).
* ``str``: UTF-8 text.
* ``PickleCodec(trusted=True)``: only when constructed explicitly with
  ``trusted=True``. A changelog is input; unpickling input executes code, so
  pickle is never chosen by name or by default.

Codecs are stateless and thread-safe.
"""

from __future__ import annotations

import json
import json.decoder
import json.encoder
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from statestream.errors import ConfigurationError, DecodeError, EncodeError, UnsafeCodecError

__all__ = [
    "CODECS",
    "Codec",
    "JsonCodec",
    "PickleCodec",
    "RawCodec",
    "StrCodec",
    "encode_prefix",
    "get_codec",
]


@runtime_checkable
class Codec(Protocol):
    """Turns objects into bytes and back; ``decode(encode(x))`` equals ``x``."""

    name: str

    def encode(self, obj: Any) -> bytes:
        """Return the bytes for ``obj``; raise :class:`EncodeError` if unsupported."""
        ...

    def decode(self, data: bytes) -> Any:
        """Return the object for ``data``; raise :class:`DecodeError` if malformed."""
        ...


# The C string encoder json uses with ensure_ascii=False, and its decoder.
_encode_str = json.encoder.encode_basestring
_scan_str: Callable[[str, int, bool], tuple[str, int]]
_scan_str = json.decoder.scanstring  # type: ignore[attr-defined]
_QUOTE, _ZERO = ord('"'), ord("0")
# Longer digit strings go through json.loads, which reports int()'s limit
# on digits (sys.get_int_max_str_digits) as a decode error.
_INT_DIGITS = 4000


def _preview(data: bytes, limit: int = 32) -> str:
    shown = bytes(data[:limit])
    return repr(shown) + ("..." if len(data) > limit else "")


class JsonCodec:
    """Deterministic JSON (the default codec)."""

    name = "json"

    def __init__(self) -> None:
        # One encoder reused: cheaper than json.dumps' per-call setup.
        self._encoder = json.JSONEncoder(
            sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )

    def encode(self, obj: Any) -> bytes:
        # Fast paths for the commonest keys and values; they produce exactly
        # the bytes the full encoder would.
        kind = type(obj)
        if kind is str:
            return _encode_str(obj).encode("utf-8")
        if kind is int:
            return str(obj).encode("ascii")
        try:
            return self._encoder.encode(obj).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise EncodeError(
                f"json codec cannot encode {type(obj).__name__!s} value: {exc}"
            ) from exc

    def decode(self, data: bytes) -> Any:
        # Fast paths for a JSON string or integer (every record of a text
        # stream, every counter), with the C scanner json itself uses; any
        # doubt (escapes it rejects, other UTF encodings, whitespace) falls
        # through to json.loads, which decides.
        if type(data) is bytes and len(data) > 1:
            first = data[0]
            if first == _QUOTE and data[-1] == _QUOTE:
                try:
                    text = data.decode("utf-8")
                    value, end = _scan_str(text, 1, True)
                except ValueError:
                    pass
                else:
                    if end == len(text):
                        return value
            elif data.isdigit() and first != _ZERO and len(data) < _INT_DIGITS:
                return int(data)
        elif data.isdigit():
            return int(data)  # a single digit (or empty: not a digit)
        try:
            return json.loads(data)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"json codec cannot decode {_preview(data)}: {exc}") from exc

    def __repr__(self) -> str:
        return "JsonCodec()"


class RawCodec:
    """Bytes pass through unchanged."""

    name = "raw"

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, bytes):
            return obj
        if isinstance(obj, (bytearray, memoryview)):
            return bytes(obj)
        raise EncodeError(
            f"raw codec needs bytes, got {type(obj).__name__}; encode it first "
            "or use the 'json' or 'str' codec"
        )

    def decode(self, data: bytes) -> Any:
        return bytes(data)

    def __repr__(self) -> str:
        return "RawCodec()"


class StrCodec:
    """UTF-8 text."""

    name = "str"

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise EncodeError(
                f"str codec needs str, got {type(obj).__name__}; use the 'json' codec "
                "for other types"
            )
        return obj.encode("utf-8")

    def decode(self, data: bytes) -> Any:
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"str codec cannot decode {_preview(data)}: {exc}") from exc

    def __repr__(self) -> str:
        return "StrCodec()"


class PickleCodec:
    """Pickle, for trusted data only.

    ``PickleCodec(trusted=True)`` states that every producer of the data is
    trusted: decoding a pickle runs code chosen by whoever wrote it.
    """

    name = "pickle"

    def __init__(self, *, trusted: bool = False, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if trusted is not True:
            raise UnsafeCodecError(
                "PickleCodec executes code from the data it decodes; construct it as "
                "PickleCodec(trusted=True) only if every producer is trusted, or use "
                "the 'json' codec"
            )
        self._protocol = protocol

    def encode(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, protocol=self._protocol)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise EncodeError(f"pickle codec cannot encode {type(obj).__name__}: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)  # noqa: S301 - opt-in via trusted=True
        except Exception as exc:  # pickle raises nearly anything on bad input
            raise DecodeError(f"pickle codec cannot decode {_preview(data)}: {exc}") from exc

    def __repr__(self) -> str:
        return "PickleCodec(trusted=True)"


#: Codecs that may be chosen by name. Pickle is deliberately absent.
CODECS: dict[str, type[JsonCodec] | type[RawCodec] | type[StrCodec]] = {
    "json": JsonCodec,
    "raw": RawCodec,
    "str": StrCodec,
}


def encode_prefix(codec: Codec, prefix: Any) -> bytes:
    """Return the bytes that every key starting with ``prefix`` starts with.

    For ``str`` and ``raw`` keys that is simply the encoded prefix. For JSON a
    string key is encoded as ``"..."``, so a prefix drops the closing quote;
    other JSON prefixes have no meaningful byte prefix and are refused.
    """
    if isinstance(codec, JsonCodec):
        if not isinstance(prefix, str):
            raise EncodeError(
                f"prefix queries on json keys need a str prefix, got {type(prefix).__name__}"
            )
        return codec.encode(prefix)[:-1]
    return codec.encode(prefix)


def get_codec(spec: str | Codec | None) -> Codec:
    """Return a codec for a name (``"json"``, ``"raw"``, ``"str"``) or a codec object.

    ``None`` means the default, ``json``. ``"pickle"`` raises
    :class:`UnsafeCodecError`: pass ``PickleCodec(trusted=True)`` instead.
    """
    if spec is None:
        return JsonCodec()
    if isinstance(spec, str):
        if spec == "pickle":
            raise UnsafeCodecError(
                "the pickle codec cannot be chosen by name: it executes code from the "
                "data it decodes; pass PickleCodec(trusted=True) explicitly if every "
                "producer is trusted"
            )
        try:
            return CODECS[spec]()
        except KeyError:
            known = ", ".join(sorted(CODECS))
            raise ConfigurationError(
                f"unknown codec {spec!r}; known codecs: {known} "
                "(or pass an object with name, encode and decode)"
            ) from None
    if isinstance(spec, Codec):
        return spec
    raise ConfigurationError(
        f"a codec must be a name or an object with name, encode and decode; got "
        f"{type(spec).__name__}"
    )
