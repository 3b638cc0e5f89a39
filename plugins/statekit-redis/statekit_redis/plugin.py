"""The statekit plugin: serves ``redis://``, ``rediss://`` (TLS) and their Redis Cluster forms
``redis+cluster://`` and ``rediss+cluster://``, as store and shared-cache URLs."""

from __future__ import annotations

from typing import Any

from statekit.hookspecs import hookimpl
from statekit.registry import BackendRegistry, SchemeRegistry

__all__ = ["statekit_register_backends", "statekit_register_caches"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``redis://``, ``rediss://`` (TLS) and ``redis[s]+cluster://`` URLs open a
    :class:`RedisBackend`."""
    from statekit_redis.backend import RedisBackend

    for scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        registry.add(scheme, RedisBackend)


@hookimpl
def statekit_register_caches(registry: SchemeRegistry[Any]) -> None:
    """``cache.shared_url = redis[s][+cluster]://...`` shares a tiered store's heads:
    :class:`RedisCache`."""
    from statekit_redis.cache import RedisCache

    for scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        registry.add(scheme, RedisCache)
