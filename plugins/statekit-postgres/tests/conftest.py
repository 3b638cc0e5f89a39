"""Fixtures for the PostgreSQL tests: the test server's URL and fresh namespaces on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode, urlsplit

import pytest
import pytest_asyncio
from statekit_postgres import PostgresBackend

from statekit import testing
from statekit.testing import fresh_namespace, server_url


def with_query(url: str, **params: str) -> str:
    """``url`` with more query parameters."""
    glue = "&" if urlsplit(url).query else "?"
    return url + glue + urlencode(params)


@pytest.fixture
def pg_url() -> str:
    """The test server (STATEKIT_TEST_POSTGRES_URL); skips locally / fails in CI without it."""
    return server_url("postgres")


@pytest.fixture
def namespaced(pg_url: str) -> Callable[..., str]:
    """Makes URLs of fresh namespaces on the test server."""

    def make(tag: str = "t", **params: str) -> str:
        return with_query(pg_url, namespace=fresh_namespace(tag), **params)

    return make


async def open_or_skip(url: str) -> PostgresBackend:
    return await testing.open_or_skip(PostgresBackend.open, url, "postgres")


async def require_postgres(url: str) -> None:
    """Skip (locally) or fail (CI) unless the server at ``url`` answers."""
    backend = await open_or_skip(url)
    await backend.aclose()


async def drop(url: str) -> None:
    """Drop the namespace of ``url``, counter and all (through a backend of its own: the
    test's may be closed, and no watcher follows it any more)."""
    async with await PostgresBackend.open(url) as cleaner:
        await cleaner.drop_namespace(forget=True)


@pytest_asyncio.fixture
async def open_backend(namespaced: Callable[..., str]) -> AsyncIterator[Callable[..., object]]:
    """Opens backends on fresh namespaces; closes them and drops their namespaces after."""
    opened: list[tuple[str, PostgresBackend]] = []

    async def make(tag: str = "t", **params: str) -> PostgresBackend:
        url = namespaced(tag, **params)
        backend = await open_or_skip(url)
        opened.append((url, backend))
        return backend

    yield make
    for url, backend in opened:
        await backend.aclose()
        await drop(url)


@pytest.fixture
def pair_url() -> str:
    """The primary + standby pair's multi-host URL (STATEKIT_TEST_POSTGRES_PAIR_URL,
    ``scripts/servers.sh start postgres-pair``); skips locally / fails in CI without it."""
    return server_url("postgres_pair")
