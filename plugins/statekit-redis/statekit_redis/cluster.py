"""What differs on Redis Cluster (``redis+cluster://``): the client, per-node facts, and
a write followed by ``WAIT`` on the connection that made it.

Everything of a namespace hashes to one slot (the ``{ns}`` hash tag,
:mod:`statekit_redis.layout`), so the store's commands and scripts go to one master,
and ``redis.asyncio.cluster.RedisCluster`` routes them by key: it follows ``MOVED``
(the slot moved, or a failover) and ``ASK`` (the slot is being migrated) and waits
out ``TRYAGAIN`` by itself. Those replies mean the command did *not* run, so
following them never applies a write twice. Its retries after a connection error or
timeout are off (``retry=Retry(NoBackoff(), 0)``), as on one server: a write whose
reply was lost must not be sent twice.

``WAIT n`` counts only the writes of the connection that calls it, so an append that
waits for replicas sends ``EVALSHA`` and ``WAIT`` in one pipeline on one connection of
the slot's master (:func:`on_one_connection`), following ``MOVED``/``ASK`` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from statekit.errors import ConfigError
from statekit_redis.options import RedisOptions

__all__ = ["Client", "facts_nodes", "open_client", "open_cluster", "run_and_wait"]

Client = aioredis.Redis | RedisCluster
"""A client of one server or of a cluster."""

REDIRECTS = 16
"""How many MOVED/ASK/TRYAGAIN replies an append with ``wait`` follows (redis-py's own
limit for a command)."""

_NOT_FOR_CLUSTER = {"host", "port", "db", "connection_class", "path"}


def open_cluster(options: RedisOptions, **kwargs: Any) -> RedisCluster:
    """A RedisCluster on the URL's seeds, with the URL's options and no command retries."""
    driver: dict[str, Any] = dict(parse_url(options.driver_url))
    ssl = driver.pop("connection_class", None) is not None and options.driver_url.startswith(
        "rediss"
    )
    for name in _NOT_FOR_CLUSTER:
        driver.pop(name, None)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in options.seeds],
        retry=Retry(NoBackoff(), 0),
        ssl=ssl,
        **{**driver, **kwargs},
    )


def open_client(options: RedisOptions, *, source: str, **kwargs: Any) -> Client:
    """A client of the URL's server or cluster with no command retries; a ConfigError
    naming ``source`` (where the URL came from) when redis-py refuses an option's value."""
    try:
        if options.cluster:
            return open_cluster(options, **kwargs)
        return aioredis.Redis.from_url(options.driver_url, retry=Retry(NoBackoff(), 0), **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"bad redis URL option in {options.shown!r}: {exc}", source=source
        ) from exc


def facts_nodes(client: RedisCluster) -> list[ClusterNode]:
    """Every node of the cluster, masters and replicas: each keeps its own AOF."""
    return list(client.get_nodes())


async def on_one_connection(
    client: Client, key: str, commands: Sequence[Sequence[Any]], asking: tuple[str, int] | None
) -> list[Any]:
    """Send ``commands`` in one pipeline on one connection of the server (or the slot's
    master) holding ``key``; the replies in order, an error reply as its exception."""
    if isinstance(client, RedisCluster):
        node = client.get_node(*asking) if asking is not None else client.get_node_from_key(key)
        if node is None:
            raise rex.ClusterDownError(f"no node {asking} known for an ASK redirect")
        conn: Connection = node.acquire_connection()
        if asking is not None:
            commands = [("ASKING",), *commands]
        try:
            replies = await _pipelined(conn, commands)
        finally:
            node.release(conn)
        return replies[1:] if asking is not None else replies
    pool = client.connection_pool
    single: Any = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await _pipelined(single, commands)
    finally:
        await pool.release(single)


async def _pipelined(conn: Connection, commands: Sequence[Sequence[Any]]) -> list[Any]:
    await conn.send_packed_command(conn.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except rex.ResponseError as exc:  # one command's error; the rest still answer
            replies.append(exc)
    return replies


async def run_and_wait(
    client: Client,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[Any],
    *,
    replicas: int,
    timeout_ms: int,
) -> tuple[Any, int]:
    """Run ``script`` then ``WAIT replicas timeout_ms`` on one connection: (the script's
    reply, how many replicas acknowledged). A redirect or an unknown script means the
    script did not run, so it is sent again (to the slot's new owner / after loading it)."""
    asking: tuple[str, int] | None = None
    for _ in range(REDIRECTS):
        evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)
        reply, acked = await on_one_connection(
            client, keys[0], [evalsha, ("WAIT", replicas, timeout_ms)], asking
        )
        asking = None
        if isinstance(reply, rex.NoScriptError):
            await on_one_connection(client, keys[0], [("SCRIPT", "LOAD", script.script)], None)
        elif isinstance(reply, rex.MovedError) and isinstance(client, RedisCluster):
            await client.nodes_manager.move_slot(reply)
        elif isinstance(reply, rex.AskError):
            asking = (reply.host, reply.port)
        elif isinstance(reply, rex.TryAgainError):
            await asyncio.sleep(0.05)
        elif isinstance(reply, Exception):
            raise reply
        else:
            if isinstance(acked, Exception):
                raise acked
            return reply, int(acked)
    raise rex.ClusterError(f"{REDIRECTS} redirects in a row for an append; try again")
