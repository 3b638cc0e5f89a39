"""watch over LISTEN/NOTIFY: commit order, big batches, and no loss across reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres import PostgresBackend, PostgresOptions, PostgresWatch

from statekit.backend import Record, Write
from statekit.errors import BackendError
from statekit.store import StateStore
from statekit.testing import server_control


async def _take(it: Any, count: int, within: float = 20.0) -> list[Record]:
    out: list[Record] = []

    async def take() -> None:
        async for record in it:
            out.append(record)
            if len(out) == count:
                return

    await asyncio.wait_for(take(), within)
    return out


async def _admin(backend: PostgresBackend, pg_url: str) -> Any:
    return await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())


@pytest.mark.asyncio
async def test_terminated_connection_resumes_without_loss_or_duplicates(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    backend: PostgresBackend = await open_backend("watch")
    store = StateStore(backend, owns_backend=False)
    watch = await backend.watch("w/")
    assert isinstance(watch, PostgresWatch)
    admin = await _admin(backend, pg_url)
    expected: list[tuple[str, int]] = []
    got: list[tuple[str, int]] = []
    kill_points = {30, 90, 150}
    total = 200
    try:

        async def write() -> None:
            i = 0
            while i < total:
                if i % 10 == 0:  # a batch: several records of one commit
                    batch = [Write(f"w/{i + j}", i + j) for j in range(3)] + [Write("x/out", i)]
                    for record in await store.batch(batch):
                        if record.key.startswith("w/"):
                            expected.append((record.key, record.version))
                    i += 3
                else:
                    record = await store.put(f"w/{i % 7}", i)
                    expected.append((record.key, record.version))
                    i += 1
                await asyncio.sleep(0)

        async def read() -> None:
            # The writer makes exactly `total` records under w/ (a batch of 3 every 10).
            async for record in watch:
                got.append((record.key, record.version))
                if len(got) in kill_points:
                    pid = watch.server_pid
                    assert pid is not None
                    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                if len(got) == total:
                    return

        writer = asyncio.create_task(write())
        await asyncio.wait_for(read(), 60)
        await writer
        assert len(expected) == total
        # nothing more: no duplicate delivered after the last commit
        with pytest.raises(TimeoutError):
            await _take(watch, 1, within=0.3)
    finally:
        await watch.aclose()
        await admin.close()
    assert got == expected
    assert watch.reconnects >= len(kill_points)


@pytest.mark.asyncio
async def test_a_batch_bigger_than_a_page_arrives_whole_in_order(
    open_backend: Callable[..., Any],
) -> None:
    backend: PostgresBackend = await open_backend("watch")
    store = StateStore(backend, owns_backend=False)
    async with store.watch("big/") as changes:
        written = await store.batch([Write(f"big/{i:05d}", i) for i in range(1234)][::-1])
        await store.put("big/after", 1)
        got = await _take(changes, len(written) + 1)
    assert [r.key for r in got] == [r.key for r in written] + ["big/after"]


@pytest.mark.asyncio
async def test_a_narrow_prefix_in_a_busy_namespace(open_backend: Callable[..., Any]) -> None:
    backend: PostgresBackend = await open_backend("watch")
    store = StateStore(backend, owns_backend=False)
    async with store.watch("rare/") as changes:
        await store.batch([Write(f"busy/{i}", i) for i in range(1100)])
        await store.put("rare/1", 1)
        await store.batch([Write(f"busy/{i}", i) for i in range(600)])
        await store.put("rare/2", 2)
        assert [r.key for r in await _take(changes, 2)] == ["rare/1", "rare/2"]


@pytest.mark.asyncio
async def test_closing_releases_the_connection(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    backend: PostgresBackend = await open_backend("watch")
    admin = await _admin(backend, pg_url)
    try:
        watch = await backend.watch()
        assert isinstance(watch, PostgresWatch)
        pid = watch.server_pid
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
        assert await admin.fetchval(alive, pid) == 1
        await watch.aclose()
        await watch.aclose()  # twice is harmless
        with pytest.raises(StopAsyncIteration):
            await anext(watch)
        for _ in range(100):  # the server notices the goodbye asynchronously
            if await admin.fetchval(alive, pid) == 0:
                break
            await asyncio.sleep(0.02)
        assert await admin.fetchval(alive, pid) == 0

        # a watcher left open is closed with its backend, and says so
        left_open = await backend.watch()
        assert (await backend.health()).detail["watchers"] == 1
        await backend.aclose()
        with pytest.raises(BackendError):
            await anext(left_open)
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_a_watcher_waits_out_a_server_restart(open_backend: Callable[..., Any]) -> None:
    server = server_control("postgres")
    backend: PostgresBackend = await open_backend("watch")
    store = StateStore(backend, owns_backend=False)
    async with store.watch() as changes:
        await store.put("before", 1)
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the writer's own retry: the first calls may still fail
            try:
                await store.put("after", 2)
                break
            except BackendError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert [r.key for r in await _take(changes, 2, within=30)] == ["before", "after"]
