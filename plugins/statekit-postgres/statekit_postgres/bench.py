"""``python -m statekit.bench --backend postgresql``: statekit beside raw asyncpg.

Entry point ``postgresql`` in group ``statekit.bench``. Each workload pairs
statekit with what a competent user writes by hand with asyncpg for the same
durable result (each write's value, its version, a history row), in tables of
their own (:class:`_RawWriter`), never statekit's function or tables. The raw
tables and statekit's namespaces are dropped afterwards.

- ``put``: ``store.put`` vs one connection running a transaction per write: upsert
  the head (``version = version + 1 ... RETURNING version``), insert the history row.
- ``batch``: ``store.batch`` of 500 writes vs the same transaction over ``unnest``
  of 500-element arrays.
- ``concurrent``: 8 tasks of ``store.put`` (a pool of 8) vs 8 tasks on an
  ``asyncpg.Pool`` of 8 running the transaction, all in one namespace / one pair
  of tables, each writer with keys of its own.

Every workload also times ``raw_one_statement``: the same write as one statement
(a CTE upserting the head and inserting the history row), one round trip like
statekit's, the fastest form we know. ``concurrent`` also times ``raw_held``: 8
tasks each holding a connection of its own (the floor for any pool).
"""

from __future__ import annotations

import asyncio
import collections
import json
import platform
import statistics
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

import statekit
from statekit.backend import JSON, Write
from statekit.bench import (
    BenchConfig,
    Plan,
    PutFn,
    Result,
    Workload,
    measure,
    server_url,
)
from statekit.kit import with_options
from statekit.store import StateStore
from statekit_postgres.backend import PostgresBackend
from statekit_postgres.options import PostgresOptions
from statekit_postgres.wakeups import INTERVAL

__all__ = ["BATCH_SIZE", "bench"]

BATCH_SIZE = 500
"""Writes per transaction in the ``batch`` workload."""


def _compact(value: JSON) -> str:
    # The JSON text statekit stores (statekit.codec.dumps), written out by hand.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _with_namespace(url: str, namespace: str) -> str:
    """``url`` with its namespace replaced (a bad URL is a ConfigError here)."""
    PostgresOptions.parse(url)
    return with_options(url, namespace=namespace)


class _RawWriter:
    """The hand-written program: a heads table and a history table of its own.

    :param table: the name prefix of its two tables (a validated identifier).
    """

    def __init__(self, table: str) -> None:
        self.heads, self.history = f"{table}_heads", f"{table}_history"
        self.create = [
            f"CREATE TABLE {self.heads} (key text PRIMARY KEY, version bigint NOT NULL, "
            "value json NOT NULL, at timestamptz NOT NULL)",
            f"CREATE TABLE {self.history} (key text NOT NULL, version bigint NOT NULL, "
            "value json NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (key, version))",
        ]
        self.drop = f"DROP TABLE IF EXISTS {self.heads}, {self.history}"
        upsert = (
            f"INSERT INTO {self.heads} AS h (key, version, value, at) "
            "SELECT k, 1, v::json, now() FROM unnest($1::text[], $2::text[]) AS u (k, v) "
            "ORDER BY k ON CONFLICT (key) DO UPDATE "
            "SET version = h.version + 1, value = excluded.value, at = excluded.at "
            "RETURNING h.key, h.version, h.value, h.at"
        )
        self._write = (
            f"WITH moved AS ({upsert}) INSERT INTO {self.history} (key, version, value, at) "
            "SELECT key, version, value, at FROM moved"
        )
        self._upsert = upsert
        self._history = (
            f"INSERT INTO {self.history} (key, version, value, at) "
            "SELECT * FROM unnest($1::text[], $2::bigint[], $3::json[], $4::timestamptz[])"
        )

    async def put(self, conn: Any, key: str, value: JSON) -> None:
        """A transaction: upsert the head (RETURNING its version), insert the history row."""
        await self.batch(conn, [(key, value)])

    async def batch(self, conn: Any, items: list[tuple[str, JSON]]) -> None:
        async with conn.transaction():
            rows = await conn.fetch(
                self._upsert, [k for k, _ in items], [_compact(v) for _, v in items]
            )
            await conn.execute(self._history, *zip(*rows, strict=True))

    async def put_one_statement(self, conn: Any, key: str, value: JSON) -> None:
        """The same write as one statement (a CTE), one round trip, atomic on its own."""
        await conn.execute(self._write, [key], [_compact(value)])

    async def batch_one_statement(self, conn: Any, items: list[tuple[str, JSON]]) -> None:
        await conn.execute(self._write, [k for k, _ in items], [_compact(v) for _, v in items])


