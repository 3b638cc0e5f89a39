"""``python -m statekit.bench --backend mysql``: statekit beside raw aiomysql.

Entry point ``mysql`` in group ``statekit.bench``. Each workload pairs statekit
with what a competent aiomysql user writes by hand for the same data (each
write's value, its version, a history row), in tables of their own
(:class:`RawWriter`), never statekit's tables or statements:

- ``put``: ``store.put`` vs a transaction per write: ``INSERT ... ON DUPLICATE KEY
  UPDATE version = LAST_INSERT_ID(version + 1)`` of the head (the new version
  comes back in the OK packet, no extra query), the history ``INSERT``, COMMIT.
- ``batch``: ``store.batch`` of :data:`BATCH_SIZE` writes vs one transaction: one
  multi-row upsert of the heads, a ``SELECT`` of their new versions, one
  multi-row ``INSERT`` of the history rows, COMMIT.
- ``concurrent``: 8 tasks of ``store.put`` vs 8 tasks of the raw put on an
  aiomysql pool of 8, all in one namespace / one pair of tables, each writer on
  keys of its own.

Durability is the server's on both sides: ``innodb_flush_log_at_trx_commit`` and
``sync_binlog`` read back by the raw connection, printed as ``durability``.
The server is the one of ``--url`` or ``STATEKIT_TEST_MARIADB_URL``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql  # type: ignore[import-untyped]

import statekit
from statekit.backend import JSON, Write
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, server_url
from statekit.kit import with_options
from statekit_mysql.backend import MysqlBackend

__all__ = ["BATCH_SIZE", "RawWriter", "bench", "connect_kwargs"]

BATCH_SIZE = 500
"""Writes per transaction in the ``batch`` workload."""


def _compact(value: JSON) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def connect_kwargs(url: str) -> dict[str, Any]:
    """aiomysql's arguments for ``mysql://user:password@host:port/database``."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/"),
        "charset": "utf8mb4",
        "autocommit": True,
    }


class RawWriter:
    """The hand-written program: ``<table>_heads`` and ``<table>_history``.

    :param table: the name prefix of its two tables (a validated identifier).
    """

    def __init__(self, table: str) -> None:
        self.heads, self.history = f"{table}_heads", f"{table}_history"
        self.create = [
            f"CREATE TABLE {self.heads} (k VARBINARY(255) PRIMARY KEY, "
            "version BIGINT NOT NULL, value LONGBLOB NOT NULL, at DATETIME(6) NOT NULL) "
            "ENGINE=InnoDB",
            f"CREATE TABLE {self.history} (k VARBINARY(255) NOT NULL, version BIGINT NOT NULL, "
            "value LONGBLOB NOT NULL, at DATETIME(6) NOT NULL, PRIMARY KEY (k, version)) "
            "ENGINE=InnoDB",
        ]
        self.drop = f"DROP TABLE IF EXISTS {self.heads}, {self.history}"
        self._upsert = (
            f"INSERT INTO {self.heads} (k, version, value, at) "
            "VALUES (%s, LAST_INSERT_ID(1), %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
            "version = LAST_INSERT_ID(version + 1), value = VALUES(value), at = VALUES(at)"
        )
        self._row = (
            f"INSERT INTO {self.history} (k, version, value, at) "
            "VALUES (%s, %s, %s, UTC_TIMESTAMP(6))"
        )
        # Plain placeholders, so executemany sends one multi-row statement.
        self._upsert_many = (
            f"INSERT INTO {self.heads} (k, version, value, at) VALUES (%s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE version = version + 1, value = VALUES(value), "
            "at = VALUES(at)"
        )
        self._rows = f"INSERT INTO {self.history} (k, version, value, at) VALUES (%s, %s, %s, %s)"

    async def put(self, conn: Any, key: str, value: JSON) -> int:
        """One transaction: move the head on, record the version; returns it."""
        text = _compact(value)
        await conn.begin()
        try:
            async with conn.cursor() as cur:
                await cur.execute(self._upsert, (key, text))
                version = int(cur.lastrowid)
                await cur.execute(self._row, (key, version, text))
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        return version

    async def batch(self, conn: Any, items: list[tuple[str, JSON]]) -> None:
        """One transaction: one multi-row upsert of the heads, a SELECT of their new
        versions, one multi-row INSERT of the history; the batch's time from the client."""
        at = datetime.now(UTC).replace(tzinfo=None)
        texts = [(key, _compact(value)) for key, value in items]
        marks = ", ".join(["%s"] * len(items))
        await conn.begin()
        try:
            async with conn.cursor() as cur:
                await cur.executemany(self._upsert_many, [(k, 1, t, at) for k, t in texts])
                await cur.execute(
                    f"SELECT k, version FROM {self.heads} WHERE k IN ({marks})",
                    [key for key, _ in items],
                )
                versions = {bytes(k).decode(): v for k, v in await cur.fetchall()}
                await cur.executemany(
                    self._rows, [(key, versions[key], text, at) for key, text in texts]
                )
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise


