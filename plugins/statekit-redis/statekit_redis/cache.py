"""``cache.shared_url = redis://host:port/db``: the tiered store's shared cache in Redis.

Each cached head is one Redis string, ``sk:{<namespace>}:c:<user key>``, holding the
record's text (the same text as a stored version, :mod:`statekit_redis.layout`) or
``{"v":0}`` for a cached absence, with a ``PX`` expiry of the cache's ttl. A put runs
:data:`statekit_redis.scripts.CACHE_PUT`, which compares versions on the server, so
an entry never goes back to an older version. The namespace is the store's id (one
per primary, chosen by the core) unless the URL names one; the ``c:`` part keeps
entries apart from a Redis *store* of the same namespace.

URL: ``redis[s]://[[user]:password@]host[:port][/db][?namespace=...]`` or
``redis[s]+cluster://host1:port1[,host2:port2...][?namespace=...]`` (a Redis Cluster: the
``{<namespace>}`` hash tag keeps a cache's entries in one slot) plus redis-py's
connection options (:mod:`statekit_redis.options`); no ``log_max``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from redis.asyncio.cluster import RedisCluster

from statekit.backend import JSON, Health, Record
from statekit.errors import ConfigError
from statekit.kit import stored
from statekit.tiered import SharedCache
from statekit_redis.cluster import Client, open_client
from statekit_redis.layout import check_namespace, decode, record_text, tail
from statekit_redis.options import parse_url
from statekit_redis.scripts import CACHE_PUT
from statekit_redis.translate import DRIVER_ERRORS, guard

__all__ = ["ABSENT", "CACHE_TIMEOUT", "RedisCache"]

T = TypeVar("T")

log = logging.getLogger("statekit.redis")

ABSENT = b'{"v":0}'
"""The text of a cached absence: the key has no head (version 0)."""
CACHE_TIMEOUT = 1.0
"""Seconds to connect, and to wait for a reply, unless the URL says otherwise: a cache
that does not answer quickly is skipped, the primary answers instead."""
PAGE = 500
"""Keys per MGET / per put script."""


def encode(head: Record | None) -> bytes | str:
    """The cached text of ``head`` (None: the key has no head)."""
    if head is None:
        return ABSENT
    _, version, kind, data, meta, at = stored(head)
    return record_text(version, at, tail(kind, meta, data))


class RedisCache(SharedCache):
    """Heads of one store, shared through Redis by every process that reads it.

    Open it with :meth:`open` (what the tiered store does with ``cache.shared_url``), or
    build it on an existing ``redis.asyncio.Redis`` (``decode_responses=False``), which
    :meth:`aclose` then leaves open.

    :param namespace: keeps this store's entries apart from other stores' in the database.
    :param ttl: seconds an entry lives after it was last put.
    """

    name = "redis"

    def __init__(
        self,
        client: Client,
        *,
        namespace: str,
        ttl: float,
        owns_client: bool = False,
        url: str | None = None,
    ) -> None:
        kwargs = (
            client.get_connection_kwargs()
            if isinstance(client, RedisCluster)
            else client.connection_pool.connection_kwargs
        )
        if kwargs.get("decode_responses"):
            raise ConfigError("statekit-redis needs a client with decode_responses=False")
        if ttl <= 0:
            raise ConfigError(f"redis cache ttl={ttl!r}: give a number of seconds > 0")
        self._client = client
        self.namespace = check_namespace(namespace)
        self.prefix = f"sk:{{{self.namespace}}}:c:"
        """What every entry's Redis key starts with."""
        self.ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self.guard = guard(
            url or "(existing client)",
            needs=f"the shared cache needs MGET, EVALSHA, SCRIPT LOAD, UNLINK on {self.prefix}*",
            keys=f"keys of the shared cache ({self.prefix}*)",
            label="redis cache",
        )
        """The one place redis-py errors become statekit's (the store's rules), and the
        closed state."""
        self.shown = self.guard.shown
        self._owns_client = owns_client
        self._put = client.register_script(CACHE_PUT)

    @classmethod
    async def open(cls, url: str, *, namespace: str, ttl: float) -> Self:
        """A cache on the server of ``url``; connects on first use, so a server that is
        down does not stop the store from opening. The URL's ``namespace`` option, when
        given, wins over ``namespace``."""
        options = parse_url(url, options=frozenset({"namespace"}))
        kwargs: dict[str, Any] = {}
        for option in ("socket_connect_timeout", "socket_timeout"):
            if option not in options.named:
                kwargs[option] = CACHE_TIMEOUT
        client = open_client(options, source="cache.shared_url", **kwargs)
        try:
            return cls(
                client,
                namespace=options.namespace if "namespace" in options.named else namespace,
                ttl=ttl,
                owns_client=True,
                url=url,
            )
        except BaseException:
            await client.aclose()
            raise

    async def _run(self, call: Callable[[Client], Awaitable[T]]) -> T:
        with self.guard.calls():  # BackendError once closed; redis-py errors translated
            return await call(self._client)

    # -- the SharedCache contract ------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record | None]:
        found: dict[str, Record | None] = {}
        for start in range(0, len(keys), PAGE):
            page = keys[start : start + PAGE]
            names = [self.prefix + key for key in page]
            texts: list[Any] = await self._run(lambda c: c.mget(names))  # noqa: B023
            for key, text in zip(page, texts, strict=True):
                if text is not None:
                    found[key] = None if text == ABSENT else decode(key, text)
        return found

    async def put_many(self, heads: Mapping[str, Record | None]) -> None:
        items = list(heads.items())
        for start in range(0, len(items), PAGE):
            page = items[start : start + PAGE]
            names = [self.prefix + key for key, _ in page]
            args: list[Any] = [self._ttl_ms, *(encode(head) for _, head in page)]
            await self._run(lambda c: self._put(names, args, c))  # noqa: B023

    async def invalidate(self, keys: Sequence[str]) -> None:
        if keys:
            await self._run(lambda c: c.unlink(*(self.prefix + key for key in keys)))

    async def health(self) -> Health:
        started = time.perf_counter()
        await self._run(lambda c: c.ping())
        return Health(True, (time.perf_counter() - started) * 1000, {})

    def describe(self) -> dict[str, JSON]:
        return {
            "cache": self.name,
            "url": self.shown,
            "namespace": self.namespace,
            "ttl_s": self.ttl,
        }

    async def aclose(self) -> None:
        if self.guard.close() and self._owns_client:
            try:
                await self._client.aclose()
            except DRIVER_ERRORS as exc:
                log.debug("redis cache %s: error while closing: %s", self.shown, exc)

    # -- tools ---------------------------------------------------------------------------

    async def drop_namespace(self) -> int:
        """Delete every entry of this namespace (for tests and tools). Returns how many."""

        async def drop(client: Client) -> int:
            deleted = 0
            # On a cluster SCAN goes to every master: the entries' slot is on one of them.
            async for name in client.scan_iter(match=self.prefix + "*", count=PAGE):
                deleted += int(await client.unlink(name))
            return deleted

        return await self._run(drop)
