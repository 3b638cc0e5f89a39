"""CcxtConnector: any ``ccxt.async_support`` exchange as a statekit ExchangeConnector.

Every call into ccxt goes through :meth:`CcxtConnector._call`, which
translates ccxt's exceptions (:func:`statekit_ccxt.errors.translate`) and
keeps ccxt's changes to the decimal context away from the caller's: ccxt's
precision helpers set the current context's rounding to ROUND_HALF_UP and trap
Underflow, which would otherwise change how the rest of the process rounds
its Decimals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from functools import partial
from typing import Any, TypeVar

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]  # no type information

from statekit.errors import ConfigError, StatekitError
from statekit.trading.errors import ExchangeError, ExchangeUnavailable, OrderNotFound, OrderRejected
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderType, TimeInForce
from statekit_ccxt.errors import translate
from statekit_ccxt.structures import (
    client_order_id_of,
    read_balances,
    read_fill,
    read_order,
    read_position,
)
from statekit_ccxt.venues import lookup_for

__all__ = ["CcxtConnector"]

T = TypeVar("T")

_DEFAULT_OPTIONS: dict[str, object] = {
    # ccxt's Binance refuses fetch_open_orders() without a symbol unless told this
    # (the venue charges more weight for it); the contract asks for all orders.
    "fetchOpenOrders": {"warnWithoutSymbol": False},
}


def _now() -> datetime:
    return datetime.now(UTC)


def _milliseconds(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _number(value: object, what: str) -> Decimal:
    """``value`` as a finite Decimal; a float is refused (money is Decimal), as the paper
    exchange refuses it: a TypeError or ValueError, the caller's mistake."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{what} must be a Decimal, not {type(value).__name__} {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what} must be finite, not {number}")
    return number


