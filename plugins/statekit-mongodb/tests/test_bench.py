"""The benchmark is registered, runs every workload, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from statekit_mongodb.bench import bench
from statekit_mongodb.documents import HEADS
from statekit_mongodb.options import MongoOptions

from statekit.bench import BenchConfig, names, runner


def test_the_bench_is_registered() -> None:
    assert "mongodb" in names()
    assert runner("mongodb") is bench


@pytest.mark.asyncio
async def test_a_short_run_reports_every_workload_and_cleans_up(
    secantus_url: str, tmp_path: Path
) -> None:
    options = MongoOptions.parse(secantus_url)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        options.uri, **options.client_kwargs
    )
    try:
        heads = client[options.database][HEADS]
        bench_docs = {"ns": {"$regex": "^bench_"}}
        before = await heads.count_documents(bench_docs)
        config = BenchConfig(n=8, rounds=1, url=secantus_url, writers=2, keys=4)
        results = [r async for r in bench(config, tmp_path)]
        after = await heads.count_documents(bench_docs)
    finally:
        await client.close()
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent"]
    for result in results:
        assert result["backend"] == "mongodb"
        assert isinstance(result["ratio"], float) and result["ratio"] > 0
    assert after == before
