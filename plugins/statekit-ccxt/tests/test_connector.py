"""Every connector method against a real ccxt binance object and the recorded venue.

Each test checks what reached the venue (the signed request ccxt built) and
what came back (statekit's models, exact Decimals, UTC times).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from statekit_ccxt import CcxtConnector

from statekit.trading.errors import ExchangeError, OrderRejected
from statekit.trading.models import OrderSide, OrderStatus, OrderType, TimeInForce

CLIENT_ID = "sk6d1f0c2b9a8e7d6c5b4a3f2e1d0c9b"
PLACED_AT = datetime(2024, 6, 10, 6, 13, 20, 123000, tzinfo=UTC)  # 1718000000123 ms


def echo(venue: Any, name: str) -> Any:
    """An answer: the recording ``name`` carrying the client order id the request sent."""
    return lambda request: venue.reply(name, clientOrderId=request.params["newClientOrderId"])


@pytest.mark.asyncio
async def test_a_limit_order_carries_the_client_id_in_the_signed_request(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect("POST", "/api/v3/order", echo(venue, "order_limit_new"))

    order = await connector.create_order(
        "BTC/USDT",
        OrderType.LIMIT,
        OrderSide.BUY,
        Decimal("0.1"),
        Decimal("60000.1"),
        client_order_id=CLIENT_ID,
    )

    (sent,) = venue.sent("POST", "/api/v3/order")
    assert sent.signed  # HMAC-SHA256 over the body, newClientOrderId included
    assert sent.headers["X-MBX-APIKEY"] == connector.exchange.apiKey
    assert sent.params["newClientOrderId"] == CLIENT_ID
    assert sent.params["symbol"] == "BTCUSDT"
    assert (sent.params["side"], sent.params["type"]) == ("BUY", "LIMIT")
    assert (sent.params["quantity"], sent.params["price"]) == ("0.1", "60000.1")
    assert sent.params["timeInForce"] == "GTC"  # ccxt's default for a limit order
    assert order.id == "28458"
    assert order.client_order_id == CLIENT_ID
    assert (order.symbol, order.side, order.type) == ("BTC/USDT", OrderSide.BUY, OrderType.LIMIT)
    assert order.status is OrderStatus.OPEN
    assert order.time_in_force is TimeInForce.GTC
    assert order.created_at == PLACED_AT
    assert order.created_at.tzinfo is UTC


@pytest.mark.asyncio
async def test_amounts_and_prices_stay_exact_decimals(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("POST", "/api/v3/order", echo(venue, "order_limit_new"))

    order = await connector.create_order(
        "BTC/USDT",
        OrderType.LIMIT,
        OrderSide.BUY,
        Decimal("0.1"),
        Decimal("60000.1"),
        client_order_id=CLIENT_ID,
    )

    # "0.10000000" from the venue is Decimal("0.1"), not 0.1000000000000000055...
    assert order.amount == Decimal("0.1") and str(order.amount) == "0.1"
    assert str(order.price) == "60000.1"
    assert order.remaining == Decimal("0.1")


@pytest.mark.asyncio
async def test_a_market_order_sends_no_price_and_no_time_in_force(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect("POST", "/api/v3/order", echo(venue, "order_market_filled"))

    order = await connector.create_order(
        "BTC/USDT",
        OrderType.MARKET,
        OrderSide.BUY,
        Decimal("0.001"),
        Decimal("1"),  # ignored, as ccxt ignores a market order's price
        client_order_id="sk-market-1",
        time_in_force=TimeInForce.IOC,  # a market order fills at once whatever it says
    )

    (sent,) = venue.sent("POST", "/api/v3/order")
    assert "price" not in sent.params and "timeInForce" not in sent.params
    assert sent.params["newClientOrderId"] == "sk-market-1"
    assert order.type is OrderType.MARKET and order.price is None
    assert order.status is OrderStatus.FILLED  # ccxt "closed"
    assert order.filled == Decimal("0.001")
    assert order.average_price == Decimal("67123.454")  # 67.123454 / 0.001, exactly
    assert [(f.id, f.order_id, f.amount, f.price) for f in order.fills] == [
        ("3001", "28457", Decimal("0.0006"), Decimal("67123.45")),
        ("3002", "28457", Decimal("0.0004"), Decimal("67123.46")),
    ]
    assert [f.fee for f in order.fills] == [Decimal("0.0000006"), Decimal("0.0000004")]


@pytest.mark.asyncio
@pytest.mark.parametrize("time_in_force", [TimeInForce.IOC, TimeInForce.FOK])
async def test_ioc_and_fok_map_to_ccxt_time_in_force(
    connector: CcxtConnector, venue: Any, time_in_force: TimeInForce
) -> None:
    venue.expect("POST", "/api/v3/order", echo(venue, "order_limit_ioc_expired"))

    order = await connector.create_order(
        "BTC/USDT",
        OrderType.LIMIT,
        OrderSide.BUY,
        Decimal("0.2"),
        Decimal("60000"),
        client_order_id="sk-ioc-1",
        time_in_force=time_in_force,
    )

    (sent,) = venue.sent("POST", "/api/v3/order")
    assert sent.params["timeInForce"] == time_in_force.name
    # The recorded answer is an IOC that filled a quarter and expired.
    assert order.status is OrderStatus.EXPIRED
    assert order.time_in_force is TimeInForce.IOC
    assert order.filled == Decimal("0.05")


@pytest.mark.asyncio
@pytest.mark.parametrize("time_in_force", [TimeInForce.IOC, TimeInForce.FOK])
async def test_a_time_in_force_the_venue_lacks_is_refused_not_placed_as_gtc(
    time_in_force: TimeInForce,
) -> None:
    # ccxt's mercado declares neither IOC nor FOK for spot (its ``features``).
    async with CcxtConnector(
        "mercado", config={"enableRateLimit": False, "timeout_on_exit": 0}
    ) as connector:
        connector.exchange.set_markets([_market("BTC/BRL", "BTC", "BRL", "BTCBRL")])
        with pytest.raises(OrderRejected, match=f"{time_in_force.name} is not offered"):
            await connector.create_order(
                "BTC/BRL",
                OrderType.LIMIT,
                OrderSide.BUY,
                Decimal("0.1"),
                Decimal("350000"),
                client_order_id="sk-ioc-2",
                time_in_force=time_in_force,
            )
        assert connector.exchange.session is None  # nothing was sent, no session opened


@pytest.mark.asyncio
async def test_an_amount_off_the_step_is_refused_not_truncated(connector: CcxtConnector) -> None:
    # BTCUSDT's stepSize is 0.00001; ccxt would send 0.12345 for 0.123456.
    with pytest.raises(OrderRejected, match=r"ccxt would send 0\.12345"):
        await connector.create_order(
            "BTC/USDT",
            OrderType.LIMIT,
            OrderSide.BUY,
            Decimal("0.123456"),
            Decimal("60000"),
            client_order_id="sk-step",
        )
    with pytest.raises(OrderRejected, match=r"price step"):
        await connector.create_order(
            "BTC/USDT",
            OrderType.LIMIT,
            OrderSide.BUY,
            Decimal("0.1"),
            Decimal("60000.005"),
            client_order_id="sk-tick",
        )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("type", "price", "reason"),
    [
        (OrderType.STOP, None, "trigger price"),
        (OrderType.STOP_LIMIT, Decimal("60000"), "trigger price"),
        (OrderType.LIMIT, None, "needs a price"),
    ],
)
async def test_orders_the_contract_cannot_express_are_refused_before_sending(
    connector: CcxtConnector, type: OrderType, price: Decimal | None, reason: str
) -> None:
    with pytest.raises(OrderRejected, match=reason):
        await connector.create_order(
            "BTC/USDT", type, OrderSide.SELL, Decimal("0.1"), price, client_order_id="sk-x"
        )


@pytest.mark.asyncio
async def test_fetch_order(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("GET", "/api/v3/order", venue.reply("order_query_partially_filled"))

    order = await connector.fetch_order("28458", "BTC/USDT")

    (sent,) = venue.sent("GET", "/api/v3/order")
    assert sent.signed and sent.params["orderId"] == "28458"
    assert order.status is OrderStatus.PARTIALLY_FILLED  # ccxt "open" with filled > 0
    assert (order.filled, order.remaining) == (Decimal("0.03"), Decimal("0.07"))
    assert order.updated_at == datetime(2024, 6, 10, 6, 14, 20, 456000, tzinfo=UTC)


@pytest.mark.asyncio
async def test_cancel_order_reports_our_client_id_not_the_cancel_requests(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect("DELETE", "/api/v3/order", venue.reply("order_cancel"))

    order = await connector.cancel_order("28458", "BTC/USDT")

    (sent,) = venue.sent("DELETE", "/api/v3/order")
    assert sent.signed and sent.params["orderId"] == "28458"
    assert order.status is OrderStatus.CANCELLED
    assert order.filled == Decimal("0.03")  # it had partly filled before the cancel
    # Binance's cancel answer has clientOrderId = the cancel request's own id.
    assert order.client_order_id == CLIENT_ID


@pytest.mark.asyncio
async def test_cancelling_a_filled_order_returns_it_filled(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect("DELETE", "/api/v3/order", venue.reply("error_unknown_order", status=400))
    venue.expect("GET", "/api/v3/order", venue.reply("order_query_filled"))

    order = await connector.cancel_order("28458", "BTC/USDT")

    assert order.status is OrderStatus.FILLED
    assert order.filled == order.amount == Decimal("0.1")


@pytest.mark.asyncio
async def test_fetch_open_orders(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("GET", "/api/v3/openOrders", venue.reply("open_orders"))

    orders = await connector.fetch_open_orders()

    (sent,) = venue.sent("GET", "/api/v3/openOrders")
    assert "symbol" not in sent.params  # all symbols: the contract asks for them
    assert [(o.id, o.symbol, o.status) for o in orders] == [
        ("28458", "BTC/USDT", OrderStatus.PARTIALLY_FILLED),
        ("91022", "ETH/USDT", OrderStatus.OPEN),
    ]
    assert orders[1].side is OrderSide.SELL and orders[1].amount == Decimal("1.5")


@pytest.mark.asyncio
async def test_fetch_open_orders_of_one_symbol(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("GET", "/api/v3/openOrders", venue.json(venue.recorded("open_orders")[:1]))

    orders = await connector.fetch_open_orders("BTC/USDT")

    assert venue.sent("GET", "/api/v3/openOrders")[0].params["symbol"] == "BTCUSDT"
    assert [o.id for o in orders] == ["28458"]


@pytest.mark.asyncio
async def test_fetch_balance(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("GET", "/api/v3/account", venue.reply("account"))

    balances = await connector.fetch_balance()

    assert venue.sent("GET", "/api/v3/account")[0].signed
    assert sorted(balances) == ["BTC", "USDT"]  # LTC: nothing free, nothing locked
    usdt = balances["USDT"]
    assert (usdt.free, usdt.locked) == (Decimal("993.87654321"), Decimal("4200.007"))
    assert usdt.total == Decimal("5193.88354321")
    assert usdt.updated_at == datetime(2024, 6, 10, 6, 16, 20, tzinfo=UTC)


@pytest.mark.asyncio
async def test_a_spot_account_has_no_positions(connector: CcxtConnector, venue: Any) -> None:
    assert await connector.fetch_positions() == []
    assert await connector.fetch_positions(["BTC/USDT"]) == []
    assert venue.requests == []  # and no derivatives endpoint was asked


@pytest.mark.asyncio
async def test_fetch_fills_keeps_a_journal_that_since_counts_in(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect("GET", "/api/v3/myTrades", venue.reply("my_trades"))
    venue.expect("GET", "/api/v3/myTrades", venue.reply("my_trades_later"))
    venue.expect("GET", "/api/v3/myTrades", venue.json(venue.recorded("my_trades_later")[1:]))

    first = await connector.fetch_fills("BTC/USDT")
    later = await connector.fetch_fills("BTC/USDT", since=len(first))
    everything = await connector.fetch_fills("BTC/USDT")

    asked = venue.sent("GET", "/api/v3/myTrades")
    assert asked[0].params["symbol"] == "BTCUSDT" and "startTime" not in asked[0].params
    # Each later call starts at the newest fill seen (inclusive: a fill of the same ms
    # is not missed; the one seen already is not reported again).
    assert asked[1].params["startTime"] == "1718000060456"
    assert asked[2].params["startTime"] == "1718000120789"
    assert [f.id for f in first] == ["3001", "3002", "3005"]
    assert [f.id for f in later] == ["3007"]
    assert [f.id for f in everything] == ["3001", "3002", "3005", "3007"]
    fill = later[0]
    assert (fill.order_id, fill.amount) == ("28458", Decimal("0.07"))
    assert fill.price == Decimal("60000.1")
    assert fill.fee == Decimal("0.00007")
    assert fill.at == datetime(2024, 6, 10, 6, 15, 20, 789000, tzinfo=UTC)


@pytest.mark.asyncio
async def test_fetch_fills_without_a_symbol_is_refused_by_binance(
    connector: CcxtConnector, venue: Any
) -> None:
    with pytest.raises(ExchangeError, match="requires a symbol") as caught:
        await connector.fetch_fills()
    assert not caught.value.retryable
    assert venue.requests == []


def _market(symbol: str, base: str, quote: str, market_id: str) -> dict[str, Any]:
    """A minimal ccxt spot market structure, for exchanges without a recording."""
    return {
        "id": market_id,
        "symbol": symbol,
        "base": base,
        "quote": quote,
        "baseId": base,
        "quoteId": quote,
        "type": "spot",
        "spot": True,
        "margin": False,
        "swap": False,
        "future": False,
        "option": False,
        "contract": False,
        "active": True,
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {"amount": {"min": 0.00001}, "price": {"min": 0.01}},
        "info": {},
    }


@pytest.mark.asyncio
async def test_a_float_amount_is_a_type_error(connector: CcxtConnector, venue: Any) -> None:
    with pytest.raises(TypeError, match="amount must be a Decimal"):
        await connector.create_order(
            "BTC/USDT",
            OrderType.MARKET,
            OrderSide.BUY,
            0.1,  # type: ignore[arg-type]
            client_order_id="sk-float",
        )
    assert venue.requests == []
