"""``python -m statekit.bench --backend redis``: statekit next to the same work by hand.

Each workload runs statekit and a hand-written redis.asyncio program in one
process, in interleaved rounds (:func:`statekit.bench.measure`), on the same
server, each side in a namespace of its own (both deleted afterwards):

- ``put``: ``store.put(key, value)`` vs the raw client calling the very same Lua
  script (:data:`statekit_redis.scripts.APPEND`) with the same KEYS and ARGV:
  one EVALSHA per write on both sides.
- ``batch``: ``store.batch()`` of 500 writes vs the same script with 500 writes
  on the raw client: the fastest atomic batch form (one EVALSHA).
- ``concurrent``: 8 tasks putting through one statekit store vs 8 raw tasks
  sharing one redis-py connection pool.

The server is the one of ``--url`` or ``STATEKIT_TEST_REDIS_URL`` (``make bench``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import statekit
from statekit.backend import JSON, Write
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, server_url
from statekit_redis.backend import INLINE_MAX, RedisBackend
from statekit_redis.options import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LOG_MAX,
    parse_url,
    with_namespace,
)
from statekit_redis.scripts import APPEND

__all__ = ["BATCH_SIZE", "RawRedis", "bench"]

BATCH_SIZE = 500
"""Writes per atomic batch in the ``batch`` workload."""


def _compact(value: JSON) -> str:
    # The JSON text statekit stores (statekit.codec.dumps), written out by hand.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class RawRedis:
    """RedisBackend.append written by hand: the same script, KEYS and ARGV.

    The key names and the record text are spelt out here rather than imported,
    as a program written against redis-py would; ``tests/test_bench.py`` checks
    that both sides store the same thing.
    """

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.script = client.register_script(APPEND)
        prefix = f"sk:{{{namespace}}}:"
        self.fixed = [prefix + "heads", prefix + "live", prefix + "log", prefix + "seq"]
        self.history = prefix + "v:"

    async def put(self, key: str, value: JSON) -> list[Any]:
        """Append one version of ``key``; returns the script's reply."""
        text = ',"k":"state","m":{},"d":'
        result: list[Any] = await self.script(
            [*self.fixed, self.history + key],
            [DEFAULT_LOG_MAX, INLINE_MAX, key, "", "1", text + _compact(value) + "}"],
            client=self.client,
        )
        return result

    async def batch(self, items: Sequence[tuple[str, JSON]]) -> list[Any]:
        """Append one version of each key, atomically; returns the script's reply."""
        stamp = ',"k":"state","m":{},"d":'
        keys = [*self.fixed]
        args: list[str | int] = [DEFAULT_LOG_MAX, INLINE_MAX]
        for key, value in items:
            keys.append(self.history + key)
            args += (key, "", "1", stamp + _compact(value) + "}")
        result: list[Any] = await self.script(keys, args, client=self.client)
        return result


async def bench(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """``put``, ``batch`` and ``concurrent`` through statekit next to raw redis.asyncio."""
    url = server_url(config, "redis")
    run = uuid.uuid4().hex[:12]
    ours, theirs = f"bench_sk_{run}", f"bench_raw_{run}"
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(await statekit.open(with_namespace(url, ours)))
        backend = store.backend
        assert isinstance(backend, RedisBackend)
        stack.push_async_callback(backend.drop_namespace)  # runs before the store closes
        # The raw client connects exactly as statekit's does.
        options = parse_url(url)
        client = aioredis.Redis.from_url(
            options.driver_url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT,
        )
        stack.push_async_callback(client.aclose)
        cleaner = await RedisBackend.from_client(client, namespace=theirs)
        stack.push_async_callback(cleaner.drop_namespace)
        raw = RawRedis(client, theirs)

        detail: dict[str, JSON] = {
            "durability": backend.persistence.describe(),
            "server": f"redis {backend.server_version}",
            "keys": config.keys,
        }
        plan = Plan([f"bench/{i}" for i in range(config.keys)])
        batch_keys = [f"bench/batch/{i}" for i in range(BATCH_SIZE)]
        # Every runner writes each key once first, so the rounds update existing heads.
        for key, value in plan.items(len(plan.keys)):
            await raw.put(key, value)
            await store.put(key, value)
        first = plan.items(BATCH_SIZE, batch_keys)
        await raw.batch(first)
        await store.batch([Write(k, v) for k, v in first])

        put = Workload(
            "put",
            config.n,
            plan.puts(config.n, store.put),
            plan.puts(config.n, raw.put),
            {},
            detail,
        )
        yield await measure("redis", put, config.rounds)

        batches = max(1, config.n // BATCH_SIZE)

        async def statekit_batch(items: list[tuple[str, JSON]]) -> None:
            await store.batch([Write(k, v) for k, v in items])

        batch = Workload(
            "batch",
            batches * BATCH_SIZE,
            plan.batches(batches, batch_keys, statekit_batch),
            plan.batches(batches, batch_keys, raw.batch),
            {},
            {**detail, "batch_size": BATCH_SIZE},
        )
        yield await measure("redis", batch, config.rounds)

        writers = config.writers
        per_writer = max(1, config.n // writers)
        concurrent = Workload(
            "concurrent",
            writers * per_writer,
            plan.writers(per_writer, [store.put] * writers),
            plan.writers(per_writer, [raw.put] * writers),
            {},
            {**detail, "writers": writers},
        )
        yield await measure("redis", concurrent, config.rounds)
