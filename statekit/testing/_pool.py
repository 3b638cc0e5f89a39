"""The conformance suite's worker processes: one pool, started once, reused by every test.

A multi-process test used to spawn its own processes, each importing statekit and
the backend's plugin before its first write, then wait 2 s so they would all start
writing together: seconds per test, dozens of tests per run. The pool's processes
are spawned (a fresh interpreter: nothing of the test process is shared), import
statekit and every installed plugin once, and serve test after test; each task
still opens its own store from the URL, so every test still runs several OS
processes against the backend. :func:`lined_up` starts them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["SIZE", "lined_up", "worker_pool"]

SIZE = 4
"""Workers in the pool: the most processes one test runs at once."""
LINE_UP = 0.3
"""Seconds from handing warm workers their tasks to their common start."""

_pool: ProcessPoolExecutor | None = None


def _warm() -> None:
    from importlib import metadata

    import statekit
    import statekit.testing._workers  # noqa: F401

    for entry in metadata.entry_points(group="statekit"):
        with contextlib.suppress(Exception):  # a broken plugin shows in the test that opens it
            entry.load()


def _alive() -> int:
    return 1


def worker_pool() -> ProcessPoolExecutor:
    """The suite's pool of :data:`SIZE` spawned worker processes (a new one if a worker
    died and broke the last)."""
    global _pool
    if _pool is None or getattr(_pool, "_broken", False):
        _pool = ProcessPoolExecutor(
            SIZE, mp_context=multiprocessing.get_context("spawn"), initializer=_warm
        )
    return _pool


async def lined_up(count: int) -> tuple[ProcessPoolExecutor, float]:
    """The pool with at least ``count`` workers up and warm, and a ``time.time()`` a
    little ahead for ``count`` tasks to start at together."""
    if count > SIZE:
        raise ValueError(f"the worker pool has {SIZE} processes, not {count}")
    pool = worker_pool()
    loop = asyncio.get_running_loop()
    # Tasks that each hold a worker until all are busy: so count workers run (are warm).
    barrier = [loop.run_in_executor(pool, time.sleep, 0.05) for _ in range(count)]
    await asyncio.gather(*barrier, loop.run_in_executor(pool, _alive))
    return pool, time.time() + LINE_UP
