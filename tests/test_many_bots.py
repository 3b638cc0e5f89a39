"""Many bots, one store: bot processes in namespaces of their own and in one shared.

Per engine (SQLite files, the PostgreSQL and Redis test servers, the Redis Cluster
once ``scripts/servers.sh start redis-cluster`` runs): two bots each alone in a
namespace and two sharing one (``make soak``: eight and eight), each an OS process of
:mod:`statekit.bench.bots_process` (orders placed with ``expect=0``, fills and
positions saved with compare-and-set, the namespace's counter incremented with
``store.update()``). Then:

- no namespace sees another's keys: its scan holds exactly its bots' keys, another
  namespace's key has no value and no history in it, and a watch started before the
  bots ran delivers exactly its own bots' commits;
- the shared namespace's writers lose no update: its counter is the sum of its bots'
  cycles (and each isolated namespace's is its bot's);
- a snapshot restore, a prune and a drop of one namespace (picked by the seed) leave
  every other namespace's keys, versions and history as they were.

The seed picks the cycles of each bot and the namespace wiped; it is in every
assertion message. ``STATEKIT_BOTS_SEED`` replays one.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

import statekit
from statekit import StateStore, bench
from statekit.backend import Capability, Record
from statekit.bench.bots import Fleet, namespace_url
from statekit.bench.bots_process import SHARED_KEY, WRITES_PER_CYCLE, BotReport, run_bot
from statekit.bench.harness import BenchConfig, drop_namespace
from statekit.bench.servercpu import local_ports, server_processes
from statekit.config import load_settings
from statekit.errors import CapabilityError, ConfigError
from statekit.store import Retention
from statekit.testing import server_url

ENGINES = ["sqlite", "postgres", "redis", "redis_cluster"]
"""Where the bots run: SQLite files, then test servers by their ``scripts/servers.sh`` name."""
SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
"""``make soak``: the issue's size, 8 bots alone and 8 sharing one namespace."""
ALONE, SHARING = (8, 8) if SOAK else (2, 2)
SIZES = [(f"iso-{i}", 1) for i in range(ALONE)] + [("shared", SHARING)]
"""Namespaces and their bots: ``ALONE`` bots each alone, ``SHARING`` bots sharing one."""
CYCLES = (100, 300) if SOAK else (8, 20)
"""The range each bot's orders are drawn from (by the seed)."""
START_DELAY = 0.5
"""Seconds from handing the bots to the pool to their common start."""
WATCH_TIMEOUT = 30.0
"""Seconds a watch may take to deliver what was committed (a hang guard)."""

Fingerprint = dict[str, tuple[int, object, int]]
"""key -> (head version, head data, versions kept)."""


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """One warm process per bot, shared by every engine's test."""
    context = multiprocessing.get_context("spawn")
    bots = sum(n for _, n in SIZES)
    with ProcessPoolExecutor(bots, mp_context=context) as executor:
        list(executor.map(_warm, range(bots)))
        yield executor


def _warm(_: int) -> None:
    """Import what a bot needs, before the bots are timed to start together."""
    for module in ("statekit.trading.state", "statekit_postgres", "statekit_redis"):
        importlib.import_module(module)


def _base_url(engine: str, tmp_path: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'bots.db'}"
    return server_url(engine)


@asynccontextmanager
async def _stores(fleet: Fleet) -> AsyncIterator[dict[str, StateStore]]:
    settings = load_settings(config_file="", env_file="")
    async with AsyncExitStack() as stack:
        stores = {
            label: await stack.enter_async_context(await statekit.open(url, settings=settings))
            for label, (url, _) in fleet.namespaces.items()
        }
        try:
            yield stores
        finally:
            for store in stores.values():
                await drop_namespace(store.backend)  # SQLite: the files go with tmp_path


async def _run_bots(
    pool: ProcessPoolExecutor, fleet: Fleet, cycles: Mapping[str, int]
) -> dict[str, BotReport]:
    loop = asyncio.get_running_loop()
    start_at = time.time() + START_DELAY
    specs = [
        replace(spec, cycles=cycles[spec.name], start_at=start_at) for spec in fleet.specs(cycles=1)
    ]
    reports = await asyncio.gather(*(loop.run_in_executor(pool, run_bot, s) for s in specs))
    return {r.name: r for r in reports}


async def _watched(changes: AsyncIterator[Record], until: str) -> list[str]:
    """The keys a watch delivers up to (not including) the sentinel key ``until``."""
    keys: list[str] = []
    async with asyncio.timeout(WATCH_TIMEOUT):
        async for record in changes:
            if record.key == until:
                return keys
            keys.append(record.key)
    return keys


async def _fingerprint(store: StateStore) -> Fingerprint:
    return {
        r.key: (r.version, r.data, len(await store.history(r.key, limit=1000)))
        async for r in store.scan("")
    }


def _owned(key: str, bots: Sequence[str]) -> bool:
    return key == SHARED_KEY or any(key.startswith(f"bot/{name}/") for name in bots)


