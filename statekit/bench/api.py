"""``python -m statekit.bench api``: the REST API over HTTP beside the store in-process,
and the WebSocket fan-out latency.

A real ``statekit serve`` (one uvicorn worker) runs in a process of its own on a free
loopback port, on a SQLite file in the scratch folder (WAL, ``synchronous=FULL``, the
defaults). One keep-alive :class:`httpx.AsyncClient` talks to it. Three lines:

``get``
    ``GET /states/{id}`` of a small position (``statekit``) beside ``await store.get(key)``
    on a store opened in this process on a SQLite file of its own (``raw``).
    ``ratio`` is what HTTP, JSON and the API layer cost on a read.
``post``
    ``POST /states`` beside ``await store.put(key, value, kind=..., meta=...)``: the same
    durable write, each waiting for its fsync. Keys rotate over ``config.keys``.
``ws_fanout``
    ``subscribers`` WebSocket clients (100 by default) subscribed to one topic; each
    of ``changes`` POSTs is awaited until every client received it. The latency is
    from the version's ``timestamp`` (taken by the server as it writes, so the
    commit's fsync is included; the server's clock is this machine's) to its
    receipt by a client, over all clients and changes:
    ``p50_ms``, ``p99_ms``, ``max_ms``. The clients share this process's event loop,
    so the figures include their own turn-taking, as 100 real clients on one
    machine would. The server's SQLite watch polls for commits every 50 ms, so a
    change waits 25 ms for it on average; the commits are spread over that period,
    as independent writers' would be.

Request counts are capped (:data:`REQUESTS`, :data:`ROUNDS`, :data:`FANOUT_CHANGES`)
so that the default run takes well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import statekit
from statekit.backend import JSON
from statekit.backends.sqlite import SqliteBackend
from statekit.bench.harness import BenchConfig, Result, Timed, Workload, measure, sample_value
from statekit.errors import StatekitError

__all__ = ["FANOUT_CHANGES", "REQUESTS", "ROUNDS", "SUBSCRIBERS", "bench_api", "serve"]

REQUESTS = 500
"""Requests per round at most (``--n`` lowers it): each POST waits for its fsync."""
ROUNDS = 5
"""Rounds at most (``--rounds`` lowers it)."""
SUBSCRIBERS = 100
"""WebSocket clients in the ``ws_fanout`` line."""
FANOUT_CHANGES = 100
"""Changes pushed to every subscriber at most (``--n`` lowers it)."""
WATCH_POLL_SECONDS = 0.05
"""How often the server's SQLite watch looks for commits (the backend's default
``poll_interval``): a change waits for the next look, 25 ms on average."""
STARTUP_TIMEOUT = 60.0
"""Seconds the server has to answer ``GET /health``."""
STATE_TYPE = "position"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment() -> dict[str, str]:
    # The server runs on the defaults and the --store given: no key, no setting of
    # the caller's shell, .env or config.json (it runs in the scratch folder).
    return {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("STATEKIT_", "TRADING_STATE_"))
    }


@asynccontextmanager
async def serve(store_url: str, folder: Path) -> AsyncIterator[str]:
    """``statekit serve --store store_url`` on a free loopback port; yields its base URL.

    Its output goes to ``folder/serve.log``; it is stopped with SIGTERM (SIGKILL after
    15 s) when the block ends.
    """
    import httpx

    port = _free_port()
    log = folder / "serve.log"
    command = [
        sys.executable,
        "-m",
        "statekit.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--store",
        store_url,
    ]
    with open(log, "wb") as out:  # noqa: ASYNC230 - a local log file, opened once
        process = await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=subprocess.STDOUT, env=_environment(), cwd=folder
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0) as probe:
            while True:
                if process.returncode is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise StatekitError(f"statekit serve exited {process.returncode}: {tail}")
                try:
                    if (await probe.get(url + "/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise StatekitError(f"statekit serve did not answer in {STARTUP_TIMEOUT} s")
                await asyncio.sleep(0.05)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def _value(i: int) -> dict[str, JSON]:
    return sample_value(i)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_api(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """GET and POST through a real server beside the store in-process; WS fan-out latency."""
    import httpx

    requests = min(config.n, REQUESTS)
    rounds = min(config.rounds, ROUNDS)
    keys = [f"bench/{i}" for i in range(config.keys)]
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve(f"sqlite:///{scratch / 'api.db'}", scratch))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30.0))
        store = await stack.enter_async_context(
            await statekit.open(f"sqlite:///{scratch / 'raw.db'}")
        )
        backend = store.backend
        assert isinstance(backend, SqliteBackend)
        detail: dict[str, JSON] = {
            "keys": config.keys,
            "durability": f"WAL synchronous={backend.synchronous}",
            "server": "statekit serve, 1 uvicorn worker, SQLite",
            "client": "httpx.AsyncClient, keep-alive",
        }
        counter = 0

        async def api_put(key: str, value: JSON) -> None:
            body = {"state_id": key, "state_type": STATE_TYPE, "data": value}
            response = await http.post("/states", json=body)
            if response.status_code != 201:
                raise StatekitError(f"POST /states: {response.status_code} {response.text[:200]}")

        async def store_put(key: str, value: JSON) -> None:
            await store.put(key, value, kind=STATE_TYPE)

        async def api_get(key: str) -> None:
            response = await http.get(f"/states/{key}")
            if response.status_code != 200:
                raise StatekitError(f"GET /states/{key}: {response.status_code}")
            response.json()

        async def store_get(key: str) -> None:
            if await store.get(key) is None:
                raise StatekitError(f"store.get({key!r}) found nothing")

        for i, key in enumerate(keys):  # both sides read and update existing heads
            await api_put(key, _value(i))
            await store_put(key, _value(i))

        def reads(get: Callable[[str], Awaitable[None]]) -> Timed:
            async def run() -> float:
                started = time.perf_counter()
                for i in range(requests):
                    await get(keys[i % len(keys)])
                return time.perf_counter() - started

            return run

        def writes(put: Callable[[str, JSON], Awaitable[None]]) -> Timed:
            async def run() -> float:
                nonlocal counter
                start, counter = counter, counter + requests
                items = [(keys[i % len(keys)], _value(i)) for i in range(start, counter)]
                started = time.perf_counter()
                for key, value in items:
                    await put(key, value)
                return time.perf_counter() - started

            return run

        get = Workload("get", requests, reads(api_get), reads(store_get), detail=detail)
        yield await measure("api", get, rounds)
        post = Workload("post", requests, writes(api_put), writes(store_put), detail=detail)
        yield await measure("api", post, rounds)
        yield await _fanout(url, http, min(config.n, FANOUT_CHANGES), SUBSCRIBERS)


async def _fanout(url: str, http: Any, changes: int, subscribers: int) -> Result:
    """``changes`` POSTs, each awaited until all ``subscribers`` received it."""
    from websockets.asyncio.client import connect

    topic_kind = "bench_fanout"
    latencies: list[float] = []
    arrived: dict[int, int] = {}
    everyone = asyncio.Event()
    target = 0

    async def listen(ws: Any) -> None:
        async for text in ws:
            now = time.time()
            message = json.loads(text)
            if message.get("type") != "change":
                continue
            committed = datetime.fromisoformat(message["timestamp"]).timestamp()
            latencies.append((now - committed) * 1000.0)
            version = message["version"]
            arrived[version] = arrived.get(version, 0) + 1
            if version == target and arrived[version] == subscribers:
                everyone.set()

    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connect(url.replace("http", "ws", 1) + "/ws"))
            for _ in range(subscribers)
        ]
        for ws in sockets:
            await ws.send(json.dumps({"action": "subscribe", "topic": f"states:{topic_kind}"}))
            reply = json.loads(await ws.recv())
            if reply.get("type") != "subscribed":
                raise StatekitError(f"WS subscribe: {reply}")
        tasks = [asyncio.create_task(listen(ws)) for ws in sockets]
        try:
            for i in range(changes):
                # Spread the commits over the watch's polling period, as independent
                # writers' would land: back to back, each would wait a whole period.
                await asyncio.sleep((i * 7 % 10) / 10 * WATCH_POLL_SECONDS)
                everyone.clear()
                target = i + 1
                body = {"state_id": "bench/fanout", "state_type": topic_kind, "data": _value(i)}
                response = await http.post("/states", json=body)
                if response.status_code != 201 or response.json()["version"] != target:
                    raise StatekitError(f"POST /states: {response.status_code} {response.text}")
                await asyncio.wait_for(everyone.wait(), 60)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "backend": "api",
        "workload": "ws_fanout",
        "subscribers": subscribers,
        "changes": changes,
        "messages": len(latencies),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies), 3),
        "from": "the version's timestamp (taken by the server as it commits) to receipt",
        "watch": f"SQLite, polled every {WATCH_POLL_SECONDS * 1000:g} ms",
        "python": platform.python_version(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
