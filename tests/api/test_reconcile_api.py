"""The reconciliation routes: ``/reconcile/metrics``, ``/reconcile/intents[/{id}]``, ``/metrics``.

In process (httpx.ASGITransport) over a SQLite store a real :class:`ReconcileEngine`
has run a pass on with the paper exchange; then once against a real
``statekit serve`` with an API key, as Prometheus would scrape it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

import statekit
from statekit.api import create_app
from statekit.backend import Write
from statekit.config import Settings, load_settings
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.reconcile import IntentStore, read_metrics

from .conftest import RECONCILE_SYMBOL, buy, one_pass

KEY = "reconcile-api-key-7d1e0c"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
RECONCILE = "statekit_reconcile_"
SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{scope="(?P<scope>(?:[^"\\]|\\.)*)"(?:,le="[^"]+")?\} '
    r"(?P<value>NaN|[+-]Inf|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)$"
)


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


def settings_for(tmp_path: Path, **api: Any) -> Settings:
    return load_settings("", "", url=f"sqlite:///{tmp_path}/api.db", api=api)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    """A store with intent i1 after one engine pass (placed and resting), and intent i2
    created after it (no engine has seen it)."""
    opened = await statekit.open(settings=settings_for(tmp_path))
    async with opened:
        await IntentStore(opened).create("i1", buy())
        await one_pass(opened)
        await IntentStore(opened).create("i2", buy("80"))
        yield opened


def client_for(store: StateStore, settings: Settings) -> httpx.AsyncClient:
    app = create_app(store, settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest_asyncio.fixture
async def client(store: StateStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store, settings_for(tmp_path)) as c:
        yield c


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    found: dict[str, Any] = body["error"]
    return found


def samples(text: str) -> dict[tuple[str, str], str]:
    """The reconciliation samples of a Prometheus text exposition, checking every
    line's syntax (the other families by prometheus_client's own parser)."""
    assert text.endswith("\n")
    assert list(text_string_to_metric_families(text))
    found: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        if not line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(RECONCILE):
            continue  # the app's registry: tests/api/test_observe.py
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) statekit_reconcile_\w+ \S", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        found[match["name"], match["scope"]] = match["value"]
    return found


@pytest.mark.asyncio
async def test_reconcile_metrics(client: httpx.AsyncClient, store: StateStore) -> None:
    response = await client.get("/reconcile/metrics")
    assert response.status_code == 200, response.text
    body = response.json()
    stored = await read_metrics(store)
    assert set(body) == set(stored) == {"default"}
    snap = body["default"]
    for field in ("scope", "holder", "passes", "keys", "pending", "errors", "retries"):
        assert snap[field] == stored["default"][field], field
    for field in ("lag_p50_seconds", "last_pass_seconds", "converge_seconds", "last_error"):
        assert snap[field] == stored["default"][field], field
    assert (snap["passes"], snap["keys"], snap["pending"]) == (1, 1, 0)
    assert snap["updated_at"].endswith("Z")


@pytest.mark.asyncio
async def test_reconcile_metrics_without_an_engine(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with await statekit.open(settings=settings) as empty, client_for(empty, settings) as c:
        assert (await c.get("/reconcile/metrics")).json() == {}
        response = await c.get("/metrics")
        assert response.status_code == 200
        assert samples(response.text) == {}


@pytest.mark.asyncio
async def test_unreadable_metrics_are_left_out(
    client: httpx.AsyncClient, store: StateStore
) -> None:
    # The store validates snapshots; a writer with validation off (or an old
    # version) could still leave a bad one: written past the validators here.
    bad = Write("reconcile-metrics/broken", {"passes": "many"}, kinds.RECONCILE_METRICS)
    await store.backend.append([bad], datetime.now(UTC))
    body = (await client.get("/reconcile/metrics")).json()
    assert set(body) == {"default"}
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert {scope for _, scope in samples(response.text)} == {"default"}


@pytest.mark.asyncio
async def test_intents(client: httpx.AsyncClient) -> None:
    response = await client.get("/reconcile/intents")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unreadable"] == []
    first, second = body["items"]
    assert (first["id"], second["id"]) == ("i1", "i2")
    assert (first["symbol"], first["side"], first["type"]) == (RECONCILE_SYMBOL, "buy", "limit")
    assert (first["amount"], first["price"]) == ("1", "90")  # Decimals as strings
    assert (first["generation"], first["observed_generation"]) == (1, 1)
    assert (first["condition"], first["filled"]) == ("InSync", "0")
    assert first["exchange_order_id"] == "paper-1"
    (leg,) = first["legs"]
    assert (leg["exchange_order_id"], leg["status"], leg["amount"]) == ("paper-1", "open", "1")
    for field in ("observed_generation", "condition", "reason", "filled", "exchange_order_id"):
        assert second[field] is None, field
    assert second["legs"] == []


@pytest.mark.asyncio
async def test_one_intent(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/reconcile/intents")).json()["items"]
    for item in listed:
        response = await client.get(f"/reconcile/intents/{item['id']}")
        assert response.status_code == 200, response.text
        assert response.json() == item


@pytest.mark.asyncio
@pytest.mark.parametrize("intent_id", ["nope", "a%20b", "x" * 65])
async def test_missing_intent_is_404(client: httpx.AsyncClient, intent_id: str) -> None:
    response = await client.get(f"/reconcile/intents/{intent_id}")
    found = error(response, 404, "not_found")
    assert found["intent_id"] == intent_id.replace("%20", " ")
    assert "no intent" in found["message"]


@pytest.mark.asyncio
async def test_prometheus_metrics(client: httpx.AsyncClient, store: StateStore) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == PROMETHEUS
    found = samples(response.text)
    assert found["statekit_reconcile_passes_total", "default"] == "1"
    assert float(found["statekit_reconcile_pending", "default"]) == 0
    stored = (await read_metrics(store))["default"]
    assert float(found["statekit_reconcile_last_pass_seconds", "default"]) == pytest.approx(
        stored["last_pass_seconds"]
    )
    assert "# TYPE statekit_reconcile_passes_total counter" in response.text
    assert "# TYPE statekit_reconcile_pending gauge" in response.text


@pytest.mark.asyncio
async def test_metrics_need_the_key_when_one_is_set(store: StateStore, tmp_path: Path) -> None:
    async with client_for(store, settings_for(tmp_path, api_key=KEY)) as c:
        for path in (
            "/metrics",
            "/reconcile/metrics",
            "/reconcile/intents",
            "/reconcile/intents/i1",
        ):
            for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
                response = await c.get(path, headers=headers)
                error(response, 401, "unauthorized")
                assert response.headers["content-type"] == "application/json"
            for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
                assert (await c.get(path, headers=headers)).status_code == 200, path


@pytest.mark.asyncio
async def test_openapi_documents_the_routes(store: StateStore, tmp_path: Path) -> None:
    async with client_for(store, settings_for(tmp_path, api_key=KEY)) as c:
        schema = (await c.get("/openapi.json", headers={"X-API-Key": KEY})).json()
    paths = schema["paths"]
    scrape = paths["/metrics"]["get"]["responses"]
    assert list(scrape["200"]["content"]) == [PROMETHEUS]
    for status in ("401", "413", "422", "503"):
        # Errors are JSON, whatever the route's own media type.
        assert list(scrape[status]["content"]) == ["application/json"], status
    assert "404" in paths["/reconcile/intents/{intent_id}"]["get"]["responses"]
    for path in ("/reconcile/metrics", "/reconcile/intents"):
        assert "200" in paths[path]["get"]["responses"]


# -- a real server, scraped as Prometheus would --------------------------------------------------


def test_a_real_server_serves_metrics_to_a_scraper_with_the_key(
    tmp_path: Path, start_server: Callable[..., Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"

    async def prepare() -> None:
        async with await statekit.open(url) as opened:
            await IntentStore(opened).create("i1", buy())
            await one_pass(opened)

    asyncio.run(prepare())
    with start_server(url, tmp_path, api_key=KEY) as server:
        with httpx.Client(base_url=server.url, timeout=30.0) as scraper:
            refused = scraper.get("/metrics")
            error(refused, 401, "unauthorized")
            assert refused.headers["www-authenticate"].startswith("Bearer")
            response = scraper.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == PROMETHEUS
            assert samples(response.text)["statekit_reconcile_passes_total", "default"] == "1"
            intent = scraper.get("/reconcile/intents/i1", headers={"X-API-Key": KEY})
            assert intent.json()["condition"] == "InSync"
        assert "Traceback" not in server.output()
