"""Fixtures for the MySQL/MariaDB tests: the test server's URL and fresh namespaces on it."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

import pytest
from statekit_mysql import MysqlBackend

from statekit.errors import BackendUnavailable
from statekit.testing import fresh_namespace, require_server, server_url

HOW_TO_START = "scripts/servers.sh start mariadb && set -a && . .servers/env && set +a"


def with_query(url: str, **params: str) -> str:
    """``url`` with more query parameters."""
    glue = "&" if urlsplit(url).query else "?"
    return url + glue + urlencode(params)


@pytest.fixture
def mysql_url() -> str:
    """The test server (STATEKIT_TEST_MARIADB_URL); skips locally / fails in CI without it."""
    return server_url("mariadb")


@pytest.fixture
def namespaced(mysql_url: str) -> Callable[..., str]:
    """Makes URLs of fresh namespaces on the test server."""

    def make(tag: str = "t", **params: str) -> str:
        return with_query(mysql_url, namespace=fresh_namespace(tag), **params)

    return make


async def open_or_skip(url: str) -> MysqlBackend:
    try:
        return await MysqlBackend.open(url)
    except BackendUnavailable as exc:
        require_server("mariadb", str(exc), HOW_TO_START)


async def drop(url: str) -> None:
    """Drop the namespace of ``url`` (through a backend of its own: the test's may be closed)."""
    async with await MysqlBackend.open(url) as cleaner:
        await cleaner.drop_namespace()
