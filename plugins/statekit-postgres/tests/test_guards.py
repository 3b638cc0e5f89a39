"""Guarded appends: another key's head version checked under the same locks, in the
same transaction as the writes, and never written (Capability.GUARDED_APPEND)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres import PostgresBackend, PostgresOptions

from statekit.backend import Capability, Guard, Write
from statekit.errors import ConflictError
from statekit.store import StateStore


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.asyncio
async def test_a_guard_that_holds_lets_the_writes_land_and_writes_nothing(
    open_backend: Callable[..., Any],
) -> None:
    backend: PostgresBackend = await open_backend("guard")
    assert Capability.GUARDED_APPEND in backend.capabilities
    store = StateStore(backend, owns_backend=False)
    await store.put("lease", "me")
    await store.put("gone", 1)
    await store.delete("gone")
    records = await backend.append(
        [Write("order/1", 1), Write("order/2", 2)],
        _now(),
        guards=[Guard("lease", 1), Guard("never", 0), Guard("gone", 0)],
    )
    assert [(r.key, r.version) for r in records] == [("order/1", 1), ("order/2", 1)]
    assert [r.version for r in await store.history("lease")] == [1]
    assert await store.history("never") == []


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [1, 40])  # 40: the batch path (namespace locked whole)
async def test_a_stale_guard_names_its_key_and_stores_nothing(
    open_backend: Callable[..., Any], size: int
) -> None:
    backend: PostgresBackend = await open_backend("stale")
    store = StateStore(backend, owns_backend=False)
    await store.put("lease", "me")
    await store.put("lease", "you")
    writes = [Write(f"order/{i}", i) for i in range(size)]
    for stale in (Guard("lease", 1), Guard("lease", 0), Guard("lease", 3)):
        with pytest.raises(ConflictError) as err:
            await backend.append(writes, _now(), guards=[stale])
        assert (err.value.key, err.value.expected, err.value.actual) == ("lease", stale.version, 2)
    assert [r async for r in store.scan("order/")] == []


@pytest.mark.asyncio
async def test_racing_a_bump_never_lets_a_write_in_after_it(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    """Writers guard on the lease version they last read; a bumper moves it on. In the
    feed, every landed write comes before the bump that made its guard stale."""
    backend: PostgresBackend = await open_backend("race", pool_max="8")
    store = StateStore(backend, owns_backend=False)
    await store.put("lease", 0)
    bumps = 15

    async def bumper() -> None:
        for n in range(1, bumps + 1):
            await store.put("lease", n)
            await asyncio.sleep(0)

    async def writer(w: int) -> None:
        for i in range(40):
            seen = (await backend.latest(["lease"]))["lease"].version
            with contextlib.suppress(ConflictError):
                await backend.append(
                    [Write(f"w{w}/{i}", seen)], _now(), guards=[Guard("lease", seen)]
                )

    await asyncio.gather(bumper(), *(writer(w) for w in range(5)))
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        feed = await admin.fetch(
            "SELECT key, version, data::text FROM statekit_versions WHERE ns = $1 "
            "ORDER BY xid, commit_seq, pos",
            backend.namespace,
        )
    finally:
        await admin.close()
    lease = 0
    landed = 0
    for key, version, data in feed:
        if key == "lease":
            lease = version
        else:
            landed += 1
            assert int(data) == lease, f"{key} guarded on lease {data} came after version {lease}"
    assert lease == bumps + 1 and landed > 0
