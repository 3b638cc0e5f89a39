"""The paper exchange: orders against a scripted price path, then the same under faults.

Run it: ``python examples/paper_exchange.py``. No server, no files: the paper
exchange lives in memory, and the same seed gives the same run every time.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from statekit import PluginHost
from statekit.trading import OrderSide, OrderType
from statekit.trading.errors import ExchangeError, ExchangeUnavailable, OrderRejected, RateLimited
from statekit.trading.exchange import ExchangeConnector
from statekit.trading.paper import Faults, PaperExchange
from statekit.trading.plugin import ConnectorRegistry

PRICES = {"BTC/USDT": [Decimal(p) for p in ("100", "96", "92", "99", "104", "101")]}
BALANCES = {"USDT": Decimal(1000), "BTC": Decimal(1)}


async def matching() -> None:
    print("-- matching --")
    # The built-in trading plugin registers the paper exchange as the connector "paper".
    connector = PluginHost(autoload=False).find(ConnectorRegistry, "paper")
    assert issubclass(connector, PaperExchange)
    exchange = connector(prices=PRICES, balances=BALANCES, max_fill_per_step=Decimal("0.5"))
    async with exchange:
        market = await exchange.create_order(
            "BTC/USDT", OrderType.MARKET, OrderSide.BUY, Decimal(2), client_order_id="buy-now"
        )
        print(f"market buy: {market.status} {market.filled} at {market.average_price}")
        limit = await exchange.create_order(
            "BTC/USDT",
            OrderType.LIMIT,
            OrderSide.BUY,
            Decimal(1),
            Decimal(93),
            client_order_id="buy-dip",
        )
        usdt = (await exchange.fetch_balance())["USDT"]
        print(f"limit buy at 93: {limit.status}; USDT free {usdt.free}, locked {usdt.locked}")
        for _ in range(3):
            exchange.advance()
            seen = await exchange.fetch_order(limit.id, "BTC/USDT")
            print(
                f"  {exchange.now:%H:%M} price {exchange.price('BTC/USDT')}: "
                f"{seen.status}, filled {seen.filled}"
            )
        try:
            await exchange.create_order(
                "BTC/USDT", OrderType.MARKET, OrderSide.BUY, Decimal(1), client_order_id="buy-now"
            )
        except OrderRejected as exc:
            print(f"same client order id again: refused ({exc})")
        [position] = await exchange.fetch_positions()
        print(f"position: {position.amount} BTC, entry {position.entry_price:.2f}")


async def place_once(exchange: ExchangeConnector, client_order_id: str) -> str:
    """Place a market buy so that it exists exactly once, whatever the exchange does."""
    for _ in range(20):
        try:
            order = await exchange.create_order(
                "BTC/USDT",
                OrderType.MARKET,
                OrderSide.BUY,
                Decimal("0.1"),
                client_order_id=client_order_id,
            )
            return f"placed {order.id}"
        except RateLimited:
            continue  # refused before anything happened: send it again
        except OrderRejected as exc:
            if "duplicate clientOrderId" not in str(exc):
                return f"refused: {exc}"
            # An earlier attempt got through after all: find it.
        except ExchangeUnavailable:
            pass  # no answer: the order may exist. Ask before sending it again; never guess.
        try:
            found = await exchange.fetch_order_by_client_id(client_order_id, "BTC/USDT")
        except ExchangeError:
            continue
        if found is not None:
            return f"found {found.id} after no answer"
    return "gave up"


async def faults(seed: int) -> list[str]:
    exchange = PaperExchange(
        prices=PRICES,
        balances=BALANCES,
        seed=seed,
        faults=Faults(timeout_after_accept=0.3, lost_ack=0.2, rate_limit=0.2),
    )
    outcomes = [await place_once(exchange, f"signal-{n}") for n in range(5)]
    placed = sorted(o.client_order_id or "" for o in exchange.orders)
    print(f"seed {seed}: exchange holds {len(placed)} orders for 5 signals: {placed}")
    return outcomes


async def main() -> None:
    await matching()
    print("-- faults --")
    first = await faults(seed=7)
    for line in first:
        print(f"  {line}")
    print(f"same seed, same run: {await faults(seed=7) == first}")


if __name__ == "__main__":
    asyncio.run(main())
