"""One paper exchange shared by several processes: a small JSON-lines server and its connector.

A failover test needs several OS processes (an active engine, a standby that
takes over) to trade on *one* exchange, so that "no order placed twice" can be
checked at that exchange. :class:`PaperExchangeServer` serves a
:class:`~statekit.trading.paper.PaperExchange` over TCP; :class:`RemoteExchange`
is the :class:`~statekit.trading.exchange.ExchangeConnector` that talks to it.

The protocol is one JSON object per line, each way::

    -> {"id": 7, "method": "create_order", "args": {"symbol": "BTC/USDT", ...}}
    <- {"id": 7, "result": {...}}                   (the pydantic model's JSON)
    <- {"id": 7, "error": {"type": "OrderRejected", "message": "...",
                           "fields": {"exchange": "paper"}}}

Decimals travel as strings, enums as their values. A connection's requests
are handled one after the other, in the order they arrive; connections are
served concurrently, on the event loop the exchange lives on (it is not
thread-safe and need not be). Besides the connector methods the server
answers the test controls ``advance``, ``restart``, ``orders``, ``fills`` and
``set_faults``.

The client keeps the connector rules: an error the exchange raised is raised
again with its type and fields; a connection that drops, cannot be made, or
does not answer within ``timeout`` raises
:class:`~statekit.errors.ExchangeUnavailable` (the request may have taken
effect), and the next call connects again.

Run a server in its own process (the URL is the first line it prints; it
serves until SIGTERM, SIGINT or the end of its stdin)::

    python -m statekit.testing.paper_remote --port 0 \\
        --prices-json '{"BTC/USDT": ["100", "101"]}' --balances-json '{"USDT": "1000"}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from typing import Any, Self
from urllib.parse import urlsplit

import pydantic

from statekit.errors import ConfigError
from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderType, TimeInForce
from statekit.trading.paper import Faults, PaperExchange

__all__ = ["DEFAULT_TIMEOUT", "SCHEME", "PaperExchangeServer", "RemoteExchange", "main"]

SCHEME = "paper+tcp"
"""The URL scheme: ``paper+tcp://127.0.0.1:PORT``."""
DEFAULT_TIMEOUT = 10.0
"""Seconds a :class:`RemoteExchange` call waits for its answer."""
_LINE_LIMIT = 64 * 2**20  # the oracles (every order, every fill) can be long lines
_ERRORS: dict[str, type[ExchangeError]] = {
    cls.__name__: cls
    for cls in (ExchangeError, ExchangeUnavailable, RateLimited, OrderRejected, OrderNotFound)
}
# A caller's mistake (a negative ``since``, a float amount) raises what the
# in-process exchange raises.
_MISTAKES: dict[str, type[Exception]] = {"ValueError": ValueError, "TypeError": TypeError}


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _number(value: Any, what: str) -> Any:
    """A Decimal from its text; anything else as sent (the exchange refuses a float)."""
    if not isinstance(value, str):
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a number") from None


