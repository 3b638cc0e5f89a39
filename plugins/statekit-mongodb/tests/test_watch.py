"""watch resumes after a lost connection and a server restart: its change stream
(with the resume token), and the polling watch (``watch=poll``, from its number)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from statekit_mongodb import MongoBackend
from statekit_mongodb.options import with_namespace

from statekit.backend import Capability, Record, Write
from statekit.errors import BackendUnavailable
from statekit.testing import server_control

Opener = Callable[..., Awaitable[MongoBackend]]


class Proxy:
    """A TCP forwarder whose connections the test can cut, all at once."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _writer(backend: MongoBackend, count: int, done: list[Record]) -> None:
    """Commits ``count`` versions of ``w/n``, retrying while the server is away."""
    while len(done) < count:
        try:
            done.extend(await backend.append([Write("w/n", len(done))], datetime.now(UTC)))
        except BackendUnavailable:
            await asyncio.sleep(0.1)


async def _follow(it: AsyncIterator[Record], count: int, within: float) -> list[Record]:
    got: list[Record] = []

    async def take() -> None:
        async for record in it:
            got.append(record)
            if len(got) == count:
                return

    await asyncio.wait_for(take(), within)
    return got


MODES = pytest.mark.parametrize("mode", ["", "&watch=poll"], ids=["changestream", "poll"])


@pytest.mark.asyncio
@MODES
async def test_watch_resumes_after_its_connection_is_cut(
    open_backend: Opener, secantus_url: str, mode: str
) -> None:
    secantus_url += mode
    parts = urlsplit(secantus_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 27017)
    port = await proxy.start()
    try:
        via_proxy = secantus_url.replace(parts.netloc, f"127.0.0.1:{port}")
        direct = await open_backend("watchcut", secantus_url)
        watcher = await MongoBackend.open(with_namespace(via_proxy, direct.namespace))
        try:
            it = await watcher.watch("w/")
            done: list[Record] = []
            task = asyncio.create_task(_writer(direct, 30, done))
            got = await _follow(it, 5, 20)
            for _ in range(3):
                proxy.cut()
                await asyncio.sleep(0.2)
            await task
            stored = await direct.read("w/n")
            got += await _follow(it, len(stored) - len(got), 30)
            assert got == stored and {r.version for r in done} <= {r.version for r in got}
            # PyMongo resumes a cut stream once by itself; MongoWatch resumes after that.
            await it.aclose()  # type: ignore[attr-defined]
        finally:
            await watcher.aclose()
    finally:
        await proxy.close()


@pytest.mark.asyncio
@MODES
async def test_watch_resumes_after_a_server_restart(
    open_backend: Opener, secantus_url: str, mode: str
) -> None:
    server = server_control("mongodb")
    backend = await open_backend("watchrestart", secantus_url + mode)
    assert Capability.WATCH in backend.capabilities
    it = await backend.watch("w/")
    done: list[Record] = []
    task = asyncio.create_task(_writer(backend, 20, done))
    got = await _follow(it, 5, 20)
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    await task
    # A write whose reply the stop cut off may have landed: the stored history, not
    # the writer's list, is what must arrive (each version once, in order).
    stored = await backend.read("w/n")
    got += await _follow(it, len(stored) - len(got), 60)
    assert got == stored and {r.version for r in done} <= {r.version for r in got}
    assert [r.version for r in stored] == list(range(1, len(stored) + 1))
    await it.aclose()  # type: ignore[attr-defined]
