"""Codecs: round trips, deterministic key bytes, clear errors, no implicit pickle."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestream.errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    StateStreamError,
    UnsafeCodecError,
)
from statestream.serde import JsonCodec, PickleCodec, RawCodec, StrCodec, get_codec

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_json_round_trip(value: object) -> None:
    codec = JsonCodec()
    assert codec.decode(codec.encode(value)) == value


@given(st.dictionaries(st.text(max_size=4), st.integers(), min_size=2, max_size=6))
def test_json_key_bytes_do_not_depend_on_insertion_order(value: dict[str, int]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert list(reordered) != list(value) or len(value) < 2
    assert JsonCodec().encode(value) == JsonCodec().encode(reordered)


def test_json_is_compact_utf8() -> None:
    assert JsonCodec().encode({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1, 2}, b"bytes", object()])
def test_json_rejects_what_json_cannot_say(bad: object) -> None:
    with pytest.raises(EncodeError, match="json codec cannot encode"):
        JsonCodec().encode(bad)


def test_json_decode_error_shows_the_bytes() -> None:
    with pytest.raises(DecodeError, match=r"b'\{not json'") as info:
        JsonCodec().decode(b"{not json")
    assert isinstance(info.value, StateStreamError)


@given(st.binary())
def test_raw_round_trip(value: bytes) -> None:
    assert RawCodec().decode(RawCodec().encode(value)) == value


def test_raw_accepts_buffers_and_rejects_others() -> None:
    assert RawCodec().encode(bytearray(b"ab")) == b"ab"
    assert RawCodec().encode(memoryview(b"cd")) == b"cd"
    with pytest.raises(EncodeError, match="raw codec needs bytes, got str"):
        RawCodec().encode("text")


@given(st.text())
def test_str_round_trip(value: str) -> None:
    assert StrCodec().decode(StrCodec().encode(value)) == value


def test_str_errors() -> None:
    with pytest.raises(EncodeError, match="str codec needs str, got int"):
        StrCodec().encode(5)
    with pytest.raises(DecodeError, match="str codec cannot decode"):
        StrCodec().decode(b"\xff\xfe")


def test_pickle_is_never_implicit() -> None:
    with pytest.raises(UnsafeCodecError, match="trusted=True"):
        get_codec("pickle")
    with pytest.raises(UnsafeCodecError, match="trusted=True"):
        PickleCodec()
    with pytest.raises(UnsafeCodecError):
        PickleCodec(trusted=1)  # type: ignore[arg-type]


def test_pickle_when_trusted() -> None:
    codec = PickleCodec(trusted=True)
    assert codec.decode(codec.encode({"a": (1, 2)})) == {"a": (1, 2)}
    with pytest.raises(DecodeError):
        codec.decode(b"not a pickle")
    assert codec.encode(3) == pickle.dumps(3, protocol=pickle.HIGHEST_PROTOCOL)


def test_get_codec() -> None:
    assert isinstance(get_codec(None), JsonCodec)
    assert isinstance(get_codec("json"), JsonCodec)
    assert isinstance(get_codec("raw"), RawCodec)
    assert isinstance(get_codec("str"), StrCodec)
    custom = StrCodec()
    assert get_codec(custom) is custom
    with pytest.raises(ConfigurationError, match="known codecs: json, raw, str"):
        get_codec("yaml")
    with pytest.raises(ConfigurationError, match="name, encode and decode"):
        get_codec(42)  # type: ignore[arg-type]


@given(st.one_of(st.text(), st.integers()))
def test_json_fast_paths_match_the_full_encoder(value: object) -> None:
    import json

    full = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode(value)
    assert JsonCodec().encode(value) == full.encode("utf-8")


def _loads_outcome(data: bytes) -> tuple[str, object]:
    try:
        return ("value", json.loads(data))
    except (ValueError, TypeError):
        return ("error", None)


def _decode_outcome(data: bytes) -> tuple[str, object]:
    try:
        return ("value", JsonCodec().decode(data))
    except DecodeError:
        return ("error", None)


json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8"))
near_misses = st.builds(
    lambda body, quote_left, quote_right: quote_left + body + quote_right,
    st.binary(max_size=12),
    st.sampled_from([b'"', b"", b" ", b"0", b"-"]),
    st.sampled_from([b'"', b"", b" ", b"\\"]),
)


@given(data=json_texts | near_misses | st.binary(max_size=12))
def test_json_decode_fast_paths_agree_with_json_loads(data: bytes) -> None:
    # Strings and integers skip json.loads; everything must decode to what
    # json.loads gives, and fail (typed) exactly where it fails.
    assert _decode_outcome(data) == _loads_outcome(data)
    outcome = _decode_outcome(data)
    if outcome[0] == "value":
        assert type(outcome[1]) is type(json.loads(data))


@pytest.mark.parametrize(
    "data", [b'"a\\nb"', b'"\\u00e9"', b'"x" ', b"01", b"-0", b"007", b'"\x01"', b'"\\q"']
)
def test_json_decode_edge_cases_agree_with_json_loads(data: bytes) -> None:
    assert _decode_outcome(data) == _loads_outcome(data)


def test_json_decode_of_a_huge_integer_is_a_decode_error_like_json_loads() -> None:
    data = b"9" * 5000  # beyond Python's default limit on int digits
    assert _decode_outcome(data) == _loads_outcome(data)
