"""Reconciliation: a strategy sets intents, the exchange misbehaves, the engine heals it.

The strategy only writes what it wants (intents) to a SQLite store. A
``ReconcileEngine`` makes the paper exchange match, pass after pass, while the
exchange times out, loses answers and rate-limits, an order is cancelled behind
the engine's back, an order too big for the account is rejected, and the
exchange restarts with an order in flight. Each pass prints the dry-run plan,
then every intent's condition and what the exchange holds; at the end, the
metrics, and a check that the exchange converged.

    python examples/reconcile_demo.py

The store is ``reconcile_demo.db`` in the current directory, made afresh on each
run; look at it afterwards: ``statekit --url sqlite:///reconcile_demo.db reconcile
status`` (or ``history intent-status/btc-bid``, ``reconcile metrics``). The
exchange draws its faults from a seeded RNG and the engine runs one worker, so the
story is the same every run. docs/reconcile.md explains the model.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

import statekit
from statekit.errors import StatekitError
from statekit.store import StateStore
from statekit.trading import OrderSide
from statekit.trading.models import TimeInForce
from statekit.trading.paper import Faults, PaperExchange
from statekit.trading.reconcile import (
    Backoff,
    Condition,
    IntentReconciler,
    IntentSpec,
    IntentStore,
    ReconcileEngine,
    plan_table,
)

DB = Path("reconcile_demo.db")
BTC, ETH = "BTC/USDT", "ETH/USDT"
# One price per step. BTC drifts down but never reaches the bids; ETH climbs to the
# 54 take-profit, which then fills 1 ETH per step (max_fill_per_step).
PRICES = {
    BTC: [Decimal(p) for p in ("100", "100", "99", "98", "98", "97", "97")],
    ETH: [Decimal(p) for p in ("50", "51", "52", "54", "55", "55", "55")],
}
BALANCES = {"USDT": Decimal(100_000), "BTC": Decimal(5), "ETH": Decimal(5)}
SEED = 14
# The first pass only: timeouts after the exchange accepted an order, answers lost
# on the way back, rate limits; drawn per call from Random(SEED).
STORM = Faults(timeout_after_accept=0.3, lost_ack=0.25, rate_limit=0.25)

console = Console(width=120)  # a fixed width: the same tables in a terminal and in a pipe


class PaperVenue(PaperExchange):
    """The paper exchange plus one scripted mishap: a restart with an order in flight."""

    restart_on_next_order = False

    async def create_order(self, *args: Any, **kwargs: Any) -> Any:
        if not self.restart_on_next_order:
            return await super().create_order(*args, **kwargs)
        self.restart_on_next_order = False
        call = asyncio.ensure_future(super().create_order(*args, **kwargs))
        await asyncio.sleep(0)  # the order reaches the exchange and is accepted...
        self.restart()  # ...and the exchange restarts before its answer leaves
        print("  exchange: restarted with an order in flight (accepted, answer lost)")
        return await call


def limit(side: OrderSide, symbol: str, amount: str, price: str, **more: Any) -> IntentSpec:
    """A limit-order intent (GTC unless `time_in_force` says otherwise)."""
    return IntentSpec(
        symbol=symbol, side=side, amount=Decimal(amount), price=Decimal(price), **more
    )


async def show(intents: IntentStore, exchange: PaperExchange) -> None:
    """Every intent's status as the engine recorded it, and what the exchange holds."""
    statuses = await intents.statuses()
    for intent in await intents.all():
        status = statuses.get(intent.id)
        if status is None:
            print(f"  {intent.id:<8} gen {intent.generation}  (no status yet)")
            continue
        legs = ", ".join(
            f"{leg.client_order_id[:8]}…:{leg.status.value if leg.status else '?'}"
            for leg in status.legs
        )
        print(
            f"  {intent.id:<8} gen {intent.generation} observed {status.observed_generation}"
            f"  {status.condition.value:<8} {status.reason:<16} filled {status.filled:<3}"
            f" legs [{legs}]"
        )
        if status.condition is not Condition.IN_SYNC and status.message:
            print(f"           {status.message}")
    book = [
        f"{o.id} {o.side.value} {o.remaining} {o.symbol} @ {o.price}"
        for o in exchange.orders
        if not o.status.final
    ]
    accepted = len(exchange.orders)
    print(f"  exchange: {accepted} orders accepted in all; open: {', '.join(book) or 'none'}")


async def step(
    title: str, engine: ReconcileEngine, intents: IntentStore, exchange: PaperVenue
) -> None:
    """The plan (read with faults off), one pass, and what came of it."""
    console.rule(title)
    faults, exchange.faults = exchange.faults, Faults()
    console.print(plan_table(await engine.plan(), title="plan (dry run)"))
    exchange.faults = faults
    try:
        report = await engine.run_once()
    except StatekitError as exc:  # the pass could not even list the open orders
        print(f"  pass failed before any key ({type(exc).__name__}); the next one tries again")
    else:
        print(
            f"  pass: {report.keys} keys, {len(report.actions)} actions, {report.errors} "
            f"errors, not in sync: {', '.join(report.pending) or 'none'}, "
            f"failed: {', '.join(report.failed) or 'none'}"
        )
        if report.errors:
            print(f"  last error: {engine.metrics.last_error}")
    exchange.faults = Faults()
    await show(intents, exchange)


