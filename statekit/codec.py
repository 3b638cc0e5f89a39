"""Checks and encodings shared by the core and every backend.

Keys, kinds and values are checked once, here, before anything reaches a
backend, so a bad write never changes what is stored and every backend refuses
the same things with the same message.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from statekit.backend import JSON, dumps
from statekit.errors import ConfigError, SerializationError, ValidationError

__all__ = [
    "DEFAULT_NAMESPACE",
    "MAX_KEY_LENGTH",
    "MAX_KIND_LENGTH",
    "Codec",
    "check_key",
    "check_kind",
    "check_namespace",
    "dumps",
    "from_micros",
    "loads",
    "prefix_end",
    "redact_url",
    "to_micros",
]

MAX_KEY_LENGTH = 512
MAX_KIND_LENGTH = 64

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Exactly the code points of Unicode categories Cc (controls) and Cs (surrogates).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _bad_char(text: str) -> str | None:
    if _BAD_CHARS.search(text) is None:  # the common case, without a Python-level loop
        return None
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"control character {ch!r}"
        if category == "Cs":
            return f"lone surrogate {ch!r}"
    return None


def check_key(key: object) -> str:
    """Return ``key`` if it is a usable key, else raise ValidationError naming the problem."""
    if not isinstance(key, str):
        raise ValidationError(f"key must be a str, not {type(key).__name__}", reason="not a str")
    if not key:
        raise ValidationError("key is empty", key=key, reason="empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationError(
            f"key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}",
            key=key[:40] + "...",
            reason="too long",
        )
    bad = _bad_char(key)
    if bad:
        raise ValidationError(f"key {key!r} contains a {bad}", key=key, reason=bad)
    return key


def check_kind(kind: object, key: str | None = None) -> str:
    """Return ``kind`` if it is usable, else raise ValidationError."""
    if not isinstance(kind, str) or not kind:
        raise ValidationError(f"kind must be a non-empty str, got {kind!r}", key=key, reason="kind")
    if len(kind) > MAX_KIND_LENGTH or _bad_char(kind):
        raise ValidationError(
            f"kind {kind[:80]!r} must be at most {MAX_KIND_LENGTH} printable characters",
            key=key,
            reason="kind",
        )
    return kind


DEFAULT_NAMESPACE = "default"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_namespace(namespace: object, *, backend: str, where: str = "") -> str:
    """``namespace`` if it is a valid namespace name, else ConfigError.

    One rule for every backend with namespaces, so a namespace moves between them
    unchanged: 1 to 64 of ``A-Z a-z 0-9 _ . -`` — nothing that needs quoting in
    SQL, a Redis hash tag, a Mongo field or an InfluxDB tag.
    """
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        place = f"{backend} {where}" if where else backend
        raise ConfigError(
            f"{place}: namespace={namespace!r} must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
            source="url",
        )
    return namespace


Encoder = Callable[[Any], JSON]

_FLAT = frozenset({str, int, bool, type(None)})  # exact types that are JSON as they are


class Codec:
    """Turns caller values into exact JSON, refusing what JSON cannot hold.

    By default only JSON types pass (dicts with str keys, lists, tuples, str,
    int, finite float, bool, None): a ``Decimal``, ``bytes``, ``set`` or NaN is
    an error naming where it is, never a silent conversion. Register encoders
    for other types (one-way: a ``Decimal`` encoded with ``str`` reads back as
    a str)::

        Codec({Decimal: str, datetime: datetime.isoformat})

    :param encoders: type -> function returning a JSON value.
    """

    def __init__(self, encoders: Mapping[type, Encoder] | None = None) -> None:
        self._encoders = dict(encoders or {})

    def normalize(self, value: Any, *, key: str | None = None) -> JSON:
        """A fresh JSON copy of ``value`` (so later changes by the caller do not leak in)."""
        if type(value) is dict and all(
            type(k) is str and (type(v) in _FLAT or (type(v) is float and math.isfinite(v)))
            for k, v in value.items()
        ):
            return dict(value)  # the common flat record: nothing to convert or refuse
        return self._walk(value, "$", key, 0)

    def _walk(self, value: Any, path: str, key: str | None, depth: int) -> JSON:
        if depth > 200:
            raise SerializationError(
                f"value for {key!r} is nested deeper than 200 levels at {path}", key=key, path=path
            )
        # Exact types first; bool is an int subclass and must stay a bool.
        if value is None or type(value) is str or type(value) is bool:
            return value
        if isinstance(value, str):  # StrEnum and other str subclasses: store the plain text
            return str.__str__(value)
        if isinstance(value, int):  # IntEnum and other int subclasses: store the number
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            raise SerializationError(
                f"value for {key!r} has {value!r} at {path}; JSON has no NaN or Infinity",
                key=key,
                path=path,
            )
        if isinstance(value, dict):
            out: dict[str, JSON] = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise SerializationError(
                        f"value for {key!r} has a {type(k).__name__} dict key {k!r} at {path}; "
                        "JSON object keys are strings",
                        key=key,
                        path=path,
                    )
                out[k] = self._walk(v, f"{path}.{k}", key, depth + 1)
            return out
        if isinstance(value, list | tuple):
            return [self._walk(v, f"{path}[{i}]", key, depth + 1) for i, v in enumerate(value)]
        encoder = self._find_encoder(type(value))
        if encoder is None:
            raise SerializationError(
                f"value for {key!r} has a {type(value).__name__} at {path}, which JSON cannot "
                f"hold; convert it first or open the store with "
                f"codec=Codec({{{type(value).__name__}: ...}})",
                key=key,
                path=path,
            )
        return self._walk(encoder(value), path, key, depth + 1)

    def _find_encoder(self, cls: type) -> Encoder | None:
        for base in cls.__mro__:
            if base in self._encoders:
                return self._encoders[base]
        return None


def loads(text: str | bytes, *, key: str | None = None, backend: str | None = None) -> JSON:
    """Parse stored JSON, turning corruption into a SerializationError."""
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except (ValueError, TypeError) as exc:
        raise SerializationError(
            f"stored value of {key!r} is not valid JSON: {exc}", key=key, backend=backend
        ) from exc


def to_micros(at: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact integer arithmetic)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime of microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    Lets backends turn a prefix filter into an index range ``prefix <= k < end``.
    ``None`` means no upper bound (empty prefix, or only U+10FFFF characters).
    Ordering is by code point, which is also the byte order of UTF-8.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; jump past them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


_SECRET_PARAMS = ("password", "token", "secret", "key", "auth")


def redact_url(url: str) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``.

    For logs, errors and ``doctor`` output.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        hidden = [
            (name, "***" if any(s in name.lower() for s in _SECRET_PARAMS) else value)
            for name, value in pairs
        ]
        if netloc == parts.netloc and hidden == pairs:
            return url
        query = "&".join(f"{name}={value}" for name, value in hidden)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "<unparseable URL>"