def _text(value: object) -> object:
    """An argument as JSON: Decimal as its exact text, an enum as its value."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, OrderSide | OrderType | TimeInForce):
        return value.value
    return value


def _error(exc: Exception) -> dict[str, Any]:
    """``exc`` as the ``error`` member of a response."""
    if isinstance(exc, ExchangeError):
        names = ("exchange", "retry_after") if isinstance(exc, RateLimited) else ("exchange",)
        # A subclass (a test double's own error) is sent as the statekit type it extends.
        kind = next(c.__name__ for c in type(exc).__mro__ if _ERRORS.get(c.__name__) is c)
        return {
            "type": kind,
            "message": str(exc),
            "fields": {name: getattr(exc, name, None) for name in names},
        }
    kind = "TypeError" if isinstance(exc, TypeError) else "ValueError"
    return {"type": kind, "message": str(exc), "fields": {}}


class PaperExchangeServer:
    """Serves ``exchange`` to :class:`RemoteExchange` clients over TCP (see the module docstring).

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
            self._serve, self.host, self._port, limit=_LINE_LIMIT
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
                line = await reader.readline()
                if not line:
                    break  # the client closed the connection
                writer.write(_line(await self._respond(line)))
                await writer.drain()
        except (OSError, ValueError):
            pass  # the client is gone (reset), or sent a line longer than the limit
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, line: bytes) -> dict[str, Any]:
        ident: Any = None
        try:
            request = json.loads(line)
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
            return {"id": ident, "error": _error(exc)}

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
            _number(amount, "amount"),
            _number(price, "price"),
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
                line = await self.reader.readline()
                if not line:
                    raise ConnectionError("the server closed the connection")
                response = json.loads(line)
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
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=_LINE_LIMIT)
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
                    "args": {k: _text(v) for k, v in args.items()},
                }
                connection.writer.write(_line(request))
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
            raise self._raised(error)
        return response.get("result")

    def _raised(self, error: dict[str, Any]) -> Exception:
        """The exception the server reported, rebuilt with its type and fields."""
        kind, message = str(error.get("type")), str(error.get("message"))
        fields = error.get("fields") or {}
        exchange = fields.get("exchange")
        if kind in _MISTAKES:
            return _MISTAKES[kind](message)
        if kind == "RateLimited":
            return RateLimited(message, exchange=exchange, retry_after=fields.get("retry_after"))
        return _ERRORS.get(kind, ExchangeError)(message, exchange=exchange)

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


# -- the entry point ---------------------------------------------------------------------------


def _decimals(text: str, what: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None


def _exchange(args: argparse.Namespace) -> PaperExchange:
    prices = _decimals(args.prices_json, "--prices-json")
    balances = _decimals(args.balances_json, "--balances-json")
    faults = json.loads(args.faults_json)
    if not isinstance(prices, dict) or not all(isinstance(p, list) for p in prices.values()):
        raise ValueError('--prices-json is {"SYMBOL": ["price", ...], ...}')
    if not isinstance(balances, dict):
        raise ValueError('--balances-json is {"ASSET": "amount", ...}')
    if not isinstance(faults, dict):
        raise ValueError('--faults-json is {"lost_ack": 0.1, ...}')
    return PaperExchange(
        prices={
            symbol: [_number(p, f"a price of {symbol}") for p in path]
            for symbol, path in prices.items()
        },
        balances={asset: _number(b, f"the balance of {asset}") for asset, b in balances.items()},
        seed=args.seed,
        faults=Faults(**faults),
        name=args.name,
        max_fill_per_step=None
        if args.max_fill_per_step is None
        else _number(args.max_fill_per_step, "--max-fill-per-step"),
    )


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read can
    # hold its lock at interpreter shutdown.
    with contextlib.suppress(OSError):
        while os.read(0, 65536):
            pass
    with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting anyway
        loop.call_soon_threadsafe(stop.set)


async def _serve(exchange: PaperExchange, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with PaperExchangeServer(exchange, args.host, args.port) as server:
        print(server.url, flush=True)
        if not args.no_stdin:
            threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a paper exchange until SIGTERM, SIGINT or the end of stdin; print its URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m statekit.testing.paper_remote",
        description="Serve one paper exchange to RemoteExchange clients in other processes. "
        "Prints the URL (paper+tcp://HOST:PORT) on the first line of stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument(
        "--prices-json", required=True, help='price paths: {"BTC/USDT": ["100", "101"]}'
    )
    parser.add_argument("--balances-json", default="{}", help='{"USDT": "1000"}')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults-json", default="{}", help='Faults: {"lost_ack": 0.1}')
    parser.add_argument("--max-fill-per-step", default=None)
    parser.add_argument("--name", default="paper", help="the exchange's name (order ids, errors)")
    parser.add_argument(
        "--no-stdin", action="store_true", help="serve until a signal only, not until stdin ends"
    )
    args = parser.parse_args(argv)
    try:
        exchange = _exchange(args)
    except (ValueError, TypeError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(exchange, args))
    except OSError as exc:  # the port is taken, the host unknown...
        print(
            f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
