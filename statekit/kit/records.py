"""Rows to :class:`~statekit.backend.Record` and back: the one record builder.

A backend stores a version as a row (or a document) of six fields: key, version,
kind, data as JSON text (``None`` for a tombstone), meta as JSON text, and ``at``.
These helpers turn such a row into a ``Record`` and a ``Write`` into row values,
the same way for every backend: bytes or text, microseconds or ``datetime``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from statekit.backend import Record, Write, dumps
from statekit.codec import from_micros, loads, to_micros
from statekit.errors import SerializationError

__all__ = ["appended", "from_micros", "record", "stored", "to_micros", "utc"]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else value


def utc(at: datetime | int) -> datetime:
    """``at`` as an aware UTC datetime: from microseconds since the epoch, or from a
    datetime (a naive one is taken as UTC, as many drivers return them)."""
    if isinstance(at, int):
        return from_micros(at)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def record(
    key: str | bytes,
    version: int,
    kind: str | bytes,
    data: str | bytes | None,
    meta: str | bytes | None,
    at: datetime | int,
    *,
    backend: str,
) -> Record:
    """The Record of one stored row.

    Text columns may come back as ``bytes`` (a binary column); ``at`` as
    microseconds or a datetime. Corrupt JSON, or meta that is not an object, is a
    SerializationError naming the key and the backend.
    """
    name = _text(key)
    value = None if data is None else loads(data, key=name, backend=backend)
    extra = {} if meta is None else loads(meta, key=name, backend=backend)
    if not isinstance(extra, dict):
        raise SerializationError(
            f"stored meta of {name!r} is not a JSON object", key=name, backend=backend
        )
    return Record(name, int(version), _text(kind), value, extra, utc(at))


def appended(writes: Sequence[Write], versions: Sequence[int], at: datetime) -> list[Record]:
    """The records an append returns: one per write, with its new version and the batch's
    ``at``, in the order of ``writes``."""
    return [
        Record(w.key, version, w.kind, w.data, dict(w.meta), at)
        for w, version in zip(writes, versions, strict=True)
    ]


def stored(rec: Record) -> tuple[str, int, str, str | None, str, int]:
    """``(key, version, kind, data JSON, meta JSON, at µs)`` of a record to store as it is
    (what :meth:`~statekit.backend.Backend.replicate` writes)."""
    data = None if rec.data is None else dumps(rec.data)
    return rec.key, rec.version, rec.kind, data, dumps(dict(rec.meta)), to_micros(rec.at)
