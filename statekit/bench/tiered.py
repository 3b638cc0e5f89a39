"""``python -m statekit.bench tiered``: the read cache in front of PostgreSQL.

A PostgreSQL store with the read cache on, beside the same store without it.
``cached_get``: ``store.get`` served by the cache, beside a plain dict lookup of
the same records (the floor any cache can reach). ``get``: cached beside uncached
reads from PostgreSQL (a ratio above 1 is the cache's gain). ``put``: a write
through the tiers beside a plain write (the tiers' cost on the write path).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import statekit
from statekit.backend import JSON
from statekit.bench.harness import (
    BenchConfig,
    Result,
    Timed,
    Workload,
    drop_namespace,
    measure,
    sample_value,
    server_url,
)
from statekit.config import load_settings
from statekit.store import StateStore

__all__ = ["bench_tiered"]


def _timed_reads(reads: Sequence[str], get: Callable[[str], Awaitable[object]]) -> Timed:
    async def run() -> float:
        started = time.perf_counter()
        for key in reads:
            await get(key)
        return time.perf_counter() - started

    return run


def _read_workloads(
    config: BenchConfig,
    keys: Sequence[str],
    cached: StateStore,
    plain: StateStore,
    table: dict[str, object],
    detail: dict[str, JSON],
) -> list[Workload]:
    reads = [keys[i % len(keys)] for i in range(config.n)]

    async def dict_get(key: str) -> object:
        return table[key]

    return [
        Workload(
            "cached_get",
            config.n,
            _timed_reads(reads, cached.get),
            _timed_reads(reads, dict_get),
            detail=detail,
        ),
        Workload(
            "get",
            config.n,
            _timed_reads(reads, cached.get),
            _timed_reads(reads, plain.get),
            detail={**detail, "raw": "the same PostgreSQL store without the cache"},
        ),
    ]


def _put_workload(
    config: BenchConfig,
    keys: Sequence[str],
    cached: StateStore,
    plain: StateStore,
    detail: dict[str, JSON],
) -> Workload:
    counter = 0

    def timed_puts(store: StateStore) -> Timed:
        async def run() -> float:
            nonlocal counter
            started = time.perf_counter()
            for _ in range(config.n):
                counter += 1
                await store.put(keys[counter % len(keys)], sample_value(counter))
            return time.perf_counter() - started

        return run

    return Workload(
        "put",
        config.n,
        timed_puts(cached),
        timed_puts(plain),
        detail={**detail, "raw": "the same PostgreSQL store without tiers"},
    )


async def bench_tiered(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``cached_get``, ``get`` and ``put`` (see the module docstring); ``scratch`` is unused."""
    base = server_url(config, "postgres")
    namespace = f"bench_tiered_{uuid.uuid4().hex[:8]}"
    url = f"{base}{'&' if '?' in base else '?'}namespace={namespace}"
    settings = load_settings(config_file="", env_file="")
    async with AsyncExitStack() as stack:
        cached = await stack.enter_async_context(
            await statekit.open(url, settings=settings, cache=True)
        )
        plain = await stack.enter_async_context(await statekit.open(url, settings=settings))
        stack.push_async_callback(drop_namespace, plain.backend)
        keys = [f"bench/{i}" for i in range(config.keys)]
        for i, key in enumerate(keys):
            await cached.put(key, sample_value(i))
        table: dict[str, object] = {key: await plain.get(key) for key in keys}
        detail: dict[str, JSON] = {"keys": config.keys, "cache_max_size": settings.cache.max_size}
        for workload in _read_workloads(config, keys, cached, plain, table, detail):
            yield await measure("tiered", workload, config.rounds)
        yield await measure(
            "tiered", _put_workload(config, keys, cached, plain, detail), config.rounds
        )
