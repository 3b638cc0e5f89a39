"""``WS /ws`` against a real server: fan-out, resume without gap or duplicate, slow consumers.

Each test subscribes to a topic only it writes to (``keys:<sid>`` or a state type of
its own), so the module's tests can share one server.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RECEIVE_TIMEOUT = 30.0
"""Seconds to wait for a message that must come; only a hang reaches it."""


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT))
    return message


async def subscribe(ws: ClientConnection, topic: str, **extra: Any) -> None:
    await ws.send(json.dumps({"action": "subscribe", "topic": topic, **extra}))
    reply = await receive(ws)
    assert reply == {"type": "subscribed", "topic": topic}, reply


async def changes(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` change messages (other message types fail the test)."""
    found = []
    while len(found) < count:
        message = await receive(ws)
        assert message["type"] == "change", message
        found.append(message)
    return found


async def post(http: httpx.AsyncClient, state_id: str, state_type: str, data: Any) -> int:
    body = {"state_id": state_id, "state_type": state_type, "data": data}
    response = await http.post("/states", json=body)
    assert response.status_code == 201, response.text
    version: int = response.json()["version"]
    return version


@asynccontextmanager
async def http_client(server: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as c:
        yield c


@pytest.mark.asyncio
async def test_every_subscriber_gets_every_change_in_order(server: Any, sid: str) -> None:
    kind = f"fanout_{sid}"
    async with http_client(server) as http:
        sockets = [await connect(server.ws_url) for _ in range(5)]
        try:
            for ws in sockets:
                await subscribe(ws, f"states:{kind}")
            for i in range(10):
                await post(http, f"{sid}/{i % 3}", kind, {"i": i})
            got = [await changes(ws, 10) for ws in sockets]
        finally:
            for ws in sockets:
                await ws.close()
    expected = [(f"{sid}/{i % 3}", i // 3 + 1, {"i": i}) for i in range(10)]
    for messages in got:
        assert [(m["state_id"], m["version"], m["data"]) for m in messages] == expected
        assert {m["topic"] for m in messages} == {f"states:{kind}"}


@pytest.mark.asyncio
async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(server: Any, sid: str) -> None:
    key, kind, total = f"{sid}/BTC-USD", f"resume_{sid}", 40
    async with http_client(server) as http:
        first = await connect(server.ws_url)
        await subscribe(first, f"states:{kind}")
        seen_first: list[int] = []
        writer_started = asyncio.Event()

        async def writer() -> None:
            writer_started.set()
            for i in range(total):
                await post(http, key, kind, {"qty": i})

        writing = asyncio.create_task(writer())
        await writer_started.wait()
        # Read a few, then drop the connection while the writer keeps committing.
        for message in await changes(first, 5):
            seen_first.append(message["version"])
        await first.close()

        async with connect(server.ws_url) as second:
            await second.send(
                json.dumps(
                    {
                        "action": "subscribe",
                        "topic": f"states:{kind}",
                        "since": {key: seen_first[-1]},
                    }
                )
            )
            assert (await receive(second))["type"] == "subscribed"
            seen_second: list[int] = []
            resumed = None
            # Until the replay has ended (``resumed``) and the last version has come:
            # when the writer finished first, ``resumed`` follows the last change.
            while resumed is None or not seen_second or seen_second[-1] < total:
                message = await receive(second)
                if message["type"] == "resumed":
                    resumed = message
                    continue
                assert message["type"] == "change", message
                assert message["state_id"] == key
                seen_second.append(message["version"])
            await writing
            # One more live change after the replay: still exactly once.
            await post(http, key, kind, {"qty": "last"})
            last = await changes(second, 1)
    assert resumed is not None and resumed["topic"] == f"states:{kind}"
    assert seen_first + seen_second == list(range(1, total + 1))
    assert last[0]["version"] == total + 1


@pytest.mark.asyncio
async def test_bad_messages_are_answered_not_fatal(server: Any) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send("{not json")
        assert (await receive(ws))["type"] == "error"
        await ws.send(json.dumps({"action": "subscribe", "topic": "nonsense"}))
        assert (await receive(ws))["code"] == "bad_topic"
        await ws.send(json.dumps({"action": "ping"}))
        assert (await receive(ws))["type"] == "pong"


async def drain(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Reads every message into ``into`` until the connection closes (ConnectionClosed)."""
    while True:
        into.append(await receive(ws))


async def _slow_socket(url: str, headers: dict[str, str]) -> ClientConnection:
    """A WebSocket whose tiny receive buffer backs up after a few messages unread."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    # max_queue=1: the client library stops reading the socket after one frame.
    return await connect(url, sock=sock, max_queue=1, additional_headers=headers)


@pytest.mark.asyncio
async def test_slow_consumer_is_dropped_while_others_continue(keyed_server: Any, sid: str) -> None:
    # The hub is the same whatever the backend: SQLite only (it takes >1000 commits).
    # The keyed server also shows the key passing in the handshake's headers.
    server = keyed_server
    kind = f"slow_{sid}"
    blob = "x" * 16384  # big messages: fewer fit in the socket buffers, fewer writes needed
    async with http_client(server) as http:
        slow = await _slow_socket(server.ws_url, server.headers)
        await subscribe(slow, f"states:{kind}")
        fast = await connect(server.ws_url, additional_headers=server.headers)
        await subscribe(fast, f"states:{kind}")
        received: list[int] = []

        async def read_fast() -> None:
            while True:
                message = await receive(fast)
                assert message["type"] == "change", message
                received.append(message["version"])

        reading = asyncio.create_task(read_fast())
        # The server queues 1000 messages per client at most (ChangeHub.queue_size):
        # write until it reports the slow client dropped.
        written = 0
        dropped = False
        while not dropped:
            await asyncio.gather(
                *(
                    post(http, f"{sid}/{w}", kind, {"blob": blob, "n": written + w})
                    for w in range(8)
                )
            )
            written += 8
            assert written < 20_000, "the slow client was never dropped"
            if written % 48 == 0:
                hub = (await http.get("/stats/ws")).json()
                dropped = hub["dropped_clients"] >= 1
        # The slow client reads what reached it at once (the server gives a dropped
        # client a few seconds to take its last messages): changes, `lagging`, 4408.
        tail: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            await drain(slow, tail)
        while len(received) < written:
            await asyncio.sleep(0.01)
            assert not reading.done(), reading
        reading.cancel()
        await fast.close()
    print(f"slow consumer dropped after {written} writes; it read {len(tail)} messages")
    assert len(received) == written, "the fast client got every change"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    assert tail[-1]["type"] == "lagging", tail[-1]
    assert {m["type"] for m in tail[:-1]} <= {"change"}
