"""The benchmark runs, compares like with like, and leaves nothing behind."""

from __future__ import annotations

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
    "SELECT key, version, kind, data::text, meta::text, pos FROM statekit_versions "
    "WHERE ns = $1 ORDER BY commit_seq, pos"
)


def test_the_bench_is_registered() -> None:
    assert "postgresql" in names()
    assert runner("postgresql") is bench


@pytest.mark.asyncio
async def test_raw_side_stores_the_same_rows_as_statekit(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    backend: PostgresBackend = await open_backend("benchsk")
    raw_backend: PostgresBackend = await open_backend("benchraw")
    store = StateStore(backend, owns_backend=False)
    raw = _RawWriter(raw_backend.namespace)
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        items = [(f"bench/{i % 3}", sample_value(i)) for i in range(7)]
        for key, value in items:
            await store.put(key, value)
            await raw.put(admin, key, value)
        await store.batch([Write(k, v) for k, v in items[:3]])
        await raw.batch(admin, items[:3])
        ours = await admin.fetch(ROWS, backend.namespace)
        theirs = await admin.fetch(ROWS, raw_backend.namespace)
    finally:
        await admin.close()
    assert [tuple(r) for r in ours] == [tuple(r) for r in theirs]
    assert len(ours) == 10


@pytest.mark.asyncio
async def test_a_short_run_reports_every_workload_and_cleans_up(
    pg_url: str, tmp_path: Path
) -> None:
    await require_postgres(pg_url)
    count = "SELECT count(*) FROM statekit_namespaces WHERE ns LIKE 'bench\\_%'"
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        before = await admin.fetchval(count)
        config = BenchConfig(n=40, rounds=1, url=pg_url, writers=4, keys=8)
        results = [r async for r in bench(config, tmp_path)]
        after = await admin.fetchval(count)
    finally:
        await admin.close()
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent"]
    for result in results:
        assert result["backend"] == "postgresql"
        assert isinstance(result["ratio"], float) and result["ratio"] > 0
        assert result["durability"] == "synchronous_commit=on"
    assert results[1]["batch_size"] == 500
    assert "raw_held_ops_s" in results[2] and "spread_ops_s" in results[2]
    assert after == before
