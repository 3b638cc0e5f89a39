"""statekit's tables and the ``statekit_append`` function, created and upgraded on open.

The commit feed (what ``watch`` reads) is ordered by the writing transaction's id,
``txid_current()``, stored on every version row, then ``pos`` in the batch; there is no
per-namespace counter row, so appends to different keys of one namespace do not queue
on each other. A reader consumes only rows whose transaction id is below the horizon
of its snapshot: the oldest transaction it saw running in this database
(statekit_postgres.queries): no transaction below it can still write here, so a
position once passed never gains a row (no gaps; a long write transaction in the
database holds the feed back until it ends).
``statekit_append`` takes advisory locks on its keys *before* its first write, so a
writer that waited for another's key is given a larger transaction id: commits that
touch a common key come in commit order, and each key's versions in version order.
Rows written before schema version 3 have xid 0 and keep their ``commit_seq`` order.

Each entry of :data:`MIGRATIONS` takes the schema from its index to index + 1
and is never edited once shipped: a change is a new entry. :func:`migrate`
applies the missing ones in one transaction that first takes a transaction-scoped
advisory lock, so processes opening a fresh database at the same moment migrate
one after the other; the others then find the work done.
"""

from __future__ import annotations

from typing import Any

from statekit.errors import BackendError

__all__ = ["CHANNEL", "CONFLICT_SQLSTATE", "MIGRATIONS", "SCHEMA_VERSION", "migrate"]

CHANNEL = "statekit"
"""The LISTEN/NOTIFY channel; payloads are ``{"ns": namespace}``: a wake-up, sent by the
writing client after its commits (statekit_postgres.wakeups), at most one per interval."""

NAMESPACE_LOCK_SEED = 29547
"""hashtextextended(ns, seed): the namespace's advisory lock, shared by statekit_append
(exclusive for a batch of more than 32 keys) and exclusive for drop_namespace. Each key's
lock is hashtextextended(ns || '/' || key, seed + 1)."""

CONFLICT_SQLSTATE = "SK409"
"""What ``statekit_append`` raises when an expect fails; DETAIL is JSON
``{"key", "expected", "actual", "deleted"}``."""

MIGRATION_LOCK = int.from_bytes(b"statekit", "big")
"""pg_advisory_xact_lock key taken while migrating ("statekit" as a big-endian int64)."""

# The version bookkeeping itself, created before anything else (idempotent).
SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS statekit_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   integer NOT NULL
)"""

APPEND_FUNCTION_V1 = r"""
CREATE FUNCTION statekit_append(
    p_ns      text,
    p_keys    text[],
    p_kinds   text[],
    p_datas   text[],      -- JSON text; NULL = tombstone
    p_metas   text[],      -- JSON text
    p_expects bigint[],    -- -1 = ANY, 0 = no live value, n = head must be n
    p_at      timestamptz
) RETURNS bigint[]         -- the new versions, in the order of p_keys
LANGUAGE plpgsql AS $fn$
DECLARE
    v_versions  bigint[];
    v_prev_live boolean[];
    v_seq       bigint;
