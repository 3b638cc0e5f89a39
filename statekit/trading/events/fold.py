"""Folding events into state: the rules of what may happen to an order or a position.

``apply(aggregate, state, event)`` returns the state after ``event``, or raises
:class:`~statekit.errors.ValidationError` when the event cannot happen to that
state. The event store runs the same fold to check events before it stores
them and to rebuild state from them, so a stored stream always folds.

Orders (state: :class:`~statekit.trading.Order`):

- ``order_placed`` starts it (status ``open``); it cannot be placed twice.
- ``order_partially_filled`` adds a fill that leaves something to fill;
  ``order_filled`` adds the fill that fills exactly what remained. A fill is
  more than 0 at a price more than 0; the average price is the fills' amount-weighted mean.
- ``order_cancelled`` ends it; what filled stays filled.
- Nothing follows a final status (filled, cancelled).

Positions (state: :class:`~statekit.trading.Position`, one per symbol):

- ``position_opened`` with a signed amount at a price, when flat (or never opened).
- ``position_modified`` by a signed amount at a price: growing averages the
  entry price; shrinking realizes ``(price - entry) * amount taken off`` (sign
  included), and may neither reach zero (use ``position_closed``) nor flip sides.
- ``position_closed`` at a price realizes the rest; the position is flat
  (amount 0, no entry price) and keeps its realized PnL, which adds up over
  the symbol's openings and closings.
"""

from __future__ import annotations

from decimal import Decimal

import pydantic

from statekit.errors import ValidationError
from statekit.trading.events.models import (
    Aggregate,
    AggregateType,
    Event,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderPlaced,
    PositionClosed,
    PositionModified,
    PositionOpened,
)
from statekit.trading.models import Order, OrderStatus, Position

__all__ = ["State", "apply", "apply_order", "apply_position"]

State = Order | Position | None
"""An aggregate's state: None before its first event."""

_ZERO = Decimal(0)


def apply(aggregate: Aggregate, state: State, event: Event, *, key: str | None = None) -> State:
    """The state of ``aggregate`` after ``event``.

    :param key: the stream's key, named in errors.
    :raises ValidationError: the event cannot happen to this state.
    """
    if event.aggregate_type is not aggregate.type:
        raise ValidationError(
            f"{aggregate}: a {event.type} event belongs to a {event.aggregate_type.value} stream",
            key=key,
            reason="wrong aggregate type",
        )
    if aggregate.type is AggregateType.ORDER:
        assert state is None or isinstance(state, Order)
        return apply_order(aggregate.id, state, event, key=key)
    assert state is None or isinstance(state, Position)
    return apply_position(aggregate.id, state, event, key=key)


def _refuse(message: str, key: str | None, reason: str) -> ValidationError:
    return ValidationError(message, key=key, reason=reason)


def apply_order(order_id: str, order: Order | None, event: Event, *, key: str | None) -> Order:
    """The order after ``event`` (see the module docstring for the rules)."""
    if isinstance(event, OrderPlaced):
        return _placed(order_id, order, event, key)
    if order is None:
        raise _refuse(
            f"order {order_id!r} was never placed: {event.type} cannot come first",
            key,
            "no such order",
        )
    if order.status.final:
        raise _refuse(
            f"order {order_id!r} is {order.status.value}: no {event.type} can follow",
            key,
            f"order {order.status.value}",
        )
    if isinstance(event, OrderCancelled):
        return order.model_copy(update={"status": OrderStatus.CANCELLED, "updated_at": event.at})
    if isinstance(event, OrderPartiallyFilled | OrderFilled):
        return _filled(order_id, order, event, key)
    raise _refuse(f"order {order_id!r}: {event.type} is not an order event", key, "not an order")


def _placed(order_id: str, order: Order | None, event: OrderPlaced, key: str | None) -> Order:
    if order is not None:
        raise _refuse(f"order {order_id!r} was placed already", key, "placed twice")
    placement = event.payload
    try:
        return Order(
            id=order_id,
            symbol=placement.symbol,
            side=placement.side,
            type=placement.type,
            amount=placement.amount,
            price=placement.price,
            stop_price=placement.stop_price,
            status=OrderStatus.OPEN,
            exchange_order_id=placement.exchange_order_id,
            strategy_id=placement.strategy_id,
            tags=placement.tags,
            created_at=event.at,
            updated_at=event.at,
        )
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '$'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise _refuse(f"order {order_id!r}: {problems}", key, "bad order") from None


