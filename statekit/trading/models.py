"""The trading domain: positions, orders, balances, pair states and the portfolio.

pydantic v2 models at the boundary; money and quantities are ``Decimal`` (a
float given is converted through its shortest ``repr``, so ``0.1`` is
``Decimal("0.1")``; NaN and infinities are refused), times are timezone-aware
and kept in UTC (a naive ``datetime`` is refused: it names no moment).

Stored as JSON with :func:`to_json` (``Decimal`` as a string, exactly) and read
back with ``Model.model_validate``. Positions, pair states and the portfolio
allow extra fields: bots keep their own notes in them (seed 003's free-form
dicts), and statekit keeps those as given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from statekit.backend import JSON

__all__ = [
    "Balance",
    "Direction",
    "Money",
    "Order",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "PairState",
    "Portfolio",
    "Position",
    "Quantity",
    "TimeInForce",
    "UtcTime",
    "to_json",
]


def _exact_decimal(value: Any) -> Any:
    # Decimal(0.1) is 0.1000000000000000055...; the float's repr is what the user meant.
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def _utc(value: datetime, info: ValidationInfo) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        if info.context and info.context.get("naive_is_utc"):
            return value.replace(tzinfo=UTC)  # legacy data: see Position.from_legacy
        raise ValueError("a datetime needs a timezone (use datetime.now(UTC))")
    return value.astimezone(UTC)


Money = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(allow_inf_nan=False)]
"""A price, a PnL, a value: any finite Decimal."""
Quantity = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(allow_inf_nan=False, ge=0)]
"""An amount that cannot be negative."""
UtcTime = Annotated[datetime, AfterValidator(_utc)]
"""A timezone-aware moment, kept in UTC."""


def _now() -> datetime:
    return datetime.now(UTC)


class Direction(StrEnum):
    """Which way a position faces."""

    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    """How long an order stays on the book (CCXT's ``timeInForce``)."""

    GTC = "gtc"
    """Good till cancelled: it rests until filled or cancelled."""
    IOC = "ioc"
    """Immediate or cancel: what fills at once fills, the rest is cancelled."""
    FOK = "fok"
    """Fill or kill: all of it fills at once, or none of it does."""


class OrderStatus(StrEnum):
    """An order's life: new → open → partially_filled → filled, or a final no."""

    NEW = "new"
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        """Nothing more will happen to an order in this status."""
        return self in (self.FILLED, self.CANCELLED, self.REJECTED, self.EXPIRED)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, ser_json_inf_nan="strings", frozen=False
    )


class _Open(_Model):
    # Bots keep their own fields next to ours; they are stored and returned as given.
    model_config = ConfigDict(extra="allow")


class Position(_Open):
    """A position in one instrument (seed 000's fields) or in a pair (seed 003's form).

    Only ``symbol`` is required: a position is often saved as it is being built.
    Every field given is checked: amounts and prices are finite Decimals,
    ``leverage`` and ``quantity`` are not negative, times carry a timezone.
    ``amount`` is signed (negative: short); ``quantity`` with ``direction`` is
    the pair form's way to say the same.
    """

    symbol: str = Field(min_length=1)
    amount: Money | None = None
    entry_price: Money | None = None
    current_price: Money | None = None
    unrealized_pnl: Money | None = None
    realized_pnl: Money | None = None
    leverage: Quantity | None = None
    liquidation_price: Money | None = None
    last_updated: UtcTime | None = None
    # seed 003's pair form
    symbol1: str | None = None
    symbol2: str | None = None
    direction: Direction | None = None
    entry_time: UtcTime | None = None
    quantity: Quantity | None = None

    @classmethod
    def from_legacy(cls, symbol: str, data: dict[str, Any]) -> Position:
        """A position from a legacy ``TradingStateManager`` dict saved under ``symbol``.

        Legacy state files hold naive times (``datetime.now().isoformat()``);
        here they are read as UTC, the one reading that does not depend on the
        machine's timezone. ``symbol`` is used when the dict has none.
        """
        return cls.model_validate({"symbol": symbol, **data}, context={"naive_is_utc": True})

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.entry_price is not None and self.entry_price < 0:
            raise ValueError("entry_price cannot be negative")
        if self.current_price is not None and self.current_price < 0:
            raise ValueError("current_price cannot be negative")
        if self.amount is not None and self.direction is not None and self.amount != 0:
            facing = Direction.LONG if self.amount > 0 else Direction.SHORT
            if self.direction not in (facing,):
                raise ValueError(
                    f"direction {self.direction.value!r} contradicts amount {self.amount}"
                )
        return self


