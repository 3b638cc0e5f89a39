"""Event sourcing: an order and a position told as events, rebuilt by folding them.

Run it twice: the second run carries on from the events the first one stored.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import statekit
from statekit import ConflictError, ValidationError
from statekit.trading import TradingState
from statekit.trading.events import (
    Aggregate,
    EventStore,
    OrderFill,
    OrderFilled,
    OrderPartiallyFilled,
    OrderPlaced,
    OrderPlacement,
    PositionChange,
    PositionClosed,
    PositionClosing,
    PositionModified,
    PositionOpened,
    PositionOpening,
)


async def main() -> None:
    async with await statekit.open("sqlite:///events.db") as store:
        events = EventStore(store, snapshot_every=5)
        run = await events.version(Aggregate.position("BTC-USD")) // 4 + 1
        order = Aggregate.order(f"buy-btc-{run}")
        print(f"run {run}: order {order.id}")

        # Appending event n expects version n-1: the first event expects 0.
        await events.append(
            order,
            [
                OrderPlaced(
                    payload=OrderPlacement(
                        symbol="BTC-USD", side="buy", amount=Decimal(2), price=Decimal(64000)
                    )
                )
            ],
            expect_version=0,
        )
        fill = OrderPartiallyFilled(payload=OrderFill(amount=Decimal("0.5"), price=Decimal(63990)))
        await events.append(order, [fill], expect_version=1)
        try:  # a writer that read version 1 too loses, and is told the version that won
            await events.append(order, [fill], expect_version=1)
        except ConflictError as exc:
            print(f"second writer at version 1: conflict, the order is at {exc.actual}")
        try:  # more than what remains: refused, nothing stored
            overfill = OrderFilled(payload=OrderFill(amount=Decimal(3), price=Decimal(64000)))
            await events.append(order, [overfill])
        except ValidationError as exc:
            print(f"overfill refused ({exc.reason}): {exc}")
        last = OrderFilled(payload=OrderFill(amount=Decimal("1.5"), price=Decimal(64010)))
        await events.append(order, [last])
        state = await events.reconstruct_order_state(order.id)
        assert state is not None
        print(
            f"order {order.id}: {state.status.value}, filled {state.filled} "
            f"at {state.average_price:.2f} on average"
        )

        # The position in BTC-USD keeps one stream across its openings and closings.
        btc = Aggregate.position("BTC-USD")
        await events.append(
            btc,
            [
                PositionOpened(payload=PositionOpening(amount=Decimal(2), price=Decimal(64000))),
                PositionModified(payload=PositionChange(amount=Decimal(-1), price=Decimal(65000))),
                PositionModified(payload=PositionChange(amount=Decimal(1), price=Decimal(64500))),
                PositionClosed(payload=PositionClosing(price=Decimal(64250))),
            ],
        )
        rebuilt = await events.rebuild(btc)
        full = await events.rebuild(btc, use_snapshot=False)
        print(
            f"position BTC-USD: {rebuilt.version} events, rebuilt from the snapshot at "
            f"{rebuilt.snapshot_version} plus {rebuilt.folded} events; "
            f"same as folding all {full.folded}: {rebuilt.state == full.state}"
        )
        # The projections are TradingState's own keys, in step with the events.
        position = await TradingState(store).positions.get("BTC-USD")
        assert position is not None
        print(f"position/BTC-USD: amount {position.amount}, realized PnL {position.realized_pnl}")
        for event in await events.read(order, since=2):
            print(f"  {order.id} v{event.version}: {event.type}")


if __name__ == "__main__":
    asyncio.run(main())
