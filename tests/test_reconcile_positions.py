"""The ``positions`` reconciler, run by a real ReconcileEngine against the paper exchange.

Every scenario runs on a real store (memory, SQLite, PostgreSQL where it says
``store``) and checks what the store holds afterwards and the discrepancy log,
not only what the engine reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import statekit
from statekit import Capability, StateStore, Write
from statekit.backend import JSON
from statekit.backends.memory import MemoryBackend
from statekit.errors import (
    CapabilityError,
    ExchangeUnavailable,
    FencedOff,
    ReconcileError,
    ValidationError,
)
from statekit.testing import fresh_namespace, server_url
from statekit.tiered import ReadCache, TieredBackend
from statekit.trading import kinds
from statekit.trading.exchange import ExchangePosition
from statekit.trading.models import Direction, OrderSide, OrderType, Position
from statekit.trading.paper import PaperExchange
from statekit.trading.reconcile import PositionReconciler, ReconcileEngine, Scope
from statekit.trading.reconcile.positions import (
    Discrepancy,
    DiscrepancyAction,
    ReportSource,
    discrepancies,
)
from statekit.trading.state import TradingState

pytestmark = pytest.mark.asyncio

D = Decimal
BTC, ETH, SOL = "BTC/USDT", "ETH/USDT", "SOL/USDT"
UPDATED, REMOVED, FLAGGED, CLEARED, EVICTED = (
    DiscrepancyAction.UPDATED,
    DiscrepancyAction.REMOVED,
    DiscrepancyAction.FLAGGED,
    DiscrepancyAction.CLEARED,
    DiscrepancyAction.EVICTED,
)


class Exchange(PaperExchange):
    """The paper exchange, plus the ways a real one answers badly.

    ``omit``: symbols its *bulk* ``fetch_positions()`` leaves out although it holds
    them (a truncated page, a lagging shard: a missing report). ``hide``: symbols
    every answer leaves out. ``targeted_down``: a targeted query gets no answer.
    ``queries`` records each call's ``symbols`` argument.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            prices={BTC: [D("100")] * 10, ETH: [D("10")] * 10, SOL: [D("5")] * 10},
            balances={"USDT": D("1000000"), "BTC": D("100"), "ETH": D("1000"), "SOL": D("1000")},
            **kwargs,
        )
        self.omit: set[str] = set()
        self.hide: set[str] = set()
        self.targeted_down = False
        self.extra: list[ExchangePosition] = []
        self.queries: list[tuple[str, ...] | None] = []

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        self.queries.append(None if symbols is None else tuple(symbols))
        if symbols is not None and self.targeted_down:
            raise ExchangeUnavailable("positions: read timed out", exchange=self.name)
        answer = await super().fetch_positions(symbols)
        left_out = self.hide | (self.omit if symbols is None else set())
        return [p for p in answer if p.symbol not in left_out] + self.extra

    async def hold(self, symbol: str, amount: str) -> None:
        """Trade so that the exchange reports ``amount`` more of ``symbol``."""
        side = OrderSide.BUY if D(amount) > 0 else OrderSide.SELL
        cid = f"c{len(self.orders)}"
        await self.create_order(symbol, OrderType.MARKET, side, abs(D(amount)), client_order_id=cid)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def engine(store: StateStore, ex: Exchange, **kwargs: Any) -> ReconcileEngine:
    reconciler: list[PositionReconciler | str] = ["positions"]
    if kwargs:
        reconciler = [PositionReconciler(**kwargs)]
    return ReconcileEngine(store, ex, reconcilers=reconciler)


async def put(store: StateStore, symbol: str, amount: str, **fields: Any) -> None:
    await TradingState(store).positions.save(Position(symbol=symbol, amount=D(amount), **fields))


async def position(store: StateStore, symbol: str) -> Position | None:
    return await TradingState(store).positions.get(symbol)


async def amount(store: StateStore, symbol: str, *, prefix: str = "") -> Decimal | None:
    held = await TradingState(store, prefix=prefix).positions.get(symbol)
    return None if held is None else held.amount


def actions(events: list[Discrepancy]) -> list[DiscrepancyAction]:
    return [e.action for e in events]


async def _drop(store: StateStore) -> None:
    with contextlib.suppress(CapabilityError):  # a backend that cannot drop
        await store.backend.drop_namespace(forget=True)


@pytest_asyncio.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'positions.db'}"
    else:
        url = f"{server_url('postgres')}?namespace={fresh_namespace('positions')}"
    async with await statekit.open(url) as s:
        try:
            yield s
        finally:
            await _drop(s)


