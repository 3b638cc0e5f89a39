"""``python -m statekit.bench postgresql-standby``: reads from the standby beside the primary.

Entry point ``postgresql-standby`` in group ``statekit.bench``. It needs a primary
with a streaming standby: ``--url`` (a multi-host URL), else
``STATEKIT_TEST_POSTGRES_PAIR_URL`` (``scripts/servers.sh start postgres-pair``).
Two stores on the same namespace: one with ``read=standby``, one without. The
"raw" side of each line is the primary's store, so ``ratio`` is standby reads/s
over primary reads/s (above 1: the standby path is faster).

- ``history``: ``store.history(key, limit=10)`` over 100 keys of 10 versions.
- ``scan``: ``store.scan("bench/")`` of the 100 keys (one op = one whole scan).
- ``history_after_write``: ``put`` then ``history`` of the same key, the path that
  waits for the standby to replay the write (read-your-writes, docs/backends/postgresql.md).

On one machine both servers share its cores, so the standby frees no capacity
here: the figures show the cost of the standby path, not the offload.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import statekit
from statekit.backend import JSON
from statekit.bench import BenchConfig, Result, Workload, measure, server_url
from statekit.bench.harness import drop_namespace, sample_value
from statekit.store import StateStore

__all__ = ["bench"]

KEYS, VERSIONS = 100, 10


def _with(url: str, **params: str) -> str:
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _rounds(count: int, op: Callable[[int], Awaitable[object]]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        started = time.perf_counter()
        for i in range(count):
            await op(i)
        return time.perf_counter() - started

    return run


async def _scan(store: StateStore) -> None:
    async for _ in store.scan("bench/"):
        pass


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``history``, ``scan`` and ``history_after_write`` on the standby vs the primary."""
    url = _with(server_url(config, "postgres_pair"), namespace=f"bench_{uuid.uuid4().hex[:8]}")
    async with AsyncExitStack() as stack:
        primary = await stack.enter_async_context(await statekit.open(url))
        stack.push_async_callback(drop_namespace, primary.backend)
        standby = await stack.enter_async_context(await statekit.open(_with(url, read="standby")))
        keys = [f"bench/{i}" for i in range(KEYS)]
        for v in range(VERSIONS):
            await primary.batch([statekit.Write(k, sample_value(v)) for k in keys])
        detail: dict[str, JSON] = {
            "raw": "the same reads on the primary (read=primary)",
            "keys": KEYS,
        }

        def history(store: StateStore) -> Callable[[int], Awaitable[object]]:
            return lambda i: store.history(keys[i % KEYS], limit=VERSIONS)

        def write_read(store: StateStore) -> Callable[[int], Awaitable[object]]:
            async def op(i: int) -> None:
                await store.put(keys[i % KEYS], sample_value(i))
                await store.history(keys[i % KEYS], limit=1)

            return op

        scans = max(1, config.n // KEYS)
        workloads = [
            Workload("history", config.n, _rounds(config.n, history(standby)),
                     _rounds(config.n, history(primary)), detail=detail),
            Workload("scan", scans, _rounds(scans, lambda _: _scan(standby)),
                     _rounds(scans, lambda _: _scan(primary)), detail=detail),
            Workload("history_after_write", config.n, _rounds(config.n, write_read(standby)),
                     _rounds(config.n, write_read(primary)), detail=detail),
        ]  # fmt: skip
        for workload in workloads:
            yield await measure("postgresql-standby", workload, config.rounds)
        health = await standby.health()
        yield {"backend": "postgresql-standby", "standby_reads": health.detail["standby_reads"]}
