"""The reconcile bench's baseline: the same orders placed on the same paper exchange and
recorded by hand with the driver (sqlite3 or asyncpg), as a user would without statekit.

Nothing of statekit is imported here but the sample values (the paper exchange and its
orders, the intents' specs): what the raw side does is only what it shows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from statekit.trading.paper import PaperExchange
from statekit.trading.reconcile import IntentSpec

__all__ = ["BASELINE", "RawRecorder", "cancel_raw", "raw_place", "raw_side"]

BASELINE = (
    "the same orders placed on the same PaperExchange (create_order with a client id), "
    "each then recorded durably by hand with the driver: sqlite3 (one WAL connection, "
    "synchronous=FULL, a transaction at a time in a worker thread) or asyncpg (a pool, "
    "one transaction per order), an upsert of the order's current row (value, version) "
    "and a history row, in tables of its own; as many concurrent tasks as engine workers"
)


RawRecorder = Callable[[str, str], Awaitable[None]]
"""Records one placed order durably: (client order id, the order as JSON text)."""


async def raw_place(
    record: RawRecorder,
    exchange: PaperExchange,
    specs: Sequence[tuple[str, IntentSpec]],
    tasks: int,
    tag: str,
) -> float:
    """The baseline (:data:`BASELINE`): ``tasks`` tasks each place an order on the
    exchange, then record it with ``record``, until every spec is placed."""
    work = iter(specs)

    async def task() -> None:
        for intent_id, spec in work:  # one iterator shared by every task
            order = await exchange.create_order(
                spec.symbol,
                spec.type,
                spec.side,
                spec.amount,
                spec.price,
                client_order_id=f"raw-{tag}-{intent_id}",
                time_in_force=spec.time_in_force,
            )
            assert order.client_order_id is not None
            await record(order.client_order_id, order.model_dump_json())

    started = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(tasks)))
    return time.perf_counter() - started


@asynccontextmanager
async def _raw_sqlite(path: Path) -> AsyncIterator[RawRecorder]:
    """What a user writes with sqlite3: one connection to a WAL file with
    synchronous=FULL, used by one transaction at a time (a lock) in a worker thread;
    each order a history row and its current row (value, version), committed."""
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS orders (client_order_id TEXT PRIMARY KEY, "
        "version INTEGER NOT NULL, data TEXT NOT NULL, updated_at REAL NOT NULL)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS order_history (client_order_id TEXT NOT NULL, "
        "version INTEGER NOT NULL, data TEXT NOT NULL, at REAL NOT NULL, "
        "PRIMARY KEY (client_order_id, version))"
    )
    lock = asyncio.Lock()

    def write(client_order_id: str, data: str) -> None:
        now = time.time()
        con.execute("BEGIN IMMEDIATE")
        try:
            (version,) = con.execute(
                "INSERT INTO orders (client_order_id, version, data, updated_at) "
                "VALUES (?, 1, ?, ?) ON CONFLICT (client_order_id) DO UPDATE SET "
                "version = orders.version + 1, data = excluded.data, "
                "updated_at = excluded.updated_at RETURNING version",
                (client_order_id, data, now),
            ).fetchone()
            con.execute(
                "INSERT INTO order_history (client_order_id, version, data, at) "
                "VALUES (?, ?, ?, ?)",
                (client_order_id, version, data, now),
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    async def record(client_order_id: str, data: str) -> None:
        async with lock:
            await asyncio.to_thread(write, client_order_id, data)

    try:
        yield record
    finally:
        con.close()


@asynccontextmanager
async def _raw_postgres(url: str, connections: int) -> AsyncIterator[RawRecorder]:
    """What a user writes with asyncpg: a pool, and per order one transaction that
    upserts its current row (value, version) and inserts a history row, in tables of
    its own (dropped afterwards)."""
    import asyncpg  # type: ignore[import-untyped]

    base = url.partition("?")[0]
    table = f"bench_reconcile_raw_{uuid.uuid4().hex[:12]}"
    pool = await asyncpg.create_pool(base, min_size=connections, max_size=connections)
    try:
        await pool.execute(
            f"CREATE TABLE {table} (client_order_id text PRIMARY KEY, version bigint NOT NULL, "
            "data jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());"
            f"CREATE TABLE {table}_history (client_order_id text NOT NULL, "
            "version bigint NOT NULL, data jsonb NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (client_order_id, version))"
        )

        async def record(client_order_id: str, data: str) -> None:
            async with pool.acquire() as con, con.transaction():
                version = await con.fetchval(
                    f"INSERT INTO {table} (client_order_id, version, data) "
                    "VALUES ($1, 1, $2::jsonb) ON CONFLICT (client_order_id) DO UPDATE SET "
                    f"version = {table}.version + 1, data = EXCLUDED.data, "
                    "updated_at = now() RETURNING version",
                    client_order_id,
                    data,
                )
                await con.execute(
                    f"INSERT INTO {table}_history (client_order_id, version, data) "
                    "VALUES ($1, $2, $3::jsonb)",
                    client_order_id,
                    version,
                    data,
                )

        yield record
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}, {table}_history")
        await pool.close()


def raw_side(
    base: str | None, scratch: Path, connections: int, *, tag: str = ""
) -> tuple[AbstractAsyncContextManager[RawRecorder], str]:
    """The hand-written recorder for the store the engine runs on, and its label."""
    if base is not None and base.partition("://")[0] in ("postgres", "postgresql"):
        return _raw_postgres(base, connections), "asyncpg"
    return _raw_sqlite(scratch / f"reconcile-raw{tag}.db"), "sqlite3"


async def cancel_raw(exchange: PaperExchange) -> None:
    """Untimed: the raw side's orders are cancelled, so the engine does not see them."""
    for order in exchange.orders:
        cid = order.client_order_id or ""
        if cid.startswith("raw-") and not order.status.final:
            await exchange.cancel_order(order.id, order.symbol)
