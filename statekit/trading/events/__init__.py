"""Event sourcing for orders and positions (seed 000, done right).

Every order and position is an *aggregate* whose events are the versions of
one key: appending event n is a compare-and-set write with ``expect=n-1``, so
concurrent appenders never lose or duplicate events. State is rebuilt by
folding events from the latest aggregate snapshot, and TradingState's
``order/<id>`` and ``position/<symbol>`` keys are kept in step as projections,
in the same atomic batch as the event where the backend has one.

See docs/events.md.
"""

from statekit.trading.events.fold import State, apply
from statekit.trading.events.models import (
    EVENT_KINDS,
    SNAPSHOT_KIND,
    Aggregate,
    AggregateType,
    Event,
    OrderCancellation,
    OrderCancelled,
    OrderEvent,
    OrderFill,
    OrderFilled,
    OrderPartiallyFilled,
    OrderPlaced,
    OrderPlacement,
    PositionChange,
    PositionClosed,
    PositionClosing,
    PositionEvent,
    PositionModified,
    PositionOpened,
    PositionOpening,
    event_json,
    parse_event,
)
from statekit.trading.events.store import DEFAULT_SNAPSHOT_EVERY, AggregateState, EventStore

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "EVENT_KINDS",
    "SNAPSHOT_KIND",
    "Aggregate",
    "AggregateState",
    "AggregateType",
    "Event",
    "EventStore",
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
    "State",
    "apply",
    "event_json",
    "parse_event",
]
