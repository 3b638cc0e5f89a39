"""Functions the conformance suite runs in other processes (importable under spawn)."""

from __future__ import annotations

import asyncio
import time

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
