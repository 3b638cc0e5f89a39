"""Rows of statekit_versions as statekit Records (statekit.kit's record builder)."""

from __future__ import annotations

from datetime import datetime

from statekit.backend import Record
from statekit.kit import record

__all__ = ["to_record"]


def to_record(
    key: str, version: int, kind: str, data: str | None, meta: str, at: datetime
) -> Record:
    """One version row (columns of ``queries.COLUMNS``) as a Record; corrupt JSON is a
    SerializationError."""
    return record(key, version, kind, data, meta, at, backend="postgresql")
