"""The commit feed without a counter row: a transaction that took its position first
and commits last is delivered, whole, with nothing skipped; commits that share a key
come in commit order. Two connections, interleaved by hand."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres import PostgresBackend, PostgresOptions
from statekit_postgres.queries import APPEND

from statekit.backend import Record
from statekit.store import StateStore


async def _take(it: Any, count: int, within: float = 20.0) -> list[Record]:
    out: list[Record] = []

    async def take() -> None:
        async for record in it:
            out.append(record)
            if len(out) == count:
                return

    await asyncio.wait_for(take(), within)
    return out


def _args(namespace: str, keys: list[str], value: int) -> list[Any]:
    n = len(keys)
    return [namespace, keys, ["state"] * n, [str(value)] * n, ["{}"] * n, [-1] * n, [], [], True]


async def _connect(pg_url: str) -> Any:
    return await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())


@pytest.mark.asyncio
async def test_first_position_last_commit_is_delivered_nothing_skipped(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    backend: PostgresBackend = await open_backend("late")
    store = StateStore(backend, owns_backend=False)
    watch = await backend.watch()
    late, early = await _connect(pg_url), await _connect(pg_url)
    try:
        # `late` takes its transaction id (its feed position) first, and stays open.
        open_tx = late.transaction()
        await open_tx.start()
        await late.fetch(APPEND, *_args(backend.namespace, ["late/a", "late/b"], 1))
        # `early` takes a later position and commits at once.
        await early.fetch(APPEND, *_args(backend.namespace, ["early"], 2))
        # While `late` is open, nothing past it may be delivered: delivering `early`
        # now would move the cursor past `late`'s position, and `late` would be lost.
        pending = asyncio.ensure_future(_take(watch, 3))
        done, _ = await asyncio.wait({pending}, timeout=0.5)
        assert not done
        await open_tx.commit()
        records = await pending
        # After that: the next commit, once (nothing delivered twice).
        await store.put("after", 3)
        records += await _take(watch, 1)
    finally:
        await late.close()
        await early.close()
        await watch.aclose()
    assert [(r.key, r.data) for r in records] == [
        ("late/a", 1),  # the batch whole, in its order, at its (first) position
        ("late/b", 1),
        ("early", 2),
        ("after", 3),
    ]


@pytest.mark.asyncio
async def test_commits_sharing_a_key_come_in_commit_order(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    backend: PostgresBackend = await open_backend("same")
    store = StateStore(backend, owns_backend=False)
    await store.put("other", 0)  # `second` will have written this key first (key order)
    watch = await backend.watch()
    first, second = await _connect(pg_url), await _connect(pg_url)
    try:
        open_tx = first.transaction()
        await open_tx.start()
        await first.fetch(APPEND, *_args(backend.namespace, ["k"], 1))
        # `second` writes k too: it waits for `first`'s lock on k, and takes its
        # transaction id only once it has it, so its position is after `first`'s.
        blocked = asyncio.ensure_future(
            second.fetch(APPEND, *_args(backend.namespace, ["k", "other"], 2))
        )
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert not done
        await open_tx.commit()
        await blocked
        records = await _take(watch, 3)
    finally:
        with contextlib.suppress(Exception):
            await blocked
        await first.close()
        await second.close()
        await watch.aclose()
    assert [(r.key, r.version, r.data) for r in records] == [
        ("k", 1, 1),
        ("k", 2, 2),
        ("other", 2, 2),
    ]


@pytest.mark.asyncio
async def test_a_watcher_skips_what_its_start_saw_and_nothing_else(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    """A transaction running when the watcher starts is delivered when it commits;
    one committed before is not, even above the start's horizon."""
    backend: PostgresBackend = await open_backend("start")
    store = StateStore(backend, owns_backend=False)
    running = await _connect(pg_url)
    try:
        open_tx = running.transaction()
        await open_tx.start()
        await running.fetch(APPEND, *_args(backend.namespace, ["running"], 1))
        await store.put("before", 2)  # committed, above the horizon the open one holds
        watch = await backend.watch()
        await open_tx.commit()
        await store.put("after", 3)
        records = await _take(watch, 2)
        await watch.aclose()
    finally:
        await running.close()
    assert [(r.key, r.data) for r in records] == [("running", 1), ("after", 3)]


@pytest.mark.asyncio
async def test_append_refuses_to_run_after_other_writes_of_its_transaction(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    """An id taken before the locks could order the feed wrongly: refused, loudly."""
    backend: PostgresBackend = await open_backend("first")
    conn = await _connect(pg_url)
    try:
        async with conn.transaction():
            await conn.fetchval("SELECT txid_current()")
            with pytest.raises(asyncpg.PostgresError, match="first write of its transaction"):
                await conn.fetch(APPEND, *_args(backend.namespace, ["x"], 1))
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_a_transaction_in_another_database_does_not_hold_the_feed_back(
    open_backend: Callable[..., Any], pg_url: str
) -> None:
    """It cannot write these tables, so the horizon passes it (unlike one in this
    database, which holds the feed back until it ends: the first test above)."""
    backend: PostgresBackend = await open_backend("elsewhere")
    store = StateStore(backend, owns_backend=False)
    admin = await _connect(pg_url)
    other_db = f"sk_other_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{other_db}"')
    try:
        options = PostgresOptions.parse(pg_url).connect_kwargs()
        elsewhere = await asyncpg.connect(**{**options, "database": other_db})
        try:
            watch = await backend.watch()
            async with elsewhere.transaction():
                await elsewhere.fetchval("SELECT txid_current()")  # a writer, running
                await store.put("k", 1)
                (record,) = await _take(watch, 1)
            await watch.aclose()
        finally:
            await elsewhere.close()
    finally:
        await admin.execute(f'DROP DATABASE "{other_db}"')
        await admin.close()
    assert (record.key, record.data) == ("k", 1)
