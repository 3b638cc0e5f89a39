"""The legacy load kept in this process (statekit/compat/loaded.py): reused only while no
legacy key changed, whoever wrote it; never changed through what a load returned."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import statekit
from statekit.compat.legacy_state import LegacyState
from statekit.config import load_settings
from statekit.errors import BackendUnavailable
from statekit.store import StateStore
from statekit.testing import fresh_namespace, server_url
from statekit.trading import kinds

PROCESSES = 3
ROUNDS = 15


def _legacy(url: str) -> LegacyState:
    return LegacyState(load_settings(config_file="", env_file="", url=url))


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store answering ``changed()``: a SQLite file, or a fresh PostgreSQL namespace."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
        return
    server = server_url("postgres")
    glue = "&" if "?" in server else "?"
    namespaced = f"{server}{glue}namespace={fresh_namespace('loadcache')}"
    try:
        yield namespaced
    finally:
        from statekit_postgres import PostgresBackend

        async with await PostgresBackend.open(namespaced) as backend:
            await backend.drop_namespace(forget=True)


@pytest_asyncio.fixture
async def legacy(url: str) -> AsyncIterator[LegacyState]:
    state = _legacy(url)
    try:
        yield state
    finally:
        await state.aclose()


def _count_scans(store: StateStore) -> list[str]:
    """Record the prefix of every scan the store is asked for (the store itself is real)."""
    scans: list[str] = []
    scan = store.scan

    def counted(prefix: str = "", **kwargs: Any) -> Any:
        scans.append(prefix)
        return scan(prefix, **kwargs)

    store.scan = counted  # type: ignore[assignment]
    return scans


@pytest.mark.asyncio
async def test_a_second_load_reads_nothing_and_hands_out_fresh_dicts(legacy: LegacyState) -> None:
    positions = {"EURUSD": {"qty": 1.5, "side": "long"}, "GBPUSD": {"qty": 2, "side": "short"}}
    await legacy.save(positions, {"EURUSD": {"cooldown": 0}}, {"cash": 5, "books": [{"a": 1}]})
    first = await legacy.load()
    scans = _count_scans(legacy.state.store)

    second = await legacy.load()

    assert scans == [] and first == second and first is not second
    assert first is not None and second is not None
    second["active_positions"]["EURUSD"]["qty"] = 99  # the caller's copy, changed
    second["active_positions"].pop("GBPUSD")
    second["pair_states"]["NEW"] = {}
    second["portfolio_data"]["books"][0]["a"] = 7
    second["timestamp"] = "changed"
    assert await legacy.load() == first
    assert scans == []


@pytest.mark.asyncio
async def test_nested_items_are_copied_whole(legacy: LegacyState) -> None:
    await legacy.save({"EURUSD": {"fills": [{"px": 1.1}], "meta": {"tag": "a"}}}, {})
    loaded = await legacy.load()
    assert loaded is not None
    loaded["active_positions"]["EURUSD"]["fills"][0]["px"] = 0
    loaded["active_positions"]["EURUSD"]["meta"]["tag"] = "b"

    again = await legacy.load()

    assert again is not None
    assert again["active_positions"] == {"EURUSD": {"fills": [{"px": 1.1}], "meta": {"tag": "a"}}}


@pytest.mark.asyncio
async def test_writes_by_anyone_else_are_seen_by_the_next_load(
    legacy: LegacyState, url: str
) -> None:
    await legacy.save({"EURUSD": {"qty": 1}}, {"EURUSD": {"cooldown": 0}})
    assert (await legacy.load()) is not None
    other = _legacy(url)  # its own connections
    try:
        async with await statekit.open(url) as store:
            await store.put("position/EURUSD", {"qty": 2}, kind=kinds.LEGACY_POSITION)
            loaded = await legacy.load()
            assert loaded is not None and loaded["active_positions"] == {"EURUSD": {"qty": 2}}
            await other.save(None, {})  # another saver deletes every pair state
            loaded = await legacy.load()
            assert loaded is not None and loaded["pair_states"] == {}
            await store.put("portfolio", {"cash": 1}, kind=kinds.LEGACY_PORTFOLIO)
            loaded = await legacy.load()
            assert loaded is not None and loaded["portfolio_data"] == {"cash": 1}
            stored = await store.get("portfolio")
            assert stored is not None and loaded["timestamp"] == stored.at.isoformat()
    finally:
        await other.aclose()


@pytest.mark.asyncio
async def test_other_keys_changing_do_not_make_a_load_read(legacy: LegacyState) -> None:
    await legacy.save({"EURUSD": {"qty": 1}}, {})
    store = legacy.state.store
    assert (await legacy.load()) is not None
    scans = _count_scans(store)
    for i in range(5):  # keys the load does not show, some starting like the legacy ones
        await store.put("prices/EURUSD", {"px": i})
        await store.put("orders/1", {"n": i})
        assert (await legacy.load()) == {
            "active_positions": {"EURUSD": {"qty": 1}},
            "pair_states": {},
            "timestamp": (await legacy.load() or {})["timestamp"],
        }
    assert scans == []
    await legacy.save_position("EURUSD", {"qty": 3}, by=None, note=None)
    loaded = await legacy.load()
    assert loaded is not None and loaded["active_positions"] == {"EURUSD": {"qty": 3}}
    record = await store.get("position/EURUSD")  # a save of the same keys: the index stays
    assert record is not None and loaded["timestamp"] == record.at.isoformat()


@pytest.mark.asyncio
async def test_a_load_racing_saves_of_this_state_never_keeps_a_stale_copy(
    legacy: LegacyState,
) -> None:
    await legacy.save({"P": {"n": 0}}, {})

    async def save(n: int) -> None:
        await legacy.save({"P": {"n": n}}, {})

    for n in range(1, 30):
        before, _, after = await asyncio.gather(legacy.load(), save(n), legacy.load())
        for loaded in (before, after):
            assert loaded is not None and loaded["active_positions"]["P"]["n"] in (n - 1, n)
        loaded = await legacy.load()
        assert loaded is not None and loaded["active_positions"] == {"P": {"n": n}}


def _write_in_process(url: str, n: int, seed: int, done: Any) -> None:
    """Write this process's own position and pair state, ROUNDS times, through the
    legacy state or a plain put; report each (slot, round) once it has committed."""
    rng = random.Random(seed)

    async def run() -> None:
        legacy = _legacy(url)
        try:
            state = await legacy.open()
            for round_ in range(1, ROUNDS + 1):
                if rng.random() < 0.5:
                    data = {"n": n, "round": round_}
                    await legacy.save_position(f"C{n}", data, by=None, note=None)
                    done.put(("active_positions", f"C{n}", round_))
                else:
                    key, data = f"pair/C{n}", {"round": round_}
                    await state.store.put(key, data, kind=kinds.LEGACY_PAIR_STATE)
                    done.put(("pair_states", f"C{n}", round_))
                await asyncio.sleep(rng.random() * 0.01)
        finally:
            await legacy.aclose()

    asyncio.run(run())


@pytest.mark.asyncio
async def test_writes_of_other_processes_are_seen_by_the_next_load(
    legacy: LegacyState, url: str
) -> None:
    seed = int(os.environ.get("STATEKIT_TEST_SEED") or int.from_bytes(os.urandom(4), "big"))
    print(f"seed {seed} (STATEKIT_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    await legacy.save({"M": {"round": 0}}, {})
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Queue()
    processes = [
        ctx.Process(target=_write_in_process, args=(url, n, rng.getrandbits(32), done))
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports: asyncio.Queue[tuple[str, str, int] | None] = asyncio.Queue()
    checkers = 2

    async def receive() -> None:
        for _ in range(PROCESSES * ROUNDS):
            reports.put_nowait(await asyncio.to_thread(done.get, True, 120))
        for _ in range(checkers):
            reports.put_nowait(None)

    async def check() -> None:
        # Whatever another process reported committed is in the next load, or newer.
        while (report := await reports.get()) is not None:
            section, name, round_ = report
            loaded = await legacy.load()
            assert loaded is not None
            assert loaded[section][name]["round"] >= round_, (seed, section, name, round_)
            loaded[section].clear()  # the caller's copy: never the kept one

    async def save_own() -> None:
        for round_ in range(1, ROUNDS + 1):
            await legacy.save_position("M", {"round": round_}, by=None, note=None)
            loaded = await legacy.load()
            assert loaded is not None and loaded["active_positions"]["M"] == {"round": round_}
            await asyncio.sleep(rng.random() * 0.01)

    try:
        await asyncio.gather(receive(), *(check() for _ in range(checkers)), save_own())
    finally:
        for process in processes:
            process.join(120)
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    fresh = _legacy(url)
    try:
        assert await legacy.load() == await fresh.load()
    finally:
        await fresh.aclose()


@pytest.mark.asyncio
async def test_a_store_that_cannot_say_what_changed_is_read_whole(
    legacy: LegacyState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """position()/changed() unavailable (a tiered store whose primary is down, while its
    mirrors still answer reads): the load reads everything, as without the capability,
    and keeps nothing it could not later check."""
    await legacy.save({"EURUSD": {"qty": 1}}, {})
    assert (await legacy.load() or {})["active_positions"] == {"EURUSD": {"qty": 1}}
    backend = legacy.state.store.backend

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("primary is down (injected)", backend=backend.name)

    monkeypatch.setattr(backend, "position", down)
    monkeypatch.setattr(backend, "changed", down)
    await legacy.state.store.put("position/GBPUSD", {"qty": 2}, kind=kinds.LEGACY_POSITION)
    loaded = await legacy.load()
    assert loaded is not None
    assert loaded["active_positions"] == {"EURUSD": {"qty": 1}, "GBPUSD": {"qty": 2}}
    assert legacy._loaded is None
    monkeypatch.undo()
    assert (await legacy.load() or {})["active_positions"]["GBPUSD"] == {"qty": 2}