def _settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` over the connector's default options (the config wins)."""
    settings = dict(config or {})
    options = dict(settings.get("options") or {})
    settings["options"] = ccxt_async.Exchange.deep_extend(_DEFAULT_OPTIONS, options)
    return settings


@dataclass
class _FillJournal:
    """The fill reports one connector has seen for one ``symbol`` argument, in the order
    it first saw them: what ``fetch_fills``' ``since`` counts."""

    fills: list[Fill] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    newest: int | None = None  # ms timestamp of the newest fill seen: where the next fetch starts


class CcxtConnector(ExchangeConnector):
    """One account on any exchange ccxt supports, through ``ccxt.async_support``.

    :param exchange_id: the ccxt id of the exchange to build (``"binance"``,
        ``"okx"``...; see ``ccxt.exchanges``).
    :param exchange: an exchange built already (``ccxt.async_support.binance({...})``);
        the connector uses it as it is, takes its id from it, and does not close it
        (whoever built it does). ``exchange_id`` and ``config`` are then not used.
    :param config: ccxt's constructor settings for the exchange to build: ``apiKey``,
        ``secret``, ``password``, ``options``... The connector closes what it builds.
    :param name: the connector's name, in errors and in the idempotency ledger
        (default: the exchange's ccxt id).
    :raises ConfigError: ccxt has no such exchange, or both ``exchange`` and ``config``
        were given.
    """

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        exchange: ccxt_async.Exchange | None = None,
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if exchange is not None:
            if config is not None:
                raise ConfigError(
                    "CcxtConnector: pass config (to build an exchange) or exchange (built "
                    "already), not both",
                    source="statekit_ccxt",
                )
            self._exchange: Any = exchange
            self._owned = False
        else:
            if exchange_id not in ccxt_async.exchanges:
                raise ConfigError(
                    f"CcxtConnector: ccxt {ccxt_async.__version__} has no exchange "
                    f"{exchange_id!r} (see ccxt.exchanges)",
                    source="statekit_ccxt",
                )
            self._exchange = getattr(ccxt_async, exchange_id)(_settings(config))
            self._owned = True
        self.exchange_id: str = str(self._exchange.id)
        """The ccxt id of the exchange."""
        self.name = name or self.exchange_id
        self._lookup = lookup_for(self.exchange_id)
        self._journals: dict[str | None, _FillJournal] = {}

    @property
    def exchange(self) -> Any:
        """The ccxt exchange, for what the contract does not cover (``set_sandbox_mode``,
        market data). Its exceptions are ccxt's: calls made on it directly are not
        translated."""
        return self._exchange

    def __repr__(self) -> str:
        return f"CcxtConnector({self.exchange_id!r}, name={self.name!r})"

    # -- the contract ------------------------------------------------------------------------

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
        """Place a market or limit order carrying ``client_order_id`` (ccxt's unified
        ``clientOrderId``, which each exchange class sends under the venue's name).

        Nothing is sent, and OrderRejected is raised, for: a stop order (the contract
        carries no trigger price), a limit order without a price, an amount or price
        that ccxt's precision for the market would change (it truncates amounts and
        rounds prices: the order would not be the one asked for), and an IOC or FOK
        the venue does not offer for the market according to ccxt's ``features``.
        GTC is sent as no ``timeInForce`` at all: ccxt's default for a limit order.
        A market order's ``time_in_force`` and ``price`` are not sent. An amount or
        price that is not a Decimal (a float) is a TypeError, as for the paper exchange.
        """
        type, side, time_in_force = OrderType(type), OrderSide(side), TimeInForce(time_in_force)
        amount = _number(amount, "amount")
        if not client_order_id:
            raise self._refusal("a client order id is required")
        if type not in (OrderType.MARKET, OrderType.LIMIT):
            raise self._refusal(
                f"{type.value} orders need a trigger price, which the connector contract "
                "does not carry; market and limit orders only"
            )
        limit = None
        if type is OrderType.LIMIT:
            if price is None:
                raise self._refusal("a limit order needs a price")
            limit = _number(price, "price")
        if amount <= 0 or (limit is not None and limit <= 0):
            raise self._refusal(f"amount and price must be positive, not {amount} and {limit}")

        async def place() -> Any:
            await self._exchange.load_markets()
            amount_text, price_text = self._precise(symbol, amount, limit)
            params: dict[str, str] = {"clientOrderId": client_order_id}
            params.update(self._time_in_force(symbol, type, time_in_force))
            return await self._exchange.create_order(
                symbol, type.value, side.value, amount_text, price_text, params
            )

        order = self._order(await self._call("create_order", place))
        if order.client_order_id is None:  # some venues do not echo it; it was sent
            order = order.model_copy(update={"client_order_id": client_order_id})
        return order

    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        """Cancel an order; returns it as it is after the cancel.

        A venue that refuses to cancel a final order as unknown (Binance answers
        ``-2011 Unknown order sent.`` for a filled one) is asked for the order, so a
        filled order comes back filled; OrderNotFound only when that lookup finds none.
        """
        try:
            raw = await self._call(
                "cancel_order", lambda: self._exchange.cancel_order(order_id, symbol)
            )
        except OrderNotFound:
            return await self.fetch_order(order_id, symbol)
        try:
            order = self._order(raw)
        except ExchangeError:
            order = None  # a bare acknowledgement (some venues answer {"id": ...} only)
        if order is None or not order.status.final:
            return await self.fetch_order(order_id, symbol)
        return order

    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        return self._order(
            await self._call("fetch_order", lambda: self._exchange.fetch_order(order_id, symbol))
        )

    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        """The order placed with ``client_order_id``; None only when the venue says it has none.

        Venues ccxt can ask by client id (:mod:`statekit_ccxt.venues`) are asked; a
        "no such order" from one whose answer is trusted (Binance's ``-2013 Order does
        not exist.``) is None. Otherwise the venue's recent orders (``fetchOrders``, or
        ``fetchOpenOrders`` + ``fetchClosedOrders``) are scanned for the client id;
        found is the order, not found is ExchangeUnavailable: a scan that misses it is
        no proof it was never accepted, and a wrong None would place the order twice.
        """
        if self._lookup.by_fetch_order:
            try:
                raw = await self._call(
                    "fetch_order_by_client_id",
                    lambda: self._exchange.fetch_order(
                        None, symbol, {"clientOrderId": client_order_id}
                    ),
                )
            except OrderNotFound:
                if self._lookup.absence_is_an_answer:
                    return None
            else:
                order = self._order(raw)
                if order.client_order_id != client_order_id:
                    raise ExchangeError(
                        f"{self.name}: asked for client order id {client_order_id!r}, the "
                        f"venue answered with order {order.id} of {order.client_order_id!r}",
                        exchange=self.name,
                    )
                return order
        return await self._scan_for(client_order_id, symbol)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        raw = await self._call(
            "fetch_open_orders", lambda: self._exchange.fetch_open_orders(symbol)
        )
        return [self._order(item) for item in self._listed(raw, "open orders")]

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        """Open derivatives positions, signed, in base units; [] for a spot account.

        Spot has no positions: [] when the venue has no ``fetchPositions``, when every
        symbol asked for is a spot market, or, asked for all, when the exchange's
        ``options["defaultType"]`` is spot (ccxt's default).
        """
        exchange = self._exchange

        async def positions() -> Any:
            if not exchange.has.get("fetchPositions"):
                return []
            await exchange.load_markets()
            if symbols is None:
                if (exchange.options.get("defaultType") or "spot") == "spot":
                    return []
                return await exchange.fetch_positions(None)
            contracts = [s for s in symbols if exchange.market(s).get("contract")]
            return await exchange.fetch_positions(contracts) if contracts else []

        raw = await self._call("fetch_positions", positions)
        now = _now()
        read = (
            read_position(item, exchange=self.name, now=now)
            for item in self._listed(raw, "positions")
        )
        return [position for position in read if position is not None]

    async def fetch_balance(self) -> dict[str, Balance]:
        raw = await self._call("fetch_balance", lambda: self._exchange.fetch_balance())
        return read_balances(raw, exchange=self.name, now=_now())

    async def fetch_fills(self, symbol: str | None = None, since: int = 0) -> list[Fill]:
        """The fill reports after the first ``since`` ones (ccxt's ``fetch_my_trades``).

        A venue keeps no numbered stream of fills, so the connector keeps one: each
        call fetches the trades from the newest one it has seen on (the venue's recent
        ones the first time) and appends those not seen before. ``since`` counts in
        that journal, one per ``symbol`` argument, for the life of this connector; a
        new connector starts again at 0 (a consumer dedupes by ``Fill.id``). Venues
        that need a symbol for their trades (Binance spot) refuse ``symbol=None``.
        """
        if since < 0:
            raise ValueError(f"since must not be negative, not {since}")
        journal = self._journals.setdefault(symbol, _FillJournal())
        start = journal.newest
        raw = await self._call("fetch_fills", lambda: self._exchange.fetch_my_trades(symbol, start))
        fresh = sorted(
            (read_fill(item, exchange=self.name) for item in self._listed(raw, "trades")),
            key=lambda fill: (fill.at, fill.id),
        )
        for fill in fresh:
            if fill.id not in journal.ids:
                journal.ids.add(fill.id)
                journal.fills.append(fill)
            moment = _milliseconds(fill.at)
            journal.newest = moment if journal.newest is None else max(journal.newest, moment)
        return [fill.model_copy() for fill in journal.fills[since:]]

    async def aclose(self) -> None:
        """Close the ccxt exchange if the connector built it (not one it was given)."""
        if self._owned:
            await self._call("aclose", lambda: self._exchange.close())

    # -- the one way into ccxt ---------------------------------------------------------------

    async def _call(self, request: str, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call`` (which calls ccxt); ccxt's exceptions come out as statekit's."""
        with localcontext():  # ccxt's precision helpers change the current decimal context
            try:
                return await call()
            except StatekitError:
                raise  # ours, raised inside call (a refusal before sending)
            except Exception as exc:
                raise translate(exc, exchange=self.name, request=request) from exc

    # -- helpers -----------------------------------------------------------------------------

    def _refusal(self, reason: str) -> OrderRejected:
        return OrderRejected(
            f"{self.name}: order refused before sending: {reason}", exchange=self.name
        )

    def _precise(
        self, symbol: str, amount: Decimal, price: Decimal | None
    ) -> tuple[str, str | None]:
        """``amount`` and ``price`` as the text ccxt will send for ``symbol``'s market.

        Called within :meth:`_call` (ccxt's precision helpers change the decimal context).
        """
        precision = self._exchange.market(symbol).get("precision") or {}
        amount_text = format(amount, "f")
        if precision.get("amount") is not None:
            amount_text = self._exchange.amount_to_precision(symbol, amount_text)
            if Decimal(amount_text) != amount:
                raise self._refusal(
                    f"amount {amount} is not a multiple of {symbol}'s amount step "
                    f"({precision['amount']}); ccxt would send {amount_text}"
                )
        if price is None:
            return amount_text, None
        price_text = format(price, "f")
        if precision.get("price") is not None:
            price_text = self._exchange.price_to_precision(symbol, price_text)
            if Decimal(price_text) != price:
                raise self._refusal(
                    f"price {price} is not a multiple of {symbol}'s price step "
                    f"({precision['price']}); ccxt would send {price_text}"
                )
        return amount_text, price_text

    def _time_in_force(
        self, symbol: str, type: OrderType, time_in_force: TimeInForce
    ) -> dict[str, str]:
        """ccxt's unified ``timeInForce`` param for the order, or OrderRejected."""
        if type is OrderType.MARKET or time_in_force is TimeInForce.GTC:
            return {}
        feature_value = getattr(self._exchange, "feature_value", None)
        offered = feature_value(symbol, "createOrder", "timeInForce") if feature_value else None
        if not isinstance(offered, Mapping) or offered.get(time_in_force.name) is not True:
            raise self._refusal(
                f"{time_in_force.name} is not offered for {symbol}: ccxt's features for "
                f"{self.exchange_id} do not list it (refused rather than placed as GTC)"
            )
        return {"timeInForce": time_in_force.name}

    def _order(self, raw: object) -> ExchangeOrder:
        return read_order(raw, exchange=self.name, now=_now())

    def _listed(self, raw: object, what: str) -> list[object]:
        if not isinstance(raw, list):
            raise ExchangeError(
                f"{self.name}: ccxt returned {type(raw).__name__} for {what}, not a list",
                exchange=self.name,
            )
        return list(raw)

    async def _scan_for(self, client_order_id: str, symbol: str) -> ExchangeOrder:
        """The order with ``client_order_id`` among the venue's recent orders of ``symbol``."""
        exchange, has = self._exchange, self._exchange.has
        if has.get("fetchOrders"):
            sources = [exchange.fetch_orders]
        elif has.get("fetchOpenOrders") and has.get("fetchClosedOrders"):
            sources = [exchange.fetch_open_orders, exchange.fetch_closed_orders]
            if has.get("fetchCanceledOrders"):
                sources.append(exchange.fetch_canceled_orders)
        else:
            raise ExchangeUnavailable(
                f"{self.name}: cannot tell whether there is an order with client order id "
                f"{client_order_id!r}: ccxt can neither ask {self.exchange_id} by client id "
                "nor list its recent orders",
                exchange=self.name,
            )
        for source in sources:
            raw = await self._call("fetch_order_by_client_id", partial(source, symbol))
            for item in self._listed(raw, "orders"):
                if isinstance(item, Mapping) and client_order_id_of(item) == client_order_id:
                    return self._order(item)
        raise ExchangeUnavailable(
            f"{self.name}: no order with client order id {client_order_id!r} among the recent "
            f"orders of {symbol}; ccxt cannot ask {self.exchange_id} by client id, so that is "
            "no proof it was never accepted",
            exchange=self.name,
        )
