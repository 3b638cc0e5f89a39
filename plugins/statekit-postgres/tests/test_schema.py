"""The schema is created and upgraded on open, once, even by processes racing for it."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from statekit_postgres import PostgresBackend, PostgresOptions
from statekit_postgres.schema import SCHEMA_VERSION

from statekit.backend import Write
from statekit.errors import BackendError
from statekit.store import StateStore

from .conftest import open_or_skip, with_query

PROCESSES = 4

# Each process waits for the same moment, then opens the store and writes one key.
OPEN_AT_ONCE = """
import asyncio, sys, time
import statekit

async def main(url: str, name: str) -> None:
    async with await statekit.open(url) as store:
        await store.put("opened/" + name, 1)

time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _open_at_once(url: str) -> None:
    start_at = str(time.time() + 1.5)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OPEN_AT_ONCE,
            url,
            str(i),
            start_at,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    results = [await proc.communicate() for proc in procs]
    failures = [
        err.decode() for proc, (_, err) in zip(procs, results, strict=True) if proc.returncode
    ]
    assert not failures, failures[0]


async def _admin(pg_url: str) -> Any:
    return await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())


@pytest_asyncio.fixture
async def fresh_schema(pg_url: str) -> AsyncIterator[str]:
    """A schema name nobody has used; dropped afterwards."""
    name = f"sk_{uuid.uuid4().hex[:16]}"
    yield name
    admin = await _admin(pg_url)
    try:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_processes_opening_a_fresh_schema_at_once(pg_url: str, fresh_schema: str) -> None:
    url = with_query(pg_url, schema=fresh_schema, namespace="race")
    await _open_at_once(url)
    backend = await open_or_skip(url)
    async with StateStore(backend) as store:
        assert [r.key async for r in store.scan("opened/")] == [
            f"opened/{i}" for i in range(PROCESSES)
        ]
        health = await store.health()
        assert health.detail["schema"] == fresh_schema
        assert health.detail["schema_version"] == SCHEMA_VERSION