@pytest_asyncio.fixture
async def memory() -> AsyncIterator[StateStore]:
    async with await statekit.open("memory://") as s:
        yield s


# -- the exchange wins --------------------------------------------------------------------------


async def test_the_exchange_wins_and_both_values_are_recorded(store: StateStore) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")  # at 100
    await ex.hold(ETH, "5")  # the store has no ETH position at all
    await put(store, BTC, "1.5", entry_price=D("90"), strategy="momentum", stop_loss="85")
    eng = engine(store, ex)

    report = await eng.run_once()

    assert report.in_sync and report.errors == 0
    assert sorted((a.key, a.verb) for a in report.actions) == [
        ("position:BTC/USDT", "update"),
        ("position:ETH/USDT", "update"),
    ]
    btc = await position(store, BTC)
    assert btc is not None and (btc.amount, btc.entry_price) == (D("2"), D("100"))
    extra = btc.model_extra or {}
    assert extra == {"strategy": "momentum", "stop_loss": "85"}  # the bot's fields stay
    assert btc.last_updated is not None
    eth = await position(store, ETH)
    assert eth is not None and (eth.amount, eth.entry_price) == (D("5"), D("10"))

    (event,) = await discrepancies(store, BTC)
    assert event.action is UPDATED and event.source is ReportSource.BULK
    assert event.fields == ["amount", "entry_price"]
    assert (event.exchange.amount, event.exchange.entry_price) == (D("2"), D("100"))
    assert (event.store.amount, event.store.entry_price) == (D("1.5"), D("90"))
    assert event.cache is None  # no read cache on this store
    assert event.holder == eng.lease.holder and event.pass_number == 1
    assert event.report_at is not None and event.exchange_at == ex.now
    (created,) = await discrepancies(store, ETH)
    assert not created.store.present and created.exchange.amount == D("5")
    assert sorted(e.symbol for e in await discrepancies(store)) == [BTC, ETH]
    assert (eng.metrics.drifts, eng.metrics.actions) == (2, 2)

    # In sync now: the next pass writes nothing, and records nothing.
    versions = {r.key: r.version async for r in store.scan("position/")}
    report = await eng.run_once()
    assert report.in_sync and report.actions == []
    assert {r.key: r.version async for r in store.scan("position/")} == versions
    assert len(await discrepancies(store)) == 2


async def test_amounts_compare_exactly_unless_a_tolerance_is_set(memory: StateStore) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    await put(memory, BTC, "2.0", entry_price=D("100.00"))  # the same numbers, written otherwise
    exact = engine(memory, ex)
    assert (await exact.run_once()).actions == []
    await exact.aclose()  # one engine per scope holds the lease: hand it over

    await put(memory, BTC, "2.00001", entry_price=D("100"))
    loose = engine(memory, ex, tolerance=D("0.0001"))
    assert (await loose.run_once()).actions == []  # within the tolerance: left alone
    await loose.aclose()
    (action,) = (await engine(memory, ex).run_once()).actions
    assert action.verb == "update"
    (event,) = await discrepancies(memory, BTC)
    assert event.fields == ["amount"] and event.store.amount == D("2.00001")
    assert await amount(memory, BTC) == D("2")


async def test_a_flipped_position_updates_its_direction(memory: StateStore) -> None:
    ex = Exchange()
    await ex.hold(ETH, "-3")  # the exchange says short
    await put(memory, ETH, "3", direction=Direction.LONG, note="hedge leg")
    await engine(memory, ex).run_once()
    eth = await position(memory, ETH)
    assert eth is not None and eth.amount == D("-3") and eth.direction is Direction.SHORT
    assert (eth.model_extra or {}) == {"note": "hedge leg"}


# -- a symbol missing from the report -----------------------------------------------------------


async def test_a_missing_report_is_flagged_and_the_targeted_query_keeps_it(
    store: StateStore,
) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    await put(store, BTC, "2", entry_price=D("100"), strategy="momentum")
    ex.omit = {BTC}  # the bulk answer leaves BTC out
    eng = engine(store, ex)

    report = await eng.run_once()

    assert report.in_sync
    assert [a.verb for a in report.actions] == ["flag", "record"]
    assert ex.queries == [None, (BTC,)]  # one bulk call, then BTC asked about alone
    btc = await position(store, BTC)
    assert btc is not None and btc.amount == D("2") and btc.model_extra == {"strategy": "momentum"}
    assert len(await TradingState(store).positions.history(BTC)) == 1  # never rewritten
    cleared, flagged = await discrepancies(store, BTC)
    assert (flagged.action, flagged.source) == (FLAGGED, ReportSource.BULK)
    assert not flagged.exchange.present and flagged.store.amount == D("2")
    assert (cleared.action, cleared.source) == (CLEARED, ReportSource.TARGETED)
    assert cleared.exchange.amount == D("2")
    assert (eng.metrics.drifts, eng.metrics.actions) == (1, 2)