def _filled(
    order_id: str, order: Order, event: OrderPartiallyFilled | OrderFilled, key: str | None
) -> Order:
    fill = event.payload
    if fill.amount <= _ZERO:
        raise _refuse(
            f"order {order_id!r}: a fill must be more than 0, not {fill.amount}",
            key,
            "fill not positive",
        )
    if fill.price <= _ZERO:
        raise _refuse(
            f"order {order_id!r}: a fill price must be more than 0, not {fill.price}",
            key,
            "price not positive",
        )
    remaining = order.amount - order.filled
    if fill.amount > remaining:
        raise _refuse(
            f"order {order_id!r}: a fill of {fill.amount} is more than the {remaining} "
            "that remains",
            key,
            "overfill",
        )
    complete = fill.amount == remaining
    if isinstance(event, OrderFilled) and not complete:
        raise _refuse(
            f"order {order_id!r}: order_filled must fill the {remaining} that remains, "
            f"not {fill.amount} (use order_partially_filled)",
            key,
            "fill short of amount",
        )
    if isinstance(event, OrderPartiallyFilled) and complete:
        raise _refuse(
            f"order {order_id!r}: a fill of {fill.amount} fills the order: send it as order_filled",
            key,
            "partial fill completes",
        )
    filled = order.filled + fill.amount
    before = order.average_price or _ZERO
    average = (before * order.filled + fill.price * fill.amount) / filled
    return order.model_copy(
        update={
            "filled": filled,
            "average_price": average,
            "status": OrderStatus.FILLED if complete else OrderStatus.PARTIALLY_FILLED,
            "updated_at": event.at,
        }
    )


def apply_position(
    symbol: str, position: Position | None, event: Event, *, key: str | None
) -> Position:
    """The position after ``event`` (see the module docstring for the rules)."""
    amount = position.amount if position is not None and position.amount is not None else _ZERO
    realized = (
        position.realized_pnl
        if position is not None and position.realized_pnl is not None
        else _ZERO
    )
    if isinstance(event, PositionOpened):
        return _opened(symbol, amount, realized, event, key)
    if amount == _ZERO or position is None or position.entry_price is None:
        raise _refuse(
            f"position {symbol!r} is not open: {event.type} needs position_opened first",
            key,
            "position closed",
        )
    if isinstance(event, PositionClosed):
        price = event.payload.price
        _positive_price(symbol, price, key)
        return position.model_copy(
            update={
                "amount": _ZERO,
                "entry_price": None,
                "realized_pnl": realized + (price - position.entry_price) * amount,
                "last_updated": event.at,
            }
        )
    if isinstance(event, PositionModified):
        return _modified(symbol, position, realized, event, key)
    raise _refuse(
        f"position {symbol!r}: {event.type} is not a position event", key, "not a position"
    )


def _opened(
    symbol: str, amount: Decimal, realized: Decimal, event: PositionOpened, key: str | None
) -> Position:
    opening = event.payload
    if amount != _ZERO:
        raise _refuse(
            f"position {symbol!r} is open ({amount}): close it before opening again",
            key,
            "already open",
        )
    _positive_price(symbol, opening.price, key)
    if opening.amount == _ZERO:
        raise _refuse(f"position {symbol!r}: cannot open with amount 0", key, "zero amount")
    return Position(
        symbol=symbol,
        amount=opening.amount,
        entry_price=opening.price,
        realized_pnl=realized,
        leverage=opening.leverage,
        last_updated=event.at,
    )


def _modified(
    symbol: str, position: Position, realized: Decimal, event: PositionModified, key: str | None
) -> Position:
    """An open position changed by a signed amount: grown (the entry averaged) or shrunk
    (PnL realized on what was taken off); never to zero, never through it."""
    amount, entry = position.amount, position.entry_price
    assert amount is not None and entry is not None
    change = event.payload
    _positive_price(symbol, change.price, key)
    if change.amount == _ZERO:
        raise _refuse(f"position {symbol!r}: a change of 0 changes nothing", key, "zero amount")
    after = amount + change.amount
    if after == _ZERO:
        raise _refuse(
            f"position {symbol!r}: this change closes the position: send position_closed",
            key,
            "modify closes",
        )
    if (after > _ZERO) != (amount > _ZERO):
        raise _refuse(
            f"position {symbol!r}: a change of {change.amount} flips {amount} to {after}: "
            "close it, then open the other side",
            key,
            "flip",
        )
    if (change.amount > _ZERO) == (amount > _ZERO):  # grows: average the entry
        entry = (entry * abs(amount) + change.price * abs(change.amount)) / abs(after)
    else:  # shrinks: realize on what was taken off
        realized += (change.price - entry) * -change.amount
    return position.model_copy(
        update={
            "amount": after,
            "entry_price": entry,
            "realized_pnl": realized,
            "last_updated": event.at,
        }
    )


def _positive_price(symbol: str, price: Decimal, key: str | None) -> None:
    if price <= _ZERO:
        raise _refuse(
            f"position {symbol!r}: a price must be more than 0, not {price}",
            key,
            "price not positive",
        )
