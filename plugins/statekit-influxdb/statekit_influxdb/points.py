"""The data model: one statekit version is one InfluxDB point.

::

    statekit,ns=<namespace>,key=<key> version=3i,kind="position",meta="{}",data="{...}",
        deleted=false <time>              (one line)

- **Series = (measurement, ns, key)**: one series per key, so cardinality is the
  number of keys, not of versions.
- **Fields**: ``version`` (integer), ``kind``, ``data`` (the value as JSON text;
  absent on a tombstone), ``meta`` (JSON text), ``deleted`` (boolean).
- **Time**: nanoseconds, ``at`` in microseconds x 1000 plus ``version % 1000``. Two
  versions of one key never share a timestamp (points with the same series and time
  *merge*), even when they carry the same ``at``; ``at`` reads back exactly
  (``time // 1000``); dashboards see the write's time to the microsecond. Writes are
  sent with ``precision=n``, never ``precision=us``, which InfluxDB 1.6 reads as ns.
- **The key tag**: tag values cannot hold a backslash portably (1.x keeps ``\\\\``
  as two characters, 3.x reads it as one), so ``%`` and ``\\`` in a key are written
  ``%25`` and ``%5C``; every other character is written as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from statekit.backend import Record
from statekit.errors import SerializationError
from statekit.kit import record, stored

__all__ = [
    "FIELDS",
    "SUB_MICRO",
    "decode_key",
    "encode_key",
    "line",
    "point_time",
    "record_from_row",
    "record_line",
]

FIELDS = ("version", "kind", "data", "meta", "deleted")
"""The fields a query selects, in the order :func:`record_from_row` reads them."""
SUB_MICRO = 1000
"""Versions of one key that can share one microsecond without sharing a timestamp."""

_KEY_ESCAPES = re.compile(r"[%\\]")
_KEY_UNESCAPES = re.compile(r"%(25|5C)")
_TAG_SPECIAL = re.compile(r"[,= ]")


def encode_key(key: str) -> str:
    """The key tag's value for ``key`` (``%`` -> ``%25``, ``\\`` -> ``%5C``)."""
    if "%" not in key and "\\" not in key:
        return key
    return _KEY_ESCAPES.sub(lambda m: "%25" if m.group() == "%" else "%5C", key)


def decode_key(tag: str) -> str:
    """The key a key tag's value stands for (the inverse of :func:`encode_key`)."""
    if "%" not in tag:
        return tag
    return _KEY_UNESCAPES.sub(lambda m: "%" if m.group(1) == "25" else "\\", tag)


def _tag(value: str) -> str:
    if _TAG_SPECIAL.search(value) is None:  # the common key: nothing to escape
        return value
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _string(value: str) -> str:
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    return '"' + value.replace('"', '\\"') + '"'


def point_time(micros: int, version: int) -> int:
    """The point's timestamp (ns) of ``version`` written at ``micros`` (µs since the epoch)."""
    return micros * 1000 + version % SUB_MICRO


def line(
    head: str,
    key: str,
    version: int,
    kind: str,
    data: str | None,
    meta: str,
    micros: int,
) -> str:
    """One point in line protocol. ``head`` is ``<measurement>,ns=<namespace>``."""
    fields = f"version={version}i,kind={_string(kind)},meta={_string(meta)},"
    if data is None:
        fields += "deleted=true"
    else:
        fields += f"data={_string(data)},deleted=false"
    return f"{head},key={_tag(encode_key(key))} {fields} {point_time(micros, version)}"


def record_line(head: str, record: Record) -> str:
    """A stored record as a point, exactly (what ``replicate`` writes)."""
    return line(head, *stored(record))


def record_from_row(key: str, row: Sequence[Any], *, backend: str) -> Record:
    """The record of one result row ``[time, *FIELDS]`` (time in ns) of ``key``."""
    try:
        time_ns, version, kind, data, meta, _deleted = row
        micros = int(time_ns) // 1000
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"a stored point of {key!r} is not a statekit version: {row!r:.200}",
            key=key,
            backend=backend,
        ) from exc
    return record(key, version, kind, data, meta or "{}", micros, backend=backend)
