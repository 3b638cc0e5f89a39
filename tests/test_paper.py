"""The paper exchange (matching, balances, positions, faults, determinism) and the
connector hook ``statekit_register_connectors``."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

import pytest

import statekit
from statekit import PluginError, PluginHost
from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.models import Balance, OrderSide, OrderStatus, OrderType, TimeInForce
from statekit.trading.paper import START, Faults, PaperExchange
from statekit.trading.plugin import ConnectorRegistry

BUY, SELL = OrderSide.BUY, OrderSide.SELL
MARKET, LIMIT = OrderType.MARKET, OrderType.LIMIT
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
D = Decimal


def paper(**kwargs: Any) -> PaperExchange:
    """BTC/USDT walking 100, 90, 80, 95, 110, 120; ETH/USDT 10, 11, 12; 10,000 USDT and 1 BTC."""
    options: dict[str, Any] = {
        "prices": {
            "BTC/USDT": [D(100), D(90), D(80), D(95), D(110), D(120)],
            "ETH/USDT": [D(10), D(11), D(12)],
        },
        "balances": {"USDT": D(10_000), "BTC": D(1)},
    }
    options.update(kwargs)
    return PaperExchange(**options)


async def balances(ex: PaperExchange) -> dict[str, tuple[Decimal, Decimal]]:
    return {a: (b.free, b.locked) for a, b in (await ex.fetch_balance()).items()}


# -- matching -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_market_buy_fills_at_once_at_the_current_price() -> None:
    ex = paper()
    order = await ex.create_order("BTC/USDT", MARKET, BUY, D("2.5"), client_order_id="c1")
    assert isinstance(order, ExchangeOrder)
    assert order.status is OrderStatus.FILLED and order.filled == D("2.5")
    assert order.average_price == D(100) and order.price is None
    assert order.client_order_id == "c1" and order.remaining == 0
    assert [(f.amount, f.price, f.order_id) for f in order.fills] == [(D("2.5"), D(100), order.id)]
    assert await balances(ex) == {"BTC": (D("3.5"), D(0)), "USDT": (D(9750), D(0))}
    assert await ex.fetch_open_orders() == []
    assert ex.orders == [order]


@pytest.mark.asyncio
async def test_a_market_sell_fills_and_pays_the_quote() -> None:
    ex = paper()
    order = await ex.create_order("BTC/USDT", MARKET, SELL, D("0.4"), client_order_id="s1")
    assert order.status is OrderStatus.FILLED and order.average_price == D(100)
    assert await balances(ex) == {"BTC": (D("0.6"), D(0)), "USDT": (D(10_040), D(0))}


@pytest.mark.asyncio
async def test_a_limit_buy_rests_with_its_quote_locked_then_fills_when_the_price_reaches_it() -> (
    None
):
    ex = paper()
    order = await ex.create_order("BTC/USDT", LIMIT, BUY, D(2), D(85), client_order_id="b1")
    assert order.status is OrderStatus.OPEN and order.filled == 0 and order.fills == []
    assert await balances(ex) == {"BTC": (D(1), D(0)), "USDT": (D(9830), D(170))}
    assert [o.id for o in await ex.fetch_open_orders("BTC/USDT")] == [order.id]
    assert await ex.fetch_open_orders("ETH/USDT") == []

    ex.advance()  # 90: not yet
    assert (await ex.fetch_order(order.id, "BTC/USDT")).status is OrderStatus.OPEN
    ex.advance()  # 80 crosses 85: a resting order fills at its limit
    filled = await ex.fetch_order(order.id, "BTC/USDT")
    assert filled.status is OrderStatus.FILLED and filled.average_price == D(85)
    assert filled.updated_at == START + 2 * timedelta(minutes=1)
    assert await balances(ex) == {"BTC": (D(3), D(0)), "USDT": (D(9830), D(0))}


@pytest.mark.asyncio
async def test_a_limit_sell_fills_when_the_price_rises_to_it() -> None:
    ex = paper()
    order = await ex.create_order("BTC/USDT", LIMIT, SELL, D(1), D(105), client_order_id="s1")
    assert await balances(ex) == {"BTC": (D(0), D(1)), "USDT": (D(10_000), D(0))}
    ex.advance(3)  # 90, 80, 95
    assert (await ex.fetch_order(order.id, "BTC/USDT")).status is OrderStatus.OPEN
    ex.advance()  # 110 >= 105
    filled = await ex.fetch_order(order.id, "BTC/USDT")
    assert filled.status is OrderStatus.FILLED and filled.average_price == D(105)
    assert await balances(ex) == {"BTC": (D(0), D(0)), "USDT": (D(10_105), D(0))}


@pytest.mark.asyncio
async def test_a_marketable_limit_order_fills_at_the_better_current_price() -> None:
    ex = paper()
    order = await ex.create_order("BTC/USDT", LIMIT, BUY, D(1), D(150), client_order_id="t1")
    assert order.status is OrderStatus.FILLED and order.average_price == D(100)
    assert order.price == D(150)
    # 150 was locked; the 50 it saved went back.
    assert await balances(ex) == {"BTC": (D(2), D(0)), "USDT": (D(9900), D(0))}


@pytest.mark.asyncio
async def test_partial_fills_with_a_maximum_fill_per_step() -> None:
    ex = paper(max_fill_per_step=D("0.4"))
    order = await ex.create_order("BTC/USDT", LIMIT, BUY, D(1), D(95), client_order_id="p1")
    assert order.status is OrderStatus.OPEN
    ex.advance()  # 90: 0.4 of 1
    partial = await ex.fetch_order(order.id, "BTC/USDT")
    assert partial.status is OrderStatus.PARTIALLY_FILLED
    assert partial.filled == D("0.4") and partial.remaining == D("0.6")
    assert [o.id for o in await ex.fetch_open_orders()] == [order.id]  # still open
    assert await balances(ex) == {"BTC": (D("1.4"), D(0)), "USDT": (D(9905), D(57))}
    ex.advance(5)  # 80, 95 cross (0.4, then 0.2); 110, 120 do not
    done = await ex.fetch_order(order.id, "BTC/USDT")
    assert done.status is OrderStatus.FILLED
    assert [f.amount for f in done.fills] == [D("0.4"), D("0.4"), D("0.2")]
    assert done.average_price == D(95)
    assert await balances(ex) == {"BTC": (D(2), D(0)), "USDT": (D(9905), D(0))}


@pytest.mark.asyncio
async def test_the_price_path_holds_its_last_price() -> None:
    ex = paper()
    ex.advance(100)
    assert ex.price("BTC/USDT") == D(120) and ex.price("ETH/USDT") == D(12)
    assert ex.now == START + 100 * timedelta(minutes=1)
    with pytest.raises(ValueError, match="negative"):
        ex.advance(-1)


# -- time in force --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_gtc_is_the_default_and_rests_as_before() -> None:
    ex = paper()
    default = await ex.create_order("BTC/USDT", LIMIT, BUY, D(1), D(85), client_order_id="d")
    explicit = await ex.create_order(
        "BTC/USDT", LIMIT, BUY, D(1), D(85), client_order_id="e", time_in_force=GTC
    )
    for order in (default, explicit):
        assert order.status is OrderStatus.OPEN and order.time_in_force is GTC
    assert await balances(ex) == {"BTC": (D(1), D(0)), "USDT": (D(9830), D(170))}
    ex.advance(2)  # 80 reaches 85: both rest until then and fill at their limit
    assert [(o.status, o.average_price) for o in ex.orders] == [(OrderStatus.FILLED, D(85))] * 2


@pytest.mark.asyncio
async def test_ioc_fills_what_crosses_at_once_and_cancels_the_rest() -> None:
    ex = paper(max_fill_per_step=D("0.4"))
    order = await ex.create_order(
        "BTC/USDT", LIMIT, BUY, D(1), D(105), client_order_id="i", time_in_force=IOC
    )
    # As CCXT reports a partly filled IOC: canceled, with filled > 0.
    assert order.status is OrderStatus.CANCELLED and order.time_in_force is IOC
    assert order.filled == D("0.4") and order.remaining == D("0.6")
    assert order.average_price == D(100)  # taker: the current price
    assert [f.amount for f in order.fills] == [D("0.4")]
    # Nothing stays locked: the 0.6 left was never going to rest.
    assert await balances(ex) == {"BTC": (D("1.4"), D(0)), "USDT": (D(9960), D(0))}
    assert await ex.fetch_open_orders() == []
    ex.advance(5)  # it never rests, so later prices never fill it
    assert ex.orders == [order] and len(ex.fills) == 1


@pytest.mark.asyncio
async def test_ioc_that_does_not_cross_is_cancelled_with_nothing_filled() -> None:
    ex = paper()
    order = await ex.create_order(
        "BTC/USDT", LIMIT, SELL, D(1), D(150), client_order_id="i", time_in_force=IOC
    )
    assert order.status is OrderStatus.CANCELLED and order.filled == 0 and order.fills == []
    assert await balances(ex) == {"BTC": (D(1), D(0)), "USDT": (D(10_000), D(0))}
    # It was accepted, then cancelled: its client order id is used up.
    with pytest.raises(OrderRejected, match="duplicate clientOrderId"):
        await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="i")
    found = await ex.fetch_order_by_client_id("i", "BTC/USDT")
    assert found is not None and found.time_in_force is IOC


@pytest.mark.asyncio
async def test_ioc_that_fills_completely_is_filled() -> None:
    ex = paper()
    order = await ex.create_order(
        "BTC/USDT", LIMIT, BUY, D(2), D(100), client_order_id="i", time_in_force=IOC
    )
    assert order.status is OrderStatus.FILLED and order.filled == D(2)
    assert await balances(ex) == {"BTC": (D(3), D(0)), "USDT": (D(9800), D(0))}


@pytest.mark.asyncio
async def test_fok_fills_completely_at_once() -> None:
    ex = paper(max_fill_per_step=D(2))
    order = await ex.create_order(
        "BTC/USDT", LIMIT, BUY, D(2), D(110), client_order_id="f", time_in_force=FOK
    )
    assert order.status is OrderStatus.FILLED and order.time_in_force is FOK
    assert [(f.amount, f.price) for f in order.fills] == [(D(2), D(100))]
    assert await balances(ex) == {"BTC": (D(3), D(0)), "USDT": (D(9800), D(0))}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("limit", "cap", "why"),
    [(D(110), D("1.5"), "more than one step fills"), (D(95), None, "does not cross")],
)
async def test_fok_that_cannot_fill_completely_is_killed(
    limit: Decimal, cap: Decimal | None, why: str
) -> None:
    ex = paper(max_fill_per_step=cap)
    order = await ex.create_order(
        "BTC/USDT", LIMIT, BUY, D(2), limit, client_order_id="f", time_in_force=FOK
    )
    # Killed: nothing filled. Binance says EXPIRED here; the paper, like CCXT's
    # unified status on most venues, says cancelled (docs/paper-exchange.md).
    assert order.status is OrderStatus.CANCELLED, why
    assert order.filled == 0 and order.fills == [] and ex.fills == []
    assert await balances(ex) == {"BTC": (D(1), D(0)), "USDT": (D(10_000), D(0))}
    ex.advance(2)  # 80 would cross: a killed order stays killed
    assert (await ex.fetch_order(order.id, "BTC/USDT")).status is OrderStatus.CANCELLED
    assert await ex.fetch_positions() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("tif", [IOC, FOK])
async def test_market_orders_ignore_the_time_in_force(tif: TimeInForce) -> None:
    ex = paper(max_fill_per_step=D("0.1"))  # the cap is for limit orders only
    order = await ex.create_order(
        "BTC/USDT", MARKET, BUY, D(2), client_order_id="m", time_in_force=tif
    )
    assert order.status is OrderStatus.FILLED and order.filled == D(2)
    assert order.time_in_force is tif  # reported as given


@pytest.mark.asyncio
async def test_an_unknown_time_in_force_is_refused() -> None:
    ex = paper()
    with pytest.raises(OrderRejected, match="time in force 'gtd' is not supported"):
        await ex.create_order(
            "BTC/USDT",
            LIMIT,
            BUY,
            D(1),
            D(90),
            client_order_id="x",
            time_in_force="gtd",  # type: ignore[arg-type]
        )
    assert ex.orders == []


@pytest.mark.asyncio
async def test_ioc_and_fok_draw_as_many_random_numbers_as_gtc() -> None:
    # The same draws per call whatever the time in force, so the faults that
    # follow fall on the same calls: a seed replays the same run.
    async def run(tif: TimeInForce) -> list[bool]:
        ex = paper(seed=11, faults=Faults(lost_ack=0.5, duplicate_fill=0.5))
        lost = []
        for n, price in enumerate((D(50), D(100))):  # one that rests (or not), one that fills
            try:
                await ex.create_order(
                    "BTC/USDT", LIMIT, BUY, D(1), price, client_order_id=f"o{n}", time_in_force=tif
                )
                lost.append(False)
            except ExchangeUnavailable:
                lost.append(True)
        assert len(ex.fills) == 1
        for _ in range(30):
            try:
                await ex.fetch_balance()
                lost.append(False)
            except ExchangeUnavailable:
                lost.append(True)
        return lost

    gtc = await run(GTC)
    assert any(gtc) and not all(gtc)
    assert await run(IOC) == gtc and await run(FOK) == gtc


# -- cancel ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancel_unlocks_what_the_order_held() -> None:
    ex = paper()
    buy = await ex.create_order("BTC/USDT", LIMIT, BUY, D(2), D(50), client_order_id="b")
    sell = await ex.create_order("BTC/USDT", LIMIT, SELL, D("0.5"), D(500), client_order_id="s")
    assert await balances(ex) == {"BTC": (D("0.5"), D("0.5")), "USDT": (D(9900), D(100))}
    cancelled = await ex.cancel_order(buy.id, "BTC/USDT")
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.filled == 0
    await ex.cancel_order(sell.id, "BTC/USDT")
    assert await balances(ex) == {"BTC": (D(1), D(0)), "USDT": (D(10_000), D(0))}
    assert await ex.fetch_open_orders() == []
    ex.advance(5)  # a cancelled order never fills
    assert (await ex.fetch_order(buy.id, "BTC/USDT")).status is OrderStatus.CANCELLED
    again = await ex.cancel_order(buy.id, "BTC/USDT")  # cancelling twice changes nothing
    assert again.status is OrderStatus.CANCELLED
    assert await balances(ex) == {"BTC": (D(1), D(0)), "USDT": (D(10_000), D(0))}


@pytest.mark.asyncio
async def test_cancel_of_a_partially_filled_order_keeps_what_filled() -> None:
    ex = paper(max_fill_per_step=D(1))
    order = await ex.create_order("BTC/USDT", LIMIT, BUY, D(3), D(90), client_order_id="p")
    ex.advance()
    cancelled = await ex.cancel_order(order.id, "BTC/USDT")
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.filled == D(1)
    assert await balances(ex) == {"BTC": (D(2), D(0)), "USDT": (D(9910), D(0))}


@pytest.mark.asyncio
async def test_cancel_of_a_filled_order_returns_it_filled() -> None:
    ex = paper()
    order = await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="m")
    after = await ex.cancel_order(order.id, "BTC/USDT")
    assert after.status is OrderStatus.FILLED and after.filled == D(1)


@pytest.mark.asyncio
async def test_unknown_orders_are_not_found() -> None:
    ex = paper()
    order = await ex.create_order("BTC/USDT", LIMIT, BUY, D(1), D(50), client_order_id="x")
    for call in (ex.cancel_order, ex.fetch_order):
        with pytest.raises(OrderNotFound) as info:
            await call("paper-999", "BTC/USDT")
        assert info.value.exchange == "paper"
        with pytest.raises(OrderNotFound):  # an order id belongs to its symbol
            await call(order.id, "ETH/USDT")


# -- refusals and client order ids ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("symbol", "type", "side", "amount", "price", "reason"),
    [
        ("BTC/USDT", MARKET, BUY, D(101), None, "insufficient funds"),
        ("BTC/USDT", LIMIT, BUY, D(2), D(5001), "insufficient funds"),
        ("BTC/USDT", MARKET, SELL, D("1.01"), None, "insufficient funds"),
        ("ETH/USDT", LIMIT, SELL, D(1), D(10), "insufficient funds"),  # no ETH at all
        ("DOGE/USDT", MARKET, BUY, D(1), None, "unknown symbol 'DOGE/USDT'"),
        ("BTC/USDT", LIMIT, BUY, D(1), None, "needs a price"),
        ("BTC/USDT", LIMIT, BUY, D(1), D(0), "price must be positive"),
        ("BTC/USDT", MARKET, BUY, D(0), None, "amount must be positive"),
        ("BTC/USDT", OrderType.STOP, BUY, D(1), D(90), "not supported"),
    ],
)
async def test_refused_orders_do_not_exist(
    symbol: str,
    type: OrderType,
    side: OrderSide,
    amount: Decimal,
    price: Decimal | None,
    reason: str,
) -> None:
    ex = paper()
    before = await balances(ex)
    with pytest.raises(OrderRejected, match=reason) as info:
        await ex.create_order(symbol, type, side, amount, price, client_order_id="r1")
    assert info.value.exchange == "paper" and not info.value.retryable
    assert ex.orders == [] and await balances(ex) == before
    assert await ex.fetch_order_by_client_id("r1", symbol) is None
    # A refused order does not use up its client order id.
    await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="r1")


@pytest.mark.asyncio
async def test_a_client_order_id_is_accepted_once_per_exchange() -> None:
    ex = paper()
    first = await ex.create_order("BTC/USDT", LIMIT, BUY, D(1), D(50), client_order_id="sig-1")
    await ex.cancel_order(first.id, "BTC/USDT")
    for symbol in ("BTC/USDT", "ETH/USDT"):  # even when final, even for another symbol
        with pytest.raises(OrderRejected, match="duplicate clientOrderId"):
            await ex.create_order(symbol, MARKET, BUY, D(1), client_order_id="sig-1")
    assert [o.id for o in ex.orders] == [first.id]
    found = await ex.fetch_order_by_client_id("sig-1", "BTC/USDT")
    assert found is not None and found.id == first.id
    assert found.status is OrderStatus.CANCELLED
    assert await ex.fetch_order_by_client_id("sig-1", "ETH/USDT") is None
    assert await ex.fetch_order_by_client_id("never", "BTC/USDT") is None


@pytest.mark.asyncio
async def test_concurrent_orders_with_one_client_order_id_place_one() -> None:
    ex = paper()

    async def place() -> ExchangeOrder | OrderRejected:
        try:
            return await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="same")
        except OrderRejected as exc:
            return exc

    results = await asyncio.wait_for(asyncio.gather(*(place() for _ in range(50))), timeout=10)
    placed = [r for r in results if isinstance(r, ExchangeOrder)]
    assert len(placed) == 1 and len(ex.orders) == 1
    assert all("duplicate clientOrderId" in str(r) for r in results if r not in placed)
    assert await balances(ex) == {"BTC": (D(2), D(0)), "USDT": (D(9900), D(0))}


def test_bad_setups_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one symbol"):
        PaperExchange(prices={})
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        PaperExchange(prices={"BTCUSDT": [D(1)]})
    with pytest.raises(ValueError, match="non-empty and positive"):
        PaperExchange(prices={"BTC/USDT": []})
    with pytest.raises(TypeError, match="must be a Decimal"):
        PaperExchange(prices={"BTC/USDT": [0.1]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="cannot be negative"):
        PaperExchange(prices={"BTC/USDT": [D(1)]}, balances={"USDT": D(-1)})
    with pytest.raises(ValueError, match="aware"):
        PaperExchange(prices={"BTC/USDT": [D(1)]}, start=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="probability"):
        Faults(lost_ack=1.5)


# -- positions and consistency --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_positions_are_the_net_of_the_fills_with_an_average_entry() -> None:
    ex = paper(balances={"USDT": D(100_000)})
    assert await ex.fetch_positions() == []
    await ex.create_order("BTC/USDT", MARKET, BUY, D(2), client_order_id="a")  # 2 @ 100
    ex.advance(3)  # 95
    await ex.create_order("BTC/USDT", MARKET, BUY, D(2), client_order_id="b")  # 4 @ 97.5
    [position] = await ex.fetch_positions()
    assert isinstance(position, ExchangePosition)
    assert (position.symbol, position.amount, position.entry_price) == ("BTC/USDT", D(4), D("97.5"))
    assert position.at == START + 3 * timedelta(minutes=1)
    ex.advance()  # 110
    await ex.create_order("BTC/USDT", MARKET, SELL, D(1), client_order_id="c")  # reduce
    [position] = await ex.fetch_positions(["BTC/USDT"])
    assert (position.amount, position.entry_price) == (D(3), D("97.5"))
    await ex.create_order("BTC/USDT", MARKET, SELL, D(3), client_order_id="d")  # flat
    assert await ex.fetch_positions() == []
    await ex.create_order("ETH/USDT", MARKET, BUY, D(5), client_order_id="e")
    assert [p.symbol for p in await ex.fetch_positions()] == ["ETH/USDT"]
    assert await ex.fetch_positions(["BTC/USDT"]) == []


@pytest.mark.asyncio
async def test_selling_through_zero_opens_the_rest_at_the_fill_price() -> None:
    ex = paper(balances={"BTC": D(5), "USDT": D(1000)})
    await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="a")
    ex.advance()
    await ex.create_order("BTC/USDT", MARKET, SELL, D(3), client_order_id="b")
    [position] = await ex.fetch_positions()
    assert (position.amount, position.entry_price) == (D(-2), D(90))


async def random_session(ex: PaperExchange, rng: Random, calls: int) -> list[str]:
    """Random orders, cancels, steps and lookups; a trace of every outcome."""
    trace: list[str] = []
    for n in range(calls):
        symbol = rng.choice(["BTC/USDT", "ETH/USDT"])
        action = rng.random()
        try:
            if action < 0.45:
                kind = rng.choice([MARKET, LIMIT])
                price = ex.price(symbol) + rng.randint(-20, 20) if kind is LIMIT else None
                order = await ex.create_order(
                    symbol,
                    kind,
                    rng.choice([BUY, SELL]),
                    D(rng.randint(1, 30)) / 10,
                    price if price is None or price > 0 else D(1),
                    client_order_id=f"c{n % 120}",  # some repeat, on purpose
                    time_in_force=rng.choice([GTC, GTC, IOC, FOK]),
                )
                trace.append(f"placed {order.id} {order.status} {order.filled}")
            elif action < 0.6 and ex.orders:
                target = rng.choice(ex.orders)
                cancelled = await ex.cancel_order(target.id, target.symbol)
                trace.append(f"cancel {cancelled.id} {cancelled.status}")
            elif action < 0.8:
                ex.advance(rng.randint(1, 2))
                trace.append(f"step {ex.now}")
            else:
                fills = await ex.fetch_fills(since=rng.randint(0, 3))
                trace.append("fills " + ",".join(f.id for f in fills))
        except ExchangeError as exc:
            trace.append(f"{type(exc).__name__}: {exc}")
    return trace


async def assert_consistent(ex: PaperExchange, initial: dict[str, Decimal]) -> None:
    """Balances and positions are what the fills (and the open orders' locks) say."""
    faults, ex.faults = ex.faults, Faults()  # read the oracle without faults
    try:
        fills = ex.fills
        orders = {o.id: o for o in ex.orders}
        assert sorted(f.id for f in fills) == sorted(f.id for o in orders.values() for f in o.fills)
        expected = {asset: (amount, D(0)) for asset, amount in initial.items()}
        net: dict[str, Decimal] = {}
        for fill in fills:
            order = orders[fill.order_id]
            base, quote = order.symbol.split("/")
            sign = 1 if order.side is BUY else -1
            free_b, locked_b = expected.get(base, (D(0), D(0)))
            free_q, locked_q = expected.get(quote, (D(0), D(0)))
            expected[base] = (free_b + sign * fill.amount, locked_b)
            expected[quote] = (free_q - sign * fill.amount * fill.price, locked_q)
            net[order.symbol] = net.get(order.symbol, D(0)) + sign * fill.amount
        for order in orders.values():
            assert order.filled == sum((f.amount for f in order.fills), D(0))
            assert order.filled <= order.amount
            if order.status.final or order.price is None:
                continue
            base, quote = order.symbol.split("/")
            asset, held = (
                (quote, order.remaining * order.price)
                if order.side is BUY
                else (
                    base,
                    order.remaining,
                )
            )
            free, locked = expected.get(asset, (D(0), D(0)))
            expected[asset] = (free - held, locked + held)
        actual = {a: (b.free, b.locked) for a, b in (await ex.fetch_balance()).items()}
        assert {a: v for a, v in actual.items() if v != (D(0), D(0))} == {
            a: v for a, v in expected.items() if v != (D(0), D(0))
        }
        assert all(free >= 0 and locked >= 0 for free, locked in actual.values())
        positions = {p.symbol: p.amount for p in await ex.fetch_positions()}
        assert positions == {s: amount for s, amount in net.items() if amount != 0}
    finally:
        ex.faults = faults


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(20))
async def test_balances_and_positions_stay_consistent_with_the_fills(seed: int) -> None:
    initial = {"USDT": D(2000), "BTC": D(3), "ETH": D(10)}
    faults = Faults(0.05, 0.05, 0.05, 0.05, 0.3, 0.5)
    ex = paper(balances=initial, seed=seed, faults=faults, max_fill_per_step=D("0.5"))
    await random_session(ex, Random(seed), 150)
    await assert_consistent(ex, initial)


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_timeout_before_accept_places_nothing() -> None:
    ex = paper(faults=Faults(timeout_before_accept=1))
    with pytest.raises(ExchangeUnavailable, match="before the exchange got it") as info:
        await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="t")
    assert info.value.retryable and info.value.exchange == "paper"
    assert ex.orders == []
    ex.faults = Faults()
    assert await ex.fetch_order_by_client_id("t", "BTC/USDT") is None


