"""Where a WebSocket subscription without ``since`` starts, on SQLite and PostgreSQL.

Nothing committed before the subscribe is delivered; everything committed after the
``subscribed`` reply is, once, in order. The hub's one shared watch runs behind the
commits (SQLite polls), which used to hand a new subscriber changes that were
committed before it subscribed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

RECEIVE_TIMEOUT = 30.0
"""Seconds to wait for a message that must come; only a hang reaches it."""


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT))
    return message


async def subscribe(ws: ClientConnection, topic: str) -> None:
    await ws.send(json.dumps({"action": "subscribe", "topic": topic}))
    assert await receive(ws) == {"type": "subscribed", "topic": topic}


async def post(http: httpx.AsyncClient, state_id: str, data: Any, kind: str = "p") -> int:
    response = await http.post(
        "/states", json={"state_id": state_id, "state_type": kind, "data": data}
    )
    assert response.status_code == 201, response.text
    version: int = response.json()["version"]
    return version


@asynccontextmanager
async def http_client(server: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as c:
        yield c


@pytest.mark.asyncio
@pytest.mark.parametrize("attempt", range(3))
async def test_changes_committed_before_the_subscribe_are_not_delivered(
    server: Any, sid: str, attempt: int
) -> None:
    async with http_client(server) as http, connect(server.ws_url) as ws:
        for i in range(3):
            await post(http, sid, {"i": i})  # versions 1-3, committed before the subscribe
        await subscribe(ws, f"keys:{sid}")
        await post(http, sid, {"i": 3})
        await post(http, sid, {"i": 4})
        got = [await receive(ws) for _ in range(2)]
    assert [(m["type"], m["version"], m["data"]) for m in got] == [
        ("change", 4, {"i": 3}),
        ("change", 5, {"i": 4}),
    ], attempt


@pytest.mark.asyncio
async def test_a_subscribe_amid_writes_gets_a_gapless_tail_from_its_start(
    server: Any, sid: str
) -> None:
    """Under a steady writer: the versions received start after the last write that
    completed before the subscribe, include every version written after the reply,
    and have no gap and no duplicate."""
    async with http_client(server) as http, connect(server.ws_url) as ws:
        completed = 0
        stop = asyncio.Event()

        async def writer() -> None:
            nonlocal completed
            while not stop.is_set():
                completed = await post(http, sid, {"n": completed + 1})

        writing = asyncio.create_task(writer())
        while completed < 5:
            await asyncio.sleep(0)
        before = completed  # a write that completed before the subscribe was sent
        await subscribe(ws, f"keys:{sid}")
        after = await post(http, sid, {"after": True})  # written after the reply
        stop.set()
        await writing
        last = await post(http, sid, {"last": True})
        versions: list[int] = []
        while not versions or versions[-1] < last:
            message = await receive(ws)
            assert message["type"] == "change", message
            versions.append(message["version"])
    assert versions[0] > before, (before, versions[:5])
    assert versions[0] <= after
    assert versions == list(range(versions[0], last + 1))


@pytest.mark.asyncio
async def test_many_subscribers_at_once_each_start_after_their_subscribe(
    server: Any, sid: str
) -> None:
    async with http_client(server) as http:
        await post(http, sid, {"old": True})
        sockets = [await connect(server.ws_url) for _ in range(6)]
        try:
            await asyncio.gather(*(subscribe(ws, f"keys:{sid}") for ws in sockets))
            version = await post(http, sid, {"new": True})
            firsts = await asyncio.gather(*(receive(ws) for ws in sockets))
        finally:
            for ws in sockets:
                await ws.close()
    assert [(m["version"], m["data"]) for m in firsts] == [(version, {"new": True})] * 6


@pytest.mark.asyncio
async def test_start_marks_never_reach_a_subscriber_or_a_listing(server: Any, sid: str) -> None:
    async with http_client(server) as http, connect(server.ws_url) as everything:
        await subscribe(everything, "states:*")
        async with connect(server.ws_url) as other:
            await subscribe(other, f"keys:{sid}")  # writes a start mark
        version = await post(http, sid, {"x": 1}, kind=f"k{sid}")
        first = await receive(everything)
        listed = (await http.get("/states", params={"prefix": "_sk/"})).status_code
    assert (first["state_id"], first["version"]) == (sid, version)
    assert listed == 422  # statekit's own keys are not listed
