"""Secrets in settings: which options hold them, and how to print URLs without them.

Passwords and tokens reach statestream inside broker and store URLs
(``kafka://host:9092?sasl_plain_password=...``,
``aerospike://host:3000/ns?user=app&password=...``, or a password in the
URL's user information). Whatever shows a URL or a setting (logs, the command
line, error messages, reprs) passes it through :func:`redact_url` or
:func:`redact_text` first, so that every secret prints as ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus

__all__ = [
    "MASK",
    "SECRET_OPTIONS",
    "MaskedStr",
    "is_secret_option",
    "redact_text",
    "redact_url",
    "url_secrets",
]

#: What a secret prints as.
MASK = "***"

#: Option names whose values are secrets: the Kafka transport's
#: (``sasl_plain_password``, ``ssl_password``), the Aerospike store's
#: (``password``), and common names a third-party store may use.
SECRET_OPTIONS: frozenset[str] = frozenset(
    {
        "sasl_plain_password",
        "ssl_password",
        "password",
        "passwd",
        "token",
        "access_token",
        "sasl_oauth_token",
        "secret",
        "api_key",
    }
)
# Names ending like these are secrets too (``redis_password``, ``auth_token``):
# hiding a value that is not secret costs less than showing one that is.
_SECRET_SUFFIXES = ("_password", "_passwd", "_token", "_secret")

# A port after "host:" (digits, then the end of the host or the host list):
# tells "host:9092?user=a@b" from a password holding an unencoded '?'.
_PORT = re.compile(r"\d*(?:[,/?#]|$)")
# Characters no user name holds, but text after "scheme://" that is no user
# information may (a path, a query, an IPv6 address, a host list).
_NOT_IN_USER = frozenset("/?#@[],&=")
# A URL inside free text: up to whitespace or a quote (as repr() shows it).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")


def is_secret_option(name: str) -> bool:
    """Return whether option ``name`` holds a secret (case-insensitive)."""
    lowered = name.strip().lower()
    return lowered in SECRET_OPTIONS or lowered.endswith(_SECRET_SUFFIXES)


def redact_url(url: str) -> str:
    """Return ``url`` with every secret option value and user-info password as ``***``.

    Everything else is kept byte for byte, so the result still shows which
    hosts, path and options were given. Empty secrets stay empty (nothing to
    hide, and it shows that one is missing). Never raises, whatever the input.
    """
    text = url if isinstance(url, str) else str(url)
    try:
        spans = _secret_spans(text)
    except Exception:  # a URL being printed must never turn into a new error
        return MASK
    for start, end in reversed(spans):
        text = text[:start] + MASK + text[end:]
    return text


def url_secrets(url: str) -> frozenset[str]:
    """Return the secrets in ``url``: each as written and percent-decoded.

    For :func:`redact_text`, to hide them in messages that quote the URL or
    its decoded options (a backend's error text, for example).
    """
    text = url if isinstance(url, str) else str(url)
    try:
        spans = _secret_spans(text)
    except Exception:  # as in redact_url: collecting secrets must not fail
        return frozenset()
    found: set[str] = set()
    for start, end in spans:
        raw = text[start:end]
        found.update((raw, unquote(raw), unquote_plus(raw)))
    return frozenset(found - {""})


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with each of ``secrets`` and each URL's secrets as ``***``.

    ``secrets`` are replaced wherever they occur, longest first (so a secret
    that contains another is hidden whole); empty strings are ignored. Then
    every ``scheme://...`` in the text goes through :func:`redact_url`.
    """
    result = text
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        result = result.replace(secret, MASK)
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), result)


class MaskedStr(str):
    """A string whose ``repr`` is ``'***'``; otherwise the string itself.

    For secrets handed to a library that may log its whole configuration
    (kafka-python logs its admin client's settings at DEBUG level): the
    library uses the value as any string, and a logged dict shows ``'***'``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


# ----------------------------------------------------------------------- parsing


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """Return the ``(start, end)`` of every non-empty secret in ``text``, in order."""
    spans: list[tuple[int, int]] = []
    query_from = 0
    userinfo = _userinfo_password(text)
    if userinfo is not None:
        spans.append(userinfo)
        query_from = userinfo[1]
    mark = text.find("?", query_from)
    if mark < 0:
        return spans
    position = mark + 1
    # Split on '&' only, as parse_qsl does; a secret runs to the next '&' or
    # the end, past a '#' too (an unencoded '#' in a password is still the password).
    for part in text[position:].split("&"):
        name, equals, value = part.partition("=")
        start = position + len(name) + 1
        if equals and value:
            if is_secret_option(unquote_plus(name)):
                spans.append((start, start + len(value)))
            elif "://" in value:
                # A URL as an option value (``proxy_url=socks5://user:pw@proxy``).
                spans.extend((start + a, start + b) for a, b in _secret_spans(value))
            elif "://" in (decoded := unquote_plus(value)) and _secret_spans(decoded):
                # The same, percent-encoded: hidden whole, as its parts are encoded.
                spans.append((start, start + len(value)))
        position += len(part) + 1
    return spans


def _userinfo_password(text: str) -> tuple[int, int] | None:
    """Return the span of the password in ``scheme://user:password@host``, if any."""
    separator = text.find("://")
    if separator < 0:
        return None
    begin = separator + 3
    # The authority ends at the first '/', '?' or '#', as urlsplit reads it;
    # its user information ends at the last '@' within it.
    stop = min((i for i in (text.find(c, begin) for c in "/?#") if i >= 0), default=len(text))
    at = text.rfind("@", begin, stop)
    if at < 0:
        at = _unencoded_userinfo_end(text, begin)
        if at < 0:
            return None
    colon = text.find(":", begin, at)
    if colon < 0 or colon + 1 == at:
        return None  # a user name alone, or an empty password: nothing to hide
    return colon + 1, at


def _unencoded_userinfo_end(text: str, begin: int) -> int:
    """Return the '@' ending ``user:password`` whose password holds an unencoded ``/?#``.

    Such a password ends the authority early, so the '@' after it is not in
    what urlsplit calls the network location; it is still a password.
    Returns -1 when the text after ``scheme://`` is not ``user:password@``.
    """
    colon = text.find(":", begin)
    if colon < 0 or any(c in _NOT_IN_USER for c in text[begin:colon]):
        return -1
    at = text.find("@", colon)
    if at < 0 or _PORT.match(text, colon + 1, at):
        return -1
    return at
