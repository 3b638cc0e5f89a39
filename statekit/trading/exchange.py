"""The exchange connector contract, shaped on CCXT's unified API and structures.

A connector is what statekit talks to when it places, cancels and looks up
orders. Plugins register connectors through ``statekit_register_connectors``;
the built-in paper exchange (:mod:`statekit.trading.paper`) is one.

The rules every connector keeps (the idempotency ledger and the reconciler
rely on them):

- ``create_order`` sends ``client_order_id`` to the exchange, and the exchange
  keeps it with the order, so the order can be found by it later.
- A call that gets no answer raises :class:`~statekit.errors.ExchangeUnavailable`:
  the request *may* have taken effect. A call refused before taking effect
  raises :class:`~statekit.errors.RateLimited` or
  :class:`~statekit.errors.OrderRejected`. Nothing else leaks (no ccxt or
  aiohttp types).
- Amounts and prices are ``Decimal``; times are aware UTC datetimes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal
from typing import Self

from pydantic import Field

from statekit.trading.models import (
    Balance,
    Money,
    OrderSide,
    OrderStatus,
    OrderType,
    Quantity,
    TimeInForce,
    UtcTime,
    _Model,
)

__all__ = ["ExchangeConnector", "ExchangeOrder", "ExchangePosition", "Fill"]


class Fill(_Model):
    """One execution of an order (CCXT's trade): ``amount`` at ``price``.

    ``id`` is unique per exchange, so a fill reported twice is recognised.
    """

    id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    amount: Quantity
    price: Money
    fee: Quantity = Decimal(0)
    at: UtcTime


class ExchangeOrder(_Model):
    """An order as the exchange reports it (CCXT's order structure, typed)."""

    id: str = Field(min_length=1)
    """The exchange's order id."""
    client_order_id: str | None = None
    """Ours, as sent with ``create_order``."""
    symbol: str = Field(min_length=1)
    side: OrderSide
    type: OrderType
    amount: Quantity
    price: Money | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    status: OrderStatus
    filled: Quantity = Decimal(0)
    average_price: Money | None = None
    fills: list[Fill] = Field(default_factory=list)
    created_at: UtcTime
    updated_at: UtcTime

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


class ExchangePosition(_Model):
    """A position as the exchange reports it: ``amount`` is signed (negative: short)."""

    symbol: str = Field(min_length=1)
    amount: Money
    entry_price: Money | None = None
    at: UtcTime


class ExchangeConnector(ABC):
    """One exchange account. See the module docstring for the rules.

    Use it as ``async with connector:``; ``aclose()`` releases connections.
    """

    name: str = "exchange"

    @abstractmethod
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
        """Place an order carrying ``client_order_id``.

        ``time_in_force`` applies to limit orders (a market order fills at once
        whatever it says); a connector whose venue lacks one refuses the order
        with OrderRejected rather than place it as something else.

        :raises ExchangeUnavailable: no answer; the order may or may not exist.
        :raises RateLimited: refused for the rate limit; it does not exist.
        :raises OrderRejected: refused; it does not exist.
        """

    @abstractmethod
    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        """Cancel an order; returns it as it is after the cancel (it may have filled first).

        :raises OrderNotFound: the exchange knows no such order.
        """

    @abstractmethod
    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        """The order with the exchange's ``order_id``.

        :raises OrderNotFound: the exchange knows no such order.
        """

    @abstractmethod
    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        """The order placed with ``client_order_id``; None when the exchange has none.

        None is an answer (the order was never accepted), not a failure: a
        connector that cannot tell raises ExchangeUnavailable instead.
        """

    @abstractmethod
    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        """Orders not final yet, of one symbol or all."""

    @abstractmethod
    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        """Open positions (derivatives accounts; spot connectors may return [])."""

    @abstractmethod
    async def fetch_balance(self) -> dict[str, Balance]:
        """Balances by asset."""

    @abstractmethod
    async def fetch_fills(self, symbol: str | None = None, since: int = 0) -> list[Fill]:
        """Executions reported after the first ``since`` ones (CCXT's fetch_my_trades).

        Reports may come twice or out of order (real exchanges do this); a
        consumer dedupes by ``Fill.id``.
        """

    async def aclose(self) -> None:
        """Release connections. The default has nothing to release."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
