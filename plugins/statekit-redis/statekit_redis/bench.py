"""``python -m statekit.bench --backend redis``: statekit next to the same work by hand.

Each workload runs statekit and a hand-written redis.asyncio program in one
process, in interleaved rounds (:func:`statekit.bench.measure`), on the same
server. The hand-written side (:class:`RawRedis`) keeps the same data, each
write's value, its version and a history entry with the server's time, in keys
of its own design, through a Lua script of its own (a Redis user's way to bump a
version and record it atomically); never statekit's script or layout.

- ``put``: ``store.put(key, value)`` vs one EVALSHA of the user's script per write.
- ``batch``: ``store.batch()`` of 500 writes vs one EVALSHA with 500 writes.
- ``concurrent``: 8 tasks putting through one statekit store vs 8 raw tasks
  sharing one redis-py connection pool, each on keys of its own. Redis runs
  one command (one script) at a time, so the 8 writers serialize in the server
  on both sides; what the ratio shows is the clients' work around it.

Durability is the server's on both sides (``appendonly`` / ``appendfsync`` read
back by the raw client, printed as ``durability``; the run stops if statekit
reports another). Both sides' keys are deleted afterwards.
The server is the one of ``--url`` or ``STATEKIT_TEST_REDIS_URL`` (``make bench``); a
``redis+cluster://`` URL measures one namespace (one slot, so one master) of a Redis
Cluster, both sides through a cluster client.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import statekit
from statekit.backend import JSON, Write
from statekit.bench import BenchConfig, Plan, Result, Workload, measure, server_url
from statekit_redis.backend import RedisBackend
from statekit_redis.cluster import Client, open_cluster
from statekit_redis.options import DEFAULT_CONNECT_TIMEOUT, parse_url, with_namespace

__all__ = ["BATCH_SIZE", "USER_SCRIPT", "RawRedis", "bench", "durability"]

BATCH_SIZE = 500
"""Writes per atomic batch in the ``batch`` workload."""


def _compact(value: JSON) -> str:
    # The JSON text statekit stores (statekit.codec.dumps), written out by hand.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


USER_SCRIPT = """
-- KEYS[1]: hash key -> version; KEYS[2]: hash key -> JSON value;
-- KEYS[3..]: one list per written key, its history ("<version> <sec.usec> <JSON>").
-- ARGV: key1, value1, key2, value2 ... Returns the new versions.
local now = redis.call('TIME')
local at = now[1] .. '.' .. string.format('%06d', now[2])
local versions = {}
for i = 1, #ARGV, 2 do
    local key, value = ARGV[i], ARGV[i + 1]
    local version = redis.call('HINCRBY', KEYS[1], key, 1)
    redis.call('HSET', KEYS[2], key, value)
    redis.call('RPUSH', KEYS[2 + (i + 1) / 2], version .. ' ' .. at .. ' ' .. value)
    versions[#versions + 1] = version
end
return versions
"""
"""What a Redis user writes to keep a versioned value with its history, atomically."""


class RawRedis:
    """The hand-written program: its own keys (``raw:{ns}:...``), its own script.

    :param client: a redis.asyncio client.
    :param namespace: the hash tag of its keys (one slot, as a cluster needs).
    """

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.script = client.register_script(USER_SCRIPT)
        self.prefix = f"raw:{{{namespace}}}:"
        self.fixed = [self.prefix + "versions", self.prefix + "values"]
        self.history = self.prefix + "history:"

    async def put(self, key: str, value: JSON) -> list[Any]:
        """Write one value of ``key``; returns its new version (in a list)."""
        return await self.batch([(key, value)])

    async def batch(self, items: Sequence[tuple[str, JSON]]) -> list[Any]:
        """Write one value of each key, atomically; returns the new versions."""
        keys = [*self.fixed, *(self.history + key for key, _ in items)]
        args = [part for key, value in items for part in (key, _compact(value))]
        result: list[Any] = await self.script(keys, args, client=self.client)
        return result

    async def drop(self) -> int:
        """Delete every key of this program; returns how many."""
        names = [name async for name in self.client.scan_iter(match=self.prefix + "*")]
        return int(await self.client.unlink(*names)) if names else 0


async def durability(client: Client, key: str = "") -> str:
    """The server's persistence, read back: ``appendonly=... appendfsync=... save=...``
    (on a cluster, of the master serving ``key``)."""
    config: dict[Any, Any] = {}
    for name in ("appendonly", "appendfsync", "save"):
        if isinstance(client, RedisCluster):
            await client.initialize()
            node = client.get_node_from_key(key)
            config.update(await client.config_get(name, target_nodes=node))
        else:
            config.update(await client.config_get(name))
    text = {_text(k): _text(v) for k, v in config.items()}
    return (
        f"appendonly={text['appendonly']} appendfsync={text['appendfsync']} save='{text['save']}'"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        client: Client
        if options.cluster:
            client = open_cluster(options, socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT)
        else:
            client = aioredis.Redis.from_url(
                options.driver_url,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT,
            )
        stack.push_async_callback(client.aclose)
        raw = RawRedis(client, theirs)
        stack.push_async_callback(raw.drop)
        read_back = await durability(client, backend.layout.meta)
        if read_back != backend.persistence.describe():
            raise RuntimeError(
                f"raw side runs {read_back}, statekit {backend.persistence.describe()}"
            )

        detail: dict[str, JSON] = {
            "durability": read_back,
            "server": f"redis {backend.server_version}"
            + (" cluster (one namespace: one slot)" if options.cluster else ""),
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