BEGIN
    -- 1. Move every head on by one, in key order: the upsert locks each head row
    --    (a new key gets one) in that order, so concurrent batches cannot deadlock.
    --    prev_live keeps what the head was, for the expect check.
    WITH w AS (
        SELECT * FROM unnest(p_keys, p_kinds, p_datas) WITH ORDINALITY AS w (key, kind, data, ord)
    ), moved AS (
        INSERT INTO statekit_heads AS h (ns, key, version, kind, live, prev_live)
        SELECT p_ns, w.key, 1, w.kind, w.data IS NOT NULL, false
        FROM w ORDER BY w.key COLLATE "C"
        ON CONFLICT (ns, key) DO UPDATE
        SET version = h.version + 1, kind = excluded.kind, live = excluded.live,
            prev_live = h.live
        RETURNING h.key, h.version, h.prev_live
    )
    SELECT array_agg(moved.version ORDER BY w.ord), array_agg(moved.prev_live ORDER BY w.ord)
    INTO v_versions, v_prev_live
    FROM w JOIN moved ON moved.key = w.key;

    -- 2. Check every expect against the head as it was (version - 1, prev_live), with
    --    the rule of statekit.backend.check_expect. The first failure, in input
    --    order, raises: the whole statement rolls back, heads included.
    IF NOT (-1 = ALL (p_expects)) THEN
        FOR i IN 1 .. cardinality(p_keys) LOOP
            IF p_expects[i] <> -1
               AND p_expects[i] <> v_versions[i] - 1
               AND NOT (p_expects[i] = 0 AND NOT v_prev_live[i]) THEN
                RAISE EXCEPTION USING
                    ERRCODE = 'SK409',
                    MESSAGE = 'statekit: expect failed',
                    DETAIL = json_build_object(
                        'key', p_keys[i], 'expected', p_expects[i],
                        'actual', v_versions[i] - 1, 'deleted', NOT v_prev_live[i])::text;
            END IF;
        END LOOP;
    END IF;

    -- 3. The namespace's commit number, taken after the heads: its row lock is held
    --    until commit, so numbers are handed out in commit order (watch relies on it).
    INSERT INTO statekit_namespaces AS n (ns, commit_seq) VALUES (p_ns, 1)
    ON CONFLICT (ns) DO UPDATE SET commit_seq = n.commit_seq + 1
    RETURNING n.commit_seq INTO v_seq;

    -- 4. One version row per write; pos keeps the batch's order for watchers.
    INSERT INTO statekit_versions (ns, key, version, kind, data, meta, at, commit_seq, pos)
    SELECT p_ns, w.key, w.version, w.kind, w.data::json, w.meta::json, p_at, v_seq, w.ord
    FROM unnest(p_keys, v_versions, p_kinds, p_datas, p_metas) WITH ORDINALITY
         AS w (key, version, kind, data, meta, ord);

    PERFORM pg_notify('statekit', json_build_object('ns', p_ns, 'seq', v_seq)::text);
    RETURN v_versions;
END
$fn$"""

APPEND_FUNCTION_V2 = r"""
CREATE FUNCTION statekit_append(
    p_ns      text,
    p_keys    text[],
    p_kinds   text[],
    p_datas   text[],      -- JSON text; NULL = tombstone
    p_metas   text[],      -- JSON text
    p_expects bigint[],    -- -1 = ANY, 0 = no live value, n = head must be n
    OUT versions bigint[], -- the new versions, in the order of p_keys
    OUT at timestamptz     -- the batch's time, stamped on every version
)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_prev_live boolean[];
    v_seq       bigint;
BEGIN
    -- 1. Move every head on by one, in key order: the upsert locks each head row
    --    (a new key gets one) in that order, so concurrent batches cannot deadlock.
    --    prev_live keeps what the head was, for the expect check.
    WITH w AS (
        SELECT * FROM unnest(p_keys, p_kinds, p_datas) WITH ORDINALITY AS w (key, kind, data, ord)
    ), moved AS (
        INSERT INTO statekit_heads AS h (ns, key, version, kind, live, prev_live)
        SELECT p_ns, w.key, 1, w.kind, w.data IS NOT NULL, false
        FROM w ORDER BY w.key COLLATE "C"
        ON CONFLICT (ns, key) DO UPDATE
        SET version = h.version + 1, kind = excluded.kind, live = excluded.live,
            prev_live = h.live
        RETURNING h.key, h.version, h.prev_live
    )
    SELECT array_agg(moved.version ORDER BY w.ord), array_agg(moved.prev_live ORDER BY w.ord)
    INTO versions, v_prev_live
    FROM w JOIN moved ON moved.key = w.key;

    -- 2. Check every expect against the head as it was (version - 1, prev_live), with
    --    the rule of statekit.backend.check_expect. The first failure, in input
    --    order, raises: the whole statement rolls back, heads included.
    IF NOT (-1 = ALL (p_expects)) THEN
        FOR i IN 1 .. cardinality(p_keys) LOOP
            IF p_expects[i] <> -1
               AND p_expects[i] <> versions[i] - 1
               AND NOT (p_expects[i] = 0 AND NOT v_prev_live[i]) THEN
                RAISE EXCEPTION USING
                    ERRCODE = 'SK409',
                    MESSAGE = 'statekit: expect failed',
                    DETAIL = json_build_object(
                        'key', p_keys[i], 'expected', p_expects[i],
                        'actual', versions[i] - 1, 'deleted', NOT v_prev_live[i])::text;
            END IF;
        END LOOP;
    END IF;

    -- 3. The batch's time, read now that its heads are locked: the server's clock,
    --    past the previous version of every key written, so per key `at` rises
    --    with the version whatever the clients' clocks (statekit.backend.next_at).
    SELECT greatest(clock_timestamp(), max(v.at) + interval '1 microsecond') INTO at
    FROM unnest(p_keys, versions) AS w (key, version)
    JOIN statekit_versions AS v ON v.ns = p_ns AND v.key = w.key AND v.version = w.version - 1;

    -- 4. The namespace's commit number, taken after the heads: its row lock is held
    --    until commit, so numbers are handed out in commit order (watch relies on it).
    INSERT INTO statekit_namespaces AS n (ns, commit_seq) VALUES (p_ns, 1)
    ON CONFLICT (ns) DO UPDATE SET commit_seq = n.commit_seq + 1
    RETURNING n.commit_seq INTO v_seq;

    -- 5. One version row per write; pos keeps the batch's order for watchers.
    INSERT INTO statekit_versions (ns, key, version, kind, data, meta, at, commit_seq, pos)
    SELECT p_ns, w.key, w.version, w.kind, w.data::json, w.meta::json, at, v_seq, w.ord
    FROM unnest(p_keys, versions, p_kinds, p_datas, p_metas) WITH ORDINALITY
         AS w (key, version, kind, data, meta, ord);

    PERFORM pg_notify('statekit', json_build_object('ns', p_ns, 'seq', v_seq)::text);
