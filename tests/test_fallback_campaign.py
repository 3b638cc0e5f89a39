"""The outage campaign: writer processes with fallback journals against a primary that is
stopped and started at random, writers SIGKILLed and restarted, replay answers lost.

Each run is seeded (``STATEKIT_CAMPAIGN_SEED``, else a random seed, printed in every
assertion). Three writer processes (tests/fallback_campaign_writer.py), each with its
own journal, put their own keys, ``update()`` one shared counter and write atomic
batches of three keys. Meanwhile the real server (``scripts/servers.sh``) is stopped
and started ``OUTAGES`` times; at some outages a writer is SIGKILLed and started again
on the same journal, sometimes while the server is down (it must open then); a share
of replayed chunks commit and lose their answer. Then, read from the primary:

- every acknowledged write is there exactly once, and no write is there twice;
- each writer's writes of a key are in the order it made them;
- the counter rose by exactly 1 per version: increments sum exactly;
- the three keys of each batch have the same history (batches stay whole);
- no journal rejected anything, and every journal drained.

``make test`` runs 12 outages on PostgreSQL and 12 on Redis; ``make soak`` (``STATEKIT_SOAK=1``)
runs 150 on each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import statekit
from statekit.config import Settings
from statekit.errors import CapabilityError
from statekit.testing import fresh_namespace, server_control, server_url

WRITER = Path(__file__).with_name("fallback_campaign_writer.py")
SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
OUTAGES = int(os.environ.get("STATEKIT_CAMPAIGN_OUTAGES", "0")) or (150 if SOAK else 12)
WRITERS = 3
LOSE = 0.05  # share of replayed chunks whose answer is lost after the commit


@dataclass
class Writer:
    name: str
    journal: Path
    log: Path
    generation: int = 0
    process: subprocess.Popen[str] | None = None
    outputs: list[str] = field(default_factory=list)

    def start(self, url: str, seed: int, stop: Path) -> None:
        self.generation += 1
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                url,
                str(self.journal),
                self.name,
                str(self.generation),
                str(seed * 1000 + self.generation),
                str(self.log),
                str(stop),
                str(LOSE),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate()  # reaps it and closes its pipes

    def acks(self) -> int:
        if not self.log.exists():
            return 0
        return sum(1 for line in self.log.read_text().splitlines() if line.startswith("ack"))


def _url(name: str) -> str:
    base = server_url(name)
    namespace = fresh_namespace("outage")
    return f"{base}{'&' if '?' in base else '?'}namespace={namespace}"


def _compact_redis(url: str) -> None:
    """Rewrite the test server's AOF first: each restart then reloads only live data
    (what earlier tests left in the log made each restart take seconds)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.bgrewriteaof()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                return
            time.sleep(0.05)
    finally:
        client.close()


async def _campaign(name: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("STATEKIT_CAMPAIGN_SEED", "0")) or random.randrange(1, 10**9)
    where = f"seed {seed} on {name} (rerun: STATEKIT_CAMPAIGN_SEED={seed})"
    rng = random.Random(seed)
    control = server_control(name)
    url = _url(name)
    if name == "redis":
        await asyncio.to_thread(_compact_redis, server_url("redis"))
    async with await statekit.open(url, settings=Settings()) as setup:
        await setup.put("counter", 0)
    stop = tmp_path / "stop"
    writers = [
        Writer(f"w{i}", tmp_path / f"journal-{i}.db", tmp_path / f"log-{i}.txt")
        for i in range(WRITERS)
    ]
    for writer in writers:
        writer.start(url, seed, stop)
    kills = 0
    phases: dict[str, float] = {}
    clock = asyncio.get_running_loop().time
    started = clock()
    try:
        async with asyncio.timeout(120):  # every writer is up and writing
            while any(w.acks() < 5 for w in writers):
                await asyncio.sleep(0.1)
        phases["start_s"] = clock() - started
        for _ in range(OUTAGES):
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            if rng.random() < 0.15:
                victim = rng.choice(writers)
                victim.kill()
                kills += 1
                victim.start(url, seed, stop)  # opens on the same journal
            await asyncio.to_thread(control.stop)
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            if rng.random() < 0.1:  # this one must open while the primary is down
                victim = rng.choice(writers)
                victim.kill()
                kills += 1
                victim.start(url, seed, stop)
            await asyncio.to_thread(control.start)
        phases["outages_s"] = clock() - started - phases["start_s"]
    finally:
        await asyncio.to_thread(control.start)
        stop.touch()
        drained = clock()
        for writer in writers:
            assert writer.process is not None
            out, err = await asyncio.to_thread(writer.process.communicate, timeout=240)
            assert writer.process.returncode == 0, f"{where}: {writer.name} failed:\n{err[-3000:]}"
            writer.outputs.append(out)
            (tmp_path / f"stderr-{writer.name}.txt").write_text(err)
    phases["drain_s"] = clock() - drained
    await _verify(url, writers, where, kills, phases)


