"""The conformance suite through the Redis Cluster client (``redis+cluster://``), one fresh
namespace (so one hash slot, on whichever master owns it) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from statekit_redis import RedisBackend

from statekit.testing import BackendContract, ScriptServerControl, open_or_skip


class TestRedisClusterBackend(BackendContract):
    @pytest.fixture
    def backend_url(self, cluster_namespace_url: Callable[[], str]) -> str:
        return cluster_namespace_url()

    @pytest.fixture
    def server(self) -> ScriptServerControl | None:
        return None  # six servers: the restart tests run on the single server

    @pytest_asyncio.fixture
    async def backend(
        self, backend_url: str, drop: Callable[[str], Awaitable[None]]
    ) -> AsyncIterator[RedisBackend]:
        backend = await open_or_skip(RedisBackend.open, backend_url, "redis_cluster")
        yield backend
        await backend.aclose()
        await drop(backend_url)
