"""How fast statekit writes, next to the same durable work done by hand.

``python -m statekit.bench [BENCHMARK | --backend BENCHMARK] [--n N] [--rounds R] [--dir PATH]``
prints one JSON object per line per workload::

    {"backend": "sqlite", "workload": "put", "n": 1000, "statekit_ops_s": ...,
     "raw_ops_s": ..., "ratio": ..., "durability": "WAL synchronous=FULL", ...}

Each :class:`Workload` is a pair of runners: statekit doing the work through its
public API, and the shortest program written by hand against the database driver
that stores the same rows with the same statements and the same durability. Both
run in one process in interleaved rounds (raw, statekit, raw, statekit...) and
the medians are reported, so machine noise lands on both. ``ratio`` is
``statekit_ops_s / raw_ops_s``: 1.0 would mean statekit costs nothing on top.

A workload may carry reference runners too (``raw_thread``: the raw statements
sent to one worker thread per call, the least any asyncio wrapper of a blocking
driver pays); they are timed in the same rounds and reported beside the pair.

A backend adds itself to :data:`BACKENDS`: an async generator that opens what it
needs, builds its workloads and yields ``await measure(...)`` for each. See
docs/benchmarks.md for what each pair compares and why it is fair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import import_module, metadata
from pathlib import Path

import statekit
import statekit.config
from statekit.backend import JSON, Write
from statekit.backends.sqlite import INSERT_VERSION, SELECT_HEAD, UPSERT_HEAD, SqliteBackend
from statekit.errors import StatekitError
from statekit.trading.bench_events import bench_events
from statekit.trading.bench_locks import bench_locks

__all__ = [
    "BACKENDS",
    "DEFAULT_N",
    "DEFAULT_ROUNDS",
    "LEGACY_SAVES",
    "BatchFn",
    "BenchConfig",
    "BenchRunner",
    "Plan",
    "PutFn",
    "Result",
    "Timed",
    "Workload",
    "bench_legacy",
    "bench_sqlite",
    "main",
    "measure",
    "run",
    "sample_value",
    "server_url",
]

DEFAULT_N = 1000
DEFAULT_ROUNDS = 7
DEFAULT_VERSIONS = 100_000

Timed = Callable[[], Awaitable[float]]
"""Runs one round of a workload and returns the seconds it took."""

Result = dict[str, JSON]
"""One output line."""


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to run.

    :param n: writes per round, per runner and per workload.
    :param rounds: timed rounds per runner; the median is reported.
    :param directory: where database files go (a fresh folder inside it, removed after).
    :param keys: how many distinct keys the writes rotate over, so versions grow.
    :param batch_size: writes per transaction in the ``batch`` workload.
    :param url: the server a server backend measures against (``--url``); its
        benchmark uses a namespace of its own there and removes it afterwards.
    :param writers: concurrent writers in a ``concurrent`` workload.
    :param versions: versions of the long history in the ``history`` benchmark.
    """

    n: int = DEFAULT_N
    rounds: int = DEFAULT_ROUNDS
    directory: Path | None = None
    keys: int = 100
    batch_size: int = 100
    url: str | None = None
    writers: int = 8
    versions: int = DEFAULT_VERSIONS


@dataclass(frozen=True, slots=True)
class Workload:
    """One measured pair: the same work through statekit and by hand.

    :param name: the workload's name in the output (``put``, ``batch``).
    :param ops: writes done by one round of any runner.
    :param statekit: one round through statekit.
    :param raw: one round written directly against the driver, on the calling thread.
    :param references: more runners to time in the same rounds, reported as
        ``<name>_ops_s`` and ``ratio_vs_<name>``.
    :param detail: extra facts for the output line (durability, batch size...).
    """

    name: str
    ops: int
    statekit: Timed
    raw: Timed
    references: Mapping[str, Timed] = field(default_factory=dict)
    detail: Mapping[str, JSON] = field(default_factory=dict)


BenchRunner = Callable[[BenchConfig, Path], AsyncGenerator[Result, None]]
"""A backend's benchmark: given the config and a scratch folder, yields one result
per workload (from :func:`measure`) and closes what it opened when it finishes."""


