"""The Redis benchmark: output shape and fairness, never speed (machines are noisy)."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from statekit_redis.bench import BATCH_SIZE, RawRedis, bench
from statekit_redis.options import parse_url

import statekit
from statekit import Write
from statekit.bench import BenchConfig

RATE_FIELDS = ("statekit_ops_s", "raw_ops_s", "ratio", "statekit_us_op", "raw_us_op")


async def bench_keys(raw: aioredis.Redis) -> set[bytes]:
    return {
        key
        for pattern in ("sk:{bench_*", "raw:{bench_*")
        async for key in raw.scan_iter(match=pattern, count=1000)
    }


@pytest.mark.asyncio
async def test_bench_yields_put_batch_and_concurrent(
    redis_url: str, raw: aioredis.Redis, tmp_path: Path
) -> None:
    before = await bench_keys(raw)
    config = BenchConfig(n=16, rounds=1, keys=4, url=redis_url)

    results = [r async for r in bench(config, tmp_path)]

    assert [r["workload"] for r in results] == ["put", "batch", "concurrent"]
    for result in results:
        assert result["backend"] == "redis"
        assert result["durability"] == "appendonly=yes appendfsync=everysec save=''"
        assert str(result["server"]).startswith("redis ")
        for name in RATE_FIELDS:
            value = result[name]
            assert isinstance(value, float | int) and math.isfinite(value) and value > 0, name
    assert [r["n"] for r in results] == [16, BATCH_SIZE, 16]
    assert results[1]["batch_size"] == BATCH_SIZE
    assert results[2]["writers"] == 8
    assert await bench_keys(raw) == before, "both namespaces are deleted afterwards"
    json.dumps(results)  # every line is JSON


@pytest.mark.asyncio
async def test_raw_side_keeps_the_same_data_in_keys_of_its_own(
    namespace_url: Callable[[], str],
    raw: aioredis.Redis,
    drop: Callable[[str], Awaitable[None]],
) -> None:
    """Same values, versions and one history entry per write; none of statekit's keys."""
    url, other = namespace_url(), namespace_url()
    hand = RawRedis(raw, parse_url(other).namespace)
    values = [{"qty": i, "px": 1.5, "side": "long", "name": "ü"} for i in range(3)]
    try:
        async with await statekit.open(url) as store:
            for value in values:
                await store.put("bench/1", value)
                assert await hand.put("bench/1", value) == [values.index(value) + 1]
            await store.batch([Write("bench/2", 2), Write("bench/3", [3])])
            assert await hand.batch([("bench/2", 2), ("bench/3", [3])]) == [1, 1]
            for key in ("bench/1", "bench/2", "bench/3"):
                ours = [(r.version, r.data) for r in reversed(await store.history(key))]
                entries = await raw.lrange(hand.history + key, 0, -1)
                theirs = [
                    (int(v), json.loads(d))
                    for v, _, d in (e.decode().split(" ", 2) for e in entries)
                ]
                assert ours == theirs
                assert json.loads(await raw.hget(hand.prefix + "values", key)) == ours[-1][1]
        theirs_in_statekit_layout = b"sk:{" + parse_url(other).namespace.encode()
        assert not [k async for k in raw.scan_iter(match=theirs_in_statekit_layout + b"*")]
    finally:
        await hand.drop()
        await drop(url)
        await drop(other)
