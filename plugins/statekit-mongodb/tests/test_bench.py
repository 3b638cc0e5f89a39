"""The benchmark is registered, runs every workload, and leaves nothing behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from statekit_mongodb.bench import RawWriter, bench
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
        database = client[options.database]
        raw_collections = {"name": {"$regex": "^bench_raw_"}}
        before = (
            await heads.count_documents(bench_docs),
            await database.list_collection_names(filter=raw_collections),
        )
        config = BenchConfig(n=8, rounds=1, url=secantus_url, writers=2, keys=4)
        results = [r async for r in bench(config, tmp_path)]
        after = (
            await heads.count_documents(bench_docs),
            await database.list_collection_names(filter=raw_collections),
        )
    finally:
        await client.close()
    assert [r["workload"] for r in results] == ["put", "batch", "concurrent"]
    for result in results:
        assert result["backend"] == "mongodb"
        assert isinstance(result["ratio"], float) and result["ratio"] > 0
        assert str(result["durability"]).startswith("write concern ")
    assert "raw_transaction_ops_s" in results[0] and "raw_transaction_ops_s" in results[2]
    assert after == before


@pytest.mark.asyncio
async def test_raw_side_keeps_the_same_data_in_collections_of_its_own(
    secantus_url: str,
) -> None:
    options = MongoOptions.parse(secantus_url)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        options.uri, **options.client_kwargs
    )
    raw = RawWriter(client, options.database, f"bench_raw_{uuid.uuid4().hex[:12]}")
    try:
        await raw.create()
        assert [await raw.put("k", {"qty": i}) for i in range(2)] == [1, 2]
        assert await raw.put_in_transaction("k", {"qty": 2}) == 3
        await raw.batch([("k", {"qty": 3}), ("j", {"qty": 0})])
        in_order = raw.history.find({}, {"_id": 0, "at": 0}).sort([("key", 1), ("version", 1)])
        history = [(d["key"], d["version"], d["value"]) async for d in in_order]
        heads = {d["_id"]: (d["version"], d["value"]) async for d in raw.heads.find({})}
    finally:
        await raw.drop()
        await client.close()
    assert history == [("j", 1, {"qty": 0})] + [("k", v + 1, {"qty": v}) for v in range(4)]
    assert heads == {"j": (1, {"qty": 0}), "k": (4, {"qty": 3})}