async def measure(backend: str, workload: Workload, rounds: int) -> Result:
    """Time ``workload`` in ``rounds`` interleaved rounds; the result line, with medians."""
    runners = {"raw": workload.raw, **workload.references, "statekit": workload.statekit}
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, timed in runners.items():
            seconds[name].append(await timed())
    rate = {name: workload.ops / statistics.median(s) for name, s in seconds.items()}
    result: Result = {
        "backend": backend,
        "workload": workload.name,
        "n": workload.ops,
        "rounds": rounds,
        "statekit_ops_s": round(rate["statekit"], 1),
        "raw_ops_s": round(rate["raw"], 1),
        "ratio": round(rate["statekit"] / rate["raw"], 3),
        "statekit_us_op": round(1e6 / rate["statekit"], 1),
        "raw_us_op": round(1e6 / rate["raw"], 1),
    }
    for name in workload.references:
        result[f"{name}_ops_s"] = round(rate[name], 1)
        result[f"{name}_us_op"] = round(1e6 / rate[name], 1)
        result[f"ratio_vs_{name}"] = round(rate["statekit"] / rate[name], 3)
    result.update(workload.detail)
    result["python"] = platform.python_version()
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result


PutFn = Callable[[str, JSON], Awaitable[object]]
"""Writes one key (``store.put``, or a raw driver's equivalent)."""
BatchFn = Callable[[list[tuple[str, JSON]]], Awaitable[object]]
"""Writes several keys at once."""


class Plan:
    """The keys and values every runner of one benchmark draws from.

    Each call hands out fresh values over the same keys, so versions grow as
    they do in real use, and builds the timed rounds every backend measures
    the same way: sequential puts, batches, concurrent writers.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._next = 0

    def items(self, count: int, among: Sequence[str] | None = None) -> list[tuple[str, JSON]]:
        """The next ``count`` (key, value) pairs, keys cycling over ``among`` (or all keys)."""
        pool = among or self.keys
        start, self._next = self._next, self._next + count
        return [(pool[i % len(pool)], sample_value(i)) for i in range(start, start + count)]

    def puts(self, count: int, put: PutFn) -> Timed:
        """A round of ``count`` sequential ``put`` calls."""

        async def run() -> float:
            items = self.items(count)
            started = time.perf_counter()
            for key, value in items:
                await put(key, value)
            return time.perf_counter() - started

        return run

    def batches(self, groups: int, among: Sequence[str], batch: BatchFn) -> Timed:
        """A round of ``groups`` calls of ``batch``, each with one value per key of ``among``."""

        async def run() -> float:
            work = [self.items(len(among), among) for _ in range(groups)]
            started = time.perf_counter()
            for group in work:
                await batch(group)
            return time.perf_counter() - started

        return run

    def writers(self, per_writer: int, puts: Sequence[PutFn]) -> Timed:
        """A round of one task per ``puts`` entry, each writing ``per_writer`` values
        to keys of its own (the writers contend for the store, not for one key)."""
        count = len(puts)
        own = [
            [k for i, k in enumerate(self.keys) if i % count == w] or self.keys
            for w in range(count)
        ]

        async def run() -> float:
            work = [self.items(per_writer, own[w]) for w in range(count)]

            async def writer(put: PutFn, items: list[tuple[str, JSON]]) -> None:
                for key, value in items:
                    await put(key, value)

            started = time.perf_counter()
            await asyncio.gather(*(writer(p, w) for p, w in zip(puts, work, strict=True)))
            return time.perf_counter() - started

        return run


def sample_value(i: int) -> dict[str, JSON]:
    """A small state value, like a position, that changes with ``i``."""
    return {"symbol": "BTC-USD", "qty": i, "avg_price": 64250.5, "side": "long", "open": True}


def _compact(value: JSON) -> str:
    # The JSON text statekit stores (statekit.codec.dumps), written out by hand.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _micros_now() -> int:
    return time.time_ns() // 1000


# -- sqlite --------------------------------------------------------------------------


class _RawSqlite:
    """SqliteBackend.append written by hand: same schema, PRAGMAs and statements."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        mode = self.con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"raw sqlite: could not switch {path} to WAL (got {mode})")
        self.con.execute(f"PRAGMA synchronous = {synchronous}")

    def durability(self) -> str:
        mode = self.con.execute("PRAGMA journal_mode").fetchone()[0]
        level = self.con.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"{str(mode).upper()} synchronous={names.get(level, level)}"

    def put(self, key: str, value: JSON) -> None:
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            row = con.execute(SELECT_HEAD, (key,)).fetchone()
            version = (row[0] if row else 0) + 1
            con.execute(
                INSERT_VERSION, (key, version, "state", _compact(value), "{}", _micros_now())
            )
            con.execute(UPSERT_HEAD, (key, version, "state", True))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def batch(self, items: Sequence[tuple[str, JSON]]) -> None:
        con = self.con
        at = _micros_now()
        con.execute("BEGIN IMMEDIATE")
        try:
            rows = []
            for key, value in items:
                row = con.execute(SELECT_HEAD, (key,)).fetchone()
                version = (row[0] if row else 0) + 1
                rows.append((key, version, "state", _compact(value), "{}", at))
            con.executemany(INSERT_VERSION, rows)
            con.executemany(UPSERT_HEAD, [(k, v, kind, True) for k, v, kind, _, _, _ in rows])
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.con.close()