@pytest.mark.asyncio
async def test_timeout_after_accept_places_the_order() -> None:
    ex = paper(faults=Faults(timeout_after_accept=1))
    with pytest.raises(ExchangeUnavailable, match="after the exchange accepted it"):
        await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="t")
    # Only create_order times out: the lookup answers.
    found = await ex.fetch_order_by_client_id("t", "BTC/USDT")
    assert found is not None and found.status is OrderStatus.FILLED
    assert [o.client_order_id for o in ex.orders] == ["t"]
    ex.faults = Faults()
    with pytest.raises(OrderRejected, match="duplicate clientOrderId"):
        await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="t")


@pytest.mark.asyncio
async def test_a_lost_ack_loses_the_answer_of_any_call_but_not_its_effect() -> None:
    ex = paper(faults=Faults(lost_ack=1))
    with pytest.raises(ExchangeUnavailable, match="answer to create_order was lost"):
        await ex.create_order("BTC/USDT", LIMIT, BUY, D(1), D(50), client_order_id="l")
    [order] = ex.orders
    with pytest.raises(ExchangeUnavailable, match="cancel_order"):
        await ex.cancel_order(order.id, "BTC/USDT")
    assert ex.orders[0].status is OrderStatus.CANCELLED
    with pytest.raises(ExchangeUnavailable):  # a refusal's answer is lost too
        await ex.create_order("BTC/USDT", MARKET, BUY, D(10**6), client_order_id="big")
    calls = [
        ex.fetch_order(order.id, "BTC/USDT"),
        ex.fetch_order_by_client_id("l", "BTC/USDT"),
        ex.fetch_open_orders(),
        ex.fetch_positions(),
        ex.fetch_balance(),
        ex.fetch_fills(),
    ]
    for call in calls:
        with pytest.raises(ExchangeUnavailable, match="was lost"):
            await call