async def test_a_missing_report_of_a_changed_position_is_updated_from_the_targeted_query(
    memory: StateStore,
) -> None:
    ex = Exchange()
    await ex.hold(BTC, "3")
    await put(memory, BTC, "2")
    ex.omit = {BTC}
    await engine(memory, ex).run_once()
    assert await amount(memory, BTC) == D("3")
    updated, flagged = await discrepancies(memory, BTC)
    assert flagged.action is FLAGGED
    assert (updated.action, updated.source) == (UPDATED, ReportSource.TARGETED)
    assert (updated.exchange.amount, updated.store.amount) == (D("3"), D("2"))


async def test_nothing_is_removed_while_the_targeted_query_fails(memory: StateStore) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    await put(memory, BTC, "2", entry_price=D("100"))
    ex.omit = {BTC}
    ex.targeted_down = True
    eng = engine(memory, ex)

    for _ in range(3):  # each pass flags nothing new and removes nothing
        report = await eng.run_once()
        assert report.pending == ["positions/position:BTC/USDT"]
        assert await amount(memory, BTC) == D("2")
    assert actions(await discrepancies(memory, BTC)) == [FLAGGED]  # recorded once
    assert eng.metrics.retries >= 3 and "ExchangeUnavailable" in (eng.metrics.last_error or "")

    ex.targeted_down = False  # the exchange answers again: it does hold BTC
    report = await eng.run_once()
    assert report.in_sync
    assert actions(await discrepancies(memory, BTC)) == [CLEARED, FLAGGED]
    assert len(await TradingState(memory).positions.history(BTC)) == 1


async def test_a_position_is_removed_only_after_a_targeted_query_confirms_it_flat(
    store: StateStore,
) -> None:
    ex = Exchange()  # it never traded BTC: it has no BTC position
    await put(store, BTC, "2", entry_price=D("100"), strategy="momentum")
    eng = engine(store, ex)

    report = await eng.run_once()

    assert report.in_sync
    assert [a.verb for a in report.actions] == ["flag", "remove"]
    assert ex.queries == [None, (BTC,)]
    assert await position(store, BTC) is None
    tombstone, before = await TradingState(store).positions.history(BTC)
    assert tombstone.deleted
    assert tombstone.meta["reason"] == "exchange confirmed flat"
    assert isinstance(before.data, dict)
    assert before.data["amount"] == "2" and before.data["strategy"] == "momentum"
    removed, flagged = await discrepancies(store, BTC)
    assert (flagged.action, flagged.source) == (FLAGGED, ReportSource.BULK)
    assert (removed.action, removed.source) == (REMOVED, ReportSource.TARGETED)
    assert not removed.exchange.present and removed.store.amount == D("2")
    assert (eng.metrics.drifts, eng.metrics.actions) == (1, 2)

    report = await eng.run_once()  # gone from both: nothing more to do
    assert report.actions == [] and report.keys == 0


async def test_confirmations_must_come_in_consecutive_passes(memory: StateStore) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    await put(memory, BTC, "2", entry_price=D("100"))
    eng = engine(memory, ex, confirmations=2)

    ex.hide = {BTC}  # every answer leaves BTC out, the targeted one too
    report = await eng.run_once()
    assert report.pending == ["positions/position:BTC/USDT"]  # 1 of 2: kept
    assert [a.verb for a in report.actions] == ["flag", "flag"]
    assert "1/2 confirmations" in report.actions[-1].detail

    ex.hide = set()  # it is listed again: the count starts over
    report = await eng.run_once()
    assert report.in_sync and [a.verb for a in report.actions] == ["record"]

    ex.hide = {BTC}
    await eng.run_once()
    assert await position(memory, BTC) is not None  # 1 of 2 again
    report = await eng.run_once()
    assert [a.verb for a in report.actions] == ["remove"]  # flagged already
    assert await position(memory, BTC) is None
    assert actions(await discrepancies(memory, BTC)) == [REMOVED, FLAGGED, CLEARED, FLAGGED]


