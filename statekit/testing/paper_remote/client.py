""":class:`RemoteExchange`: the connector of a :class:`PaperExchangeServer`, in any process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import fields
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pydantic

from statekit.errors import ConfigError
from statekit.testing.paper_remote.protocol import (
    DEFAULT_TIMEOUT,
    LINE_LIMIT,
    SCHEME,
    line,
    raised,
    text,
)
from statekit.trading.errors import ExchangeError, ExchangeUnavailable
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderType, TimeInForce
from statekit.trading.paper import Faults

__all__ = ["RemoteExchange"]


class _Connection:
    """One TCP connection of a client: requests go out, a reader task matches the answers."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: str
    ) -> None:
        self.reader, self.writer, self.exchange = reader, writer, exchange
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.broken: str | None = None  # why it cannot be used any more
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                received = await self.reader.readline()
                if not received:
                    raise ConnectionError("the server closed the connection")
                response = json.loads(received)
                future = self.pending.pop(response.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(response)
        except (OSError, ValueError, AttributeError) as exc:  # dropped, or not our protocol
            self.drop(str(exc) or type(exc).__name__)

    def drop(self, why: str) -> None:
        """Close the connection; the calls waiting on it get ExchangeUnavailable."""
        if self.broken is None:
            self.broken = why
        for future in self.pending.values():
            if not future.done():
                future.set_exception(
                    ExchangeUnavailable(
                        f"{self.exchange}: connection lost ({why}); the request may have "
                        "taken effect",
                        exchange=self.exchange,
                    )
                )
        self.pending.clear()
        self.writer.close()

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.drop("closed")
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class RemoteExchange(ExchangeConnector):
    """The connector of a :class:`PaperExchangeServer`, in this or another process.

    :param url: ``paper+tcp://HOST:PORT`` (the server's :attr:`~PaperExchangeServer.url`).
    :param timeout: seconds a call waits (to connect, send and be answered) before it
        raises ExchangeUnavailable; the connection is then dropped, and the next call
        makes a new one.
    :param name: the connector's name (in the errors it raises itself).

    It connects on the first call. Calls may run concurrently: they share one
    connection, and the server answers them in the order they were sent.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, name: str = "paper") -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != SCHEME or not parts.hostname or port is None:
            raise ConfigError(
                f"a paper exchange URL is {SCHEME}://HOST:PORT, not {url!r}", source=url
            )
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, not {timeout}", source=url)
        self.url = url
        self.host, self.port = parts.hostname, port
        self.timeout = timeout
        self.name = name
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        """Close the connection (a later call would open a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.aclose()

    async def _connected(self) -> _Connection:
        async with self._connecting:
            connection = self._connection
            if connection is not None and connection.broken is None:
                return connection
            self._connection = None
            if connection is not None:
                await connection.aclose()
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=LINE_LIMIT)
            self._connection = _Connection(reader, writer, self.name)
            return self._connection

    async def _call(self, method: str, **args: object) -> Any:
        """Send one request and return its result; the one place errors are translated."""
        ident = next(self._ids)
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self._connected()
                answer = asyncio.get_running_loop().create_future()
                connection.pending[ident] = answer
                request = {
                    "id": ident,
                    "method": method,
                    "args": {k: text(v) for k, v in args.items()},
                }
                connection.writer.write(line(request))
                await connection.writer.drain()
                response: dict[str, Any] = await answer
        except TimeoutError as exc:
            if connection is not None:
                connection.drop(f"no answer within {self.timeout} s")
            raise ExchangeUnavailable(
                f"{self.name}: no answer to {method} within {self.timeout} s from {self.url}; "
                "the request may have taken effect",
                exchange=self.name,
            ) from exc
        except OSError as exc:
            if connection is not None:
                connection.drop(str(exc) or type(exc).__name__)
            raise ExchangeUnavailable(
                f"{self.name}: {method} failed, no connection to {self.url} ({exc}); the "
                "request may have taken effect",
                exchange=self.name,
            ) from exc
        finally:
            if connection is not None:
                connection.pending.pop(ident, None)
        error = response.get("error")
        if error is not None:
            raise raised(error)
        return response.get("result")

    def _decode(self, what: Callable[[Any], Any], data: Any) -> Any:
        try:
            return what(data)
        except (pydantic.ValidationError, TypeError, AttributeError) as exc:
            raise ExchangeError(
                f"{self.name}: the server at {self.url} sent a malformed answer: {exc}",
                exchange=self.name,
            ) from exc

    def _order(self, data: Any) -> ExchangeOrder:
        order: ExchangeOrder = self._decode(ExchangeOrder.model_validate, data)
        return order

    def _orders(self, data: Any) -> list[ExchangeOrder]:
        orders: list[ExchangeOrder] = self._decode(
            lambda items: [ExchangeOrder.model_validate(item) for item in items], data
        )
        return orders

    def _fill_list(self, data: Any) -> list[Fill]:
        fills: list[Fill] = self._decode(
            lambda items: [Fill.model_validate(item) for item in items], data
        )
        return fills

    # -- the connector contract ----------------------------------------------------------------

    async def create_order(
        self,
        symbol: str,
        type: OrderType,
        side: OrderSide,
        amount: Decimal,
        price: Decimal | None = None,
        *,
        client_order_id: str,
        time_in_force: TimeInForce = TimeInForce.GTC,
    ) -> ExchangeOrder:
        data = await self._call(
            "create_order",
            symbol=symbol,
            type=type,
            side=side,
            amount=amount,
            price=price,
            client_order_id=client_order_id,
            time_in_force=time_in_force,
        )
        return self._order(data)

    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        return self._order(await self._call("cancel_order", order_id=order_id, symbol=symbol))

    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        return self._order(await self._call("fetch_order", order_id=order_id, symbol=symbol))

    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        data = await self._call(
            "fetch_order_by_client_id", client_order_id=client_order_id, symbol=symbol
        )
        return None if data is None else self._order(data)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return self._orders(await self._call("fetch_open_orders", symbol=symbol))

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        data = await self._call("fetch_positions", symbols=None if symbols is None else [*symbols])
        positions: list[ExchangePosition] = self._decode(
            lambda items: [ExchangePosition.model_validate(item) for item in items], data
        )
        return positions

    async def fetch_balance(self) -> dict[str, Balance]:
        data = await self._call("fetch_balance")
        balances: dict[str, Balance] = self._decode(
            lambda items: {asset: Balance.model_validate(b) for asset, b in items.items()}, data
        )
        return balances

    async def fetch_fills(self, symbol: str | None = None, since: int = 0) -> list[Fill]:
        return self._fill_list(await self._call("fetch_fills", symbol=symbol, since=since))

    # -- the test controls (PaperExchange's, over the wire; never faulted) -----------------------

    async def advance(self, steps: int = 1) -> None:
        """:meth:`PaperExchange.advance` on the server's exchange."""
        await self._call("advance", steps=steps)

    async def restart(self) -> None:
        """:meth:`PaperExchange.restart`: the answers of calls in flight are lost."""
        await self._call("restart")

    async def orders(self) -> list[ExchangeOrder]:
        """:attr:`PaperExchange.orders`: every order ever accepted (the test oracle)."""
        return self._orders(await self._call("orders"))

    async def fills(self) -> list[Fill]:
        """:attr:`PaperExchange.fills`: every fill that happened, once each."""
        return self._fill_list(await self._call("fills"))

    async def set_faults(self, faults: Faults) -> None:
        """Replace the server's exchange's :class:`~statekit.trading.paper.Faults`."""
        await self._call(
            "set_faults", faults={spec.name: getattr(faults, spec.name) for spec in fields(faults)}
        )
