"""The text of a stored version: one compact JSON object, also one JSONL line.

``{"key":…,"version":3,"kind":"position","at":"2025-01-02T03:04:05.123456+00:00","meta":{…},"data":…}``

The same text is a record of a journal line, a line of a key's history file and,
pretty-printed, the key's head file. ``at`` is ISO 8601 UTC with microseconds.
Reading one back is statekit.kit's record builder (:func:`statekit.kit.from_document`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from statekit.backend import Record, Write, dumps
from statekit.codec import from_micros, to_micros
from statekit.errors import SerializationError
from statekit.kit import from_document, stored

__all__ = ["Entry", "at_text", "decode", "encode_record", "encode_write", "entry_of", "pretty"]

_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Entry:
    """One version kept as its stored text; decoded afresh for every caller.

    :param version: the version.
    :param live: False for a tombstone.
    :param kind: the kind (scan filters on it without decoding).
    :param text: the record's compact JSON text.
    :param at: its ``at`` in microseconds (the next version's must be later).
    """

    version: int
    live: bool
    kind: str
    text: str
    at: int


def at_text(at: datetime) -> str:
    """``at`` as ISO 8601 UTC with microseconds."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def encode_write(write: Write, version: int, at: int) -> Entry:
    """The entry of a write landing as ``version`` at ``at`` (µs)."""
    data = write.data_json()
    text = (
        f'{{"key":{dumps(write.key)},"version":{version},"kind":{dumps(write.kind)},'
        f'"at":"{at_text(from_micros(at))}","meta":{write.meta_json()},'
        f'"data":{"null" if data is None else data}}}'
    )
    return Entry(version, data is not None, write.kind, text, at)


def encode_record(record: Record) -> Entry:
    """The entry of a record given whole (replicate)."""
    key, version, kind, data, meta, at = stored(record)
    text = (
        f'{{"key":{dumps(key)},"version":{version},"kind":{dumps(kind)},'
        f'"at":"{at_text(record.at)}","meta":{meta},"data":{"null" if data is None else data}}}'
    )
    return Entry(version, data is not None, kind, text, at)


def _parse(text: str, where: str) -> Any:
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise SerializationError(
            f"{where}: stored record is not valid JSON: {exc}", backend="file"
        ) from exc


def decode(text: str, where: str) -> Record:
    """A fresh :class:`Record` of a record text (statekit.kit's record builder checks it)."""
    return from_document(_parse(text, where), backend="file", where=where)


def entry_of(obj: Mapping[str, Any], where: str) -> tuple[str, Entry]:
    """``(key, entry)`` of a parsed record object (from a journal line)."""
    record = from_document(obj, backend="file", where=where)
    text = dumps(dict(obj))  # re-encoded once: entries hold text, never shared objects
    return record.key, Entry(
        record.version, not record.deleted, record.kind, text, to_micros(record.at)
    )


def pretty(text: str) -> str:
    """A record text indented for people (the head files)."""
    return json.dumps(json.loads(text), ensure_ascii=False, indent=2) + "\n"
