"""The soak: 10,000 intents over 100 symbols against the paper exchange with faults converge.

The issue's "done when": on SQLite and on PostgreSQL, one engine brings 10,000
intents (mostly resting GTC limits away from the price, some crossing so they fill,
some OCO pairs, some IOC) to the exchange, through injected faults for the first
passes, with the market moving between passes, amends and deletions on the way,
and a bounded number of passes. Then the store and the exchange's oracles must
agree: every intent still wanted has exactly one open order matching it, no
client order id was used twice, every fill is in the statuses, no open order
belongs to nobody.

``make test`` runs a CI size of 1,000 intents (10 blocks, every kind of intent and
fault); ``make soak`` (``STATEKIT_SOAK=1``) runs the issue's 10,000.
``STATEKIT_SOAK_INTENTS`` sets any count. Nothing here looks at the wall clock: the
bound is a pass count.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal

import pytest

from statekit.bench.reconcile import paper_exchange, symbol_names
from statekit.errors import StatekitError
from statekit.store import StateStore
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.idempotency import IdempotencyLedger
from statekit.trading.models import OrderSide, OrderType, TimeInForce
from statekit.trading.paper import Faults, PaperExchange
from statekit.trading.reconcile import (
    Condition,
    IntentReconciler,
    IntentSpec,
    IntentStore,
    PassReport,
    ReconcileEngine,
)
from statekit.trading.reconcile.orders import STRATEGY_PREFIX

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
INTENTS = int(os.environ.get("STATEKIT_SOAK_INTENTS", "10000" if SOAK else "1000"))
SYMBOLS = 100
BLOCK = 100
"""Intents per block: each block trades one symbol and holds every kind below."""
OCO_PAIRS = 20
"""OCO pairs in all (about): IntentStore.group reads every intent, so each pair costs
a full scan per pass (docs/benchmarks.md, "Where the engine's time goes")."""
FAULTS = Faults(timeout_after_accept=0.02, lost_ack=0.02, rate_limit=0.02, duplicate_fill=0.05)
FAULTY_PASSES = 2
MAX_PASSES = 10
"""Passes the whole run may take, faulty ones included."""
PATH = [Decimal(p) for p in (100, 99, 101, 99, 101, 100)]
"""Every symbol's price: down to 99 and up to 101 twice, then 100 for good."""
ONE, TWO = Decimal(1), Decimal(2)

# What each kind of intent must end as: (done reason or None for resting, filled).
EXPECTED: dict[str, tuple[str | None, Decimal]] = {
    "far": (None, Decimal(0)),  # 10-14 away from every price on the path
    "amended": (None, Decimal(0)),
    "near": ("Filled", ONE),  # at 99 / 101: the path reaches it after any placement
    "cross": ("Filled", TWO),  # crosses at once: one unit, the second at the next step
    "oco_rest": (None, Decimal(0)),  # both legs rest
    "oco_later_win": ("Filled", ONE),  # sell at 101: filled when the price gets there
    "oco_later_lose": ("OcoCancelled", Decimal(0)),
    "oco_cross_win": ("Filled", ONE),  # crosses when placed
    "oco_cross_lose": ("OcoCancelled", Decimal(0)),
    "oco_orphaned": ("OcoSiblingDeleted", Decimal(0)),  # its sibling was deleted
    "ioc_full": ("Filled", ONE),
    "ioc_partial": ("Ended", ONE),  # 2 wanted, 1 fills per step: the rest is cancelled
    "ioc_none": ("Ended", Decimal(0)),  # never crosses
}


@dataclass(frozen=True)
class Planned:
    kind: str
    spec: IntentSpec


def _limit(
    symbol: str,
    side: OrderSide,
    price: int,
    amount: Decimal = ONE,
    tif: TimeInForce = TimeInForce.GTC,
    group: str | None = None,
) -> IntentSpec:
    return IntentSpec(
        symbol=symbol,
        side=side,
        type=OrderType.LIMIT,
        amount=amount,
        price=Decimal(price),
        time_in_force=tif,
        oco_group=group,
    )


