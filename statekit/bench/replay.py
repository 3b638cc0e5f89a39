"""How fast a fallback journal drains: ``python -m statekit.bench replay [--url URL] [--n N]``.

A journal left by an outage holds ``--n`` writes (default 10,000, one ``put`` each, as a
bot makes them) over 100 keys. The store is opened on the primary ``--url`` with that
journal, as a process restarted after the outage does, and timed until the journal is
empty. Workloads:

- ``replay``: entries never sent (the primary was already down when they were made);
- ``replay_uncertain``: every entry's outcome unknown (as after a replay whose answer
  was lost): each key's versions are searched for the write ids first;
- ``replay_one_key``: all writes to one key (appends carry distinct keys, so this is
  one round trip per write: the worst case).

The other side, on PostgreSQL: the same rows (history row and head, the same data kept)
inserted by hand with asyncpg ``executemany`` in transactions of 1,000, as a user
draining a local backlog into tables of their own would. On other backends there is
no hand-written side (``raw_writes_s`` is null). Target: ``statekit_writes_s`` of
``replay`` at least 2,000 on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import statekit
from statekit.backend import JSON, Write
from statekit.bench.harness import BenchConfig, Result, drop_namespace
from statekit.bench.history import _with_namespace
from statekit.codec import to_micros
from statekit.config import Settings
from statekit.tiered import WRITE_ID, FallbackJournal, TieredBackend

__all__ = ["TARGET", "bench_replay"]

TARGET = 2000.0
"""Writes per second a journal must drain at into PostgreSQL."""
KEYS = 100
CHUNK = 1000


def _value(i: int) -> JSON:
    return {"symbol": f"SYM{i % KEYS}", "qty": i, "px": 64250.5}


async def _journal(path: Path, n: int, keys: int, *, uncertain: bool) -> None:
    journal = await FallbackJournal.open(path)
    try:
        now = to_micros(datetime.now(UTC))
        for start in range(0, n, CHUNK):
            await _add_many(journal, range(start, min(n, start + CHUNK)), keys, now, uncertain)
    finally:
        await journal.aclose()


async def _add_many(
    journal: FallbackJournal, indexes: range, keys: int, now: int, uncertain: bool
) -> None:
    await asyncio.gather(
        *(
            journal.add(
                [Write(f"pos/{i % keys}", _value(i), "position", {WRITE_ID: uuid.uuid4().hex})],
                now + i,
                uncertain=uncertain,
            )
            for i in indexes
        )
    )


async def _drain(url: str, path: Path) -> float:
    started = time.perf_counter()
    store = await statekit.open(url, settings=Settings(), fallback=str(path))
    try:
        backend = store.backend
        assert isinstance(backend, TieredBackend)
        await backend.settle()
        elapsed = time.perf_counter() - started
        pending = (await backend.health()).detail["fallback"]
        assert isinstance(pending, dict) and pending["pending"] == 0, pending
        assert pending["rejected"] == 0, pending
    finally:
        await drop_namespace(store.backend.origin)
        await store.aclose()
    return elapsed


async def _raw_postgres(url: str, n: int, keys: int) -> float:
    """The same rows by hand: a history row and a head per write, 1,000 per transaction."""
    import asyncpg  # type: ignore[import-untyped]

    base = url.partition("?")[0]
    table = f"bench_replay_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(
            f"CREATE TABLE {table}_history (key text, version bigint, data jsonb, meta jsonb, "
            f"at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (key, version));"
            f"CREATE TABLE {table}_heads (key text PRIMARY KEY, version bigint, data jsonb)"
        )
        started = time.perf_counter()
        versions: dict[str, int] = {}
        for start in range(0, n, CHUNK):
            rows = []
            for i in range(start, min(n, start + CHUNK)):
                key = f"pos/{i % keys}"
                versions[key] = versions.get(key, 0) + 1
                meta = json.dumps({WRITE_ID: uuid.uuid4().hex})
                rows.append((key, versions[key], json.dumps(_value(i)), meta))
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {table}_history (key, version, data, meta) "
                    "VALUES ($1, $2, $3::jsonb, $4::jsonb)",
                    rows,
                )
                await conn.executemany(
                    f"INSERT INTO {table}_heads (key, version, data) VALUES ($1, $2, $3::jsonb) "
                    "ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, "
                    "data = EXCLUDED.data",
                    [r[:3] for r in rows],
                )
        return time.perf_counter() - started
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}_history, {table}_heads")
        await conn.close()


async def bench_replay(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """Drain rates of a journal of ``config.n`` writes into the primary ``config.url``."""
    n = config.n if config.n != 1000 else 10_000  # the shared default is too small here
    url = config.url or f"sqlite:///{scratch / 'primary.db'}"
    scheme = urlsplit(url).scheme
    postgres = scheme in ("postgresql", "postgres")
    async with await statekit.open("memory://", settings=Settings()):
        pass  # plugins are imported once, before any timing
    for workload, keys, uncertain in (
        ("replay", KEYS, False),
        ("replay_uncertain", KEYS, True),
        ("replay_one_key", 1, False),
    ):
        count = n if keys > 1 else min(n, 2000)
        seconds: list[float] = []
        raw: list[float] = []
        for round_no in range(config.rounds):
            path = scratch / f"{workload}-{round_no}.db"
            await _journal(path, count, keys, uncertain=uncertain)
            target = url
            if scheme in ("postgresql", "postgres", "redis", "rediss", "mongodb"):
                target = _with_namespace(url, f"bench_replay_{uuid.uuid4().hex[:12]}")
            elif scheme == "sqlite":
                target = f"sqlite:///{scratch / f'primary-{workload}-{round_no}.db'}"
            seconds.append(await _drain(target, path))
            if postgres:
                raw.append(await _raw_postgres(url, count, keys))
        statekit_s = statistics.median(seconds)
        rate = count / statekit_s
        result: Result = {
            "benchmark": "replay",
            "workload": workload,
            "backend": scheme,
            "writes": count,
            "keys": keys,
            "rounds": config.rounds,
            "statekit_writes_s": round(rate, 1),
            "statekit_s": round(statekit_s, 3),
            "raw_writes_s": round(count / statistics.median(raw), 1) if raw else None,
            "ratio": round(statistics.median(raw) / statekit_s, 3) if raw else None,
            "raw": "asyncpg executemany: history row + head upsert, 1,000 per transaction"
            if raw
            else None,
            "includes": "opening the store, looking write ids up (uncertain), replaying",
        }
        if workload == "replay" and postgres:
            result["target_writes_s"] = TARGET
            result["met"] = rate >= TARGET
        yield result
