"""Keyed locks: 50 concurrent buy signals against one balance, none overdraws.

Seed 002's "check the balance, then deduct" flow on a TradingState over SQLite:
each buyer holds ``balance`` and its ``position/<symbol>`` while it checks the
cash, places the order and books it. Then a timeout, the nested-hold order rule,
and the lock statistics. Run it again: it deposits and buys again on the same file.

    python examples/keyed_locks.py [sqlite:///path.db]
"""

from __future__ import annotations

import asyncio
import logging
import sys
from decimal import Decimal

import statekit
from statekit.trading import Balance, Position, TradingState
from statekit.trading.errors import LockTimeout
from statekit.trading.locks import KeyedLocks, LockOrderError

DEPOSIT = Decimal("1000")
COST = Decimal("30")
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


async def buy(state: TradingState, locks: KeyedLocks, symbol: str) -> bool:
    """Buy one unit of ``symbol`` for COST, if the cash is there."""
    async with locks.hold("balance", f"position/{symbol}", timeout=5):
        cash = await state.balances.get("USD")
        if cash is None or cash.free < COST:
            return False
        await asyncio.sleep(0.001)  # the exchange round trip; nobody else spends meanwhile
        await state.balances.save(cash.model_copy(update={"free": cash.free - COST}))
        position = await state.positions.get(symbol) or Position(symbol=symbol)
        amount = (position.amount or Decimal(0)) + 1
        await state.positions.save(position.model_copy(update={"amount": amount}))
        return True


async def main(url: str) -> None:
    async with await statekit.open(url) as store:
        state = TradingState(store)
        before = await state.balances.get("USD")
        start = (before.free if before else Decimal(0)) + DEPOSIT
        await state.balances.save(Balance(asset="USD", free=start))
        print(f"deposit {DEPOSIT} USD: balance {start}")

        locks = KeyedLocks()
        signals = [SYMBOLS[i % len(SYMBOLS)] for i in range(50)]
        bought = await asyncio.gather(*(buy(state, locks, s) for s in signals))
        cash = await state.balances.get("USD")
        assert cash is not None
        spent = sum(bought) * COST
        print(
            f"50 concurrent buys at {COST} USD: {sum(bought)} filled, "
            f"{len(bought) - sum(bought)} refused; balance {start} -> {cash.free} "
            f"(overdraft: {'YES' if spent > start else 'none'})"
        )

        # A timeout names the locks; nothing stays held.
        async with locks.hold("balance"):
            try:
                await asyncio.wait_for(_other_task_wants(locks), 5)
            except LockTimeout as err:
                print(f"timeout: {err.names} not free within {err.timeout} s")

        # Nested holds may add names that sort later; an earlier one is refused at once.
        async with locks.hold("position/BTC-USD"):
            async with locks.hold("position/BTC-USD", "trade"):
                print("nested: position/BTC-USD then trade is fine (reentrant, in order)")
            try:
                async with locks.hold("balance"):
                    pass
            except LockOrderError as err:
                print(f"nested: {err.name!r} after {err.held!r} refused (take both at once)")

        print("statistics:")
        for name, s in locks.statistics().items():
            print(
                f"  {name}: {s.acquisitions} acquisitions, {s.contention_rate_pct:.1f}% "
                f"contended, max wait {s.max_wait_ms:.1f} ms, timeouts {s.timeouts}"
            )
        locks.log_statistics()


async def _other_task_wants(locks: KeyedLocks) -> None:
    async def want() -> None:
        async with locks.hold("balance", "trade", timeout=0.05):
            pass

    await asyncio.create_task(want())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="log: %(message)s", stream=sys.stderr)
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///keyed_locks.db"))
