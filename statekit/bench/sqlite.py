"""``python -m statekit.bench sqlite``: ``put`` and ``batch`` beside :mod:`sqlite3` by hand.

The raw side is what a user writes by hand with :mod:`sqlite3` for the same durable
data (value, version, a history row per write) in tables of their own, at the same
durability (WAL, statekit's ``synchronous``): :class:`RawSqlite`. ``raw_thread`` is
the same raw work with one worker-thread round trip per call, the least any asyncio
wrapper of a blocking driver pays.

``concurrent16``: 16 tasks putting at once (the backend's group commit) beside
``single_task``, the same puts from one task; ``ratio_vs_single_task`` is what the
group commit gains. Its raw side is the same hand-written code: one connection, one
``BEGIN IMMEDIATE`` ... ``COMMIT`` per write (fsync'd), so sixteen tasks sharing it
take turns.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import statekit
from statekit.backend import JSON, Write
from statekit.backends.sqlite import SqliteBackend
from statekit.bench.harness import BenchConfig, Plan, Result, Workload, measure
from statekit.store import StateStore

__all__ = ["RawSqlite", "bench_sqlite"]


class RawSqlite:
    """What a user writes by hand with :mod:`sqlite3` for the same durable data: a table
    of current values and a history table of their own (value, version, a history row
    per write), WAL at statekit's ``synchronous``, one ``BEGIN IMMEDIATE`` ... ``COMMIT``
    per put or batch. No statekit SQL or schema."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        mode = self.con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"raw sqlite: could not switch {path} to WAL (got {mode})")
        self.con.execute(f"PRAGMA synchronous = {synchronous}")
        self.con.executescript(
            "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            " data TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS state_history (key TEXT NOT NULL,"
            " version INTEGER NOT NULL, data TEXT NOT NULL, at REAL NOT NULL,"
            " PRIMARY KEY (key, version));"
        )

    def durability(self) -> str:
        mode = self.con.execute("PRAGMA journal_mode").fetchone()[0]
        level = self.con.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"{str(mode).upper()} synchronous={names.get(level, level)}"

    def _write(self, con: sqlite3.Connection, key: str, value: JSON, at: float) -> None:
        data = json.dumps(value)
        row = con.execute("SELECT version FROM state WHERE key = ?", (key,)).fetchone()
        version = row[0] + 1 if row else 1
        con.execute("INSERT INTO state_history VALUES (?, ?, ?, ?)", (key, version, data, at))
        con.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, version, data))

    def put(self, key: str, value: JSON) -> None:
        self.batch([(key, value)])

    def batch(self, items: Sequence[tuple[str, JSON]]) -> None:
        con, at = self.con, time.time()
        con.execute("BEGIN IMMEDIATE")
        try:
            for key, value in items:
                self._write(con, key, value, at)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.con.close()


@dataclass(frozen=True, slots=True)
class _Sides:
    """The three runners' databases: statekit's store, raw on the loop, raw on a thread."""

    store: StateStore
    raw: RawSqlite
    threaded: RawSqlite
    worker: ThreadPoolExecutor

    async def on_thread(self, call: Callable[..., object], *args: Any) -> None:
        """``call(*args)`` on the worker thread (``call`` is a method of ``threaded``)."""
        await asyncio.get_running_loop().run_in_executor(self.worker, call, *args)


async def _open_sides(stack: AsyncExitStack, scratch: Path) -> _Sides:
    loop = asyncio.get_running_loop()
    store = await stack.enter_async_context(
        await statekit.open(f"sqlite:///{scratch / 'statekit.db'}")
    )
    backend = store.backend
    assert isinstance(backend, SqliteBackend)
    raw = RawSqlite(scratch / "raw.db", backend.synchronous)
    stack.callback(raw.close)
    # raw_thread: the same raw work, one worker-thread round trip per call.
    worker = ThreadPoolExecutor(1, thread_name_prefix="statekit-bench-raw")
    stack.callback(worker.shutdown)
    threaded = await loop.run_in_executor(
        worker, RawSqlite, scratch / "raw_thread.db", backend.synchronous
    )
    stack.push_async_callback(loop.run_in_executor, worker, threaded.close)
    return _Sides(store, raw, threaded, worker)


