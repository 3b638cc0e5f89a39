"""``GET /states/{state_id}``'s fast path answers exactly what the route answers.

A plain GET of a live key is served by :mod:`statekit.api.fastpath`; the same GET
with a query (``state_type`` of the value's own kind) goes through FastAPI's route.
The two must be the same response: status, headers (but the date) and bytes.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from .conftest import Served


def _same(fast: httpx.Response, routed: httpx.Response) -> None:
    assert fast.status_code == routed.status_code
    assert fast.content == routed.content
    drop = {"date", "x-request-id"}  # differ per request by design
    assert [(k, v) for k, v in fast.headers.items() if k not in drop] == [
        (k, v) for k, v in routed.headers.items() if k not in drop
    ]


def test_a_plain_get_is_the_routes_answer(client: httpx.Client, sid: str) -> None:
    values = {
        f"{sid}": {"qty": 1, "avg_price": 64250.5, "big": 2**70, "tiny": 1.5e-7, "e": 1e16},
        f"{sid}/a/b": [1, "two", None, True, {"n": -0.0}],
        f"{sid}/ü€😀": "text é",
        f"{sid}/sp ace%": 7,
    }
    for key, data in values.items():
        body = {"state_id": key, "state_type": "position", "data": data, "description": "why"}
        assert client.post("/states", json=body).status_code == 201
        path = "/states/" + quote(key, safe="/")
        fast = client.get(path)
        routed = client.get(path, params={"state_type": "position"})
        assert fast.status_code == 200, fast.text
        assert fast.json()["data"] == data
        assert fast.headers["etag"] == '"1"'
        _same(fast, routed)


def test_what_the_fast_path_leaves_to_the_routes(client: httpx.Client, sid: str) -> None:
    client.post("/states", json={"state_id": sid, "state_type": "t", "data": 1})
    client.post("/states", json={"state_id": sid, "state_type": "t", "data": 2})
    history = client.get(f"/states/{sid}/history")
    assert history.status_code == 200
    assert [item["data"] for item in history.json()["items"]] == [2, 1]
    missing = client.get(f"/states/{sid}-missing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert client.delete(f"/states/{sid}").status_code == 200
    assert client.get(f"/states/{sid}").status_code == 404  # a tombstone is no live value
    assert client.get("/states/_sk/ws/start").status_code == 404  # statekit's own keys


def test_the_api_key_is_checked_before_the_fast_path(keyed_server: Served, sid: str) -> None:
    with keyed_server.client() as client:
        body = {"state_id": sid, "state_type": "t", "data": 1}
        assert client.post("/states", json=body).status_code == 201
        assert client.get(f"/states/{sid}").status_code == 200
    with keyed_server.client(auth=False) as anonymous:
        assert anonymous.get(f"/states/{sid}").status_code == 401
