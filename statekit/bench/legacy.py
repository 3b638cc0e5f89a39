"""``python -m statekit.bench legacy``: the drop-in beside the JSON file it replaces.

``save_trading_state`` through :mod:`statekit.compat` beside the legacy manager's
whole-file JSON rewrite, made durable, with the same trading state handed over on
each save; ``async_api`` times the same saves through the async state without the
sync portal (:func:`bench_legacy` has the details).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import statekit
from statekit.backend import JSON, Write
from statekit.backends.sqlite import SqliteBackend
from statekit.bench.harness import BenchConfig, Result, Timed, Workload, measure
from statekit.bench.sqlite import RawSqlite
from statekit.compat import TradingStateManager
from statekit.compat.legacy_state import LegacyState
from statekit.config import load_settings
from statekit.errors import StatekitError
from statekit.store import StateStore
from statekit.trading import Position, TradingState

__all__ = ["LEGACY_SAVES", "LegacyItems", "bench_legacy"]


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


class _SqliteByHand(RawSqlite):
    """The leanest hand-written :mod:`sqlite3` program keeping what statekit keeps for a
    whole-state save: the heads and history tables of :class:`RawSqlite`; per save one
    transaction that reads the heads' versions in one query and writes both tables with
    ``executemany``."""

    def save(self, positions: LegacyItems, pair_states: LegacyItems) -> None:
        items = [(f"position/{k}", json.dumps(v)) for k, v in positions.items()]
        items += [(f"pair/{k}", json.dumps(v)) for k, v in pair_states.items()]
        con, at = self.con, time.time()
        con.execute("BEGIN IMMEDIATE")
        try:
            heads = dict(con.execute("SELECT key, version FROM state").fetchall())
            rows = [(key, heads.get(key, 0) + 1, data) for key, data in items]
            con.executemany(
                "INSERT INTO state_history VALUES (?, ?, ?, ?)", [(*row, at) for row in rows]
            )
            con.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", rows)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise


async def bench_legacy(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``save_trading_state`` through :mod:`statekit.compat` beside the legacy JSON file.

    Each save hands over a whole state of ``config.keys`` positions and as many pair
    states. ``save_one``: one position's price changed since the last save;
    ``save_all``: every item changed. The raw side rewrites the whole file each time
    (what the legacy manager did), durably; statekit writes the changed items and
    the index as one SQLite transaction (WAL, synchronous=FULL), after reading the
    heads to find what changed. ``async_api`` times the same saves through the async
    :class:`~statekit.trading.TradingState` without the sync portal; ``sqlite_by_hand``
    (``save_all`` only) the same rows written by a hand-written :mod:`sqlite3` program.
    """
    saves = min(config.n, LEGACY_SAVES)
    settings = load_settings(config_file="", env_file="", url=f"sqlite:///{scratch / 'compat.db'}")
    manager = TradingStateManager(str(scratch / "state.json"), settings=settings)
    direct = LegacyState(
        load_settings(config_file="", env_file="", url=f"sqlite:///{scratch / 'async.db'}")
    )
    by_hand: _SqliteByHand | None = None
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

            references = {"async_api": timed(async_save, books["async"])}
            if every:  # the floor of keeping every item's history in SQLite (see docs)
                by_hand = _SqliteByHand(scratch / "by_hand.db", backend.synchronous)
                hand_book = _LegacyBook(config.keys)
                by_hand.save(*hand_book.next_state(every))  # its rows exist, as statekit's do
                references["sqlite_by_hand"] = timed(by_hand.save, hand_book)
            workload = Workload(
                "save_all" if every else "save_one",
                saves,
                timed(manager.save_trading_state, books["statekit"]),
                timed(raw_save, books["raw"]),
                references,
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
        yield await measure(
            "legacy", _load_workload(manager, direct, legacy_file, config), config.rounds
        )
    finally:
        manager.shutdown()
        await direct.aclose()
        if by_hand is not None:
            by_hand.con.close()
    yield await _trading_growth(config, scratch)
    yield await _restore_growth(config, scratch)


def _load_workload(
    manager: TradingStateManager, direct: LegacyState, legacy_file: Path, config: BenchConfig
) -> Workload:
    """``load_trading_state`` beside the legacy manager's ``json.load`` of its file, both
    holding the state the last save left."""
    loads = min(config.n, LEGACY_SAVES)

    def timed(load: Callable[[], object]) -> Timed:
        async def run() -> float:
            started = time.perf_counter()
            for _ in range(loads):
                done = load()
                if isinstance(done, Awaitable):
                    done = await done
                if not done:
                    raise StatekitError("legacy bench: nothing loaded")
            return time.perf_counter() - started

        return run

    def raw_load() -> object:
        with open(legacy_file, encoding="utf-8") as file:
            return json.load(file)

    return Workload(
        "load",
        loads,
        timed(manager.load_trading_state),
        timed(raw_load),
        {"async_api": timed(direct.load)},
        {
            "positions": config.keys,
            "pair_states": config.keys,
            "file_bytes": legacy_file.stat().st_size,
            "raw": "json.load of the legacy file",
        },
    )


TRADING_SIZES = (100, 1000)
"""Positions of the two stores ``trading_save_one`` compares."""
RESTORE_SIZES = (1000, 10_000)
"""Keys of the two stores ``restore_10_changed`` compares."""
RESTORE_CHANGED = 10


def _growth(result: Result, small: int, large: int) -> Result:
    """A :func:`measure` line whose raw side is the small store, as a growth figure."""
    ratio = result["ratio"]
    assert isinstance(ratio, float | int)
    result["small"], result["large"] = small, large
    result["small_us_op"], result["large_us_op"] = result["raw_us_op"], result["statekit_us_op"]
    result["growth"] = round(1 / ratio, 3)  # cost at large / cost at small
    result["raw"] = f"the same work on the {small}-key store (growth = large / small)"
    return result


async def _trading_growth(config: BenchConfig, scratch: Path) -> Result:
    """``TradingState.save`` of whole books of typed positions, one changed per save, at
    100 and at 1,000 positions: how its cost grows with what did not change."""
    saves = min(config.n, LEGACY_SAVES)
    stores = [await statekit.open(f"sqlite:///{scratch / f'trading{n}.db'}") for n in TRADING_SIZES]
    try:
        runners: list[Timed] = []
        for store, count in zip(stores, TRADING_SIZES, strict=True):
            state = TradingState(store)
            book = [
                Position(
                    symbol=f"S{i:04d}", amount=Decimal(100), entry_price=Decimal(1000 + i) / 1000
                )
                for i in range(count)
            ]
            await state.save(positions=book)

            async def run(state: TradingState = state, book: list[Position] = book) -> float:
                started = time.perf_counter()
                for _ in range(saves):
                    i = random.randrange(len(book))
                    book[i] = book[i].model_copy(update={"amount": (book[i].amount or 0) + 1})
                    result = await state.save(positions=book)
                    assert result.written == 1
                return time.perf_counter() - started

            runners.append(run)
        workload = Workload(
            "trading_save_one",
            saves,
            runners[1],
            runners[0],
            detail={"changed_per_save": 1, "durability": "WAL synchronous=FULL"},
        )
        return _growth(await measure("legacy", workload, config.rounds), *TRADING_SIZES)
    finally:
        for store in stores:
            await store.aclose()


async def _restore_growth(config: BenchConfig, scratch: Path) -> Result:
    """``snapshots.restore`` after 10 keys changed, in stores of 1,000 and 10,000 keys;
    beside it, the growth of a plain batch writing 10 keys in the same two stores
    (what the database itself adds when its tables are larger)."""
    stores = [await statekit.open(f"sqlite:///{scratch / f'restore{n}.db'}") for n in RESTORE_SIZES]
    try:
        runners: list[Timed] = []
        writes: dict[str, Timed] = {}
        for store, count in zip(stores, RESTORE_SIZES, strict=True):
            for start in range(0, count, 1000):
                await store.batch(
                    Write(f"k/{i:05d}", {"v": i}) for i in range(start, min(count, start + 1000))
                )
            info = await store.snapshots.create("bench", prefix="k/")

            async def run(
                store: StateStore = store, snapshot: str = info.id, count: int = count
            ) -> float:
                changed = random.sample(range(count), RESTORE_CHANGED)
                await store.batch(Write(f"k/{i:05d}", {"v": -i - 1}) for i in changed)
                started = time.perf_counter()
                restored = await store.snapshots.restore(snapshot)
                took = time.perf_counter() - started
                assert restored == RESTORE_CHANGED
                return took

            async def write(store: StateStore = store, count: int = count) -> float:
                changed = random.sample(range(count), RESTORE_CHANGED)
                started = time.perf_counter()
                await store.batch(Write(f"k/{i:05d}", {"v": -i - 1}) for i in changed)
                took = time.perf_counter() - started
                await store.batch(Write(f"k/{i:05d}", {"v": i}) for i in changed)  # as before
                return took

            runners.append(run)
            writes[f"write_10_{count}"] = write
        workload = Workload(
            "restore_10_changed",
            1,
            runners[1],
            runners[0],
            writes,
            detail={"changed": RESTORE_CHANGED, "durability": "WAL synchronous=FULL"},
        )
        result = _growth(await measure("legacy", workload, config.rounds), *RESTORE_SIZES)
        small, large = (result[f"write_10_{n}_us_op"] for n in RESTORE_SIZES)
        assert isinstance(small, float) and isinstance(large, float)
        result["write_10_growth"] = round(large / small, 3)
        for n in RESTORE_SIZES:  # statekit vs a plain write: not a figure of this line
            del result[f"ratio_vs_write_10_{n}"]
        return result
    finally:
        for store in stores:
            await store.aclose()
