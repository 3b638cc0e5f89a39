"""The conformance suite against a fresh store folder per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from statekit_file import FileBackend

from statekit.testing import BackendContract


class TestFileBackend(BackendContract):
    @pytest.fixture
    def backend_url(self, store_url: str) -> str:
        return store_url

    @pytest_asyncio.fixture
    async def backend(self, backend_url: str) -> AsyncIterator[FileBackend]:
        backend = await FileBackend.open(backend_url)
        yield backend
        await backend.aclose()