@pytest.mark.asyncio
async def test_a_rate_limit_refuses_before_anything_happens() -> None:
    ex = paper(faults=Faults(rate_limit=1))
    with pytest.raises(RateLimited, match="rate limit") as info:
        await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="r")
    assert info.value.retryable and info.value.exchange == "paper"
    assert ex.orders == []
    with pytest.raises(RateLimited):
        await ex.fetch_balance()
    ex.faults = Faults()
    await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="r")  # id still free
    assert len(ex.orders) == 1


@pytest.mark.asyncio
async def test_a_duplicated_fill_report_comes_again_at_the_next_step() -> None:
    ex = paper(faults=Faults(duplicate_fill=1))
    await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="d")
    first = await ex.fetch_fills()
    assert len(first) == 1
    ex.advance()
    again = await ex.fetch_fills(since=len(first))
    assert [f.id for f in again] == [first[0].id] and again[0] == first[0]
    assert len(ex.fills) == 1  # one fill happened, reported twice
    assert [f.id for f in await ex.fetch_fills("ETH/USDT")] == []
    assert len(await ex.fetch_fills("BTC/USDT")) == 2


@pytest.mark.asyncio
async def test_out_of_order_fill_reports_are_the_same_reports_shuffled() -> None:
    ex = paper(faults=Faults(out_of_order_fills=1), seed=3)
    for n in range(8):
        await ex.create_order("ETH/USDT", MARKET, BUY, D(1), client_order_id=f"o{n}")
    true = [f.id for f in ex.fills]
    reports = [[f.id for f in await ex.fetch_fills()] for _ in range(3)]
    assert all(sorted(r) == sorted(true) for r in reports)
    assert any(r != true for r in reports)
    assert [f.id for f in (await ex.fetch_fills(since=6))] in (
        [true[6], true[7]],
        [true[7], true[6]],
    )
    ex.faults = Faults()
    assert [f.id for f in await ex.fetch_fills()] == true