async def _check_isolation(
    stores: Mapping[str, StateStore],
    fleet: Fleet,
    reports: Mapping[str, BotReport],
    watches: Mapping[str, AsyncIterator[Record]],
    seed: int,
) -> None:
    for label, store in stores.items():
        bots = fleet.namespaces[label][1]
        cycles = sum(reports[name].cycles for name in bots)
        keys = [r.key async for r in store.scan("")]
        foreign = [k for k in keys if not _owned(k, bots)]
        assert not foreign, f"seed {seed}: {label} sees {foreign[:5]}"
        orders = [k for k in keys if "/order/" in k]
        assert len(orders) == cycles, f"seed {seed}: {label} has {len(orders)} orders"
        counter = await store.get(SHARED_KEY)
        assert counter is not None and counter.data == cycles, (
            f"seed {seed}: {label} counted {counter and counter.data} fills of {cycles}: "
            "updates were lost"
        )
        for other, (_, other_bots) in fleet.namespaces.items():
            if other != label:
                key = f"bot/{other_bots[0]}/position/BTC-USD"
                assert await store.get(key) is None, f"seed {seed}: {label} reads {key}"
                assert await store.history(key) == [], f"seed {seed}: {label} has {key}"
        if label in watches:
            await store.put("sentinel", {"end": True})
            seen = await _watched(watches[label], "sentinel")
            assert all(_owned(k, bots) for k in seen), f"seed {seed}: {label} watched {seen[:5]}"
            assert len(seen) == WRITES_PER_CYCLE * cycles, (
                f"seed {seed}: {label} watched {len(seen)} commits of {WRITES_PER_CYCLE * cycles}"
            )


async def _wipe_one(
    stores: Mapping[str, StateStore], victim: str, seed: int
) -> dict[str, Fingerprint]:
    """Snapshot, prune, restore and drop ``victim``; the others' fingerprints before."""
    before = {label: await _fingerprint(s) for label, s in stores.items() if label != victim}
    store = stores[victim]
    snapshot = await store.snapshots.create("before the wipe")
    await store.put(SHARED_KEY, -1)
    assert await store.apply_retention(Retention(keep_last=1)) > 0, f"seed {seed}"
    await store.snapshots.restore(snapshot.id)
    counter = await store.get(SHARED_KEY)
    assert counter is not None and counter.data != -1, f"seed {seed}: restore missed"
    try:
        await store.backend.drop_namespace(forget=True)
    except CapabilityError:
        return before  # SQLite: a namespace is a file; nothing to drop
    assert [r.key async for r in store.scan("")] == [], f"seed {seed}: {victim} not wiped"
    return before


@pytest.mark.asyncio
@pytest.mark.parametrize("engine", ENGINES)
async def test_bots_in_namespaces_see_and_wipe_only_their_own(
    engine: str, tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    seed = int(os.environ.get("STATEKIT_BOTS_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    fleet = Fleet.plan(_base_url(engine, tmp_path), tmp_path, f"{seed:x}", SIZES)
    cycles = {spec.name: rng.randint(*CYCLES) for spec in fleet.specs(cycles=1)}
    victim = rng.choice(sorted(fleet.namespaces))
    async with _stores(fleet) as stores, AsyncExitStack() as watching:
        watches: dict[str, AsyncIterator[Record]] = {}
        for label, store in stores.items():
            if Capability.WATCH in store.capabilities:
                watches[label] = await watching.enter_async_context(store.watch(""))
        reports = await _run_bots(pool, fleet, cycles)
        await _check_isolation(stores, fleet, reports, watches, seed)
        before = await _wipe_one(stores, victim, seed)
        after = {label: await _fingerprint(s) for label, s in stores.items() if label != victim}
        assert after == before, f"seed {seed}: wiping {victim} changed another namespace"


@pytest.mark.asyncio
async def test_bots_bench_reports_each_namespace_and_the_aggregate(tmp_path: Path) -> None:
    config = BenchConfig(isolated=1, shared=1, seconds=0.1, directory=tmp_path)
    (result,) = [r async for r in bench.run("bots", config)]
    namespaces = result["namespaces"]
    assert isinstance(namespaces, dict) and sorted(namespaces) == ["isolated-0", "shared"]
    shared = namespaces["shared"]
    assert isinstance(shared, dict) and shared["bots"] == 1
    assert isinstance(result["alone"], dict) and result["alone"]["bots"] == 1
    for figure in ("aggregate_ops_s", "ratio_aggregate_vs_alone", "p50_ms", "p99_ms"):
        value = result[figure]
        assert isinstance(value, float) and value > 0, figure
    assert result["lost_updates"] == 0
    assert list(tmp_path.iterdir()) == []  # the scratch files are gone


def test_bots_bench_refuses_a_store_processes_cannot_share(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="separate processes"):
        namespace_url("memory://", "n", tmp_path)


def test_local_ports_reads_every_loopback_host_of_a_url() -> None:
    assert local_ports("postgresql://u@127.0.0.1:5432,127.0.0.1:5433/db?x=1") == [5432, 5433]
    assert local_ports("redis+cluster://127.0.0.1:7000,localhost:7001/") == [7000, 7001]
    assert local_ports("postgresql://u@db.example:5432/db") == []  # not on this machine
    assert local_ports("sqlite:///x.db") == []


@pytest.mark.parametrize("name", ["postgres", "redis"])
@pytest.mark.asyncio
async def test_bots_bench_measures_the_servers_cpu_per_write(name: str, tmp_path: Path) -> None:
    url = server_url(name)
    pids = server_processes(url)
    assert pids, f"no process found listening for {url}"
    config = BenchConfig(url=url, isolated=1, shared=0, seconds=0.3, directory=tmp_path)
    (result,) = [r async for r in bench.run("bots", config)]
    for figure in ("server_cpu_s", "server_cpu_us_per_write", "writes_per_server_core_s"):
        value = result[figure]
        assert isinstance(value, int | float) and value > 0, (figure, result)
