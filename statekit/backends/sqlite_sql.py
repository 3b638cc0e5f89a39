"""The SQLite backend's schema and statements (:mod:`statekit.backends.sqlite`).

``sk_versions`` holds every version, numbered by ``seq`` in global commit order (what
``watch`` follows); ``sk_heads`` holds each key's head. Kept apart from the backend so
the schema reads in one place.
"""

from __future__ import annotations

__all__ = [
    "AS_OF",
    "COLUMNS",
    "INSERT_VERSION",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SELECT_HEAD",
    "SELECT_HEAD_AT",
    "UPSERT_HEAD",
]

SCHEMA_VERSION = 1

# Each migration takes the schema from its index to index + 1. Never edit a shipped one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
    CREATE TABLE sk_versions (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,  -- global commit order, for watch
        key     TEXT    NOT NULL,
        version INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        data    TEXT,                               -- JSON, NULL = tombstone
        meta    TEXT    NOT NULL,
        at      INTEGER NOT NULL                    -- microseconds since the epoch, UTC
    )""",
        "CREATE UNIQUE INDEX sk_versions_key_version ON sk_versions (key, version)",
        """
    CREATE TABLE sk_heads (
        key     TEXT    PRIMARY KEY,
        version INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        live    INTEGER NOT NULL
    ) WITHOUT ROWID""",
    ),
]

SELECT_HEAD = "SELECT version, live FROM sk_heads WHERE key = ?"
"""A key's head version and liveness (what a guard checks)."""
SELECT_HEAD_AT = (
    "SELECT h.version, h.live, v.at FROM sk_heads h "
    "LEFT JOIN sk_versions v ON v.key = h.key AND v.version = h.version WHERE h.key = ?"
)
"""A key's head version, liveness and ``at`` (what an append checks and stamps after)."""
INSERT_VERSION = (
    "INSERT INTO sk_versions (key, version, kind, data, meta, at) VALUES (?, ?, ?, ?, ?, ?)"
)
UPSERT_HEAD = (
    "INSERT INTO sk_heads (key, version, kind, live) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET "
    "version = excluded.version, kind = excluded.kind, live = excluded.live"
)
COLUMNS = "key, version, kind, data, meta, at"

AS_OF = f"""WITH RECURSIVE search (low, high) AS (
    VALUES (
        (SELECT version FROM sk_versions WHERE key = ?1 ORDER BY version LIMIT 1),
        (SELECT version + 1 FROM sk_versions WHERE key = ?1 ORDER BY version DESC LIMIT 1)
    )
    UNION ALL
    SELECT CASE WHEN v.at <= ?2 THEN v.version ELSE s.low END,
           CASE WHEN v.at <= ?2 THEN s.high ELSE (s.low + s.high) / 2 END
    FROM search AS s LEFT JOIN sk_versions AS v ON v.key = ?1 AND v.version = (
        SELECT version FROM sk_versions WHERE key = ?1
        AND version >= (s.low + s.high) / 2 AND version < s.high ORDER BY version LIMIT 1)
    WHERE s.high - s.low > 1
)
SELECT {COLUMNS} FROM sk_versions
WHERE key = ?1 AND version = (SELECT low FROM search WHERE high - low <= 1) AND at <= ?2"""
"""(key, at µs) -> the newest version with at <= at, or no row.

A binary search over the (key, version) index, run by SQLite itself: ``at`` rises
with the version, so ``low`` (at or before the time) and ``high`` (every version
from it on is later, or absent) close in on it in about log2(versions) steps, each
probing the first version in [middle, high), so gaps are fine. When even the
oldest version is later, the search ends on it and the last condition drops it.
"""
