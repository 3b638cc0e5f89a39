""":class:`PaperExchangeServer`: serves one paper exchange to its clients over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Self

from statekit.testing.paper_remote.protocol import LINE_LIMIT, SCHEME, error, line, number
from statekit.trading.errors import ExchangeError
from statekit.trading.models import OrderSide, OrderType, TimeInForce
from statekit.trading.paper import Faults, PaperExchange

__all__ = ["PaperExchangeServer"]


class PaperExchangeServer:
    """Serves ``exchange`` to :class:`RemoteExchange` clients over TCP (see the package docstring).

    :param exchange: the paper exchange every client trades on.
    :param host: the address to listen on.
    :param port: the port; 0 picks a free one (read it from :attr:`port`).

    ``await server.start()`` then ``await server.aclose()``, or ``async with``.
    Closing drops every client connection: their calls in flight get
    ExchangeUnavailable. A new server on the same port and exchange carries on
    where this one stopped (clients reconnect by themselves).
    """

    def __init__(self, exchange: PaperExchange, host: str = "127.0.0.1", port: int = 0) -> None:
        self.exchange = exchange
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()  # one conversation each
        self._handlers: set[asyncio.Task[Any]] = set()  # asyncio's task per connection
        self._closing = False
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "create_order": self._create_order,
            "cancel_order": self._cancel_order,
            "fetch_order": self._fetch_order,
            "fetch_order_by_client_id": self._fetch_order_by_client_id,
            "fetch_open_orders": self._fetch_open_orders,
            "fetch_positions": self._fetch_positions,
            "fetch_balance": self._fetch_balance,
            "fetch_fills": self._fetch_fills,
            "advance": self._advance,
            "restart": self._restart,
            "orders": self._orders,
            "fills": self._fills,
            "set_faults": self._set_faults,
        }

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, when created with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``paper+tcp://HOST:PORT``, what :class:`RemoteExchange` takes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; clients can connect once this returns."""
        if self._server is not None:
            raise RuntimeError("the server is started already")
        self._closing = False
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, limit=LINE_LIMIT
        )
        self._port = self.port

    async def aclose(self) -> None:
        """Stop listening and drop every connection."""
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await asyncio.gather(*self._handlers, return_exceptions=True)  # they end on their own
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- connections ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio's own task for the connection must end without being cancelled
        # (Python 3.11 logs an error for a cancelled one), so the conversation runs
        # in a task of ours, which aclose() cancels.
        if self._closing:  # accepted while closing: nothing to serve it with
            writer.close()
            return
        handler = asyncio.current_task()
        assert handler is not None
        conversation = asyncio.create_task(self._converse(reader, writer))
        self._connections.add(conversation)
        self._handlers.add(handler)
        try:
            await asyncio.wait([conversation])
        finally:
            self._connections.discard(conversation)
            self._handlers.discard(handler)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the requests of one connection, one after the other."""
        try:
            while True:
                request = await reader.readline()
                if not request:
                    break  # the client closed the connection
                writer.write(line(await self._respond(request)))
                await writer.drain()
        except (OSError, ValueError):
            pass  # the client is gone (reset), or sent a line longer than the limit
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, received: bytes) -> dict[str, Any]:
        ident: Any = None
        try:
            request = json.loads(received)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            ident = request.get("id")
            method = self._methods.get(str(request.get("method")))
            if method is None:
                raise ValueError(f"unknown method {request.get('method')!r}")
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise ValueError("args is a JSON object")
            return {"id": ident, "result": await method(**args)}
        except (ExchangeError, ValueError, TypeError) as exc:
            return {"id": ident, "error": error(exc)}

    # -- the connector methods -----------------------------------------------------------------

    async def _create_order(
        self,
        *,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any = None,
        client_order_id: str,
        time_in_force: str = TimeInForce.GTC.value,
    ) -> Any:
        order = await self.exchange.create_order(
            symbol,
            OrderType(type),
            OrderSide(side),
            number(amount, "amount"),
            number(price, "price"),
            client_order_id=client_order_id,
            # an unknown value reaches the exchange, which refuses it as it would in-process
            time_in_force=time_in_force,  # type: ignore[arg-type]
        )
        return order.model_dump(mode="json")

    async def _cancel_order(self, *, order_id: str, symbol: str) -> Any:
        return (await self.exchange.cancel_order(order_id, symbol)).model_dump(mode="json")

    async def _fetch_order(self, *, order_id: str, symbol: str) -> Any:
        return (await self.exchange.fetch_order(order_id, symbol)).model_dump(mode="json")

    async def _fetch_order_by_client_id(self, *, client_order_id: str, symbol: str) -> Any:
        order = await self.exchange.fetch_order_by_client_id(client_order_id, symbol)
        return None if order is None else order.model_dump(mode="json")

    async def _fetch_open_orders(self, *, symbol: str | None = None) -> Any:
        orders = await self.exchange.fetch_open_orders(symbol)
        return [order.model_dump(mode="json") for order in orders]

    async def _fetch_positions(self, *, symbols: list[str] | None = None) -> Any:
        positions = await self.exchange.fetch_positions(symbols)
        return [position.model_dump(mode="json") for position in positions]

    async def _fetch_balance(self) -> Any:
        balances = await self.exchange.fetch_balance()
        return {asset: balance.model_dump(mode="json") for asset, balance in balances.items()}

    async def _fetch_fills(self, *, symbol: str | None = None, since: int = 0) -> Any:
        fills = await self.exchange.fetch_fills(symbol, since)
        return [fill.model_dump(mode="json") for fill in fills]

    # -- the test controls ---------------------------------------------------------------------

    async def _advance(self, *, steps: int = 1) -> None:
        self.exchange.advance(steps)

    async def _restart(self) -> None:
        self.exchange.restart()

    async def _orders(self) -> Any:
        return [order.model_dump(mode="json") for order in self.exchange.orders]

    async def _fills(self) -> Any:
        return [fill.model_dump(mode="json") for fill in self.exchange.fills]

    async def _set_faults(self, *, faults: dict[str, float]) -> None:
        self.exchange.faults = Faults(**faults)
