"""The conformance suite against the real Redis server, one fresh namespace per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from statekit_redis import RedisBackend

from statekit.testing import BackendContract, ScriptServerControl, open_or_skip, server_control


class TestRedisBackend(BackendContract):
    @pytest.fixture
    def backend_url(self, namespace_url: Callable[[], str]) -> str:
        return namespace_url()

    @pytest.fixture
    def server(self) -> ScriptServerControl | None:
        return server_control("redis")

    @pytest_asyncio.fixture
    async def backend(
        self, backend_url: str, drop: Callable[[str], Awaitable[None]]
    ) -> AsyncIterator[RedisBackend]:
        backend = await open_or_skip(RedisBackend.open, backend_url, "redis")
        yield backend
        await backend.aclose()
        await drop(backend_url)
