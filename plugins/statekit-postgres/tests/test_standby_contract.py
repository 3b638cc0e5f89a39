"""statekit's conformance suite through the primary + standby pair, with ``?read=standby``.

The URL names both nodes (``target_session_attrs=read-write``); history, scan and
as-of reads go to the standby, writes and ``latest`` to the primary, so every
contract test that writes then reads its history also checks read-your-writes.
The restart test is left out (``server`` is None): stopping the pair rebuilds it
empty (``scripts/servers.sh restart postgres-pair``); test_standby_promotion.py
stops the primary instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from statekit_postgres import PostgresBackend

from statekit.testing import BackendContract, fresh_namespace

from .conftest import drop, open_or_skip, with_query


class TestPostgresStandbyReads(BackendContract):
    @pytest.fixture
    def backend_url(self, pair_url: str) -> str:
        return with_query(pair_url, namespace=fresh_namespace("sb"), read="standby")

    @pytest_asyncio.fixture
    async def backend(self, backend_url: str) -> AsyncIterator[PostgresBackend]:
        backend = await open_or_skip(backend_url)
        yield backend
        await backend.aclose()
        await drop(backend_url)
