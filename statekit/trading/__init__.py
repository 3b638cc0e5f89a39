"""The trading layer: domain models and services built on the store.

``TradingState(store)`` keeps positions, orders, balances, pair states and the
portfolio, each item versioned with its history; see :mod:`statekit.trading.state`.
The safety primitives: :class:`KeyedLocks` (in-process), :class:`Lease` (across
processes, fencing tokens), :class:`IdempotencyLedger` (orders placed exactly
once), :class:`EventStore` (event sourcing), and the exchange connector contract
with the deterministic :class:`PaperExchange`.
"""

from statekit.trading.events import Aggregate, EventStore
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.idempotency import IdempotencyLedger, OrderIntent, PlacedOrder
from statekit.trading.leases import Lease
from statekit.trading.locks import KeyedLocks, LockOrderError
from statekit.trading.models import (
    Balance,
    Direction,
    Money,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    PairState,
    Portfolio,
    Position,
    Quantity,
    TimeInForce,
    UtcTime,
    to_json,
)
from statekit.trading.paper import Faults, PaperExchange
from statekit.trading.state import Item, SaveResult, Section, TradingSnapshot, TradingState

__all__ = [
    "Aggregate",
    "Balance",
    "Direction",
    "EventStore",
    "ExchangeConnector",
    "ExchangeOrder",
    "ExchangePosition",
    "Faults",
    "Fill",
    "IdempotencyLedger",
    "Item",
    "KeyedLocks",
    "Lease",
    "LockOrderError",
    "Money",
    "Order",
    "OrderIntent",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "PairState",
    "PaperExchange",
    "PlacedOrder",
    "Portfolio",
    "Position",
    "Quantity",
    "SaveResult",
    "Section",
    "TimeInForce",
    "TradingSnapshot",
    "TradingState",
    "UtcTime",
    "to_json",
]
