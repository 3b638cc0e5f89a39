"""Fixtures for the API tests: a real ``statekit serve`` process and real clients.

Every server here is the command a user runs (``python -m statekit.cli serve``) in a
process of its own, reached over TCP by httpx and websockets clients; nothing is
imported from :mod:`statekit.api` in-process. A server is started on a free loopback
port, is ready once ``GET /health`` answers, and is stopped with SIGTERM (then
SIGKILL if it hangs). Its environment holds no ``STATEKIT_*``/``TRADING_STATE_*``
variable of the developer's shell, only what the fixture sets.

- ``server``: no API key (loopback needs none), once on SQLite and once on a fresh
  PostgreSQL namespace (skipped locally / failed under CI=true without the server).
- ``keyed_server``: SQLite, an API key and one allowed CORS origin.

Servers are module-scoped (a start costs about a second); each test uses state ids
of its own (the ``sid`` fixture), so tests sharing a server never see each other's
keys, except in listings, which the tests compare before and after.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from statekit.store import StateStore
from statekit.testing import in_ci
from statekit.trading import OrderSide, PaperExchange
from statekit.trading.reconcile import IntentSpec, ReconcileEngine

from ..conftest import fresh_store_url

STARTUP_TIMEOUT = 60.0
"""Seconds a server has to answer /health; only a hung server reaches it."""
STOP_TIMEOUT = 15.0
"""Seconds between SIGTERM and SIGKILL."""
API_KEY = "test-api-key-5f0c2b9e7d41"
ALLOWED_ORIGIN = "https://dash.example.com"
DENIED_ORIGIN = "https://evil.example.net"
MAX_BODY_BYTES = 64 * 1024
"""``keyed_server``'s body limit (api.max_body_bytes)."""

Listing = dict[str, tuple[str, int]]
"""What a server stores, as the API lists it: state id -> (state type, version)."""


@dataclass
class Served:
    """One running ``statekit serve`` process.

    :param url: ``http://127.0.0.1:<port>``.
    :param store_url: the store it serves.
    :param api_key: the key clients must send, or None.
    :param process: the server process.
    :param log: the file its stdout and stderr go to.
    """

    url: str
    store_url: str
    api_key: str | None
    process: subprocess.Popen[bytes]
    log: Path
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>/ws``."""
        return "ws" + self.url.removeprefix("http") + "/ws"

    @property
    def headers(self) -> dict[str, str]:
        """The auth header when a key is configured."""
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def client(self, *, auth: bool = True, **options: Any) -> httpx.Client:
        """A keep-alive client on this server, closed when the server stops."""
        headers = {**(self.headers if auth else {}), **options.pop("headers", {})}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **options)
        self.clients.append(client)
        return client

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """Stop the server now (SIGTERM, then SIGKILL); its exit code."""
        return stop(self.process)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without statekit or legacy settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("TRADING_STATE_")
        and not (
            name.upper().startswith("STATEKIT_") and not name.upper().startswith("STATEKIT_TEST_")
        )
    }
    env.update(extra or {})
    return env


def serve_command(store_url: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """``statekit serve`` as a user types it."""
    return [
        sys.executable,
        "-m",
        "statekit.cli",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--store",
        store_url,
    ]


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if it has not ended within STOP_TIMEOUT; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _start_problem(process: subprocess.Popen[bytes], url: str, log: Path) -> str | None:
    """None once ``/health`` answers 200; else why the server is not up (exit or hang)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(timeout=2.0) as probe:
        while True:
            if process.poll() is not None:
                text = log.read_text(encoding="utf-8", errors="replace")
                return f"statekit serve exited {process.returncode}:\n{text}"
            try:
                if probe.get(url + "/health").status_code == 200:
                    return None
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                text = log.read_text(encoding="utf-8", errors="replace")
                return f"statekit serve hung: no /health in {STARTUP_TIMEOUT} s\n{text}"
            time.sleep(0.05)