END
$fn$"""

APPEND_FUNCTION_V3 = r"""
CREATE FUNCTION statekit_append(
    p_ns      text,
    p_keys    text[],
    p_kinds   text[],
    p_datas   text[],      -- JSON text; NULL = tombstone
    p_metas   text[],      -- JSON text
    p_expects bigint[],    -- -1 = ANY, 0 = no live value, n = head must be n
    p_guard_keys     text[] DEFAULT '{}',   -- other keys whose head is checked, not written
    p_guard_versions bigint[] DEFAULT '{}', -- 0 = no live value, n = head must be n
    p_notify  boolean DEFAULT false,        -- wake the namespace's watchers at commit
    OUT versions bigint[], -- the new versions, in the order of p_keys
    OUT at timestamptz     -- the batch's time, stamped on every version
)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_prev_live boolean[];
    v_lock      record;
    v_version   bigint;
    v_live      boolean;
BEGIN
    -- 1. Locks, before the first write: a transaction gets its id (the feed's order,
    --    see the module docstring) at its first write, so it gets it only once it
    --    holds every lock; a writer that waited for another's key gets a larger id.
    --    Advisory locks need no id. The namespace lock is shared by appends and taken
    --    exclusively by a big batch (no lock table overflow) and by drop_namespace.
    IF txid_current_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'statekit_append must be the first write of its transaction';
    END IF;
    IF cardinality(p_keys) + cardinality(p_guard_keys) > 32 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_ns, 29547));
    ELSIF cardinality(p_keys) = 1 AND cardinality(p_guard_keys) = 0 THEN
        PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_ns, 29547));
        PERFORM pg_advisory_xact_lock(hashtextextended(p_ns || '/' || p_keys[1], 29548));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_ns, 29547));
        -- In lock-id order, so crossing batches wait instead of deadlocking; a
        -- guarded key is locked shared, so guarded appends do not queue on each other.
        FOR v_lock IN
            SELECT l.id, bool_or(l.write) AS write FROM (
                SELECT hashtextextended(p_ns || '/' || k, 29548) AS id, true AS write
                FROM unnest(p_keys) AS k
                UNION ALL
                SELECT hashtextextended(p_ns || '/' || k, 29548), false
                FROM unnest(p_guard_keys) AS k
            ) AS l GROUP BY l.id ORDER BY l.id
        LOOP
            IF v_lock.write THEN
                PERFORM pg_advisory_xact_lock(v_lock.id);
            ELSE
                PERFORM pg_advisory_xact_lock_shared(v_lock.id);
            END IF;
        END LOOP;
    END IF;

    -- 2. Guards: each guarded head, held still by the locks above, must be as given
    --    (the rule of statekit.backend.check_expect; reported like a failed expect).
    FOR i IN 1 .. cardinality(p_guard_keys) LOOP
        v_version := 0;
        v_live := false;
        SELECT h.version, h.live INTO v_version, v_live FROM statekit_heads AS h
        WHERE h.ns = p_ns AND h.key = p_guard_keys[i];
        v_version := coalesce(v_version, 0);
        v_live := coalesce(v_live, false);
        IF v_version <> p_guard_versions[i] AND NOT (p_guard_versions[i] = 0 AND NOT v_live) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'SK409',
                MESSAGE = 'statekit: guard failed',
                DETAIL = json_build_object(
                    'key', p_guard_keys[i], 'expected', p_guard_versions[i],
                    'actual', v_version, 'deleted', NOT v_live)::text;
        END IF;
    END LOOP;

    -- 3. One statement (its snapshot is taken now, under the locks): the batch's time
    --    (the server's clock, past every key's newest version: statekit.backend.next_at;
    --    ORDER BY ... LIMIT 1 keeps that probe on the primary key whatever the
    --    statistics say), every head moved on by one in key order (the first write:
    --    the transaction id is assigned here), and one version row per write stamped
    --    with the transaction's id. prev_live keeps what each head was.
    WITH w AS (
        SELECT * FROM unnest(p_keys, p_kinds, p_datas, p_metas) WITH ORDINALITY
            AS w (key, kind, data, meta, ord)
    ), stamp AS (
        SELECT greatest(clock_timestamp(), max((
            SELECT v.at FROM statekit_versions AS v
            WHERE v.ns = p_ns AND v.key = w.key ORDER BY v.version DESC LIMIT 1
        )) + interval '1 microsecond') AS at FROM w
    ), moved AS (
        INSERT INTO statekit_heads AS h (ns, key, version, kind, live, prev_live)
        SELECT p_ns, w.key, 1, w.kind, w.data IS NOT NULL, false
        FROM w ORDER BY w.key COLLATE "C"
        ON CONFLICT (ns, key) DO UPDATE
        SET version = h.version + 1, kind = excluded.kind, live = excluded.live,
            prev_live = h.live
        RETURNING h.key, h.version, h.prev_live
    ), written AS (
        INSERT INTO statekit_versions (ns, key, version, kind, data, meta, at, commit_seq, pos, xid)
        SELECT p_ns, w.key, moved.version, w.kind, w.data::json, w.meta::json, stamp.at, 0,
               w.ord, txid_current()
        FROM w JOIN moved ON moved.key = w.key CROSS JOIN stamp
    )
    SELECT array_agg(moved.version ORDER BY w.ord), array_agg(moved.prev_live ORDER BY w.ord),
           (SELECT stamp.at FROM stamp)
    INTO versions, v_prev_live, at
    FROM w JOIN moved ON moved.key = w.key;

    -- 4. Check every expect against the head as it was (version - 1, prev_live), with
    --    the rule of statekit.backend.check_expect. The first failure, in input
    --    order, raises: the whole call rolls back, heads and versions included.
    IF NOT (-1 = ALL (p_expects)) THEN
        FOR i IN 1 .. cardinality(p_keys) LOOP
            IF p_expects[i] <> -1
               AND p_expects[i] <> versions[i] - 1
               AND NOT (p_expects[i] = 0 AND NOT v_prev_live[i]) THEN
                RAISE EXCEPTION USING
                    ERRCODE = 'SK409',
                    MESSAGE = 'statekit: expect failed',
                    DETAIL = json_build_object(
                        'key', p_keys[i], 'expected', p_expects[i],
                        'actual', versions[i] - 1, 'deleted', NOT v_prev_live[i])::text;
            END IF;
        END LOOP;
    END IF;

    -- 5. A NOTIFY serializes the commits of every notifying transaction on the server,
    --    so the client asks for one only now and then (statekit_postgres.wakeups).
    IF p_notify THEN
        PERFORM pg_notify('statekit', json_build_object('ns', p_ns)::text);
    END IF;