@pytest.mark.asyncio
async def test_no_faults_by_default_and_probability_zero_never_fires() -> None:
    ex = paper(seed=12345)
    trace = await random_session(ex, Random(1), 200)
    assert not any(line.startswith(("ExchangeUnavailable", "RateLimited")) for line in trace)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("timeout_before_accept", "before the exchange got it"),
        ("timeout_after_accept", "after the exchange accepted it"),
        ("lost_ack", "was lost"),
        ("rate_limit", "rate limit"),
    ],
)
async def test_a_fault_fires_about_as_often_as_configured(fault: str, error: str) -> None:
    ex = paper(balances={"USDT": D(10**9)}, faults=replace(Faults(), **{fault: 0.3}), seed=7)
    errors: list[str] = []
    for n in range(400):
        try:
            await ex.create_order("ETH/USDT", MARKET, BUY, D(1), client_order_id=f"f{n}")
        except ExchangeError as exc:
            errors.append(str(exc))
    hits = len(errors)
    assert all(error in message for message in errors)
    assert 80 <= hits <= 160  # 0.3 of 400 is 120


@pytest.mark.asyncio
async def test_same_seed_and_same_calls_give_the_same_outcomes() -> None:
    faults = Faults(0.1, 0.1, 0.1, 0.1, 0.3, 0.5)

    async def run(seed: int) -> tuple[list[str], list[ExchangeOrder], list[Fill], list[Fill]]:
        ex = paper(seed=seed, faults=faults, max_fill_per_step=D(1))
        trace = await random_session(ex, Random(99), 300)
        ex.faults = Faults()
        return trace, ex.orders, ex.fills, await ex.fetch_fills()

    first, second, other = await run(5), await run(5), await run(6)
    assert first == second
    assert any(line.startswith("ExchangeUnavailable") for line in first[0])
    assert any(line.startswith("RateLimited") for line in first[0])
    assert first[0] != other[0]  # the seed decides


