"""The WebSocket change feed (``WS /ws``): one store watch per process, fanned out.

:class:`ChangeHub` follows every commit with a single ``store.watch("")`` and hands
each change to the clients whose subscriptions match it. Every client has its own
bounded queue and its own sender task; the fan-out loop only ever does
``put_nowait``, so a slow client cannot slow the others: when its queue overflows
it is told (``lagging``) and disconnected (close code 4408). The protocol is in
docs/websocket.md; the messages and close codes are :mod:`statekit.api.ws_protocol`.

**Where a subscription starts.** The shared watch runs behind the commits by up to
a poll (SQLite polls every 50 ms), so a subscription registered at once would get
changes committed *before* it subscribed, still on their way. A subscription
without ``since`` therefore starts at a *start mark*: the hub appends a version of
its internal key :data:`START_KEY` after the subscribe arrives (one append serves
every subscribe waiting at that moment) and, until the watch delivers that
version, holds the subscription's changes. The watch delivers in commit order, so
what came before the mark was committed before it and is dropped; what comes after
it is delivered. The mark is committed between the subscribe and the
``subscribed`` reply, so nothing committed before the subscribe is sent and
nothing committed after the reply is missed, on every backend. The cost is one
small write per subscribe (or per burst of them); the key's old versions are pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from statekit.api.ws_protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_LAGGING,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHORIZED,
    Close,
    Frame,
    Refused,
    Topic,
    change_frame,
    decode_message,
    encode,
    parse_since,
    unknown_action,
)
from statekit.backend import Capability, Record, Write
from statekit.errors import StatekitError, ValidationError
from statekit.store import RESERVED_PREFIX, Retention, StateStore

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_LAGGING",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_UNAUTHORIZED",
    "START_KEY",
    "ChangeHub",
    "Topic",
]

log = logging.getLogger("statekit.api.ws")

START_KEY = RESERVED_PREFIX + "ws/start"
"""The internal key whose versions mark where new subscriptions start (module docstring)."""
START_KIND = "statekit.ws_start"
_PRUNE_EVERY = 64
"""Start marks between two prunes of :data:`START_KEY`'s history."""
_PAGE = 256
# What a socket operation raises once the client is gone (uvicorn raises
# ClientDisconnected, an OSError; Starlette raises WebSocketDisconnected once closed).
_GONE = (WebSocketDisconnect, WebSocketDisconnected, OSError)


class _Subscription:
    """One topic of one client.

    ``floors`` (keys resumed with ``since``): live changes of those keys at or below
    the floor were already replayed and are dropped. ``pending`` holds live changes
    of those keys while the replay runs, so they go out after it, in order.

    ``held`` (a subscription without ``since``, until it starts): its changes and the
    start marks, in commit order, until the watch delivers its own start mark
    (``mark``, the version of :data:`START_KEY`; None until that append returns).
    """

    __slots__ = ("floors", "held", "mark", "pending", "topic")

    def __init__(self, topic: Topic, since: dict[str, int] | None) -> None:
        self.topic = topic
        self.floors: dict[str, int] = dict(since or {})
        self.pending: deque[Record] | None = deque() if since else None
        self.held: deque[Record] | None = None if since else deque()
        self.mark: int | None = None


