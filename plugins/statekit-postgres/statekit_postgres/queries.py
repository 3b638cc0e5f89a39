"""The statements PostgresBackend sends. Every one is scoped to a namespace (``$1``).

All are constant text with ``$n`` parameters (asyncpg prepares and caches them
per connection), so one call is one round trip.
"""

from __future__ import annotations

import functools

from statekit_postgres.schema import CHANNEL, FEED, NAMESPACE_LOCK_SEED

__all__ = [
    "APPEND",
    "AS_OF",
    "CHANGED_KEYS",
    "CHANGES",
    "CHANGES_BOUNDED",
    "DROP",
    "DROP_COUNTER",
    "DROP_LOCK",
    "FEED_START",
    "HEALTH",
    "LATEST",
    "POSITION",
    "PRUNE",
    "READ_NEWEST_FIRST",
    "READ_OLDEST_FIRST",
    "SERVER_FACTS",
    "WAKE_UP",
    "XIDS_AHEAD",
    "scan_query",
]

COLUMNS = "v.key, v.version, v.kind, v.data::text, v.meta::text, v.at"
"""What every read returns; json as text, whatever codecs the connection has."""

APPEND = "SELECT versions, at FROM statekit_append($1, $2, $3, $4, $5, $6, $7, $8, $9)"
"""(ns, keys, kinds, datas, metas, expects, guard_keys, guard_versions, notify) -> the
new versions (in input order) and the batch's ``at``."""

_HEAD_VERSION = (
    "CROSS JOIN LATERAL (SELECT * FROM statekit_versions AS v "
    "WHERE v.ns = h.ns AND v.key = h.key AND v.version = h.version LIMIT 1) AS v"
)
"""Each head's version row, looked up by its whole primary key. A plain join lets the
planner, when the namespace is new to the table's statistics (estimated at one row),
match on ``ns`` alone and filter the key per pair: quadratic in the namespace's size
(a 3,000-key scan took 0.75 s instead of 30 ms until autovacuum analysed). ``LIMIT 1``
in a lateral subquery makes the lookup per head; that the feed index cannot serve it
is schema 4's (:data:`FEED`). tests/test_plans.py checks the plans."""

LATEST = (
    f"SELECT {COLUMNS} FROM unnest($2::text[]) AS k (key) "
    "CROSS JOIN LATERAL (SELECT * FROM statekit_heads AS h "
    "WHERE h.ns = $1 AND h.key = k.key LIMIT 1) AS h "
    f"{_HEAD_VERSION}"
)
"""(ns, keys) -> each key's head version. The heads too are looked up per key (lateral):
``h.key = ANY ($2)`` let the planner match a new namespace on ``ns`` alone and filter."""

AS_OF = f"SELECT {COLUMNS} FROM statekit_records_at($1, $2::text[], $3) AS v"
"""(ns, keys, at) -> the version of each key current at ``at`` (statekit_version_at), read
by its primary key inside the function, out of the planner's reach (schema version 4)."""

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
        f"{_HEAD_VERSION} "
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

# drop_namespace, in one transaction: take the namespace's advisory lock exclusively
# (statekit_append holds it shared until its commit), so no append of the namespace is
# running or can start; then delete its heads and versions.
DROP_LOCK = f"SELECT pg_advisory_xact_lock(hashtextextended($1, {NAMESPACE_LOCK_SEED}))"
DROP = (
    "WITH gone AS ("
    " DELETE FROM statekit_heads WHERE ns = $1 RETURNING key"
    "), versions AS ("
    " DELETE FROM statekit_versions WHERE ns = $1"
    ") SELECT count(*) FROM gone"
)
DROP_COUNTER = "DELETE FROM statekit_namespaces WHERE ns = $1"
"""The commit counter of schema versions 1-2, if the namespace still has one."""

WAKE_UP = f"SELECT pg_notify('{CHANNEL}', $1)"
"""(payload) -> a wake-up for the namespace's watchers, sent after commits."""

FEED_START = "SELECT txid_current_snapshot()::text"
"""The snapshot a watcher starts from: it delivers exactly the rows this one cannot see."""

WATCH_PAGE = 500

