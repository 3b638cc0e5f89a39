"""``?read=standby``: history, scan and as-of reads from the standby, seeing one's own writes.

The pair (scripts/servers.sh start postgres-pair) commits synchronously to the
standby's disk (``synchronous_commit=on``), not to its replay, so a standby read
right after a write can come before the standby has applied it: the backend
waits for the standby to pass the primary's WAL position, up to ``standby_wait``,
and reads from the primary otherwise (:class:`statekit_postgres.pool.StandbyReads`).
Pausing the standby's replay (``pg_wal_replay_pause()``) proves both paths engage.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from statekit_postgres.bench_standby import bench
from statekit_postgres.options import PostgresOptions
from statekit_postgres.pool import ConnectionPool

from statekit import StateStore
from statekit.bench import BenchConfig, runner
from statekit.errors import ConfigError
from statekit.testing import fresh_namespace

from .conftest import drop, open_or_skip, with_query

TASKS, ROUNDS = 6, 25


@pytest.mark.parametrize(
    ("option", "value"),
    [("read", "replica"), ("standby_wait", "-1"), ("target_session_attrs", "writable")],
)
def test_bad_values_name_the_option(option: str, value: str) -> None:
    url = f"postgresql://u@h1:5432,h2:5433/db?read=standby&{option}={value}"
    if option == "read":
        url = f"postgresql://u@h1:5432,h2:5433/db?{option}={value}"
    with pytest.raises(ConfigError, match=option):
        PostgresOptions.parse(url)


def test_a_multi_host_url_parses() -> None:
    options = PostgresOptions.parse(
        "postgresql://u:secret@h1:5432,h2:5433/db?target_session_attrs=read-write&read=standby"
    )
    assert options.read == "standby"
    assert "secret" not in options.shown
    assert options.connect_kwargs(standby=True)["target_session_attrs"] == "prefer-standby"
    assert "target_session_attrs" not in options.connect_kwargs()  # the DSN's read-write


@asynccontextmanager
async def _store(url: str) -> AsyncIterator[StateStore]:
    backend = await open_or_skip(url)
    try:
        yield StateStore(backend)
    finally:
        await backend.aclose()


async def _reads(store: StateStore) -> dict[str, int]:
    """Reads served by the standby, of which waited for replay; reads sent to the primary."""
    reads: dict[str, int] = (await store.health()).detail["standby_reads"]
    return reads


@asynccontextmanager
async def _replay_paused() -> AsyncIterator[asyncpg.Connection]:
    """The standby's replay paused (it still receives and flushes WAL: commits go on)."""
    conn = await asyncpg.connect(os.environ["STATEKIT_TEST_POSTGRES_PAIR_STANDBY_URL"])
    try:
        await conn.execute("SELECT pg_wal_replay_pause()")
        yield conn
    finally:
        await conn.execute("SELECT pg_wal_replay_resume()")
        await conn.close()


@pytest.mark.asyncio
async def test_each_task_reads_its_own_writes_from_the_standby(pair_url: str) -> None:
    seed = random.SystemRandom().randrange(2**32)
    url = with_query(pair_url, namespace=fresh_namespace("ryw"), read="standby")

    async def task(store: StateStore, t: int) -> None:
        rng = random.Random(seed + t)
        for n in range(ROUNDS):
            key = f"t{t}/{rng.randrange(4)}"
            written = await store.put(key, {"t": t, "n": n})
            where = f"seed={seed} task={t} round={n} {key}"
            newest = await store.history(key, limit=1)
            assert newest[0].version == written.version, where
            scanned = {r.key: r.version async for r in store.scan(f"t{t}/")}
            assert scanned[key] == written.version, where
            then = await store.get(key, as_of=written.at)
            assert then is not None and then.version == written.version, where

    try:
        async with _store(url) as store:
            await asyncio.gather(*(task(store, t) for t in range(TASKS)))
            reads = await _reads(store)
        assert reads["standby"] > 0, f"seed={seed}: no read went to the standby {reads}"
        print(f"seed={seed} reads={reads}")
    finally:
        await drop(url)


@pytest.mark.asyncio
async def test_paused_replay_falls_back_to_the_primary(pair_url: str) -> None:
    url = with_query(pair_url, namespace=fresh_namespace("paused"), read="standby")
    other_url = with_query(url, standby_wait="0")
    try:
        async with (
            _store(with_query(url, standby_wait="0.05")) as store,
            _store(other_url) as other,
        ):
            await store.put("k", {"n": 0})
            assert [r.version for r in await other.history("k")] == [1]  # replayed
            async with _replay_paused():
                await store.put("k", {"n": 1})
                before = await _reads(store)
                # Its own write: the standby does not reach it in 50 ms, the primary answers.
                assert (await store.history("k", limit=1))[0].version == 2
                after = await _reads(store)
                assert after["primary"] == before["primary"] + 1, (before, after)
                assert after["waited"] == before["waited"] + 1, (before, after)
                # Another store, which wrote nothing, reads the standby as it is: behind.
                assert (await other.history("k", limit=1))[0].version == 1
                assert [r.data async for r in other.scan("k")] == [{"n": 0}]
                then = await other.get("k", as_of=datetime.now(UTC))
                assert then is not None and then.version == 1
    finally:
        await drop(url)


@pytest.mark.asyncio
async def test_a_read_waits_for_replay_then_reads_the_standby(pair_url: str) -> None:
    url = with_query(pair_url, namespace=fresh_namespace("wait"), read="standby", standby_wait="30")
    try:
        async with _store(url) as store:
            async with _replay_paused() as standby:
                await store.put("k", {"n": 1})
                before = await _reads(store)
                reading = asyncio.create_task(store.history("k", limit=1))
                await asyncio.sleep(0.2)
                assert not reading.done(), "the read did not wait for the paused standby"
                await standby.execute("SELECT pg_wal_replay_resume()")
                assert (await asyncio.wait_for(reading, 30))[0].version == 1
                after = await _reads(store)
            assert after["standby"] == before["standby"] + 1, (before, after)
            assert after["waited"] == before["waited"] + 1, (before, after)
            assert after["primary"] == before["primary"], (before, after)
    finally:
        await drop(url)


@pytest.mark.asyncio
async def test_the_standby_bench_runs(pair_url: str, tmp_path: Path) -> None:
    assert runner("postgresql-standby") is bench
    config = BenchConfig(n=20, rounds=1, url=pair_url)
    lines = [line async for line in bench(config, tmp_path)]
    assert [line.get("workload") for line in lines[:3]] == [
        "history",
        "scan",
        "history_after_write",
    ]
    assert all(line["statekit_ops_s"] and line["raw_ops_s"] for line in lines[:3])
    reads = lines[3]["standby_reads"]
    assert isinstance(reads, dict) and reads["standby"] > 0, reads


@pytest.mark.asyncio
async def test_a_connection_to_a_read_only_server_is_dropped(pair_url: str) -> None:
    """A demoted primary answers writes with 25006: the pool drops that connection (and
    the idle ones), so the next one goes through the URL's host list again."""
    standby = os.environ["STATEKIT_TEST_POSTGRES_PAIR_STANDBY_URL"]
    pool = ConnectionPool(lambda: asyncpg.connect(standby), min_size=1, max_size=2)
    await pool.start()
    try:
        conn = await pool.acquire()
        with pytest.raises(asyncpg.PostgresError) as refused:
            await conn.execute("CREATE TEMP TABLE statekit_probe (x int)")
        assert refused.value.sqlstate == "25006"
        await pool.release(conn, refused.value)
        assert pool.stats()["size"] == 0
    finally:
        await pool.close()
