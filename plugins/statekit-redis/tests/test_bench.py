"""The Redis benchmark: output shape and fairness, never speed (machines are noisy)."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from statekit_redis import Layout
from statekit_redis.bench import BATCH_SIZE, RawRedis, bench
from statekit_redis.options import parse_url

import statekit
from statekit import Write
from statekit.bench import BenchConfig

RATE_FIELDS = ("statekit_ops_s", "raw_ops_s", "ratio", "statekit_us_op", "raw_us_op")


async def bench_keys(raw: aioredis.Redis) -> set[bytes]:
    return {key async for key in raw.scan_iter(match="sk:{bench_*", count=1000)}


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


def without_time(text: bytes) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(text)
    assert isinstance(record.pop("at"), int)
    return record


@pytest.mark.asyncio
async def test_raw_side_stores_what_statekit_stores(
    namespace_url: Callable[[], str],
    raw: aioredis.Redis,
    drop: Callable[[str], Awaitable[None]],
) -> None:
    url, other = namespace_url(), namespace_url()
    ours, theirs = Layout(parse_url(url).namespace), Layout(parse_url(other).namespace)
    hand = RawRedis(raw, theirs.namespace)
    values = [{"qty": i, "px": 1.5, "side": "long", "name": "ü"} for i in range(3)]
    try:
        async with await statekit.open(url) as store:
            for value in values:
                await store.put("bench/1", value)
                await hand.put("bench/1", value)
            await store.batch([Write("bench/2", 2), Write("bench/3", [3])])
            await hand.batch([("bench/2", 2), ("bench/3", [3])])

        assert await raw.dump(ours.seq) == await raw.dump(theirs.seq)
        heads = [await raw.hgetall(layout.heads) for layout in (ours, theirs)]
        # "<version>:<live>:<at>": the same but for the time
        assert [{k: v.rsplit(b":", 1)[0] for k, v in h.items()} for h in heads] == [
            {k: v.rsplit(b":", 1)[0] for k, v in heads[1].items()}
        ] * 2
        assert await raw.zrange(ours.live, 0, -1) == await raw.zrange(theirs.live, 0, -1)
        for key in ("bench/1", "bench/2", "bench/3"):
            mine = await raw.zrange(ours.history(key), 0, -1, withscores=True)
            hands = await raw.zrange(theirs.history(key), 0, -1, withscores=True)
            assert [(without_time(m), s) for m, s in mine] == [
                (without_time(m), s) for m, s in hands
            ]
        mine_log, hand_log = await raw.xrange(ours.log), await raw.xrange(theirs.log)
        assert [(i, f[b"k"], f[b"v"]) for i, f in mine_log] == [
            (i, f[b"k"], f[b"v"]) for i, f in hand_log
        ]
        assert [without_time(f[b"r"]) for _, f in mine_log] == [
            without_time(f[b"r"]) for _, f in hand_log
        ]
    finally:
        await drop(url)
        await drop(other)
