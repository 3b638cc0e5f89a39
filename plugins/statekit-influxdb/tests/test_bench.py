"""The InfluxDB benchmark: output shape and fairness, never speed (machines are noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from statekit_influxdb.bench import RawInflux, bench
from statekit_influxdb.points import record_line

from statekit.backend import Record
from statekit.bench import BenchConfig, sample_value
from statekit.codec import from_micros


@pytest.mark.asyncio
async def test_raw_side_writes_the_points_statekit_writes(influx_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        raw = RawInflux(session, influx_url, "ns1")
        value = sample_value(3)
        micros = 1_700_000_000_123_456
        record = Record("bench/3", 7, "state", value, {}, from_micros(micros))
        assert raw.line("bench/3", 7, value, micros) == record_line("statekit,ns=ns1", record)


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
