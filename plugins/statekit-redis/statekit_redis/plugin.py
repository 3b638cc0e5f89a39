"""The statekit plugin: serves ``redis://`` and ``rediss://`` (TLS) store URLs."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.host import BackendRegistry
from statekit_redis.backend import RedisBackend

__all__ = ["statekit_register_backends"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``redis://`` and ``rediss://`` (TLS) URLs open a :class:`RedisBackend`."""
    registry.add("redis", RedisBackend)
    registry.add("rediss", RedisBackend)