class _Client:
    """One connection: its subscriptions, its bounded queue, its receive and send loops."""

    def __init__(self, hub: ChangeHub, websocket: WebSocket) -> None:
        self.hub = hub
        self.websocket = websocket
        self.queue: asyncio.Queue[Frame | Close] = asyncio.Queue(hub.queue_size)
        self.subscriptions: dict[str, _Subscription] = {}
        self.closing = False
        self.last_change: tuple[str, str, int] | None = None

    # -- called by the fan-out loop: never awaits --------------------------------

    def offer(self, record: Record, frames: dict[str, Frame]) -> None:
        """Queue ``record`` once per matching subscription; drop the client on overflow.

        ``record`` may be a start mark (:data:`START_KEY`): it starts the subscriptions
        waiting for it and is never sent.
        """
        if self.closing:
            return
        mark = record.key == START_KEY
        for sub in self.subscriptions.values():
            if sub.held is not None:
                if mark and sub.mark is not None and record.version >= sub.mark:
                    sub.held = None  # everything held was committed before the mark
                elif mark or sub.topic.matches(record):
                    sub.held.append(record)
                    if len(sub.held) > self.hub.queue_size:
                        self.shut(Close(CLOSE_LAGGING, "lagging", lagging=True))
                        return
                continue
            if mark or not sub.topic.matches(record):
                continue
            floor = sub.floors.get(record.key)
            if floor is not None:
                if sub.pending is not None:
                    sub.pending.append(record)
                    if len(sub.pending) > self.hub.queue_size:
                        self.shut(Close(CLOSE_LAGGING, "lagging", lagging=True))
                        return
                    continue
                if record.version <= floor:
                    continue
            frame = frames.get(sub.topic.text)
            if frame is None:
                frame = frames[sub.topic.text] = change_frame(sub.topic.text, record)
            try:
                self.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.shut(Close(CLOSE_LAGGING, "lagging", lagging=True))
                return

    def start(self, sub: _Subscription, mark: int) -> None:
        """``sub``'s start mark is version ``mark``: start it there.

        When the watch already delivered the mark, the changes held after it go out
        now; else the watch starts it when the mark comes (:meth:`offer`). No await,
        so the fan-out loop cannot slip a change in between.
        """
        held = sub.held
        if held is None or self.closing:
            return
        sub.mark = mark
        for i, record in enumerate(held):
            if record.key == START_KEY and record.version >= mark:
                after = [r for r in list(held)[i + 1 :] if r.key != START_KEY]
                sub.held = None
                for change in after:
                    try:
                        self.queue.put_nowait(change_frame(sub.topic.text, change))
                    except asyncio.QueueFull:
                        self.shut(Close(CLOSE_LAGGING, "lagging", lagging=True))
                        return
                return

    def shut(self, close: Close) -> None:
        """Stop taking changes, drop what is queued and tell the sender to close."""
        if self.closing:
            return
        self.closing = True
        if close.lagging:
            self.hub._dropped += 1
        self.hub._clients.discard(self)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(close)

    # -- the connection's own tasks: they may wait ------------------------------

    async def put(self, frame: Frame) -> None:
        """Queue a reply or a replayed change, waiting for room (the client's own pace)."""
        if not self.closing:
            await self.queue.put(frame)

    async def send_loop(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, Close):
                await self._close(item)
                return
            try:
                await self.websocket.send_text(item.text)
            except _GONE:
                return
            if item.change is not None:
                self.last_change = item.change
            self.hub._sent += 1

    async def _close(self, close: Close) -> None:
        messages: list[str] = []
        if close.error is not None:
            messages.append(Refused("watch_failed", close.error).frame())
        if close.lagging:
            topic, key, version = self.last_change or (None, None, None)
            messages.append(
                encode(
                    {
                        "type": "lagging",
                        "topic": topic,
                        "state_id": key,
                        "dropped_after_version": version,
                        "max_queue": self.hub.queue_size,
                        "message": (
                            f"more than {self.hub.queue_size} messages were waiting for this "
                            "connection; it is closed and nothing after the change named here "
                            "was sent: reconnect and subscribe with since"
                        ),
                    }
                )
            )
        # A client that stopped reading may never take these: bounded, then given up.
        with contextlib.suppress(TimeoutError, *_GONE):
            async with asyncio.timeout(self.hub.close_timeout):
                for text in messages:
                    await self.websocket.send_text(text)
                await self.websocket.close(close.code, close.reason)

    async def receive_loop(self) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except _GONE:
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                raw = message.get("bytes") or b""
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    await self.put(Frame(Refused("bad_json", "messages are UTF-8 JSON").frame()))
                    continue
            try:
                await self.handle(text)
            except Refused as refused:
                await self.put(Frame(refused.frame()))

    async def handle(self, text: str) -> None:
        message = decode_message(text, self.hub.max_message_bytes)
        action = message.get("action")
        if action == "ping":
            await self.put(Frame(encode({"type": "pong"})))
        elif action == "subscribe":
            await self.subscribe(Topic.parse(message.get("topic")), message.get("since"))
        elif action == "unsubscribe":
            topic = Topic.parse(message.get("topic"))
            if self.subscriptions.pop(topic.text, None) is None:
                raise Refused("not_subscribed", "not subscribed to this topic", topic=topic.text)
            await self.put(Frame(encode({"type": "unsubscribed", "topic": topic.text})))
        else:
            raise unknown_action(action)

    async def subscribe(self, topic: Topic, since_value: object) -> None:
        hub = self.hub
        if hub._unavailable is not None:
            raise Refused("watch_unavailable", hub._unavailable, topic=topic.text)
        store = hub._store
        assert store is not None
        since = parse_since(topic, since_value, hub.max_since_keys)
        if since and Capability.HISTORY not in store.capabilities:
            raise Refused(
                "history_unavailable",
                f"the {store.backend.name} backend keeps no history, so it cannot resume "
                "from a version; subscribe without since and read the current states",
                topic=topic.text,
            )
        if topic.text not in self.subscriptions and (
            len(self.subscriptions) >= hub.max_subscriptions
        ):
            raise Refused(
                "too_many_subscriptions",
                f"a connection may hold {hub.max_subscriptions} subscriptions",
                topic=topic.text,
            )
        sub = _Subscription(topic, since)
        if since:
            # The reply is queued before the subscription exists, so it precedes its changes.
            await self.put(Frame(encode({"type": "subscribed", "topic": topic.text})))
            self.subscriptions[topic.text] = sub  # replaces an earlier one of the same topic
            await self._resume(store, sub, since)
            return
        # Held from now on; it starts at a mark committed after this point (module doc).
        self.subscriptions[topic.text] = sub
        try:
            mark = await hub.start_mark()
        except StatekitError:
            log.exception("writing a WebSocket subscription's start mark failed")
            if self.subscriptions.get(topic.text) is sub:
                del self.subscriptions[topic.text]
            raise Refused(
                "start_failed",
                "the store could not be written to fix where the subscription starts; "
                "nothing is subscribed: subscribe again",
                topic=topic.text,
            ) from None
        # Queued before start() lets any change out, so it precedes them.
        await self.put(Frame(encode({"type": "subscribed", "topic": topic.text})))
        self.start(sub, mark)

    async def _resume(self, store: StateStore, sub: _Subscription, since: dict[str, int]) -> None:
        """Replay history after each ``since`` version, then the live changes held meanwhile.

        The subscription was registered before history is read: a commit the watch
        delivers from now on is held in ``pending``; one it delivered before was
        committed before the read, so the read returns it. Hence no gap; the
        floors drop what both returned. Hence no duplicate.
        """
        topic = sub.topic.text
        replayed = 0
        try:
            for key, after in since.items():
                first = True
                while True:
                    page = await store.history(key, after=after, limit=_PAGE, newest_first=False)
                    if first and page and page[0].version > after + 1:
                        await self.put(
                            Frame(
                                Refused(
                                    "history_pruned",
                                    f"versions {after + 1} to {page[0].version - 1} of "
                                    f"{key!r} were pruned; replay starts at {page[0].version}",
                                    topic=topic,
                                    state_id=key,
                                    first_version=page[0].version,
                                ).frame()
                            )
                        )
                    first = False
                    for record in page:
                        if sub.topic.matches(record):
                            await self.put(change_frame(topic, record))
                            replayed += 1
                        sub.floors[key] = record.version
                    if len(page) < _PAGE:
                        break
                    after = page[-1].version
        except StatekitError:
            # The error text stays in the server log: it may name server internals.
            log.exception("replaying history for a WebSocket client failed")
            self.subscriptions.pop(topic, None)
            raise Refused(
                "replay_failed",
                "reading the history failed; the subscription is dropped: subscribe again",
                topic=topic,
            ) from None
        await self.put(Frame(encode({"type": "resumed", "topic": topic, "replayed": replayed})))
        pending = sub.pending
        assert pending is not None
        while pending:  # the fan-out loop may add more while we wait for room
            record = pending.popleft()
            if record.version > sub.floors[record.key]:
                sub.floors[record.key] = record.version
                await self.put(change_frame(topic, record))
        sub.pending = None  # no await since the last check: nothing is left behind


