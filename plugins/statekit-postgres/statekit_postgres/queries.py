"""The statements PostgresBackend sends. Every one is scoped to a namespace (``$1``).

All are constant text with ``$n`` parameters (asyncpg prepares and caches them
per connection), so one call is one round trip.
"""

from __future__ import annotations

import functools

__all__ = [
    "APPEND",
    "AS_OF",
    "CHANGES",
    "CHANGES_BOUNDED",
    "COMMIT_SEQ",
    "DROP",
    "DROP_COUNTER",
    "DROP_LOCK_COUNTER",
    "DROP_LOCK_HEADS",
    "HEALTH",
    "LATEST",
    "PRUNE",
    "READ_NEWEST_FIRST",
    "READ_OLDEST_FIRST",
    "SERVER_FACTS",
    "scan_query",
]

COLUMNS = "v.key, v.version, v.kind, v.data::text, v.meta::text, v.at"
"""What every read returns; json as text, whatever codecs the connection has."""

APPEND = "SELECT versions, at FROM statekit_append($1, $2, $3, $4, $5, $6)"
"""(ns, keys, kinds, datas, metas, expects) -> the new versions (in input order) and the
batch's ``at``."""

LATEST = (
    f"SELECT {COLUMNS} FROM statekit_heads AS h "
    "JOIN statekit_versions AS v ON v.ns = h.ns AND v.key = h.key AND v.version = h.version "
    "WHERE h.ns = $1 AND h.key = ANY ($2::text[])"
)

AS_OF = (
    f"SELECT {COLUMNS} FROM unnest($2::text[]) AS k (key) "
    "JOIN statekit_versions AS v ON v.ns = $1 AND v.key = k.key "
    "AND v.version = statekit_version_at($1, k.key, $3)"
)
"""(ns, keys, at) -> the version of each key current at ``at`` (statekit_version_at)."""

_READ = (
    f"SELECT {COLUMNS} FROM statekit_versions AS v "
    "WHERE v.ns = $1 AND v.key = $2 AND v.version > $3 AND v.version < $4 "
)
READ_OLDEST_FIRST = _READ + "ORDER BY v.version LIMIT $5"
READ_NEWEST_FIRST = _READ + "ORDER BY v.version DESC LIMIT $5"

SCAN_PAGE = 500


@functools.cache
def scan_query(first: bool, bounded: bool, kind: bool) -> str:
    """One page of live heads in key order, from ``$2`` (inclusive on the first page),
    below ``$3`` when ``bounded``, of kind ``$4`` (or ``$3``) when ``kind``.

    Separate texts rather than ``$3 IS NULL OR ...``, so every variant keeps a
    tight index range on (ns, key).
    """
    where = ["h.ns = $1", "h.live", f"h.key {'>=' if first else '>'} $2"]
    if bounded:
        where.append("h.key < $3")
    if kind:
        where.append(f"h.kind = ${4 if bounded else 3}")
    return (
        f"SELECT {COLUMNS} FROM statekit_heads AS h "
        "JOIN statekit_versions AS v ON v.ns = h.ns AND v.key = h.key AND v.version = h.version "
        f"WHERE {' AND '.join(where)} ORDER BY h.key LIMIT {SCAN_PAGE}"
    )


PRUNE = (
    "WITH dropped AS ("
    " DELETE FROM statekit_versions"
    " WHERE ns = $1 AND key = $2 AND version < $3"
    " AND version < (SELECT version FROM statekit_heads WHERE ns = $1 AND key = $2)"
    " RETURNING 1"
    ") SELECT count(*) FROM dropped"
)

# drop_namespace, in one transaction:
# 1. lock the heads in key order, waiting for appends that hold them (as appends
#    lock them, so neither deadlocks the other);
# 2. lock the namespace's commit counter (created if missing): from now on no
#    append of the namespace can commit until the drop does;
# 3. delete the heads and, in the same statement and snapshot, the versions of
#    exactly those keys. Heads held by appends queued behind the counter (keys
#    created during steps 1-2) are skipped, so they stay whole, history and all.
DROP_LOCK_HEADS = (
    "SELECT count(*) FROM ("
    "SELECT 1 FROM statekit_heads WHERE ns = $1 ORDER BY key FOR UPDATE) AS locked"
)
DROP_LOCK_COUNTER = (
    "INSERT INTO statekit_namespaces AS n (ns, commit_seq) VALUES ($1, 0) "
    "ON CONFLICT (ns) DO UPDATE SET commit_seq = n.commit_seq"
)
DROP = (
    "WITH gone AS ("
    " DELETE FROM statekit_heads AS h WHERE h.ns = $1 AND h.key IN ("
    "  SELECT key FROM statekit_heads WHERE ns = $1 FOR UPDATE SKIP LOCKED)"
    " RETURNING h.key"
    "), versions AS ("
    " DELETE FROM statekit_versions AS v USING gone WHERE v.ns = $1 AND v.key = gone.key"
    ") SELECT count(*) FROM gone"
)
DROP_COUNTER = "DELETE FROM statekit_namespaces WHERE ns = $1"

COMMIT_SEQ = "SELECT commit_seq FROM statekit_namespaces WHERE ns = $1"

WATCH_PAGE = 500

_CHANGES = (
    "SELECT n.commit_seq, v.commit_seq, v.pos, v.key, v.version, v.kind, "
    "v.data::text, v.meta::text, v.at "
    "FROM statekit_namespaces AS n LEFT JOIN LATERAL ("
    " SELECT * FROM statekit_versions AS v"
    " WHERE v.ns = n.ns AND (v.commit_seq, v.pos) > ($2, $3) AND v.key >= $4{bound}"
    f" ORDER BY v.commit_seq, v.pos LIMIT {WATCH_PAGE}"
    ") AS v ON true "
    "WHERE n.ns = $1 ORDER BY v.commit_seq, v.pos"
)
CHANGES = _CHANGES.format(bound="")
"""(ns, after_seq, after_pos, low) -> the namespace's counter and the next commits' rows.

The counter and the rows come from one snapshot: when fewer than a page of rows
come back, every commit up to the counter has been seen."""
CHANGES_BOUNDED = _CHANGES.format(bound=" AND v.key < $5")

SERVER_FACTS = (
    "SELECT current_setting('server_encoding'), current_setting('server_version_num')::int, "
    "current_schema()"
)

HEALTH = (
    "SELECT current_setting('server_version'), current_setting('synchronous_commit'), "
    "current_setting('fsync'), current_setting('statement_timeout'), "
    "current_database(), current_schema(), "
    "(SELECT version FROM statekit_schema), "
    "(SELECT commit_seq FROM statekit_namespaces WHERE ns = $1)"
)
