"""PostgresBackend beyond the contract: the SQL expect rule, lock order, exact values,
cancellation, and a backend on the caller's own asyncpg pool."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres import PostgresBackend, PostgresOptions

from statekit.backend import ANY, Expect, Write, check_expect
from statekit.errors import BackendUnavailable, ConflictError, ValidationError
from statekit.store import StateStore


@pytest.mark.asyncio
async def test_the_sql_expect_rule_is_check_expect(open_backend: Callable[..., Any]) -> None:
    """statekit_append refuses exactly the writes statekit.backend.check_expect refuses."""
    backend: PostgresBackend = await open_backend("rule")
    store = StateStore(backend, owns_backend=False)
    await store.put("live", 1)
    await store.put("live", 2)  # head 2, live
    for i in range(3):
        await store.put("gone", i)
    await store.delete("gone")  # head 4, a tombstone
    heads: dict[str, tuple[int, bool]] = {"never": (0, True), "live": (2, False), "gone": (4, True)}
    expects: list[Expect] = [ANY, 0, 1, 2, 3, 4, 5]
    for key, (head, deleted) in heads.items():
        for expect in expects:
            write = Write(key, {"try": str(expect)}, expect=expect)
            try:
                check_expect(write, head, deleted, backend="postgresql")
                allowed = True
            except ConflictError:
                allowed = False
            # A batch that also writes a second key: on refusal neither lands.
            batch = [write, Write(f"side/{key}/{expect}", 1)]
            if not allowed:
                with pytest.raises(ConflictError) as err:
                    await backend.append(batch, datetime.now(UTC))
                assert (err.value.key, err.value.expected, err.value.actual) == (key, expect, head)
                assert await backend.latest([f"side/{key}/{expect}"]) == {}
                continue
            records = await backend.append(batch, datetime.now(UTC))
            assert records[0].version == head + 1
            await store.delete(key) if deleted else await store.put(key, "back")
            head = head + 2
            heads[key] = (head, deleted)


@pytest.mark.asyncio
async def test_a_refused_batch_leaves_no_trace(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    backend: PostgresBackend = await open_backend("trace")
    store = StateStore(backend, owns_backend=False)
    await store.put("held", 1)
    before = (await backend.health()).detail["last_commit_xid"]
    with pytest.raises(ConflictError):
        await store.batch([Write(f"new/{i}", i) for i in range(50)] + [Write("held", 2, expect=7)])
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        heads = await admin.fetchval(
            "SELECT count(*) FROM statekit_heads WHERE ns = $1", backend.namespace
        )
        versions = await admin.fetchval(
            "SELECT count(*) FROM statekit_versions WHERE ns = $1", backend.namespace
        )
    finally:
        await admin.close()
    assert (heads, versions) == (1, 1)  # no placeholder head, no version row
    assert (await backend.health()).detail["last_commit_xid"] == before


@pytest.mark.asyncio
async def test_batches_in_any_key_order_never_deadlock(open_backend: Callable[..., Any]) -> None:
    """Heads are locked in key order, so crossing batches wait instead of deadlocking."""
    backend: PostgresBackend = await open_backend("order", pool_max="8")
    store = StateStore(backend, owns_backend=False)
    keys = [f"k/{i}" for i in range(12)]
    await store.batch([Write(k, 0) for k in keys[::2]])  # half exist, half are new
    rounds, writers = 25, 8

    async def writer(seed: int) -> int:
        rng = random.Random(seed)
        for _ in range(rounds):
            chosen = rng.sample(keys, 6)  # random order, overlapping every other writer
            await store.batch([Write(k, seed) for k in chosen])
        return rounds * 6

    written = sum(await asyncio.gather(*(writer(s) for s in range(writers))))
    heads = await backend.latest(keys)
    assert sum(r.version for r in heads.values()) == written + len(keys[::2])
    for key in keys:  # and every key's versions are gap-free
        versions = [r.version for r in await backend.read(key)]
        assert versions == list(range(1, len(versions) + 1))


@pytest.mark.asyncio
async def test_values_come_back_exactly(open_backend: Callable[..., Any]) -> None:
    """Stored as json (the exact text), not jsonb, which would turn 1e16 into an int,
    reorder keys and refuse \\u0000."""
    backend: PostgresBackend = await open_backend("exact")
    store = StateStore(backend, owns_backend=False)
    value = {"z": 1e16, "a": 1.0, "m": [3, 2.5, -0.0], "nul": "a\u0000b", "big": 2**70}
    await store.put("exact", value, meta={"b": 1, "a": 2})
    got = await store.get("exact")
    assert got is not None
    assert got.data == value
    assert isinstance(got.data, dict) and list(got.data) == ["z", "a", "m", "nul", "big"]
    assert type(got.data["z"]) is float and type(got.data["a"]) is float
    assert list(got.meta) == ["b", "a"]


@pytest.mark.asyncio
async def test_duplicate_keys_in_one_append_are_refused(open_backend: Callable[..., Any]) -> None:
    backend: PostgresBackend = await open_backend("dup")
    with pytest.raises(ValidationError):
        await backend.append([Write("a", 1), Write("a", 2)], datetime.now(UTC))


@pytest.mark.asyncio
async def test_a_cancelled_call_leaves_the_backend_usable(open_backend: Callable[..., Any]) -> None:
    backend: PostgresBackend = await open_backend("cancel", pool_max="2")
    store = StateStore(backend, owns_backend=False)
    for _ in range(5):
        task = asyncio.create_task(store.put("slow", {"blob": "x" * 2_000_000}))
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    record = await store.put("after", 1)
    assert record.version == 1
    stats = (await backend.health()).detail["pool"]
    assert stats["size"] <= 2
    history = await store.history("slow")
    assert [r.version for r in history] == list(range(len(history), 0, -1))


@pytest.mark.asyncio
async def test_on_the_callers_pool(namespaced: Callable[..., str]) -> None:
    url = namespaced("pool")
    options = PostgresOptions.parse(url)
    pool = await asyncpg.create_pool(min_size=1, max_size=3, **options.connect_kwargs())
    try:
        backend = await PostgresBackend.from_pool(pool, namespace=options.namespace)
        store = StateStore(backend)
        async with store.watch() as changes:
            await store.put("mine", 1)
            await store.batch([Write("a", 1), Write("b", 2)])
            got = [await asyncio.wait_for(anext(changes), 20) for _ in range(3)]
        assert [r.key for r in got] == ["mine", "a", "b"]
        assert (await backend.health()).detail["pool"]["max"] == 3
        await backend.drop_namespace(forget=True)
        await store.aclose()
        assert await pool.fetchval("SELECT 1") == 1  # the caller's pool stays open
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_killed_pool_connections_cost_at_most_one_failed_call(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    app_name = f"sk_{uuid.uuid4().hex[:12]}"
    backend: PostgresBackend = await open_backend("kill", pool_min="3", application_name=app_name)
    store = StateStore(backend, owns_backend=False)
    await asyncio.gather(*(store.put(f"k/{i}", i) for i in range(6)))  # several connections
    admin = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            app_name,
        )
    finally:
        await admin.close()
    assert killed >= 3
    failures: list[BackendUnavailable] = []
    for _ in range(2):  # the next call works, or at worst the one after
        try:
            record = await store.put("after", 1)
            break
        except BackendUnavailable as err:
            failures.append(err)
    assert len(failures) <= 1 and all(f.retryable for f in failures)
    assert record.version == 1
