"""Fixtures for the legacy drop-in tests: the store the seed 003 examples run against.

Each example runs twice: against SQLite (``TRADING_STATE_DB_TYPE=sqlite``: the default
``./statekit.db`` in the test's own temp folder, which is also the working directory,
so ``state.json`` and friends land there too)
and against the PostgreSQL test server (``STATEKIT_URL`` set to a fresh namespace on
it, dropped afterwards). The examples themselves never name a store, exactly as in
the seed: they pick up the configured one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

import statekit
from statekit.backend import Record
from statekit.config import load_settings
from statekit.testing import fresh_namespace, server_url

DATA = Path(__file__).parent / "data"
LEGACY_STATE = DATA / "state.json"
"""A legacy ``TradingStateManager`` file: positions with naive ISO times and floats."""


def with_query(url: str, **params: str) -> str:
    """``url`` with more query parameters."""
    glue = "&" if urlsplit(url).query else "?"
    return url + glue + urlencode(params)


@dataclass(frozen=True)
class Target:
    """The store the examples of one test run against.

    :param name: ``sqlite`` or ``postgresql``: what ``get_system_status()`` should call it.
    :param url: the store URL, as the compat layer resolves it from the settings.
    """

    name: str
    url: str

    def records(self, prefix: str = "") -> dict[str, Record]:
        """Every live record under ``prefix``, read straight from the store."""

        async def scan() -> dict[str, Record]:
            async with await statekit.open(self.url) as store:
                return {r.key: r async for r in store.scan(prefix)}

        return asyncio.run(scan())

    def history(self, key: str) -> list[Record]:
        """Every version of ``key``, newest first, read straight from the store."""

        async def read() -> list[Record]:
            async with await statekit.open(self.url) as store:
                return await store.history(key, limit=1000)

        return asyncio.run(read())


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples read their store from the settings: nothing from the developer's
    # shell may leak in (the test servers' own STATEKIT_TEST_* variables stay).
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("TRADING_STATE_") or (
            upper.startswith("STATEKIT_") and not upper.startswith("STATEKIT_TEST_")
        ):
            monkeypatch.delenv(name)


async def _drop_postgres(url: str) -> None:
    from statekit_postgres import PostgresBackend

    async with await PostgresBackend.open(url) as backend:
        await backend.drop_namespace(forget=True)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path``, made the working directory, with no statekit/legacy settings in the
    environment (so no config.json, .env or variable of the developer's leaks in)."""
    _clean_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Target]:
    """The configured store of one example run; the working directory is ``workdir``."""
    if request.param == "sqlite":
        # Configured the seed's way. Unconfigured, each legacy path gets a SQLite file
        # of its own beside it (test_legacy_state_file.py covers that); the seed's
        # examples expect one database shared by every manager.
        monkeypatch.setenv("TRADING_STATE_DB_TYPE", "sqlite")
        yield Target("sqlite", load_settings().store_url())
        return
    url = with_query(server_url("postgres"), namespace=fresh_namespace("compat"))
    monkeypatch.setenv("STATEKIT_URL", url)
    assert load_settings().store_url() == url
    try:
        yield Target("postgresql", url)
    finally:
        asyncio.run(_drop_postgres(url))


@pytest.fixture
def legacy_state() -> dict[str, Any]:
    """The content of the legacy fixture file."""
    data: dict[str, Any] = json.loads(LEGACY_STATE.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def put_legacy(workdir: Path) -> Callable[[str | Path], bytes]:
    """Copies the legacy fixture file to a path (relative: in the working directory)
    and returns its bytes, to compare with afterwards."""

    def put(name: str | Path) -> bytes:
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(LEGACY_STATE, path)
        return path.read_bytes()

    return put


@pytest.fixture
def closing(target: Target) -> Iterator[Callable[..., None]]:
    """Registers managers an example leaves open; closes them after the test, before
    the store goes (the seed's scripts simply end the process).

    ``shutdown()`` is the seed's name; ``close()`` is tried for the plain manager.
    """
    opened: list[object] = []

    def register(*managers: object) -> None:
        opened.extend(managers)

    yield register
    for manager in reversed(opened):
        for name in ("shutdown", "close"):
            method = getattr(manager, name, None)
            if callable(method):
                method()
                break