END
$fn$"""

VERSION_AT_FUNCTION = r"""
CREATE FUNCTION statekit_version_at(p_ns text, p_key text, p_at timestamptz)
RETURNS bigint              -- the newest version with at <= p_at; NULL when none
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_low     bigint;       -- a version at or before p_at
    v_low_at  timestamptz;
    v_high    bigint;       -- from here on every version is later than p_at, or absent
    v_mid     bigint;
    v_probe   bigint;
    v_probe_at timestamptz;
BEGIN
    -- A binary search over the primary key (ns, key, version): `at` rises with the
    -- version, so about log2(versions) index probes, never a walk of the history.
    SELECT version, at INTO v_low, v_low_at FROM statekit_versions
    WHERE ns = p_ns AND key = p_key ORDER BY version LIMIT 1;
    IF v_low IS NULL OR v_low_at > p_at THEN
        RETURN NULL;
    END IF;
    SELECT version + 1 INTO v_high FROM statekit_versions
    WHERE ns = p_ns AND key = p_key ORDER BY version DESC LIMIT 1;
    WHILE v_high - v_low > 1 LOOP
        v_mid := (v_low + v_high) / 2;
        v_probe := NULL;
        SELECT version, at INTO v_probe, v_probe_at FROM statekit_versions
        WHERE ns = p_ns AND key = p_key AND version >= v_mid AND version < v_high
        ORDER BY version LIMIT 1;
        IF v_probe IS NOT NULL AND v_probe_at <= p_at THEN
            v_low := v_probe;
        ELSE
            v_high := v_mid;
        END IF;
    END LOOP;
    RETURN v_low;
