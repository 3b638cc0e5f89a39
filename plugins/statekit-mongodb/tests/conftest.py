"""Fixtures for the MongoDB tests: the servers to run against, fresh namespaces on them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from statekit_mongodb import MongoBackend
from statekit_mongodb.options import with_namespace

from statekit.errors import BackendUnavailable
from statekit.testing import fresh_namespace, require_server, server_url

HOW_TO_START = "scripts/servers.sh start mongodb && set -a && . .servers/env && set +a"

SERVERS = ["secantus", "mongodb"]
"""SecantusDB (required: started by scripts/servers.sh) and a real mongod, used only
when STATEKIT_TEST_MONGODB_URL names one."""


def url_of(server: str) -> str:
    """The URL of ``server``; the optional real mongod is skipped quietly when unset."""
    if server == "mongodb" and not os.environ.get("STATEKIT_TEST_MONGODB_URL", "").strip():
        pytest.skip("STATEKIT_TEST_MONGODB_URL is not set (a real mongod is optional)")
    return server_url(server)


@pytest.fixture(params=SERVERS)
def mongo_url(request: pytest.FixtureRequest) -> str:
    """Each available server's URL in turn."""
    return url_of(str(request.param))


@pytest.fixture
def secantus_url() -> str:
    """The SecantusDB test server (fails under CI=true, skips locally without it)."""
    return url_of("secantus")


async def open_or_skip(url: str) -> MongoBackend:
    try:
        return await MongoBackend.open(url)
    except BackendUnavailable as exc:
        require_server("mongodb", str(exc), HOW_TO_START)


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
