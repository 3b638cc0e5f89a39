"""The statekit plugin: serves ``redis://`` and ``rediss://`` (TLS) store and shared-cache URLs."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.host import BackendRegistry, CacheRegistry
from statekit_redis.backend import RedisBackend
from statekit_redis.cache import RedisCache

__all__ = ["statekit_register_backends", "statekit_register_caches"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``redis://`` and ``rediss://`` (TLS) URLs open a :class:`RedisBackend`."""
    registry.add("redis", RedisBackend)
    registry.add("rediss", RedisBackend)


@hookimpl
def statekit_register_caches(registry: CacheRegistry) -> None:
    """``cache.shared_url = redis[s]://...`` shares a tiered store's heads: :class:`RedisCache`."""
    registry.add("redis", RedisCache)
    registry.add("rediss", RedisCache)
