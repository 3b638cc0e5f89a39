"""The conformance suite against the two built-in backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from statekit.backends.memory import MemoryBackend
from statekit.backends.sqlite import SqliteBackend
from statekit.testing import BackendContract


class TestMemoryBackend(BackendContract):
    @pytest_asyncio.fixture
    async def backend(self) -> AsyncIterator[MemoryBackend]:
        backend = await MemoryBackend.open("memory://")
        yield backend
        await backend.aclose()


class TestSqliteBackend(BackendContract):
    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/contract.db"

    @pytest_asyncio.fixture
    async def backend(self, backend_url: str) -> AsyncIterator[SqliteBackend]:
        # a short poll keeps the watch tests quick
        backend = await SqliteBackend.open(backend_url + "?poll_interval=0.01")
        yield backend
        await backend.aclose()
