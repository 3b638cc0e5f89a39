"""statekit's conformance suite against the real MariaDB server (scripts/servers.sh)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from statekit_mysql import MysqlBackend

from statekit.testing import BackendContract, ScriptServerControl, server_control

from .conftest import drop, open_or_skip


class TestMysqlBackend(BackendContract):
    @pytest.fixture
    def backend_url(self, namespaced: Callable[..., str]) -> str:
        """A fresh namespace per test: the store starts empty, other tests' keys unseen."""
        return namespaced()

    @pytest_asyncio.fixture
    async def backend(self, backend_url: str) -> AsyncIterator[MysqlBackend]:
        backend = await open_or_skip(backend_url)
        yield backend
        await backend.aclose()
        await drop(backend_url)

    @pytest.fixture
    def server(self) -> ScriptServerControl | None:
        return server_control("mariadb")
