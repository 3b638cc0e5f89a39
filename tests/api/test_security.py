"""Auth, CORS, body size, bad input: a clear 4xx body, and nothing stored changed.

Against a real ``statekit serve`` on SQLite with an API key and one allowed origin.
Every rejected request is wrapped in :func:`unchanged`, which lists what the server
stores before and after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

Listing = dict[str, tuple[str, int]]
ErrorOf = Callable[[httpx.Response], dict[str, Any]]


@pytest.fixture
def keyed(keyed_server: Any) -> httpx.Client:
    """A client that sends the right key."""
    client: httpx.Client = keyed_server.client()
    return client


@pytest.fixture
def anonymous(keyed_server: Any) -> httpx.Client:
    """A client that sends no key."""
    client: httpx.Client = keyed_server.client(auth=False)
    return client


@pytest.fixture
def unchanged(keyed: httpx.Client, stored: Callable[[httpx.Client], Listing]) -> Callable[[], Any]:
    """``with unchanged(): ...``: asserts the block changed nothing stored."""

    @contextmanager
    def check() -> Iterator[None]:
        before = stored(keyed)
        yield
        assert stored(keyed) == before, "a rejected request changed what is stored"

    return check


def body(state_id: str, data: Any = None) -> dict[str, Any]:
    return {"state_id": state_id, "state_type": "position", "data": data or {"qty": 1}}


def test_health_needs_no_key(anonymous: httpx.Client) -> None:
    response = anonymous.get("/health")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}],
    ids=["missing", "wrong", "wrong-bearer", "empty"],
)
def test_without_the_right_key_every_route_is_401(
    anonymous: httpx.Client,
    sid: str,
    headers: dict[str, str],
    unchanged: Callable[[], Any],
    error: ErrorOf,
) -> None:
    with unchanged():
        for method, path, payload in [
            ("POST", "/states", body(sid)),
            ("GET", f"/states/{sid}", None),
            ("GET", "/states", None),
            ("GET", f"/states/{sid}/history", None),
            ("DELETE", f"/states/{sid}", None),
            ("POST", "/snapshots", {"snapshot_id": sid}),
            ("GET", "/snapshots", None),
            ("GET", "/positions", None),
            ("GET", "/stats/locks", None),
        ]:
            response = anonymous.request(method, path, json=payload, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert error(response)["code"], (method, path)


def test_the_right_key_in_either_header_works(keyed_server: Any, sid: str) -> None:
    by_header = keyed_server.client(auth=False, headers={"X-API-Key": keyed_server.api_key})
    bearer = keyed_server.client(
        auth=False, headers={"Authorization": f"Bearer {keyed_server.api_key}"}
    )
    assert by_header.post("/states", json=body(sid)).status_code == 201
    assert bearer.get(f"/states/{sid}").status_code == 200


def test_cors_allows_only_the_configured_origin(
    anonymous: httpx.Client, keyed: httpx.Client, origins: tuple[str, str]
) -> None:
    allowed, denied = origins
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    ok = anonymous.options("/states", headers={"Origin": allowed, **preflight})
    assert ok.status_code == 200, ok.text
    assert ok.headers["access-control-allow-origin"] == allowed
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()

    refused = anonymous.options("/states", headers={"Origin": denied, **preflight})
    assert refused.headers.get("access-control-allow-origin") not in {denied, "*"}
    assert refused.status_code >= 400

    simple = keyed.get("/states", headers={"Origin": allowed})
    assert simple.headers["access-control-allow-origin"] == allowed
    other = keyed.get("/states", headers={"Origin": denied})
    assert "access-control-allow-origin" not in other.headers


def test_body_over_the_limit_is_413(
    keyed: httpx.Client, sid: str, unchanged: Callable[[], Any], error: ErrorOf
) -> None:
    limit = 64 * 1024  # keyed_server's api.max_body_bytes
    with unchanged():
        response = keyed.post("/states", json=body(sid, {"blob": "x" * limit}))
        assert response.status_code == 413, response.text[:200]
        assert error(response)["code"] == "payload_too_large"

        # No Content-Length: the limit holds on what arrives, not on what is announced.
        def chunks() -> Iterator[bytes]:
            yield b'{"state_id": "' + sid.encode() + b'", "state_type": "position", "data": "'
            for _ in range(8):
                yield b"x" * (limit // 4)
            yield b'"}'

        streamed = keyed.post(
            "/states", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413, streamed.text[:200]
        error(streamed)
    assert keyed.get(f"/states/{sid}").status_code == 404
    # Just under the limit is accepted.
    fits = keyed.post("/states", json=body(sid, {"blob": "x" * (limit - 200)}))
    assert fits.status_code == 201, fits.text[:200]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"state_id": "x", "state_type": "position", "data": {', b"\xff\xfe"],
    ids=["garbage", "truncated", "not-utf8"],
)
def test_bad_json_is_400(
    keyed: httpx.Client, content: bytes, unchanged: Callable[[], Any], error: ErrorOf
) -> None:
    with unchanged():
        response = keyed.post(
            "/states", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        error(response)


def test_empty_body_is_422(
    keyed: httpx.Client, unchanged: Callable[[], Any], error: ErrorOf
) -> None:
    with unchanged():
        response = keyed.post("/states", content=b"", headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert error(response)["code"] == "validation_error"


@pytest.mark.parametrize(
    "payload",
    [
        {"state_type": "position", "data": {}},
        {"state_id": "", "state_type": "position", "data": {}},
        {"state_id": "x", "data": {}},
        {"state_id": "x", "state_type": "position", "data": None},
        {"state_id": "x", "state_type": "position", "data": {}, "surprise": 1},
        [1, 2],
    ],
    ids=["no-id", "empty-id", "no-type", "null-data", "extra-field", "not-an-object"],
)
def test_invalid_bodies_are_4xx(
    keyed: httpx.Client, payload: Any, unchanged: Callable[[], Any], error: ErrorOf
) -> None:
    with unchanged():
        response = keyed.post("/states", json=payload)
        assert response.status_code in {400, 422}, response.text
        error(response)


def test_unknown_state_type_and_conflicts_change_nothing(
    keyed: httpx.Client, sid: str, unchanged: Callable[[], Any], error: ErrorOf
) -> None:
    assert keyed.post("/states", json=body(sid)).status_code == 201
    with unchanged():
        response = keyed.get(f"/states/{sid}", params={"state_type": "not_a_type"})
        assert response.status_code == 404
        error(response)
        conflict = keyed.post("/states", json=body(sid), headers={"If-Match": '"9"'})
        assert conflict.status_code == 412
        error(conflict)
        bad_etag = keyed.post("/states", json=body(sid), headers={"If-Match": "nine"})
        assert bad_etag.status_code in {400, 412}
        error(bad_etag)


@pytest.mark.asyncio
async def test_websocket_without_the_right_key_is_closed_4401(keyed_server: Any) -> None:
    async def subscribe(url: str, **options: Any) -> object:
        async with connect(url, **options) as ws:
            await ws.send(json.dumps({"action": "subscribe", "topic": "states:position"}))
            return json.loads(await ws.recv())

    for url, headers in [
        (keyed_server.ws_url, {}),
        (keyed_server.ws_url, {"X-API-Key": "wrong"}),
        (keyed_server.ws_url + "?api_key=wrong", {}),
    ]:
        with pytest.raises(ConnectionClosed) as closed:
            await subscribe(url, additional_headers=headers)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    # The right key, in a header or (for browsers) in the query string.
    reply = await subscribe(keyed_server.ws_url, additional_headers=keyed_server.headers)
    assert reply == {"type": "subscribed", "topic": "states:position"}
    reply = await subscribe(f"{keyed_server.ws_url}?api_key={keyed_server.api_key}")
    assert reply == {"type": "subscribed", "topic": "states:position"}


def test_no_secret_in_any_response_or_log(keyed_server: Any, keyed: httpx.Client) -> None:
    key = keyed_server.api_key
    for path in ("/health", "/openapi.json", "/stats/cache", "/stats/locks"):
        assert key not in keyed.get(path).text, path
    assert key not in keyed_server.output()
