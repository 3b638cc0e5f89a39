"""The MySQL benchmark: registered, every workload reported with its durability, the
raw side keeps the same data in tables of its own, and nothing is left behind."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiomysql  # type: ignore[import-untyped]
import pytest
from statekit_mysql.bench import RawWriter, bench, connect_kwargs

import statekit
from statekit.backend import Write
from statekit.bench import BenchConfig, names, runner, sample_value

from .conftest import open_or_skip, with_query


def test_the_bench_is_registered() -> None:
    assert "mysql" in names()
    assert runner("mysql") is bench


@pytest.mark.asyncio
async def test_raw_side_keeps_the_same_data_as_statekit(mysql_url: str) -> None:
    url = with_query(mysql_url, namespace=f"benchsk_{uuid.uuid4().hex[:12]}")
    backend = await open_or_skip(url)
    await backend.aclose()
    raw = RawWriter(f"benchraw_{uuid.uuid4().hex[:12]}")
    conn = await aiomysql.connect(**connect_kwargs(mysql_url))
    try:
        async with conn.cursor() as cur:
            for statement in raw.create:
                await cur.execute(statement)
        async with await statekit.open(url) as store:
            items = [(f"bench/{i % 3}", sample_value(i)) for i in range(7)]
            for key, value in items:
                record = await store.put(key, value)
                assert await raw.put(conn, key, value) == record.version
            await store.batch([Write(k, v) for k, v in items[:3]])
            await raw.batch(conn, items[:3])
            ours = []
            for key in {k for k, _ in items}:
                ours += [(key, r.version, r.data) for r in await store.history(key)]
            ours.sort()
            await store.backend.drop_namespace(forget=True)  # type: ignore[attr-defined]
        async with conn.cursor() as cur:
            await cur.execute(f"SELECT k, version, value FROM {raw.history}")
            theirs = sorted(
                (bytes(k).decode(), v, json.loads(bytes(d))) for k, v, d in await cur.fetchall()
            )
    finally:
        async with conn.cursor() as cur:
            await cur.execute(raw.drop)
        conn.close()
    assert ours == theirs and len(ours) == 10


@pytest.mark.asyncio
async def test_a_short_run_reports_every_workload_and_cleans_up(
    mysql_url: str, tmp_path: Path
) -> None:
    backend = await open_or_skip(mysql_url)
    await backend.aclose()
    tables = (
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name LIKE 'bench\\\\_raw\\\\_%'"
    )
    conn = await aiomysql.connect(**connect_kwargs(mysql_url))
    try:
        async with conn.cursor() as cur:
            await cur.execute(tables)
            before = await cur.fetchone()
        config = BenchConfig(n=40, rounds=1, url=mysql_url, writers=4, keys=8)
        results = [r async for r in bench(config, tmp_path)]
        async with conn.cursor() as cur:
            await cur.execute(tables)
            after = await cur.fetchone()
    finally:
        conn.close()
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent"]
    for result in results:
        assert result["backend"] == "mysql"
        assert isinstance(result["ratio"], float) and result["ratio"] > 0
        assert str(result["durability"]).startswith("innodb_flush_log_at_trx_commit=")
    assert results[2]["writers"] == 4
    assert after == before