END
$fn$"""

FEED = "xid >= 0"
"""The feed index's predicate (schema 4), in every statement that reads the feed. Every
row satisfies it; it is there so that only statements saying it can use the feed index.
Without it, statistics taken before a namespace existed (or while the table was empty)
estimate that namespace at one row, the feed index ``(ns, xid, ...)`` then costs the same
as the primary key for a lookup by ``(ns, key, version)``, and the planner took it and
read the whole namespace per lookup."""

RECORDS_AT_FUNCTION = r"""
CREATE FUNCTION statekit_records_at(p_ns text, p_keys text[], p_at timestamptz)
RETURNS SETOF statekit_versions  -- each key's version current at p_at, if it has one
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_key     text;
    v_version bigint;
BEGIN
    -- Found by statekit_version_at, then read by the whole primary key. A join on the
    -- function's result let the planner, for a namespace new to the statistics, read
    -- the whole namespace and match it in a hash (O(namespace) per as_of).
    FOREACH v_key IN ARRAY p_keys LOOP
        v_version := statekit_version_at(p_ns, v_key, p_at);
        IF v_version IS NOT NULL THEN
            RETURN QUERY SELECT * FROM statekit_versions
            WHERE ns = p_ns AND key = v_key AND version = v_version;
        END IF;
    END LOOP;
