"""The InfluxDB benchmark: output shape and fairness, never speed (machines are noisy)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiohttp
import pytest
from statekit_influxdb.bench import RawInflux, bench
from statekit_influxdb.options import with_options

import statekit
from statekit.bench import BenchConfig, sample_value


@pytest.mark.asyncio
async def test_raw_side_keeps_the_values_versions_and_history_statekit_keeps(
    influx_url: str,
) -> None:
    """The hand-written side is its own design (not statekit's points), but it keeps the
    same thing per write: the value, the next version, one history point."""
    run = uuid.uuid4().hex[:8]
    values = [sample_value(i) for i in range(4)]
    async with aiohttp.ClientSession() as session:
        raw = RawInflux(session, influx_url, f"bench_raw_{run}")
        await raw.create_database()  # the test may run before anything made it
        try:
            for value in values:
                await raw.put("bench/3", value)
            kept = await raw.history("bench/3")
        finally:
            await raw.drop()
        assert await raw.history("bench/3") == []
    async with await statekit.open(with_options(influx_url, namespace=f"t_{run}")) as store:
        try:
            for value in values:
                await store.put("bench/3", value)
            ours = await store.history("bench/3", newest_first=False)
        finally:
            await store.backend.drop_namespace()
    assert kept == [(r.version, r.data) for r in ours] == list(enumerate(values, start=1))


@pytest.mark.asyncio
async def test_both_lines_say_what_a_crash_keeps(influx_url: str, tmp_path: Path) -> None:
    config = BenchConfig(n=3, rounds=1, keys=2, url=influx_url)
    results = [result async for result in bench(config, tmp_path)]
    for result in results:
        assert "WAL" in str(result["durability"]) and "precision=ns" in str(result["durability"])


@pytest.mark.asyncio
async def test_bench_yields_put_and_replicate(influx_url: str, tmp_path: Path) -> None:
    config = BenchConfig(n=20, rounds=1, keys=5, url=influx_url)
    results = [result async for result in bench(config, tmp_path)]
    assert [r["workload"] for r in results] == ["put", "replicate"]
    for result in results:
        json.dumps(result)
        assert result["backend"] == "influxdb"
        assert isinstance(result["ratio"], float) and result["ratio"] > 0
    assert results[1]["n"] == 1000 and results[1]["batch_size"] == 1000
