"""Idempotent order placement against the paper exchange (docs/idempotency.md).

Fires one signal 20 times at once, through an exchange that loses the answer
to the first create_order (the order *was* placed), then "crashes" a second
signal between reserve and result and recovers it, and last places an IOC
order (time in force is part of the intent). Run it twice: the second
run finds every signal already in the ledger (``./idempotency.db``) and
replays it; the exchange, being in memory, starts empty each run.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import statekit
from statekit.trading.errors import ExchangeUnavailable
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.idempotency import IdempotencyLedger, Retry
from statekit.trading.models import OrderSide, OrderType, TimeInForce
from statekit.trading.paper import PaperExchange


class Crash(Exception):
    """Stands for the process dying (power cut, OOM kill) at that point."""


class LossyExchange(PaperExchange):
    """The paper exchange with one scripted fault for the next order it accepts:
    ``lost`` (the answer is lost) or ``crash`` (the caller dies before the answer)."""

    next_fault: str | None = "lost"

    async def create_order(
        self,
        symbol: str,
        type: OrderType,
        side: OrderSide,
        amount: Decimal,
        price: Decimal | None = None,
        *,
        client_order_id: str,
        time_in_force: TimeInForce = TimeInForce.GTC,
    ) -> ExchangeOrder:
        order = await super().create_order(
            symbol,
            type,
            side,
            amount,
            price,
            client_order_id=client_order_id,
            time_in_force=time_in_force,
        )
        fault, self.next_fault = self.next_fault, None
        if fault == "lost":
            raise ExchangeUnavailable("timed out after accept", exchange=self.name)
        if fault == "crash":
            raise Crash("the process died after sending")
        return order


async def main() -> None:
    exchange = LossyExchange(
        prices={"BTC/USDT": [Decimal(64_000), Decimal(63_900)]},
        balances={"USDT": Decimal(100_000)},
    )
    async with await statekit.open("sqlite:///idempotency.db") as store:
        ledger = IdempotencyLedger(store, retry=Retry(backoff=0.01))
        recovery = await ledger.recover(exchange)  # what a crash left reserved
        placed, released = len(recovery.placed), len(recovery.released)
        print(f"at start, recover(): {placed} placed, {released} released")

        signal: dict[str, Any] = {
            "strategy_id": "breakout",
            "signal_id": "2026-01-05T09:30/BTC",
            "symbol": "BTC/USDT",
            "side": "buy",
            "type": "limit",
            "amount": Decimal("0.25"),
            "price": Decimal(64_000),
        }
        results = await asyncio.gather(*(ledger.place(exchange, **signal) for _ in range(20)))
        ids = {r.order.id for r in results}
        sent = sum(not r.replayed for r in results)
        print(f"20 duplicates -> {len(ids)} order {ids.pop()}; sent by {sent} call(s) this run")
        print(f"client order id: {results[0].key}")
        print(f"orders at the exchange this run: {len(exchange.orders)}")

        # A crash between reserve and result: the order reached the exchange, the
        # ledger still says "reserved". recover() asks the exchange by client id.
        crash = {**signal, "signal_id": "2026-01-05T09:31/BTC", "price": Decimal(63_900)}
        exchange.next_fault = "crash"
        try:
            await ledger.place(exchange, **crash)
        except Crash:
            print("second signal: the placing process died after sending")
        recovery = await ledger.recover(exchange)
        found = [p.order.id for p in recovery.placed]
        print(f"recover() found at the exchange by client id: {found}")
        again = await ledger.place(exchange, **crash)
        print(f"second signal: order {again.order.id}, replayed={again.replayed}")
        print(f"orders at the exchange now: {len(exchange.orders)}")

        # Time in force travels with the intent (and, unless GTC, is part of its key).
        # An IOC buy below the price takes nothing and is cancelled at once; a GTC
        # one would rest.
        ioc_signal = {**signal, "signal_id": "2026-01-05T09:32/BTC", "price": Decimal(63_000)}
        ioc = await ledger.place(exchange, **ioc_signal, time_in_force=TimeInForce.IOC)
        print(
            f"IOC signal: order {ioc.order.id} {ioc.order.status.value}, "
            f"filled {ioc.order.filled}, replayed={ioc.replayed}"
        )


if __name__ == "__main__":
    asyncio.run(main())
