"""``python -m statekit.bench --backend postgresql``: statekit beside raw asyncpg.

Entry point ``postgresql`` in group ``statekit.bench``. Each workload pairs
statekit with the shortest asyncpg program that does the same durable work:
the very same ``SELECT statekit_append(...)`` with the same arguments (same
statements, same round trips, same server settings), in a namespace of its own.
Both namespaces are dropped afterwards.

- ``put``: ``store.put`` vs one asyncpg connection calling the function per write.
- ``batch``: ``store.batch`` of 500 writes vs the function with 500-element arrays.
- ``concurrent``: 8 tasks of ``store.put`` vs 8 tasks on an ``asyncpg.Pool`` of 8
  (asyncpg's defaults, a connection acquired per call). References:
  ``raw_held``, 8 tasks each holding a connection of its own (the floor for any
  pool); ``spread``, the 8 statekit writers each in a namespace of its own (what
  sharing one namespace's commit counter costs; docs/backends/postgresql.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from dataclasses import dataclass
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
from statekit_postgres import queries
from statekit_postgres.backend import PostgresBackend
from statekit_postgres.options import PostgresOptions

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
    """What a hand-written program sends for ``put`` and ``batch``: statekit_append."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    async def put(self, conn: Any, key: str, value: JSON) -> None:
        await conn.fetchval(
            queries.APPEND,
            self.namespace,
            [key],
            ["state"],
            [_compact(value)],
            ["{}"],
            [-1],
        )

    async def batch(self, conn: Any, items: list[tuple[str, JSON]]) -> None:
        size = len(items)
        await conn.fetchval(
            queries.APPEND,
            self.namespace,
            [key for key, _ in items],
            ["state"] * size,
            [_compact(value) for _, value in items],
            ["{}"] * size,
            [-1] * size,
        )


@dataclass
class _Sides:
    """What one run compares: statekit's store and the hand-written asyncpg side."""

    store: StateStore
    raw: _RawWriter
    raw_conn: Any
    raw_pool: Any
    held: list[Any]
    spread: list[StateStore]
    detail: dict[str, JSON]


async def _sides(stack: AsyncExitStack, config: BenchConfig) -> _Sides:
    url = server_url(config, "postgres")
    tag = uuid.uuid4().hex[:12]
    statekit_url = _with_namespace(url, f"bench_sk_{tag}")
    raw_url = _with_namespace(url, f"bench_raw_{tag}")
    raw_options = PostgresOptions.parse(raw_url)
    # Dropped last, after every connection below is closed.
    for namespace_url in (statekit_url, raw_url):
        stack.push_async_callback(_drop, namespace_url)
    store = await stack.enter_async_context(await statekit.open(statekit_url))
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    pool_size = config.writers
    # The raw side connects with statekit's own settings (application_name,
    # timeouts), so the server treats both alike.
    raw_conn = await asyncpg.connect(**raw_options.connect_kwargs())
    stack.push_async_callback(raw_conn.close)
    # concurrent: the pool as asyncpg makes it by default, and as a floor, one
    # connection held by each writer (no pool in the way at all).
    raw_pool = await asyncpg.create_pool(
        min_size=pool_size, max_size=pool_size, **raw_options.connect_kwargs()
    )
    stack.push_async_callback(raw_pool.close)
    held = [await asyncpg.connect(**raw_options.connect_kwargs()) for _ in range(pool_size)]
    for conn in held:
        stack.push_async_callback(conn.close)
    # The reference "spread": the same 8 writers, each in a namespace of its own,
    # to show what sharing one namespace's commit counter costs.
    spread = []
    for w in range(pool_size):
        spread_url = _with_namespace(url, f"bench_sk_{tag}_w{w}")
        stack.push_async_callback(_drop, spread_url)
        spread.append(await stack.enter_async_context(await statekit.open(spread_url)))
    sync_sk = (await backend.health()).detail["synchronous_commit"]
    sync_raw = await raw_conn.fetchval("SHOW synchronous_commit")
    if sync_sk != sync_raw:
        raise RuntimeError(f"raw side runs synchronous_commit={sync_raw}, statekit {sync_sk}")
    detail: dict[str, JSON] = {
        "durability": f"synchronous_commit={sync_raw}",
        "server_version": str(await raw_conn.fetchval("SHOW server_version")),
        "keys": config.keys,
    }
    raw = _RawWriter(raw_options.namespace)
    return _Sides(store, raw, raw_conn, raw_pool, held, spread, detail)


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put``, ``batch`` and ``concurrent`` through statekit next to raw asyncpg."""
    async with AsyncExitStack() as stack:
        sides = await _sides(stack, config)
        store, raw, raw_conn, raw_pool = sides.store, sides.raw, sides.raw_conn, sides.raw_pool
        held, spread, detail, pool_size = sides.held, sides.spread, sides.detail, config.writers

        plan = Plan([f"bench/{i}" for i in range(config.keys)])
        batch_keys = [f"bench/batch/{i}" for i in range(BATCH_SIZE)]
        # Every key is written once first, so timed rounds update existing heads.
        for key, value in plan.items(len(plan.keys)) + plan.items(BATCH_SIZE, batch_keys):
            await raw.put(raw_conn, key, value)
            await store.put(key, value)

        async def raw_put(key: str, value: JSON) -> None:
            await raw.put(raw_conn, key, value)

        put = Workload(
            "put",
            config.n,
            plan.puts(config.n, store.put),
            plan.puts(config.n, raw_put),
            detail=detail,
        )
        yield await measure("postgresql", put, config.rounds)

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
        yield await measure("postgresql", batch, config.rounds)

        # concurrent: each writer has keys of its own, so the writers contend for the
        # namespace's commit counter (see docs/backends/postgresql.md), not for one key.
        writers = config.writers
        per_writer = max(1, config.n // writers)

        async def pooled_put(key: str, value: JSON) -> None:
            async with raw_pool.acquire() as conn:
                await raw.put(conn, key, value)

        def held_put(conn: Any) -> PutFn:
            async def put(key: str, value: JSON) -> None:
                await raw.put(conn, key, value)

            return put

        concurrent = Workload(
            "concurrent",
            per_writer * writers,
            plan.writers(per_writer, [store.put] * writers),
            plan.writers(per_writer, [pooled_put] * writers),
            {
                "raw_held": plan.writers(per_writer, [held_put(c) for c in held]),
                "spread": plan.writers(per_writer, [o.put for o in spread]),
            },
            {**detail, "writers": writers, "pool_size": pool_size},
        )
        yield await measure("postgresql", concurrent, config.rounds)


async def _drop(url: str) -> None:
    async with await PostgresBackend.open(url) as backend:
        await backend.drop_namespace(forget=True)
