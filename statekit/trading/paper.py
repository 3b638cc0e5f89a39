"""The paper exchange: a deterministic exchange in memory, with fault injection.

:class:`PaperExchange` implements :class:`~statekit.trading.exchange.ExchangeConnector`
against a scripted price path per symbol. It has no wall clock and no I/O:
time is its own simulated clock, moved by :meth:`PaperExchange.advance`, and
every injected fault is drawn from a ``random.Random(seed)``, so the same seed
and the same calls give the same outcomes, run after run. It is what tests,
examples and the reconciler run against.

Matching, in short (docs/paper-exchange.md has the whole story):

- a market order fills at once, completely, at the current price;
- a limit order fills when the price reaches it (a buy when the price is at or
  below its limit, a sell at or above), at most ``max_fill_per_step`` per step,
  so orders can be partially filled. A limit order that crosses when placed
  fills at the current price (taker); a resting one at its limit (maker);
- a limit order's time in force: GTC rests; IOC fills what it can when placed
  and the rest is cancelled; FOK fills completely when placed or not at all.
  Either way an IOC or FOK order that did not fill completely ends
  ``cancelled`` (``filled`` says how much did, as CCXT reports it);
- balances move with fills: the quote for an open buy and the base for an open
  sell are locked until filled or cancelled; an order the account cannot pay
  for is refused with :class:`~statekit.errors.OrderRejected`;
- client order ids are unique per exchange: a second order with a client order
  id already accepted is refused (``duplicate clientOrderId``), as Binance does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderStatus, OrderType, TimeInForce

__all__ = ["Faults", "PaperExchange"]

T = TypeVar("T")

ZERO = Decimal(0)
START = datetime(2024, 1, 1, tzinfo=UTC)
"""Where the simulated clock starts unless told otherwise."""


@dataclass(frozen=True)
class Faults:
    """How often each fault is injected: a probability in [0, 1] per call (or per fill report).

    Every call draws from the exchange's seeded RNG, the same number of draws
    whatever the probabilities, so a run is reproducible from its seed.
    """

    timeout_before_accept: float = 0.0
    """``create_order`` raises ExchangeUnavailable; the order was NOT placed."""
    timeout_after_accept: float = 0.0
    """``create_order`` places the order, then raises ExchangeUnavailable."""
    lost_ack: float = 0.0
    """Any call: the request takes effect, the answer is lost (ExchangeUnavailable)."""
    rate_limit: float = 0.0
    """Any call: RateLimited, before anything happens."""
    duplicate_fill: float = 0.0
    """A fill report is delivered again (same ``Fill.id``), at the next ``advance()``."""
    out_of_order_fills: float = 0.0
    """``fetch_fills`` returns its reports shuffled."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(
                    f"Faults.{spec.name} must be a probability in [0, 1], not {value!r}"
                )


def _assets(symbol: str) -> tuple[str, str]:
    """``BTC/USDT`` (or CCXT's ``BTC/USDT:USDT``) -> ("BTC", "USDT")."""
    base, _, rest = symbol.partition("/")
    quote = rest.partition(":")[0]
    if not base or not quote:
        raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE (e.g. 'BTC/USDT')")
    return base, quote