class ChangeHub:
    """Fans committed changes out to WebSocket clients (``WS /ws``, docs/websocket.md).

    :param queue_size: messages a client may have waiting; one more and it is dropped.
    :param max_subscriptions: topics one connection may hold.
    :param max_message_bytes: largest client message accepted.
    :param max_since_keys: keys one ``since`` may name.
    :param max_clients: connections served at once; more are closed with 1013.
    :param close_timeout: seconds given to a closing client to take its last messages.
    """

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        max_subscriptions: int = 32,
        max_message_bytes: int = 64 * 1024,
        max_since_keys: int = 1000,
        max_clients: int = 10_000,
        close_timeout: float = 5.0,
    ) -> None:
        for name, value in (
            ("queue_size", queue_size),
            ("max_subscriptions", max_subscriptions),
            ("max_message_bytes", max_message_bytes),
            ("max_since_keys", max_since_keys),
            ("max_clients", max_clients),
        ):
            if value < 1:
                raise ValidationError(f"ChangeHub {name} must be >= 1", reason=name)
        self.queue_size = queue_size
        self.max_subscriptions = max_subscriptions
        self.max_message_bytes = max_message_bytes
        self.max_since_keys = max_since_keys
        self.max_clients = max_clients
        self.close_timeout = close_timeout
        self._store: StateStore | None = None
        self._watch: AsyncIterator[Record] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._mark_lock = asyncio.Lock()
        self._next_mark: asyncio.Future[int] | None = None
        self._mark_writes: set[asyncio.Task[None]] = set()
        self._marks = 0
        self._clients: set[_Client] = set()
        self._unavailable: str | None = "the change feed is not started"
        self._dropped = 0
        self._sent = 0
        self._changes = 0

    async def start(self, store: StateStore) -> None:
        """Follow ``store`` (one watch for the whole process) and serve its changes.

        A store without the watch capability is accepted: clients are then told
        ``watch_unavailable`` when they subscribe.
        """
        if self._store is not None:
            raise RuntimeError("ChangeHub.start() was already called")
        self._store = store
        if Capability.WATCH not in store.capabilities:
            self._unavailable = (
                f"the {store.backend.name} backend cannot follow changes (no watch "
                "capability), so there is no live feed; poll GET /states instead"
            )
            return
        # The backend's own watch: the store's hides statekit's keys, and the hub needs
        # its start marks (it hides the rest of them itself).
        self._watch = await store.backend.watch("")
        self._unavailable = None
        self._pump = asyncio.create_task(self._run(self._watch), name="statekit-ws-fanout")

    async def start_mark(self) -> int:
        """The version of a start mark committed after this call began (module docstring).

        Calls that arrive while no mark is being written yet share the next one.
        """
        future = self._next_mark
        if future is None:
            future = self._next_mark = asyncio.get_running_loop().create_future()
            # Retrieved even when every caller went away meanwhile (no "never retrieved").
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            # A task of its own: a caller that goes away must not strand the others.
            task = asyncio.create_task(self._write_mark(future), name="statekit-ws-mark")
            self._mark_writes.add(task)
            task.add_done_callback(self._mark_writes.discard)
        return await asyncio.shield(future)

    async def _write_mark(self, future: asyncio.Future[int]) -> None:
        store = self._store
        assert store is not None
        async with self._mark_lock:  # one write at a time; later callers wait for the next
            if self._next_mark is future:
                self._next_mark = None  # from here, a new caller needs a later mark
            try:
                (record,) = await store.append_reserved([Write(START_KEY, {}, START_KIND)])
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                future.set_exception(exc)
                return
            future.set_result(record.version)
            self._marks += 1
            if self._marks % _PRUNE_EVERY == 0 and Capability.HISTORY in store.capabilities:
                with contextlib.suppress(StatekitError):  # old marks are only clutter
                    await store.prune(START_KEY, Retention(before_version=record.version))

    async def stop(self) -> None:
        """Stop following the store and close every connection with 1001."""
        if self._unavailable is None:
            self._unavailable = "the server is shutting down"
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        watch, self._watch = self._watch, None
        close = getattr(watch, "aclose", None)
        if close is not None:
            await close()
        for task in list(self._mark_writes):
            task.cancel()
        for client in list(self._clients):
            client.shut(Close(CLOSE_GOING_AWAY, "server shutting down"))

    async def _run(self, watch: AsyncIterator[Record]) -> None:
        try:
            async for record in watch:
                if record.key.startswith(RESERVED_PREFIX):
                    if record.key != START_KEY:
                        continue  # statekit's own keys never appear on the feed
                else:
                    self._changes += 1
                frames: dict[str, Frame] = {}  # one encoding per topic, shared by clients
                for client in list(self._clients):
                    client.offer(record, frames)
        except Exception:  # the feed is dead either way: say so to every client
            log.exception("the WebSocket change feed stopped")
            self._unavailable = "the change feed stopped (the server log says why)"
            for client in list(self._clients):
                client.shut(
                    Close(CLOSE_INTERNAL_ERROR, "change feed stopped", error=self._unavailable)
                )

    async def serve(
        self, websocket: WebSocket, *, authorized: bool, subprotocol: str | None = None
    ) -> None:
        """Run one connection until it closes.

        The handshake is always accepted (selecting ``subprotocol``, which must be one
        the client offered), so that a refused client sees why in the close code: 4401
        when not ``authorized``, 1013 when ``max_clients`` are connected.
        """
        try:
            await websocket.accept(subprotocol=subprotocol)
            if not authorized:
                await websocket.close(CLOSE_UNAUTHORIZED, "unauthorized: send a valid API key")
                return
            if len(self._clients) >= self.max_clients:
                await websocket.close(CLOSE_TRY_AGAIN_LATER, "too many connections")
                return
        except _GONE:
            return
        client = _Client(self, websocket)
        self._clients.add(client)
        sender = asyncio.create_task(client.send_loop(), name="statekit-ws-send")
        receiver = asyncio.create_task(client.receive_loop(), name="statekit-ws-receive")
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            client.closing = True
            self._clients.discard(client)
            for task in (sender, receiver):
                task.cancel()
            results = await asyncio.gather(sender, receiver, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("WebSocket connection failed", exc_info=result)

    def stats(self) -> dict[str, Any]:
        """Connections, drops and queue fill, for the stats endpoint."""
        sizes = [client.queue.qsize() for client in self._clients]
        return {
            "watching": self._unavailable is None,
            "clients": len(self._clients),
            "subscriptions": sum(len(c.subscriptions) for c in self._clients),
            "dropped_clients": self._dropped,
            "changes": self._changes,
            "messages_sent": self._sent,
            "max_queue": self.queue_size,
            "queued_total": sum(sizes),
            "queued_max": max(sizes, default=0),
        }