async def _durability(conn: Any) -> str:
    async with conn.cursor() as cur:
        await cur.execute("SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog")
        flush, sync_binlog = await cur.fetchone()
    return f"innodb_flush_log_at_trx_commit={flush} sync_binlog={sync_binlog}"


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put``, ``batch`` and ``concurrent`` through statekit next to raw aiomysql."""
    url = server_url(config, "mariadb")
    tag = uuid.uuid4().hex[:12]
    writers = config.writers
    statekit_url = with_options(url, namespace=f"bench_sk_{tag}", pool_max=str(writers))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_drop, statekit_url)  # after the store closes
        store = await stack.enter_async_context(await statekit.open(statekit_url))
        raw_conn = await aiomysql.connect(**connect_kwargs(url))
        stack.callback(raw_conn.close)
        raw = RawWriter(f"bench_raw_{tag}")
        async with raw_conn.cursor() as cur:
            for statement in raw.create:
                await cur.execute(statement)
        stack.push_async_callback(_drop_tables, raw_conn, raw.drop)
        pool = await aiomysql.create_pool(minsize=writers, maxsize=writers, **connect_kwargs(url))
        stack.push_async_callback(_close_pool, pool)
        detail: dict[str, JSON] = {"durability": await _durability(raw_conn), "keys": config.keys}

        plan = Plan([f"bench/{i}" for i in range(config.keys)])
        batch_keys = [f"bench/batch/{i}" for i in range(BATCH_SIZE)]
        for key, value in plan.items(len(plan.keys)) + plan.items(BATCH_SIZE, batch_keys):
            await raw.put(raw_conn, key, value)
            await store.put(key, value)

        async def raw_put(key: str, value: JSON) -> None:
            await raw.put(raw_conn, key, value)

        put = Workload(
            "put", config.n, plan.puts(config.n, store.put), plan.puts(config.n, raw_put),
            detail=detail,
        )  # fmt: skip
        yield await measure("mysql", put, config.rounds)

        batches = max(2, config.n // BATCH_SIZE)

        async def raw_batch(items: list[tuple[str, JSON]]) -> None:
            await raw.batch(raw_conn, items)

        async def statekit_batch(items: list[tuple[str, JSON]]) -> None:
            await store.batch([Write(k, v) for k, v in items])

        batch = Workload(
            "batch",
            batches * BATCH_SIZE,
            plan.batches(batches, batch_keys, statekit_batch),
            plan.batches(batches, batch_keys, raw_batch),
            detail={**detail, "batch_size": BATCH_SIZE},
        )
        yield await measure("mysql", batch, config.rounds)

        per_writer = max(1, config.n // writers)

        async def pooled_put(key: str, value: JSON) -> None:
            async with pool.acquire() as conn:
                await raw.put(conn, key, value)

        concurrent = Workload(
            "concurrent",
            per_writer * writers,
            plan.writers(per_writer, [store.put] * writers),
            plan.writers(per_writer, [pooled_put] * writers),
            detail={**detail, "writers": writers, "pool_size": writers},
        )
        yield await measure("mysql", concurrent, config.rounds)


async def _drop_tables(conn: Any, statement: str) -> None:
    async with conn.cursor() as cur:
        await cur.execute(statement)


async def _close_pool(pool: Any) -> None:
    pool.close()
    await pool.wait_closed()


async def _drop(url: str) -> None:
    async with await MysqlBackend.open(url) as backend:
        await backend.drop_namespace(forget=True)
