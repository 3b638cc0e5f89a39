"""``python -m statekit.bench locks``: keyed locks beside a bare :class:`asyncio.Lock`.

Workloads (each a JSON line, see :mod:`statekit.bench`):

``uncontended``
    one task takes and releases ``"balance"``, ``100 * n`` times, beside
    ``async with lock:`` on one bare asyncio.Lock (the least any async lock
    costs). ``statekit_us_op`` is one acquire + release; the target is 5 µs.
``uncontended_two``
    the same with two names at once (``"balance"``, ``"position/BTC-USD"``),
    beside two bare locks nested by hand in the same order.
``contended_one``
    10 tasks take one name ``n`` times in all, each yielding to the loop once
    while holding it, beside the same with a bare lock.
``contended_overlap``
    10 tasks take two of three names (``balance``, ``position/BTC-USD``,
    ``position/ETH-USD``, each task its own pair), beside bare locks taken in
    sorted order by hand.

Every runner is timed in this process's CPU time (``time.process_time``), not
wall time: the work is one thread with no I/O, so that is its whole cost, and
other processes on a busy machine do not inflate it.

Contended lines add the keyed locks' own statistics of the last round:
``contention_rate_pct`` and ``mean_wait_ms``/``max_wait_ms`` of the busiest name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from statekit.backend import JSON
from statekit.bench.harness import BenchConfig, Result, Timed, Workload, measure
from statekit.trading.locks import KeyedLocks

__all__ = ["TARGET_US", "TASKS", "bench_locks"]

TARGET_US = 5.0
"""The uncontended acquire + release this module is built to stay under, in µs."""
TASKS = 10
"""Tasks in a contended workload."""
UNCONTENDED_FACTOR = 100
"""One pair takes a few µs: ``n`` of them would be too short to time."""

NAMES = ("balance", "position/BTC-USD", "position/ETH-USD")
PAIRS = ((NAMES[0], NAMES[1]), (NAMES[1], NAMES[2]), (NAMES[0], NAMES[2]))


def _uncontended(locks: KeyedLocks, raw: Sequence[asyncio.Lock], ops: int) -> tuple[Timed, Timed]:
    names = NAMES[: len(raw)]

    async def keyed() -> float:
        hold = locks.hold
        started = time.process_time()
        if len(names) == 1:
            name = names[0]
            for _ in range(ops):
                async with hold(name):
                    pass
        else:
            for _ in range(ops):
                async with hold(*names):
                    pass
        return time.process_time() - started

    async def bare() -> float:
        started = time.process_time()
        if len(raw) == 1:
            lock = raw[0]
            for _ in range(ops):
                async with lock:
                    pass
        else:
            first, second = raw
            for _ in range(ops):
                async with first, second:
                    pass
        return time.process_time() - started

    return keyed, bare


def _contended(locks: KeyedLocks, sets: Sequence[tuple[str, ...]], ops: int) -> tuple[Timed, Timed]:
    """``TASKS`` tasks, task i taking ``sets[i % len(sets)]``, ``ops`` holds in all."""
    per_task = max(1, ops // TASKS)
    bare_locks = {name: asyncio.Lock() for names in sets for name in names}

    async def keyed_worker(names: tuple[str, ...]) -> None:
        for _ in range(per_task):
            async with locks.hold(*names):
                await asyncio.sleep(0)

    async def bare_worker(names: tuple[str, ...]) -> None:
        ordered = [bare_locks[n] for n in sorted(names)]
        for _ in range(per_task):
            for lock in ordered:
                await lock.acquire()
            try:
                await asyncio.sleep(0)
            finally:
                for lock in reversed(ordered):
                    lock.release()

    async def keyed() -> float:
        locks.reset_statistics()
        started = time.process_time()
        await asyncio.gather(*(keyed_worker(sets[i % len(sets)]) for i in range(TASKS)))
        return time.process_time() - started

    async def bare() -> float:
        started = time.process_time()
        await asyncio.gather(*(bare_worker(sets[i % len(sets)]) for i in range(TASKS)))
        return time.process_time() - started

    return keyed, bare


def _busiest(locks: KeyedLocks) -> dict[str, JSON]:
    stats = locks.statistics()
    busiest = max(stats.values(), key=lambda s: s.contended)
    total = sum(s.acquisitions for s in stats.values())
    contended = sum(s.contended for s in stats.values())
    return {
        "contention_rate_pct": round(100 * contended / total, 1) if total else 0.0,
        "busiest_lock": busiest.name,
        "mean_wait_ms": busiest.mean_wait_ms,
        "max_wait_ms": busiest.max_wait_ms,
    }


async def bench_locks(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """The keyed-lock benchmark (see the module docstring); ``scratch`` is not used."""
    del scratch
    ops = config.n * UNCONTENDED_FACTOR
    raw_note = "bare asyncio.Lock: async with lock"
    for name, count in (("uncontended", 1), ("uncontended_two", 2)):
        locks = KeyedLocks()
        keyed, bare = _uncontended(locks, [asyncio.Lock() for _ in range(count)], ops)
        result = await measure(
            "locks",
            Workload(
                name,
                ops,
                keyed,
                bare,
                detail={
                    "names": count,
                    "tasks": 1,
                    "raw": raw_note,
                    "target_us_op": TARGET_US,
                    "clock": "process_time",
                },
            ),
            config.rounds,
        )
        us = result["statekit_us_op"]
        result["meets_target"] = isinstance(us, float) and us <= TARGET_US
        yield result
    for name, sets in (
        ("contended_one", [NAMES[:1]]),
        ("contended_overlap", list(PAIRS)),
    ):
        locks = KeyedLocks()
        keyed, bare = _contended(locks, sets, config.n)
        names = sorted({n for names in sets for n in names})
        workload = Workload(
            name,
            max(1, config.n // TASKS) * TASKS,
            keyed,
            bare,
            detail={
                "names": len(names),
                "tasks": TASKS,
                "names_per_hold": len(sets[0]),
                "raw": "bare asyncio.Lock per name, taken in sorted order by hand",
                "clock": "process_time",
            },
        )
        result = await measure("locks", workload, config.rounds)
        result.update(_busiest(locks))
        yield result
