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

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import asyncpg  # type: ignore[import-untyped]

import statekit
from statekit.backend import JSON, Write
from statekit.bench import BenchConfig, Result, Workload, measure, sample_value, server_url
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
    base, _, query = url.partition("?")
    pairs = [(n, v) for n, v in parse_qsl(query, keep_blank_values=True) if n != "namespace"]
    return f"{base}?{urlencode([*pairs, ('namespace', namespace)])}"


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
            datetime.now(UTC),
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
            datetime.now(UTC),
        )


async def _timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put``, ``batch`` and ``concurrent`` through statekit next to raw asyncpg."""
    url = server_url(config, "postgres")
    tag = uuid.uuid4().hex[:12]
    statekit_url = _with_namespace(url, f"bench_sk_{tag}")
    raw_url = _with_namespace(url, f"bench_raw_{tag}")
    raw_options = PostgresOptions.parse(raw_url)
    async with AsyncExitStack() as stack:
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
        raw = _RawWriter(raw_options.namespace)
        # The reference "spread": the same 8 writers, each in a namespace of its own,
        # to show what sharing one namespace's commit counter costs.
        spread_urls = [_with_namespace(url, f"bench_sk_{tag}_w{w}") for w in range(pool_size)]
        spread = []
        for spread_url in spread_urls:
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

        keys = [f"bench/{i}" for i in range(config.keys)]
        counter = 0

        def next_items(count: int, among: list[str] = keys) -> list[tuple[str, JSON]]:
            nonlocal counter
            start, counter = counter, counter + count
            return [(among[i % len(among)], sample_value(i)) for i in range(start, start + count)]

        # Every key is written once first, so timed rounds update existing heads.
        for key, value in next_items(len(keys)):
            await raw.put(raw_conn, key, value)
            await store.put(key, value)

        # -- put -----------------------------------------------------------------------

        async def raw_put() -> float:
            items = next_items(config.n)

            async def work() -> None:
                for key, value in items:
                    await raw.put(raw_conn, key, value)

            return await _timed(work)

        async def statekit_put() -> float:
            items = next_items(config.n)

            async def work() -> None:
                for key, value in items:
                    await store.put(key, value)

            return await _timed(work)

        put = Workload("put", config.n, statekit_put, raw_put, detail=detail)
        yield await measure("postgresql", put, config.rounds)

        # -- batch ---------------------------------------------------------------------

        batch_keys = [f"bench/batch/{i}" for i in range(BATCH_SIZE)]
        batches = max(2, config.n // BATCH_SIZE)

        async def raw_batch() -> float:
            groups = [next_items(BATCH_SIZE, batch_keys) for _ in range(batches)]

            async def work() -> None:
                for group in groups:
                    await raw.batch(raw_conn, group)

            return await _timed(work)

        async def statekit_batch() -> float:
            groups = [
                [Write(k, v) for k, v in next_items(BATCH_SIZE, batch_keys)] for _ in range(batches)
            ]

            async def work() -> None:
                for group in groups:
                    await store.batch(group)

            return await _timed(work)

        batch = Workload(
            "batch",
            batches * BATCH_SIZE,
            statekit_batch,
            raw_batch,
            detail={**detail, "batch_size": BATCH_SIZE},
        )
        yield await measure("postgresql", batch, config.rounds)

        # -- concurrent ----------------------------------------------------------------

        writers = config.writers
        per_writer = max(1, config.n // writers)
        # Each writer has keys of its own: the writers contend for the namespace's
        # commit counter (see docs/backends/postgresql.md), not for one key.
        own_keys = [[k for i, k in enumerate(keys) if i % writers == w] for w in range(writers)]

        def plan() -> list[list[tuple[str, JSON]]]:
            return [next_items(per_writer, own_keys[w] or keys) for w in range(writers)]

        async def raw_concurrent() -> float:
            work_of = plan()

            async def writer(items: list[tuple[str, JSON]]) -> None:
                for key, value in items:
                    async with raw_pool.acquire() as conn:
                        await raw.put(conn, key, value)

            return await _timed(lambda: asyncio.gather(*(writer(w) for w in work_of)))

        async def raw_held() -> float:
            work_of = plan()

            async def writer(conn: Any, items: list[tuple[str, JSON]]) -> None:
                for key, value in items:
                    await raw.put(conn, key, value)

            return await _timed(
                lambda: asyncio.gather(*(writer(c, w) for c, w in zip(held, work_of, strict=True)))
            )

        async def statekit_concurrent() -> float:
            work_of = plan()

            async def writer(items: list[tuple[str, JSON]]) -> None:
                for key, value in items:
                    await store.put(key, value)

            return await _timed(lambda: asyncio.gather(*(writer(w) for w in work_of)))

        async def statekit_spread() -> float:
            work_of = plan()

            async def writer(own: StateStore, items: list[tuple[str, JSON]]) -> None:
                for key, value in items:
                    await own.put(key, value)

            return await _timed(
                lambda: asyncio.gather(
                    *(writer(o, w) for o, w in zip(spread, work_of, strict=True))
                )
            )

        concurrent = Workload(
            "concurrent",
            per_writer * writers,
            statekit_concurrent,
            raw_concurrent,
            {"raw_held": raw_held, "spread": statekit_spread},
            {**detail, "writers": writers, "pool_size": pool_size},
        )
        yield await measure("postgresql", concurrent, config.rounds)


async def _drop(url: str) -> None:
    async with await PostgresBackend.open(url) as backend:
        await backend.drop_namespace(forget=True)
