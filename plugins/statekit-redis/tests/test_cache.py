"""RedisCache, the tiered store's shared cache level, against the real server: stores and
processes sharing it, version monotonicity, expiry, namespaces, and a Redis that is gone."""

from __future__ import annotations

import asyncio
import random
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from statekit_redis import RedisCache
from statekit_redis.cache import ABSENT

import statekit
from statekit import ConfigError, Record, StateStore
from statekit.config import Settings
from statekit.testing import fresh_namespace
from statekit.tiered import SharedLevel, TieredBackend

Caches = Callable[..., Awaitable[RedisCache]]


@pytest_asyncio.fixture
async def caches(redis_url: str) -> AsyncIterator[Caches]:
    """Opens RedisCaches (a fresh namespace unless given); drops and closes them after."""
    opened: list[RedisCache] = []

    async def open_(namespace: str | None = None, ttl: float = 60, url: str = "") -> RedisCache:
        cache = await RedisCache.open(
            url or redis_url, namespace=namespace or fresh_namespace("c"), ttl=ttl
        )
        opened.append(cache)
        return cache

    yield open_
    for cache in opened:
        await cache.drop_namespace()
        await cache.aclose()


def record(key: str, version: int, data: object = None) -> Record:
    return Record(
        key, version, "state", data if data is not None else version, {}, datetime.now(UTC)
    )


async def open_store(primary: str, shared: str, **cache: object) -> StateStore:
    return await statekit.open(primary, settings=Settings(), cache={"shared_url": shared, **cache})


def tiers(store: StateStore) -> TieredBackend:
    assert isinstance(store.backend, TieredBackend)
    return store.backend


def level(store: StateStore) -> SharedLevel:
    shared = tiers(store).shared
    assert shared is not None
    return shared


async def drop(store: StateStore) -> None:
    cache = level(store).cache
    assert isinstance(cache, RedisCache)
    await cache.drop_namespace()


# -- the SharedCache contract on Redis ------------------------------------------------------


@pytest.mark.asyncio
async def test_heads_and_absences_round_trip(caches: Caches) -> None:
    cache = await caches()
    head = Record(
        "pos/ÉURUSD", 3, "position", {"qty": "1.5", "n": [1, None]}, {"by": "me"}, datetime.now(UTC)
    )
    tomb = Record("gone", 2, "state", None, {}, datetime.now(UTC))
    await cache.put_many({head.key: head, "absent": None, "gone": tomb})
    assert await cache.get_many([head.key, "absent", "gone", "unknown"]) == {
        head.key: head,
        "absent": None,
        "gone": tomb,
    }
    await cache.invalidate([head.key, "unknown"])
    assert await cache.get_many([head.key]) == {}


@pytest.mark.asyncio
async def test_puts_are_version_monotone_under_concurrency(caches: Caches) -> None:
    """Eight clients put versions 1..200 of one key in random orders at once; a reader
    never sees the version go back, and the newest one stays."""
    namespace = fresh_namespace("mono")
    writers = [await caches(namespace) for _ in range(8)]
    reader = await caches(namespace)
    seen: list[int] = []
    done = asyncio.Event()

    async def write(cache: RedisCache) -> None:
        versions = list(range(1, 201))
        random.shuffle(versions)
        for version in versions:
            await cache.put_many({"k": record("k", version), "absent": None})

    async def read() -> None:
        while not done.is_set():
            head = (await reader.get_many(["k"])).get("k")
            if head is not None:
                seen.append(head.version)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(read())
    await asyncio.gather(*(write(cache) for cache in writers))
    done.set()
    await watcher
    assert seen == sorted(seen) and seen
    await writers[0].put_many({"k": None, "absent": record("absent", 1)})  # absence never wins
    heads = await reader.get_many(["k", "absent"])
    assert {key: head.version if head else None for key, head in heads.items()} == {
        "k": 200,
        "absent": 1,
    }


@pytest.mark.asyncio
async def test_entries_expire_after_the_ttl(caches: Caches, raw: aioredis.Redis) -> None:
    cache = await caches(ttl=0.3)
    await cache.put_many({"k": record("k", 1), "absent": None})
    for name in ("k", "absent"):
        assert 0 < await raw.pttl(cache.prefix + name) <= 300
    assert await raw.get(cache.prefix + "absent") == ABSENT
    await asyncio.sleep(0.6)
    assert await cache.get_many(["k", "absent"]) == {}


@pytest.mark.asyncio
async def test_namespaces_are_isolated(caches: Caches, redis_url: str) -> None:
    one, two = await caches(), await caches()
    await one.put_many({"k": record("k", 1, "one")})
    await two.put_many({"k": record("k", 1, "two")})
    assert (await one.get_many(["k"]))["k"].data == "one"  # type: ignore[union-attr]
    assert (await two.get_many(["k"]))["k"].data == "two"  # type: ignore[union-attr]
    await one.invalidate(["k"])
    assert await one.get_many(["k"]) == {} and "k" in await two.get_many(["k"])
    # The URL's namespace wins over the one the core chose.
    named = await caches("ignored", url=f"{redis_url}?namespace={two.namespace}")
    assert named.namespace == two.namespace and "k" in await named.get_many(["k"])


