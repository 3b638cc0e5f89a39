"""The paper exchange's book: its orders, how they match, the fills and the balances.

Synchronous and without faults: :class:`~statekit.trading.paper.PaperExchange`
calls it inside each request, after drawing the request's faults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from statekit.trading.errors import OrderNotFound, OrderRejected
from statekit.trading.exchange import ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderStatus, OrderType, TimeInForce
from statekit.trading.paper.market import START, ZERO, Market, assets, decimal

__all__ = ["Book", "PaperOrder"]


@dataclass
class _Wallet:
    free: Decimal = ZERO
    locked: Decimal = ZERO
    updated_at: datetime = START


@dataclass
class _Holding:
    """The net base amount bought minus sold through fills, with its average entry."""

    amount: Decimal = ZERO
    entry_price: Decimal | None = None
    at: datetime = START


@dataclass
class PaperOrder:
    """An order as the book keeps it (mutable; :meth:`report` is the caller's copy)."""

    id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None  # the limit; None for a market order
    time_in_force: TimeInForce
    created_at: datetime
    status: OrderStatus = OrderStatus.OPEN
    filled: Decimal = ZERO
    cost: Decimal = ZERO  # sum of amount * price over the fills
    fills: list[Fill] = field(default_factory=list)
    updated_at: datetime = START

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    def report(self) -> ExchangeOrder:
        """The order as the exchange reports it: a copy the caller may keep (its fields
        are the book's own, of the right types already: built without validating)."""
        return ExchangeOrder.model_construct(
            id=self.id,
            client_order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            amount=self.amount,
            price=self.price,
            time_in_force=self.time_in_force,
            status=self.status,
            filled=self.filled,
            average_price=self.cost / self.filled if self.filled else None,
            fills=[f.model_copy() for f in self.fills],
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class Book:
    """Orders, fills, holdings and wallets of one paper exchange.

    :param balances: what the account holds at the start, by asset (free).
    :param max_fill_per_step: the most a limit order fills when placed and per step.
    :param redeliver: asked once per fill, when it happens: True delivers its report
        again at the next step (a duplicate fill).
    :raises ValueError: a negative balance.
    """

    def __init__(
        self,
        market: Market,
        *,
        name: str,
        balances: Mapping[str, Decimal],
        max_fill_per_step: Decimal | None,
        redeliver: Callable[[], bool],
    ) -> None:
        self.market = market
        self.name = name
        self.max_fill_per_step = max_fill_per_step
        self._redeliver = redeliver
        self.wallets: dict[str, _Wallet] = {}
        for asset, amount in balances.items():
            free = decimal(amount, f"balance of {asset}")
            if free < 0:
                raise ValueError(f"the balance of {asset} cannot be negative ({free})")
            self.wallets[asset] = _Wallet(free=free, updated_at=market.start)
        self.orders: dict[str, PaperOrder] = {}
        self.by_client_id: dict[str, PaperOrder] = {}
        self.fills: list[Fill] = []  # what happened
        self._fill_symbols: dict[str, str] = {}  # fill id -> symbol
        self._reports: list[Fill] = []  # what fetch_fills delivers: repeats included
        self._redeliveries: list[Fill] = []  # duplicates due at the next step
        self._holdings: dict[str, _Holding] = {}

    # -- a step of the clock -------------------------------------------------------------------

    def step(self) -> None:
        """After the clock moved: deliver the fill reports due again, then match the
        resting limit orders, oldest first."""
        self._reports.extend(self._redeliveries)
        self._redeliveries.clear()
        for order in list(self.orders.values()):
            if not order.status.final:
                self._match(order, taker=False)

    # -- what the exchange reports -------------------------------------------------------------

    def order(self, order_id: str, symbol: str) -> PaperOrder:
        """The order ``order_id`` of ``symbol``; OrderNotFound when there is none."""
        order = self.orders.get(order_id)
        if order is None or order.symbol != symbol:
            raise OrderNotFound(
                f"{self.name}: no order {order_id!r} for {symbol!r}", exchange=self.name
            )
        return order

    def open_orders(self, symbol: str | None) -> list[ExchangeOrder]:
        return [
            o.report()
            for o in self.orders.values()
            if not o.status.final and symbol in (None, o.symbol)
        ]

    def positions(self, symbols: Sequence[str] | None) -> list[ExchangePosition]:
        """The non-zero holdings (of ``symbols``, when given), by symbol."""
        return [
            ExchangePosition(symbol=symbol, amount=h.amount, entry_price=h.entry_price, at=h.at)
            for symbol, h in sorted(self._holdings.items())
            if h.amount != 0 and (symbols is None or symbol in symbols)
        ]

    def balances(self) -> dict[str, Balance]:
        return {
            asset: Balance(asset=asset, free=w.free, locked=w.locked, updated_at=w.updated_at)
            for asset, w in sorted(self.wallets.items())
        }

    def fill_reports(self, symbol: str | None, since: int) -> list[Fill]:
        """Copies of the fill reports (of ``symbol``) after the first ``since`` ones."""
        return [
            report.model_copy()
            for report in self._reports
            if symbol is None or self._fill_symbols[report.id] == symbol
        ][since:]

    # -- placing and cancelling ----------------------------------------------------------------

    def place(
        self,
        symbol: str,
        type: OrderType,
        side: OrderSide,
        amount: Decimal,
        price: Decimal | None,
        client_order_id: str,
        time_in_force: TimeInForce,
    ) -> PaperOrder:
        """Accept an order and match it now; OrderRejected when it cannot be accepted."""
        if not isinstance(client_order_id, str) or not client_order_id:
            raise self._reject("a client order id is required")
        if client_order_id in self.by_client_id:
            raise self._reject(f"duplicate clientOrderId {client_order_id!r}")
        current = self.market.price(symbol)
        side, type = OrderSide(side), OrderType(type)
        time_in_force = self._time_in_force(time_in_force)
        amount, price = self._terms(type, amount, price)
        asset, needed = self._funds(symbol, side, amount, price if price is not None else current)
        now = self.market.now
        order = PaperOrder(
            id=f"{self.name}-{len(self.orders) + 1}",
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=type,
            amount=amount,
            price=price,
            time_in_force=time_in_force,
            created_at=now,
            updated_at=now,
        )
        if price is not None:  # a limit order holds its funds while it rests
            wallet = self._wallet(asset)
            wallet.free -= needed
            wallet.locked += needed
            wallet.updated_at = now
        self.orders[order.id] = order
        self.by_client_id[client_order_id] = order
        if order.price is None or time_in_force is not TimeInForce.FOK or self._fills_all(order):
            self._match(order, taker=True)
        if order.price is not None and time_in_force is not TimeInForce.GTC:
            # IOC and FOK never rest: what did not fill now is cancelled (a killed
            # FOK too, with nothing filled). Binance says EXPIRED for both; CCXT's
            # unified status for most venues, and ours, is cancelled.
            self.release(order)
        return order

    def cancel(self, order_id: str, symbol: str) -> PaperOrder:
        order = self.order(order_id, symbol)
        self.release(order)
        return order

    def release(self, order: PaperOrder) -> None:
        """Cancel what is left of ``order`` and unlock what it held; a final order stays."""
        if order.status.final:
            return
        now = self.market.now
        base_asset, quote_asset = assets(order.symbol)
        if order.price is not None:  # market orders never rest
            if order.side is OrderSide.BUY:
                wallet, held = self._wallet(quote_asset), order.remaining * order.price
            else:
                wallet, held = self._wallet(base_asset), order.remaining
            wallet.locked -= held
            wallet.free += held
            wallet.updated_at = now
        order.status = OrderStatus.CANCELLED
        order.updated_at = now

    # -- checking an order ---------------------------------------------------------------------

    def _reject(self, message: str) -> OrderRejected:
        return OrderRejected(f"{self.name}: {message}", exchange=self.name)

    def _time_in_force(self, time_in_force: TimeInForce) -> TimeInForce:
        try:
            return TimeInForce(time_in_force)
        except ValueError:
            supported = ", ".join(t.value for t in TimeInForce)
            raise self._reject(
                f"time in force {time_in_force!r} is not supported ({supported})"
            ) from None

    def _terms(
        self, type: OrderType, amount: Decimal, price: Decimal | None
    ) -> tuple[Decimal, Decimal | None]:
        """The amount and the limit price (None for a market order), checked."""
        amount = decimal(amount, "amount")
        if amount <= 0:
            raise self._reject(f"amount must be positive, not {amount}")
        if type is OrderType.LIMIT:
            if price is None:
                raise self._reject("a limit order needs a price")
            price = decimal(price, "price")
            if price <= 0:
                raise self._reject(f"price must be positive, not {price}")
        elif type is OrderType.MARKET:
            price = None  # CCXT ignores a market order's price too
        else:
            raise self._reject(f"order type {type.value!r} is not supported (market, limit)")
        return amount, price

    def _funds(
        self, symbol: str, side: OrderSide, amount: Decimal, price: Decimal
    ) -> tuple[str, Decimal]:
        """The asset an order pays with and how much of it; refused when not enough is free."""
        base, quote = assets(symbol)
        if side is OrderSide.BUY:
            asset, needed = quote, amount * price
        else:
            asset, needed = base, amount
        free = self.wallets[asset].free if asset in self.wallets else ZERO
        if free < needed:
            raise self._reject(
                f"insufficient funds: {side.value} {amount} {symbol} needs {needed} {asset}, "
                f"{free} free"
            )
        return asset, needed

    def _wallet(self, asset: str) -> _Wallet:
        return self.wallets.setdefault(asset, _Wallet(updated_at=self.market.now))

    # -- matching ------------------------------------------------------------------------------

    def _fills_all(self, order: PaperOrder) -> bool:
        """True when the limit ``order`` would fill completely if matched now (FOK)."""
        assert order.price is not None
        current = self.market.price(order.symbol)
        buy = order.side is OrderSide.BUY
        crosses = current <= order.price if buy else current >= order.price
        cap = self.max_fill_per_step
        return crosses and (cap is None or order.remaining <= cap)

    def _match(self, order: PaperOrder, *, taker: bool) -> None:
        current = self.market.price(order.symbol)
        if order.price is None:
            self._fill(order, order.remaining, current)
            return
        buy = order.side is OrderSide.BUY
        if (buy and current > order.price) or (not buy and current < order.price):
            return
        amount = order.remaining
        if self.max_fill_per_step is not None:
            amount = min(amount, self.max_fill_per_step)
        self._fill(order, amount, current if taker else order.price)

    def _fill(self, order: PaperOrder, amount: Decimal, price: Decimal) -> None:
        now = self.market.now
        base_asset, quote_asset = assets(order.symbol)
        base, quote = self._wallet(base_asset), self._wallet(quote_asset)
        value = amount * price
        if order.side is OrderSide.BUY:
            if order.price is None:
                quote.free -= value
            else:  # it locked amount * limit; what it saved goes back
                quote.locked -= amount * order.price
                quote.free += amount * order.price - value
            base.free += amount
        else:
            if order.price is None:
                base.free -= amount
            else:
                base.locked -= amount
            quote.free += value
        base.updated_at = quote.updated_at = now
        fill = Fill(
            id=f"{self.name}-fill-{len(self.fills) + 1}",
            order_id=order.id,
            amount=amount,
            price=price,
            at=now,
        )
        order.fills.append(fill)
        order.filled += amount
        order.cost += value
        order.status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.PARTIALLY_FILLED
        order.updated_at = now
        self.fills.append(fill)
        self._fill_symbols[fill.id] = order.symbol
        self._reports.append(fill)
        if self._redeliver():
            self._redeliveries.append(fill)
        self._hold(order.symbol, amount if order.side is OrderSide.BUY else -amount, price, now)

    def _hold(self, symbol: str, change: Decimal, price: Decimal, now: datetime) -> None:
        holding = self._holdings.setdefault(symbol, _Holding())
        before, after = holding.amount, holding.amount + change
        if before == 0 or (before > 0) == (change > 0):  # opened or grown: average in
            old = abs(before) * (holding.entry_price or ZERO)
            holding.entry_price = (old + abs(change) * price) / abs(after)
        elif after == 0:
            holding.entry_price = None
        elif (after > 0) != (before > 0):  # went through zero: the rest opened at this price
            holding.entry_price = price
        holding.amount, holding.at = after, now
