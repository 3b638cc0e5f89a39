"""The benchmark runs, compares like with like, and leaves nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres import PostgresBackend, PostgresOptions
from statekit_postgres.bench import _RawWriter, bench

from statekit.backend import Write
from statekit.bench import BenchConfig, names, runner, sample_value
from statekit.store import StateStore

from .conftest import require_postgres

ROWS = (
    "SELECT key, version, data::text FROM statekit_versions "
    "WHERE ns = $1 ORDER BY xid, commit_seq, pos"
)


def test_the_bench_is_registered() -> None:
    assert "postgresql" in names()
    assert runner("postgresql") is bench


@pytest.mark.asyncio
async def test_raw_side_keeps_the_same_data_as_statekit(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    """Same values, same versions, one history row per write: in its own tables,
    through its own statements (both forms), never statekit's."""
    backend: PostgresBackend = await open_backend("benchsk")
    store = StateStore(backend, owns_backend=False)
    raw = _RawWriter(f"benchraw_{uuid.uuid4().hex[:12]}")
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        for statement in raw.create:
            await admin.execute(statement)
        items = [(f"bench/{i % 3}", sample_value(i)) for i in range(7)]
        for n, (key, value) in enumerate(items):
            await store.put(key, value)
            if n % 2:
                await raw.put(admin, key, value)
            else:
                await raw.put_one_statement(admin, key, value)
        await store.batch([Write(k, v) for k, v in items[:3]])
        await raw.batch(admin, items[:3])
        await store.batch([Write(k, v) for k, v in items[3:6]])
        await raw.batch_one_statement(admin, items[3:6])
        ours = await admin.fetch(ROWS, backend.namespace)
        theirs = await admin.fetch(
            f"SELECT key, version, value::text FROM {raw.history} ORDER BY at, key"
        )
        heads = await admin.fetch(f"SELECT key, version, value::text FROM {raw.heads}")
    finally:
        await admin.execute(raw.drop)
        await admin.close()
    assert sorted(tuple(r) for r in ours) == sorted(tuple(r) for r in theirs)
    assert len(ours) == 13
    assert {tuple(r) for r in heads} == {
        max((tuple(r) for r in ours if r[0] == key), key=lambda r: r[1])
        for key in {r[0] for r in ours}
    }


@pytest.mark.asyncio
async def test_a_short_run_reports_every_workload_and_cleans_up(
    pg_url: str, tmp_path: Path
) -> None:
    await require_postgres(pg_url)
    namespaces = "SELECT count(DISTINCT ns) FROM statekit_heads WHERE ns LIKE 'bench\\_%'"
    tables = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'bench\\_raw\\_%'"
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        before = (await admin.fetchval(namespaces), await admin.fetchval(tables))
        config = BenchConfig(n=40, rounds=1, url=pg_url, writers=4, keys=8)
        results = [r async for r in bench(config, tmp_path)]
        after = (await admin.fetchval(namespaces), await admin.fetchval(tables))
    finally:
        await admin.close()
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent", "watch"]
    *results, watch = results
    assert watch["durability"] == "synchronous_commit=on"
    by_interval = watch["by_wake_up_interval_ms"]
    assert isinstance(by_interval, dict) and set(by_interval) == {"0", "2", "10"}
    for figures in by_interval.values():
        assert isinstance(figures, dict) and figures["ops_s"] > 0  # type: ignore[operator]
    for result in results:
        assert result["backend"] == "postgresql"
        assert isinstance(result["ratio"], float) and result["ratio"] > 0
        assert result["durability"] == "synchronous_commit=on"
        assert "raw_one_statement_ops_s" in result
    assert results[1]["batch_size"] == 500
    assert "raw_held_ops_s" in results[2]
    assert after == before
