"""Functions the conformance suite runs in other processes (importable under spawn)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from statekit.backend import JSON


def _increment(value: JSON) -> JSON:
    assert value is None or isinstance(value, int)
    return (value or 0) + 1


async def _increments(url: str, key: str, count: int) -> int:
    import statekit

    async with await statekit.open(url) as store:
        for _ in range(count):
            await store.update(key, _increment)
    return count


def increment(url: str, key: str, count: int, start_at: float) -> int:
    """Open ``url`` and increment ``key`` ``count`` times with update(); returns count.

    ``start_at`` (time.time()) lines the processes up so they really contend.
    """
    time.sleep(max(0.0, start_at - time.time()))
    return asyncio.run(_increments(url, key, count))


async def _put_many(url: str, prefix: str, count: int) -> None:
    import statekit

    async with await statekit.open(url) as store:
        for i in range(count):
            await store.put(f"{prefix}{i}", {"i": i})


def put_many(url: str, prefix: str, count: int) -> None:
    """Open ``url`` and put ``count`` keys ``<prefix><i>``."""
    asyncio.run(_put_many(url, prefix, count))


async def _put_one(url: str, key: str, count: int) -> None:
    import statekit

    async with await statekit.open(url) as store:
        for n in range(count):
            await store.put(key, {"n": n})


def put_one(url: str, key: str, count: int, start_at: float) -> None:
    """Open ``url`` and put ``key`` ``count`` times, from ``start_at`` (time.time())."""
    time.sleep(max(0.0, start_at - time.time()))
    asyncio.run(_put_one(url, key, count))


async def _guarded_appends(url: str, log_key: str, guard_key: str, version: int) -> int:
    from statekit.backend import Guard, Write
    from statekit.errors import ConflictError

    count = 0
    guard = Guard(guard_key, version)
    async with await statekit_open(url) as store:
        while True:
            try:
                await store.append([Write(log_key, {"n": count})], guards=[guard])
            except ConflictError as exc:
                if exc.key != guard_key:
                    raise
                return count
            count += 1
            await asyncio.sleep(0.001)  # paced as the tasks are (statekit.testing.guards)


def guarded_appends(url: str, log_key: str, guard_key: str, version: int, start_at: float) -> int:
    """Open ``url`` and append to ``log_key`` guarded by ``guard_key`` at ``version``
    until the guard fails; returns how many appends landed."""
    time.sleep(max(0.0, start_at - time.time()))
    return asyncio.run(_guarded_appends(url, log_key, guard_key, version))


async def statekit_open(url: str) -> Any:
    import statekit

    return await statekit.open(url)