async def _verify(
    url: str, writers: list[Writer], where: str, kills: int, phases: dict[str, float]
) -> None:
    journaled = 0
    for writer in writers:
        figures = json.loads(writer.outputs[-1].strip().splitlines()[-1])["fallback"]
        assert figures["pending"] == 0, f"{where}: {writer.name}'s journal did not drain"
        assert figures["rejected"] == 0, f"{where}: {writer.name}'s journal rejected {figures}"
        journaled += figures["journaled"]
    async with await statekit.open(url, settings=Settings()) as store:
        histories: dict[str, list[str]] = {}
        counts: dict[str, Counter[str]] = {}

        async def tags(key: str) -> list[str]:
            if key not in histories:
                records = await store.history(key, newest_first=False, limit=10**9)
                histories[key] = [str(r.meta.get("op")) for r in records]
                counts[key] = Counter(histories[key])
            return histories[key]

        counter = await store.history("counter", newest_first=False, limit=10**9)
        values = [r.data for r in counter]
        assert values == list(range(len(values))), f"{where}: increments do not sum exactly"
        histories["counter"] = [str(r.meta.get("op")) for r in counter]
        counts["counter"] = Counter(histories["counter"])
        acked = tried = 0
        for writer in writers:
            batch_keys = [f"{writer.name}/g{i}" for i in range(3)]
            batches = [await tags(k) for k in batch_keys]
            assert batches[0] == batches[1] == batches[2], f"{where}: a batch was split"
            for key in [*(f"{writer.name}/k{i}" for i in range(5)), *batch_keys]:
                history = await tags(key)
                twice = [t for t, n in Counter(history).items() if n > 1]
                assert not twice, f"{where}: {key} holds {twice[:5]} more than once"
                order = [tuple(int(p) for p in t.split(".")[1:]) for t in history]
                assert order == sorted(order), f"{where}: {key}'s writes are out of order"
            for line in writer.log.read_text().splitlines():
                word, *rest = line.split()
                if word != "ack":
                    tried += word == "try"
                    continue
                op, tag, _ = rest
                acked += 1
                seq = int(tag.split(".")[2])
                key = {
                    "put": f"{writer.name}/k{seq % 5}",
                    "inc": "counter",
                    "batch": batch_keys[0],
                }[op]
                await tags(key)
                found = counts[key][tag]
                assert found == 1, f"{where}: acknowledged {op} {tag} is in {key} {found} times"
        twice = [t for t, n in counts["counter"].items() if n > 1]
        assert not twice, f"{where}: increments applied twice: {twice[:5]}"
        with contextlib.suppress(CapabilityError):  # a backend that cannot drop
            await store.backend.drop_namespace(forget=True)
    print(
        f"\n{where}: {tried} writes tried, {acked} acknowledged, {journaled} through the "
        f"journal, {len(values) - 1} increments, {kills} writers killed; "
        + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
    )
    assert journaled > 0, f"{where}: no outage sent a write to the journal"
    assert acked > 0, f"{where}: nothing was acknowledged"


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["postgres", "redis"])
async def test_no_acknowledged_write_is_lost_or_applied_twice_through_outages(
    name: str, tmp_path: Path
) -> None:
    await _campaign(name, tmp_path)
