"""``python -m statekit.bench api``: the REST API under load beside the FastAPI app a
user would write without statekit, and the WebSocket fan-out latency.

A real ``statekit serve`` (one uvicorn worker) runs in a process of its own on a free
loopback port, on a SQLite file in the scratch folder (WAL, ``synchronous=FULL``, the
defaults). The raw side, :data:`MINIMAL_APP`, runs in another process under uvicorn
with the same settings. The client is :mod:`statekit.bench.load` (pre-built requests
on keep-alive connections, so the client costs little next to the servers). Lines:

``get``
    ``GET /states/{id}`` of a small position from :data:`CONNECTIONS` connections at
    once, beside the minimal app answering the same body from a dict. ``ratio`` is
    the throughput of statekit over the minimal app's; ``statekit_p99_ms`` and
    ``raw_p99_ms`` are the request latencies' 99th percentiles over every round.
``post``
    ``POST /states`` from :data:`CONNECTIONS` connections (each answer waits for its
    fsync; concurrent requests share a group commit), beside the minimal app writing
    value, version and a history row with sqlite3 by hand (one commit per write).
    ``one_connection`` is statekit's POST from one connection at a time.
``ws_fanout``
    For each count in :data:`SUBSCRIBERS`, that many WebSocket clients subscribed to
    one topic; each of ``changes`` POSTs is awaited until every client received it.
    The latency is from the version's ``timestamp`` (taken by the server as it
    writes, so the commit's fsync is included; the server's clock is this machine's)
    to its receipt by a client, over all clients and changes. ``ratio`` is the p99 at
    the largest count over the p99 at the smallest. The clients share this process's
    event loop, so the figures include their turn-taking. The server's SQLite watch
    polls for commits every 50 ms, so a change waits 25 ms for it on average; the
    commits are spread over that period, as independent writers' would be.

Request counts are capped (:data:`REQUESTS`, :data:`ROUNDS`, :data:`FANOUT_CHANGES`)
so that the default run takes about a minute.
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
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from statekit.backend import JSON
from statekit.bench.harness import BenchConfig, Result, Timed, Workload, measure, sample_value
from statekit.bench.load import HttpConnection, WsClient, load, percentile
from statekit.errors import StatekitError

__all__ = [
    "CONNECTIONS",
    "FANOUT_CHANGES",
    "MINIMAL_APP",
    "REQUESTS",
    "ROUNDS",
    "SUBSCRIBERS",
    "bench_api",
    "serve",
    "serve_minimal",
]

REQUESTS = 2000
"""Requests per round at most (``--n`` lowers it)."""
CONNECTIONS = 16
"""Connections sending requests at once in ``get`` and ``post``."""
ROUNDS = 7
"""Rounds at most (``--rounds`` lowers it)."""
SUBSCRIBERS = (50, 500)
"""WebSocket clients in the ``ws_fanout`` line: its ratio compares the last with the first."""
FANOUT_CHANGES = 100
"""Changes pushed to every subscriber at most (``--n`` lowers it)."""
WATCH_POLL_SECONDS = 0.05
"""How often the server's SQLite watch looks for commits (the backend's default
``poll_interval``): a change waits for the next look, 25 ms on average."""
FANOUT_SLOT_SECONDS = 0.1
"""One change per slot in ``ws_fanout`` (at an offset inside it): longer than a fan-out."""
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


def serve(store_url: str, folder: Path) -> AbstractAsyncContextManager[str]:
    """``statekit serve --store store_url`` on a free loopback port; yields its base URL.

    Its output goes to ``folder/serve.log``; it is stopped with SIGTERM (SIGKILL after
    15 s) when the block ends.
    """
    port = _free_port()
    command = [sys.executable, "-m", "statekit.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--store", store_url]
    return _server(command, port, folder, "serve.log")


MINIMAL_APP = """
import json, sqlite3, time
from typing import Any
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
with open("minimal_states.json") as f:
    STATES = json.load(f)
