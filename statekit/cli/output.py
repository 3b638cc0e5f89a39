"""How ``statekit`` commands print: tables for people, JSON for scripts.

Tables use light rules (they fit narrow terminals and copy cleanly) and cut long
values; ``--json`` never cuts and prints times as ISO 8601 strings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from statekit.backend import Record

VALUE_WIDTH = 60
"""Values longer than this are cut in tables (``--json`` never cuts)."""


def table(*headings: str, title: str | None = None) -> Table:
    """A table for humans: light rules, so it fits narrow terminals and copies cleanly."""
    return Table(*headings, title=None if title is None else Text(title), box=box.SIMPLE_HEAD)


def json_default(value: object) -> Any:
    """What ``json.dumps`` writes for a value JSON has no type for (times as ISO 8601)."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def compact(value: Any) -> str:
    """``value`` as JSON on one line, without spaces."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=json_default)


def short(value: Any, width: int = VALUE_WIDTH) -> Text:
    """``value`` as compact JSON, cut to ``width`` characters with an ellipsis."""
    text = compact(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text)


def when(at: datetime, timespec: str = "auto") -> Text:
    """A time for tables, in UTC; to the microsecond by default, so it can be pasted
    into --as-of and name exactly that version."""
    return Text(at.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z"))


def record_json(record: Record) -> dict[str, Any]:
    """A record as ``get --json`` and ``history --json`` print it."""
    return {
        "key": record.key,
        "version": record.version,
        "kind": record.kind,
        "at": record.at.isoformat(),
        "deleted": record.deleted,
        "value": record.data,
        "meta": dict(record.meta),
    }
