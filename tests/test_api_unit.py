"""The REST API in process (httpx.ASGITransport over a SQLite store): every status path.

Real uvicorn, WebSocket, PostgreSQL and schemathesis runs are in tests/api/.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

import statekit
from statekit.api import check_bind, create_app, is_loopback, serve
from statekit.cli import app as cli_app
from statekit.config import ApiSettings, Settings, load_settings
from statekit.errors import BackendUnavailable, ConfigError
from statekit.redact import RedactingFilter, Redactor
from statekit.store import StateStore
from statekit.trading import Balance, KeyedLocks, Order, OrderSide, Position, TradingState

KEY = "k3y-" + "s" * 20
PASSWORD = "pg-pa55word"


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


def settings_for(tmp_path: Path, **api: Any) -> Settings:
    return load_settings("", "", url=f"sqlite:///{tmp_path}/api.db", api=api)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await statekit.open(settings=settings_for(tmp_path))
    async with opened:
        yield opened


def client_for(store: StateStore, settings: Settings, **kwargs: Any) -> httpx.AsyncClient:
    app = create_app(store, settings, **kwargs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest_asyncio.fixture
async def client(store: StateStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store, settings_for(tmp_path)) as c:
        yield c


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


SEED = {
    "state_id": "position_EURUSD",
    "state_type": "position",
    "data": {"direction": "long", "quantity": 100000},
    "description": "New position opened",
}


async def dump(store: StateStore) -> list[tuple[str, int]]:
    """Every key and head version, reserved keys included: 'nothing changed' checks."""
    return [(r.key, r.version) async for r in store.backend.scan("", None)]


# -- the seed's endpoints ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_seed_examples(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["backend"] == "sqlite"

    created = await client.post("/states", json=SEED)
    assert created.status_code == 201
    body = created.json()
    assert {k: body[k] for k in ("state_id", "state_type", "version", "data", "description")} == {
        **{k: SEED[k] for k in ("state_id", "state_type", "data", "description")},
        "version": 1,
    }
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == "/states/position_EURUSD"

    got = await client.get("/states/position_EURUSD", params={"state_type": "position"})
    assert got.status_code == 200 and got.json() == body and got.headers["etag"] == '"1"'

    history = await client.get("/states/position_EURUSD/history", params={"limit": 10})
    assert history.status_code == 200
    assert history.json() == {"state_id": "position_EURUSD", "items": [body], "next_before": None}

    snap = await client.post(
        "/snapshots",
        json={"snapshot_id": "daily_snapshot_20250118", "description": "Daily trading snapshot"},
    )
    assert snap.status_code == 201
    assert snap.json()["snapshot_id"] == "daily_snapshot_20250118"
    assert snap.json()["keys"] == 1


@pytest.mark.asyncio
async def test_keys_with_slashes_and_history_routing(client: httpx.AsyncClient) -> None:
    for qty in (1, 2, 3):
        r = await client.post(
            "/states", json={"state_id": "position/EURUSD", "state_type": "p", "data": {"q": qty}}
        )
        assert r.status_code == 201
    got = await client.get("/states/position/EURUSD")
    assert got.json()["version"] == 3 and got.json()["state_id"] == "position/EURUSD"
    page = await client.get("/states/position/EURUSD/history", params={"limit": 2})
    assert [i["version"] for i in page.json()["items"]] == [3, 2]
    assert page.json()["next_before"] == 2
    rest = await client.get(
        "/states/position/EURUSD/history", params={"limit": 2, "before": page.json()["next_before"]}
    )
    assert [i["version"] for i in rest.json()["items"]] == [1]
    assert rest.json()["next_before"] is None


@pytest.mark.asyncio
async def test_not_found_paths(client: httpx.AsyncClient) -> None:
    error(await client.get("/states/nothing"), 404, "not_found")
    error(await client.get("/states/nothing/history"), 404, "not_found")
    error(await client.delete("/states/nothing"), 404, "not_found")
    error(await client.get("/states/_sk/store-id"), 404, "not_found")
    await client.post("/states", json=SEED)
    wrong = error(
        await client.get("/states/position_EURUSD", params={"state_type": "order"}),
        404,
        "not_found",
    )
    assert wrong["state_type"] == "position"
    error(await client.get("/snapshots/nope"), 404, "not_found")
    error(await client.post("/snapshots/nope/restore"), 404, "not_found")
    error(await client.get("/snapshots/nope/diff"), 404, "not_found")
    error(await client.get("/no/such/route"), 404, "not_found")
    allowed = error(await client.put("/states"), 405, "method_not_allowed")
    assert allowed["message"]


# -- optimistic concurrency ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_etag_if_match_flow(client: httpx.AsyncClient, store: StateStore) -> None:
    first = await client.post("/states", json=SEED, headers={"If-None-Match": "*"})
    assert first.status_code == 201
    etag = first.headers["etag"]
    again = await client.post("/states", json=SEED, headers={"If-None-Match": "*"})
    failed = error(again, 412, "precondition_failed")
    assert failed["actual"] == 1

    update = {**SEED, "data": {"direction": "long", "quantity": 5}}
    ok = await client.post("/states", json=update, headers={"If-Match": etag})
    assert ok.status_code == 201 and ok.headers["etag"] == '"2"'
    before = await dump(store)
    stale = error(
        await client.post("/states", json=update, headers={"If-Match": etag}),
        412,
        "precondition_failed",
    )
    assert (stale["expected"], stale["actual"]) == (1, 2)
    assert await dump(store) == before

    star = await client.post("/states", json=update, headers={"If-Match": "*"})
    assert star.status_code == 201 and star.json()["version"] == 3
    missing = {**SEED, "state_id": "absent"}
    error(
        await client.post("/states", json=missing, headers={"If-Match": "*"}),
        412,
        "precondition_failed",
    )
    error(
        await client.post("/states", json=missing, headers={"If-Match": '"abc"'}),
        412,
        "precondition_failed",
    )
    for bad in ("abc", 'W/"3"', '"1", "2"'):
        error(
            await client.post("/states", json=update, headers={"If-Match": bad}),
            400,
            "bad_precondition",
        )
    error(
        await client.post("/states", json=update, headers={"If-None-Match": '"3"'}),
        400,
        "bad_precondition",
    )
    assert (await client.get("/states/absent")).status_code == 404

    stale_delete = await client.delete("/states/position_EURUSD", headers={"If-Match": '"2"'})
    error(stale_delete, 412, "precondition_failed")
    deleted = await client.delete("/states/position_EURUSD", headers={"If-Match": '"3"'})
    assert deleted.status_code == 200
    assert deleted.json()["data"] is None and deleted.json()["version"] == 4
    assert deleted.headers["etag"] == '"4"'
    assert (await client.get("/states/position_EURUSD")).status_code == 404
    history = (await client.get("/states/position_EURUSD/history")).json()["items"]
    assert [i["version"] for i in history] == [4, 3, 2, 1]


@pytest.mark.asyncio
async def test_as_of(client: httpx.AsyncClient) -> None:
    first = (await client.post("/states", json=SEED)).json()
    await client.post("/states", json={**SEED, "data": {"quantity": 1}})
    then = await client.get("/states/position_EURUSD", params={"as_of": first["timestamp"]})
    assert then.status_code == 200 and then.json()["version"] == 1
    early = await client.get(
        "/states/position_EURUSD", params={"as_of": "2000-01-01T00:00:00+00:00"}
    )
    error(early, 404, "not_found")
    naive = await client.get("/states/position_EURUSD", params={"as_of": "2000-01-01T00:00:00"})
    error(naive, 422, "validation_error")
    error(
        await client.get("/states/position_EURUSD", params={"as_of": "yesterday"}),
        422,
        "validation_error",
    )


# -- bad input: 4xx, and nothing stored changes ----------------------------------------------


@pytest.mark.asyncio
async def test_bad_requests_change_nothing(client: httpx.AsyncClient, store: StateStore) -> None:
    await client.post("/states", json=SEED)
    before = await dump(store)
    json_type = {"content-type": "application/json"}
    error(await client.post("/states", content=b"{bad", headers=json_type), 400, "bad_json")
    error(await client.post("/states", content=b"", headers=json_type), 422, "validation_error")
    error(await client.post("/states", content=b"[1]", headers=json_type), 422, "validation_error")
    nan = b'{"state_id": "a", "state_type": "t", "data": NaN}'
    error(await client.post("/states", content=nan, headers=json_type), 422, "validation_error")
    missing = error(await client.post("/states", json={"state_id": "x"}), 422, "validation_error")
    assert {tuple(d["loc"]) for d in missing["details"]} == {
        ("body", "state_type"),
        ("body", "data"),
    }
    cases: list[dict[str, Any]] = [
        {**SEED, "data": None},
        {**SEED, "state_id": ""},
        {**SEED, "state_id": "_sk/mine"},
        {**SEED, "state_id": "bad\x00key"},
        {**SEED, "state_type": ""},
        {**SEED, "extra": 1},
        {**SEED, "data": {"deep": json.loads("[" * 300 + "]" * 300)}},
    ]
    for body in cases:
        error(await client.post("/states", json=body), 422, "validation_error")
    error(await client.get("/states", params={"limit": 0}), 422, "validation_error")
    error(await client.get("/states", params={"prefix": "_sk/"}), 422, "validation_error")
    error(await client.get("/states/x/history", params={"before": 0}), 422, "validation_error")
    error(await client.get("/orders", params={"status": "nope"}), 422, "validation_error")
    error(await client.post("/snapshots", json={"prefix": "_sk/"}), 422, "validation_error")
    error(await client.post("/snapshots", json={"snapshot_id": "a\x00"}), 422, "validation_error")
    assert await dump(store) == before


@pytest.mark.asyncio
async def test_unknown_trading_kind_is_validated(client: httpx.AsyncClient) -> None:
    # A registered kind's validator refuses a bad value: 422, with its reason.
    body = {"state_id": "order/1", "state_type": "trading.order", "data": {"id": "1"}}
    error(await client.post("/states", json=body), 422, "validation_error")


@pytest.mark.asyncio
async def test_body_limit(store: StateStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_body_bytes=1000)
    async with client_for(store, settings) as c:
        big = {**SEED, "data": "x" * 2000}
        too_large = error(await c.post("/states", json=big), 413, "payload_too_large")
        assert too_large["limit"] == 1000

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(4):
                yield b" " * 400

        chunked = await c.post(
            "/states", content=chunks(), headers={"content-type": "application/json"}
        )
        error(chunked, 413, "payload_too_large")
        assert (await c.post("/states", json=SEED)).status_code == 201
    assert await store.get("position_EURUSD") is not None


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_api_key(store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("statekit.api.guard.hmac.compare_digest", spy)
    async with client_for(store, settings_for(tmp_path, api_key=KEY)) as c:
        assert (await c.get("/health")).status_code == 200  # public
        # Public too since issue 17: a browser opens the docs, which hold no data.
        assert (await c.get("/docs")).status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            for method, path in (("GET", "/states"), ("POST", "/states"), ("GET", "/metrics")):
                r = await c.request(method, path, headers=headers, json=SEED)
                unauthorized = error(r, 401, "unauthorized")
                assert KEY not in r.text and "wrong" not in unauthorized["message"]
        assert await store.get("position_EURUSD") is None
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
            assert (await c.post("/states", json=SEED, headers=headers)).status_code == 201
            assert (await c.get("/openapi.json", headers=headers)).status_code == 200
    assert (b"wrong", KEY.encode()) in compared
    assert (KEY.encode(), KEY.encode()) in compared


@pytest.mark.asyncio
async def test_openapi_documents_every_status(store: StateStore, tmp_path: Path) -> None:
    async with client_for(store, settings_for(tmp_path, api_key=KEY)) as c:
        schema = (await c.get("/openapi.json", headers={"X-API-Key": KEY})).json()
    assert "X-API-Key" in json.dumps(schema["components"]["securitySchemes"])
    put = schema["paths"]["/states"]["post"]["responses"]
    assert {"201", "400", "401", "409", "412", "413", "422", "501", "503"} <= set(put)
    paths = schema["paths"]
    for path in ("/states/{state_id}", "/states/{state_id}/history", "/snapshots/{snapshot_id}"):
        assert "404" in next(iter(paths[path].values()))["responses"]
    assert "503" in paths["/health"]["get"]["responses"]
    assert "401" not in paths["/health"]["get"]["responses"]


# -- CORS ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cors_only_for_configured_origins(store: StateStore, tmp_path: Path) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    async with client_for(store, settings_for(tmp_path)) as closed:
        r = await closed.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await closed.options("/states", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in r.headers and r.status_code >= 400
    settings = settings_for(tmp_path, cors_origins=["https://dash.example"])
    async with client_for(store, settings) as c:
        ok = await c.get("/health", headers={"Origin": "https://dash.example"})
        assert ok.headers["access-control-allow-origin"] == "https://dash.example"
        allowed = await c.options(
            "/states",
            headers={
                "Origin": "https://dash.example",
                **preflight,
                "Access-Control-Request-Headers": "x-api-key, if-match",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
        denied = await c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in denied.headers
        refused = await c.options(
            "/states", headers={"Origin": "https://evil.example", **preflight}
        )
        error(refused, 400, "cors_refused")


# -- lists, snapshots, trading views, stats -------------------------------------------------


@pytest.mark.asyncio
async def test_list_paging(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.post("/states", json={"state_id": f"a/{i}", "state_type": "t", "data": i})
    await client.post("/states", json={"state_id": "b/0", "state_type": "u", "data": 0})
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"prefix": "a/", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/states", params=params)).json()
        seen += [i["state_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"a/{i}" for i in range(5)]
    kinds = (await client.get("/states", params={"state_type": "u"})).json()
    assert [i["state_id"] for i in kinds["items"]] == ["b/0"] and kinds["next_cursor"] is None


@pytest.mark.asyncio
async def test_snapshot_list_get_diff_restore(client: httpx.AsyncClient) -> None:
    await client.post("/states", json={"state_id": "p/a", "state_type": "t", "data": 1})
    snap = await client.post("/snapshots", json={"snapshot_id": "s1", "prefix": "p/"})
    assert snap.status_code == 201
    conflict = error(await client.post("/snapshots", json={"snapshot_id": "s1"}), 409, "conflict")
    assert conflict["snapshot_id"] == "s1"
    generated = await client.post("/snapshots")
    assert generated.status_code == 201 and generated.json()["snapshot_id"]
    await client.post("/states", json={"state_id": "p/a", "state_type": "t", "data": 2})
    await client.post("/states", json={"state_id": "p/b", "state_type": "t", "data": 3})
    listed = (await client.get("/snapshots")).json()["items"]
    assert listed[0]["snapshot_id"] == "s1"
    detail = (await client.get("/snapshots/s1")).json()
    assert detail["states"] == {"p/a": 1} and detail["prefix"] == "p/"
    diff = (await client.get("/snapshots/s1/diff")).json()
    assert diff["added"] == {"p/b": 3}
    assert diff["changed"] == {"p/a": {"before": 1, "after": 2}}
    error(await client.get("/snapshots/s1/diff", params={"against": "nope"}), 404, "not_found")
    restored = await client.post("/snapshots/s1/restore")
    assert restored.status_code == 200 and restored.json() == {"snapshot_id": "s1", "changed": 2}
    assert (await client.get("/states/p/b")).status_code == 404
    assert (await client.get("/states/p/a")).json()["data"] == 1


@pytest.mark.asyncio
async def test_trading_views(client: httpx.AsyncClient, store: StateStore) -> None:
    trading = TradingState(store)
    await trading.positions.save(Position(symbol="EURUSD", amount=Decimal("100000.10")))
    order = Order(id="o1", symbol="EURUSD", side=OrderSide.BUY, amount=Decimal(1), price=Decimal(2))
    await trading.orders.save(order)
    await trading.balances.save(Balance(asset="USD", free=Decimal("10.5")))
    # A user's own value under position/ is not a position; a broken one is reported.
    await client.post("/states", json={"state_id": "position/x", "state_type": "mine", "data": 1})
    await store.backend.append(
        [statekit.Write("position/BAD", {"amount": "x"}, "trading.position")],
        datetime.now(UTC),
    )
    positions = (await client.get("/positions")).json()
    assert positions["positions"] == {"EURUSD": {"symbol": "EURUSD", "amount": "100000.10"}}
    assert positions["unreadable"] == ["position/BAD"]
    orders = (await client.get("/orders")).json()["orders"]
    assert orders["o1"]["price"] == "2" and orders["o1"]["status"] == "new"
    assert (await client.get("/orders", params={"status": "filled"})).json()["orders"] == {}
    balances = (await client.get("/balances")).json()["balances"]
    assert balances["USD"]["free"] == "10.5"


@pytest.mark.asyncio
async def test_stats(store: StateStore, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with client_for(store, settings) as c:
        assert (await c.get("/stats/locks")).json() == {}
        assert (await c.get("/stats/cache")).json() == {"cache": None, "shared_cache": None}
        assert (await c.get("/stats/ws")).json()["clients"] == 0
    locks = KeyedLocks()
    async with locks.hold("position/EURUSD"):
        pass
    async with client_for(store, settings, locks=locks) as c:
        stats = (await c.get("/stats/locks")).json()
        assert stats["position/EURUSD"]["acquisitions"] == 1
    cached = await statekit.open(f"sqlite:///{tmp_path}/c.db", cache=True)
    async with cached, client_for(cached, settings) as c:
        await c.post("/states", json=SEED)
        await c.get("/states/position_EURUSD")
        cache = (await c.get("/stats/cache")).json()["cache"]
        assert cache["size"] >= 1


# -- failures of the store -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_backend_down_is_503_with_retry_after(
    store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_url = f"postgresql://bot:{PASSWORD}@db:5432/s"

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable(f"cannot reach {secret_url}", backend="postgresql")

    monkeypatch.setattr(store.backend, "health", down)
    monkeypatch.setattr(store.backend, "latest", down)
    settings = load_settings("", "", url=secret_url)
    async with client_for(store, settings) as c:
        health = await c.get("/health")
        assert health.status_code == 503 and health.headers["retry-after"] == "1"
        assert health.json()["status"] == "unavailable"
        assert health.json()["error"]["code"] == "backend_unavailable"
        got = await c.get("/states/x")
        error(got, 503, "backend_unavailable")
        assert got.headers["retry-after"] == "1"
        for r in (health, got):
            assert PASSWORD not in r.text and "***" in r.text


@pytest.mark.asyncio
async def test_missing_capability_is_501(tmp_path: Path) -> None:
    store = await statekit.open("memory://")
    async with store, client_for(store, settings_for(tmp_path)) as c:
        store.backend.capabilities = frozenset()  # type: ignore[misc]
        r = await c.post("/states", json=SEED, headers={"If-Match": '"1"'})
        error(r, 501, "not_supported")
        error(await c.get("/states/x/history"), 501, "not_supported")


# -- secrets ---------------------------------------------------------------------------------


def test_redactor_hides_key_password_and_query_key() -> None:
    redactor = Redactor([KEY], [f"postgresql://u:{PASSWORD}@h/db"])
    text = f"GET /ws?api_key={KEY}&x=1 postgresql://u:{PASSWORD}@h/db {PASSWORD}"
    shown = redactor.text(text)
    assert KEY not in shown and PASSWORD not in shown
    assert "api_key=***" in shown
    assert redactor.text("/ws?api_key=unknown") == "/ws?api_key=***"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s "%s"', ("1.2.3.4", f"/ws?api_key={KEY}"), None
    )
    RedactingFilter(redactor).filter(record)
    assert KEY not in record.getMessage()


# -- serving ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.1.2.3", True)],
        *[("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.com", False)],
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_public_host_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="without an API key"):
        check_bind(ApiSettings(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="without an API key"):
        check_bind(ApiSettings(host="0.0.0.0", api_key=""))  # type: ignore[arg-type]
    check_bind(ApiSettings(host="0.0.0.0", api_key=KEY))  # type: ignore[arg-type]
    check_bind(ApiSettings())


@pytest.mark.asyncio
async def test_serve_listens_and_stops_on_cancel(tmp_path: Path) -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    settings = settings_for(tmp_path)
    task = asyncio.create_task(serve(settings, port=0, ready=ready.set_result))
    url = await asyncio.wait_for(ready, 30)
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.post("/states", json=SEED)).status_code == 201
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as c:
            await c.get("/health")
    # The store was closed and its data kept.
    reopened = await statekit.open(settings=settings)
    async with reopened:
        assert (await reopened.get("position_EURUSD")) is not None


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.asyncio
async def test_serve_refuses_a_busy_port_and_a_public_host(tmp_path: Path, busy_port: int) -> None:
    with pytest.raises(ConfigError, match=r"cannot serve on 127\.0\.0\.1"):
        await serve(settings_for(tmp_path), port=busy_port)
    with pytest.raises(ConfigError, match="without an API key"):
        await serve(settings_for(tmp_path), host="0.0.0.0", port=0)


def test_cli_serve_refuses_public_host_without_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["serve", "--host", "0.0.0.0", "--store", f"sqlite:///{tmp_path}/x.db"]
    )
    assert result.exit_code == 1
    assert "error: refusing to serve the API on 0.0.0.0" in result.output


@pytest.mark.asyncio
async def test_health_and_metrics_say_degraded_while_the_fallback_journal_takes_writes(
    tmp_path: Path,
) -> None:
    """A primary nobody answers for (port 1): the store opens on its journal, /health is
    200 ``degraded`` and /metrics exports the journal's figures."""
    pytest.importorskip("statekit_postgres")
    settings = settings_for(tmp_path)
    journal = str(tmp_path / "fb.db")
    store = await statekit.open(
        "postgresql://trader@127.0.0.1:1/state", settings=settings, fallback=journal
    )
    async with store, client_for(store, settings) as c:
        await store.put("position/EURUSD", {"qty": 1})
        response = await c.get("/health")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "degraded"
        assert "unavailable" in body["degraded"]
        text = (await c.get("/metrics")).text
        assert "statekit_fallback_primary_up 0" in text
        assert "statekit_fallback_pending 1.0" in text
        assert "statekit_fallback_journaled_total 1.0" in text