@pytest.mark.asyncio
async def test_bad_cache_urls_are_config_errors(redis_url: str) -> None:
    for url, fragment in [
        (f"{redis_url}?log_max=5", "unknown redis URL option 'log_max'"),
        (f"{redis_url}?namespace=a{{b}}", "namespace="),
        ("redis://:secret@/0", "names no host"),
    ]:
        with pytest.raises(ConfigError, match=fragment) as caught:
            await RedisCache.open(url, namespace="n", ttl=1)
        assert "secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="no shared cache for URL scheme 'unix'"):
        await open_store("memory://", "unix:///tmp/redis.sock")


# -- stores sharing one Redis ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_store_reads_what_another_wrote_without_the_primary(
    tmp_path: Path, redis_url: str
) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    async with await open_store(url, redis_url) as a, await open_store(url, redis_url) as b:
        try:
            assert level(a).cache.namespace == level(b).cache.namespace  # type: ignore[attr-defined]
            await a.put("pos/EURUSD", {"qty": "1.5"})
            await a.batch([statekit.Write("x", 1), statekit.Write("y", 2)])
            assert (await b.get("pos/EURUSD")).data == {"qty": "1.5"}  # type: ignore[union-attr]
            assert {k: r.data for k, r in (await b.get_many(["x", "y"])).items()} == {
                "x": 1,
                "y": 2,
            }
            detail = (await b.health()).detail
            assert detail["cache"]["primary_reads"] == 0  # type: ignore[index]
            assert detail["shared_cache"]["hits"] == 3  # type: ignore[index]
            assert detail["shared_cache"]["errors"] == 0  # type: ignore[index]
            assert detail["shared_cache"]["ok"] is True  # type: ignore[index]
        finally:
            await drop(a)


WRITER = """
import asyncio, sys, statekit
from statekit.config import Settings

async def main(primary, shared):
    async with await statekit.open(primary, settings=Settings(), cache={"shared_url": shared}) as s:
        for i in range(1, 6):
            await s.put("from/child", {"i": i})

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.asyncio
async def test_another_process_reads_through_the_shared_level(
    tmp_path: Path, redis_url: str
) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    async with await open_store(url, redis_url) as store:
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WRITER, url, redis_url
            )
            assert await asyncio.wait_for(child.wait(), 60) == 0
            head = await store.get("from/child")
            assert head is not None and head.data == {"i": 5} and head.version == 5
            assert tiers(store).primary_reads == 0
        finally:
            await drop(store)


# -- a Redis that is gone ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.asyncio
async def test_an_unreachable_redis_never_fails_the_store(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    async with await open_store(f"sqlite:///{tmp_path}/p.db", url) as store:
        level(store).retry_after = level(store).max_retry_after = 0.0  # every call tries
        for i in range(5):
            assert (await store.put(f"k/{i}", i)).version == 1
            assert (await store.get(f"absent/{i}")) is None
        assert [r.data async for r in store.scan("k/")] == [0, 1, 2, 3, 4]
        detail = (await store.health()).detail
        shared = detail["shared_cache"]
        assert shared["errors"] >= 10 and shared["ok"] is False  # type: ignore[index]
        assert "ConnectionError" in shared["last_error"]  # type: ignore[index,operator]
        assert detail["cache"]["primary_reads"] == 5  # type: ignore[index]


@pytest.mark.asyncio
async def test_redis_stopped_and_started_again(tmp_path: Path, restartable_redis: Any) -> None:
    """Reads and writes go on while the cache's Redis is stopped; it is used again once back."""
    primary, shared = f"sqlite:///{tmp_path}/p.db", restartable_redis.url
    async with await open_store(primary, shared) as a, await open_store(primary, shared) as b:
        for store in (a, b):
            level(store).retry_after = level(store).max_retry_after = 0.0  # every call tries
        await a.put("k", 1)
        assert (await b.get("k")).data == 1  # type: ignore[union-attr]
        assert level(b).stats.hits == 1

        restartable_redis.stop()
        await a.put("k", 2)  # the put to Redis fails; the write does not
        assert (await a.get("k")).data == 2  # type: ignore[union-attr]
        assert await b.get("other") is None  # from the primary
        assert level(a).stats.errors >= 1 and level(b).stats.errors >= 1
        assert level(a).failing and level(b).failing

        restartable_redis.start()  # empty: nothing survived
        await a.put("k", 3)
        assert not level(a).failing
        tiers(b).cache.invalidate(["k"])  # type: ignore[union-attr]
        assert (await b.get("k")).data == 3  # type: ignore[union-attr]  # served by Redis again
        assert not level(b).failing and level(b).stats.hits == 2