# -- restart --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_restart_loses_answers_in_flight_and_keeps_everything_else() -> None:
    ex = paper(max_fill_per_step=D(1))
    resting = await ex.create_order("BTC/USDT", LIMIT, BUY, D(2), D(95), client_order_id="r")
    placing = asyncio.create_task(
        ex.create_order("BTC/USDT", LIMIT, SELL, D("0.5"), D(200), client_order_id="f")
    )
    await asyncio.sleep(0)  # the request reaches the exchange; its answer is on the way
    ex.restart()
    with pytest.raises(ExchangeUnavailable, match="restarted while create_order"):
        await asyncio.wait_for(placing, timeout=5)
    assert ex.restarts == 1
    in_flight = await ex.fetch_order_by_client_id("f", "BTC/USDT")
    assert in_flight is not None and in_flight.status is OrderStatus.OPEN
    assert [o.client_order_id for o in await ex.fetch_open_orders()] == ["r", "f"]
    assert await balances(ex) == {"BTC": (D("0.5"), D("0.5")), "USDT": (D(9810), D(190))}
    ex.advance(2)  # resting orders keep resting, and fill after the restart: 90, 80
    filled = await ex.fetch_order(resting.id, "BTC/USDT")
    assert filled.status is OrderStatus.FILLED and len(filled.fills) == 2
    assert [f.id for f in await ex.fetch_fills()] == [f.id for f in filled.fills]


