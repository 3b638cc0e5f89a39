"""Rows of statekit_versions as statekit Records."""

from __future__ import annotations

from datetime import datetime

from statekit.backend import Record
from statekit.codec import loads
from statekit.errors import SerializationError

__all__ = ["to_record"]


def to_record(
    key: str, version: int, kind: str, data: str | None, meta: str, at: datetime
) -> Record:
    """One version row (columns of ``queries.COLUMNS``) as a Record; corrupt JSON is a
    SerializationError."""
    value = None if data is None else loads(data, key=key, backend="postgresql")
    meta_value = loads(meta, key=key, backend="postgresql")
    if not isinstance(meta_value, dict):
        raise SerializationError(
            f"stored meta of {key!r} is not a JSON object", key=key, backend="postgresql"
        )
    return Record(key, version, kind, value, meta_value, at)
