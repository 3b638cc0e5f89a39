"""From the legacy JSON-file TradingStateManager to statekit: one import line, then more.

    python examples/legacy_dropin.py

Part 1 is the bot as it was, with only its import changed: the same calls, the
same dicts. Its state now lives in the configured store (``./statekit.db``, SQLite,
unless ``STATEKIT_URL`` or the ``TRADING_STATE_*`` settings name another); a
``./state.json`` the old manager left is migrated on first use and kept as it was.

Part 2 is the same state through the async ``TradingState`` API: typed positions
(Decimal prices, UTC times), each with its history, and sections the legacy
manager never had (orders). Run it twice: the second run carries on from the first.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

import statekit
from statekit.codec import redact_url

# from utils.state_manager import TradingStateManager   # before: one JSON file, rewritten
from statekit.compat import TradingStateManager  # after: the only line that changes
from statekit.config import Settings
from statekit.trading import Order, OrderSide, TradingState


def legacy_bot() -> Settings:
    """Part 1: the bot's code, unchanged but for the import above. Returns the
    settings naming the manager's store, for part 2."""
    state_manager = TradingStateManager("state.json")
    try:
        state = state_manager.load_trading_state()  # None the first time
        positions = state["active_positions"] if state else {}
        pair_states = state["pair_states"] if state else {}
        print(f"loaded  {len(positions)} position(s) saved by an earlier run")

        price = 1.0985 + 0.0001 * len(pair_states.get("EURUSD", {}).get("ticks", []))
        positions["EURUSD"] = positions.get("EURUSD") or {
            "symbol1": "EUR",
            "symbol2": "USD",
            "direction": "long",
            "entry_time": datetime.now().isoformat(),  # naive, as the legacy bot wrote it
            "quantity": 100000,
            "entry_price": 1.0985,
        }
        positions["EURUSD"]["current_price"] = round(price, 5)
        eur = pair_states.setdefault("EURUSD", {"position": "long", "cooldown": 0, "ticks": []})
        eur["ticks"].append(round(price, 5))

        ok = state_manager.save_trading_state(positions, pair_states)
        print(f"saved   EURUSD at {positions['EURUSD']['current_price']}: {ok}")
        return state_manager.config
    finally:
        state_manager.shutdown()


async def grown_up(settings: Settings) -> None:
    """Part 2: the same positions, typed, through the async API."""
    # The manager's store. With a store configured (STATEKIT_URL...) that is simply
    # `await statekit.open()`; unconfigured, it is the SQLite file beside state.json.
    async with await statekit.open(settings=settings) as store:
        print(f"store   {redact_url(settings.store_url())}")
        trading = TradingState(store)
        position = await trading.positions.get("EURUSD")
        assert position is not None
        assert position.entry_time is not None and position.direction is not None
        print(
            f"typed   {position.symbol}: {position.direction.value} {position.quantity} "
            f"@ {position.entry_price!r}, entered {position.entry_time.isoformat()} (UTC)"
        )
        history = await trading.positions.history("EURUSD")
        prices = [r.data.get("current_price") for r in history if isinstance(r.data, dict)]
        print(f"history EURUSD: {len(history)} version(s), prices newest first {prices}")

        # What the legacy manager never had: orders, typed, each versioned.
        take_profit = Order(
            id="EURUSD-tp-1",
            symbol="EURUSD",
            side=OrderSide.SELL,
            amount=Decimal("100000"),
            price=Decimal("1.1085"),
        )
        record = await trading.orders.save(take_profit, by="legacy_dropin example")
        side = take_profit.side.value
        print(f"order   {take_profit.id} {side} @ {take_profit.price}: v{record.version}")


if __name__ == "__main__":
    asyncio.run(grown_up(legacy_bot()))