@pytest.mark.asyncio
async def test_a_call_after_a_restart_is_answered() -> None:
    ex = paper()
    ex.restart()
    order = await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="a")
    assert order.status is OrderStatus.FILLED


# -- the contract ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_it_is_an_exchange_connector_with_decimal_money_and_utc_times() -> None:
    start = datetime(2030, 6, 1, 12, tzinfo=UTC)
    async with paper(start=start, step=timedelta(seconds=5), name="sim") as ex:
        assert isinstance(ex, ExchangeConnector) and ex.name == "sim"
        order = await ex.create_order("BTC/USDT", LIMIT, BUY, D(1), D(95), client_order_id="a")
        assert order.id.startswith("sim-") and order.created_at == start
        ex.advance()
        fill = (await ex.fetch_order(order.id, "BTC/USDT")).fills[0]
        assert fill.at == start + timedelta(seconds=5) and fill.at.tzinfo is UTC
        assert isinstance(fill.price, Decimal) and isinstance(fill.amount, Decimal)
        balance = (await ex.fetch_balance())["BTC"]
        assert isinstance(balance, Balance) and balance.updated_at == fill.at
        with pytest.raises(OrderRejected) as info:
            await ex.create_order("XRP/USDT", MARKET, BUY, D(1), client_order_id="b")
        assert info.value.exchange == "sim"