async def test_a_flat_or_amountless_store_position_is_not_flagged(memory: StateStore) -> None:
    ex = Exchange()
    await put(memory, BTC, "0")  # flat is flat
    await TradingState(memory).positions.save(Position(symbol="BTC-ETH", symbol1="BTC"))
    report = await engine(memory, ex).run_once()
    assert report.in_sync and report.actions == [] and report.keys == 2
    assert ex.queries == [None]
    assert await discrepancies(memory) == []


# -- a store behind a read cache ----------------------------------------------------------------


async def test_a_stale_read_cache_is_compared_evicted_and_recorded() -> None:
    primary = MemoryBackend()
    # No watch: the cache cannot see another writer's commits until its ttl runs out.
    primary.capabilities = MemoryBackend.capabilities - {Capability.WATCH}
    backend = TieredBackend(primary, cache=ReadCache(ttl=3600, max_size=100))
    await backend.start()
    async with StateStore(backend) as store:
        ex = Exchange()
        await ex.hold(BTC, "3")
        await put(store, BTC, "2", entry_price=D("100"))  # cached as 2
        behind: JSON = {"symbol": BTC, "amount": "3", "entry_price": "100"}
        await primary.append(
            [Write("position/BTC/USDT", behind, kinds.POSITION)], datetime.now(UTC)
        )
        assert await amount(store, BTC) == D("2")
        eng = engine(store, ex)

        report = await eng.run_once()  # the store is right (3), the cache is not (2)

        assert [a.verb for a in report.actions] == ["evict"]
        (event,) = await discrepancies(store, BTC)
        assert event.action is EVICTED and event.fields == ["amount"]
        assert (event.exchange.amount, event.store.amount) == (D("3"), D("3"))
        assert event.cache is not None and event.cache.amount == D("2")
        assert await amount(store, BTC) == D("3")
        assert len(await TradingState(store).positions.history(BTC)) == 2  # no store write

        # All three differ: the store is written, and the cache holds what was written.
        await ex.hold(BTC, "1")
        stale: JSON = {"symbol": BTC, "amount": "2.5", "entry_price": "100"}
        await primary.append([Write("position/BTC/USDT", stale, kinds.POSITION)], datetime.now(UTC))
        report = await eng.run_once()
        assert [a.verb for a in report.actions] == ["update"]
        event = (await discrepancies(store, BTC))[0]
        assert event.action is UPDATED
        assert (event.exchange.amount, event.store.amount) == (D("4"), D("2.5"))
        assert event.cache is not None and event.cache.amount == D("3")
        assert await amount(store, BTC) == D("4")


# -- dry runs, fencing, scope, prefix -------------------------------------------------------------


async def test_plan_says_what_it_would_do_and_writes_nothing(store: StateStore) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    await ex.hold(ETH, "5")
    await put(store, BTC, "1")  # differs
    await put(store, SOL, "7")  # the exchange has no SOL
    await put(store, ETH, "5", entry_price=D("10"))
    ex.omit = {ETH}  # and the bulk report leaves ETH out
    before = {(r.key, r.version) async for r in store.scan("")}
    eng = engine(store, ex)

    planned = await eng.plan()

    assert [(a.key, a.verb) for a in planned] == [
        ("position:BTC/USDT", "update"),
        ("position:ETH/USDT", "flag"),
        ("position:ETH/USDT", "record"),
        ("position:SOL/USDT", "flag"),
        ("position:SOL/USDT", "remove"),
    ]
    assert {(r.key, r.version) async for r in store.scan("")} == before
    assert await discrepancies(store) == []
    assert not eng.lease.held
    assert (eng.metrics.drifts, eng.metrics.actions) == (0, 0)

    ex.targeted_down = True  # a plan does not fail on it: it says nothing would change
    planned = await eng.plan()
    assert [(a.key, a.verb) for a in planned if a.key == "position:SOL/USDT"] == [
        ("position:SOL/USDT", "flag"),
        ("position:SOL/USDT", "resolve"),
    ]


