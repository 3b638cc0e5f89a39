"""The worked example: the conformance suite run against statekit's two built-in backends.

It ships in the wheel so a backend author can read it beside the suite
(``python -c "import statekit.testing.example as e; print(e.__file__)"``), and it is
what statekit's own tests run (``tests/test_contract_builtin.py`` collects these
classes). For your backend, write the same in your plugin's ``tests/test_contract.py``:
subclass :class:`~statekit.testing.BackendContract` and give it

- ``backend``: an async fixture (``@pytest_asyncio.fixture``) yielding an EMPTY backend,
  closed afterwards;
- ``backend_url``: a URL another process can ``statekit.open()`` to reach the same
  store, or leave the default (None) for a store that lives in one process, like
  ``memory://``;
- ``server``, for a backend with a server: ``server_control(name)``, so the suite can
  stop and start it (see docs/writing-a-backend.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from statekit.backends.memory import MemoryBackend
from statekit.backends.sqlite import SqliteBackend
from statekit.testing.contract import BackendContract

__all__ = ["TestMemoryBackend", "TestSqliteBackend"]


class TestMemoryBackend(BackendContract):
    """``memory://``: one process, nothing to reopen, so no ``backend_url``."""

    @pytest_asyncio.fixture
    async def backend(self) -> AsyncIterator[MemoryBackend]:
        backend = await MemoryBackend.open("memory://")
        yield backend
        await backend.aclose()


class TestSqliteBackend(BackendContract):
    """``sqlite://``: a fresh file per test, which worker processes open by its URL."""

    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/contract.db"

    @pytest_asyncio.fixture
    async def backend(self, backend_url: str) -> AsyncIterator[SqliteBackend]:
        # a short poll keeps the watch tests quick
        backend = await SqliteBackend.open(backend_url + "?poll_interval=0.01")
        yield backend
        await backend.aclose()