@pytest.mark.asyncio
async def test_returned_orders_are_copies() -> None:
    ex = paper()
    order = await ex.create_order("BTC/USDT", MARKET, BUY, D(1), client_order_id="a")
    order.status = OrderStatus.CANCELLED
    order.fills.clear()
    again = await ex.fetch_order(order.id, "BTC/USDT")
    assert again.status is OrderStatus.FILLED and len(again.fills) == 1


# -- the hook: statekit_register_connectors -------------------------------------------------------


class RecordingExchange(PaperExchange):
    """A third party's connector (a PaperExchange subclass keeps the test short)."""

    name = "acme"


class AcmePlugin:
    @statekit.hookimpl
    def statekit_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add("Acme", RecordingExchange)


def test_the_paper_exchange_is_the_trading_plugins_connector() -> None:
    host = PluginHost(autoload=False)
    assert host.find(ConnectorRegistry, "paper") is PaperExchange
    # The multi-process paper exchange is a test tool (statekit.testing.paper_remote),
    # not a connector the trading plugin ships.
    assert host.registry(ConnectorRegistry).names() == ["paper"]
    infos = {info.name: info for info in host.plugins()}
    assert infos["trading"].connectors == ["paper"]
    assert infos["trading"].as_dict()["connectors"] == ["paper"]
    assert infos["memory"].connectors == []


