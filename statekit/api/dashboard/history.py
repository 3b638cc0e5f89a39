"""What the key page shows of a key's history: each version's changes and numeric series.

Pure functions over :class:`~statekit.backend.Record` lists as ``store.history()``
returns them; the routes (:mod:`.routes`) read, these shape.

- :func:`timeline`: every version, newest first, with who wrote it and when, its
  description (``meta.note``, else ``meta.description``) and the fields that changed
  from the version before it (:func:`changes`).
- :func:`numeric_series`: the fields whose values are numbers (JSON numbers or decimal
  strings, as trading amounts are stored) over time, oldest first, for the charts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from statekit.backend import JSON, Record

__all__ = ["Change", "Version", "changes", "flatten", "numeric_series", "timeline"]

MAX_SERIES = 4
"""At most this many charts on a key page: the first numeric fields in key order."""


@dataclass(frozen=True, slots=True)
class Change:
    """One field that differs between two versions: ``added``, ``removed`` or ``changed``."""

    path: str
    what: str
    before: JSON
    after: JSON


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a key as the timeline shows it."""

    record: Record
    by: str | None
    description: str | None
    changes: list[Change]
    first: bool


def flatten(value: JSON, path: str = "") -> dict[str, JSON]:
    """The leaves of ``value`` by dotted path (``legs.0.amount``); a scalar is ``{"": v}``."""
    if isinstance(value, dict) and value:
        found: dict[str, JSON] = {}
        for name, item in value.items():
            found.update(flatten(item, f"{path}.{name}" if path else str(name)))
        return found
    if isinstance(value, list) and value:
        found = {}
        for index, item in enumerate(value):
            found.update(flatten(item, f"{path}.{index}" if path else str(index)))
        return found
    return {path: value}


def changes(before: JSON, after: JSON) -> list[Change]:
    """The fields that differ from ``before`` to ``after``, in path order (``None``, no
    value or a deletion, has no fields)."""
    old = {} if before is None else flatten(before)
    new = {} if after is None else flatten(after)
    found: list[Change] = []
    for path in sorted(old.keys() | new.keys()):
        if path not in old:
            found.append(Change(path, "added", None, new[path]))
        elif path not in new:
            found.append(Change(path, "removed", old[path], None))
        elif old[path] != new[path]:
            found.append(Change(path, "changed", old[path], new[path]))
    return found


def _text(meta: Mapping[str, JSON], *names: str) -> str | None:
    for name in names:
        value = meta.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def timeline(records: list[Record]) -> list[Version]:
    """``records`` (newest first, as ``store.history()`` gives them) with their changes.

    Each version is compared with the one before it. The oldest one given is marked
    ``first``: as version 1 its whole value shows as added; a later version has no diff
    there (the version before it is on an older page).
    """
    versions: list[Version] = []
    for index, record in enumerate(records):
        previous = records[index + 1] if index + 1 < len(records) else None
        first = previous is None
        if previous is not None:
            diff = changes(previous.data, record.data)
        elif record.version == 1:
            diff = changes(None, record.data)
        else:
            diff = []  # the version before it is on an older page
        versions.append(
            Version(
                record=record,
                by=_text(record.meta, "by", "user_id"),
                description=_text(record.meta, "note", "description"),
                changes=diff,
                first=first,
            )
        )
    return versions


def _number(value: JSON) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def numeric_series(records: list[Record]) -> dict[str, list[tuple[datetime, Decimal]]]:
    """Each numeric field's values over time, oldest first: the fields whose value
    changed (at most :data:`MAX_SERIES`); a deletion adds no point."""
    series: dict[str, list[tuple[datetime, Decimal]]] = {}
    for record in sorted(records, key=lambda r: r.version):
        if record.data is None:
            continue
        for path, value in flatten(record.data).items():
            number = _number(value)
            if number is not None and path:
                series.setdefault(path, []).append((record.at, number))
    # A field that never moved says nothing a chart would add to the table below it.
    kept = [path for path in sorted(series) if len({v for _, v in series[path]}) >= 2]
    return {path: series[path] for path in kept[:MAX_SERIES]}
