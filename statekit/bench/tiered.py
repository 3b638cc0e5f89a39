"""``python -m statekit.bench tiered``: the read cache in front of PostgreSQL.

A PostgreSQL store with the read cache on (``cache=True``) beside :class:`_RawCachedTable`,
what a user writes by hand for the same thing with asyncpg: tables of its own in a schema
of its own (a head row per key, a history row per version), written in one statement per
put, and a dict in front of them for reads.

- ``cached_get``: ``store.get`` served by statekit's cache, beside the hand-written
  cache's dict lookup (the floor any in-process cache can reach).
- ``get``: the same cached ``store.get``, beside the hand-written read that does not
  cache (``SELECT`` of the head row); the statekit store without a cache is timed in
  the same rounds as the ``uncached`` reference. A ratio above 1 is the cache's gain.
- ``put``: a write through statekit's tiers (PostgreSQL, then the cache), beside the
  hand-written one-statement put (head upsert + history insert) that then updates its
  dict; ``uncached`` is ``store.put`` without the cache.

Every line prints ``durability``: a put is durable in PostgreSQL when it returns
(``synchronous_commit`` read back from both connections; the run stops if they differ);
the caches on both sides are process memory, lost in a crash and refilled from
PostgreSQL. Both schemas are dropped afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
from statekit.errors import StatekitError
from statekit.store import StateStore

__all__ = ["bench_tiered"]


class _RawCachedTable:
    """A cached versioned table by hand: asyncpg, a schema of its own, a dict in front.

    ``put`` is one autocommit statement (the head's upsert returns the new version, the
    history insert uses it), so it is atomic and durable when it returns; then the dict
    gets the value. ``get`` reads the dict; ``read`` always asks the table.
    """

    def __init__(self, con: Any, schema: str) -> None:
        self.con = con
        self.schema = schema
        self.cache: dict[str, tuple[int, JSON]] = {}
        heads, history = f'"{schema}".heads', f'"{schema}".history'
        self.put_sql = (
            f"WITH head AS (INSERT INTO {heads} AS h (key, version, value) VALUES ($1, 1, $2) "
            "ON CONFLICT (key) DO UPDATE SET version = h.version + 1, value = excluded.value "
            f"RETURNING version) INSERT INTO {history} (key, version, value, at) "
            "SELECT $1, version, $2, now() FROM head RETURNING version"
        )
        self.read_sql = f"SELECT version, value FROM {heads} WHERE key = $1"
        self.schema_sql = (
            f'CREATE SCHEMA "{schema}"',
            f"CREATE TABLE {heads} (key text PRIMARY KEY, version bigint NOT NULL, "
            "value jsonb NOT NULL)",
            f"CREATE TABLE {history} (key text NOT NULL, version bigint NOT NULL, "
            "value jsonb NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (key, version))",
        )

    @classmethod
    async def open(cls, url: str) -> _RawCachedTable:
        import asyncpg  # type: ignore[import-untyped]  # comes with statekit-postgres

        parts = urlsplit(url)
        con = await asyncpg.connect(urlunsplit((*parts[:3], "", "")))
        raw = cls(con, f"bench_tiered_raw_{uuid.uuid4().hex[:8]}")
        for statement in raw.schema_sql:
            await con.execute(statement)
        return raw

    async def durability(self) -> str:
        return f"synchronous_commit={await self.con.fetchval('SHOW synchronous_commit')}"

    async def put(self, key: str, value: JSON) -> None:
        text = json.dumps(value, separators=(",", ":"))
        version = await self.con.fetchval(self.put_sql, key, text)
        self.cache[key] = (int(version), value)

    async def get(self, key: str) -> tuple[int, JSON] | None:
        return self.cache.get(key)

    async def read(self, key: str) -> tuple[int, JSON] | None:
        row = await self.con.fetchrow(self.read_sql, key)
        return None if row is None else (int(row[0]), json.loads(row[1]))

    async def aclose(self) -> None:
        try:
            await self.con.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await self.con.close()


def _timed_reads(reads: Sequence[str], get: Callable[[str], Awaitable[object]]) -> Timed:
    async def run() -> float:
        started = time.perf_counter()
        for key in reads:
            await get(key)
        return time.perf_counter() - started

    return run


def _timed_puts(
    count: int, keys: Sequence[str], put: Callable[[str, JSON], Awaitable[object]]
) -> Timed:
    turn = 0

    async def run() -> float:
        nonlocal turn
        started = time.perf_counter()
        for _ in range(count):
            turn += 1
            await put(keys[turn % len(keys)], sample_value(turn))
        return time.perf_counter() - started

    return run


def _workloads(
    config: BenchConfig,
    keys: Sequence[str],
    cached: StateStore,
    plain: StateStore,
    raw: _RawCachedTable,
    detail: dict[str, JSON],
) -> list[Workload]:
    reads = [keys[i % len(keys)] for i in range(config.n)]
    return [
        Workload(
            "cached_get",
            config.n,
            _timed_reads(reads, cached.get),
            _timed_reads(reads, raw.get),
            detail={**detail, "raw": "a dict lookup in the hand-written cache"},
        ),
        Workload(
            "get",
            config.n,
            _timed_reads(reads, cached.get),
            _timed_reads(reads, raw.read),
            references={"uncached": _timed_reads(reads, plain.get)},
            detail={**detail, "raw": "asyncpg SELECT of the head row, no cache"},
        ),
        Workload(
            "put",
            config.n,
            _timed_puts(config.n, keys, cached.put),
            _timed_puts(config.n, keys, raw.put),
            references={"uncached": _timed_puts(config.n, keys, plain.put)},
            detail={
                **detail,
                "raw": "asyncpg: one statement (head upsert + history insert), then the dict",
            },
        ),
    ]


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
        raw = await _RawCachedTable.open(base)
        stack.push_async_callback(raw.aclose)
        ours = f"synchronous_commit={(await plain.health()).detail['synchronous_commit']}"
        if ours != await raw.durability():
            raise StatekitError(f"tiered bench: statekit runs {ours}, raw {await raw.durability()}")
        keys = [f"bench/{i}" for i in range(config.keys)]
        for i, key in enumerate(keys):
            await cached.put(key, sample_value(i))
            await raw.put(key, sample_value(i))
        detail: dict[str, JSON] = {
            "keys": config.keys,
            "cache_max_size": settings.cache.max_size,
            "durability": f"put: in PostgreSQL when it returns ({ours}), both sides; "
            "cache: process memory on both sides, lost in a crash",
        }
        for workload in _workloads(config, keys, cached, plain, raw, detail):
            yield await measure("tiered", workload, config.rounds)
