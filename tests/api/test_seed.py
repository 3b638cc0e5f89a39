"""Seed 003's REST and WebSocket examples, as written, against a real server.

The seed lists the endpoints with their bodies (``GET /health``, ``POST /states {...}``,
``GET /states/position_EURUSD?state_type=position``, ...) and a browser client that
subscribes to ``states:position``; docs/api.md gives them as curl commands, plus an
``If-Match`` update and a prefix listing. Each is sent here exactly as written: same
method, path, query, headers and body, no API key (the server binds to loopback,
where none is needed), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from statekit.testing import fresh_namespace

RECEIVE_TIMEOUT = 30.0
"""Seconds to wait for a WebSocket message that must come; only a hang reaches it."""

SEED_STATE = {
    "state_id": "position_EURUSD",
    "state_type": "position",
    "data": {"direction": "long", "quantity": 100000},
    "description": "New position opened",
}
SEED_SNAPSHOT = {"snapshot_id": "daily_snapshot_20250118", "description": "Daily trading snapshot"}


def test_seed_rest_examples(server: Any, client: httpx.Client) -> None:
    # Health check
    health = client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] in {"ok", "healthy"}

    # Create/Update state
    created = client.post("/states", json=SEED_STATE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["state_id"] == "position_EURUSD"
    assert body["state_type"] == "position"
    assert body["data"] == {"direction": "long", "quantity": 100000}
    assert created.headers["etag"] == f'"{body["version"]}"'

    # Get latest state
    latest = client.get("/states/position_EURUSD?state_type=position")
    assert latest.status_code == 200, latest.text
    assert latest.json()["data"] == {"direction": "long", "quantity": 100000}
    assert latest.json()["version"] == body["version"]
    assert latest.headers["etag"] == created.headers["etag"]

    # Get state history
    history = client.get("/states/position_EURUSD/history?limit=10")
    assert history.status_code == 200, history.text
    items = history.json()["items"]
    assert items[0]["version"] == body["version"]
    assert items[0]["data"] == {"direction": "long", "quantity": 100000}
    assert len(items) <= 10

    # Create snapshot
    snapshot = client.post("/snapshots", json=SEED_SNAPSHOT)
    assert snapshot.status_code == 201, snapshot.text
    assert snapshot.json()["snapshot_id"] == "daily_snapshot_20250118"
    listed = client.get("/snapshots").json()["items"]
    assert "daily_snapshot_20250118" in [s["snapshot_id"] for s in listed]

    # docs/api.md, after the seed's: update only if nobody wrote since version 1
    update = {
        "state_id": "position_EURUSD",
        "state_type": "position",
        "data": {"direction": "flat"},
    }
    updated = client.post("/states", json=update, headers={"If-Match": '"1"'})
    assert updated.status_code == 201, updated.text
    assert updated.headers["etag"] == '"2"'
    again = client.post("/states", json=update, headers={"If-Match": '"1"'})
    assert again.status_code == 412, again.text

    # docs/api.md: list by prefix (there with a key; this server needs none)
    page = client.get("/states?prefix=position")
    assert page.status_code == 200, page.text
    assert ["position_EURUSD", 2] in [[i["state_id"], i["version"]] for i in page.json()["items"]]


async def receive(ws: Any) -> dict[str, Any]:
    """The next message, parsed; fails the test on a hang."""
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT))
    return message


@pytest.mark.asyncio
async def test_seed_websocket_example(server: Any) -> None:
    # const ws = new WebSocket('ws://localhost:8000/ws'); ws.send(JSON.stringify({...}))
    state_id = f"position_{fresh_namespace('ws')}"
    async with (
        connect(server.ws_url) as ws,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        await ws.send(json.dumps({"action": "subscribe", "topic": "states:position"}))
        subscribed = await receive(ws)
        assert subscribed["type"] == "subscribed", subscribed
        assert subscribed.get("topic") == "states:position"

        for quantity in (1, 2):
            data = {"direction": "long", "quantity": quantity}
            body = {"state_id": state_id, "state_type": "position", "data": data}
            assert (await http.post("/states", json=body)).status_code == 201
        # Another topic's change is not pushed to this subscriber.
        other = {"state_id": f"order_{state_id}", "state_type": "order", "data": {"qty": 1}}
        assert (await http.post("/states", json=other)).status_code == 201
        mine = {"state_id": state_id, "state_type": "position", "data": {"quantity": 3}}
        assert (await http.post("/states", json=mine)).status_code == 201

        # ws.onmessage: one update per committed change, in order. (A position
        # committed by an earlier test just before the subscription may come first:
        # the feed promises every change after it, not none before.)
        received: list[dict[str, Any]] = []
        while len([u for u in received if u.get("state_id") == state_id]) < 3:
            received.append(await receive(ws))
    assert {u["type"] for u in received} == {"change"}
    assert {u["state_type"] for u in received} == {"position"}, "only the topic's changes"
    updates = [u for u in received if u["state_id"] == state_id]
    assert [u["version"] for u in updates] == [1, 2, 3]
    assert [u["data"].get("quantity") for u in updates] == [1, 2, 3]
