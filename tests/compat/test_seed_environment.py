"""The seed's own way to choose PostgreSQL: TRADING_STATE_DB_TYPE and TRADING_STATE_POSTGRES_*.

The other tests point the examples at PostgreSQL with ``STATEKIT_URL``; here the
seed's variables (Configuration, Environment Variables) do it, on a database of
the test's own, created and dropped around it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

import statekit
from statekit.config import load_settings
from statekit.testing import server_url


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def seed_postgres_env(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Sets the seed's PostgreSQL variables to a fresh database on the test server."""
    url = server_url("postgres")
    parts = urlsplit(url)
    database = f"compat_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{database}"'))
    monkeypatch.setenv("TRADING_STATE_DB_TYPE", "postgresql")
    monkeypatch.setenv("TRADING_STATE_POSTGRES_HOST", parts.hostname or "localhost")
    monkeypatch.setenv("TRADING_STATE_POSTGRES_PORT", str(parts.port or 5432))
    monkeypatch.setenv("TRADING_STATE_POSTGRES_DB", database)
    monkeypatch.setenv("TRADING_STATE_POSTGRES_USER", unquote(parts.username or "postgres"))
    if parts.password:
        monkeypatch.setenv("TRADING_STATE_POSTGRES_PASSWORD", unquote(parts.password))
    try:
        yield database
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def test_quick_start_on_the_seeds_postgres_variables(seed_postgres_env: str) -> None:
    from statekit.compat import create_backward_compatible_manager, get_state_manager

    state_manager = create_backward_compatible_manager("state.json")
    positions = {"EURUSD": {"direction": "long", "quantity": 100000}}
    pair_states = {"EURUSD": {"position": "long", "cooldown": 0}}
    try:
        success = state_manager.save_trading_state(positions, pair_states)
        loaded_state = state_manager.load_trading_state()
    finally:
        for name in ("shutdown", "close"):
            method = getattr(state_manager, name, None)
            if callable(method):
                method()
                break

    assert success is True
    assert loaded_state is not None
    assert loaded_state["active_positions"] == positions
    with get_state_manager() as manager:
        assert manager.get_system_status()["database_type"] == "postgresql"

    url = load_settings().store_url()
    assert urlsplit(url).path == f"/{seed_postgres_env}"

    async def read() -> object:
        async with await statekit.open(url) as store:
            record = await store.get("position/EURUSD")
            return None if record is None else record.data

    assert asyncio.run(read()) == positions["EURUSD"]