con = sqlite3.connect("minimal.db", isolation_level=None)
con.execute("PRAGMA journal_mode = WAL")
con.execute("PRAGMA synchronous = FULL")
con.executescript(
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, version INTEGER, data TEXT);"
    "CREATE TABLE IF NOT EXISTS state_history (key TEXT, version INTEGER, kind TEXT, "
    "data TEXT, at REAL, PRIMARY KEY (key, version));"
)

class StateIn(BaseModel):
    state_id: str
    state_type: str
    data: Any

@app.get("/health")
async def health():
    return {"status": "ok"}

@app.get("/states/{state_id:path}")
async def get_state(state_id: str):
    return STATES[state_id]

@app.post("/states", status_code=201)
async def put_state(body: StateIn):
    data = json.dumps(body.data)
    con.execute("BEGIN IMMEDIATE")
    try:
        row = con.execute("SELECT version FROM state WHERE key = ?", (body.state_id,)).fetchone()
        version = row[0] + 1 if row else 1
        con.execute(
            "INSERT INTO state_history VALUES (?, ?, ?, ?, ?)",
            (body.state_id, version, body.state_type, data, time.time()),
        )
        con.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (body.state_id, version, data))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return {"state_id": body.state_id, "version": version}
"""
"""The raw side of ``get`` and ``post``: the FastAPI app a user writes without statekit.
GET answers a body kept in a dict; POST stores value, version and a history row with
hand-written sqlite3 (one connection, one fsync'd commit per write, WAL FULL)."""


def serve_minimal(folder: Path, states: dict[str, JSON]) -> AbstractAsyncContextManager[str]:
    """:data:`MINIMAL_APP` under uvicorn with ``statekit serve``'s settings; its base URL."""
    (folder / "minimal_app.py").write_text(MINIMAL_APP)
    (folder / "minimal_states.json").write_text(json.dumps(states))
    port = _free_port()
    run = (
        "import sys, uvicorn; sys.path.insert(0, '.'); import minimal_app; "
        f"uvicorn.run(minimal_app.app, host='127.0.0.1', port={port}, "
        "lifespan='off', server_header=False, ws_per_message_deflate=False)"
    )
    return _server([sys.executable, "-c", run], port, folder, "minimal.log")


@asynccontextmanager
async def _server(command: list[str], port: int, folder: Path, log_name: str) -> AsyncIterator[str]:
    import httpx

    log = folder / log_name
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
                    raise StatekitError(f"{command[1:4]} exited {process.returncode}: {tail}")
                try:
                    if (await probe.get(url + "/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise StatekitError(f"{command[1:4]} did not answer in {STARTUP_TIMEOUT} s")
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


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@dataclass
class _Http:
    """The connections to one server, and every latency of the rounds measured so far."""

    host: str
    port: int
    connections: list[HttpConnection]
    latencies: list[float] = field(default_factory=list)

    @classmethod
    async def open(cls, stack: AsyncExitStack, url: str, count: int) -> _Http:
        host, port = _address(url)
        connections = [await HttpConnection.open(host, port) for _ in range(count)]
        for connection in connections:
            stack.push_async_callback(connection.close)
        return cls(host, port, connections)

    def rounds(self, build: Callable[[], list[bytes]], expect: int, width: int = 0) -> Timed:
        """A round: the requests of ``build()`` over the first ``width`` connections (all)."""

        async def run() -> float:
            requests = build()
            result = await load(self.connections[: width or None], requests, expect)
            self.latencies += result.latencies
            return result.seconds

        return run

    def p99_ms(self) -> float:
        return round(percentile(self.latencies, 0.99) * 1000, 3)


async def bench_api(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """GET and POST at 16 connections beside a minimal FastAPI app; WS fan-out latency."""
    requests = min(config.n, REQUESTS)
    rounds = min(config.rounds, ROUNDS)
    keys = [f"bench/{i}" for i in range(config.keys)]
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve(f"sqlite:///{scratch / 'api.db'}", scratch))
        seed = await _Http.open(stack, url, 1)
        states: dict[str, JSON] = {}
        for i, key in enumerate(keys):  # both sides read and update existing heads
            await seed.connections[0].send(_post(seed.host, key, i))
            _, body = await seed.connections[0].send(
                HttpConnection.build("GET", f"/states/{key}", seed.host)
            )
            states[key] = json.loads(body)
        minimal = await stack.enter_async_context(serve_minimal(scratch, states))
        ours = await _Http.open(stack, url, CONNECTIONS)
        theirs = await _Http.open(stack, minimal, CONNECTIONS)
        for i, key in enumerate(keys):
            await theirs.connections[0].send(_post(theirs.host, key, i))
        detail: dict[str, JSON] = {
            "keys": config.keys,
            "connections": CONNECTIONS,
            "durability": "WAL synchronous=FULL",
            "server": "statekit serve, 1 uvicorn worker, SQLite",
            "raw": "a minimal FastAPI app under the same uvicorn settings: GET answers the "
            "same body from a dict, POST writes with hand-written sqlite3 (a commit per write)",
            "client": "statekit.bench.load: pre-built requests on keep-alive connections",
        }

        def gets(http: _Http) -> Callable[[], list[bytes]]:
            paths = [HttpConnection.build("GET", f"/states/{k}", http.host) for k in keys]
            return lambda: [paths[i % len(paths)] for i in range(requests)]

        counter = iter(range(len(keys), 1 << 62))

        def posts(http: _Http) -> Callable[[], list[bytes]]:
            def build() -> list[bytes]:
                values = [next(counter) for _ in range(requests)]
                return [_post(http.host, keys[i % len(keys)], i) for i in values]

            return build

        reads = (ours.rounds(gets(ours), 200), theirs.rounds(gets(theirs), 200))
        get = Workload("get", requests, *reads, detail=detail)
        result = await measure("api", get, rounds)
        yield {**result, "statekit_p99_ms": ours.p99_ms(), "raw_p99_ms": theirs.p99_ms()}
        ours.latencies, theirs.latencies = [], []
        post = Workload(
            "post",
            requests,
            ours.rounds(posts(ours), 201),
            theirs.rounds(posts(theirs), 201),
            {"one_connection": ours.rounds(posts(ours), 201, width=1)},
            detail,
        )
        result = await measure("api", post, rounds)
        yield {**result, "statekit_p99_ms": ours.p99_ms(), "raw_p99_ms": theirs.p99_ms()}
        changes = min(config.n, FANOUT_CHANGES)
        yield await asyncio.to_thread(_fanouts_on_own_loop, url, changes, SUBSCRIBERS, rounds)


def _fanouts_on_own_loop(url: str, changes: int, counts: Sequence[int], rounds: int) -> Result:
    """:func:`_fanouts` on an event loop of its own (uvloop's when installed, as the server's),
    on this thread: the clients' share of the latency is then as small as it gets."""
    from statekit.api.server import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_fanouts(url, changes, counts, rounds))


def _post(host: str, key: str, i: int) -> bytes:
    body = {"state_id": key, "state_type": STATE_TYPE, "data": _value(i)}
    return HttpConnection.build("POST", "/states", host, json.dumps(body).encode())


async def _fanouts(url: str, changes: int, counts: Sequence[int], rounds: int) -> Result:
    """The fan-out latency at each subscriber count in interleaved rounds; ``ratio`` is the
    median p99 of the largest count over the median p99 of the smallest."""
    per_round = max(1, changes // rounds)
    result: Result = {"backend": "api", "workload": "ws_fanout", "changes": per_round * rounds}
    async with AsyncExitStack() as stack:
        audiences = [
            await stack.enter_async_context(_Audience.open(url, count)) for count in counts
        ]
        host, port = _address(url)
        poster = await HttpConnection.open(host, port)
        stack.push_async_callback(poster.close)
        p99s: dict[int, list[float]] = {count: [] for count in counts}
        everything: dict[int, list[float]] = {count: [] for count in counts}
        for _ in range(rounds):
            for audience in audiences:
                latencies = await audience.round(poster, per_round)
                p99s[audience.count].append(percentile(latencies, 0.99))
                everything[audience.count] += latencies
    for count in counts:
        latencies = everything[count]
        result[f"messages_{count}"] = len(latencies)
        result[f"p50_ms_{count}"] = round(statistics.median(latencies), 3)
        result[f"p99_ms_{count}"] = round(statistics.median(p99s[count]), 3)
        result[f"max_ms_{count}"] = round(max(latencies), 3)
    low, high = (statistics.median(p99s[count]) for count in (counts[0], counts[-1]))
    result.update(
        {
            "subscribers": list(counts),
            "rounds": rounds,
            "ratio": round(high / low, 3),
            "ratio_is": f"median p99 at {counts[-1]} subscribers / at {counts[0]}",
            "from": "the version's timestamp (taken by the server as it commits) to receipt",
            "watch": f"SQLite, polled every {WATCH_POLL_SECONDS * 1000:g} ms",
            "client": "statekit.bench.load.WsClient, all on one event loop (uvloop if installed)",
            "python": platform.python_version(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return result


class _Audience:
    """``count`` WebSocket clients subscribed to a topic of their own."""

    def __init__(self, count: int, clients: list[WsClient]) -> None:
        self.count = count
        self.kind = f"bench_fanout_{count}"
        self.clients = clients
        self.version = 0
        self.latencies: list[float] = []
        self.arrived: dict[int, int] = {}
        self.everyone = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, count: int) -> AsyncIterator[_Audience]:
        host, port = _address(url)
        audience = cls(count, [])
        try:
            for _ in range(count):
                ws = await WsClient.connect(host, port)
                audience.clients.append(ws)
                ws.send_text(
                    json.dumps({"action": "subscribe", "topic": f"states:{audience.kind}"})
                )
                reply = json.loads(await ws.receive_text() or "{}")
                if reply.get("type") != "subscribed":
                    raise StatekitError(f"WS subscribe: {reply}")
            for ws in audience.clients:
                ws.on_text = audience._received
            yield audience
        finally:
            for ws in audience.clients:
                await ws.close()

    def _received(self, text: str) -> None:
        now = time.time()
        message = json.loads(text)
        if message.get("type") != "change":
            return
        committed = datetime.fromisoformat(message["timestamp"]).timestamp()
        self.latencies.append((now - committed) * 1000.0)
        version = message["version"]
        self.arrived[version] = self.arrived.get(version, 0) + 1
        if version == self.version and self.arrived[version] == self.count:
            self.everyone.set()

    async def round(self, poster: HttpConnection, changes: int) -> list[float]:
        """``changes`` POSTs, each awaited until every client received it; the latencies."""
        self.latencies = []
        host = poster.address[0]
        start = time.monotonic()
        for i in range(changes):
            # Commits on a schedule of their own, spread over the watch's polling
            # period as independent writers' would land: timed from the previous
            # delivery instead, they would keep in step with the polls (and a
            # slower fan-out would shift them to wait longer for the next poll).
            slot = start + i * FANOUT_SLOT_SECONDS + (i * 7 % 10) / 10 * WATCH_POLL_SECONDS
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            self.everyone.clear()
            self.version += 1
            body = {"state_id": f"bench/{self.kind}", "state_type": self.kind, "data": _value(i)}
            request = HttpConnection.build("POST", "/states", host, json.dumps(body).encode())
            status, answer = await poster.send(request)
            if status != 201 or json.loads(answer)["version"] != self.version:
                raise StatekitError(f"POST /states: {status} {answer[:300]!r}")
            await asyncio.wait_for(self.everyone.wait(), 60)
        return self.latencies