def _decimal(value: object, what: str) -> Decimal:
    # Money is Decimal; an int is exact too. A float is refused, not rounded.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{what} must be a Decimal, not {type(value).__name__} {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what} must be finite, not {number}")
    return number


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
class _PaperOrder:
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
        """The order as the exchange reports it: a copy the caller may keep."""
        return ExchangeOrder(
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


class PaperExchange(ExchangeConnector):
    """A deterministic spot exchange in memory, with injectable faults.

    :param prices: each symbol's scripted price path (``"BTC/USDT": [Decimal("100"), ...]``);
        the first price is the current one, :meth:`advance` moves along the path and
        holds the last price once the path is used up. Only these symbols trade.
    :param balances: what the account holds at the start, by asset (free).
    :param seed: seeds the RNG every fault is drawn from.
    :param faults: how often each fault is injected (none by default).
    :param name: the connector's name, in errors (``ExchangeError.exchange``) and ids.
    :param max_fill_per_step: the most a limit order fills when placed and per step
        (None: no limit), so that limit orders can be partially filled.
    :param start: where the simulated clock starts (aware UTC).
    :param step: how far one :meth:`advance` step moves the clock.
    """

    def __init__(
        self,
        *,
        prices: Mapping[str, Sequence[Decimal]],
        balances: Mapping[str, Decimal] | None = None,
        seed: int = 0,
        faults: Faults = Faults(),  # frozen: one shared default is safe
        name: str = "paper",
        max_fill_per_step: Decimal | None = None,
        start: datetime = START,
        step: timedelta = timedelta(minutes=1),
    ) -> None:
        if not prices:
            raise ValueError("a paper exchange needs at least one symbol's price path")
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be an aware datetime (UTC)")
        if step <= timedelta(0):
            raise ValueError(f"step must be positive, not {step}")
        self.name = name
        self.faults = faults
        self.seed = seed
        self._rng = random.Random(seed)
        self._paths: dict[str, list[Decimal]] = {}
        for symbol, path in prices.items():
            _assets(symbol)
            checked = [_decimal(p, f"price of {symbol}") for p in path]
            if not checked or any(p <= 0 for p in checked):
                raise ValueError(f"the price path of {symbol!r} must be non-empty and positive")
            self._paths[symbol] = checked
        if max_fill_per_step is not None:
            max_fill_per_step = _decimal(max_fill_per_step, "max_fill_per_step")
            if max_fill_per_step <= 0:
                raise ValueError("max_fill_per_step must be positive (or None)")
        self.max_fill_per_step = max_fill_per_step
        self._start = start.astimezone(UTC)
        self._step = step
        self._steps = 0
        self._epoch = 0  # bumped by restart(): answers of calls in flight are lost
        self.restarts = 0
        self._wallets: dict[str, _Wallet] = {}
        for asset, amount in (balances or {}).items():
            free = _decimal(amount, f"balance of {asset}")
            if free < 0:
                raise ValueError(f"the balance of {asset} cannot be negative ({free})")
            self._wallets[asset] = _Wallet(free=free, updated_at=self._start)
        self._orders: dict[str, _PaperOrder] = {}
        self._by_client_id: dict[str, _PaperOrder] = {}
        self._fills: list[Fill] = []  # what happened
        self._fill_symbols: dict[str, str] = {}  # fill id -> symbol
        self._reports: list[Fill] = []  # what fetch_fills delivers: repeats included
        self._redeliveries: list[Fill] = []  # duplicates due at the next advance()
        self._holdings: dict[str, _Holding] = {}

    # -- the simulation (synchronous, for tests and examples) ------------------------------------

    @property
    def now(self) -> datetime:
        """The simulated clock: ``start + steps * step``."""
        return self._start + self._steps * self._step

    def price(self, symbol: str) -> Decimal:
        """The current price of ``symbol``."""
        path = self._path(symbol)
        return path[min(self._steps, len(path) - 1)]

    def advance(self, steps: int = 1) -> None:
        """Move every symbol to its next price ``steps`` times; after each move, deliver
        the fill reports due again and match the resting limit orders, oldest first."""
        if steps < 0:
            raise ValueError(f"steps must not be negative, not {steps}")
        for _ in range(steps):
            self._steps += 1
            self._reports.extend(self._redeliveries)
            self._redeliveries.clear()
            for order in list(self._orders.values()):
                if not order.status.final:
                    self._match(order, taker=False)

    def restart(self) -> None:
        """Restart the exchange: the answers of calls in flight are lost (the callers get
        ExchangeUnavailable, though their requests took effect); orders, fills and
        balances persist, and resting orders keep resting."""
        self._epoch += 1
        self.restarts += 1

    @property
    def orders(self) -> list[ExchangeOrder]:
        """Every order ever accepted, oldest first, as it is now (a test oracle)."""
        return [order.report() for order in self._orders.values()]

    @property
    def fills(self) -> list[Fill]:
        """Every fill that happened, once each, in order (a test oracle; fetch_fills
        delivers reports, which may repeat or come shuffled)."""
        return [fill.model_copy() for fill in self._fills]

    # -- the connector contract ------------------------------------------------------------------

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
        """Place an order; see the module docstring for how it matches.

        ``time_in_force`` applies to limit orders; a market order fills at once
        whatever it says (and reports it as given).

        :raises OrderRejected: unknown symbol, unsupported type or time in force, bad
            amount or price, insufficient funds, or a client order id already used.
        """
        return await self._call(
            "create_order",
            lambda: self._place(
                symbol, type, side, amount, price, client_order_id, time_in_force
            ).report(),
            "timeout_before_accept",
            "timeout_after_accept",
        )

    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        """Cancel an open order and unlock what it held; a final order is returned as it is."""
        return await self._call("cancel_order", lambda: self._cancel(order_id, symbol).report())

    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        return await self._call("fetch_order", lambda: self._order(order_id, symbol).report())

    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        """The order accepted with ``client_order_id`` for ``symbol``; None when none was."""

        def lookup() -> ExchangeOrder | None:
            order = self._by_client_id.get(client_order_id)
            return order.report() if order is not None and order.symbol == symbol else None

        return await self._call("fetch_order_by_client_id", lookup)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return await self._call(
            "fetch_open_orders",
            lambda: [
                o.report()
                for o in self._orders.values()
                if not o.status.final and symbol in (None, o.symbol)
            ],
        )

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        """The net base amount each symbol's fills add up to (signed), with its average
        entry price; symbols whose fills net to zero are not listed."""

        def positions() -> list[ExchangePosition]:
            return [
                ExchangePosition(symbol=symbol, amount=h.amount, entry_price=h.entry_price, at=h.at)
                for symbol, h in sorted(self._holdings.items())
                if h.amount != 0 and (symbols is None or symbol in symbols)
            ]

        return await self._call("fetch_positions", positions)

    async def fetch_balance(self) -> dict[str, Balance]:
        return await self._call(
            "fetch_balance",
            lambda: {
                asset: Balance(asset=asset, free=w.free, locked=w.locked, updated_at=w.updated_at)
                for asset, w in sorted(self._wallets.items())
            },
        )

    async def fetch_fills(self, symbol: str | None = None, since: int = 0) -> list[Fill]:
        """The fill reports after the first ``since`` ones (of ``symbol``, when given).

        A report may be delivered twice (``Faults.duplicate_fill``) and a call may
        return its reports shuffled (``Faults.out_of_order_fills``).
        """
        if since < 0:
            raise ValueError(f"since must not be negative, not {since}")
        hit = self._draw(("out_of_order_fills",))
        shuffle = "out_of_order_fills" in hit
        return await self._answer(
            "fetch_fills", hit, lambda: self._fill_reports(symbol, since, shuffle)
        )

    # -- calls: faults and answers ---------------------------------------------------------------

    def _draw(self, kinds: tuple[str, ...]) -> frozenset[str]:
        # Always the same draws per call, whatever the probabilities: reproducible runs.
        names = ("rate_limit", "lost_ack", *kinds)
        return frozenset(n for n in names if self._rng.random() < getattr(self.faults, n))

    async def _call(self, request: str, effect: Callable[[], T], *kinds: str) -> T:
        return await self._answer(request, self._draw(kinds), effect)

    async def _answer(self, request: str, hit: frozenset[str], effect: Callable[[], T]) -> T:
        """Apply the faults drawn for one call around its effect."""
        if "rate_limit" in hit:
            raise RateLimited(
                f"{self.name}: {request} refused: rate limit exceeded (injected)",
                exchange=self.name,
            )
        if "timeout_before_accept" in hit:
            raise ExchangeUnavailable(
                f"{self.name}: {request} timed out before the exchange got it (injected)",
                exchange=self.name,
            )
        epoch = self._epoch
        refused: ExchangeError | None = None
        try:
            result = effect()
        except ExchangeError as exc:
            refused = exc
        await asyncio.sleep(0)  # the answer travels back; a restart meanwhile loses it
        if self._epoch != epoch:
            raise ExchangeUnavailable(
                f"{self.name}: restarted while {request} was in flight; the answer was lost",
                exchange=self.name,
            )
        if "timeout_after_accept" in hit:
            raise ExchangeUnavailable(
                f"{self.name}: {request} timed out after the exchange accepted it (injected)",
                exchange=self.name,
            )
        if "lost_ack" in hit:
            raise ExchangeUnavailable(
                f"{self.name}: the answer to {request} was lost (injected)", exchange=self.name
            )
        if refused is not None:
            raise refused
        return result

    # -- the exchange itself ---------------------------------------------------------------------

    def _path(self, symbol: str) -> list[Decimal]:
        path = self._paths.get(symbol)
        if path is None:
            trades = ", ".join(sorted(self._paths))
            raise self._reject(f"unknown symbol {symbol!r} (trades: {trades})")
        return path

    def _fill_reports(self, symbol: str | None, since: int, shuffle: bool) -> list[Fill]:
        chosen = [
            report.model_copy()
            for report in self._reports
            if symbol is None or self._fill_symbols[report.id] == symbol
        ][since:]
        if shuffle:
            self._rng.shuffle(chosen)
        return chosen

    def _wallet(self, asset: str) -> _Wallet:
        return self._wallets.setdefault(asset, _Wallet(updated_at=self.now))

    def _reject(self, message: str) -> OrderRejected:
        return OrderRejected(f"{self.name}: {message}", exchange=self.name)

    def _place(
        self,
        symbol: str,
        type: OrderType,
        side: OrderSide,
        amount: Decimal,
        price: Decimal | None,
        client_order_id: str,
        time_in_force: TimeInForce,
    ) -> _PaperOrder:
        if not isinstance(client_order_id, str) or not client_order_id:
            raise self._reject("a client order id is required")
        if client_order_id in self._by_client_id:
            raise self._reject(f"duplicate clientOrderId {client_order_id!r}")
        current = self.price(symbol)
        side, type = OrderSide(side), OrderType(type)
        try:
            time_in_force = TimeInForce(time_in_force)
        except ValueError:
            supported = ", ".join(t.value for t in TimeInForce)
            raise self._reject(
                f"time in force {time_in_force!r} is not supported ({supported})"
            ) from None
        amount = _decimal(amount, "amount")
        if amount <= 0:
            raise self._reject(f"amount must be positive, not {amount}")
        if type is OrderType.LIMIT:
            if price is None:
                raise self._reject("a limit order needs a price")
            price = _decimal(price, "price")
            if price <= 0:
                raise self._reject(f"price must be positive, not {price}")
        elif type is OrderType.MARKET:
            price = None  # CCXT ignores a market order's price too
        else:
            raise self._reject(f"order type {type.value!r} is not supported (market, limit)")
        base, quote = _assets(symbol)
        if side is OrderSide.BUY:
            asset, needed = quote, amount * (price if price is not None else current)
        else:
            asset, needed = base, amount
        free = self._wallets[asset].free if asset in self._wallets else ZERO
        if free < needed:
            raise self._reject(
                f"insufficient funds: {side.value} {amount} {symbol} needs {needed} {asset}, "
                f"{free} free"
            )
        now = self.now
        order = _PaperOrder(
            id=f"{self.name}-{len(self._orders) + 1}",
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
        self._orders[order.id] = order
        self._by_client_id[client_order_id] = order
        if order.price is None or time_in_force is not TimeInForce.FOK or self._fills_all(order):
            self._match(order, taker=True)
        if order.price is not None and time_in_force is not TimeInForce.GTC:
            # IOC and FOK never rest: what did not fill now is cancelled (a killed
            # FOK too, with nothing filled). Binance says EXPIRED for both; CCXT's
            # unified status for most venues, and ours, is cancelled.
            self._release(order)
        return order

    def _fills_all(self, order: _PaperOrder) -> bool:
        """True when the limit ``order`` would fill completely if matched now (FOK)."""
        assert order.price is not None
        current = self.price(order.symbol)
        buy = order.side is OrderSide.BUY
        crosses = current <= order.price if buy else current >= order.price
        cap = self.max_fill_per_step
        return crosses and (cap is None or order.remaining <= cap)

    def _match(self, order: _PaperOrder, *, taker: bool) -> None:
        current = self.price(order.symbol)
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

    def _fill(self, order: _PaperOrder, amount: Decimal, price: Decimal) -> None:
        now = self.now
        base_asset, quote_asset = _assets(order.symbol)
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
            id=f"{self.name}-fill-{len(self._fills) + 1}",
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
        self._fills.append(fill)
        self._fill_symbols[fill.id] = order.symbol
        self._reports.append(fill)
        if self._rng.random() < self.faults.duplicate_fill:
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

    def _order(self, order_id: str, symbol: str) -> _PaperOrder:
        order = self._orders.get(order_id)
        if order is None or order.symbol != symbol:
            raise OrderNotFound(
                f"{self.name}: no order {order_id!r} for {symbol!r}", exchange=self.name
            )
        return order

    def _cancel(self, order_id: str, symbol: str) -> _PaperOrder:
        order = self._order(order_id, symbol)
        self._release(order)
        return order

    def _release(self, order: _PaperOrder) -> None:
        """Cancel what is left of ``order`` and unlock what it held; a final order stays."""
        if order.status.final:
            return
        now = self.now
        base_asset, quote_asset = _assets(order.symbol)
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
