"""The conformance suite against the real InfluxDB server, one fresh namespace per test.

InfluxDB declares neither compare_and_set nor atomic_batch: the suite's tests of
those skip, and its capability test checks the core refuses them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from statekit_influxdb import InfluxBackend

from statekit.testing import BackendContract, ScriptServerControl, open_or_skip, server_control


class TestInfluxBackend(BackendContract):
    @pytest.fixture
    def backend_url(self, namespace_url: Callable[[], str]) -> str:
        return namespace_url()

    @pytest.fixture
    def server(self) -> ScriptServerControl | None:
        return server_control("influxdb")

    @pytest_asyncio.fixture
    async def backend(
        self, backend_url: str, drop: Callable[[str], Awaitable[None]]
    ) -> AsyncIterator[InfluxBackend]:
        backend = await open_or_skip(InfluxBackend.open, backend_url, "influxdb")
        yield backend
        await backend.aclose()
        await drop(backend_url)
