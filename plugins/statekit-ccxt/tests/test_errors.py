"""Binance's error answers, through ccxt's own error mapping, come out as statekit's errors.

Each case is what the venue (or the socket) does; ccxt's binance class turns it
into a ccxt exception, and the connector into one statekit error. No ccxt or
aiohttp type comes out.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import pytest
from statekit_ccxt import CcxtConnector

from statekit.errors import StatekitError
from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from statekit.trading.models import OrderSide, OrderType


async def _place(connector: CcxtConnector) -> Any:
    return await connector.create_order(
        "BTC/USDT",
        OrderType.LIMIT,
        OrderSide.BUY,
        Decimal("0.1"),
        Decimal("60000.1"),
        client_order_id="sk-errors-1",
    )


def _answers(venue: Any) -> dict[str, Any]:
    return {
        "rate limit (HTTP 429, -1003)": venue.reply("error_rate_limit", status=429),
        "IP banned (HTTP 418)": venue.reply("error_rate_limit", status=418),
        "insufficient balance (-2010)": venue.reply("error_insufficient_balance", status=400),
        "duplicate client order id (-2010)": venue.reply("error_duplicate_order", status=400),
        "lot size filter (-1013)": venue.reply("error_lot_size", status=400),
        "invalid API key (-2015)": venue.reply("error_invalid_api_key", status=401),
        "execution status unknown (-1007)": venue.reply("error_execution_unknown", status=503),
        "bad gateway (HTML)": venue.raw("<html>502 Bad Gateway</html>", status=502),
        "timeout": TimeoutError(),
        "connection reset": aiohttp.ServerDisconnectedError(),
    }


CREATE_ORDER_CASES = [
    ("rate limit (HTTP 429, -1003)", RateLimited, ccxt_async.DDoSProtection),
    ("IP banned (HTTP 418)", RateLimited, ccxt_async.DDoSProtection),
    ("insufficient balance (-2010)", OrderRejected, ccxt_async.InsufficientFunds),
    ("duplicate client order id (-2010)", OrderRejected, ccxt_async.InvalidOrder),
    ("lot size filter (-1013)", OrderRejected, ccxt_async.InvalidOrder),
    ("invalid API key (-2015)", ExchangeError, ccxt_async.AuthenticationError),
    ("execution status unknown (-1007)", ExchangeUnavailable, ccxt_async.RequestTimeout),
    ("bad gateway (HTML)", ExchangeUnavailable, ccxt_async.ExchangeNotAvailable),
    ("timeout", ExchangeUnavailable, ccxt_async.RequestTimeout),
    ("connection reset", ExchangeUnavailable, ccxt_async.ExchangeNotAvailable),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("case", "error", "ccxt_error"), CREATE_ORDER_CASES)
async def test_create_order_errors(
    connector: CcxtConnector, venue: Any, case: str, error: type[ExchangeError], ccxt_error: Any
) -> None:
    venue.expect("POST", "/api/v3/order", _answers(venue)[case])

    with pytest.raises(StatekitError) as caught:
        await _place(connector)

    assert type(caught.value) is error  # exactly: not a subclass standing in for it
    assert isinstance(caught.value.__cause__, ccxt_error)  # what ccxt made of it
    assert caught.value.exchange == "binance"
    assert type(caught.value).__module__ == "statekit.trading.errors"


@pytest.mark.asyncio
async def test_retryable_says_what_may_be_tried_again(connector: CcxtConnector, venue: Any) -> None:
    outcomes = {}
    for case in ("rate limit (HTTP 429, -1003)", "timeout", "insufficient balance (-2010)"):
        venue.expect("POST", "/api/v3/order", _answers(venue)[case])
        with pytest.raises(ExchangeError) as caught:
            await _place(connector)
        outcomes[case] = caught.value.retryable
    venue.expect("POST", "/api/v3/order", _answers(venue)["invalid API key (-2015)"])
    with pytest.raises(ExchangeError) as caught:
        await _place(connector)
    outcomes["invalid API key"] = caught.value.retryable

    assert outcomes == {
        "rate limit (HTTP 429, -1003)": True,
        "timeout": True,
        "insufficient balance (-2010)": False,
        "invalid API key": False,  # the same keys will not do better
    }


@pytest.mark.asyncio
async def test_an_unknown_order_is_order_not_found(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("GET", "/api/v3/order", venue.reply("error_order_does_not_exist", status=400))

    with pytest.raises(OrderNotFound) as caught:
        await connector.fetch_order("999", "BTC/USDT")

    assert isinstance(caught.value.__cause__, ccxt_async.OrderNotFound)


@pytest.mark.asyncio
async def test_cancelling_an_order_the_venue_never_had_is_order_not_found(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect("DELETE", "/api/v3/order", venue.reply("error_unknown_order", status=400))
    venue.expect("GET", "/api/v3/order", venue.reply("error_order_does_not_exist", status=400))

    with pytest.raises(OrderNotFound):
        await connector.cancel_order("999", "BTC/USDT")


@pytest.mark.asyncio
async def test_a_refusal_outside_create_order_is_not_order_rejected(
    connector: CcxtConnector, venue: Any
) -> None:
    # OrderRejected means "the order does not exist"; for a lookup it would be a lie.
    with pytest.raises(ExchangeError) as caught:
        await connector.fetch_order("28458", "NOPE/USDT")  # ccxt: BadSymbol
    assert type(caught.value) is ExchangeError
    assert isinstance(caught.value.__cause__, ccxt_async.BadSymbol)
    assert venue.requests == []


@pytest.mark.asyncio
async def test_errors_of_reads_are_translated_too(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("GET", "/api/v3/account", venue.reply("error_invalid_api_key", status=401))
    venue.expect("GET", "/api/v3/openOrders", TimeoutError())
    venue.expect("GET", "/api/v3/myTrades", venue.reply("error_rate_limit", status=429))

    with pytest.raises(ExchangeError) as balance:
        await connector.fetch_balance()
    with pytest.raises(ExchangeUnavailable):
        await connector.fetch_open_orders()
    with pytest.raises(RateLimited):
        await connector.fetch_fills("BTC/USDT")
    assert type(balance.value) is ExchangeError and not balance.value.retryable


@pytest.mark.asyncio
async def test_the_callers_decimal_context_is_left_alone(
    connector: CcxtConnector, venue: Any
) -> None:
    # ccxt's precision helpers set the *current* context's rounding and traps:
    with decimal.localcontext() as scratch:
        connector.exchange.amount_to_precision("BTC/USDT", "0.1")
        assert scratch.rounding == decimal.ROUND_HALF_UP and scratch.traps[decimal.Underflow]
    # ...but not the caller's, through the connector.
    before = decimal.getcontext().copy()
    venue.expect("POST", "/api/v3/order", venue.reply("error_insufficient_balance", status=400))
    with pytest.raises(OrderRejected):
        await _place(connector)
    after = decimal.getcontext()
    assert (after.rounding, after.traps, after.prec) == (before.rounding, before.traps, before.prec)
