"""A lean HTTP/1.1 and WebSocket load generator for ``python -m statekit.bench api``.

The client shares the machine (and, for WebSockets, one event loop) with what it
measures, so it does as little as it can: requests are pre-built bytes on
keep-alive asyncio streams, a response is read by its ``Content-Length``; a
WebSocket client does the RFC 6455 handshake and reads unmasked server frames.
A heavy client (httpx, the websockets library) would spend more time than the
server and bring every ratio closer to 1 than the servers are.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from statekit.errors import StatekitError

__all__ = ["HttpConnection", "LoadResult", "WsClient", "load", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time.

    A connection the server closed while it sat idle (uvicorn's keep-alive timeout)
    is opened again before the next request.
    """

    def __init__(
        self, address: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.address = address
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls((host, port), reader, writer)

    @staticmethod
    def build(method: str, path: str, host: str, body: bytes | None = None) -> bytes:
        """The bytes of one request (JSON body when ``body`` is given)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
        if body is None:
            return (head + "\r\n").encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a pre-built request; its status and body."""
        if self.reader.at_eof():
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(*self.address)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        found = head.lower().find(b"\r\ncontent-length:")
        if found < 0:
            raise StatekitError(f"bench client: a response without Content-Length: {head[:200]!r}")
        end = head.find(b"\r\n", found + 2)
        body = await self.reader.readexactly(int(head[found + 17 : end]))
        return status, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One round: requests answered, the seconds it took, each request's latency (s)."""

    requests: int
    seconds: float
    latencies: list[float]


async def load(
    connections: Sequence[HttpConnection], requests: Sequence[bytes], expect: int
) -> LoadResult:
    """Send ``requests`` over all ``connections`` at once (each takes the next one
    when its previous answer came); every answer must have status ``expect``."""
    pending = iter(requests)
    latencies: list[float] = []

    async def run(connection: HttpConnection) -> None:
        for request in pending:
            started = time.perf_counter()
            status, body = await connection.send(request)
            latencies.append(time.perf_counter() - started)
            if status != expect:
                raise StatekitError(f"bench client: status {status}: {body[:300]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in connections))
    return LoadResult(len(requests), time.perf_counter() - started, latencies)


class WsClient(asyncio.Protocol):
    """A WebSocket client (RFC 6455): sends text frames, hands each text message it
    receives to ``on_text`` as soon as it is read (no task wakes up per message).

    Until ``on_text`` is set, messages wait in :meth:`receive_text`'s queue.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_text: Callable[[str], None] | None = None
        self._buffer = bytearray()
        self._head: bytes | None = None
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()

    @classmethod
    async def connect(cls, host: str, port: int, path: str = "/ws") -> WsClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(cls, host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        client._write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await client._inbox.get()
        if head is None or not head.startswith("HTTP/1.1 101"):
            await client.close()
            raise StatekitError(f"bench client: WebSocket handshake refused: {head!r:.200}")
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._inbox.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head = bytes(buffer[: end + 4])
            del buffer[: end + 4]
            self._inbox.put_nowait(self._head.decode("latin-1"))
        while len(buffer) >= 2:
            opcode, size, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return
                (size,), start = struct.unpack_from("!H", buffer, 2), 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                (size,), start = struct.unpack_from("!Q", buffer, 2), 10
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            del buffer[: start + size]
            if opcode == 0x1:
                text = payload.decode()
                if self.on_text is not None:
                    self.on_text(text)
                else:
                    self._inbox.put_nowait(text)
            elif opcode == 0x9:
                self._send(0xA, payload)  # a ping: answer it
            elif opcode == 0x8 and self.transport is not None:
                self.transport.close()

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._write(head + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    async def receive_text(self) -> str | None:
        """The next text message not handed to ``on_text``; None once the connection closed."""
        return await self._inbox.get()

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(0x8, struct.pack("!H", 1000))
            self.transport.close()
