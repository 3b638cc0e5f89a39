"""The legacy state: the values a bot hands over and the JSON files it left behind.

**Values** (:func:`legacy_value`). The legacy ``TradingStateManager`` wrote its
dicts with ``json.dump``; statekit stores them as JSON too, exactly as given,
with one defined rule for what JSON cannot hold:

- ``datetime``, ``date`` and ``time`` become their ISO 8601 text (``isoformat()``,
  naive ones stay naive);
- ``Decimal`` becomes its exact text (``"1.0985"``);
- tuples become lists; numpy scalars become the Python number they hold;
- dict keys that are ``int``, ``float``, ``bool`` or ``None`` become text the way
  ``json.dump`` turns them (``1`` → ``"1"``, ``True`` → ``"true"``);
- NaN and infinities (float or Decimal), other types (sets, bytes, objects),
  a field repeated in a JSON object and nesting deeper than 200 levels (or a
  value that contains itself) are refused: :class:`ValidationError` naming
  where the value is (``active_positions.EURUSD.pnl``). What the store itself
  refuses (a lone surrogate, an integer of more than 4,300 digits) fails the
  item with the store's error.

So a state made of JSON types reads back equal to what was saved; a
``datetime`` reads back as its ISO text.

**Files** (:func:`read_legacy_file`). A legacy state file is one JSON object::

    {"active_positions": {"EURUSD": {...}, ...},   (or "positions")
     "pair_states":      {"EURUSD": {...}, ...},
     "portfolio_data":   {...},                     (or "portfolio"; optional)
     "timestamp":        "2024-05-01T12:00:00"}     (or "last_updated"; optional)

Each position, pair state and the portfolio is one *item*. Every problem is
one :class:`Failure` naming the item and the reason, and the other items are
still read: malformed, truncated or too deeply nested JSON (the whole file
fails), a top level
that is not an object, an unknown top-level field, a section or item that is
not an object, a symbol given twice (which value is right is unknown, so
neither is taken), a value :func:`legacy_value` refuses.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from statekit.backend import JSON
from statekit.codec import MAX_DEPTH, escape_surrogates
from statekit.errors import ValidationError

__all__ = [
    "FILE_ITEM",
    "PAIR_STATE_FIELDS",
    "PORTFOLIO_FIELDS",
    "POSITION_FIELDS",
    "TIMESTAMP_FIELDS",
    "Failure",
    "LegacyFile",
    "legacy_object",
    "legacy_value",
    "read_legacy_file",
]

POSITION_FIELDS = ("active_positions", "positions")
"""Top-level names of the positions section, preferred first."""
PAIR_STATE_FIELDS = ("pair_states",)
PORTFOLIO_FIELDS = ("portfolio_data", "portfolio")
TIMESTAMP_FIELDS = ("timestamp", "last_updated")
FILE_ITEM = "(file)"
"""The item name of a failure that concerns the whole file."""
_KNOWN_FIELDS = frozenset(POSITION_FIELDS + PAIR_STATE_FIELDS + PORTFOLIO_FIELDS + TIMESTAMP_FIELDS)


class _Object(dict[str, Any]):
    """A JSON object as parsed, remembering the names it held more than once."""

    duplicates: list[str]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _Object:
        obj = cls()
        obj.duplicates = []
        for name, value in pairs:
            if name in obj and name not in obj.duplicates:
                obj.duplicates.append(name)
            obj[name] = value
        return obj


def _json_key(key: object, where: str) -> str:
    # The keys json.dump accepts, turned into text the way it does.
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float) and math.isfinite(key):
        return repr(float(key))
    raise ValidationError(
        f"{where}: a key {key!r} ({type(key).__name__}) cannot be a JSON object key",
        reason="bad key",
    )


def legacy_value(value: Any, where: str = "$") -> JSON:
    """``value`` as the JSON statekit stores, by the rule in the module docstring.

    :param where: where the value is, for the error (``active_positions.EURUSD``).
    :raises ValidationError: the value holds NaN, an infinity, a repeated field
        or a type JSON cannot hold, or nests (or refers to itself) deeper than
        statekit stores; ``reason`` says which.
    """
    return _legacy_value(value, where, 0)


def _legacy_value(value: Any, where: str, depth: int) -> JSON:
    if depth > MAX_DEPTH:
        raise ValidationError(
            f"{escape_surrogates(where)}: nested deeper than {MAX_DEPTH} levels "
            "(or a value that contains itself)",
            reason="too deep",
        )
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a StrEnum is stored as its text
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(
                f"{where}: {value!r} is not a number JSON can hold (NaN or infinity)",
                reason="not finite",
            )
        return float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationError(
                f"{where}: Decimal {value} is not a number JSON can hold (NaN or infinity)",
                reason="not finite",
            )
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict):
        duplicates = getattr(value, "duplicates", None)
        if duplicates:
            raise ValidationError(
                f"{where}: field {duplicates[0]!r} appears more than once",
                reason="duplicate field",
            )
        out: dict[str, JSON] = {}
        for key, item in value.items():
            name = _json_key(key, where)
            if name in out:
                raise ValidationError(
                    f"{where}: two keys both become {name!r} in JSON", reason="duplicate field"
                )
            out[name] = _legacy_value(item, f"{where}.{name}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_legacy_value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if type(value).__module__ == "numpy" and callable(getattr(value, "item", None)):
        return _legacy_value(value.item(), where, depth)  # numpy.float64, numpy.int64...
    raise ValidationError(
        f"{where}: a {type(value).__name__} is not something JSON can hold; "
        "convert it to a str, number, list or dict first",
        reason="unsupported type",
    )


def legacy_object(value: Any, where: str) -> dict[str, JSON]:
    """``value`` as a JSON object: :func:`legacy_value` of a dict.

    :raises ValidationError: it is not a dict (``reason="not an object"``), or
        :func:`legacy_value` refuses it.
    """
    if not isinstance(value, dict):
        raise ValidationError(
            f"{where}: must be a JSON object (dict), not {_type_name(value)}",
            reason="not an object",
        )
    if type(value) is dict and all(
        type(k) is str and (type(v) in _PLAIN or (type(v) is float and math.isfinite(v)))
        for k, v in value.items()
    ):
        return dict(value)  # the common flat item: nothing to convert or refuse
    data = legacy_value(value, where)
    assert isinstance(data, dict)
    return data


_PLAIN = frozenset({str, int, bool, type(None)})


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    return "number" if isinstance(value, int | float) else type(value).__name__


@dataclass(frozen=True, slots=True)
class Failure:
    """One item that was not migrated (or does not match), and why."""

    item: str
    reason: str

    def __post_init__(self) -> None:
        # A legacy file may name an item with a lone surrogate (JSON "\ud800"); the
        # report is printed and stored, so it names the item written out.
        for name in ("item", "reason"):
            object.__setattr__(self, name, escape_surrogates(getattr(self, name)))

    def as_dict(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason}


@dataclass
class LegacyFile:
    """A legacy state file as read: its valid items, and a :class:`Failure` per bad one.

    A section is ``None`` when the file does not have it (migration then leaves
    that section of the store alone); ``{}`` when the file has it empty.
    """

    path: Path
    sha256: str = ""
    positions: dict[str, dict[str, JSON]] | None = None
    pair_states: dict[str, dict[str, JSON]] | None = None
    portfolio: dict[str, JSON] | None = None
    timestamp: str | None = None
    failures: list[Failure] = field(default_factory=list)
    failed_positions: set[str] = field(default_factory=set)
    failed_pair_states: set[str] = field(default_factory=set)
    unreadable: bool = False
    """The file as a whole could not be read as a JSON object: nothing in it is usable."""

    @property
    def item_count(self) -> int:
        """Valid items: positions, pair states and the portfolio."""
        return (
            len(self.positions or {})
            + len(self.pair_states or {})
            + (1 if self.portfolio is not None else 0)
        )


def read_legacy_file(path: str | os.PathLike[str]) -> LegacyFile:
    """Read a legacy state file (format: the module docstring). Never raises for bad input.

    Nothing is written: the file is only read.
    """
    path = Path(path)
    result = LegacyFile(path)

    def fail(item: str, reason: str) -> None:
        result.failures.append(Failure(item, reason))
        if item == FILE_ITEM:
            result.unreadable = True

    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(FILE_ITEM, f"cannot read {path}: {exc.strerror or exc}")
        return result
    result.sha256 = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(FILE_ITEM, f"not UTF-8 text (byte {exc.start})")
        return result
    if not text.strip():
        fail(FILE_ITEM, "the file is empty")
        return result
    try:
        top = json.loads(text, object_pairs_hook=_Object.from_pairs)
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(text.rstrip())
        hint = " (the file ends too early: truncated?)" if truncated else ""
        fail(FILE_ITEM, f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}{hint}")
        return result
    except RecursionError:
        fail(FILE_ITEM, "arrays or objects are nested too deeply to read")
        return result
    if not isinstance(top, dict):
        fail(FILE_ITEM, f"the top level must be a JSON object, not {_type_name(top)}")
        return result
    for name in getattr(top, "duplicates", []):
        fail(name, f"top-level field {name!r} appears more than once; the last one was used")
    for name in top:
        if name not in _KNOWN_FIELDS:
            known = ", ".join(sorted(_KNOWN_FIELDS))
            fail(name, f"unknown top-level field, not migrated (known fields: {known})")

    def first(names: tuple[str, ...]) -> tuple[str, Any] | None:
        present = [n for n in names if n in top]
        for extra in present[1:]:
            fail(extra, f"{present[0]!r} and {extra!r} both given; {extra!r} was not migrated")
        return (present[0], top[present[0]]) if present else None

    positions = first(POSITION_FIELDS)
    if positions is not None:
        result.positions = _section(positions[0], positions[1], fail, result.failed_positions)
    pairs = first(PAIR_STATE_FIELDS)
    if pairs is not None:
        result.pair_states = _section(pairs[0], pairs[1], fail, result.failed_pair_states)
    portfolio = first(PORTFOLIO_FIELDS)
    if portfolio is not None and portfolio[1] is not None:
        try:
            result.portfolio = legacy_object(portfolio[1], portfolio[0])
        except ValidationError as exc:
            fail(portfolio[0], str(exc).removeprefix(f"{portfolio[0]}: "))
    stamp = first(TIMESTAMP_FIELDS)
    if stamp is not None:
        if isinstance(stamp[1], str):
            result.timestamp = stamp[1]
        else:
            fail(stamp[0], f"must be a string (ISO 8601 time), not {_type_name(stamp[1])}")
    return result


def _section(
    name: str, value: Any, fail: Any, failed: set[str]
) -> dict[str, dict[str, JSON]] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(name, f"must be a JSON object mapping a symbol to its data, not {_type_name(value)}")
        return None
    items: dict[str, dict[str, JSON]] = {}
    duplicates = set(getattr(value, "duplicates", []))
    for symbol, data in value.items():
        where = f"{name}.{symbol}"
        if symbol in duplicates:
            fail(where, f"symbol {symbol!r} appears more than once; which one is right is unknown")
            failed.add(symbol)
            continue
        if not symbol:
            fail(where, "empty symbol")
            continue
        try:
            items[symbol] = legacy_object(data, where)
        except ValidationError as exc:
            fail(where, str(exc).removeprefix(f"{where}: "))
            failed.add(symbol)
    return items