@contextmanager
def running_server(
    store_url: str,
    workdir: Path,
    *,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Served]:
    """``statekit serve`` on a free port of 127.0.0.1 until the block ends."""
    extra = dict(env or {})
    if api_key is not None:
        extra["STATEKIT_API__API_KEY"] = api_key
    for attempt in range(3):
        port = free_port()  # another process may take it before the server binds: retry
        log = workdir / f"serve-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                serve_command(store_url, port),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=serve_environment(extra),
                cwd=workdir,
            )
        served = Served(f"http://127.0.0.1:{port}", store_url, api_key, process, log)
        problem = _start_problem(process, served.url, log)
        if problem is not None:
            stop(process)
            if attempt < 2 and "address already in use" in problem.lower():
                continue
            pytest.fail(problem, pytrace=False)
        try:
            yield served
        finally:
            for client in served.clients:
                client.close()
            stop(process)
        return


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """``statekit serve`` without an API key, on SQLite and on PostgreSQL."""
    folder = tmp_path_factory.mktemp(f"serve-{request.param}")
    with (
        fresh_store_url(request.param, folder, "api") as url,
        running_server(url, folder) as served,
    ):
        yield served


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``statekit serve`` on SQLite with an API key, one allowed CORS origin and a
    64 KiB body limit."""
    folder = tmp_path_factory.mktemp("serve-keyed")
    env = {
        "STATEKIT_API__CORS_ORIGINS": f'["{ALLOWED_ORIGIN}"]',
        "STATEKIT_API__MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    with running_server(f"sqlite:///{folder / 'api.db'}", folder, api_key=API_KEY, env=env) as s:
        yield s


@pytest.fixture
def client(server: Served) -> httpx.Client:
    """A keep-alive client on ``server``."""
    return server.client()


@pytest.fixture
def sid() -> str:
    """A state id no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


def listing(client: httpx.Client, prefix: str = "") -> Listing:
    """Every live state the server lists under ``prefix``, following cursors."""
    found: Listing = {}
    cursor: str | None = None
    for _ in range(1000):
        params: dict[str, str | int] = {"limit": 100}
        if prefix:
            params["prefix"] = prefix
        if cursor:
            params["cursor"] = cursor
        response = client.get("/states", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        for item in body["items"]:
            found[item["state_id"]] = (item["state_type"], item["version"])
        cursor = body.get("next_cursor")
        if not cursor:
            return found
    raise AssertionError("GET /states never ended its cursor chain")


@pytest.fixture
def stored() -> Callable[[httpx.Client], Listing]:
    """:func:`listing`, for tests that compare what is stored before and after."""
    return listing


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``{"error": {"code", "message"}}`` body every 4xx carries, checked."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    return error


@pytest.fixture
def error() -> Callable[[httpx.Response], dict[str, Any]]:
    """:func:`error_of`: the checked error body of a 4xx response."""
    return error_of


@pytest.fixture
def start_server() -> Callable[..., Any]:
    """:func:`running_server`: ``with start_server(store_url, folder, api_key=...) as s``."""
    return running_server


@pytest.fixture
def serve_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``statekit serve`` to completion (for servers that must refuse to start)."""

    def run(
        store_url: str,
        cwd: Path,
        host: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            serve_command(store_url, port or free_port(), host),
            capture_output=True,
            text=True,
            env=serve_environment(env),
            cwd=cwd,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )

    return run


@pytest.fixture
def origins() -> tuple[str, str]:
    """(the origin ``keyed_server`` allows, one it does not)."""
    return ALLOWED_ORIGIN, DENIED_ORIGIN


def browser_paths() -> tuple[str, str]:
    """Debian's chromium and chromedriver (scripts/browser.sh, which ``make test`` runs,
    installs them as root), or stop: a failure under CI=true, else a skip that says so."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        message = (
            "no headless browser (Debian's chromium and chromium-driver): "
            "run scripts/browser.sh (as root it installs them; make test does this)"
        )
        if in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return browser, driver


RECONCILE_SYMBOL = "BTC/USDT"
"""The symbol of the intents :func:`buy` makes and :func:`one_pass` trades."""


def buy(price: str = "90") -> IntentSpec:
    """An intent to buy 1 :data:`RECONCILE_SYMBOL` at ``price`` (below the market: it rests)."""
    return IntentSpec(
        symbol=RECONCILE_SYMBOL, side=OrderSide.BUY, amount=Decimal("1"), price=Decimal(price)
    )


async def one_pass(store: StateStore) -> PaperExchange:
    """One reconcile pass over ``store``'s intents on a fresh paper exchange (returned)."""
    exchange = PaperExchange(
        prices={RECONCILE_SYMBOL: [Decimal("100")]}, balances={"USDT": Decimal("100000")}
    )
    engine = ReconcileEngine(store, exchange)
    try:
        await engine.run_once()
    finally:
        await engine.aclose()
    return exchange