def plan(count: int) -> dict[str, Planned]:
    """``count`` intents in blocks of :data:`BLOCK`, block ``b`` on symbol ``b % SYMBOLS``."""
    symbols = symbol_names(SYMBOLS)
    blocks = -(-count // BLOCK)
    every = max(1, blocks // OCO_PAIRS)
    buy, sell = OrderSide.BUY, OrderSide.SELL
    planned: dict[str, Planned] = {}
    for i in range(count):
        block, j = divmod(i, BLOCK)
        symbol = symbols[block % SYMBOLS]
        side = buy if j % 2 == 0 else sell
        far = 90 - j % 5 if side is buy else 110 + j % 5
        kind, spec = "far", _limit(symbol, side, far)
        if 70 <= j < 78:
            kind, spec = "near", _limit(symbol, side, 99 if side is buy else 101)
        elif 78 <= j < 86:
            kind, spec = "cross", _limit(symbol, side, 105 if side is buy else 95, TWO)
        elif j in (86, 87) and block % every == 0:
            group = f"g{block:04d}"
            pair = ["rest", "later", "cross", "orphaned"][block // every % 4]
            first = j == 86
            kind, spec = {
                "rest": ("oco_rest", _limit(symbol, sell, 110 if first else 112, group=group)),
                "later": (
                    "oco_later_win" if first else "oco_later_lose",
                    _limit(symbol, sell, 101 if first else 115, group=group),
                ),
                "cross": (
                    "oco_cross_win" if first else "oco_cross_lose",
                    _limit(symbol, buy, 102 if first else 85, group=group),
                ),
                "orphaned": (
                    "oco_deleted" if first else "oco_orphaned",
                    _limit(symbol, sell, 111 if first else 113, group=group),
                ),
            }[pair]
        elif j in (90, 91):
            kind, spec = "ioc_full", _limit(symbol, buy, 103, tif=TimeInForce.IOC)
        elif j in (92, 93):
            kind, spec = "ioc_partial", _limit(symbol, buy, 103, TWO, TimeInForce.IOC)
        elif j in (94, 95, 96, 97):
            kind, spec = "ioc_none", _limit(symbol, sell, 120, tif=TimeInForce.IOC)
        planned[f"s{i:05d}"] = Planned(kind, spec)
    far = sorted(k for k, p in planned.items() if p.kind == "far")
    for intent_id in far[::50]:
        planned[intent_id] = Planned("amended", planned[intent_id].spec)
    for intent_id in far[25::50]:
        planned[intent_id] = Planned("deleted", planned[intent_id].spec)
    return planned


# -- stores ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``store`` (tests/conftest.py) on a durable backend: a file and a server."""
    return str(request.param)


# -- the run --------------------------------------------------------------------------------


async def _pass(engine: ReconcileEngine) -> PassReport | None:
    """One pass; None when its observe got no answer from the (faulty) exchange."""
    try:
        return await engine.run_once()
    except StatekitError:
        return None


async def _create(intents: IntentStore, planned: dict[str, Planned]) -> None:
    # OCO legs first: creating one reads every intent to check its group's symbol.
    order = sorted(planned, key=lambda k: planned[k].spec.oco_group is None)
    for intent_id in order:
        await intents.create(intent_id, planned[intent_id].spec)


async def test_intents_converge_through_faults(store: StateStore) -> None:
    planned = plan(INTENTS)
    intents = IntentStore(store)
    await _create(intents, planned)
    exchange = paper_exchange(
        symbol_names(SYMBOLS), faults=FAULTS, seed=7, prices=PATH, max_fill_per_step=ONE
    )
    engine = ReconcileEngine(
        store,
        exchange,
        # No rate limit to wait for (the paper exchange has none); resting keys not
        # requeued within a pass (each pass looks at every key; the market only
        # moves between passes).
        reconcilers=[IntentReconciler()],
        workers=8,
        rate=1e9,
        burst=10**9,
        lease_ttl=60.0,
    )
    reports: list[PassReport | None] = []
    try:
        # Faulty passes, the market moving between them, amends and deletions on the way.
        reports.append(await _pass(engine))
        for intent_id, p in planned.items():
            if p.kind == "amended":
                assert p.spec.price is not None
                await intents.update(intent_id, price=p.spec.price - 1)
            elif p.kind in ("deleted", "oco_deleted"):
                await intents.delete(intent_id)
        exchange.advance(1)  # 99
        reports.append(await _pass(engine))
        assert len(reports) == FAULTY_PASSES
        exchange.faults = Faults()
        exchange.advance(2)  # 101, 99
        reports.append(await _pass(engine))
        exchange.advance(2)  # 101, 100: the price from now on
        while len(reports) < MAX_PASSES:
            report = await _pass(engine)
            reports.append(report)
            if report is not None and report.in_sync:
                break
        last = reports[-1]
        assert last is not None and last.in_sync, (
            f"not converged after {len(reports)} passes: {last and last.pending[:10]}, "
            f"last error: {engine.metrics.last_error}"
        )
        # Converged means stable: one more pass finds nothing to do.
        stable = await engine.run_once()
        assert stable.in_sync and not stable.actions, [a.detail for a in stable.actions[:10]]
    finally:
        await engine.aclose()

    faulty = [r for r in reports[:FAULTY_PASSES] if r is not None]
    assert sum(len(r.actions) for r in faulty) > 0
    if len(planned) >= 10 * BLOCK:
        assert engine.metrics.errors > 0, "the faults were injected, and met"
    await _check_converged(store, exchange, planned)


# -- the checks -----------------------------------------------------------------------------


async def _check_converged(
    store: StateStore, exchange: PaperExchange, planned: dict[str, Planned]
) -> None:
    intents = {i.id: i for i in await IntentStore(store).all()}
    statuses = await IntentStore(store).statuses()
    orders = exchange.orders
    by_cid: dict[str, ExchangeOrder] = {}
    for order in orders:
        assert order.client_order_id is not None
        by_cid[order.client_order_id] = order

    # Deleted intents are gone, with their statuses; every other one is there.
    gone = {k for k, p in planned.items() if p.kind in ("deleted", "oco_deleted")}
    assert intents.keys() == planned.keys() - gone
    assert statuses.keys() == intents.keys()

    # No client order id twice: on the exchange, and across every status's legs.
    assert len(by_cid) == len(orders)
    legs = [leg.client_order_id for s in statuses.values() for leg in s.legs]
    assert len(legs) == len(set(legs)), Counter(legs).most_common(3)

    # Every order on the exchange was sent by the engine for an intent (the ledger
    # says which), and every open one is a live leg of an intent that still wants it.
    owner: dict[str, str] = {}
    async for entry in IdempotencyLedger(store).entries():
        strategy = entry.params.get("strategy_id") or ""
        assert strategy.startswith(STRATEGY_PREFIX), entry
        owner[entry.key] = strategy.removeprefix(STRATEGY_PREFIX)
    assert by_cid.keys() <= owner.keys(), "an order on the exchange nobody placed"
    open_by_intent: dict[str, list[ExchangeOrder]] = defaultdict(list)
    for cid, order in by_cid.items():
        if not order.status.final:
            assert owner[cid] in intents, f"orphan open order {cid} of {owner[cid]}"
            open_by_intent[owner[cid]].append(order)

    # Every fill is accounted for: each order's fills add up to what it reports, and
    # each leg holds what its order filled; fills of deleted intents' orders aside,
    # the statuses hold every fill that happened.
    filled_by_order: dict[str, Decimal] = defaultdict(Decimal)
    for fill in exchange.fills:
        filled_by_order[fill.order_id] += fill.amount
    for order in orders:
        assert filled_by_order[order.id] == order.filled, order.id
    for status in statuses.values():
        for leg in status.legs:
            order = by_cid.get(leg.client_order_id)
            if order is None:  # never accepted (a refused or unanswered send)
                assert leg.absent or leg.filled == 0, leg
                continue
            assert leg.exchange_order_id == order.id, leg
            assert leg.filled == order.filled, (leg, order)
            assert leg.status is order.status, (leg, order)
    in_statuses = sum((s.filled for s in statuses.values()), Decimal(0))
    of_deleted = sum(
        (o.filled for cid, o in by_cid.items() if owner[cid] not in intents), Decimal(0)
    )
    assert in_statuses + of_deleted == sum((f.amount for f in exchange.fills), Decimal(0))

    # Each intent as its kind says, and in sync with the exchange.
    outcomes: Counter[str] = Counter()
    for intent_id, intent in intents.items():
        kind = planned[intent_id].kind
        status = statuses[intent_id]
        done, filled = EXPECTED[kind]
        spec = intent.spec
        live = open_by_intent.get(intent_id, [])
        where = f"{intent_id} ({kind}): {status.condition} {status.reason} {status.message}"
        assert status.condition is Condition.IN_SYNC, where
        assert status.observed_generation == intent.generation or done is not None, where
        assert status.filled == filled, where
        if kind == "amended":
            assert intent.generation == 2 and spec.price == planned[intent_id].spec.price - 1
        if done is None:
            assert status.done_generation < intent.generation, where
            assert len(live) == 1, f"{where}: {len(live)} open orders"
            order = live[0]
            assert (
                order.symbol,
                order.side,
                order.type,
                order.price,
                order.time_in_force,
                order.remaining,
            ) == (
                spec.symbol,
                spec.side,
                spec.type,
                spec.price,
                spec.time_in_force,
                spec.amount - status.filled,
            ), where
            assert [leg.client_order_id for leg in status.live_legs] == [order.client_order_id]
        else:
            assert status.done_generation == intent.generation, where
            assert status.reason == done, where
            assert not live, f"{where}: open orders {[o.id for o in live]}"
            assert not status.live_legs, where
        outcomes[kind] += 1
    # Every kind was exercised (at the size).
    if len(planned) >= 10 * BLOCK:
        assert set(outcomes) == set(EXPECTED), outcomes
