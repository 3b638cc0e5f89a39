"""Reaching the server: unix sockets, TLS modes, the legacy settings, pools, timeouts,
errors that name the server without its password, and ``statekit doctor``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from statekit_postgres import PostgresBackend, PostgresOptions
from typer.testing import CliRunner

import statekit
from statekit.cli import app
from statekit.config import load_settings
from statekit.errors import BackendError, BackendUnavailable, ConfigError
from statekit.store import StateStore

from .conftest import drop, open_or_skip, require_postgres, with_query

SECRET = "s3cret-pa55"


@pytest_asyncio.fixture
async def admin(pg_url: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(**PostgresOptions.parse(pg_url).connect_kwargs())
    yield conn
    await conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No statekit settings from the environment or the working directory."""
    for name in list(os.environ):
        if name.startswith(("STATEKIT_", "TRADING_STATE_")) and not name.startswith(
            "STATEKIT_TEST_"
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STATEKIT_CONFIG_FILE", "")
    monkeypatch.setenv("STATEKIT_ENV_FILE", "")
    monkeypatch.chdir(tmp_path)


@pytest.mark.asyncio
async def test_unix_socket_dsn(pg_url: str, admin: Any) -> None:
    directory = (await admin.fetchval("SHOW unix_socket_directories")).split(",")[0].strip()
    parts = urlsplit(pg_url)
    namespace = f"sock_{uuid.uuid4().hex}"
    url = with_query(
        f"postgresql://{parts.username}@{parts.path}",
        host=directory,
        port=str(parts.port),
        namespace=namespace,
    )
    assert url.startswith("postgresql://postgres@/")
    backend = await open_or_skip(url)
    try:
        async with StateStore(backend, owns_backend=False) as store:
            await store.put("via/socket", {"ok": True})
            got = await store.get("via/socket")
            assert got is not None and got.data == {"ok": True}
        socket_clients = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE client_port = -1 "
            "AND application_name = 'statekit' AND pid <> pg_backend_pid()"
        )
        assert socket_clients >= 1  # client_port -1: a unix-socket connection
    finally:
        await backend.drop_namespace(forget=True)
        await backend.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["disable", "prefer", "allow"])
async def test_sslmode_reaches_the_driver(namespaced: Callable[..., str], mode: str) -> None:
    """The test server has no TLS: modes that allow plain connections work..."""
    backend = await open_or_skip(namespaced(sslmode=mode))
    await backend.aclose()


@pytest.mark.asyncio
async def test_sslmode_require_without_tls_on_the_server(
    namespaced: Callable[..., str], pg_url: str
) -> None:
    """...and one that demands TLS fails with a statekit error, not a driver one."""
    await require_postgres(pg_url)  # skip (or fail in CI) without a server at all
    with pytest.raises(BackendUnavailable) as err:
        await PostgresBackend.open(namespaced(sslmode="require"))
    assert "SSL" in str(err.value)
    with pytest.raises(ConfigError):
        await PostgresBackend.open(namespaced(sslmode="sometimes"))


@pytest.mark.asyncio
async def test_legacy_trading_state_settings_reach_the_server(
    pg_url: str, isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = urlsplit(pg_url)
    monkeypatch.setenv("TRADING_STATE_DB_TYPE", "postgresql")
    monkeypatch.setenv("TRADING_STATE_POSTGRES_HOST", parts.hostname or "")
    monkeypatch.setenv("TRADING_STATE_POSTGRES_PORT", str(parts.port))
    monkeypatch.setenv("TRADING_STATE_POSTGRES_DB", parts.path.lstrip("/"))
    monkeypatch.setenv("TRADING_STATE_POSTGRES_USER", parts.username or "")
    monkeypatch.setenv("TRADING_STATE_POSTGRES_PASSWORD", SECRET)  # trust auth ignores it
    assert load_settings().store_url().startswith("postgresql://")
    await require_postgres(pg_url)
    async with await statekit.open() as store:
        health = await store.health()
        assert health.ok
        assert health.detail["namespace"] == "default"
        assert health.detail["database"] == parts.path.lstrip("/")
        assert SECRET not in repr(store.backend.describe())


@pytest.mark.asyncio
async def test_unreachable_server_is_unavailable_and_keeps_the_password(pg_url: str) -> None:
    url = f"postgresql://bot:{SECRET}@127.0.0.1:{_free_port()}/db?namespace=x&connect_timeout=5"
    with pytest.raises(BackendUnavailable) as err:
        await PostgresBackend.open(url)
    assert err.value.retryable
    assert SECRET not in str(err.value) and "bot:***@127.0.0.1" in str(err.value)
    assert SECRET not in str(err.value.__cause__)


@pytest.mark.asyncio
async def test_a_missing_database_is_a_backend_error(pg_url: str) -> None:
    await require_postgres(pg_url)
    parts = urlsplit(pg_url)
    url = parts._replace(path=f"/no_such_db_{uuid.uuid4().hex[:8]}").geturl()
    with pytest.raises(BackendError) as err:
        await PostgresBackend.open(url)
    assert not isinstance(err.value, BackendUnavailable)
    assert "does not exist" in str(err.value)


@pytest.mark.asyncio
async def test_statement_timeout_and_pool_sizes(
    open_backend: Callable[..., Any], admin: Any
) -> None:
    app_name = f"sk_{uuid.uuid4().hex[:12]}"
    backend: PostgresBackend = await open_backend(
        "opts", statement_timeout="0.2", pool_min="0", pool_max="2", application_name=app_name
    )
    health = await backend.health()
    assert health.detail["statement_timeout"] == "200ms"
    assert health.detail["pool"] == {"min": 0, "max": 2, "size": 1, "idle": 1}
    with pytest.raises(BackendUnavailable) as err:
        await backend._fetchval("SELECT pg_sleep(5)")
    assert "statement_timeout" in str(err.value)

    store = StateStore(backend, owns_backend=False)
    await asyncio.gather(*(store.put(f"k/{i}", i) for i in range(12)))
    connections = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app_name
    )
    assert 1 <= connections <= 2
    assert (await backend.health()).detail["pool"]["size"] <= 2


@pytest.mark.usefixtures("isolated")
def test_doctor_reports_the_server(namespaced: Callable[..., str]) -> None:
    url = namespaced("doctor")
    asyncio.run(require_postgres(url))
    result = CliRunner().invoke(app, ["--url", url, "doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    backend = report["backend"]
    assert backend["backend"] == "postgresql" and backend["ok"]
    detail = backend["detail"]
    assert detail["namespace"] == urlsplit(url).query.split("=")[1]
    assert {"server_version", "synchronous_commit", "pool", "schema_version"} <= set(detail)
    asyncio.run(drop(url))


@pytest.mark.usefixtures("isolated")
def test_doctor_on_an_unreachable_server_prints_no_password() -> None:
    url = f"postgresql://bot:{SECRET}@127.0.0.1:{_free_port()}/db"
    result = CliRunner().invoke(app, ["--url", url, "doctor", "--json"])
    assert result.exit_code == 1
    assert SECRET not in result.output
    assert "Traceback" not in result.output
