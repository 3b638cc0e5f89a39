"""Fixtures for the InfluxDB plugin's tests: the test server, fresh namespaces, raw HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import pytest_asyncio
from statekit_influxdb import InfluxBackend, parse_url
from statekit_influxdb.options import with_options

from statekit.testing import fresh_namespace, require_server, server_url


@pytest.fixture
def influx_url() -> str:
    """The test server (STATEKIT_TEST_INFLUXDB_URL); fails under CI=true, skips locally."""
    return server_url("influxdb")


@pytest.fixture
def namespace_url(influx_url: str) -> Callable[[], str]:
    """Makes URLs of fresh namespaces on the test server."""
    return lambda: with_options(influx_url, namespace=fresh_namespace())


async def _drop(url: str) -> None:
    backend = await InfluxBackend.open(url)
    try:
        await backend.drop_namespace()
    finally:
        await backend.aclose()


@pytest.fixture
def drop() -> Callable[[str], Awaitable[None]]:
    """Deletes every point of a URL's namespace (for teardown)."""
    return _drop


class Raw:
    """Plain HTTP against the test server, to look at what statekit stored."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        options = parse_url(url)
        self.session = session
        self.base = options.base_url
        self.database = options.database

    async def query(self, q: str, database: str | None = None) -> list[dict[str, object]]:
        params = {"db": database or self.database, "epoch": "n", "q": q}
        async with self.session.post(f"{self.base}/query", data=params) as response:
            reply = await response.json()
        assert response.status == 200, reply
        results: list[dict[str, object]] = reply["results"]
        return results

    async def rows(self, q: str, database: str | None = None) -> list[list[object]]:
        """Every row of every series of the first statement."""
        (result,) = await self.query(q, database)
        series = result.get("series") or []
        assert isinstance(series, list)
        return [row for s in series for row in s["values"]]

    async def write(self, body: str, **params: str) -> int:
        query = {"db": self.database, **params}
        async with self.session.post(f"{self.base}/write", params=query, data=body) as response:
            await response.read()
            return response.status


@pytest_asyncio.fixture
async def raw(influx_url: str) -> AsyncIterator[Raw]:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"{parse_url(influx_url).base_url}/ping"):
                pass
        except aiohttp.ClientError as exc:
            require_server("influxdb", str(exc))
        yield Raw(session, influx_url)
