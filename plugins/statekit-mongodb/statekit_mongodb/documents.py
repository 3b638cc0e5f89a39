"""What statekit stores in MongoDB: two collections, one document shape each.

``statekit_versions``, one document per version (the history)::

    {ns, key, v, kind, data: <JSON text> | null, meta: <JSON text>, at: <int64 µs> [, seq]}
    unique index (ns, key, v)      <- no two writers can both create version n
    index (ns, key, at)            <- as_of: one lookup
    unique index (ns, seq), partial <- one version per commit number (polling watch only)

``statekit_heads``, one document per key (the current state)::

    {ns, key, v, kind, data, meta, at, live: bool [, pending: <version document>]}
    unique index (ns, key)          <- scan and latest() read only this collection

Values are stored as **JSON text** (the very text :func:`statekit.codec.dumps`
makes), not as BSON: BSON has no integers beyond 64 bits, may reorder or refuse
keys containing ``.`` or starting with ``$``, and turns floats and ints of equal
value into one another in comparisons. JSON text reads back exactly, the same
bytes every other statekit backend stores. ``at`` is an int64 of microseconds
since the epoch: a BSON date keeps only milliseconds.

``pending`` exists only on deployments without transactions: the head is
moved first (that is the compare-and-set), carrying the new version, which is
then copied into ``statekit_versions`` and removed from the head. Whoever finds
a head still ``pending`` (its writer crashed or is slow) finishes the copy first.

``seq``, the namespace's commit number, exists only where ``watch`` polls (no
change streams, or ``watch=poll``): see :mod:`statekit_mongodb.poll`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from statekit.backend import Record, Write
from statekit.kit import Fields, from_document

__all__ = [
    "FIELDS",
    "HEADS",
    "VERSIONS",
    "create_indexes",
    "head_document",
    "to_record",
    "version_document",
]

VERSIONS = "statekit_versions"
HEADS = "statekit_heads"

NAME = "mongodb"


def version_document(namespace: str, write: Write, version: int, at: int) -> dict[str, Any]:
    """The ``statekit_versions`` document of ``write`` landing as ``version`` at ``at`` (µs)."""
    return {
        "ns": namespace,
        "key": write.key,
        "v": version,
        "kind": write.kind,
        "data": write.data_json(),
        "meta": write.meta_json(),
        "at": at,
    }


def head_document(version: Mapping[str, Any]) -> dict[str, Any]:
    """The ``statekit_heads`` fields (``$set``) of a key whose head is ``version``."""
    return {
        "ns": version["ns"],
        "key": version["key"],
        "v": version["v"],
        "kind": version["kind"],
        "data": version["data"],
        "meta": version["meta"],
        "at": version["at"],
        "live": version["data"] is not None,
    }


FIELDS = Fields(version="v", text=True)
"""A version or head document's fields, for statekit.kit's record builder."""


def to_record(doc: Mapping[str, Any]) -> Record:
    """The Record of a version or head document; SerializationError if it is unreadable."""
    return from_document(doc, FIELDS, backend=NAME)


async def create_indexes(
    versions: AsyncCollection[dict[str, Any]],
    heads: AsyncCollection[dict[str, Any]],
    *,
    sequenced: bool,
) -> None:
    """Create the indexes above (each once; creating an existing one is a no-op).

    :param sequenced: versions carry ``seq`` (a polling watch): index it too.
    """
    await versions.create_index([("ns", 1), ("key", 1), ("v", 1)], unique=True, name="ns_key_v")
    # as_of: the newest version at or before a time is one lookup.
    await versions.create_index([("ns", 1), ("key", 1), ("at", 1)], name="ns_key_at")
    if sequenced:
        # Unique: one version per number. Partial: versions without `seq` (an
        # older release, change streams) are not in it.
        await versions.create_index(
            [("ns", 1), ("seq", 1)],
            unique=True,
            name="ns_seq_unique",
            partialFilterExpression={"seq": {"$exists": True}},
        )
        # What the queries on `seq` use: SecantusDB plans no query with a
        # partial index (a real mongod may use either).
        await versions.create_index([("ns", 1), ("seq", -1)], name="ns_seq")
    await heads.create_index([("ns", 1), ("key", 1)], unique=True, name="ns_key")
