"""Redis Cluster against the test cluster (``scripts/servers.sh start redis-cluster``): a
namespace's slot moved to another master while writers and a watch run (MOVED/ASK),
``wait=N`` refusing an append its replicas did not take, and a manual failover under
writers of several tasks and processes with ``wait=1``. Seeds are printed in failures
(``STATEKIT_SEED`` replays one). The gate runs one failover and one slot move; ``make
soak`` (``STATEKIT_SOAK=1``) runs 5 of each, each with its own seed."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from redis.cluster import key_slot
from statekit_redis import RedisBackend
from statekit_redis.layout import Layout
from statekit_redis.options import with_namespace

from statekit import BackendUnavailable, ConflictError
from statekit.backend import Write
from statekit.testing import fresh_namespace

if TYPE_CHECKING:
    from conftest import ClusterAdmin

pytestmark = pytest.mark.asyncio

WRITERS_SCRIPT = Path(__file__).with_name("cluster_writers.py")
_spec = importlib.util.spec_from_file_location("cluster_writers", WRITERS_SCRIPT)
assert _spec is not None and _spec.loader is not None
cluster_writers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster_writers)  # the writers' code, run here as tasks too

WRITERS = 4
WRITES = 60
SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
ROUNDS = range(5 if SOAK else 1)
"""Failovers (and slot moves) per run: the gate's CI size, or make soak's."""


def slot_of(namespace: str) -> int:
    return int(key_slot(Layout(namespace).meta.encode()))


def move_slot(cluster: ClusterAdmin, slot: int, seed: int) -> tuple[str, str]:
    """Move ``slot`` to another master the way redis-cli --cluster reshard does: IMPORTING /
    MIGRATING, MIGRATE a few keys at a time (so commands meet ASK and TRYAGAIN), then
    SETSLOT NODE on every master. Returns (from, to) addresses."""
    rng = random.Random(seed)
    source = cluster.owner(slot)
    target = rng.choice([r for r in cluster.nodes() if r["role"] == "master" and r != source])
    src, dst = cluster.node(source["address"]), cluster.node(target["address"])
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source["id"])
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target["id"])
    host, _, port = target["address"].rpartition(":")
    while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 3):
        src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys)
        time.sleep(rng.uniform(0.01, 0.05))
    # The target first, then the source: the other order would send the slot's
    # commands back and forth between them (MOVED both ways) for a moment.
    masters = [r["address"] for r in cluster.nodes() if r["role"] == "master"]
    for address in sorted(masters, key=lambda a: (a != target["address"], a != source["address"])):
        cluster.node(address).execute_command("CLUSTER SETSLOT", slot, "NODE", target["id"])
    cluster.wait_for(lambda: cluster.owner(slot)["id"] == target["id"], "the slot move")
    return source["address"], target["address"]


async def write_versions(backend: RedisBackend, key: str, count: int, pause: float) -> int:
    """Write versions 1..count of ``key``, each expecting the one before (so a retry after
    BackendUnavailable can never write twice). Returns how many calls were retried."""
    retried = 0
    version = 0
    while version < count:
        try:
            await backend.append(
                [Write(key, {"i": version + 1}, expect=version)], datetime.now(UTC)
            )
        except (BackendUnavailable, ConflictError):
            retried += 1  # TRYAGAIN/ASK limit, or a reply lost: look at what is there
            try:
                head = (await backend.latest([key])).get(key)
            except BackendUnavailable:
                await asyncio.sleep(0.05)
                continue  # the append again: its expect stops a second write
            if head is None or head.version == version:
                continue
            assert head.version == version + 1 and head.data == {"i": version + 1}
        version += 1
        await asyncio.sleep(pause)
    return retried


@pytest.mark.parametrize("round_", ROUNDS)
async def test_writers_and_a_watch_follow_a_slot_moved_to_another_master(
    round_: int, redis_cluster_url: str, cluster: ClusterAdmin, drop: Callable[..., object]
) -> None:
    seed = int(os.environ.get("STATEKIT_SEED", random.randrange(1 << 30)))
    namespace = fresh_namespace()
    url = with_namespace(redis_cluster_url, namespace)
    slot = slot_of(namespace)
    backend = await RedisBackend.open(url)
    seen: list[tuple[str, int]] = []

    async def watch() -> None:
        async for record in await backend.watch():
            seen.append((record.key, record.version))
            if len(seen) == WRITERS * WRITES:
                return

    watcher = asyncio.create_task(watch())
    writers = [
        asyncio.create_task(write_versions(backend, f"w{n}", WRITES, 0.01)) for n in range(WRITERS)
    ]
    try:
        await asyncio.sleep(0.2)  # the writers are under way
        moved = await asyncio.to_thread(move_slot, cluster, slot, seed)
        retried = await asyncio.wait_for(asyncio.gather(*writers), 60)
        await asyncio.wait_for(watcher, 30)
        where = f"seed={seed} slot={slot} moved {moved[0]} -> {moved[1]} retried={retried}"
        print(where)
        assert cluster.owner(slot)["address"] == moved[1], where
        for n in range(WRITERS):
            history = await backend.read(f"w{n}")
            assert [(r.version, r.data) for r in history] == [
                (v, {"i": v}) for v in range(1, WRITES + 1)
            ], where
        for n in range(WRITERS):  # each commit once, in order per key
            versions = [v for key, v in seen if key == f"w{n}"]
            assert versions == list(range(1, WRITES + 1)), where
    finally:
        for task in (watcher, *writers):
            task.cancel()
        await asyncio.gather(watcher, *writers, return_exceptions=True)
        await backend.aclose()
        await drop(url)


async def test_wait_refuses_an_append_its_replica_did_not_take(
    redis_cluster_url: str, cluster: ClusterAdmin, drop: Callable[..., object]
) -> None:
    """With the replica stopped (SIGSTOP), ``wait=1`` fails the append after wait_timeout
    with BackendUnavailable, and without ``wait`` the same append is acknowledged at
    once although only the master holds it: what a failover then could lose."""
    namespace = fresh_namespace()
    url = with_namespace(redis_cluster_url, namespace)
    master = cluster.owner(slot_of(namespace))
    replica = cluster.replica_of(master["id"])
    pid = int(cluster.node(replica["address"]).info("server")["process_id"])
    plain = await RedisBackend.open(url)
    waiting = await RedisBackend.open(url + "&wait=1&wait_timeout=0.3")
    try:
        await waiting.append([Write("k", 1)], datetime.now(UTC))  # the replica takes it
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(BackendUnavailable, match="only 0 of wait=1 replicas"):
                await waiting.append([Write("k", 2)], datetime.now(UTC))
            [record] = await plain.append([Write("k", 3)], datetime.now(UTC))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert record.version == 3  # the refused one is on the master all the same
        [record] = await waiting.append([Write("k", 4)], datetime.now(UTC))
        assert record.version == 4
    finally:
        await plain.aclose()
        await waiting.aclose()
        await drop(url)


def start_writers(url: str, count: int, seed: int) -> list[subprocess.Popen[str]]:
    """``count`` writer processes (tests/cluster_writers.py, 2 tasks each), writing."""
    script = str(WRITERS_SCRIPT)
    processes = [
        subprocess.Popen(
            [sys.executable, script, url, f"p{n}", "2", str(seed + n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(count)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", "a writer process did not start"
    return processes


def stop_writers(processes: list[subprocess.Popen[str]]) -> tuple[dict[str, list[int]], int]:
    """Tell the writer processes to stop; their acknowledged writes and failed calls."""
    acked: dict[str, list[int]] = {}
    failed = 0
    for process in processes:
        out, err = process.communicate("stop\n", timeout=60)
        assert process.returncode == 0 and out.strip(), f"a writer process failed: {err}"
        result = json.loads(out.strip().splitlines()[-1])
        acked.update(result["acked"])
        failed += result["failed"]
    return acked, failed


def fail_over(cluster: ClusterAdmin, slot: int, to: dict[str, Any]) -> None:
    """``CLUSTER FAILOVER`` on replica ``to`` of the slot's master; until it serves the slot.

    A manual failover gives up after 5 s when it wins no election (a master votes for
    a replica of the same master at most once per 2 x cluster-node-timeout), so it is
    asked again until it happens."""
    deadline = time.monotonic() + 60
    while cluster.owner(slot)["id"] != to["id"]:
        assert time.monotonic() < deadline, f"no failover to {to['address']} in 60s"
        cluster.node(to["address"]).execute_command("CLUSTER FAILOVER")
        with contextlib.suppress(AssertionError):
            cluster.wait_for(lambda: cluster.owner(slot)["id"] == to["id"], "", timeout=6)
    cluster.wait_for(cluster.agreed, "cluster_state:ok after the failover")


@pytest.mark.parametrize("round_", ROUNDS)
async def test_a_failover_under_writers_loses_no_acknowledged_write(
    round_: int, redis_cluster_url: str, cluster: ClusterAdmin, drop: Callable[..., object]
) -> None:
    """Writers (3 tasks here, 2 processes of 2 tasks) append with ``wait=1`` while the
    replica of the namespace's master takes over (``CLUSTER FAILOVER``): every
    acknowledged write is in the history exactly once, the writers carry on through
    the switch, and a watch (blocked in XREAD on the old master) delivers every commit
    once, in order, from the new one. The old master takes its role back afterwards
    (the same topology for the next tests)."""
    seed = int(os.environ.get("STATEKIT_SEED", random.randrange(1 << 30)))
    namespace = fresh_namespace()
    url = with_namespace(redis_cluster_url, namespace) + "&wait=1&wait_timeout=1"
    slot = slot_of(namespace)
    master = cluster.owner(slot)
    replica = cluster.replica_of(master["id"])
    backend = await RedisBackend.open(url)
    seen: list[tuple[str, int]] = []

    async def watch() -> None:
        async for record in await backend.watch():
            seen.append((record.key, record.version))

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    stop = asyncio.Event()
    acked: dict[str, list[int]] = {}
    rng = random.Random(seed)
    local = [
        asyncio.create_task(cluster_writers.write(backend, f"l-{n}", stop, rng, acked))
        for n in range(3)
    ]
    processes = await asyncio.to_thread(start_writers, url, 2, seed)
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(fail_over, cluster, slot, replica)
        heads = await backend.latest([*acked, *(f"p{p}-{t}" for p in range(2) for t in range(2))])
        await asyncio.sleep(0.5)  # the writers carry on on the new master
        stop.set()
        failed = sum(await asyncio.gather(*local))
        others, failed_elsewhere = await asyncio.to_thread(stop_writers, processes)
        acked.update(others)
        where = f"seed={seed} slot={slot} {master['address']} -> {replica['address']}"
        assert len(acked) == 7, where
        histories = {key: await backend.read(key) for key in acked}
        total = sum(map(len, histories.values()))
        for _ in range(600):  # the watch catches up (a hang guard, not a speed bound)
            if len(seen) >= total:
                break
            await asyncio.sleep(0.05)
        for key, mine in acked.items():
            assert [v for k, v in seen if k == key] == [r.version for r in histories[key]], (
                f"{where}: the watch of {key} missed or repeated a commit"
            )
            stored = [r.data["i"] for r in histories[key]]
            assert len(stored) == len(set(stored)), f"{where}: {key} has a write twice"
            lost = set(mine) - set(stored)
            assert not lost, f"{where}: acknowledged writes of {key} lost: {sorted(lost)}"
            assert mine and mine[-1] > heads[key].data["i"], f"{where}: {key} stopped"
        total = sum(map(len, acked.values()))
        print(f"{where}: {total} acked, {failed} + {failed_elsewhere} (processes) failed calls")
    finally:
        stop.set()
        watcher.cancel()
        await asyncio.gather(watcher, *local, return_exceptions=True)
        for process in processes:
            if process.poll() is None:
                process.kill()
        await backend.aclose()
        await drop(url)
        if cluster.owner(slot)["id"] != master["id"]:
            await asyncio.to_thread(fail_over, cluster, slot, master)
