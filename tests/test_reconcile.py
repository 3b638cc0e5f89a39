"""The reconciliation engine and the ``orders`` reconciler, against the paper exchange.

Every scenario runs on a real store (memory, SQLite, PostgreSQL) and checks the
exchange's own oracle (``PaperExchange.orders``), not the engine's bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

import statekit
from statekit import PluginHost, hookimpl
from statekit.errors import ConflictError, PluginError, ValidationError
from statekit.store import StateStore
from statekit.trading import ExchangeOrder, Faults, OrderSide, OrderStatus, PaperExchange
from statekit.trading.errors import ExchangeUnavailable, FencedOff, RateLimited, ReconcileError
from statekit.trading.idempotency import EntryStatus
from statekit.trading.models import OrderType, TimeInForce
from statekit.trading.plugin import ReconcilerRegistry
from statekit.trading.reconcile import (
    ActualOrders,
    Backoff,
    Condition,
    Context,
    IntentSpec,
    IntentStore,
    ReconcileEngine,
    Reconciler,
    Result,
    Scope,
    TokenBucket,
    WorkQueue,
    plan_table,
    prometheus_text,
    read_metrics,
)
from statekit.trading.reconcile.metrics import percentile

pytestmark = pytest.mark.asyncio

D = Decimal
SYMBOL = "BTC/USDT"


def exchange(prices: list[str] | None = None, **kwargs: Any) -> PaperExchange:
    path = [D(p) for p in (prices or ["100"] * 20)]
    return PaperExchange(
        prices={SYMBOL: path, "ETH/USDT": [D("10")] * len(path)},
        balances={"USDT": D("1000000"), "BTC": D("100"), "ETH": D("1000")},
        **kwargs,
    )


def buy(amount: str = "1", price: str = "90", **kwargs: Any) -> IntentSpec:
    return IntentSpec(symbol=SYMBOL, side=OrderSide.BUY, amount=D(amount), price=D(price), **kwargs)


def sell(amount: str = "1", price: str = "110", **kwargs: Any) -> IntentSpec:
    return IntentSpec(
        symbol=SYMBOL, side=OrderSide.SELL, amount=D(amount), price=D(price), **kwargs
    )


def open_orders(ex: PaperExchange) -> list[ExchangeOrder]:
    return [o for o in ex.orders if not o.status.final]


def assert_unique_client_ids(ex: PaperExchange) -> None:
    ids = [o.client_order_id for o in ex.orders]
    assert len(ids) == len(set(ids))


async def converge(engine: ReconcileEngine, passes: int = 10) -> None:
    for _ in range(passes):
        report = await engine.run_once()
        if report.in_sync and not report.actions:
            return
    raise AssertionError(f"not converged after {passes} passes: {report}")


# ``store`` (memory, SQLite, PostgreSQL) comes from tests/conftest.py.


@pytest_asyncio.fixture
async def memory() -> AsyncIterator[StateStore]:
    async with await statekit.open("memory://") as s:
        yield s


# -- intents in the store -------------------------------------------------------------------


async def test_intents_are_versioned_with_generations(store: StateStore) -> None:
    intents = IntentStore(store)
    created = await intents.create("i1", buy())
    assert created.generation == 1 and not created.deleting
    same = await intents.update("i1", price=D("90"))
    assert same.generation == 1  # nothing changed: no new generation
    changed = await intents.update("i1", price=D("91"))
    assert changed.generation == 2 and changed.spec.price == D("91")
    deleting = await intents.delete("i1")
    assert deleting.deleting and deleting.generation == 3
    assert [r.version for r in await intents.history("i1")] == [3, 2, 1]
    assert [i.id for i in await intents.all(symbol=SYMBOL)] == ["i1"]


async def test_bad_intents_are_refused_and_nothing_changes(memory: StateStore) -> None:
    intents = IntentStore(memory)
    with pytest.raises(ValueError, match="limit order needs a positive price"):
        IntentSpec(symbol=SYMBOL, side=OrderSide.BUY, amount=D(1))
    with pytest.raises(ValueError, match="amount must be positive"):
        buy(amount="0")
    with pytest.raises(ValueError, match="limit or market"):
        IntentSpec(symbol=SYMBOL, side="buy", type=OrderType.STOP, amount=D(1), price=D(1))
    with pytest.raises(ValidationError, match="intent id"):
        await intents.create("bad id!", buy())
    await intents.create("i1", buy())
    with pytest.raises(ConflictError):
        await intents.create("i1", buy(price="80"))
    with pytest.raises(ValidationError, match="intent 'i1': amount: Input should be greater"):
        await intents.update("i1", amount=D(-1))
    with pytest.raises(ValidationError, match="no intent 'nope'"):
        await intents.update("nope", price=D(1))
    current = await intents.get("i1")
    assert current is not None and current.spec == buy() and current.generation == 1
    await intents.create("tp", sell(oco_group="g"))
    with pytest.raises(ValidationError, match="legs of one group trade one symbol"):
        await intents.create(
            "sl", IntentSpec(symbol="ETH/USDT", side="sell", amount=D(1), price=D(9), oco_group="g")
        )
    await intents.delete("i1")
    with pytest.raises(ValidationError, match="being deleted"):
        await intents.update("i1", price=D(1))


# -- the orders reconciler ------------------------------------------------------------------


async def test_places_amends_and_finalizes(store: StateStore) -> None:
    ex = exchange()
    intents = IntentStore(store)
    engine = ReconcileEngine(store, ex)
    await intents.create("i1", buy(amount="2"))
    await converge(engine)
    (order,) = open_orders(ex)
    assert (order.side, order.amount, order.price) == (OrderSide.BUY, D(2), D(90))
    status = await intents.status("i1")
    assert status is not None
    assert status.condition is Condition.IN_SYNC and status.observed_generation == 1
    assert status.exchange_order_id == order.id

    actual = await ActualOrders(store).by_exchange_id(order.id)
    assert actual is not None and actual.intent_id == "i1"

    await intents.update("i1", price=D("91"))  # amend: cancel, then place
    await converge(engine)
    (order,) = open_orders(ex)
    assert order.price == D("91")
    assert [o.status for o in ex.orders] == [OrderStatus.CANCELLED, OrderStatus.OPEN]
    status = await intents.status("i1")
    assert status is not None and status.observed_generation == 2

    await intents.delete("i1")  # the finalizer cancels, then removes
    await converge(engine)
    assert open_orders(ex) == []
    assert await intents.get("i1") is None and await intents.status("i1") is None
    history = await intents.status_history("i1")
    assert history[0].deleted and len(history) > 2  # the whole story stays
    assert_unique_client_ids(ex)
    assert engine.metrics.lag and engine.metrics.errors == 0


async def test_partial_fill_then_amend_places_only_the_rest(memory: StateStore) -> None:
    ex = exchange(["100", "90", "90", "100"], max_fill_per_step=D("0.4"))
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex)
    await intents.create("i1", buy(amount="1"))
    await converge(engine)
    ex.advance()  # price 90: 0.4 fills
    await intents.update("i1", price=D("89"))
    await converge(engine)
    (order,) = open_orders(ex)
    assert order.amount == D("0.6") and order.price == D("89")
    status = await intents.status("i1")
    assert status is not None and status.filled == D("0.4")
    # Never more than the intent's amount, across every order of it.
    assert sum(o.filled for o in ex.orders) <= D(1)


async def test_filled_intent_is_done_and_a_bigger_amount_trades_the_rest(
    memory: StateStore,
) -> None:
    ex = exchange(["100", "90"])
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex)
    await intents.create("i1", buy(amount="1"))
    await converge(engine)
    ex.advance()
    await converge(engine)
    status = await intents.status("i1")
    assert status is not None
    assert (status.condition, status.reason, status.filled) == (Condition.IN_SYNC, "Filled", D(1))
    assert open_orders(ex) == []
    await intents.update("i1", amount=D(3))
    await converge(engine)
    _, second = ex.orders  # the price is at 90 now: the rest fills at once
    assert (second.amount, second.status) == (D(2), OrderStatus.FILLED)
    status = await intents.status("i1")
    assert status is not None and (status.filled, status.observed_generation) == (D(3), 2)


async def test_order_cancelled_behind_the_engines_back_is_placed_again(
    store: StateStore,
) -> None:
    ex = exchange()
    intents = IntentStore(store)
    engine = ReconcileEngine(store, ex)
    await intents.create("i1", buy())
    await converge(engine)
    (order,) = open_orders(ex)
    await ex.cancel_order(order.id, SYMBOL)  # someone, by hand
    await converge(engine)
    (again,) = open_orders(ex)
    assert again.id != order.id and again.client_order_id != order.client_order_id
    assert engine.metrics.drifts == 1
    conditions = [r.data["condition"] for r in await intents.status_history("i1")]
    assert "Drifted" in conditions and conditions[0] == "InSync"


async def test_drift_replacement_stops_after_max_attempts(memory: StateStore) -> None:
    ex = exchange()
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex, reconcilers=[_orders(max_attempts=2)])
    await intents.create("i1", buy())
    for _ in range(3):
        await converge(engine)
        for order in open_orders(ex):
            await ex.cancel_order(order.id, SYMBOL)
    await converge(engine)
    status = await intents.status("i1")
    assert status is not None
    assert (status.condition, status.reason) == (Condition.FAILED, "TooManyAttempts")
    assert len(ex.orders) == 2 and open_orders(ex) == []


async def test_rejected_order_is_a_terminal_failure_until_the_intent_changes(
    memory: StateStore,
) -> None:
    ex = exchange()
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex)
    await intents.create("big", buy(amount="100000"))  # more than the account can pay
    await converge(engine)
    status = await intents.status("big")
    assert status is not None
    assert (status.condition, status.reason) == (Condition.FAILED, "Rejected")
    assert "insufficient" in (status.last_error or "")
    await converge(engine)
    assert ex.orders == []  # not retried
    await intents.update("big", amount=D(1))
    await converge(engine)
    assert len(open_orders(ex)) == 1


async def test_ioc_ends_its_generation(memory: StateStore) -> None:
    ex = exchange(max_fill_per_step=D("0.5"))
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex)
    await intents.create("ioc", buy(amount="2", price="101", time_in_force=TimeInForce.IOC))
    await converge(engine)
    (order,) = ex.orders
    assert order.status is OrderStatus.CANCELLED and order.filled == D("0.5")
    status = await intents.status("ioc")
    assert status is not None
    assert (status.condition, status.reason, status.filled) == (
        Condition.IN_SYNC,
        "Ended",
        D("0.5"),
    )
    await converge(engine)
    assert len(ex.orders) == 1  # not placed again


async def test_unknown_outcomes_are_resolved_by_client_id_never_guessed(
    store: StateStore,
) -> None:
    faults = Faults(timeout_after_accept=0.5, lost_ack=0.3, rate_limit=0.2)
    ex = exchange(seed=7, faults=faults)
    intents = IntentStore(store)
    engine = ReconcileEngine(store, ex, backoff=Backoff(base=0.001, cap=0.01))
    for n in range(8):
        await intents.create(f"i{n}", buy(price=str(80 + n)))
    for _ in range(30):
        with contextlib.suppress(ExchangeUnavailable, RateLimited):  # the pass's observe
            await engine.run_once()
    ex.faults = Faults()
    await converge(engine)
    assert_unique_client_ids(ex)
    assert len(open_orders(ex)) == 8
    assert sorted(o.price for o in open_orders(ex)) == [D(80 + n) for n in range(8)]
    assert engine.metrics.retries > 0
    # Every outcome learnt is in the ledger too: no reservation is left unresolved.
    statuses = {e.status async for e in engine.ledger.entries()}
    assert statuses == {EntryStatus.PLACED}


async def test_oco_fill_cancels_the_sibling(store: StateStore) -> None:
    ex = exchange(["100", "100", "111"])
    intents = IntentStore(store)
    engine = ReconcileEngine(store, ex)
    await intents.create("tp", sell(price="110", oco_group="exit"))
    await intents.create("sl", sell(price="120", oco_group="exit"))
    await converge(engine)
    assert len(open_orders(ex)) == 2
    ex.advance(2)  # 111: the take-profit fills
    await converge(engine)
    assert open_orders(ex) == []
    tp, sl = await intents.status("tp"), await intents.status("sl")
    assert tp is not None and sl is not None
    assert (tp.reason, tp.filled) == ("Filled", D(1))
    assert (sl.stopped, sl.reason) == ("OcoCancelled", "OcoCancelled")
    await intents.update("sl", price=D("121"))  # a stopped leg stays stopped
    await converge(engine)
    assert open_orders(ex) == []


async def test_oco_partial_fill_keeps_the_filling_leg(memory: StateStore) -> None:
    ex = exchange(["100", "111", "111", "111"], max_fill_per_step=D("0.4"))
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex)
    await intents.create("tp", sell(price="110", oco_group="exit"))
    await intents.create("sl", sell(price="120", oco_group="exit"))
    await converge(engine)
    ex.advance()  # tp fills 0.4
    await converge(engine)
    (rest,) = open_orders(ex)
    assert rest.price == D("110") and rest.filled == D("0.4")
    ex.advance(2)
    await converge(engine)
    tp = await intents.status("tp")
    assert tp is not None and tp.filled == D(1)


async def test_deleting_an_oco_leg_cancels_its_siblings(memory: StateStore) -> None:
    ex = exchange()
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex)
    await intents.create("tp", sell(price="110", oco_group="exit"))
    await intents.create("sl", sell(price="120", oco_group="exit"))
    await converge(engine)
    await intents.delete("tp")
    await converge(engine)
    assert open_orders(ex) == []
    assert await intents.get("tp") is None
    sl = await intents.status("sl")
    assert sl is not None and sl.stopped == "OcoSiblingDeleted"


async def test_orphan_order_of_a_vanished_intent_is_cancelled(memory: StateStore) -> None:
    ex = exchange()
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex)
    await intents.create("i1", buy())
    await converge(engine)
    # The intent and its status disappear by hand (not through delete()): its order
    # is an orphan the engine sent and no intent owns.
    await memory.delete("intent/i1")
    await memory.delete("intent-status/i1")
    await converge(engine)
    assert open_orders(ex) == []
    assert engine.metrics.drifts == 1


async def test_orders_not_sent_by_the_engine_are_left_alone(memory: StateStore) -> None:
    ex = exchange()
    manual = await ex.create_order(
        SYMBOL, OrderType.LIMIT, OrderSide.BUY, D(1), D(50), client_order_id="manual-1"
    )
    await IntentStore(memory).create("i1", buy())
    await converge(ReconcileEngine(memory, ex))
    assert {o.id for o in open_orders(ex)} >= {manual.id}


async def test_plan_is_a_dry_run(memory: StateStore) -> None:
    ex = exchange()
    intents = IntentStore(memory)
    await intents.create("i1", buy())
    await intents.create("tp", sell(oco_group="exit"))
    engine = ReconcileEngine(memory, ex)
    actions = await engine.plan()
    assert [(a.key, a.verb) for a in actions] == [("intent:i1", "place"), ("oco:exit", "place")]
    assert ex.orders == [] and await intents.status("i1") is None
    assert not engine.lease.held
    table = plan_table(actions)
    assert table.row_count == 2


# -- the engine -----------------------------------------------------------------------------


def _orders(**kwargs: Any) -> Reconciler:
    from statekit.trading.reconcile import IntentReconciler

    return IntentReconciler(**kwargs)


class _Flaky(Reconciler):
    name = "flaky"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def observe(self, ctx: Context) -> list[str]:
        return ["ok", "retry", "terminal"]

    async def plan(self, ctx: Context, key: str) -> list[Any]:
        return []

    async def reconcile(self, ctx: Context, key: str) -> Result:
        self.calls[key] = self.calls.get(key, 0) + 1
        if key == "terminal":
            raise ReconcileError("cannot", key=key, terminal=True)
        if key == "retry" and self.calls[key] < 3:
            raise ReconcileError("not yet", key=key)
        return Result()


async def test_retries_with_backoff_and_terminal_errors_stop(memory: StateStore) -> None:
    flaky = _Flaky()
    engine = ReconcileEngine(
        memory, exchange(), reconcilers=[flaky], backoff=Backoff(base=0.001, cap=0.002)
    )
    report = await engine.run_once()
    assert report.pending == ["flaky/retry"] and report.failed == ["flaky/terminal"]
    passes = 1
    while report.pending:
        await asyncio.sleep(0.01)  # the backoff is due
        report = await engine.run_once()
        passes += 1
    assert flaky.calls["retry"] == 3  # retried twice, then fine
    assert report.failed == ["flaky/terminal"]
    # A terminal error is not retried: only each (level-triggered) pass looks again.
    assert flaky.calls["terminal"] == passes
    snapshot = engine.metrics.snapshot()
    assert snapshot["terminal"] == passes and snapshot["retries"] == 2


async def test_reconcilers_come_from_the_hook(memory: StateStore) -> None:
    class Plugin:
        @hookimpl
        def statekit_register_reconcilers(self, registry: Any) -> None:
            registry.add("flaky", _Flaky)

    host = PluginHost(autoload=False, plugins=[("flaky-plugin", Plugin())])
    assert host.find(ReconcilerRegistry, "flaky") is _Flaky
    assert set(host.registry(ReconcilerRegistry).names()) >= {"orders", "positions", "flaky"}
    engine = ReconcileEngine(memory, exchange(), reconcilers=["flaky"], host=host)
    assert [r.name for r in engine.reconcilers] == ["flaky"]
    with pytest.raises(PluginError, match="no reconciler named 'nope'"):
        host.find(ReconcilerRegistry, "nope")


async def test_metrics_are_stored_and_exported(memory: StateStore) -> None:
    intents = IntentStore(memory)
    await intents.create("i1", buy())
    engine = ReconcileEngine(memory, exchange(), scope="main")
    await converge(engine)
    stored = await read_metrics(memory)
    assert stored["main"]["passes"] >= 1 and stored["main"]["lag_samples"] == 1
    text = prometheus_text(stored)
    assert 'statekit_reconcile_passes_total{scope="main"}' in text
    assert "# TYPE statekit_reconcile_lag_p99_seconds gauge" in text
    assert percentile([3, 1, 2], 0.5) == 2 and percentile([], 0.5) is None


async def test_scopes_split_symbols(memory: StateStore) -> None:
    ex = exchange()
    intents = IntentStore(memory)
    await intents.create("btc", buy())
    await intents.create("eth", IntentSpec(symbol="ETH/USDT", side="buy", amount=D(1), price=D(9)))
    btc = ReconcileEngine(memory, ex, scope=Scope("btc", symbols=frozenset({SYMBOL})))
    eth = ReconcileEngine(memory, ex, scope=Scope("eth", symbols=frozenset({"ETH/USDT"})))
    await converge(btc)
    assert [o.symbol for o in open_orders(ex)] == [SYMBOL]
    await converge(eth)
    assert sorted(o.symbol for o in open_orders(ex)) == ["BTC/USDT", "ETH/USDT"]
    shards = [Scope(f"s{i}", shard=(i, 3)) for i in range(3)]
    for symbol in ("A/B", "C/D", "E/F", SYMBOL):
        assert sum(s.includes(symbol) for s in shards) == 1
    with pytest.raises(ValidationError):
        Scope("x", shard=(3, 3))


async def test_queue_dedupes_and_never_hands_a_key_to_two_workers() -> None:
    queue = WorkQueue(Backoff(base=0.001, cap=0.001))
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1
    key = await queue.get()
    queue.add("a")  # while being worked on: queued again after done()
    assert queue.idle() is False and len(queue) == 0
    queue.done("a")
    assert len(queue) == 1 and await queue.get() == key
    queue.done("a")
    queue.retry("a")
    assert await queue.get() == "a"  # after its backoff
    queue.done("a")
    queue.close()
    assert await queue.get() is None


async def test_token_bucket_paces_calls() -> None:
    bucket = TokenBucket(rate=1000, burst=2)
    for _ in range(6):
        await bucket.acquire()
    assert bucket.waited > 0  # the burst ran out: later calls waited


# -- one active engine per scope --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_standby_engine_takes_over_and_the_old_one_is_fenced(
    store: StateStore,
) -> None:
    ex = exchange()
    clock = Clock()
    intents = IntentStore(store)
    await intents.create("i1", buy())
    active = ReconcileEngine(store, ex, lease_ttl=5, clock=clock, owner="a")
    await converge(active)
    standby = ReconcileEngine(store, ex, lease_ttl=5, clock=clock, owner="b")
    assert not await standby.lease.try_acquire()  # held by the active one
    clock.now += timedelta(seconds=6)  # the active one stopped renewing (it hangs)
    await intents.update("i1", price=D("91"))
    await converge(standby)
    with pytest.raises(FencedOff):  # the old holder wakes up: none of its writes land
        await active.run_once()
    (order,) = open_orders(ex)
    assert order.price == D("91")
    assert_unique_client_ids(ex)


class _CancelRefusedOnce(PaperExchange):
    """Refuses the first cancel for its rate limit (nothing happens), then behaves."""

    refused = False

    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        if not self.refused:
            self.refused = True
            raise RateLimited("cancel refused (test)", exchange=self.name)
        return await super().cancel_order(order_id, symbol)


async def test_an_oco_leg_stopped_before_its_cancel_failed_is_cancelled_next_pass(
    memory: StateStore,
) -> None:
    """Regression (found by the property tests): the stop was stored, the cancel was
    refused, and the next pass took the group for settled (the leg rested as recorded)."""
    ex = _CancelRefusedOnce(
        prices={SYMBOL: [D(100)]}, balances={"USDT": D(1_000_000), "BTC": D(100)}
    )
    intents = IntentStore(memory)
    engine = ReconcileEngine(memory, ex, backoff=Backoff(base=30, cap=30))
    await intents.create("a-rest", buy(price="99", oco_group="g"))  # placed first
    await intents.create("b-cross", buy(price="101", oco_group="g"))  # fills at once
    report = await engine.run_once()
    assert report.pending == ["orders/oco:g"]  # the cancel was refused
    await converge(engine)
    assert open_orders(ex) == []
    rest = await intents.status("a-rest")
    assert rest is not None and rest.stopped == "OcoCancelled"


class _SlowPaper(PaperExchange):
    """A paper exchange whose calls take a moment, counting how many overlap."""

    in_flight = 0
    most = 0

    async def _slow(self) -> None:
        type(self).in_flight += 1
        type(self).most = max(type(self).most, type(self).in_flight)
        try:
            await asyncio.sleep(0.001)
        finally:
            type(self).in_flight -= 1

    async def create_order(self, *args: Any, **kwargs: Any) -> ExchangeOrder:
        await self._slow()
        return await super().create_order(*args, **kwargs)

    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        await self._slow()
        return await super().fetch_order(order_id, symbol)


async def test_calls_bound_the_exchange_calls_of_many_workers(store: StateStore) -> None:
    """16 workers, calls=3: the exchange never sees more than 3 calls at once, the
    workers' reservations still share commits, and every intent is placed once."""
    ex = _SlowPaper(
        prices={SYMBOL: [D("100")] * 20},
        balances={"USDT": D("1000000"), "BTC": D("100")},
    )
    _SlowPaper.in_flight = _SlowPaper.most = 0
    intents = IntentStore(store)
    for n in range(30):
        await intents.create(f"i{n}", buy(price=str(60 + n)))
    engine = ReconcileEngine(store, ex, workers=16, calls=3, rate=1e9, burst=10**9)
    await converge(engine)
    assert _SlowPaper.most == 3  # bounded, and the bound was reached
    assert engine.commits.commits < engine.commits.batches  # batches were merged
    assert_unique_client_ids(ex)
    assert sorted(o.price for o in open_orders(ex)) == [D(60 + n) for n in range(30)]
    with pytest.raises(ReconcileError):
        ReconcileEngine(store, ex, calls=0)
