"""A promotion under writers loses no acknowledged write and needs no new URL.

Writer tasks and writer processes append numbered versions through the pair's
multi-host URL (``target_session_attrs=read-write``; the primary commits with
``synchronous_commit=on`` to a synchronous standby, scripts/servers.sh). Mid-run
the primary is killed (``pg_ctl stop -m immediate``) and the standby promoted
(``pg_ctl promote``); the writers see BackendUnavailable meanwhile, never a
driver exception, and carry on against the new primary through the same URL.
Then each writer's key must hold 1, 2, 3... exactly once, every acknowledged seq
among them. The pair is rebuilt afterwards (``scripts/servers.sh restart
postgres-pair``) for the tests that follow.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import statekit
from statekit.testing import fresh_namespace, server_control

from .conftest import with_query

SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
TASKS = 4
PROCESSES = 2
# Acknowledged writes each writer makes before / after the failover; failovers (each on
# a fresh pair). make soak (STATEKIT_SOAK=1) runs the full size.
BEFORE, AFTER = (200, 200) if SOAK else (20, 20)
FAILOVERS = 5 if SOAK else 1
WRITER = Path(__file__).with_name("failover_writer.py")


def _writer_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("failover_writer", WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pg_ctl(*args: str) -> None:
    """Run the pair's pg_ctl (as the postgres user when root, as servers.sh does)."""
    command = [os.path.join(os.environ["STATEKIT_TEST_POSTGRES_PAIR_PG_BIN"], "pg_ctl"), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


class Writer:
    """One writer's reports: what it was told landed, and what it found had landed."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.acked: list[int] = []
        self.resolved: list[int] = []

    def report(self, kind: str, seq: int) -> None:
        (self.acked if kind == "acked" else self.resolved).append(seq)


async def _wait_for(done: Callable[[], bool], what: str, seed: int) -> None:
    async def poll() -> None:
        while not done():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), 90)  # a hang guard, not a speed limit
    except TimeoutError:
        pytest.fail(f"seed={seed}: {what} within 90 s")


async def _process(url: str, writer: Writer, stop_file: Path, seed: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WRITER), url, writer.key, str(stop_file), str(seed),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert await proc.stdout.readline() == b"ready\n"
    async for line in proc.stdout:
        kind, seq = line.decode().split()
        writer.report(kind, int(seq))
    errors = (await proc.stderr.read()).decode()
    assert await proc.wait() == 0, f"seed={seed}: writer process {writer.key} failed: {errors}"


@pytest.mark.asyncio
@pytest.mark.parametrize("failover", range(FAILOVERS))
async def test_promotion_under_writers_loses_no_acknowledged_write(
    pair_url: str, tmp_path: Path, failover: int
) -> None:
    pair = server_control("postgres-pair")
    seed = random.SystemRandom().randrange(2**32)
    url = with_query(pair_url, namespace=fresh_namespace("promote"))
    writers = [Writer(f"w/{i}") for i in range(TASKS + PROCESSES)]
    stop_file, stopping = tmp_path / "stop", False
    module = _writer_module()
    jobs = [
        module.write_until(url, w.key, lambda: stopping, w.report, seed + i)
        for i, w in enumerate(writers[:TASKS])
    ] + [_process(url, w, stop_file, seed + TASKS + i) for i, w in enumerate(writers[TASKS:])]
    running = asyncio.gather(*jobs)
    try:
        await _wait_for(
            lambda: all(len(w.acked) >= BEFORE for w in writers) or running.done(),
            "the writers did not start",
            seed,
        )
        _pg_ctl(
            "-D", os.environ["STATEKIT_TEST_POSTGRES_PAIR_PRIMARY_DATA"], "-m", "immediate", "stop"
        )
        before = {w.key: len(w.acked) for w in writers}
        _pg_ctl("-D", os.environ["STATEKIT_TEST_POSTGRES_PAIR_STANDBY_DATA"], "-w", "promote")
        await _wait_for(
            lambda: all(len(w.acked) >= before[w.key] + AFTER for w in writers) or running.done(),
            "the writers did not carry on against the promoted standby",
            seed,
        )
        stopping = True
        stop_file.touch()
        await asyncio.wait_for(running, 60)
        # Read through read=standby: with no standby left, its pool lands on the new primary.
        async with await statekit.open(with_query(url, read="standby")) as store:
            for w in writers:
                history = await store.history(w.key, limit=100_000, newest_first=False)
                seqs = [r.data["seq"] for r in history]
                where = f"seed={seed} {w.key}"
                assert seqs == list(range(1, len(seqs) + 1)), f"{where}: gaps or repeats {seqs}"
                assert set(w.acked) <= set(seqs), f"{where}: lost {set(w.acked) - set(seqs)}"
                assert len(w.acked) >= before[w.key] + AFTER, where
            print(f"seed={seed} acked={[len(w.acked) for w in writers]} "
                  f"resolved={[w.resolved for w in writers]}")  # fmt: skip
    finally:
        stopping = True
        stop_file.touch()
        if not running.done():
            running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        pair.stop()  # removes both nodes: start builds a fresh pair on the same ports
        pair.start()
