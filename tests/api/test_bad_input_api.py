"""Bad input over HTTP and WebSocket: always a 4xx (or an ``error`` message) with the
documented body, never a 500 or a dropped connection, and nothing stored changes.

Runs against a real ``statekit serve`` on SQLite and on PostgreSQL (the ``server``
fixture). Bodies are sent as the exact JSON text a client would send: a lone
surrogate is the JSON escape ``"\\ud800"``, which Python's parser turns into one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

RECEIVE_TIMEOUT = 30.0

ErrorOf = Callable[[httpx.Response], dict[str, Any]]
JSON_BODY = {"Content-Type": "application/json"}


@pytest.fixture
def unchanged(client: httpx.Client, stored: Callable[[httpx.Client], Any]) -> Callable[[], Any]:
    """``with unchanged(): ...``: asserts the block changed nothing the server lists."""

    @contextmanager
    def check() -> Iterator[None]:
        before = stored(client)
        yield
        assert stored(client) == before, "a refused request changed what is stored"

    return check


def post_text(client: httpx.Client, text: str, **headers: str) -> httpx.Response:
    """POST /states with ``text`` as the body, byte for byte."""
    return client.post("/states", content=text.encode(), headers={**JSON_BODY, **headers})


def state(sid: str, **fields: Any) -> str:
    """A POST /states body as JSON text (non-ASCII written as \\u escapes, as json.dumps does)."""
    return json.dumps({"state_id": sid, "state_type": "position", "data": {"q": 1}, **fields})


@pytest.mark.parametrize(
    ("where", "fields", "echoed_key"),
    [
        ("data", {"data": {"note": "\ud800"}}, None),
        ("a dict key in data", {"data": {"\udc00": 1}}, None),
        ("deep in data", {"data": {"legs": [{"px": "1"}, {"px": "\udfff"}]}}, None),
        ("description", {"description": "opened \ud83d"}, None),
        ("user_id", {"user_id": "\udead"}, None),
        ("state_type", {"state_type": "pos\ud800"}, None),
        ("state_id", {"state_id": "pos/\ud800"}, "pos/\ud800"),
    ],
)
def test_a_lone_surrogate_is_a_422_whose_body_renders(
    client: httpx.Client,
    sid: str,
    where: str,
    fields: dict[str, Any],
    echoed_key: str | None,
    unchanged: Callable[[], Any],
    error: ErrorOf,
) -> None:
    with unchanged():
        response = post_text(client, state(sid, **fields))
        assert response.status_code == 422, (where, response.text)
        body = error(response)
        assert body["code"] == "validation_error"
        assert "surrogate" in body["message"] or "printable" in body["message"], body
        # The body is valid UTF-8 JSON; an echoed bad key reads back as exactly what was sent.
        assert body["key"] == (echoed_key or sid)
    assert client.get(f"/states/{sid}").status_code == 404


def test_the_path_of_a_bad_value_is_named(client: httpx.Client, sid: str, error: ErrorOf) -> None:
    response = post_text(client, state(sid, data={"legs": [{"px": "1"}, {"\udc80": 2}]}))
    assert response.status_code == 422
    assert error(response)["path"] == "$.legs[1].\\udc80"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ('{"a": ' + "9" * (4300 + 1) + "}", 400),  # Python's JSON parser refuses the number
        ("[" * 100_000 + "]" * 100_000, 400),  # and gives up on the depth
        ("[" * 500 + "]" * 500, 422),  # parsed, but deeper than a value may be
        ("[" * 202 + "]" * 202, 422),  # the innermost list is 201 levels down
    ],
    ids=["4301-digit-int", "100000-deep", "500-deep", "201-deep"],
)
def test_values_python_or_statekit_cannot_hold_are_4xx(
    client: httpx.Client,
    sid: str,
    text: str,
    status: int,
    unchanged: Callable[[], Any],
    error: ErrorOf,
) -> None:
    body = f'{{"state_id": "{sid}", "state_type": "position", "data": {text}}}'
    with unchanged():
        response = post_text(client, body)
        assert response.status_code == status, response.text[:300]
        found = error(response)
        assert len(found["message"]) < 1000, found["message"]
        if status == 400:
            assert found["code"] == "bad_json"
            assert "nested too deeply" in found["message"]


def test_the_largest_int_and_depth_are_stored(client: httpx.Client, sid: str) -> None:
    largest = "9" * 4300
    deep = "[" * 199 + "0" + "]" * 199  # one level is the object around it
    data = f'{{"n": {largest}, "d": {deep}}}'
    response = post_text(client, f'{{"state_id": "{sid}", "state_type": "p", "data": {data}}}')
    assert response.status_code == 201, response.text[:300]
    assert client.get(f"/states/{sid}").text.count("9") >= 4300


@pytest.mark.parametrize(
    "params",
    [
        {"before": "2054100832409510477824"},
        {"before": str(2**63)},
        {"before": "0"},
        {"before": "-1"},
        {"limit": "0"},
        {"limit": str(2**64)},
        {"before": "1e3"},
    ],
)
def test_history_bounds_outside_int64_are_422(
    client: httpx.Client, sid: str, params: dict[str, str], error: ErrorOf
) -> None:
    assert client.post("/states", content=state(sid), headers=JSON_BODY).status_code == 201
    for path in (f"/states/{sid}/history", "/states/0/history"):
        response = client.get(path, params=params)
        assert response.status_code == 422, response.text
        assert error(response)["code"] == "validation_error"
    largest = client.get(f"/states/{sid}/history", params={"before": str(2**63 - 1)})
    assert largest.status_code == 200 and [i["version"] for i in largest.json()["items"]] == [1]


@pytest.mark.parametrize(
    "tag",
    ['"²"'.encode("latin-1"), '"²"'.encode(), "²".encode("latin-1"), "²".encode(), b'"\xff"'],
    ids=["quoted-latin1", "quoted-utf8", "bare-latin1", "bare-utf8", "quoted-ff"],
)
def test_if_match_with_a_unicode_digit_is_400(
    client: httpx.Client, sid: str, tag: bytes, unchanged: Callable[[], Any], error: ErrorOf
) -> None:
    assert client.post("/states", content=state(sid), headers=JSON_BODY).status_code == 201
    with unchanged():
        for response in (
            client.post("/states", content=state(sid), headers={**JSON_BODY, "If-Match": tag}),  # type: ignore[dict-item]
            client.delete(f"/states/{sid}", headers={"If-Match": tag}),  # type: ignore[dict-item]
        ):
            assert response.status_code == 400, response.text
            assert error(response)["code"] == "bad_precondition"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/states", "GET, POST"),
        ("PUT", "/states", "GET, POST"),
        ("PATCH", "/states/{sid}", "GET, DELETE"),
        ("PUT", "/snapshots", "GET, POST"),
        ("DELETE", "/snapshots/x/restore", "GET, POST"),  # GET: snapshot "x/restore"
        ("POST", "/health", "GET"),
    ],
)
def test_405_lists_every_method_of_the_path_in_allow(
    client: httpx.Client, sid: str, method: str, path: str, allowed: str, error: ErrorOf
) -> None:
    response = client.request(method, path.format(sid=sid))
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert error(response)["code"] == "method_not_allowed"


# -- WebSocket -------------------------------------------------------------------------------


async def receive(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT))
    return message


@pytest.mark.asyncio
async def test_websocket_bad_input_gets_an_error_and_the_connection_stays(server: Any) -> None:
    async with connect(server.ws_url, max_size=None) as ws:
        await ws.send("[" * 10_000 + "]" * 10_000)  # under the 64 KiB message limit
        assert (await receive(ws))["code"] == "bad_json"
        await ws.send(json.dumps({"action": "subscribe", "topic": "keys:\ud800"}))
        refused = await receive(ws)
        assert (refused["code"], refused["topic"]) == ("bad_topic", "keys:\ud800")
        await ws.send(json.dumps({"action": "subscribe", "topic": "nope\udfff"}))
        assert (await receive(ws))["code"] == "bad_topic"
        await ws.send(json.dumps({"action": "subscribe", "topic": "states:\x00"}))
        assert (await receive(ws))["code"] == "bad_topic"
        since = {"action": "subscribe", "topic": "keys:x", "since": {"x/1": 2**63}}
        await ws.send(json.dumps(since))
        assert (await receive(ws))["code"] == "bad_since"
        await ws.send(json.dumps({"action": [[["deep"]]]}))
        assert (await receive(ws))["code"] == "unknown_action"
        await ws.send(json.dumps({"action": "ping"}))
        assert await receive(ws) == {"type": "pong"}