async def story(store: StateStore) -> None:
    exchange = PaperVenue(prices=PRICES, balances=BALANCES, seed=SEED, max_fill_per_step=Decimal(1))
    intents = IntentStore(store)
    engine = ReconcileEngine(
        store,
        exchange,
        reconcilers=[IntentReconciler(max_attempts=5)],
        # One worker: the exchange draws its faults in call order, so the story repeats.
        workers=1,
        # A failed key waits for the next pass (in production: 0.05 s doubling, jittered).
        backoff=Backoff(base=30),
        lease_ttl=5,
        owner="demo",
    )

    # The strategy says what it wants, and nothing else.
    await intents.create("btc-bid", limit(OrderSide.BUY, BTC, "1", "95"))
    await intents.create("btc-ask", limit(OrderSide.SELL, BTC, "1", "110"))
    # An OCO pair: take profit at 54, or buy the dip at 47, whichever trades first.
    # Both are limit orders: a limit sell *below* the market would fill at once, so a
    # real stop-loss needs a stop order, which intents do not model.
    await intents.create("eth-tp", limit(OrderSide.SELL, ETH, "2", "54", oco_group="eth"))
    await intents.create("eth-dip", limit(OrderSide.BUY, ETH, "2", "47", oco_group="eth"))
    # Immediate-or-cancel below the market: it ends unfilled, which ends its generation.
    await intents.create(
        "btc-ioc", limit(OrderSide.BUY, BTC, "0.5", "98", time_in_force=TimeInForce.IOC)
    )

    exchange.faults = STORM
    await step(
        "pass 1: the exchange times out, loses answers, rate-limits", engine, intents, exchange
    )
    exchange.advance()
    await step("pass 2: unknown outcomes are asked by client order id", engine, intents, exchange)

    standby = ReconcileEngine(store, exchange, reconcilers=[IntentReconciler()], owner="b")
    print(f"a second engine for this scope gets the lease: {await standby.lease.try_acquire()}")

    bid = await intents.status("btc-bid")
    assert bid is not None and bid.exchange_order_id is not None
    await exchange.cancel_order(bid.exchange_order_id, BTC)
    print(f"someone cancels {bid.exchange_order_id} (btc-bid) by hand, on the exchange")
    await intents.create("eth-big", limit(OrderSide.BUY, ETH, "5000", "45"))
    print("the strategy adds eth-big: 5000 ETH @ 45, more than the account can pay")
    exchange.advance()
    await step("pass 3: drift is healed, a rejection is terminal", engine, intents, exchange)

    await intents.update("btc-bid", price=Decimal(96))
    print("the strategy moves btc-bid to 96; the exchange will restart mid-order")
    exchange.restart_on_next_order = True
    exchange.advance()
    await step("pass 4: amend = cancel, then place; an OCO leg fills", engine, intents, exchange)
    bid = await intents.status("btc-bid")
    assert bid is not None
    newest = bid.legs[-1]
    copies = [o for o in exchange.orders if o.client_order_id == newest.client_order_id]
    assert len(copies) == 1
    print(
        f"the answer for {newest.client_order_id[:8]}… was lost; asked by client order id, "
        f"the exchange has it once: {newest.exchange_order_id}"
    )

    await intents.delete("btc-ask")
    await intents.update("eth-big", amount=Decimal(20))
    print("the strategy deletes btc-ask and cuts eth-big to 20 ETH (generation 2)")
    exchange.advance()
    await step("pass 5: finalizer, a new generation, the OCO done", engine, intents, exchange)
    exchange.advance()
    await step("pass 6: nothing to do", engine, intents, exchange)

    metrics = engine.metrics.snapshot()
    counters = ("passes", "actions", "errors", "retries", "drifts", "terminal", "pending", "failed")
    print("metrics: " + ", ".join(f"{name} {metrics[name]}" for name in counters))
    print(f"lag samples: {metrics['lag_samples']} (p50 and p99 in reconcile-metrics/default)")

    # Converged: exactly one open order per live intent, none for the others, no
    # client order id twice, the deleted intent gone.
    statuses = await intents.statuses()
    live = [i.id for i in await intents.all() if statuses[i.id].done_generation < i.generation]
    owner = {leg.client_order_id: s.intent_id for s in statuses.values() for leg in s.legs}
    open_orders = [o for o in exchange.orders if not o.status.final]
    assert Counter(owner.get(o.client_order_id or "") for o in open_orders) == Counter(live)
    ids = [o.client_order_id for o in exchange.orders]
    assert len(ids) == len(set(ids)), "a client order id was used twice"
    assert await intents.get("btc-ask") is None, "the deleted intent is still there"
    assert all(s.condition is Condition.IN_SYNC for s in statuses.values())
    assert exchange.restarts == 1 and metrics["drifts"] == 1 and metrics["terminal"] == 1
    print(
        f"converged: one open order for each live intent ({', '.join(live)}), "
        f"{len(ids)} orders placed in all, no client order id twice"
    )
    await engine.aclose()


async def main() -> None:
    for path in (DB, Path(f"{DB}-wal"), Path(f"{DB}-shm")):
        path.unlink(missing_ok=True)  # a fresh store: the same story every run
    async with await statekit.open(f"sqlite:///{DB}") as store:
        await story(store)


if __name__ == "__main__":
    asyncio.run(main())
