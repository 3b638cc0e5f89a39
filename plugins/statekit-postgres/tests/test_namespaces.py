"""Several bots in one database: namespaces never see or wipe each other's state.

(NautilusTrader issue 5050: one node's cache flush wiped every node's state.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres import PostgresBackend, PostgresOptions

from statekit.backend import Write
from statekit.store import StateStore


@pytest.mark.asyncio
async def test_two_namespaces_with_the_same_keys_stay_apart(
    open_backend: Callable[..., Any],
) -> None:
    one: PostgresBackend = await open_backend("iso")
    two: PostgresBackend = await open_backend("iso")
    a, b = StateStore(one, owns_backend=False), StateStore(two, owns_backend=False)

    async with a.watch("position/") as watch_a, b.watch("position/") as watch_b:
        for i in range(3):
            await a.put("position/EURUSD", {"qty": i}, kind="position")
        await b.put("position/EURUSD", {"qty": 100}, kind="position")
        await b.batch([Write("position/GBPUSD", {"qty": 7}, "position"), Write("other", 1)])
        await a.delete("position/EURUSD")

        # get / scan / history
        assert await a.get("position/EURUSD") is None
        got_b = await b.get("position/EURUSD")
        assert got_b is not None and (got_b.version, got_b.data) == (1, {"qty": 100})
        assert [r.key async for r in a.scan()] == []
        assert [r.key async for r in b.scan()] == ["other", "position/EURUSD", "position/GBPUSD"]
        assert [r.version for r in await a.history("position/EURUSD")] == [4, 3, 2, 1]
        assert [r.version for r in await b.history("position/EURUSD")] == [1]
        assert await one.latest(["position/GBPUSD", "other"]) == {}

        # watch: each watcher sees only its own namespace's commits
        seen_a = [(r.key, r.version) for r in await _take(watch_a, 4)]
        seen_b = [(r.key, r.version) for r in await _take(watch_b, 2)]
        assert seen_a == [("position/EURUSD", v) for v in (1, 2, 3, 4)]
        assert seen_b == [("position/EURUSD", 1), ("position/GBPUSD", 1)]
        with pytest.raises(TimeoutError):
            await _take(watch_b, 1, within=0.3)

    # prune in one namespace leaves the other's history alone
    await b.put("position/EURUSD", {"qty": 101}, kind="position")
    assert await one.prune("position/EURUSD", 10) == 3
    assert [r.version for r in await b.history("position/EURUSD")] == [2, 1]

    # dropping one namespace leaves the other whole
    assert await one.drop_namespace() == 1
    assert await a.history("position/EURUSD") == []
    assert [r.key async for r in b.scan()] == ["other", "position/EURUSD", "position/GBPUSD"]
    assert [r.version for r in await b.history("position/EURUSD")] == [2, 1]
    # and the dropped namespace starts again from version 1
    assert (await a.put("position/EURUSD", {"qty": 0})).version == 1


@pytest.mark.asyncio
async def test_a_watcher_outlives_a_drop_of_its_namespace(
    open_backend: Callable[..., Any],
) -> None:
    """The commit counter survives drop_namespace, so the watcher misses nothing after it."""
    backend: PostgresBackend = await open_backend("drop")
    store = StateStore(backend, owns_backend=False)
    async with store.watch() as changes:
        await store.put("k", 1)
        await store.put("k", 2)
        assert [(r.version, r.data) for r in await _take(changes, 2)] == [(1, 1), (2, 2)]
        await backend.drop_namespace()
        await store.put("k", 3)
        assert [(r.version, r.data) for r in await _take(changes, 1)] == [(1, 3)]


async def _take(it: Any, count: int, within: float = 10.0) -> list[Any]:
    out: list[Any] = []

    async def take() -> None:
        async for record in it:
            out.append(record)
            if len(out) == count:
                return

    await asyncio.wait_for(take(), within)
    return out


@pytest.mark.asyncio
async def test_dropping_while_writers_run_leaves_no_orphans(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    """Heads and versions are dropped from one snapshot: no head without its version
    row and no version row without its head, whatever the writers were doing."""
    backend: PostgresBackend = await open_backend("churn", pool_max="6")
    store = StateStore(backend, owns_backend=False)
    stop = asyncio.Event()
    writes = 0

    async def writer(w: int) -> None:
        nonlocal writes
        i = 0
        while not stop.is_set():
            # existing keys, a brand-new key each time, and batches of both
            await store.put(f"old/{i % 3}", i)
            await store.batch([Write(f"new/{w}/{i}", i), Write(f"old/{(i + 1) % 3}", i)])
            writes += 3
            i += 1

    tasks = [asyncio.create_task(writer(w)) for w in range(4)]
    try:
        for _ in range(5):
            await backend.drop_namespace()
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert writes > 0
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        headless = await admin.fetchval(
            "SELECT count(*) FROM statekit_versions v WHERE v.ns = $1 AND NOT EXISTS "
            "(SELECT 1 FROM statekit_heads h WHERE h.ns = v.ns AND h.key = v.key)",
            backend.namespace,
        )
        versionless = await admin.fetchval(
            "SELECT count(*) FROM statekit_heads h WHERE h.ns = $1 AND NOT EXISTS "
            "(SELECT 1 FROM statekit_versions v WHERE v.ns = h.ns AND v.key = h.key "
            "AND v.version = h.version)",
            backend.namespace,
        )
    finally:
        await admin.close()
    assert (headless, versionless) == (0, 0)
    for key in ("old/0", "old/1", "old/2"):  # every key still counts on without a gap
        versions = [r.version for r in await backend.read(key)]
        assert versions == list(range(1, len(versions) + 1))
        await store.put(key, "after")
