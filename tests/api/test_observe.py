"""Offline /docs and /redoc, the OpenAPI security scheme, and every series of
``GET /metrics``: each one moves when the thing it counts happens (docs/operations.md)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

import statekit
from statekit.api import create_app
from statekit.config import Settings, load_settings
from statekit.errors import BackendError, ConflictError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.errors import LockTimeout
from statekit.trading.locks import KeyedLocks
from statekit.trading.reconcile.metrics import ReconcileMetrics

from .conftest import browser_paths

KEY = "observe-key"


def settings_for(tmp_path: Path, **api: Any) -> Settings:
    return load_settings("", "", url=f"sqlite:///{tmp_path}/api.db", api=api)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with await statekit.open(f"sqlite:///{tmp_path}/observe.db") as opened:
        yield opened


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class _Links(HTMLParser):
    """Every ``src`` and ``href`` of a page, and the URLs its inline scripts name."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]
        self._script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._script:
            self.urls += re.findall(r"url: *'([^']+)'", data)
            self.urls += re.findall(r"https?://[^\s'\"]+", data)


# -- /docs, /redoc, OpenAPI ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets_without_the_key(
    store: StateStore, tmp_path: Path, page: str
) -> None:
    app = create_app(store, settings_for(tmp_path, api_key=KEY))
    async with client_for(app) as anonymous:
        response = await anonymous.get(page)
        assert response.status_code == 200, response.text
        links = _Links()
        links.feed(response.text)
        assert links.urls, response.text
        for url in links.urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url}"
            asset = await anonymous.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url
        assert "/openapi.json" in links.urls
        # What the docs document still needs the key.
        assert (await anonymous.get("/states")).status_code == 401
        assert (await anonymous.get("/api-docs/nope.js")).status_code == 404


@pytest.mark.asyncio
async def test_the_assets_ship_with_their_licenses() -> None:
    static = Path(statekit.__file__).parent / "api" / "apidocs" / "static"
    for folder in ("swagger-ui", "redoc"):
        assert (static / folder / "LICENSE").read_text().strip(), folder


@pytest.mark.asyncio
async def test_the_schema_declares_the_key_and_a_call_with_it_works(
    store: StateStore, tmp_path: Path
) -> None:
    app = create_app(store, settings_for(tmp_path, api_key=KEY))
    async with client_for(app) as c:
        schema = (await c.get("/openapi.json")).json()
        schemes = schema["components"]["securitySchemes"]
        header = next(s for s in schemes.values() if s["type"] == "apiKey")
        assert (header["in"], header["name"]) == ("header", "X-API-Key")
        bearer = next(s for s in schemes.values() if s["type"] == "http")
        assert bearer["scheme"].lower() == "bearer"
        states = schema["paths"]["/states"]["get"]
        assert {name for option in states["security"] for name in option} == set(schemes)
        assert "security" not in schema["paths"]["/health"]["get"]
        # What Swagger UI's Authorize button sends, per scheme.
        assert (await c.get("/states", headers={header["name"]: KEY})).status_code == 200
        authorization = {"Authorization": f"Bearer {KEY}"}
        assert (await c.get("/states", headers=authorization)).status_code == 200
        assert (await c.get("/states", headers={header["name"]: "wrong"})).status_code == 401


def test_docs_render_in_a_browser_that_can_reach_nothing_else(
    tmp_path: Path, start_server: Callable[..., Any]
) -> None:
    """A real headless Chromium, every host but the server unresolvable: both pages draw
    the API from the server's own assets; Swagger UI has its Authorize button."""
    chromium, _ = browser_paths()
    drawn = {"/docs": ("opblock-summary-path", "btn authorize"), "/redoc": ("/states/{state_id}",)}
    with start_server(f"sqlite:///{tmp_path}/docs.db", tmp_path, api_key=KEY) as server:
        for page, signs in drawn.items():
            done = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    f"--user-data-dir={tmp_path / 'profile'}",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    server.url + page,
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            for sign in signs:
                assert sign in done.stdout, f"{page} lacks {sign!r}: {done.stdout[:2000]}"


# -- /metrics --------------------------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(c: httpx.AsyncClient) -> Samples:
    response = await c.get("/metrics")
    assert response.status_code == 200, response.text
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.asyncio
async def test_store_series_move_with_operations(store: StateStore, tmp_path: Path) -> None:
    async with client_for(create_app(store, settings_for(tmp_path))) as c:
        before = await scrape(c)
        await store.put("position/A", {"qty": 1})
        with pytest.raises(ConflictError):
            await store.put("position/A", {"qty": 2}, expect=5)
        first = True

        async def bump(current: Any) -> Any:
            nonlocal first
            if first:  # another writer gets there first: update() meets a conflict, retries
                first = False
                await store.put("position/A", {"qty": 3})
            return {"qty": current["qty"] + 1}

        await store.update("position/A", bump)
        assert (await store.get("position/A")) is not None
        after = await scrape(c)
    backend = store.backend.name

    def moved(name: str, **labels: str) -> float:
        return value(after, name, backend=backend, **labels) - value(
            before, name, backend=backend, **labels
        )

    ops = "statekit_store_operations_total"
    assert moved(ops, operation="put", outcome="ok") == 2  # one by the update's rival
    assert moved(ops, operation="put", outcome="conflict") == 1
    assert moved(ops, operation="update", outcome="ok") == 1
    assert moved(ops, operation="get", outcome="ok") == 1
    assert moved(ops, operation="append", outcome="ok") == 0  # a put counts once
    assert moved("statekit_store_operation_seconds_count", operation="put") == 3
    assert moved("statekit_store_conflicts_total", operation="put") == 1
    assert moved("statekit_store_conflicts_total", operation="update") == 1  # retried


