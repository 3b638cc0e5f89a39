"""``pip install 'statekit[api]'`` (what docs/api.md says) serves the API, the
dashboard and WebSockets.

The other API tests run in the dev environment, which installs websockets for its
test client and runs statekit from the source tree, so they cannot see what a user
with only the ``api`` extra gets. Here the core's wheel is built from this repository
and installed with ``[api]`` and nothing else (its dependencies from the package
registry) into a virtualenv of its own; ``statekit serve`` runs from it on a SQLite
store, and a client reads /health and the dashboard and subscribes on /ws.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from ..conftest import Venv

STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment() -> dict[str, str]:
    """This process's environment without statekit settings (the server reads none)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("STATEKIT_", "TRADING_STATE_", "VIRTUAL_ENV"))
    }


@pytest.mark.slow
def test_the_api_extra_alone_serves_websockets(
    venv: Venv, statekit_wheel: Path, tmp_path: Path
) -> None:
    venv.install(f"{statekit_wheel}[api]")  # checked: it fails when pip does
    bin_dir = venv.bin
    library = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "from statekit.api.server import websocket_library; print(websocket_library())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert library.stdout.strip() == "websockets"

    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                str(bin_dir / "statekit"),
                "serve",
                "--port",
                str(port),
                "--store",
                f"sqlite:///{tmp_path / 'extra.db'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=_environment(),
        )
    try:
        _wait_for_health(server, f"http://127.0.0.1:{port}", log)
        replies = asyncio.run(_ping_and_watch(port))
        dashboard = _dashboard_pages(f"http://127.0.0.1:{port}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert replies[0] == {"type": "pong"}
    assert replies[1] == {"type": "subscribed", "topic": "keys:extra/"}
    assert (replies[2]["type"], replies[2]["state_id"], replies[2]["version"]) == (
        "change",
        "extra/1",
        1,
    )
    # The dashboard ships in the wheel: its templates and the vendored htmx (package data).
    assert dashboard == [200, 200, 200, 200], dashboard
    assert "Traceback" not in log.read_text(errors="replace")


def _dashboard_pages(url: str) -> list[int]:
    """The statuses of the dashboard's shell, a fragment, its script and htmx's license."""
    paths = [
        "/",
        "/dashboard/overview",
        "/dashboard/static/dashboard.js",
        "/dashboard/static/vendor/htmx/LICENSE",
    ]
    with httpx.Client(base_url=url, timeout=30.0) as http:
        return [http.get(path).status_code for path in paths]


def _wait_for_health(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(timeout=2.0) as probe:
        while True:
            assert server.poll() is None, log.read_text(errors="replace")
            try:
                if probe.get(url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)


async def _ping_and_watch(port: int) -> list[dict[str, object]]:
    replies: list[dict[str, object]] = []
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(json.dumps({"action": "ping"}))
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send(json.dumps({"action": "subscribe", "topic": "keys:extra/"}))
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            body = {"state_id": "extra/1", "state_type": "note", "data": {"ok": True}}
            assert (await http.post("/states", json=body)).status_code == 201
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    return replies


def test_serve_refuses_to_start_without_a_websocket_library(tmp_path: Path) -> None:
    """What a server installed without one says (the imports are blocked in its process)."""
    script = (
        "import sys\n"
        "sys.modules['websockets'] = None\n"
        "sys.modules['wsproto'] = None\n"
        "from statekit.cli import main\n"
        "sys.argv = ['statekit', 'serve', '--port', '0', '--store', sys.argv[1]]\n"
        "main()\n"
    )
    store = tmp_path / "never.db"
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{store}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_environment(),
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == [
        "error: no WebSocket library is installed, so WS /ws would answer 404: "
        "pip install 'statekit[api]' (it brings websockets)"
    ]
    assert "serving" not in done.stdout
    assert not store.exists()
