"""fetch_order_by_client_id: found, not found, and "cannot tell" never passed off as None.

None tells the idempotency ledger that the order was never accepted, so it
sends the order again. Binance's answer is trusted: asked by
``origClientOrderId``, it says ``{"code": -2013, "msg": "Order does not
exist."}`` when it has no such order, which ccxt raises as OrderNotFound.
For a venue whose answer is not trusted, or that cannot be asked by client
id, a miss is ExchangeUnavailable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from statekit_ccxt import CcxtConnector, venues
from statekit_ccxt.venues import ClientIdLookup

from statekit.trading.errors import ExchangeError, ExchangeUnavailable
from statekit.trading.models import OrderStatus

CLIENT_ID = "sk6d1f0c2b9a8e7d6c5b4a3f2e1d0c9b"


@pytest.mark.asyncio
async def test_found_by_client_id(connector: CcxtConnector, venue: Any) -> None:
    venue.expect("GET", "/api/v3/order", venue.reply("order_query_partially_filled"))

    order = await connector.fetch_order_by_client_id(CLIENT_ID, "BTC/USDT")

    (sent,) = venue.sent("GET", "/api/v3/order")
    assert sent.signed
    assert sent.params["origClientOrderId"] == CLIENT_ID
    assert sent.params["symbol"] == "BTCUSDT" and "orderId" not in sent.params
    assert order is not None
    assert (order.id, order.client_order_id) == ("28458", CLIENT_ID)
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.filled == Decimal("0.03")


@pytest.mark.asyncio
async def test_binance_saying_it_has_no_such_order_is_none(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect("GET", "/api/v3/order", venue.reply("error_order_does_not_exist", status=400))

    assert await connector.fetch_order_by_client_id("sk-never-sent", "BTC/USDT") is None
    assert venue.sent("GET", "/api/v3/order")[0].params["origClientOrderId"] == "sk-never-sent"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "answer",
    [
        TimeoutError(),
        "rate limit",
        "server error",
    ],
)
async def test_no_answer_is_never_none(connector: CcxtConnector, venue: Any, answer: Any) -> None:
    if answer == "rate limit":
        answer = venue.reply("error_rate_limit", status=429)
    elif answer == "server error":
        answer = venue.raw("<html>504 Gateway Time-out</html>", status=504)
    venue.expect("GET", "/api/v3/order", answer)

    with pytest.raises(ExchangeError) as caught:
        await connector.fetch_order_by_client_id(CLIENT_ID, "BTC/USDT")
    assert caught.value.retryable  # ExchangeUnavailable or RateLimited: ask again


@pytest.mark.asyncio
async def test_an_answer_for_another_client_id_is_an_error(
    connector: CcxtConnector, venue: Any
) -> None:
    venue.expect(
        "GET", "/api/v3/order", venue.reply("order_query_filled", clientOrderId="sk-someone-else")
    )

    with pytest.raises(ExchangeError, match="sk-someone-else"):
        await connector.fetch_order_by_client_id(CLIENT_ID, "BTC/USDT")


# -- venues whose "no such order" is not trusted, or that cannot be asked --------------------


@pytest_asyncio.fixture
async def untrusted(binance: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CcxtConnector]:
    """Binance, as if its "no such order" were not an answer (as for OKX)."""
    monkeypatch.setitem(venues._LOOKUPS, "binance", ClientIdLookup(by_fetch_order=True))
    async with CcxtConnector(exchange=binance) as connector:
        yield connector


@pytest_asyncio.fixture
async def unasked(binance: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CcxtConnector]:
    """Binance, as if ccxt could not ask it by client id (a venue not in the table)."""
    monkeypatch.delitem(venues._LOOKUPS, "binance")
    async with CcxtConnector(exchange=binance) as connector:
        yield connector


def _all_orders(venue: Any) -> Any:
    other = venue.recorded("open_orders")[0] | {"orderId": 28401, "clientOrderId": "sk-other"}
    return venue.json([other, venue.recorded("order_query_filled")])


@pytest.mark.asyncio
async def test_untrusted_not_found_then_not_in_recent_orders_is_unavailable(
    untrusted: CcxtConnector, venue: Any
) -> None:
    venue.expect("GET", "/api/v3/order", venue.reply("error_order_does_not_exist", status=400))
    venue.expect("GET", "/api/v3/allOrders", _all_orders(venue))

    with pytest.raises(ExchangeUnavailable, match="no proof it was never accepted"):
        await untrusted.fetch_order_by_client_id("sk-never-sent", "BTC/USDT")


@pytest.mark.asyncio
async def test_a_venue_not_asked_by_client_id_is_scanned(
    unasked: CcxtConnector, venue: Any
) -> None:
    venue.expect("GET", "/api/v3/allOrders", _all_orders(venue))

    order = await unasked.fetch_order_by_client_id(CLIENT_ID, "BTC/USDT")

    assert venue.sent("GET", "/api/v3/allOrders")[0].params["symbol"] == "BTCUSDT"
    assert order is not None and order.id == "28458" and order.status is OrderStatus.FILLED


@pytest.mark.asyncio
async def test_a_scan_that_misses_is_unavailable_not_none(
    unasked: CcxtConnector, venue: Any
) -> None:
    venue.expect("GET", "/api/v3/allOrders", _all_orders(venue))

    with pytest.raises(ExchangeUnavailable):
        await unasked.fetch_order_by_client_id("sk-never-sent", "BTC/USDT")


@pytest.mark.asyncio
async def test_a_venue_that_can_neither_be_asked_nor_listed_cannot_tell(
    unasked: CcxtConnector, venue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    has = dict(unasked.exchange.has, fetchOrders=False, fetchClosedOrders=False)
    monkeypatch.setattr(unasked.exchange, "has", has)

    with pytest.raises(ExchangeUnavailable, match="cannot tell"):
        await unasked.fetch_order_by_client_id(CLIENT_ID, "BTC/USDT")
    assert venue.requests == []
