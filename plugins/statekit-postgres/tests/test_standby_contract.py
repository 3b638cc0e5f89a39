"""statekit's conformance suite through the primary + standby pair, with ``?read=standby``.

The URL names both nodes (``target_session_attrs=read-write``); history, scan and
as-of reads go to the standby, writes and ``latest`` to the primary, so every
contract test that writes then reads its history also checks read-your-writes.
The restart test is left out (``server`` is None): stopping the pair rebuilds it
empty (``scripts/servers.sh restart postgres-pair``); test_standby_promotion.py
stops the primary instead.

The gate runs it without its multi-process tests (~22 s of its ~27 s), which go
through ``latest`` and the primary like test_contract.py's, where they run in the
gate against the single server; ``make soak`` (``STATEKIT_SOAK=1``) runs them here too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from statekit_postgres import PostgresBackend

from statekit.testing import BackendContract, fresh_namespace

from .conftest import drop, open_or_skip, with_query

SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
SOAK_ONLY = frozenset(
    {
        "test_concurrent_processes_never_lose_an_update",
        "test_processes_racing_a_guard_bump_never_write_after_it",
        "test_at_rises_across_store_objects_and_processes",
        "test_writes_of_other_processes_after_a_position_are_listed",
    }
)
"""The contract's multi-process tests: they do not read from the standby."""


class TestPostgresStandbyReads(BackendContract):
    @pytest.fixture(autouse=True)
    def _gate_size(self, request: pytest.FixtureRequest) -> None:
        if not SOAK and request.node.originalname in SOAK_ONLY:
            pytest.skip(
                "multi-process: STATEKIT_SOAK=1 (make soak); the gate's is test_contract.py"
            )

    @pytest.fixture
    def backend_url(self, pair_url: str) -> str:
        return with_query(pair_url, namespace=fresh_namespace("sb"), read="standby")

    @pytest_asyncio.fixture
    async def backend(self, backend_url: str) -> AsyncIterator[PostgresBackend]:
        backend = await open_or_skip(backend_url)
        yield backend
        await backend.aclose()
        await drop(backend_url)