@pytest.mark.asyncio
async def test_backend_errors_are_counted_by_type(tmp_path: Path) -> None:
    opened = await statekit.open(f"sqlite:///{tmp_path}/closed.db")
    async with client_for(create_app(opened, settings_for(tmp_path))) as c:
        await opened.aclose()  # every call now fails in the backend
        with pytest.raises(BackendError) as failed:
            await opened.put("k", {"v": 1})
        found = await scrape(c)
    labels = {"operation": "put", "backend": opened.backend.name}
    error = type(failed.value).__name__
    assert value(found, "statekit_store_backend_errors_total", **labels, error=error) == 1
    assert value(found, "statekit_store_operations_total", **labels, outcome="error") == 1


@pytest.mark.asyncio
async def test_http_series_name_the_route_template(store: StateStore, tmp_path: Path) -> None:
    app = create_app(store, settings_for(tmp_path, api_key=KEY))
    async with client_for(app) as c:
        body = {"state_id": "position/B", "state_type": "position", "data": {"q": 1}}
        assert (await c.post("/states", json=body, headers={"X-API-Key": KEY})).is_success
        for _ in range(2):  # the fast path answers these, outside the router
            assert (await c.get("/states/position/B", headers={"X-API-Key": KEY})).is_success
        assert (await c.get("/states/position/B")).status_code == 401
        assert (await c.get("/nowhere", headers={"X-API-Key": KEY})).status_code == 404
        found = await scrape(_keyed(c))
    requests = "statekit_http_requests_total"
    assert value(found, requests, method="POST", route="/states", status="201") == 1
    route = "/states/{state_id}"
    assert value(found, requests, method="GET", route=route, status="200") == 2
    # Answered before any route: the Guard's 401, an unknown path.
    assert value(found, requests, method="GET", route="unrouted", status="401") == 1
    assert value(found, requests, method="GET", route="unrouted", status="404") == 1
    seconds = "statekit_http_request_seconds_count"
    assert value(found, seconds, method="GET", route=route) == 2


@pytest.mark.asyncio
async def test_counting_can_be_turned_off(store: StateStore, tmp_path: Path) -> None:
    async with client_for(create_app(store, settings_for(tmp_path, metrics=False))) as c:
        assert "put" not in vars(store)  # the plain method: nothing added to the hot path
        await store.put("position/D", {"q": 1})
        assert (await c.get("/states/position/D")).headers["X-Request-ID"]
        found = await scrape(c)
    names = {name for name, _ in found}
    assert "statekit_ws_clients" in names  # read at scrape time, still there
    assert not any(name.startswith(("statekit_http_", "statekit_store_")) for name in names)


def _keyed(c: httpx.AsyncClient) -> httpx.AsyncClient:
    c.headers["X-API-Key"] = KEY
    return c


@pytest.mark.asyncio
async def test_lock_contention_is_counted_by_family(store: StateStore, tmp_path: Path) -> None:
    locks = KeyedLocks()
    app = create_app(store, settings_for(tmp_path), locks=locks)
    async with client_for(app) as c:
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with locks.hold("position/BTC"):
                holding.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await holding.wait()
        waiter = asyncio.create_task(_take(locks, "position/BTC"))
        while not locks.statistics()["position/BTC"].waiting:
            await asyncio.sleep(0)
        during = await scrape(c)
        release.set()
        await asyncio.gather(task, waiter)
        async with locks.hold("balance"):
            with pytest.raises(LockTimeout):  # another task waits for it in vain
                await asyncio.create_task(_take(locks, "balance", timeout=0.01))
        after = await scrape(c)
    assert value(during, "statekit_lock_waiting", lock="position/*") == 1
    assert value(after, "statekit_lock_waiting", lock="position/*") == 0
    assert value(after, "statekit_lock_acquisitions_total", lock="position/*") == 2
    assert value(after, "statekit_lock_contended_total", lock="position/*") == 1
    assert value(after, "statekit_lock_wait_seconds_total", lock="position/*") > 0
    assert value(after, "statekit_lock_timeouts_total", lock="balance") == 1


async def _take(locks: KeyedLocks, name: str, *, timeout: float | None = None) -> None:
    async with locks.hold(name, timeout=timeout):
        pass


