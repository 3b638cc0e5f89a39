"""The README's first steps, as written: the curl example's position shows in the trading
views a newcomer opens next, seed 003's request shape keeps working (and is plainly not
a trading position), the Python example runs, and ``make example`` never writes the
store ``make run`` serves."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

import statekit
from statekit.api import create_app
from statekit.config import load_settings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def curl_requests() -> list[tuple[str, str, Any]]:
    """Every ``curl`` of the README's first bash block: (method, path, JSON body)."""
    block = re.search(r"```bash\n(curl .*?)```", README, re.S)
    assert block is not None, "the README's curl example is gone"
    text = re.sub(r"#[^\n']*\n", "\n", block.group(1).replace("\\\n", " "))
    found = []
    for line in text.split("\ncurl "):
        words = shlex.split(line.removeprefix("curl "))
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        body = json.loads(words[words.index("-d") + 1]) if "-d" in words else None
        url = next(w for w in words if w.startswith("http"))
        found.append((method, url.removeprefix("http://127.0.0.1:8000"), body))
    return found


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite:///{tmp_path}/statekit.db"
    async with await statekit.open(url) as store:
        app = create_app(store, load_settings("", "", url=url))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.mark.asyncio
async def test_the_curl_example_shows_in_the_positions_view(client: httpx.AsyncClient) -> None:
    requests = curl_requests()
    assert [(m, p) for m, p, _ in requests][:3] == [
        ("GET", "/health"),
        ("POST", "/states"),
        ("GET", "/positions"),
    ]
    for method, path, body in requests:
        answer = await client.request(method, path, json=body)
        assert answer.status_code in (200, 201), (method, path, answer.text)
        if path == "/positions":
            positions = answer.json()["positions"]
            assert positions["EURUSD"]["symbol"] == "EURUSD"
            assert positions["EURUSD"]["direction"] == "long"
            assert Decimal(str(positions["EURUSD"]["quantity"])) == 100000
        if path.endswith("/history"):
            (first,) = answer.json()["items"]
            assert first["data"]["symbol"] == "EURUSD"


@pytest.mark.asyncio
async def test_seed_003_shape_works_and_is_not_a_trading_position(
    client: httpx.AsyncClient,
) -> None:
    seed = {
        "state_id": "position_EURUSD",
        "state_type": "position",
        "data": {"direction": "long", "quantity": 100000},
        "description": "New position opened",
    }
    assert (await client.post("/states", json=seed)).status_code == 201
    got = await client.get("/states/position_EURUSD?state_type=position")
    assert got.json()["data"] == seed["data"]
    assert (await client.get("/positions")).json()["positions"] == {}  # as the README says
    assert "`/states/position_EURUSD`" in README


def test_the_python_example_runs(tmp_path: Path) -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    done = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_make_example_uses_a_throwaway_store() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\nexample:") : makefile.index("\nlint:")]
    assert "examples/quickstart.py" in target
    assert "mktemp -d" in target
    assert "statekit.db" not in target.replace("quickstart.db", "")