async def test_a_deposed_engine_is_fenced_off_and_stores_nothing(store: StateStore) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    clock = Clock()
    active = ReconcileEngine(store, ex, reconcilers=["positions"], lease_ttl=5, clock=clock)
    await active.run_once()
    standby = ReconcileEngine(store, ex, reconcilers=["positions"], lease_ttl=5, clock=clock)
    clock.now += timedelta(seconds=6)  # the active one stopped renewing
    assert await standby.lease.try_acquire()
    await ex.hold(BTC, "1")  # a discrepancy for whoever looks
    held = {(r.key, r.version) async for r in store.scan("")}

    # The old holder still believes it holds the lease; its write carries the old token.
    old = PositionReconciler()
    ctx = active.context
    await old.observe(ctx)
    with pytest.raises(FencedOff):
        await old.reconcile(ctx, "position:BTC/USDT")
    assert {(r.key, r.version) async for r in store.scan("")} == held
    assert actions(await discrepancies(store, BTC)) == [UPDATED]  # the first pass's only

    report = await standby.run_once()
    assert [a.verb for a in report.actions] == ["update"]
    assert await amount(store, BTC) == D("3")
    assert (await discrepancies(store, BTC))[0].holder == standby.lease.holder


async def test_scope_and_prefix(memory: StateStore) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    await ex.hold(ETH, "5")
    account = TradingState(memory, prefix="acct-1/")
    await account.positions.save(Position(symbol=BTC, amount=D("1")))
    await account.positions.save(Position(symbol=ETH, amount=D("1")))
    reconciler = PositionReconciler(prefix="acct-1/")
    eng = ReconcileEngine(
        memory, ex, reconcilers=[reconciler], scope=Scope("btc", symbols=frozenset({BTC}))
    )
    report = await eng.run_once()
    assert [a.key for a in report.actions] == ["position:BTC/USDT"]
    assert await amount(memory, BTC, prefix="acct-1/") == D("2")
    assert await amount(memory, ETH, prefix="acct-1/") == D("1")
    assert await position(memory, BTC) is None  # another account's keys: untouched
    assert [e.symbol for e in await discrepancies(memory, prefix="acct-1/")] == [BTC]
    assert await discrepancies(memory) == []
    with pytest.raises(ReconcileError, match="outside the scope") as err:
        await reconciler.reconcile(eng.context, "position:ETH/USDT")
    assert err.value.terminal


# -- bad input ----------------------------------------------------------------------------------


async def test_an_unreadable_stored_position_is_a_terminal_error_and_left_alone(
    memory: StateStore,
) -> None:
    ex = Exchange()
    await ex.hold(BTC, "2")
    await ex.hold(ETH, "5")
    # The legacy drop-in stores its dicts as given (only an object is required).
    await memory.put("position/BTC/USDT", {"amount": "lots"}, kind=kinds.LEGACY_POSITION)
    eng = engine(memory, ex)
    planned = await eng.plan()  # the dry run says so, and goes on with the others
    assert [(a.key, a.verb) for a in planned] == [
        ("position:BTC/USDT", "fail"),
        ("position:ETH/USDT", "update"),
    ]
    assert "InvalidStoredPosition" in planned[0].detail

    report = await eng.run_once()

    assert report.failed == ["positions/position:BTC/USDT"]  # terminal: not retried
    assert eng.metrics.terminal == 1 and "not a valid position" in (eng.metrics.last_error or "")
    (record,) = await memory.history("position/BTC/USDT")
    assert record.data == {"amount": "lots"}  # not overwritten
    assert await discrepancies(memory, BTC) == []
    assert await amount(memory, ETH) == D("5")


async def test_bad_keys_symbols_and_settings_are_refused(memory: StateStore) -> None:
    ex = Exchange()
    ex.extra = [ExchangePosition(symbol="BAD\nSYMBOL", amount=D("1"), at=ex.now)]
    eng = engine(memory, ex)
    report = await eng.run_once()
    assert report.failed == ["positions/position:BAD\nSYMBOL"]
    assert eng.metrics.terminal == 1 and "cannot name a store key" in (eng.metrics.last_error or "")

    reconciler = PositionReconciler()
    for key in ["BTC/USDT", "position:", "intent:x"]:
        with pytest.raises(ReconcileError, match="unknown work key") as err:
            await reconciler.reconcile(eng.context, key)
        assert err.value.terminal and err.value.reason == "BadKey"

    refused: list[dict[str, Any]] = [
        {"tolerance": D("-1")},
        {"tolerance": 0.001},
        {"tolerance": D("NaN")},
        {"confirmations": 0},
        {"confirmations": True},
        {"prefix": None},
    ]
    for settings in refused:
        with pytest.raises(ValidationError):
            PositionReconciler(**settings)
    with pytest.raises(ValidationError, match="limit"):
        await discrepancies(memory, limit=0)