@dataclass
class _Sides:
    """What one run compares: statekit's store and the hand-written asyncpg side."""

    store: StateStore
    raw: _RawWriter
    raw_conn: Any
    raw_pool: Any
    held: list[Any]
    detail: dict[str, JSON]
    url: str


async def _sides(stack: AsyncExitStack, config: BenchConfig) -> _Sides:
    url = server_url(config, "postgres")
    tag = uuid.uuid4().hex[:12]
    pool_size = config.writers
    statekit_url = with_options(
        _with_namespace(url, f"bench_sk_{tag}"), pool_min=str(pool_size), pool_max=str(pool_size)
    )
    options = PostgresOptions.parse(url)
    stack.push_async_callback(_drop, statekit_url)  # dropped last, after the store closes
    store = await stack.enter_async_context(await statekit.open(statekit_url))
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    # The raw side connects with statekit's own settings (application_name,
    # timeouts), so the server treats both alike; its tables go where statekit's are.
    raw_conn = await asyncpg.connect(**options.connect_kwargs())
    stack.push_async_callback(raw_conn.close)
    raw = _RawWriter(f"bench_raw_{tag}")
    for statement in raw.create:
        await raw_conn.execute(statement)
    stack.push_async_callback(raw_conn.execute, raw.drop)
    raw_pool = await asyncpg.create_pool(
        min_size=pool_size, max_size=pool_size, **options.connect_kwargs()
    )
    stack.push_async_callback(raw_pool.close)
    held = [await asyncpg.connect(**options.connect_kwargs()) for _ in range(pool_size)]
    for conn in held:
        stack.push_async_callback(conn.close)
    sync_sk = (await backend.health()).detail["synchronous_commit"]
    sync_raw = await raw_conn.fetchval("SHOW synchronous_commit")
    if sync_sk != sync_raw:
        raise RuntimeError(f"raw side runs synchronous_commit={sync_raw}, statekit {sync_sk}")
    detail: dict[str, JSON] = {
        "durability": f"synchronous_commit={sync_raw}",
        "server_version": str(await raw_conn.fetchval("SHOW server_version")),
        "keys": config.keys,
    }
    return _Sides(store, raw, raw_conn, raw_pool, held, detail, statekit_url)


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put``, ``batch`` and ``concurrent`` through statekit next to raw asyncpg."""
    async with AsyncExitStack() as stack:
        sides = await _sides(stack, config)
        store, raw, raw_conn, detail = sides.store, sides.raw, sides.raw_conn, sides.detail

        plan = Plan([f"bench/{i}" for i in range(config.keys)])
        batch_keys = [f"bench/batch/{i}" for i in range(BATCH_SIZE)]
        # Every key is written once first, so timed rounds update existing heads.
        for key, value in plan.items(len(plan.keys)) + plan.items(BATCH_SIZE, batch_keys):
            await raw.put(raw_conn, key, value)
            await store.put(key, value)

        async def raw_put(key: str, value: JSON) -> None:
            await raw.put(raw_conn, key, value)

        async def raw_put_one(key: str, value: JSON) -> None:
            await raw.put_one_statement(raw_conn, key, value)

        put = Workload(
            "put",
            config.n,
            plan.puts(config.n, store.put),
            plan.puts(config.n, raw_put),
            {"raw_one_statement": plan.puts(config.n, raw_put_one)},
            detail,
        )
        yield await measure("postgresql", put, config.rounds)

        batches = max(2, config.n // BATCH_SIZE)

        async def raw_batch(items: list[tuple[str, JSON]]) -> None:
            await raw.batch(raw_conn, items)

        async def statekit_batch(items: list[tuple[str, JSON]]) -> None:
            await store.batch([Write(k, v) for k, v in items])

        async def raw_batch_one(items: list[tuple[str, JSON]]) -> None:
            await raw.batch_one_statement(raw_conn, items)

        batch = Workload(
            "batch",
            batches * BATCH_SIZE,
            plan.batches(batches, batch_keys, statekit_batch),
            plan.batches(batches, batch_keys, raw_batch),
            {"raw_one_statement": plan.batches(batches, batch_keys, raw_batch_one)},
            {**detail, "batch_size": BATCH_SIZE},
        )
        yield await measure("postgresql", batch, config.rounds)
        yield await measure("postgresql", _concurrent(config, plan, sides), config.rounds)
        yield await _watch_tradeoff(config, plan, sides)


def _concurrent(config: BenchConfig, plan: Plan, sides: _Sides) -> Workload:
    """8 writers in one namespace (one pair of tables), each with keys of its own."""
    raw, raw_pool, writers = sides.raw, sides.raw_pool, config.writers
    per_writer = max(1, config.n // writers)

    async def pooled_put(key: str, value: JSON) -> None:
        async with raw_pool.acquire() as conn:
            await raw.put(conn, key, value)

    async def pooled_one_statement(key: str, value: JSON) -> None:
        async with raw_pool.acquire() as conn:
            await raw.put_one_statement(conn, key, value)

    def held_put(conn: Any) -> PutFn:
        async def put(key: str, value: JSON) -> None:
            await raw.put(conn, key, value)

        return put

    return Workload(
        "concurrent",
        per_writer * writers,
        plan.writers(per_writer, [sides.store.put] * writers),
        plan.writers(per_writer, [pooled_put] * writers),
        {
            "raw_held": plan.writers(per_writer, [held_put(c) for c in sides.held]),
            "raw_one_statement": plan.writers(per_writer, [pooled_one_statement] * writers),
        },
        {**sides.detail, "writers": writers, "pool_size": writers},
    )


WAKE_UP_INTERVALS = (0.0, INTERVAL, 0.01)
"""The wake-up intervals the ``watch`` line compares (0: every append notifies)."""


async def _watch_tradeoff(config: BenchConfig, plan: Plan, sides: _Sides) -> Result:
    """8 writers, and a watcher on a backend of its own (so only NOTIFYs wake it):
    commits per second and put-to-delivery latency for each wake-up interval."""
    backend = sides.store.backend
    assert isinstance(backend, PostgresBackend)
    writers = config.writers
    per_writer = max(1, config.n // writers)
    rates: dict[float, list[float]] = {i: [] for i in WAKE_UP_INTERVALS}
    delays: dict[float, list[float]] = {i: [] for i in WAKE_UP_INTERVALS}
    notifies: dict[float, int] = dict.fromkeys(WAKE_UP_INTERVALS, 0)
    async with await PostgresBackend.open(sides.url) as follower:
        watch = await follower.watch()
        try:
            for _ in range(config.rounds):
                for interval in WAKE_UP_INTERVALS:
                    backend.wakeups.interval = interval
                    sent = backend.wakeups.carried + backend.wakeups.alone
                    seconds, lags = await _watched_round(
                        sides.store, watch, plan, writers, per_writer
                    )
                    rates[interval].append(writers * per_writer / seconds)
                    delays[interval] += lags
                    notifies[interval] += backend.wakeups.carried + backend.wakeups.alone - sent
        finally:
            backend.wakeups.interval = INTERVAL  # the watch closes with its backend
    return {
        "backend": "postgresql",
        "workload": "watch",
        "n": writers * per_writer,
        "rounds": config.rounds,
        "writers": writers,
        "by_wake_up_interval_ms": {
            f"{interval * 1000:g}": {
                "ops_s": round(statistics.median(rates[interval]), 1),
                "latency_p50_ms": round(_quantile(delays[interval], 0.5) * 1000, 2),
                "latency_p99_ms": round(_quantile(delays[interval], 0.99) * 1000, 2),
                "notifies_per_round": notifies[interval] // config.rounds,
            }
            for interval in WAKE_UP_INTERVALS
        },
        "durability": sides.detail["durability"],
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def _watched_round(
    store: StateStore, watch: Any, plan: Plan, writers: int, per_writer: int
) -> tuple[float, list[float]]:
    """One round of the writers; the seconds it took and each write's delay from the
    start of its put to its delivery to the watcher."""
    # Each key is written by one writer, one put at a time, and delivered in version
    # order: its deliveries match its puts' start times first in, first out.
    started: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
    lags: list[float] = []
    total = writers * per_writer

    async def follow() -> None:
        async for record in watch:
            lags.append(time.perf_counter() - started[record.key].popleft())
            if len(lags) == total:
                return

    async def put(key: str, value: JSON) -> None:
        started[key].append(time.perf_counter())
        await store.put(key, value)

    following = asyncio.ensure_future(follow())
    round_ = plan.writers(per_writer, [put] * writers)
    seconds = await round_()
    await asyncio.wait_for(following, 60)
    return seconds, lags


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _drop(url: str) -> None:
    async with await PostgresBackend.open(url) as backend:
        await backend.drop_namespace(forget=True)