class Order(_Model):
    """An order as the system knows it: what was asked and what has happened since."""

    id: str = Field(min_length=1)
    """The client order id: ours, known before the exchange answers."""
    symbol: str = Field(min_length=1)
    side: OrderSide
    type: OrderType = OrderType.LIMIT
    amount: Quantity
    price: Money | None = None
    stop_price: Money | None = None
    status: OrderStatus = OrderStatus.NEW
    filled: Quantity = Decimal(0)
    average_price: Money | None = None
    exchange_order_id: str | None = None
    strategy_id: str | None = None
    created_at: UtcTime = Field(default_factory=_now)
    updated_at: UtcTime = Field(default_factory=_now)
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.amount == 0:
            raise ValueError("amount must be more than 0")
        if self.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and self.price is None:
            raise ValueError(f"a {self.type.value} order needs a price")
        if self.type in (OrderType.STOP, OrderType.STOP_LIMIT) and self.stop_price is None:
            raise ValueError(f"a {self.type.value} order needs a stop_price")
        if self.price is not None and self.price <= 0:
            raise ValueError("price must be more than 0")
        if self.filled > self.amount:
            raise ValueError(f"filled {self.filled} is more than amount {self.amount}")
        if self.status is OrderStatus.FILLED and self.filled != self.amount:
            raise ValueError("a filled order has filled == amount")
        return self

    @property
    def remaining(self) -> Decimal:
        """What is still to fill."""
        return self.amount - self.filled


class Balance(_Model):
    """What an account holds of one asset."""

    asset: str = Field(min_length=1)
    free: Quantity = Decimal(0)
    locked: Quantity = Decimal(0)
    updated_at: UtcTime = Field(default_factory=_now)

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


class PairState(_Open):
    """A strategy's state for one pair (seed 003: ``{"position": "long", "cooldown": 0}``)."""

    pair: str = Field(min_length=1)
    position: Direction | None = None
    cooldown: int | None = Field(default=None, ge=0)
    last_signal: str | None = None
    updated_at: UtcTime | None = None

    @classmethod
    def from_legacy(cls, pair: str, data: dict[str, Any]) -> PairState:
        """A pair state from a legacy dict saved under ``pair`` (naive times read as UTC)."""
        return cls.model_validate({"pair": pair, **data}, context={"naive_is_utc": True})


class Portfolio(_Open):
    """Account-wide figures (seed 003's ``portfolio_data``)."""

    total_value: Money | None = None
    cash: Money | None = None
    currency: str | None = None
    updated_at: UtcTime | None = None

    @classmethod
    def from_legacy(cls, data: dict[str, Any]) -> Portfolio:
        """The portfolio from a legacy ``portfolio_data`` dict (naive times read as UTC)."""
        return cls.model_validate(data, context={"naive_is_utc": True})


def to_json(model: BaseModel) -> dict[str, JSON]:
    """``model`` as the JSON value statekit stores: Decimal as string, times as ISO 8601.

    Fields left at None are left out, so a position saved with three fields is
    stored with three fields (and its extra fields as given).
    """
    data: dict[str, JSON] = model.model_dump(mode="json", exclude_none=True)
    return data
