"""The statekit plugin: serves ``redis://`` and ``rediss://`` (TLS) store and shared-cache URLs."""

from __future__ import annotations

from typing import Any

from statekit.hookspecs import hookimpl
from statekit.registry import BackendRegistry, SchemeRegistry

__all__ = ["statekit_register_backends", "statekit_register_caches"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``redis://`` and ``rediss://`` (TLS) URLs open a :class:`RedisBackend`."""
    from statekit_redis.backend import RedisBackend

    registry.add("redis", RedisBackend)
    registry.add("rediss", RedisBackend)


@hookimpl
def statekit_register_caches(registry: SchemeRegistry[Any]) -> None:
    """``cache.shared_url = redis[s]://...`` shares a tiered store's heads: :class:`RedisCache`."""
    from statekit_redis.cache import RedisCache

    registry.add("redis", RedisCache)
    registry.add("rediss", RedisCache)