def test_a_plugin_registers_its_own_connector() -> None:
    host = PluginHost(autoload=False, plugins=[("acme", AcmePlugin())])
    assert host.find(ConnectorRegistry, "acme") is RecordingExchange
    assert host.find(ConnectorRegistry, "ACME") is RecordingExchange  # names are case-insensitive
    assert host.registry(ConnectorRegistry).names() == ["acme", "paper"]
    assert host.registry(ConnectorRegistry).owned_by("acme") == ["acme"]
    assert host.failures() == []


def test_an_unknown_connector_is_a_clear_error_listing_the_installed_ones() -> None:
    host = PluginHost(autoload=False, plugins=[("acme", AcmePlugin())])
    with pytest.raises(PluginError) as info:
        host.find(ConnectorRegistry, "binance")
    message = str(info.value)
    assert "no exchange connector named 'binance' (installed: acme, paper)" in message
    assert "statekit_register_connectors" in message
    blocked = PluginHost(autoload=False, blocked=["trading"])
    with pytest.raises(PluginError, match=r"\(installed: none\).*blocked plugins: trading"):
        blocked.find(ConnectorRegistry, "paper")


def test_a_connector_that_is_not_an_exchange_connector_is_refused() -> None:
    class NotAConnector:
        pass

    class Wrong:
        @statekit.hookimpl
        def statekit_register_connectors(self, registry: ConnectorRegistry) -> None:
            registry.add("fine", RecordingExchange)
            registry.add("wrong", NotAConnector)  # type: ignore[arg-type]

    host = PluginHost(autoload=False, plugins=[("wrong", Wrong())])
    [failure] = host.failures()
    assert failure.name == "wrong" and failure.error is not None
    assert "not a statekit.trading.exchange.ExchangeConnector subclass" in failure.error
    # a failed plugin registers nothing, not half
    assert host.registry(ConnectorRegistry).names() == ["paper"]
    with pytest.raises(PluginError, match="plugins that failed to load: wrong"):
        host.find(ConnectorRegistry, "fine")


def test_a_connector_name_taken_by_another_plugin_is_refused() -> None:
    class Clash:
        @statekit.hookimpl
        def statekit_register_connectors(self, registry: ConnectorRegistry) -> None:
            registry.add("paper", RecordingExchange)

    host = PluginHost(autoload=False, plugins=[("clash", Clash())])
    [failure] = host.failures()
    assert failure.name == "clash"
    assert "registered connector name 'paper', already served by plugin 'trading'" in (
        failure.error or ""
    )
    assert host.find(ConnectorRegistry, "paper") is PaperExchange


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path that importlib.metadata reads like site-packages."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("STATEKIT_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("STATEKIT_BLOCKED_PLUGINS", raising=False)
    yield root
    sys.modules.pop("statekit_simex", None)
    importlib.invalidate_caches()


def test_an_installed_plugin_registers_a_connector_through_the_entry_point_group(
    site: Path,
) -> None:
    info = site / "statekit_simex-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: statekit-simex\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[statekit]\nsimex = statekit_simex\n")
    (site / "statekit_simex.py").write_text(
        textwrap.dedent(
            """
            from statekit import hookimpl
            from statekit.trading.paper import PaperExchange


            class SimExchange(PaperExchange):
                name = "simex"


            @hookimpl
            def statekit_register_connectors(registry):
                registry.add("simex", SimExchange)
            """
        )
    )
    importlib.invalidate_caches()
    host = PluginHost()
    cls = host.find(ConnectorRegistry, "simex")
    assert cls.__name__ == "SimExchange" and issubclass(cls, ExchangeConnector)
    [simex] = [i for i in host.plugins() if i.name == "simex"]
    assert (simex.distribution, simex.version, simex.connectors) == (
        "statekit-simex",
        "0.3.0",
        ["simex"],
    )
    assert issubclass(cls, PaperExchange)
    assert isinstance(cls(prices={"BTC/USDT": [D(1)]}), ExchangeConnector)