END
$fn$"""

NO_SCANS = tuple(
    f"ALTER FUNCTION {signature} SET enable_seqscan = off"
    for signature in (
        "statekit_append(text, text[], text[], text[], text[], bigint[], text[], bigint[], "
        "boolean)",
        "statekit_version_at(text, text, timestamptz)",
        "statekit_records_at(text, text[], timestamptz)",
    )
)
"""Every table access in statekit's functions is by key, so none should ever be a
sequential scan. With statistics taken while the tables were nearly empty the planner
chose one per key for the ``at`` of each key's previous version (a 500-key append:
683 µs a write instead of 21), and a pooled connection kept that plan until autovacuum
analysed the grown tables. The functions run with sequential scans off instead."""

# Each migration takes the schema from its index to index + 1. Never edit a shipped one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
    CREATE TABLE statekit_namespaces (
        ns         text COLLATE "C" PRIMARY KEY,
        commit_seq bigint NOT NULL           -- the last commit's number, see statekit_append
    )""",
        """
    CREATE TABLE statekit_heads (
        ns        text COLLATE "C" NOT NULL,
        key       text COLLATE "C" NOT NULL, -- "C": code point order, as scan promises
        version   bigint  NOT NULL,
        kind      text    NOT NULL,
        live      boolean NOT NULL,          -- false: the head is a tombstone
        prev_live boolean NOT NULL,          -- live before the last append (its expect check)
        PRIMARY KEY (ns, key)
    ) WITH (fillfactor = 80)""",  # room for HOT updates: a head is rewritten on every write
        """
    CREATE TABLE statekit_versions (
        ns         text COLLATE "C" NOT NULL,
        key        text COLLATE "C" NOT NULL,
        version    bigint      NOT NULL,
        kind       text        NOT NULL,
        data       json,                     -- json keeps the exact text; NULL = tombstone
        meta       json        NOT NULL,
        at         timestamptz NOT NULL,
        commit_seq bigint      NOT NULL,     -- the commit that wrote it (per namespace)
        pos        integer     NOT NULL,     -- its place in that commit's batch
        PRIMARY KEY (ns, key, version)
    )""",
        "CREATE INDEX statekit_versions_commit ON statekit_versions (ns, commit_seq, pos)",
        APPEND_FUNCTION_V1,
    ),
    (  # 2: `at` decided under the heads' locks (server clock, rising per key); as_of search
        "DROP FUNCTION statekit_append("
        "text, text[], text[], text[], text[], bigint[], timestamptz)",
        APPEND_FUNCTION_V2,
        VERSION_AT_FUNCTION,
    ),
    (  # 3: the feed ordered by transaction id (no per-namespace counter row); guards
        # Rows written before keep their commit_seq order, all before any new row (xid 0).
        "ALTER TABLE statekit_versions ADD COLUMN xid bigint NOT NULL DEFAULT 0",
        "CREATE INDEX statekit_versions_feed ON statekit_versions (ns, xid, commit_seq, pos)",
        "DROP INDEX statekit_versions_commit",
        "DROP FUNCTION statekit_append(text, text[], text[], text[], text[], bigint[])",
        APPEND_FUNCTION_V3,
    ),
    (  # 4: lookups by key use the primary key whatever the statistics (see FEED)
        "DROP INDEX statekit_versions_feed",
        f"CREATE INDEX statekit_versions_feed ON statekit_versions (ns, xid, commit_seq, pos) "
        f"WHERE {FEED}",
        RECORDS_AT_FUNCTION,
    ),
    (  # 5: the functions' statements read by key, whatever the statistics (see NO_SCANS)
        *NO_SCANS,
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (callers pass only validated names)."""
    return '"' + name.replace('"', '""') + '"'


async def migrate(conn: Any, schema: str | None, *, where: str) -> int:
    """Create or upgrade statekit's tables on ``conn``; returns the version found.

    :param conn: an asyncpg connection (its search_path names ``schema`` when given).
    :param schema: the schema to create first when missing; None = the default one.
    :param where: the redacted URL, for errors.
    :raises BackendError: the tables were written by a newer statekit-postgres.
    """
    # Fast path without the lock: an up-to-date database needs only reading.
    if await conn.fetchval("SELECT to_regclass('statekit_schema') IS NOT NULL"):
        found = await conn.fetchval("SELECT version FROM statekit_schema")
        if found == SCHEMA_VERSION:
            return SCHEMA_VERSION
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        if schema is not None:
            # The name matched [a-z_][a-z0-9_]* (PostgresOptions), and is quoted besides.
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            current = await conn.fetchval("SELECT current_schema()")
            if current != schema:
                raise BackendError(
                    f"postgresql {where}: schema {schema!r} is not first in the search path "
                    f"after creating it (current schema: {current!r})",
                    backend="postgresql",
                )
        await conn.execute(SCHEMA_TABLE)
        found = await conn.fetchval("SELECT version FROM statekit_schema") or 0
        if found > SCHEMA_VERSION:
            raise BackendError(
                f"postgresql {where}: statekit's tables are at schema version {found}, written "
                f"by a newer statekit-postgres (this one knows {SCHEMA_VERSION}); upgrade it",
                backend="postgresql",
            )
        for statements in MIGRATIONS[found:]:
            for statement in statements:
                await conn.execute(statement)
        if found != SCHEMA_VERSION:
            await conn.execute(
                "INSERT INTO statekit_schema (singleton, version) VALUES (true, $1) "
                "ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
                SCHEMA_VERSION,
            )
    return int(found)
