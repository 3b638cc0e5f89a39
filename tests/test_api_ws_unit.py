"""The WebSocket change feed (statekit.api.ws.ChangeHub) behind a real uvicorn on a free
port, with real ``websockets`` clients, over SQLite (docs/websocket.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, WebSocket
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import statekit
from statekit import StateStore
from statekit.api import ws as ws_module
from statekit.api.ws import ChangeHub
from statekit.backend import Capability, Record
from statekit.backends.memory import MemoryBackend

API_KEY = "k-123"

# Only a guard against a hung test: no assertion depends on how long anything takes.
GUARD = 30


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    url = f"sqlite:///{tmp_path / 'ws.db'}?poll_interval=0.005"
    async with await statekit.open(url, cache=False, mirrors=[], fallback="") as opened:
        yield opened


class SlowSockets:
    """ASGI wrapper: sends to connections opened with ``slow=1`` wait while ``open`` is clear.

    A client that stops reading should make the server's send block, but the loopback
    socket buffers of some kernels (gVisor's: no backpressure after 80 MB) absorb
    whatever a test can write; this blocks the same ``send`` deterministically.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or b"slow=1" not in scope["query_string"]:
            return await self.app(scope, receive, send)

        async def slow_send(message: Message) -> None:
            if message["type"] == "websocket.send":
                await self.open.wait()
            await send(message)

        return await self.app(scope, receive, slow_send)


@contextlib.asynccontextmanager
async def serving(
    store: StateStore, hub: ChangeHub, slow: SlowSockets | None = None
) -> AsyncIterator[str]:
    """A FastAPI app with ``WS /ws`` on a real uvicorn; yields the ws:// URL."""
    app = FastAPI()

    @app.websocket("/ws")
    async def feed(websocket: WebSocket) -> None:
        await hub.serve(websocket, authorized=websocket.query_params.get("key") == API_KEY)

    if slow is not None:
        slow.app = app
    await hub.start(store)
    server = uvicorn.Server(
        uvicorn.Config(slow or app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(GUARD):
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws?key={API_KEY}"
    finally:
        server.should_exit = True
        await task
        await hub.stop()


async def recv(client: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(GUARD):
        message = json.loads(await client.recv())
    assert isinstance(message, dict)
    return message


async def send(client: ClientConnection, message: Any) -> None:
    await client.send(message if isinstance(message, str) else json.dumps(message))


async def subscribe(client: ClientConnection, topic: str, **extra: Any) -> None:
    await send(client, {"action": "subscribe", "topic": topic, **extra})
    assert await recv(client) == {"type": "subscribed", "topic": topic}


async def changes_until(
    client: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Change messages up to and including the first for which ``done`` is true."""
    got: list[dict[str, Any]] = []
    while True:
        message = await recv(client)
        assert message["type"] == "change", message
        got.append(message)
        if done(message):
            return got


def is_(key: str, version: int = 1) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["state_id"] == key and m["version"] == version


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_subscribe_receives_each_committed_change(store: StateStore) -> None:
    hub = ChangeHub()
    async with serving(store, hub) as url, connect(url) as client:
        await subscribe(client, "states:position")
        assert hub.stats()["clients"] == 1
        assert hub.stats()["subscriptions"] == 1
        put = await store.put(
            "position/BTC", {"qty": "1.5"}, kind="position", meta={"note": "opened"}
        )
        await store.delete("position/BTC")
        first, second = await changes_until(client, is_("position/BTC", 2))
    assert first == {
        "type": "change",
        "topic": "states:position",
        "state_id": "position/BTC",
        "state_type": "position",
        "version": 1,
        "data": {"qty": "1.5"},
        "deleted": False,
        "timestamp": put.at.isoformat(),
        "description": "opened",
    }
    assert second["version"] == 2
    assert second["deleted"] is True
    assert second["data"] is None
    assert second["description"] is None


@pytest.mark.asyncio
async def test_topics_filter_by_state_type_and_key_prefix(store: StateStore) -> None:
    hub = ChangeHub()
    async with (
        serving(store, hub) as url,
        connect(url) as positions,
        connect(url) as orders,
        connect(url) as everything,
    ):
        await subscribe(positions, "states:position")
        await subscribe(orders, "keys:order/")
        await subscribe(everything, "states:*")
        await store.put("order/1", {"side": "buy"}, kind="order")
        await store.put("position/ETH", {"qty": "2"}, kind="position")
        await store.put("balance/USD", {"free": "10"}, kind="balance")
        # The last write matches all three topics: once it arrives, nothing else will.
        await store.put("order/zz", {"qty": "0"}, kind="position")
        last = is_("order/zz")
        got_positions = await changes_until(positions, last)
        got_orders = await changes_until(orders, last)
        got_everything = await changes_until(everything, last)
    assert [m["state_id"] for m in got_positions] == ["position/ETH", "order/zz"]
    assert {m["topic"] for m in got_positions} == {"states:position"}
    assert [m["state_id"] for m in got_orders] == ["order/1", "order/zz"]
    assert [m["state_id"] for m in got_everything] == [
        "order/1",
        "position/ETH",
        "balance/USD",
        "order/zz",
    ]


@pytest.mark.asyncio
async def test_each_matching_subscription_gets_its_copy_and_unsubscribe_stops_it(
    store: StateStore,
) -> None:
    hub = ChangeHub()
    async with serving(store, hub) as url, connect(url) as client:
        await subscribe(client, "states:position")
        await subscribe(client, "keys:position/")
        await subscribe(client, "keys:position/")  # again: still one subscription
        assert hub.stats()["subscriptions"] == 2
        await store.put("position/A", {"q": 1}, kind="position")
        got = [await recv(client), await recv(client)]
        assert sorted(m["topic"] for m in got) == ["keys:position/", "states:position"]
        assert {(m["state_id"], m["version"]) for m in got} == {("position/A", 1)}

        await send(client, {"action": "unsubscribe", "topic": "states:position"})
        assert await recv(client) == {"type": "unsubscribed", "topic": "states:position"}
        await store.put("position/A", {"q": 2}, kind="position")
        await store.put("position/B", {"q": 1}, kind="position")
        got = await changes_until(client, is_("position/B"))
    assert [(m["topic"], m["state_id"], m["version"]) for m in got] == [
        ("keys:position/", "position/A", 2),
        ("keys:position/", "position/B", 1),
    ]


@pytest.mark.asyncio
async def test_bad_messages_get_errors_and_the_connection_stays_open(store: StateStore) -> None:
    hub = ChangeHub(max_subscriptions=2, max_message_bytes=200, max_since_keys=2)

    async def error_code(client: ClientConnection, message: Any) -> str:
        await send(client, message)
        answer = await recv(client)
        assert answer["type"] == "error", answer
        assert isinstance(answer["message"], str)
        assert answer["message"]
        code = answer["code"]
        assert isinstance(code, str)
        return code

    async with serving(store, hub) as url, connect(url) as client:
        assert await error_code(client, "{not json") == "bad_json"
        assert await error_code(client, "[1, 2]") == "bad_message"
        assert await error_code(client, {"action": "dance"}) == "unknown_action"
        assert await error_code(client, {"topic": "states:*"}) == "unknown_action"
        for topic in ("positions", "states:", "orders:x", "", 7, None):
            bad = {"action": "subscribe", "topic": topic}
            assert await error_code(client, bad) == "bad_topic", topic
        assert await error_code(client, {"action": "ping", "pad": "x" * 300}) == (
            "message_too_large"
        )
        unknown = {"action": "unsubscribe", "topic": "states:order"}
        assert await error_code(client, unknown) == "not_subscribed"
        bad_since: list[object] = [[1], {"a": -1}, {"a": True}, {"a": "3"}, {"": 1}]
        for since in [*bad_since, {"a": 1, "b": 1, "c": 1}]:
            bad_sub: dict[str, object] = {
                "action": "subscribe",
                "topic": "states:*",
                "since": since,
            }
            assert await error_code(client, bad_sub) == "bad_since", since
        assert hub.stats()["subscriptions"] == 0
        await subscribe(client, "states:a")
        await subscribe(client, "states:b")
        too_many = {"action": "subscribe", "topic": "states:c"}
        assert await error_code(client, too_many) == "too_many_subscriptions"

        await send(client, {"action": "ping"})
        assert await recv(client) == {"type": "pong"}
        await client.send(b'{"action": "ping"}')  # a binary frame holding JSON works too
        assert await recv(client) == {"type": "pong"}
        await store.put("x", {"v": 1}, kind="b")
        (change,) = await changes_until(client, is_("x"))
    assert change["topic"] == "states:b"


@pytest.mark.asyncio
async def test_unauthorized_connection_is_closed_with_4401(store: StateStore) -> None:
    hub = ChangeHub()
    async with serving(store, hub) as url:
        async with connect(url.replace(API_KEY, "wrong")) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await recv(client)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
        assert hub.stats()["clients"] == 0


@pytest.mark.asyncio
async def test_too_many_clients_are_closed_with_1013(store: StateStore) -> None:
    hub = ChangeHub(max_clients=1)
    async with serving(store, hub) as url, connect(url) as first:
        await subscribe(first, "states:*")
        async with connect(url) as second:
            with pytest.raises(ConnectionClosed) as closed:
                await recv(second)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
        await send(first, {"action": "ping"})
        assert await recv(first) == {"type": "pong"}


class _NoWatchBackend(MemoryBackend):
    """A backend that cannot follow commits, like InfluxDB."""

    name = "nowatch"
    capabilities = MemoryBackend.capabilities - {Capability.WATCH}


@pytest.mark.asyncio
async def test_store_without_watch_answers_watch_unavailable() -> None:
    hub = ChangeHub()
    async with StateStore(_NoWatchBackend()) as store, serving(store, hub) as url:
        assert hub.stats()["watching"] is False
        async with connect(url) as client:
            await send(client, {"action": "subscribe", "topic": "states:position"})
            answer = await recv(client)
            assert answer["type"] == "error"
            assert answer["code"] == "watch_unavailable"
            assert answer["topic"] == "states:position"
            assert "nowatch" in answer["message"]
            await send(client, {"action": "ping"})
            assert await recv(client) == {"type": "pong"}


@pytest.mark.asyncio
async def test_resume_with_since_has_no_gap_and_no_duplicate_under_concurrent_writes(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_module, "_PAGE", 3)  # the replay pages through history
    hub = ChangeHub()
    keys = ["position/A", "position/B"]
    last = 120
    resumed_at = 40

    async def writer() -> None:
        for version in range(1, last + 1):
            for key in keys:
                await store.put(key, {"n": version}, kind="position")

    async with serving(store, hub) as url:
        async with connect(url) as first:
            await subscribe(first, "states:position")
            writing = asyncio.create_task(writer())
            seen: dict[str, int] = {}
            while len(seen) < 2 or min(seen.values()) < resumed_at:
                message = await recv(first)
                seen[message["state_id"]] = message["version"]
        # Writes go on while the client is away and while it resumes.
        async with connect(url) as second:
            await subscribe(second, "states:position", since=seen)
            got: dict[str, list[int]] = {key: [] for key in keys}
            live = False
            # The replay alone may reach ``last`` when the writer is quick, so the
            # loop also waits for the end of the replay.
            while not live or any(not got[k] or got[k][-1] < last for k in keys):
                message = await recv(second)
                if message["type"] == "resumed":
                    assert message["topic"] == "states:position"
                    assert not live
                    live = True
                    continue
                assert message["type"] == "change", message
                got[message["state_id"]].append(message["version"])
            await writing
    assert live
    for key in keys:
        assert got[key] == list(range(seen[key] + 1, last + 1)), key


@pytest.mark.asyncio
async def test_changes_committed_during_the_replay_follow_it_once_in_order(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: commits land while history is read, before and after the read."""
    hub = ChangeHub()
    for n in range(1, 4):
        await store.put("k", {"n": n}, kind="position")
    real_history = store.history
    calls = 0

    async def history(key: str, **options: Any) -> list[Record]:
        nonlocal calls
        calls += 1
        seen = hub.stats()["changes"]
        # v4 is committed and delivered to the hub before the read: held, then a duplicate.
        await store.put("k", {"n": 4}, kind="position")
        await wait_for(lambda: hub.stats()["changes"] == seen + 1)
        page = await real_history(key, **options)
        # v5 is committed after the read: held while replaying, sent after it.
        await store.put("k", {"n": 5}, kind="position")
        await wait_for(lambda: hub.stats()["changes"] == seen + 2)
        return page

    async with serving(store, hub) as url, connect(url) as client:
        await subscribe(client, "states:position")  # only to learn the hub is live
        monkeypatch.setattr(store, "history", history)
        await subscribe(client, "states:*", since={"k": 1})
        messages: list[dict[str, Any]] = []
        while not messages or messages[-1].get("version") != 5:
            message = await recv(client)
            if message.get("topic") == "states:*":
                messages.append(message)
    assert calls == 1
    assert [(m["type"], m.get("version")) for m in messages] == [
        ("change", 2),
        ("change", 3),
        ("change", 4),
        ("resumed", None),
        ("change", 5),
    ]
    assert messages[3]["replayed"] == 3


@pytest.mark.asyncio
async def test_resume_reports_pruned_history(store: StateStore) -> None:
    hub = ChangeHub()
    for n in range(1, 7):
        await store.put("k", {"n": n})
    await store.prune("k", statekit.Retention(keep_last=2))
    async with serving(store, hub) as url, connect(url) as client:
        await subscribe(client, "keys:k", since={"k": 1})
        pruned = await recv(client)
        assert pruned["type"] == "error"
        assert pruned["code"] == "history_pruned"
        assert pruned["state_id"] == "k"
        assert pruned["first_version"] == 5
        assert [(await recv(client))["version"] for _ in range(2)] == [5, 6]
        assert (await recv(client))["type"] == "resumed"


@pytest.mark.asyncio
async def test_slow_consumer_is_told_and_dropped_while_a_fast_one_gets_everything(
    store: StateStore,
) -> None:
    hub = ChangeHub(queue_size=4, close_timeout=GUARD)
    slow_sockets = SlowSockets(FastAPI())
    async with (
        serving(store, hub, slow_sockets) as url,
        connect(url) as fast,
        connect(url + "&slow=1") as slow,
    ):
        await subscribe(fast, "states:*")
        await subscribe(slow, "states:*")
        slow_sockets.open.clear()  # from now on the server's sends to `slow` block
        # Lockstep with the fast client: each write waits until the fast client has it,
        # so only the slow client's queue can fill.
        written = 0
        async with asyncio.timeout(GUARD):
            while hub.stats()["dropped_clients"] == 0:
                written += 1
                await store.put("pos", {"n": written}, kind="position")
                (change,) = await changes_until(fast, is_("pos", written))
                assert change["data"] == {"n": written}
        # One change being sent, then a full queue of 4: the next one overflowed it.
        assert written == 6
        assert hub.stats()["clients"] == 1
        await store.put("end", {"n": written})
        await changes_until(fast, is_("end"))  # the fast client is still served

        # The slow client's socket drains: what was being sent, then lagging, then 4408.
        slow_sockets.open.set()
        change = await recv(slow)
        assert (change["type"], change["state_id"], change["version"]) == ("change", "pos", 1)
        lagging = await recv(slow)
        assert isinstance(lagging.pop("message"), str)
        assert lagging == {
            "type": "lagging",
            "topic": "states:*",
            "state_id": "pos",
            "dropped_after_version": 1,
            "max_queue": 4,
        }
        with pytest.raises(ConnectionClosed) as closed:
            await recv(slow)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4408
        stats = hub.stats()
    assert stats["dropped_clients"] == 1


@pytest.mark.asyncio
async def test_stop_closes_clients_with_1001(store: StateStore) -> None:
    hub = ChangeHub()
    async with serving(store, hub) as url, connect(url) as client:
        await subscribe(client, "states:*")
        await hub.stop()
        with pytest.raises(ConnectionClosed) as closed:
            await recv(client)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert hub.stats()["watching"] is False


def test_hub_refuses_nonsense_limits() -> None:
    with pytest.raises(statekit.ValidationError):
        ChangeHub(queue_size=0)