_HORIZON = (
    "coalesce(("
    " SELECT min(x) FROM txid_snapshot_xip(t.snap) AS x WHERE x % 4294967296 NOT IN ("
    "  SELECT backend_xid::text::bigint FROM pg_stat_activity"
    "  WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())"
    "), txid_snapshot_xmax(t.snap))"
)
"""The feed's horizon in the statement's snapshot: the oldest transaction still running
in this database (none: the snapshot's xmax). Every transaction below it has ended or
runs in another database, which cannot write these tables. One that the snapshot saw
running but that has ended by the time pg_stat_activity is read is not found there,
so it counts as this database's: the horizon errs low (later), never high."""

_CHANGES = (
    "SELECT s.horizon, coalesce(("
    f" SELECT xid FROM statekit_versions WHERE ns = $1 AND {FEED} ORDER BY xid DESC LIMIT 1"
    ") >= s.horizon, false), "
    "v.xid, v.commit_seq, v.pos, v.key, v.version, v.kind, v.data::text, v.meta::text, v.at "
    f"FROM (SELECT {_HORIZON} AS horizon FROM (SELECT txid_current_snapshot() AS snap) AS t) AS s "
    "LEFT JOIN LATERAL ("
    " SELECT * FROM statekit_versions AS v"
    " WHERE v.ns = $1 AND (v.xid, v.commit_seq, v.pos) > ($2, $3, $4) AND v.xid < s.horizon"
    f" AND v.{FEED}"
    " AND NOT txid_visible_in_snapshot(v.xid, $5::text::txid_snapshot) AND v.key >= $6{bound}"
    f" ORDER BY v.xid, v.commit_seq, v.pos LIMIT {WATCH_PAGE}"
    ") AS v ON true "
    "ORDER BY v.xid, v.commit_seq, v.pos"
)
CHANGES = _CHANGES.format(bound="")
"""(ns, xid, seq, pos, start snapshot, low) -> the horizon, whether rows wait above it,
and the next rows after the cursor that no transaction can still precede: those of
transactions below the horizon (:data:`_HORIZON`), less those the watcher's start
snapshot already saw. One statement, one snapshot."""
CHANGES_BOUNDED = _CHANGES.format(bound=" AND v.key < $7")

POSITION = f"SELECT {_HORIZON} FROM (SELECT txid_current_snapshot() AS snap) AS t"
"""The feed's horizon now: every transaction below it has ended, and any commit still
to come has an id at or above it. What ``position()`` hands out."""

CHANGED_KEYS = (
    "SELECT DISTINCT key FROM statekit_versions"
    f" WHERE ns = $1 AND xid >= $2 AND {FEED} AND key >= $3 AND ($4::text IS NULL OR key < $4)"
    " ORDER BY key"
)
"""(ns, horizon, low, high or NULL) -> the keys with a version written by a transaction
at or above a horizon: a range of the feed index, so in proportion to what changed."""

SERVER_FACTS = (
    "SELECT current_setting('server_encoding'), current_setting('server_version_num')::int, "
    "current_schema()"
)

XIDS_AHEAD = (
    "SELECT n.newest, txid_snapshot_xmax(txid_current_snapshot()) FROM ("
    f" SELECT xid AS newest FROM statekit_versions WHERE ns = $1 AND {FEED}"
    " ORDER BY xid DESC LIMIT 1) AS n"
    " WHERE n.newest >= txid_snapshot_xmax(txid_current_snapshot())"
)
"""(ns) -> a row (the newest stored transaction id, the cluster's next one) when the
namespace holds versions of transactions this cluster has not reached yet: rows restored
from another cluster's dump. The feed, ``position()`` and ``changed()`` compare
transaction ids, so they would be wrong there; one backward read of the feed index."""

HEALTH = (
    "SELECT current_setting('server_version'), current_setting('synchronous_commit'), "
    "current_setting('fsync'), current_setting('statement_timeout'), "
    "current_database(), current_schema(), "
    "(SELECT version FROM statekit_schema), "
    f"(SELECT xid FROM statekit_versions WHERE ns = $1 AND {FEED} ORDER BY xid DESC LIMIT 1)"
)
