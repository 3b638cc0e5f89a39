"""The trading layer: domain models and services built on the store.

``TradingState(store)`` keeps positions, orders, balances, pair states and the
portfolio, each item versioned with its history; see :mod:`statekit.trading.state`.
"""

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
    UtcTime,
    to_json,
)
from statekit.trading.state import Item, SaveResult, Section, TradingSnapshot, TradingState

__all__ = [
    "Balance",
    "Direction",
    "Item",
    "Money",
    "Order",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "PairState",
    "Portfolio",
    "Position",
    "Quantity",
    "SaveResult",
    "Section",
    "TradingSnapshot",
    "TradingState",
    "UtcTime",
    "to_json",
]
