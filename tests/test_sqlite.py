"""What only the SQLite default promises: files, processes, URLs, corruption."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import statekit
from statekit.backends.sqlite import SqliteBackend
from statekit.config import Settings
from statekit.errors import BackendError, ConfigError
from statekit.testing import _workers
from statekit.testing._pool import worker_pool


@pytest.mark.asyncio
async def test_several_processes_write_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    pool = worker_pool()
    futures = [
        asyncio.wrap_future(pool.submit(_workers.put_many, url, f"p{n}/", 100)) for n in range(4)
    ]
    # and this process writes the same keys' neighbours at the same time
    async with await statekit.open(url) as store:
        for i in range(100):
            await store.put(f"main/{i}", i)
        await asyncio.gather(*futures)
        keys = [r.key async for r in store.scan()]
        assert len(keys) == 500
        health = await store.health()
        assert health.detail["journal_mode"] == "wal"
        assert health.detail["synchronous"] == "FULL"


@pytest.mark.asyncio
async def test_watch_sees_commits_of_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/watched.db"
    store = await statekit.open(url + "?poll_interval=0.01")
    async with store, store.watch("w/") as changes:
        await asyncio.wrap_future(worker_pool().submit(_workers.put_many, url, "w/", 30))
        got = []
        async for record in changes:
            got.append((record.key, record.data))
            if len(got) == 30:
                break
    assert got == [(f"w/{i}", {"i": i}) for i in range(30)]


@pytest.mark.asyncio
async def test_default_store_is_statekit_db_in_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ["STATEKIT_URL", "TRADING_STATE_DB_TYPE"]:
        monkeypatch.delenv(name, raising=False)
    async with await statekit.open() as store:
        await store.put("k", 1)
        assert store.backend.name == "sqlite"
    assert (tmp_path / "statekit.db").exists()


@pytest.mark.asyncio
async def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    relative = await SqliteBackend.open("sqlite:///sub/rel.db?synchronous=normal&busy_timeout=5")
    assert relative.synchronous == "NORMAL" and relative.busy_timeout == 5.0
    await relative.aclose()
    assert (tmp_path / "sub" / "rel.db").exists()
    absolute = await SqliteBackend.open(f"sqlite:///{tmp_path}/abs.db")
    assert absolute.path == tmp_path / "abs.db"
    await absolute.aclose()
    for url, message in [
        ("sqlite://host/x.db", "host part"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite://", "names no file"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///x.db?colour=red", "unknown sqlite URL option 'colour'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            await SqliteBackend.open(url)


@pytest.mark.asyncio
async def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does its folder exist"):
        await statekit.open(f"sqlite:///{tmp_path}/no/such/dir/x.db", settings=Settings())


@pytest.mark.asyncio
async def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database" * 100
    path.write_bytes(content)
    with pytest.raises(BackendError, match="not a database"):
        await SqliteBackend.open(f"sqlite:///{path}")
    assert path.read_bytes() == content


@pytest.mark.asyncio
async def test_a_schema_from_a_newer_statekit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    backend = await SqliteBackend.open(f"sqlite:///{path}")
    await backend.aclose()
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(BackendError, match="newer statekit"):
        await SqliteBackend.open(f"sqlite:///{path}")


@pytest.mark.asyncio
async def test_corrupt_stored_json_is_a_serialization_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with await statekit.open(f"sqlite:///{path}", settings=Settings()) as store:
        await store.put("k", {"a": 1})
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE sk_versions SET data = '{broken' WHERE key = 'k'")
    con.close()
    async with await statekit.open(f"sqlite:///{path}", settings=Settings()) as store:
        with pytest.raises(statekit.SerializationError, match="not valid JSON"):
            await store.get("k")


@pytest.mark.asyncio
async def test_a_writer_holding_the_lock_too_long_is_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    backend = await SqliteBackend.open(f"sqlite:///{path}?busy_timeout=0.2")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        store = statekit.StateStore(backend)
        with pytest.raises(statekit.BackendUnavailable, match="locked") as err:
            await store.put("k", 1)
        assert err.value.retryable
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await store.put("k", 1)).version == 1  # works again once the lock is gone
    await store.aclose()


@pytest.mark.asyncio
async def test_short_reads_fall_back_to_the_reader_thread_when_the_loop_would_wait(
    tmp_path: Path,
) -> None:
    """latest(), position() and changed() read on the event loop's own connection, which
    never waits for a lock (timeout 0): on SQLITE_BUSY they ask the reader thread.

    WAL readers are almost never busy, so the loop's connection is pointed at a
    database another connection holds exclusively: its reads fail busy for real."""
    path = tmp_path / "s.db"
    async with await statekit.open(f"sqlite:///{path}") as store:
        backend = store.backend
        assert isinstance(backend, SqliteBackend) and backend._on_loop is not None
        await store.put("k", 1)
        since = await store.position()
        await store.put("k", 2)
        locked = tmp_path / "locked.db"
        holder = sqlite3.connect(locked, isolation_level=None)
        holder.execute("CREATE TABLE sk_versions (seq, key)")
        holder.execute("BEGIN EXCLUSIVE")
        own, backend._on_loop = backend._on_loop, sqlite3.connect(locked, timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                backend._on_loop.execute("SELECT 1 FROM sk_versions").fetchall()
            head = await store.get("k")
            assert head is not None and head.data == 2
            assert int(await store.position()) > int(since)
            assert await store.changed(since) == ["k"]
        finally:
            backend._on_loop.close()
            backend._on_loop = own
            holder.close()


@pytest.mark.asyncio
async def test_a_watch_cancelled_as_it_is_woken_ends(tmp_path: Path) -> None:
    """Cancelling a watcher's task in the same loop turn as a commit wakes it ends the
    task. (asyncio.wait_for swallowed that cancellation on Python 3.11: the task polled
    on forever, and a tiered store's aclose hung awaiting its invalidation task.)"""
    async with await statekit.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        backend = store.backend
        assert isinstance(backend, SqliteBackend)
        changes = await backend.watch()
        task = asyncio.ensure_future(anext(changes))
        for _ in range(100):  # until it waits for a commit
            await asyncio.sleep(0.01)
            if backend._waiters:
                break
        assert backend._waiters, "the watcher never waited"
        for waiter in list(backend._waiters):
            waiter.set_result(None)  # woken ...
        task.cancel()  # ... and cancelled in the same turn
        done, _ = await asyncio.wait([task], timeout=5)
        assert task in done and task.cancelled(), "the cancellation was swallowed"
        await changes.aclose()  # type: ignore[attr-defined]
