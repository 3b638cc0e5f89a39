""":class:`PaperExchange`: the connector contract over a paper market and book, with faults."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderType, TimeInForce
from statekit.trading.paper.book import Book
from statekit.trading.paper.faults import Faults, answer, draw
from statekit.trading.paper.market import START, Market, decimal

__all__ = ["PaperExchange"]

T = TypeVar("T")

_NO_FAULTS = Faults()  # frozen: one shared default is safe


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
        faults: Faults = _NO_FAULTS,
        name: str = "paper",
        max_fill_per_step: Decimal | None = None,
        start: datetime = START,
        step: timedelta = timedelta(minutes=1),
    ) -> None:
        self.name = name
        self.faults = faults
        self.seed = seed
        self._rng = random.Random(seed)
        self._market = Market(prices, name=name, start=start, step=step)
        if max_fill_per_step is not None:
            max_fill_per_step = decimal(max_fill_per_step, "max_fill_per_step")
            if max_fill_per_step <= 0:
                raise ValueError("max_fill_per_step must be positive (or None)")
        self._epoch = 0  # bumped by restart(): answers of calls in flight are lost
        self.restarts = 0
        self._book = Book(
            self._market,
            name=name,
            balances=balances or {},
            max_fill_per_step=max_fill_per_step,
            redeliver=lambda: self._rng.random() < self.faults.duplicate_fill,
        )

    @property
    def max_fill_per_step(self) -> Decimal | None:
        """The most a limit order fills when placed and per step (None: no limit)."""
        return self._book.max_fill_per_step

    @max_fill_per_step.setter
    def max_fill_per_step(self, value: Decimal | None) -> None:
        self._book.max_fill_per_step = value

    # -- the simulation (synchronous, for tests and examples) ------------------------------------

    @property
    def now(self) -> datetime:
        """The simulated clock: ``start + steps * step``."""
        return self._market.now

    def price(self, symbol: str) -> Decimal:
        """The current price of ``symbol``."""
        return self._market.price(symbol)

    def advance(self, steps: int = 1) -> None:
        """Move every symbol to its next price ``steps`` times; after each move, deliver
        the fill reports due again and match the resting limit orders, oldest first."""
        if steps < 0:
            raise ValueError(f"steps must not be negative, not {steps}")
        for _ in range(steps):
            self._market.steps += 1
            self._book.step()

    def restart(self) -> None:
        """Restart the exchange: the answers of calls in flight are lost (the callers get
        ExchangeUnavailable, though their requests took effect); orders, fills and
        balances persist, and resting orders keep resting."""
        self._epoch += 1
        self.restarts += 1

    @property
    def orders(self) -> list[ExchangeOrder]:
        """Every order ever accepted, oldest first, as it is now (a test oracle)."""
        return [order.report() for order in self._book.orders.values()]

    @property
    def fills(self) -> list[Fill]:
        """Every fill that happened, once each, in order (a test oracle; fetch_fills
        delivers reports, which may repeat or come shuffled)."""
        return [fill.model_copy() for fill in self._book.fills]

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
        """Place an order; see the package docstring for how it matches.

        ``time_in_force`` applies to limit orders; a market order fills at once
        whatever it says (and reports it as given).

        :raises OrderRejected: unknown symbol, unsupported type or time in force, bad
            amount or price, insufficient funds, or a client order id already used.
        """
        return await self._call(
            "create_order",
            lambda: self._book.place(
                symbol, type, side, amount, price, client_order_id, time_in_force
            ).report(),
            "timeout_before_accept",
            "timeout_after_accept",
        )

    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        """Cancel an open order and unlock what it held; a final order is returned as it is."""
        return await self._call(
            "cancel_order", lambda: self._book.cancel(order_id, symbol).report()
        )

    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        return await self._call("fetch_order", lambda: self._book.order(order_id, symbol).report())

    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        """The order accepted with ``client_order_id`` for ``symbol``; None when none was."""

        def lookup() -> ExchangeOrder | None:
            order = self._book.by_client_id.get(client_order_id)
            return order.report() if order is not None and order.symbol == symbol else None

        return await self._call("fetch_order_by_client_id", lookup)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return await self._call("fetch_open_orders", lambda: self._book.open_orders(symbol))

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        """The net base amount each symbol's fills add up to (signed), with its average
        entry price; symbols whose fills net to zero are not listed."""
        return await self._call("fetch_positions", lambda: self._book.positions(symbols))

    async def fetch_balance(self) -> dict[str, Balance]:
        return await self._call("fetch_balance", self._book.balances)

    async def fetch_fills(self, symbol: str | None = None, since: int = 0) -> list[Fill]:
        """The fill reports after the first ``since`` ones (of ``symbol``, when given).

        A report may be delivered twice (``Faults.duplicate_fill``) and a call may
        return its reports shuffled (``Faults.out_of_order_fills``).
        """
        if since < 0:
            raise ValueError(f"since must not be negative, not {since}")
        hit = draw(self._rng, self.faults, ("out_of_order_fills",))
        shuffle = "out_of_order_fills" in hit

        def reports() -> list[Fill]:
            chosen = self._book.fill_reports(symbol, since)
            if shuffle:
                self._rng.shuffle(chosen)
            return chosen

        return await answer(self.name, "fetch_fills", hit, reports, lambda: self._epoch)

    async def _call(self, request: str, effect: Callable[[], T], *kinds: str) -> T:
        """One request: draw its faults, then answer it through them."""
        hit = draw(self._rng, self.faults, kinds)
        return await answer(self.name, request, hit, effect, lambda: self._epoch)