def _put_workload(sides: _Sides, plan: Plan, n: int, detail: dict[str, JSON]) -> Workload:
    async def raw_put() -> float:
        items = plan.items(n)
        started = time.perf_counter()
        for key, value in items:
            sides.raw.put(key, value)
        return time.perf_counter() - started

    async def raw_thread_put() -> float:
        items = plan.items(n)
        started = time.perf_counter()
        for key, value in items:
            await sides.on_thread(sides.threaded.put, key, value)
        return time.perf_counter() - started

    async def statekit_put() -> float:
        items = plan.items(n)
        started = time.perf_counter()
        for key, value in items:
            await sides.store.put(key, value)
        return time.perf_counter() - started

    return Workload("put", n, statekit_put, raw_put, {"raw_thread": raw_thread_put}, detail)


def _batch_workload(
    sides: _Sides, plan: Plan, config: BenchConfig, detail: dict[str, JSON]
) -> Workload:
    size = min(config.batch_size, config.keys)  # a batch holds each key at most once
    batches = max(1, config.n // size)

    async def raw_batch() -> float:
        groups = [plan.items(size) for _ in range(batches)]
        started = time.perf_counter()
        for group in groups:
            sides.raw.batch(group)
        return time.perf_counter() - started

    async def raw_thread_batch() -> float:
        groups = [plan.items(size) for _ in range(batches)]
        started = time.perf_counter()
        for group in groups:
            await sides.on_thread(sides.threaded.batch, group)
        return time.perf_counter() - started

    async def statekit_batch() -> float:
        groups = [[Write(k, v) for k, v in plan.items(size)] for _ in range(batches)]
        started = time.perf_counter()
        for group in groups:
            await sides.store.batch(group)
        return time.perf_counter() - started

    return Workload(
        "batch",
        batches * size,
        statekit_batch,
        raw_batch,
        {"raw_thread": raw_thread_batch},
        {**detail, "batch_size": size},
    )


def _concurrent_workload(
    store: StateStore, hand: RawSqlite, plan: Plan, n: int, detail: dict[str, JSON]
) -> Workload:
    tasks = 16

    async def raw_put(key: str, value: JSON) -> None:
        hand.put(key, value)

    async def store_put(key: str, value: JSON) -> None:
        await store.put(key, value)

    per_task = max(1, n // tasks)
    return Workload(
        "concurrent16",
        per_task * tasks,
        plan.writers(per_task, [store_put] * tasks),
        plan.writers(per_task, [raw_put] * tasks),
        {"single_task": plan.puts(per_task * tasks, store_put)},
        {
            **detail,
            "tasks": tasks,
            "raw": "hand-written sqlite3: own tables, one connection, one commit per write",
        },
    )


async def bench_sqlite(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put`` and ``batch`` through statekit next to the same work with :mod:`sqlite3`."""
    async with AsyncExitStack() as stack:
        sides = await _open_sides(stack, scratch)
        backend = sides.store.backend
        assert isinstance(backend, SqliteBackend)
        durability = sides.raw.durability()
        if durability != f"WAL synchronous={backend.synchronous}":
            raise RuntimeError(f"raw side runs {durability}, statekit {backend.synchronous}")
        detail: dict[str, JSON] = {
            "durability": durability,
            "keys": config.keys,
            "sqlite_version": sqlite3.sqlite_version,
        }
        plan = Plan([f"bench/{i}" for i in range(config.keys)])
        # Every runner writes each key once first, so the rounds update existing heads.
        for key, value in plan.items(len(plan.keys)):
            sides.raw.put(key, value)
            await sides.on_thread(sides.threaded.put, key, value)
            await sides.store.put(key, value)
        yield await measure("sqlite", _put_workload(sides, plan, config.n, detail), config.rounds)
        batch = _batch_workload(sides, plan, config, detail)
        yield await measure("sqlite", batch, config.rounds)
        hand = RawSqlite(scratch / "hand_written.db", backend.synchronous)
        stack.callback(hand.close)
        for key, value in plan.items(len(plan.keys)):  # existing heads, as on the other sides
            hand.put(key, value)
        concurrent = _concurrent_workload(sides.store, hand, plan, config.n, detail)
        yield await measure("sqlite", concurrent, config.rounds)