@pytest.mark.asyncio
async def test_cache_and_mirror_series(tmp_path: Path) -> None:
    mirror = f"sqlite:///{tmp_path}/mirror.db"
    opened = await statekit.open(
        f"sqlite:///{tmp_path}/primary.db", cache=True, mirrors=[mirror], fallback=""
    )
    async with opened, client_for(create_app(opened, settings_for(tmp_path))) as c:
        before = await scrape(c)
        await opened.put("position/C", {"q": 1})
        await opened.get("position/C")
        await opened.get("position/C")
        assert await opened.get("position/none") is None
        await opened.backend.mirrors[0].drain()  # type: ignore[attr-defined]
        after = await scrape(c)
    for name in ("statekit_cache_hits_total", "statekit_cache_misses_total"):
        assert value(after, name, level="memory") > value(before, name, level="memory"), name
    reads = "statekit_cache_primary_reads_total"
    assert value(after, reads) > value(before, reads)
    name = opened.backend.mirrors[0].backend.name  # type: ignore[attr-defined]
    copied = "statekit_mirror_copied_total"
    assert value(after, copied, mirror=name) - value(before, copied, mirror=name) == 1
    assert value(after, "statekit_mirror_lag_seconds", mirror=name) == 0
    assert value(after, "statekit_mirror_queued", mirror=name) == 0


@pytest.mark.asyncio
async def test_reconcile_freshness_moves_when_the_engine_stores(
    store: StateStore, tmp_path: Path
) -> None:
    snapshot: dict[str, Any] = {
        "scope": "default",
        **dict.fromkeys(("passes", "keys", "pending", "actions", "errors"), 0),
        **dict.fromkeys(("retries", "terminal", "drifts"), 0),
    }
    then = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with client_for(create_app(store, settings_for(tmp_path))) as c:
        for at in (then, then + timedelta(seconds=30)):
            updated = {**snapshot, "updated_at": at.isoformat()}
            await store.put("reconcile-metrics/default", updated, kind=kinds.RECONCILE_METRICS)
            found = await scrape(c)
            stamp = "statekit_reconcile_last_update_timestamp_seconds"
            assert value(found, stamp, scope="default") == at.timestamp()


@pytest.mark.asyncio
async def test_reconcile_lag_is_a_histogram(store: StateStore, tmp_path: Path) -> None:
    engine = ReconcileMetrics(scope="default")
    async with client_for(create_app(store, settings_for(tmp_path))) as c:
        for lag, count in ((0.02, 1), (3.0, 2)):
            engine.observe_lag(lag)
            snapshot = engine.snapshot()
            await store.put("reconcile-metrics/default", snapshot, kind=kinds.RECONCILE_METRICS)
            found = await scrape(c)
            name = "statekit_reconcile_lag_seconds"
            assert value(found, f"{name}_count", scope="default") == count
            assert value(found, f"{name}_bucket", scope="default", le="+Inf") == count
            assert value(found, f"{name}_bucket", scope="default", le="0.05") == 1
            assert value(found, f"{name}_sum", scope="default") == pytest.approx(
                0.02 + (3.0 if count == 2 else 0)
            )


# -- a real server: WebSocket clients, JSON logs with the request id -------------------------------


@pytest.mark.asyncio
async def test_a_real_server_counts_ws_clients_and_logs_json_with_request_ids(
    tmp_path: Path, start_server: Callable[..., Any]
) -> None:
    url = f"sqlite:///{tmp_path}/served.db"
    env = {"STATEKIT_LOG_FORMAT": "json"}
    with start_server(url, tmp_path, api_key=KEY, env=env) as server:
        headers = {"X-API-Key": KEY}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as c:
            async with connect(f"{server.ws_url}?api_key={KEY}") as ws:
                await ws.send(json.dumps({"action": "subscribe", "topic": "states:*"}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
                connected = await scrape(c)
                body = {"state_id": "position/W", "state_type": "position", "data": {"q": 1}}
                assert (await c.post("/states", json=body)).status_code == 201
                assert json.loads(await ws.recv())["type"] == "change"
                changed = await scrape(c)
            for _ in range(100):  # the server sees the close a moment later
                gone = await scrape(c)
                if value(gone, "statekit_ws_clients") == 0:
                    break
                await asyncio.sleep(0.05)
            traced = await c.get("/states", headers={"X-Request-ID": "req-42"})
            assert traced.headers["X-Request-ID"] == "req-42"
            fresh = (await c.get("/states", headers={"X-Request-ID": "no spaces"})).headers
            assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", fresh["X-Request-ID"])
        assert value(connected, "statekit_ws_clients") == 1
        assert value(connected, "statekit_ws_subscriptions") == 1
        assert value(connected, "statekit_ws_watching") == 1
        for name in ("statekit_ws_changes_total", "statekit_ws_messages_sent_total"):
            assert value(changed, name) == value(connected, name) + 1, name
        assert value(gone, "statekit_ws_clients") == 0
        lines = [json.loads(line) for line in _log_lines(server.log) if line.startswith("{")]
    access = [line for line in lines if line["request_id"] == "req-42"]
    assert access, lines
    (line,) = access
    assert (line["logger"], line["route"], line["status"]) == ("statekit.access", "/states", 200)
    assert {"time", "level", "message", "duration_ms"} <= set(line)


def _log_lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines()
