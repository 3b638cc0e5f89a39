"""The idempotency ledger placing orders through the connector, against the recorded venue.

The ledger sends the idempotency key as the client order id and resolves every
unknown outcome by asking the venue for it (docs/idempotency.md). These tests
run that protocol through ccxt's real binance class: a timeout after the venue
took the order is resolved by the lookup (no second order), a timeout before
it is resolved by Binance's "Order does not exist." (sent again, same key).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from statekit_ccxt import CcxtConnector

import statekit
from statekit import StateStore
from statekit.trading import IdempotencyLedger, OrderIntent
from statekit.trading.errors import ExchangeUnavailable, OrderRejected
from statekit.trading.idempotency import EntryStatus, Retry
from statekit.trading.models import OrderSide, OrderStatus, OrderType

INTENT = OrderIntent(
    strategy_id="grid-1",
    signal_id="2024-06-10T06:13:20Z/buy",
    symbol="BTC/USDT",
    side=OrderSide.BUY,
    type=OrderType.LIMIT,
    amount=Decimal("0.1"),
    price=Decimal("60000.1"),
)
NO_WAIT = Retry(attempts=2, backoff=0.0, max_backoff=0.0)


@pytest_asyncio.fixture
async def store() -> AsyncIterator[StateStore]:
    async with await statekit.open("memory://") as store:
        yield store


@pytest.fixture
def ledger(store: StateStore) -> IdempotencyLedger:
    return IdempotencyLedger(store, retry=NO_WAIT)


def _accepted(venue: Any, *, then: BaseException | None = None) -> Any:
    """The venue takes the order (it carries the request's client id); ``then`` is what
    reaches the client instead of the answer (a timeout after the venue acted)."""

    def answer(request: Any) -> Any:
        reply = venue.reply("order_limit_new", clientOrderId=request.params["newClientOrderId"])
        return then if then is not None else reply

    return answer


def _found(venue: Any) -> Any:
    """The lookup by client id finds the order placed with it."""
    return lambda request: venue.reply(
        "order_limit_new", clientOrderId=request.params["origClientOrderId"]
    )


@pytest.mark.asyncio
async def test_a_timeout_after_the_venue_took_the_order_is_resolved_by_the_lookup(
    connector: CcxtConnector, venue: Any, ledger: IdempotencyLedger
) -> None:
    venue.expect("POST", "/api/v3/order", _accepted(venue, then=TimeoutError()))
    venue.expect("GET", "/api/v3/order", _found(venue))

    placed = await ledger.place_intent(connector, INTENT)

    (sent,) = venue.sent("POST", "/api/v3/order")  # one order, never a second
    assert sent.params["newClientOrderId"] == INTENT.key
    (asked,) = venue.sent("GET", "/api/v3/order")
    assert asked.params["origClientOrderId"] == INTENT.key
    assert (placed.key, placed.replayed, placed.exchange_order_id) == (INTENT.key, False, "28458")
    entry = await ledger.entry(INTENT.key)
    assert entry is not None and entry.status is EntryStatus.PLACED and entry.attempts == 1


@pytest.mark.asyncio
async def test_a_timeout_before_the_venue_took_it_sends_again_with_the_same_key(
    connector: CcxtConnector, venue: Any, ledger: IdempotencyLedger
) -> None:
    venue.expect("POST", "/api/v3/order", TimeoutError())  # never reached the venue
    venue.expect("GET", "/api/v3/order", venue.reply("error_order_does_not_exist", status=400))
    venue.expect("POST", "/api/v3/order", _accepted(venue))

    placed = await ledger.place_intent(connector, INTENT)

    keys = [r.params["newClientOrderId"] for r in venue.sent("POST", "/api/v3/order")]
    assert keys == [INTENT.key, INTENT.key]
    assert placed.order.client_order_id == INTENT.key
    assert placed.order.status is OrderStatus.OPEN


@pytest.mark.asyncio
async def test_a_duplicate_signal_sends_nothing(
    connector: CcxtConnector, venue: Any, ledger: IdempotencyLedger
) -> None:
    venue.expect("POST", "/api/v3/order", _accepted(venue))

    first = await ledger.place_intent(connector, INTENT)
    again = await ledger.place_intent(connector, INTENT)

    assert len(venue.requests) == 1
    assert again.replayed and again.order == first.order


@pytest.mark.asyncio
async def test_a_rate_limited_order_is_sent_again(
    connector: CcxtConnector, venue: Any, ledger: IdempotencyLedger
) -> None:
    venue.expect("POST", "/api/v3/order", venue.reply("error_rate_limit", status=429))
    venue.expect("POST", "/api/v3/order", _accepted(venue))

    placed = await ledger.place_intent(connector, INTENT)

    assert len(venue.sent("POST", "/api/v3/order")) == 2
    assert venue.sent("GET", "/api/v3/order") == []  # refused: nothing to look up
    assert placed.exchange_order_id == "28458"


@pytest.mark.asyncio
async def test_a_refused_order_is_recorded_rejected(
    connector: CcxtConnector, venue: Any, ledger: IdempotencyLedger
) -> None:
    venue.expect("POST", "/api/v3/order", venue.reply("error_insufficient_balance", status=400))
    # The ledger checks a refusal is not "duplicate client id" for an order it has.
    venue.expect("GET", "/api/v3/order", venue.reply("error_order_does_not_exist", status=400))

    with pytest.raises(OrderRejected, match="insufficient balance"):
        await ledger.place_intent(connector, INTENT)

    entry = await ledger.entry(INTENT.key)
    assert entry is not None and entry.status is EntryStatus.REJECTED
    with pytest.raises(OrderRejected):  # final for this key: nothing is sent again
        await ledger.place_intent(connector, INTENT)
    assert len(venue.sent("POST", "/api/v3/order")) == 1


@pytest.mark.asyncio
async def test_an_unanswered_lookup_leaves_the_entry_reserved_until_recover(
    connector: CcxtConnector, venue: Any, ledger: IdempotencyLedger
) -> None:
    venue.expect("POST", "/api/v3/order", _accepted(venue, then=TimeoutError()))
    for _ in range(NO_WAIT.attempts + 1):  # the lookup, retried: no answer
        venue.expect("GET", "/api/v3/order", TimeoutError())

    with pytest.raises(ExchangeUnavailable, match="outcome unknown"):
        await ledger.place_intent(connector, INTENT)
    entry = await ledger.entry(INTENT.key)
    assert entry is not None and entry.status is EntryStatus.RESERVED  # not guessed either way

    venue.expect("GET", "/api/v3/order", _found(venue))
    recovery = await ledger.recover(connector)

    assert [p.key for p in recovery.placed] == [INTENT.key]
    assert recovery.released == [] and recovery.unresolved == []
    assert len(venue.sent("POST", "/api/v3/order")) == 1  # recover never places
