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
from collections.abc import Sequence
from dataclasses import dataclass

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


class WsClient:
    """A WebSocket client (RFC 6455) that sends text frames and reads text frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, path: str = "/ws") -> WsClient:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise StatekitError(f"bench client: WebSocket handshake refused: {head[:200]!r}")
        return cls(reader, writer)

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
        self.writer.write(head + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    async def receive_text(self) -> str | None:
        """The next text message; None once the server closed."""
        while True:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(size)
            opcode = first & 0x0F
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self._send(0xA, payload)  # a ping: answer it

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0x8, struct.pack("!H", 1000))
            self.writer.close()
            await self.writer.wait_closed()
