"""Order and position events: what happened to an aggregate, typed, with Decimal amounts.

An *aggregate* is one order (by its client order id) or one position (by its
symbol). Each event says one thing that happened to it; the events of an
aggregate, in version order, are its whole story, and folding them
(:mod:`statekit.trading.events.fold`) gives its state.

Every event has an ``event_id`` (random unless given), the ``aggregate_id`` and
``version`` it was stored as (filled in by the event store: leave them out when
appending), the moment ``at`` it happened (UTC; now unless given) and a typed
``payload``. Amounts and prices are ``Decimal``; the rules that need the
aggregate's state (a fill cannot be negative or exceed what remains, nothing
follows a final status) are checked by the fold, so a bad event is refused with
:class:`statekit.errors.ValidationError` before anything is stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from statekit.backend import JSON
from statekit.errors import ValidationError
from statekit.trading import kinds
from statekit.trading.models import Money, OrderSide, OrderType, Quantity, UtcTime

__all__ = [
    "EVENT_KINDS",
    "SNAPSHOT_KIND",
    "Aggregate",
    "AggregateType",
    "Event",
    "OrderCancellation",
    "OrderCancelled",
    "OrderEvent",
    "OrderFill",
    "OrderFilled",
    "OrderPartiallyFilled",
    "OrderPlaced",
    "OrderPlacement",
    "PositionChange",
    "PositionClosed",
    "PositionClosing",
    "PositionEvent",
    "PositionModified",
    "PositionOpened",
    "PositionOpening",
    "event_json",
    "parse_event",
]


class AggregateType(StrEnum):
    """What an event stream is about."""

    ORDER = "order"
    POSITION = "position"


EVENT_KINDS = {
    AggregateType.ORDER: "trading.order_event",
    AggregateType.POSITION: "trading.position_event",
}
"""The kind of an aggregate's event versions, per aggregate type."""
SNAPSHOT_KIND = kinds.AGGREGATE_SNAPSHOT
"""The kind of an aggregate snapshot (``{"version": n, "state": {...}}``)."""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One event stream: an order by its client order id, or a position by its symbol.

    Make one with :meth:`order` or :meth:`position`.
    """

    type: AggregateType
    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValidationError(
                f"an {self.type.value} aggregate needs a non-empty string id, not {self.id!r}",
                reason="aggregate id",
            )

    @classmethod
    def order(cls, order_id: str) -> Aggregate:
        """The stream of the order with client order id ``order_id``."""
        return cls(AggregateType.ORDER, order_id)

    @classmethod
    def position(cls, symbol: str) -> Aggregate:
        """The stream of the position in ``symbol`` (all its openings and closings)."""
        return cls(AggregateType.POSITION, symbol)

    def __str__(self) -> str:
        return f"{self.type.value} {self.id!r}"


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderPlacement(_Payload):
    """What was asked: the order's fields (see :class:`statekit.trading.Order`)."""

    symbol: str = Field(min_length=1)
    side: OrderSide
    type: OrderType = OrderType.LIMIT
    amount: Money
    price: Money | None = None
    stop_price: Money | None = None
    exchange_order_id: str | None = None
    strategy_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class OrderFill(_Payload):
    """One fill: this fill's own ``amount`` (not the running total) at ``price``."""

    amount: Money
    price: Money
    trade_id: str | None = None


class OrderCancellation(_Payload):
    """Why the order was cancelled, when known."""

    reason: str | None = None


class PositionOpening(_Payload):
    """A position opened: signed ``amount`` (negative: short) at ``price``."""

    amount: Money
    price: Money
    leverage: Quantity | None = None


class PositionChange(_Payload):
    """A position grew or shrank by the signed ``amount`` at ``price``.

    Growing averages the entry price; shrinking realizes PnL on what was taken off.
    """

    amount: Money
    price: Money


class PositionClosing(_Payload):
    """A position closed in full at ``price``; the PnL of what was left is realized."""

    price: Money


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aggregate_type: ClassVar[AggregateType]

    event_id: str = Field(default_factory=_new_id, min_length=1)
    aggregate_id: str | None = None
    """The order id or symbol; filled in when stored (None or the same id when appending)."""
    version: int = Field(default=0, ge=0)
    """The aggregate version this event is (1, 2, 3...); 0 until stored."""
    at: UtcTime = Field(default_factory=_now)
    """When it happened (the exchange's time, when known)."""


class OrderPlaced(_Event):
    """The order was placed: it exists from now on, open."""

    aggregate_type = AggregateType.ORDER
    type: Literal["order_placed"] = "order_placed"
    payload: OrderPlacement


class OrderPartiallyFilled(_Event):
    """Part of the order filled; some of it remains."""

    aggregate_type = AggregateType.ORDER
    type: Literal["order_partially_filled"] = "order_partially_filled"
    payload: OrderFill


class OrderFilled(_Event):
    """The last fill: it fills exactly what remained."""

    aggregate_type = AggregateType.ORDER
    type: Literal["order_filled"] = "order_filled"
    payload: OrderFill


class OrderCancelled(_Event):
    """The order was cancelled; what filled before stays filled."""

    aggregate_type = AggregateType.ORDER
    type: Literal["order_cancelled"] = "order_cancelled"
    payload: OrderCancellation = Field(default_factory=OrderCancellation)


class PositionOpened(_Event):
    """A position was opened (again, after it was closed: the symbol keeps one stream)."""

    aggregate_type = AggregateType.POSITION
    type: Literal["position_opened"] = "position_opened"
    payload: PositionOpening


class PositionModified(_Event):
    """An open position grew or shrank, without closing or flipping."""

    aggregate_type = AggregateType.POSITION
    type: Literal["position_modified"] = "position_modified"
    payload: PositionChange


class PositionClosed(_Event):
    """An open position was closed in full."""

    aggregate_type = AggregateType.POSITION
    type: Literal["position_closed"] = "position_closed"
    payload: PositionClosing


OrderEvent: TypeAlias = OrderPlaced | OrderPartiallyFilled | OrderFilled | OrderCancelled
"""Any order event."""
PositionEvent: TypeAlias = PositionOpened | PositionModified | PositionClosed
"""Any position event."""
Event: TypeAlias = OrderEvent | PositionEvent
"""Any event."""

_EVENTS: TypeAdapter[Event] = TypeAdapter(
    Annotated[
        OrderPlaced
        | OrderPartiallyFilled
        | OrderFilled
        | OrderCancelled
        | PositionOpened
        | PositionModified
        | PositionClosed,
        Field(discriminator="type"),
    ]
)


def event_json(event: Event) -> dict[str, JSON]:
    """The JSON an event is stored as: all but ``aggregate_id`` and ``version``,
    which are the stream's key and the event's version there."""
    data: dict[str, JSON] = event.model_dump(
        mode="json", exclude={"aggregate_id", "version"}, exclude_none=True
    )
    return data


def parse_event(data: object) -> Event:
    """An event from its stored JSON form (``type`` picks the class)."""
    return _EVENTS.validate_python(data)
