"""Reading ccxt's unified structures: the cases the Binance spot recordings do not reach.

The dicts here are shaped as ccxt's unified order, position and balance
structures (docs.ccxt.com, "Order Structure", "Position Structure"); they did
not come from a venue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from statekit_ccxt.structures import read_balances, read_order, read_position

from statekit.trading.errors import ExchangeError
from statekit.trading.models import OrderStatus, OrderType

NOW = datetime(2024, 6, 10, tzinfo=UTC)


def _order(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": "1",
        "clientOrderId": "sk-1",
        "timestamp": 1718000000123,
        "symbol": "BTC/USDT",
        "type": "limit",
        "side": "buy",
        "price": 60000.1,
        "amount": 0.3,
        "filled": 0.1,
        "status": "open",
        "trades": [],
        "info": {},
    }
    return order | changes


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("open", 0.0, OrderStatus.OPEN),
        ("open", 0.1, OrderStatus.PARTIALLY_FILLED),
        ("closed", 0.3, OrderStatus.FILLED),
        ("canceled", 0.1, OrderStatus.CANCELLED),
        ("expired", 0.0, OrderStatus.EXPIRED),
        ("rejected", 0.0, OrderStatus.REJECTED),
        (None, 0.0, OrderStatus.NEW),
    ],
)
def test_ccxt_statuses(status: str | None, filled: float, expected: OrderStatus) -> None:
    order = read_order(_order(status=status, filled=filled), exchange="x", now=NOW)
    assert order.status is expected


def test_floats_from_ccxt_are_read_through_their_shortest_repr() -> None:
    order = read_order(_order(amount=0.3, filled=0.1, price=60000.1), exchange="x", now=NOW)
    assert (order.amount, order.filled, order.price) == (
        Decimal("0.3"),
        Decimal("0.1"),
        Decimal("60000.1"),
    )
    assert order.remaining == Decimal("0.2")  # 0.3 - 0.1 in floats is 0.19999999999999998


def test_strings_from_ccxt_are_read_as_they_are() -> None:  # exchange.number = str
    order = read_order(_order(amount="0.30000000", filled="0.1"), exchange="x", now=NOW)
    assert order.amount == Decimal("0.3") and order.filled == Decimal("0.1")


@pytest.mark.parametrize(
    ("type", "trigger", "expected"),
    [
        ("market", None, OrderType.MARKET),
        ("limit", None, OrderType.LIMIT),
        ("limit_maker", None, OrderType.LIMIT),
        ("stop_loss_limit", 59000.0, OrderType.STOP_LIMIT),
        ("stop_loss", 59000.0, OrderType.STOP),
        ("limit", 59000.0, OrderType.STOP_LIMIT),
    ],
)
def test_order_types(type: str, trigger: float | None, expected: OrderType) -> None:
    order = read_order(_order(type=type, triggerPrice=trigger), exchange="x", now=NOW)
    assert order.type is expected


@pytest.mark.parametrize(
    "broken",
    [
        _order(id=None),
        _order(side="sideways"),
        _order(status="pending_new"),  # not one of ccxt's: not guessed
        _order(amount="lots"),
        _order(amount=float("nan")),
    ],
)
def test_an_unreadable_order_is_an_exchange_error(broken: dict[str, Any]) -> None:
    with pytest.raises(ExchangeError, match="cannot read an order"):
        read_order(broken, exchange="x", now=NOW)


def test_an_answer_that_is_not_a_structure_is_an_exchange_error() -> None:
    with pytest.raises(ExchangeError, match="not a dict"):
        read_order(["not", "an", "order"], exchange="x", now=NOW)


def test_positions_are_signed_in_base_units() -> None:
    def position(side: str, contracts: float) -> dict[str, Any]:
        return {
            "symbol": "BTC/USDT:USDT",
            "side": side,
            "contracts": contracts,
            "contractSize": 0.001,
            "entryPrice": 67000.5,
            "timestamp": 1718000000123,
        }

    long = read_position(position("long", 250), exchange="x", now=NOW)
    short = read_position(position("short", 3), exchange="x", now=NOW)

    assert long is not None and long.amount == Decimal("0.25")
    assert short is not None and short.amount == Decimal("-0.003")
    assert long.entry_price == Decimal("67000.5")
    assert read_position(position("long", 0), exchange="x", now=NOW) is None


def test_balances_without_a_timestamp_are_as_of_now() -> None:
    raw = {
        "info": {},
        "BTC": {"free": 0.5, "used": 0.25, "total": 0.75},
        "ETH": {"free": None, "used": None, "total": None},
        "free": {"BTC": 0.5},
        "used": {"BTC": 0.25},
        "total": {"BTC": 0.75},
    }
    balances = read_balances(raw, exchange="x", now=NOW)
    assert list(balances) == ["BTC"]
    assert balances["BTC"].total == Decimal("0.75") and balances["BTC"].updated_at == NOW
