"""Stored versions to :class:`~statekit.backend.Record` and back: the one record builder.

A backend stores a version as six fields: key, version, kind, data (``None`` for a
tombstone), meta and ``at``. A table row keeps data and meta as JSON text
(:func:`record`); a document store keeps one object per version, its data and
meta as JSON text or already parsed (:func:`from_document`, with the document's
field names in :class:`Fields`). Either way the fields are checked the same way
(:func:`decoded`): what is not a statekit version is a SerializationError naming
the key and the backend, never a TypeError or a wrong Record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from statekit.backend import JSON, Record, Write, dumps
from statekit.codec import from_micros, loads, to_micros
from statekit.errors import SerializationError

__all__ = [
    "Fields",
    "appended",
    "decoded",
    "from_document",
    "from_micros",
    "record",
    "stored",
    "to_micros",
    "utc",
]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else value


def utc(at: datetime | int | str) -> datetime:
    """``at`` as an aware UTC datetime: from microseconds since the epoch, from ISO 8601
    text, or from a datetime (a naive one is taken as UTC, as many drivers return them)."""
    if isinstance(at, int):
        return from_micros(at)
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _bad(key: str | None, problem: str, backend: str, where: str) -> SerializationError:
    prefix = f"{where}: " if where else ""
    return SerializationError(
        f"{prefix}stored version of {key!r} is not a statekit record: {problem}",
        key=key,
        backend=backend,
    )


def decoded(
    key: str,
    version: object,
    kind: object,
    data: JSON,
    meta: object,
    at: object,
    *,
    backend: str,
    where: str = "",
) -> Record:
    """The Record of one stored version whose data and meta are parsed JSON.

    ``version`` must be an integer, ``kind`` a string, ``meta`` an object and ``at``
    microseconds, ISO 8601 text or a datetime; otherwise SerializationError naming the
    key, the backend and (``where``: a file, a collection) where it was read.
    """
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(key, "its version is not an integer", backend, where)
    if not isinstance(kind, str):
        raise _bad(key, "its kind is not a string", backend, where)
    if not isinstance(meta, dict):
        raise _bad(key, "its meta is not a JSON object", backend, where)
    if isinstance(at, bool) or not isinstance(at, int | str | datetime):
        raise _bad(key, "its time is not microseconds or ISO 8601 text", backend, where)
    try:
        # int(): a driver's own integer type (BSON's Int64) becomes a plain int.
        return Record(
            key, int(version), kind, data, meta, utc(int(at) if isinstance(at, int) else at)
        )
    except (ValueError, OverflowError) as exc:
        raise _bad(key, f"its time {at!r:.40} is out of range ({exc})", backend, where) from None


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
    """The Record of one stored row, data and meta kept as JSON text.

    Text columns may come back as ``bytes`` (a binary column); ``at`` as
    microseconds or a datetime. Corrupt JSON, or fields that are not a version's
    (:func:`decoded`), are a SerializationError naming the key and the backend.
    """
    name = _text(key)
    value = None if data is None else loads(data, key=name, backend=backend)
    extra = {} if meta is None else loads(meta, key=name, backend=backend)
    return decoded(name, version, _text(kind), value, extra, at, backend=backend)


@dataclass(frozen=True, slots=True)
class Fields:
    """How a document store names a version's fields, and how it keeps data and meta.

    :param text: data and meta are JSON text (what :func:`statekit.codec.dumps` made);
        False: they are part of the document, already parsed.
    """

    key: str = "key"
    version: str = "version"
    kind: str = "kind"
    data: str = "data"
    meta: str = "meta"
    at: str = "at"
    text: bool = False


def from_document(
    doc: object,
    fields: Fields = Fields(),
    *,
    backend: str,
    key: str | None = None,
    where: str = "",
) -> Record:
    """The Record of one stored document (a Redis record's JSON, a MongoDB document, a
    line of a journal); SerializationError when it is not a version (:func:`decoded`).

    :param fields: the document's field names (every one must be there).
    :param key: the key, when the document does not hold it (it is where it is stored).
    :param where: where the document was read, for the message of a bad one.
    """
    if not isinstance(doc, Mapping):
        raise _bad(key, "it is not a JSON object", backend, where)
    name = key if key is not None else doc.get(fields.key)
    if not isinstance(name, str):
        raise _bad(None, f"its {fields.key!r} is not a string", backend, where)
    for field in (fields.version, fields.kind, fields.data, fields.meta, fields.at):
        if field not in doc:
            raise _bad(name, f"it has no {field!r}", backend, where)
    data, meta = doc[fields.data], doc[fields.meta]
    if fields.text:
        if not isinstance(meta, str | bytes) or not isinstance(data, str | bytes | None):
            raise _bad(name, "its data or meta is not JSON text", backend, where)
        data = None if data is None else loads(data, key=name, backend=backend)
        meta = loads(meta, key=name, backend=backend)
    return decoded(
        name, doc[fields.version], doc[fields.kind], data, meta, doc[fields.at],
        backend=backend, where=where,
    )  # fmt: skip


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