async def bench_sqlite(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put`` and ``batch`` through statekit next to the same work with :mod:`sqlite3`."""
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            await statekit.open(f"sqlite:///{scratch / 'statekit.db'}")
        )
        backend = store.backend
        assert isinstance(backend, SqliteBackend)
        # The raw files get their schema from statekit itself, so the two cannot drift.
        for name in ("raw", "raw_thread"):
            async with await statekit.open(f"sqlite:///{scratch / name}.db"):
                pass
        raw = _RawSqlite(scratch / "raw.db", backend.synchronous)
        stack.callback(raw.close)
        # raw_thread: the same raw work, one worker-thread round trip per call.
        worker = ThreadPoolExecutor(1, thread_name_prefix="statekit-bench-raw")
        stack.callback(worker.shutdown)
        threaded = await loop.run_in_executor(
            worker, _RawSqlite, scratch / "raw_thread.db", backend.synchronous
        )
        stack.push_async_callback(loop.run_in_executor, worker, threaded.close)

        durability = raw.durability()
        if durability != f"WAL synchronous={backend.synchronous}":
            raise RuntimeError(f"raw side runs {durability}, statekit {backend.synchronous}")
        detail: dict[str, JSON] = {
            "durability": durability,
            "keys": config.keys,
            "sqlite_version": sqlite3.sqlite_version,
        }
        keys = [f"bench/{i}" for i in range(config.keys)]
        counter = 0

        def next_items(count: int) -> list[tuple[str, JSON]]:
            nonlocal counter
            start, counter = counter, counter + count
            return [(keys[i % len(keys)], sample_value(i)) for i in range(start, start + count)]

        # Every runner writes each key once first, so the rounds update existing heads.
        for key, value in next_items(len(keys)):
            raw.put(key, value)
            await loop.run_in_executor(worker, threaded.put, key, value)
            await store.put(key, value)

        async def raw_put() -> float:
            items = next_items(config.n)
            started = time.perf_counter()
            for key, value in items:
                raw.put(key, value)
            return time.perf_counter() - started

        async def raw_thread_put() -> float:
            items = next_items(config.n)
            started = time.perf_counter()
            for key, value in items:
                await loop.run_in_executor(worker, threaded.put, key, value)
            return time.perf_counter() - started

        async def statekit_put() -> float:
            items = next_items(config.n)
            started = time.perf_counter()
            for key, value in items:
                await store.put(key, value)
            return time.perf_counter() - started

        put = Workload(
            "put", config.n, statekit_put, raw_put, {"raw_thread": raw_thread_put}, detail
        )
        yield await measure("sqlite", put, config.rounds)

        size = min(config.batch_size, config.keys)  # a batch holds each key at most once
        batches = max(1, config.n // size)

        async def raw_batch() -> float:
            groups = [next_items(size) for _ in range(batches)]
            started = time.perf_counter()
            for group in groups:
                raw.batch(group)
            return time.perf_counter() - started

        async def raw_thread_batch() -> float:
            groups = [next_items(size) for _ in range(batches)]
            started = time.perf_counter()
            for group in groups:
                await loop.run_in_executor(worker, threaded.batch, group)
            return time.perf_counter() - started

        async def statekit_batch() -> float:
            groups = [[Write(k, v) for k, v in next_items(size)] for _ in range(batches)]
            started = time.perf_counter()
            for group in groups:
                await store.batch(group)
            return time.perf_counter() - started

        batch = Workload(
            "batch",
            batches * size,
            statekit_batch,
            raw_batch,
            {"raw_thread": raw_thread_batch},
            {**detail, "batch_size": size},
        )
        yield await measure("sqlite", batch, config.rounds)


async def bench_tiered(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """A PostgreSQL store with the read cache on, beside the same store without it.

    ``cached_get``: ``store.get`` served by the cache, beside a plain dict lookup of
    the same records (the floor any cache can reach). ``get``: cached beside uncached
    reads from PostgreSQL (a ratio above 1 is the cache's gain). ``put``: a write
    through the tiers beside a plain write (the tiers' cost on the write path).
    """
    import uuid

    base = server_url(config, "postgres")
    namespace = f"bench_tiered_{uuid.uuid4().hex[:8]}"
    url = f"{base}{'&' if '?' in base else '?'}namespace={namespace}"
    settings = statekit.config.load_settings(config_file="", env_file="")
    async with AsyncExitStack() as stack:
        cached = await stack.enter_async_context(
            await statekit.open(url, settings=settings, cache=True)
        )
        plain = await stack.enter_async_context(await statekit.open(url, settings=settings))
        drop = getattr(plain.backend, "drop_namespace", None)
        if drop is not None:
            stack.push_async_callback(drop, forget=True)
        keys = [f"bench/{i}" for i in range(config.keys)]
        for i, key in enumerate(keys):
            await cached.put(key, sample_value(i))
        table = {key: await plain.get(key) for key in keys}
        reads = [keys[i % len(keys)] for i in range(config.n)]
        detail: dict[str, JSON] = {"keys": config.keys, "cache_max_size": settings.cache.max_size}

        def timed_reads(get: Callable[[str], Awaitable[object]]) -> Timed:
            async def run() -> float:
                started = time.perf_counter()
                for key in reads:
                    await get(key)
                return time.perf_counter() - started

            return run

        async def dict_get(key: str) -> object:
            return table[key]

        yield await measure(
            "tiered",
            Workload(
                "cached_get",
                config.n,
                timed_reads(cached.get),
                timed_reads(dict_get),
                detail=detail,
            ),
            config.rounds,
        )
        yield await measure(
            "tiered",
            Workload(
                "get",
                config.n,
                timed_reads(cached.get),
                timed_reads(plain.get),
                detail={**detail, "raw": "the same PostgreSQL store without the cache"},
            ),
            config.rounds,
        )
        counter = 0

        def timed_puts(store: statekit.StateStore) -> Timed:
            async def run() -> float:
                nonlocal counter
                started = time.perf_counter()
                for _ in range(config.n):
                    counter += 1
                    await store.put(keys[counter % len(keys)], sample_value(counter))
                return time.perf_counter() - started

            return run

        yield await measure(
            "tiered",
            Workload(
                "put",
                config.n,
                timed_puts(cached),
                timed_puts(plain),
                detail={**detail, "raw": "the same PostgreSQL store without tiers"},
            ),
            config.rounds,
        )


# -- legacy: the drop-in beside the JSON file it replaces ------------------------------

LEGACY_SAVES = 20
"""Saves per round of the ``legacy`` benchmark at most (``--n`` lowers it): each save
rewrites a whole trading state, so a round of 1000 would take minutes."""


LegacyItems = dict[str, dict[str, JSON]]
"""A legacy section: symbol -> the dict the bot keeps for it."""


class _LegacyBook:
    """The positions and pair states a bot saves, changing between saves.

    ``config.keys`` positions (pair form, floats, naive ISO times, as seed 003's
    bots write them) and as many pair states. :meth:`next_state` changes one
    position's price (``every=False``) or every item (``every=True``) and returns
    the whole state, as fresh dicts: the bot hands over its whole state each time.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.prices = [round(1.0 + i / 1000, 5) for i in range(count)]
        self.cooldowns = [0] * count
        self.tick = 0

    def next_state(self, every: bool) -> tuple[LegacyItems, LegacyItems]:
        self.tick += 1
        step = self.tick / 100_000
        if every:
            self.prices = [round(1.0 + i / 1000 + step, 6) for i in range(self.count)]
            self.cooldowns = [self.tick % 50] * self.count
        else:
            i = self.tick % self.count
            self.prices[i] = round(1.0 + i / 1000 + step, 6)
        positions: LegacyItems = {}
        pair_states: LegacyItems = {}
        for i in range(self.count):
            pair = f"PAIR{i:03d}"
            positions[pair] = {
                "symbol1": f"S{i:03d}A",
                "symbol2": f"S{i:03d}B",
                "direction": "long" if i % 2 == 0 else "short",
                "entry_time": "2025-01-17T09:30:12.123456",
                "quantity": 100000,
                "entry_price": round(1.0 + i / 1000, 5),
                "current_price": self.prices[i],
            }
            pair_states[pair] = {
                "position": "long" if i % 2 == 0 else "short",
                "cooldown": self.cooldowns[i],
            }
        return positions, pair_states


def _legacy_json_save(path: Path, positions: LegacyItems, pair_states: LegacyItems) -> None:
    """The legacy ``TradingStateManager.save_trading_state``, made durable: the whole
    state as one JSON file, written to a temp file, fsynced, renamed over the old one,
    and the folder fsynced so the rename survives a crash."""
    state = {
        "active_positions": positions,
        "pair_states": pair_states,
        "timestamp": datetime.now().isoformat(),  # naive: what the legacy file held
    }
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "w", encoding="utf-8") as file:
        json.dump(state, file, indent=2, default=str)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


async def bench_legacy(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``save_trading_state`` through :mod:`statekit.compat` beside the legacy JSON file.

    Each save hands over a whole state of ``config.keys`` positions and as many pair
    states. ``save_one``: one position's price changed since the last save;
    ``save_all``: every item changed. The raw side rewrites the whole file each time
    (what the legacy manager did), durably; statekit writes the changed items and
    the index as one SQLite transaction (WAL, synchronous=FULL), after reading the
    heads to find what changed. ``async_api`` times the same saves through the async
    :class:`~statekit.trading.TradingState` without the sync portal.
    """
    from statekit.compat import TradingStateManager
    from statekit.compat.legacy_state import LegacyState

    saves = min(config.n, LEGACY_SAVES)
    settings = statekit.config.load_settings(
        config_file="", env_file="", url=f"sqlite:///{scratch / 'compat.db'}"
    )
    manager = TradingStateManager(str(scratch / "state.json"), settings=settings)
    direct = LegacyState(
        statekit.config.load_settings(
            config_file="", env_file="", url=f"sqlite:///{scratch / 'async.db'}"
        )
    )
    try:
        legacy_file = scratch / "legacy_state.json"
        for every in (False, True):
            books = {name: _LegacyBook(config.keys) for name in ("raw", "statekit", "async")}
            first = books["raw"].next_state(every)
            _legacy_json_save(legacy_file, *first)
            if manager.save_trading_state(*books["statekit"].next_state(every)) is not True:
                raise StatekitError("legacy bench: save_trading_state returned False")
            await direct.save(*books["async"].next_state(every))
            backend = direct.state.store.backend
            assert isinstance(backend, SqliteBackend)

            def timed(
                save: Callable[[LegacyItems, LegacyItems], object],
                book: _LegacyBook,
                every: bool = every,
            ) -> Timed:
                async def run() -> float:
                    states = [book.next_state(every) for _ in range(saves)]
                    started = time.perf_counter()
                    for positions, pair_states in states:
                        done = save(positions, pair_states)
                        if isinstance(done, Awaitable):
                            await done
                        elif done is False:
                            raise StatekitError("legacy bench: save_trading_state returned False")
                    return time.perf_counter() - started

                return run

            def raw_save(positions: LegacyItems, pair_states: LegacyItems) -> None:
                _legacy_json_save(legacy_file, positions, pair_states)

            def async_save(positions: LegacyItems, pair_states: LegacyItems) -> Awaitable[object]:
                return direct.save(positions, pair_states)

            workload = Workload(
                "save_all" if every else "save_one",
                saves,
                timed(manager.save_trading_state, books["statekit"]),
                timed(raw_save, books["raw"]),
                {"async_api": timed(async_save, books["async"])},
                {
                    "positions": config.keys,
                    "pair_states": config.keys,
                    "changed_per_save": 2 * config.keys if every else 1,
                    "file_bytes": legacy_file.stat().st_size,
                    "durability": f"WAL synchronous={backend.synchronous}",
                    "raw": "whole-file JSON rewrite: write temp, fsync, os.replace, fsync folder",
                },
            )
            yield await measure("legacy", workload, config.rounds)
    finally:
        manager.shutdown()
        await direct.aclose()


BACKENDS: dict[str, BenchRunner] = {
    "sqlite": bench_sqlite,
    "tiered": bench_tiered,
    "legacy": bench_legacy,
    "events": bench_events,
    "locks": bench_locks,
    # statekit.api needs the api extra (fastapi): imported only when this one runs.
    "api": lambda config, scratch: import_module("statekit.api.bench").bench_api(config, scratch),
    # Time travel against history length, on the store of --url (default SQLite).
    "history": lambda config, scratch: import_module("statekit.bench_history").bench_history(
        config, scratch
    ),
    # How fast a fallback journal drains into the primary of --url (default SQLite).
    "replay": lambda config, scratch: import_module("statekit.bench_replay").bench_replay(
        config, scratch
    ),
    # The reconciliation engine and the paper exchange: imported only when this one runs.
    "reconcile": lambda config, scratch: import_module(
        "statekit.trading.bench_reconcile"
    ).bench_reconcile(config, scratch),
}
"""Built-in backend name -> its benchmark."""

ENTRY_POINT_GROUP = "statekit.bench"
"""Plugins add their benchmark in this entry-point group, e.g.
``postgresql = "statekit_postgres.bench:bench"`` (a :data:`BenchRunner`)."""


def names() -> list[str]:
    """Every benchmark's name, built-in and installed, without importing any plugin."""
    return sorted({*BACKENDS, *(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))})


def runner(name: str) -> BenchRunner:
    """The benchmark called ``name``; a plugin's is imported only now."""
    if name in BACKENDS:
        return BACKENDS[name]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        loaded: BenchRunner = ep.load()
        return loaded
    raise StatekitError(f"no benchmark called {name!r} (installed: {', '.join(names())})")


async def run(backend: str, config: BenchConfig) -> AsyncGenerator[Result, None]:
    """Run one backend's benchmark in a scratch folder; yields each result as it is measured."""
    with tempfile.TemporaryDirectory(prefix="statekit-bench-", dir=config.directory) as scratch:
        async with aclosing(runner(backend)(config, Path(scratch))) as results:
            async for result in results:
                yield result


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m statekit.bench",
        description="statekit writes next to the same durable work written by hand; "
        "one JSON line per workload.",
    )
    parser.add_argument(
        "name",
        nargs="?",
        choices=[*names(), "all"],
        metavar="BENCHMARK",
        help=f"which to run: {', '.join([*names(), 'all'])} (same as --backend)",
    )
    parser.add_argument(
        "--backend",
        choices=[*names(), "all"],
        default=None,
        help="which backend to measure, or all installed (default sqlite)",
    )
    parser.add_argument(
        "--url", default=None, help="server URL for a server backend (postgresql, redis)"
    )
    parser.add_argument(
        "--n", type=_positive, default=DEFAULT_N, help="writes per round (default %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=_positive, default=DEFAULT_ROUNDS, help="rounds (default %(default)s)"
    )
    parser.add_argument(
        "--versions",
        type=_positive,
        default=DEFAULT_VERSIONS,
        help="versions of the long history of the history benchmark (default %(default)s)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder for the database files (default: the system temp folder); "
        "put it on the disk you care about, not a tmpfs",
    )
    return parser


def server_url(config: BenchConfig, name: str) -> str:
    """The server a server backend's benchmark uses: ``--url``, else the test server's
    ``STATEKIT_TEST_<NAME>_URL`` (``make bench`` starts it)."""
    url = config.url or os.environ.get(f"STATEKIT_TEST_{name.upper()}_URL")
    if not url:
        raise StatekitError(f"the {name} benchmark needs a server: pass --url, or run `make bench`")
    return url


async def _main(backend: str, config: BenchConfig) -> None:
    for name in names() if backend == "all" else [backend]:
        async for result in run(name, config):
            print(json.dumps(result), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.name and args.backend and args.name != args.backend:
        parser.error(f"two benchmarks named: {args.name} and --backend {args.backend}")
    backend = args.name or args.backend or "sqlite"
    if args.dir is not None and not args.dir.is_dir():
        print(f"statekit.bench: --dir {args.dir} is not a folder", file=sys.stderr)
        return 2
    config = BenchConfig(
        n=args.n, rounds=args.rounds, directory=args.dir, url=args.url, versions=args.versions
    )
    try:
        asyncio.run(_main(backend, config))
    except (StatekitError, sqlite3.Error, OSError) as exc:
        print(f"statekit.bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
