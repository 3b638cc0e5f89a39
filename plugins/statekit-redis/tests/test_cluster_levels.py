"""What sits on top of the store, over the test Redis Cluster: the tiered store's shared cache
level, fenced leases and the idempotency ledger, in namespaces whose slots are on different
masters, from tasks and a second process."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from redis.cluster import key_slot
from statekit_redis import RedisCache
from statekit_redis.layout import Layout
from statekit_redis.options import with_namespace

import statekit
from statekit import Record, StateStore
from statekit.config import Settings
from statekit.testing import fresh_namespace
from statekit.trading.idempotency import IdempotencyLedger, Retry
from statekit.trading.leases import Lease
from statekit.trading.paper import PaperExchange

if TYPE_CHECKING:
    from conftest import ClusterAdmin

pytestmark = pytest.mark.asyncio

HOLDS = 3
JOIN = 120  # seconds: only a hang gets near this


def namespaces_on_two_masters(cluster: ClusterAdmin) -> tuple[str, str]:
    """Two fresh namespaces whose slots two different masters serve."""
    first = fresh_namespace()
    owner = cluster.owner(int(key_slot(Layout(first).meta.encode())))["id"]
    while True:
        second = fresh_namespace()
        if cluster.owner(int(key_slot(Layout(second).meta.encode())))["id"] != owner:
            return first, second


@pytest_asyncio.fixture
async def two_stores(
    redis_cluster_url: str, cluster: ClusterAdmin, drop: Callable[..., object]
) -> AsyncIterator[tuple[str, str]]:
    """URLs of two namespaces of the cluster on different masters; dropped after."""
    urls = [with_namespace(redis_cluster_url, ns) for ns in namespaces_on_two_masters(cluster)]
    yield urls[0], urls[1]
    for url in urls:
        await drop(url)  # type: ignore[misc]


def record(key: str, version: int) -> Record:
    return Record(key, version, "state", version, {}, datetime.now(UTC))


async def test_the_shared_cache_level_on_two_masters(
    redis_cluster_url: str, cluster: ClusterAdmin
) -> None:
    """Round trip, absences, invalidation and version-monotone concurrent puts, for two
    caches whose slots are on different masters; a tiered store reads through one."""
    first, second = namespaces_on_two_masters(cluster)
    caches = [
        await RedisCache.open(redis_cluster_url, namespace=ns, ttl=60) for ns in (first, second)
    ]
    store: StateStore | None = None
    try:
        for n, cache in enumerate(caches):
            await cache.put_many({"k": record("k", 5 + n), "absent": None})
            await asyncio.gather(
                *(cache.put_many({"k": record("k", v)}) for v in random.sample(range(1, 5), 4))
            )
            assert {
                k: (r and r.version) for k, r in (await cache.get_many(["k", "absent"])).items()
            } == {
                "k": 5 + n,
                "absent": None,
            }
        await caches[0].invalidate(["k"])
        assert await caches[0].get_many(["k"]) == {}
        assert (await caches[1].get_many(["k"]))["k"] is not None  # the other namespace's
        store = await statekit.open(
            "memory://", settings=Settings(), cache={"shared_url": redis_cluster_url}
        )
        await store.put("a", {"x": 1})
        assert (await store.get("a")).data == {"x": 1}
    finally:
        if store is not None:
            await store.aclose()
        for cache in caches:
            await cache.drop_namespace()
            await cache.aclose()


async def _contend(url: str, worker: str, tasks: int) -> None:
    async with await statekit.open(url) as store:

        async def contender(n: int) -> None:
            lease = Lease(store, "contended", ttl=30, poll=0.01, owner=f"{worker}/{n}")
            for _ in range(HOLDS):
                await lease.acquire(timeout=JOIN)
                hold = lease.holder
                for i in range(2):
                    entry = {"hold": hold, "token": lease.token, "i": i}
                    await store.put("journal", entry, fence=lease)
                    await asyncio.sleep(0.001)
                await lease.release()

        await asyncio.gather(*(contender(n) for n in range(tasks)))


def _contend_in_process(urls: tuple[str, str]) -> None:
    async def both() -> None:
        await asyncio.gather(*(_contend(url, "process", 2) for url in urls))

    asyncio.run(both())


async def test_fenced_leases_hold_one_at_a_time_on_two_masters(two_stores: tuple[str, str]) -> None:
    """Two tasks here and two in another process take each namespace's lease in turns;
    each journal shows holds never interleaved and tokens never going back."""
    process = multiprocessing.get_context("spawn").Process(
        target=_contend_in_process, args=(two_stores,)
    )
    process.start()
    try:
        await asyncio.gather(*(_contend(url, "parent", 2) for url in two_stores))
    finally:
        await asyncio.to_thread(process.join, JOIN)
    assert process.exitcode == 0
    for url in two_stores:
        async with await statekit.open(url) as store:
            entries = [
                r.data for r in await store.history("journal", limit=1000, newest_first=False)
            ]
        holds: list[str] = []
        tokens: list[int] = []
        for entry in entries:
            assert isinstance(entry, dict)
            if not holds or holds[-1] != entry["hold"]:
                assert entry["hold"] not in holds, f"{url}: a hold was interleaved"
                assert not tokens or entry["token"] > tokens[-1], f"{url}: token went back"
                holds.append(entry["hold"])
            tokens.append(entry["token"])
        assert len(holds) == 4 * HOLDS, url


async def test_the_idempotency_ledger_places_once_on_two_masters(
    two_stores: tuple[str, str],
) -> None:
    """Twenty concurrent duplicates per namespace: one order each, every caller gets it."""
    exchange = PaperExchange(
        prices={"BTC/USDT": [Decimal(100)] * 5},
        balances={"USDT": Decimal(1_000_000)},
    )
    signal = {
        "strategy_id": "momentum",
        "signal_id": "sig-1",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "limit",
        "amount": Decimal("0.5"),
        "price": Decimal("100"),
    }
    for url in two_stores:
        async with await statekit.open(url) as store:
            ledger = IdempotencyLedger(
                store, retry=Retry(attempts=4, backoff=0.0, max_backoff=0.0), poll=0.001
            )
            results = await asyncio.wait_for(
                asyncio.gather(*(ledger.place(exchange, **signal) for _ in range(20))), 60
            )
            assert len({r.order.id for r in results}) == 1, url
            assert sum(not r.replayed for r in results) == 1, url