@pytest_asyncio.fixture
async def fresh_database(pg_url: str) -> AsyncIterator[str]:
    """A new database (ICU collation en-US where the server has ICU): its URL."""
    name = f"statekit_{uuid.uuid4().hex[:16]}"
    admin = await _admin(pg_url)
    try:
        icu = await admin.fetchval("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'")
        locale = "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'" if icu else ""
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' {locale}")
        parts = urlsplit(pg_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.mark.asyncio
async def test_processes_opening_a_fresh_database_at_once(fresh_database: str) -> None:
    """The default schema (public) of a new database, whose collation is not "C"."""
    await _open_at_once(with_query(fresh_database, namespace="race"))
    backend = await open_or_skip(with_query(fresh_database, namespace="order"))
    async with StateStore(backend) as store:
        # Code point order whatever the database's collation; _ and % are no wildcards.
        keys = ["a", "B", "a_b", "ab", "a%b", "é", "Z", "_x", "%y", "a b", "😀"]
        for key in keys:
            await store.put(key, 1)
        assert [r.key async for r in store.scan()] == sorted(keys)
        assert [r.key async for r in store.scan("a_")] == ["a_b"]
        assert [r.key async for r in store.scan("a%")] == ["a%b"]


@pytest.mark.asyncio
async def test_reopening_is_idempotent_and_a_newer_schema_is_refused(
    pg_url: str, fresh_schema: str
) -> None:
    url = with_query(pg_url, schema=fresh_schema)
    for _ in range(2):
        backend = await open_or_skip(url)
        await backend.aclose()
    admin = await _admin(url)
    try:
        assert await admin.fetch("SELECT version FROM statekit_schema") == [(SCHEMA_VERSION,)]
        await admin.execute("UPDATE statekit_schema SET version = 999")
    finally:
        await admin.close()
    with pytest.raises(BackendError) as err:
        await PostgresBackend.open(url)
    assert "newer statekit-postgres" in str(err.value)


@pytest.mark.asyncio
async def test_an_interrupted_migration_leaves_nothing(
    pg_url: str, fresh_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations run in one transaction: a failure half way creates no table at all."""
    from statekit_postgres import schema

    broken = [(*schema.MIGRATIONS[0], "SELECT no_such_function()")]
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    url = with_query(pg_url, schema=fresh_schema)
    with pytest.raises(BackendError):
        await PostgresBackend.open(url)
    admin = await _admin(url)
    try:
        tables = await admin.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1", fresh_schema
        )
    finally:
        await admin.close()
    assert tables == 0
    monkeypatch.undo()
    backend = await open_or_skip(url)  # and the next open migrates cleanly
    await backend.aclose()


@pytest.mark.asyncio
async def test_a_version_2_database_migrates_and_keeps_its_history_and_feed(
    pg_url: str, fresh_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 2 (commit counter row) -> 3 (transaction-id feed) -> 5 on open, data intact."""
    from statekit_postgres import schema

    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    url = with_query(pg_url, schema=fresh_schema, namespace="old")
    admin = await _admin(url)
    try:
        await schema.migrate(admin, fresh_schema, where="test")
        for value in (1, 2):  # what a schema-2 statekit wrote: statekit_append, 6 arguments
            await admin.fetch(
                "SELECT * FROM statekit_append($1, $2, $3, $4, $5, $6)",
                "old",
                ["a", "b"],
                ["state", "state"],
                [str(value), str(value)],
                ["{}", "{}"],
                [-1, -1],
            )
        assert await admin.fetchval("SELECT commit_seq FROM statekit_namespaces") == 2
    finally:
        await admin.close()
    monkeypatch.undo()
    backend = await open_or_skip(url)
    try:
        store = StateStore(backend, owns_backend=False)
        assert (await backend.health()).detail["schema_version"] == SCHEMA_VERSION == 5
        assert [r.data for r in await store.history("a")] == [2, 1]  # newest first
        then = await store.get("a", as_of=datetime.now(UTC))  # schema 4's statekit_records_at
        assert then is not None and then.data == 2
        watch = await backend.watch()
        await store.put("a", 3, expect=2)
        record = await asyncio.wait_for(anext(watch), 20)
        await watch.aclose()
        assert (record.key, record.version, record.data) == ("a", 3, 3)
        admin = await _admin(url)
        try:
            feed = await admin.fetch(
                "SELECT key, version, xid = 0 FROM statekit_versions ORDER BY xid, commit_seq, pos"
            )
        finally:
            await admin.close()
        # The old rows first, in their commit order, then the new one.
        assert [tuple(r) for r in feed] == [
            ("a", 1, True),
            ("b", 1, True),
            ("a", 2, True),
            ("b", 2, True),
            ("a", 3, False),
        ]
        await backend.drop_namespace(forget=True)
    finally:
        await backend.aclose()


@pytest.mark.asyncio
async def test_appends_read_by_key_when_statistics_saw_empty_tables(
    pg_url: str, fresh_schema: str
) -> None:
    """Statistics taken while statekit's tables were nearly empty once made the planner
    read statekit_versions in a sequential scan per key inside statekit_append (and a
    pooled connection kept that plan): schema 5 runs the functions without them."""
    url = with_query(pg_url, schema=fresh_schema, namespace="stats")
    backend = await open_or_skip(url)
    try:
        keys = [f"k/{i:03d}" for i in range(300)]
        await backend.append([Write(k, 1) for k in keys[:20]], at=datetime.now(UTC))
        admin = await _admin(url)
        plans: list[str] = []
        admin.add_log_listener(lambda _conn, message: plans.append(message.message))
        try:
            await admin.execute(f'SET search_path = "{fresh_schema}"')
            await admin.execute("ANALYZE statekit_heads, statekit_versions")  # 20 rows
            await backend.append([Write(k, 2) for k in keys], at=datetime.now(UTC))
            await admin.execute("LOAD 'auto_explain'")
            await admin.execute(
                "SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; "
                "SET auto_explain.log_nested_statements = on; SET client_min_messages = log"
            )
            await admin.fetch(
                "SELECT * FROM statekit_append($1, $2, $3, $4, $5, $6)",
                "stats",
                keys,
                ["state"] * len(keys),
                ["3"] * len(keys),
                ["{}"] * len(keys),
                [-1] * len(keys),
            )
            await admin.execute("SET client_min_messages = notice")
        finally:
            await admin.close()
        scans = [p for p in plans if "Seq Scan on statekit_" in p]
        assert plans and not scans, scans
    finally:
        await backend.aclose()


# docs/operations.md, "Restoring a dump into another cluster": the step that moves the
# cluster's transaction ids past the restored rows' (here on the test's own schema).
ADVANCE_XIDS = """
DO $$
DECLARE newest bigint := (SELECT max(xid) FROM "{schema}".statekit_versions);
BEGIN
    WHILE txid_current() <= newest LOOP COMMIT; END LOOP;  -- one id per transaction
END $$;"""


@pytest.mark.asyncio
async def test_rows_from_a_cluster_further_ahead_are_refused_until_its_ids_are_passed(
    pg_url: str, fresh_schema: str
) -> None:
    """A dump restored into another cluster brings transaction ids that cluster has not
    reached: the feed, position() and changed() would compare them wrongly, so opening
    the namespace is refused with the way out, and works once the ids are moved past."""
    url = with_query(pg_url, schema=fresh_schema, namespace="restored")
    async with StateStore(await open_or_skip(url)) as store:
        await store.put("k", 1)
    admin = await _admin(url)
    try:
        # As a restore from a cluster 300 transactions ahead would leave the row.
        await admin.execute("UPDATE statekit_versions SET xid = txid_current() + 300")
        with pytest.raises(BackendError, match="restored from another cluster") as err:
            await PostgresBackend.open(url)
        assert "docs/operations.md" in str(err.value)
        # Another namespace of the same schema holds no such rows: it opens.
        other = await PostgresBackend.open(
            with_query(pg_url, schema=fresh_schema, namespace="fresh")
        )
        await other.aclose()
        await admin.execute("SET synchronous_commit = off")
        await admin.execute(ADVANCE_XIDS.format(schema=fresh_schema))
    finally:
        await admin.close()
    async with StateStore(await PostgresBackend.open(url)) as store:
        since = await store.position()
        await store.put("later", 2)
        assert await store.changed(since) == ["later"]
