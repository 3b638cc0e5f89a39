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

from statekit.backend import JSON, dumps
from statekit.errors import ConfigError, SerializationError, ValidationError
from statekit.redact import redact_url

__all__ = [
    "DEFAULT_NAMESPACE",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_KEY_LENGTH",
    "MAX_KIND_LENGTH",
    "MAX_VERSION",
    "Codec",
    "check_bound",
    "check_key",
    "check_kind",
    "check_namespace",
    "check_prefix",
    "dumps",
    "encode",
    "escape_surrogates",
    "from_micros",
    "loads",
    "prefix_end",
    "redact_url",
    "to_micros",
]

MAX_KEY_LENGTH = 512
MAX_KIND_LENGTH = 64
MAX_VERSION = 2**63 - 1
"""The largest version, ``expect``, ``after``, ``before`` or ``limit``: a signed 64-bit
integer, which is what every backend stores and compares versions as."""
MAX_INT_DIGITS = 4300
"""The most digits an integer in a value may have: Python's default limit for turning
text into an int, so that every process (whatever its own limit) can read a value back."""
MAX_DEPTH = 200
"""How deeply a value may nest lists and objects."""

_INT_LIMIT = 10**MAX_INT_DIGITS  # an integer must be smaller than this in magnitude

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


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if some key could start with it, else raise ValidationError.

    A scan or watch prefix follows the key rules except that it may be empty: one
    with a control character or a lone surrogate can match no key, and some
    databases cannot even encode it, so it is a mistake to report, not an empty answer.
    """
    if not isinstance(prefix, str):
        raise ValidationError(f"prefix must be a str, not {type(prefix).__name__}", reason="prefix")
    if len(prefix) > MAX_KEY_LENGTH:
        raise ValidationError(
            f"prefix is {len(prefix)} characters long; no key is longer than {MAX_KEY_LENGTH}",
            reason="prefix",
        )
    bad = _bad_char(prefix)
    if bad:
        raise ValidationError(f"prefix {prefix!r} contains a {bad}", reason="prefix")
    return prefix


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


def _shown_int(value: int) -> str:
    # str() of a huge int is slow and, past Python's digit limit, an error of its own.
    return str(value) if abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"


def check_bound(
    name: str, value: object, *, minimum: int, maximum: int = MAX_VERSION, key: str | None = None
) -> int:
    """``value`` if it is an int from ``minimum`` to ``maximum``, else ValidationError naming
    ``name`` (``reason=name``).

    For the integers that reach a backend's version columns (``expect``, ``after``,
    ``before``, ``limit``): one check here, so that no backend meets an integer its
    database cannot hold. A bool is refused: ``True`` is not a version.
    """
    where = f" for {key!r}" if key is not None else ""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(
            f"{name}{where} must be an int, not {type(value).__name__}", key=key, reason=name
        )
    if not minimum <= value <= maximum:
        raise ValidationError(
            f"{name}{where} is {_shown_int(value)}; it must be from {minimum} to {maximum} "
            "(versions are signed 64-bit integers)",
            key=key,
            reason=name,
        )
    return value


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

_FLAT = frozenset({str, bool, type(None)})  # exact types that are JSON as they are

_SURROGATES = re.compile("[\ud800-\udfff]")


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written out as ``\\udxxx``.

    For messages, reports and error bodies that name a bad input: they must print,
    and encode as UTF-8, even when what they name cannot.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_path(value: JSON, path: str) -> str | None:
    """Where in ``value`` a string or an object key holds a lone surrogate (None: nowhere)."""
    if isinstance(value, str):
        return path if _SURROGATES.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if _SURROGATES.search(k):
                return f"{path}.{k}"
            found = _surrogate_path(v, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _surrogate_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def encode(value: JSON, *, key: str | None = None, what: str = "value") -> str:
    """The JSON text every backend stores of a normalized ``value``.

    Refuses (SerializationError naming the path) a lone surrogate in a string or an
    object key: it has no UTF-8 form, so no database could store it. The common
    path costs one scan of the text, none at all for ASCII text.

    :param what: what ``value`` is, for the message (``value``, ``meta``).
    """
    try:
        text = dumps(value)
    except ValueError as exc:  # an int past a lowered sys.set_int_max_str_digits()
        raise SerializationError(
            f"{what} for {key!r} cannot be written as JSON: {exc}", key=key
        ) from exc
    if not text.isascii() and _SURROGATES.search(text) is not None:
        path = escape_surrogates(_surrogate_path(value, "$") or "$")
        raise SerializationError(
            f"{what} for {key!r} has a lone surrogate at {path}: a string that is not valid "
            "Unicode (e.g. text decoded with errors='surrogateescape') cannot be stored",
            key=key,
            path=path,
        )
    return text


def _refused(key: str | None, path: str, problem: str) -> SerializationError:
    """The error for a value that cannot be stored, ``{path}`` in ``problem`` naming where."""
    shown = escape_surrogates(path)
    return SerializationError(
        f"value for {key!r} " + problem.replace("{path}", shown), key=key, path=shown
    )


class Codec:
    """Turns caller values into exact JSON, refusing what JSON cannot hold.

    By default only JSON types pass (dicts with str keys, lists, tuples, str,
    int, finite float, bool, None): a ``Decimal``, ``bytes``, ``set`` or NaN is
    an error naming where it is, never a silent conversion. Register encoders
    for other types (one-way: a ``Decimal`` encoded with ``str`` reads back as
    a str)::

        Codec({Decimal: str, datetime: datetime.isoformat})

    Also refused: integers of more than :data:`MAX_INT_DIGITS` digits and values
    nested deeper than :data:`MAX_DEPTH` levels.

    :param encoders: type -> function returning a JSON value.
    """

    def __init__(self, encoders: Mapping[type, Encoder] | None = None) -> None:
        self._encoders = dict(encoders or {})

    def normalize(self, value: Any, *, key: str | None = None) -> JSON:
        """A fresh JSON copy of ``value`` (so later changes by the caller do not leak in)."""
        if type(value) is dict and all(
            type(k) is str
            and (
                type(v) in _FLAT
                or (type(v) is int and -_INT_LIMIT < v < _INT_LIMIT)
                or (type(v) is float and math.isfinite(v))
            )
            for k, v in value.items()
        ):
            return dict(value)  # the common flat record: nothing to convert or refuse
        try:
            return _plain(value, 0)  # nested plain JSON: copied without building paths
        except _NotPlain:
            return self._walk(value, "$", key, 0)  # converts, or refuses naming the path

    def _walk(self, value: Any, path: str, key: str | None, depth: int) -> JSON:
        if depth > MAX_DEPTH:
            raise _refused(key, path, f"is nested deeper than {MAX_DEPTH} levels at {{path}}")
        # Exact types first; bool is an int subclass and must stay a bool.
        if value is None or type(value) is str or type(value) is bool:
            return value
        if isinstance(value, str):  # StrEnum and other str subclasses: store the plain text
            return str.__str__(value)
        if isinstance(value, int):  # IntEnum and other int subclasses: store the number
            number = int(value)
            if not -_INT_LIMIT < number < _INT_LIMIT:
                raise _refused(
                    key,
                    path,
                    f"has an integer of more than {MAX_INT_DIGITS} digits at {{path}}, which "
                    "JSON readers refuse; store it as a str",
                )
            return number
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            raise _refused(key, path, f"has {value!r} at {{path}}; JSON has no NaN or Infinity")
        if isinstance(value, dict):
            out: dict[str, JSON] = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise _refused(
                        key,
                        path,
                        f"has a {type(k).__name__} dict key {k!r} at {{path}}; "
                        "JSON object keys are strings",
                    )
                out[k] = self._walk(v, f"{path}.{k}", key, depth + 1)
            return out
        if isinstance(value, list | tuple):
            if all(type(v) is str for v in value):  # plain text (a list of keys): kept as is
                return list(value)
            return [self._walk(v, f"{path}[{i}]", key, depth + 1) for i, v in enumerate(value)]
        encoder = self._find_encoder(type(value))
        if encoder is None:
            name = type(value).__name__
            raise _refused(
                key,
                path,
                f"has a {name} at {{path}}, which JSON cannot hold; convert it first or open "
                f"the store with codec=Codec({{{name}: ...}})",
            )
        return self._walk(encoder(value), path, key, depth + 1)

    def _find_encoder(self, cls: type) -> Encoder | None:
        for base in cls.__mro__:
            if base in self._encoders:
                return self._encoders[base]
        return None


class _NotPlain(Exception):
    """A value :func:`_plain` leaves to ``Codec._walk`` (to convert, or to refuse)."""


_NOT_PLAIN = _NotPlain()


def _plain(value: Any, depth: int) -> JSON:
    """A copy of ``value`` if it is exactly JSON (dict with str keys, list, str, bool,
    None, int within :data:`MAX_INT_DIGITS`, finite float, at most :data:`MAX_DEPTH`
    deep), as ``Codec._walk`` would return it; else raises :class:`_NotPlain`.
    Scalars inside a dict or list are taken in place (no call per value)."""
    if depth >= MAX_DEPTH:  # what is inside is past the limit: _walk says where
        if _scalar(value) and depth == MAX_DEPTH:
            return value  # type: ignore[no-any-return]
        raise _NOT_PLAIN
    kind = type(value)
    if kind is dict:
        out: dict[str, JSON] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NOT_PLAIN
            t = type(v)
            if (
                t is str
                or v is None
                or t is bool
                or (t is int and -_INT_LIMIT < v < _INT_LIMIT)
                or (t is float and math.isfinite(v))
            ):
                out[k] = v
            else:
                out[k] = _plain(v, depth + 1)
        return out
    if kind is list:
        return [v if _scalar(v) else _plain(v, depth + 1) for v in value]
    if _scalar(value):
        return value  # type: ignore[no-any-return]
    raise _NOT_PLAIN


def _scalar(value: Any) -> bool:
    """``value`` is a JSON scalar stored as it is."""
    kind = type(value)
    return (
        kind is str
        or value is None
        or kind is bool
        or (kind is int and -_INT_LIMIT < value < _INT_LIMIT)
        or (kind is float and math.isfinite(value))
    )


def loads(text: str | bytes, *, key: str | None = None, backend: str | None = None) -> JSON:
    """Parse stored JSON, turning corruption into a SerializationError."""
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except (ValueError, TypeError, RecursionError) as exc:
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
