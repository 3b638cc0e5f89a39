"""Fixtures for the MongoDB tests: the servers to run against, fresh namespaces on them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from statekit_mongodb import MongoBackend
from statekit_mongodb.options import with_namespace

from statekit import testing
from statekit.testing import fresh_namespace, server_url

REAL_MONGOD = bool(os.environ.get("STATEKIT_TEST_MONGODB_URL", "").strip())
SERVERS = ["secantus", "mongodb"] if REAL_MONGOD else ["secantus"]
"""SecantusDB (required: started by scripts/servers.sh; a failure under CI=true when it
is missing) and a real mongod, a parameter only when STATEKIT_TEST_MONGODB_URL names one
(none is installable here, so it is never a skip)."""


@pytest.fixture(params=SERVERS)
def mongo_url(request: pytest.FixtureRequest) -> str:
    """Each configured server's URL in turn."""
    return server_url(str(request.param))


@pytest.fixture
def secantus_url() -> str:
    """The SecantusDB test server (fails under CI=true, skips locally without it)."""
    return server_url("secantus")


async def open_or_skip(url: str) -> MongoBackend:
    return await testing.open_or_skip(MongoBackend.open, url, "mongodb")


async def drop(url: str) -> None:
    """Drop the namespace of ``url`` (through a backend of its own: the test's may be closed)."""
    async with await MongoBackend.open(url) as cleaner:
        await cleaner.drop_namespace()


@pytest_asyncio.fixture
async def open_backend(mongo_url: str) -> AsyncIterator[Callable[..., Awaitable[MongoBackend]]]:
    """Opens backends on fresh namespaces of each server; closes and drops them after."""
    opened: list[tuple[str, MongoBackend]] = []

    async def make(tag: str = "t", url: str | None = None) -> MongoBackend:
        url = with_namespace(url or mongo_url, fresh_namespace(tag))
        backend = await open_or_skip(url)
        opened.append((url, backend))
        return backend

    yield make
    for url, backend in opened:
        await backend.aclose()
        await drop(url)
