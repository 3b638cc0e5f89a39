"""The fault-injection campaign: signal bursts through the idempotency ledger, under fire.

Each run is seeded: its seed picks the faults (``Faults``: timeouts before and
after accept, lost answers, rate limits, duplicate and shuffled fill reports),
the price paths, the signals and how often each is fired, and when the chaos
strikes (the exchange restarts with calls in flight; a placing task is
cancelled, which is how a process dies between reserve and result). Bursts of
concurrent duplicates go through the ledger; prices move between bursts; a
fresh ledger (a restarted process) runs ``recover()``; in the end every signal
is fired again until it has an outcome. Then:

- every distinct signal is at the exchange exactly once (placed) or not at all
  (rejected), and the ledger says which, with the exchange's order id;
- no phantom orders: every exchange order is a ledger entry's, recorded placed;
- nothing is left ``reserved``;
- positions and balances folded from ``fetch_fills`` reports (deduped by
  ``Fill.id``) equal what the exchange reports.

On ``memory://`` a run is exactly reproducible from its seed (the ledger's clock
ticks per call, backoffs are zero, so the interleaving is the same every time):
the seed is in every assertion message. ``make test`` runs 250 seeds on memory from a
random first one (``STATEKIT_CAMPAIGN_FIRST_SEED`` picks it), ``make soak``
(``STATEKIT_SOAK=1``) 1,000; ``STATEKIT_CAMPAIGN_RUNS`` sets any count. SQLite and
PostgreSQL run a smaller campaign of fixed seeds (their I/O makes the interleaving vary).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

import statekit
from statekit import StateStore
from statekit.config import Settings
from statekit.errors import CapabilityError
from statekit.host import PluginHost
from statekit.testing import fresh_namespace, server_url
from statekit.trading.errors import ExchangeUnavailable, OrderRejected, RateLimited
from statekit.trading.exchange import ExchangeOrder, Fill
from statekit.trading.idempotency import EntryStatus, IdempotencyLedger, OrderIntent, Retry
from statekit.trading.models import OrderSide, OrderType, TimeInForce
from statekit.trading.paper import Faults, PaperExchange

T = TypeVar("T")

SYMBOLS = {"BTC/USDT": Decimal(100), "ETH/USDT": Decimal(20)}
START_BALANCES = {"USDT": Decimal(100_000), "BTC": Decimal(50), "ETH": Decimal(200)}
NO_WAIT = Retry(attempts=4, backoff=0.0, max_backoff=0.0)
SETTLE_TRIES = 60
SOAK = os.environ.get("STATEKIT_SOAK", "").strip() not in {"", "0"}
RUNS = int(os.environ.get("STATEKIT_CAMPAIGN_RUNS", "0")) or (1000 if SOAK else 250)
FIRST_SEED = int(os.environ.get("STATEKIT_CAMPAIGN_FIRST_SEED", "0")) or random.randrange(10**6)


class TickClock:
    """A clock that moves 1 ms each time it is read: time-dependent steps (the grace
    before taking over a stale reservation) happen after a fixed number of steps."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


class CampaignExchange(PaperExchange):
    """The paper exchange, counting what its create_order requests came to."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.outcomes: Counter[str] = Counter()

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
        try:
            order = await super().create_order(
                symbol,
                type,
                side,
                amount,
                price,
                client_order_id=client_order_id,
                time_in_force=time_in_force,
            )
        except BaseException as exc:
            duplicate = isinstance(exc, OrderRejected) and "duplicate clientOrderId" in str(exc)
            self.outcomes["duplicate refused" if duplicate else type_name(exc)] += 1
            raise
        self.outcomes["accepted"] += 1
        return order


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


@dataclass
class Derived:
    """Positions and balances folded from fill reports, each fill once (by ``Fill.id``)."""

    totals: dict[str, Decimal] = field(default_factory=lambda: dict(START_BALANCES))
    positions: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    seen: set[str] = field(default_factory=set)
    cursor: int = 0
    repeats: int = 0
    pending: list[Fill] = field(default_factory=list)

    def apply(self, fill: Fill, order: ExchangeOrder) -> None:
        if fill.id in self.seen:
            self.repeats += 1
            return
        self.seen.add(fill.id)
        base, quote = order.symbol.split("/")
        sign = 1 if order.side is OrderSide.BUY else -1
        self.totals[base] = self.totals.get(base, Decimal(0)) + sign * fill.amount
        self.totals[quote] = self.totals.get(quote, Decimal(0)) - sign * fill.amount * fill.price
        self.positions[order.symbol] += sign * fill.amount


async def patiently(call: Callable[[], Awaitable[T]], seed: int) -> T:
    """A read the exchange may fail (rate limit, lost answer): ask again."""
    for _ in range(SETTLE_TRIES):
        try:
            return await call()
        except (ExchangeUnavailable, RateLimited):
            await asyncio.sleep(0)
    raise AssertionError(f"seed {seed}: the exchange never answered")


def random_faults(rng: random.Random) -> Faults:
    def p() -> float:
        return rng.choice([0.0, 0.0, 0.05, 0.15, 0.3])

    return Faults(
        timeout_before_accept=p(),
        timeout_after_accept=p(),
        lost_ack=p(),
        rate_limit=p(),
        duplicate_fill=p(),
        out_of_order_fills=p(),
    )


def random_signals(rng: random.Random, seed: int, count: int) -> list[OrderIntent]:
    signals = []
    for n in range(count):
        symbol = rng.choice(list(SYMBOLS))
        market = rng.random() < 0.4
        price = SYMBOLS[symbol] * Decimal(rng.randint(95, 105)) / 100
        signals.append(
            OrderIntent(
                strategy_id=f"campaign-{seed}",
                signal_id=f"sig-{n}",
                symbol=symbol,
                side=rng.choice([OrderSide.BUY, OrderSide.SELL]),
                type=OrderType.MARKET if market else OrderType.LIMIT,
                # now and then more than the account holds: a rejection
                amount=Decimal(rng.choice([1, 2, 5, 10, 500])) / 4,
                price=None if market else price,
                # IOC and FOK orders end at once (filled, part-filled or killed)
                time_in_force=rng.choice(
                    [TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]
                ),
            )
        )
    return signals


async def one_run(seed: int, store: StateStore, *, signals: int, bursts: int) -> Counter[str]:
    """One seeded run on ``store``; returns what the exchange's create_order came to."""
    rng = random.Random(seed)
    paths = {
        symbol: [start * Decimal(100 + rng.randint(-8, 8)) / 100 for _ in range(12)]
        for symbol, start in SYMBOLS.items()
    }
    for symbol, start in SYMBOLS.items():
        paths[symbol][0] = start
    exchange = CampaignExchange(
        prices=paths,
        balances=START_BALANCES,
        seed=seed,
        faults=random_faults(rng),
        max_fill_per_step=Decimal(rng.choice([1, 2, 100])),
    )
    clock = TickClock()

    def new_ledger() -> IdempotencyLedger:
        return IdempotencyLedger(
            store, retry=NO_WAIT, grace=0.05, poll=0.0, max_poll=0.0, clock=clock
        )

    ledger = new_ledger()
    intents = random_signals(rng, seed, rng.randint(2, signals))
    derived = Derived()
    orders_by_id: dict[str, ExchangeOrder] = {}

    async def read_fills() -> None:
        for intent in intents:
            entry = await ledger.entry(intent.key)
            if entry is not None and entry.order is not None:
                orders_by_id[entry.order.id] = entry.order
        reports = await patiently(lambda: exchange.fetch_fills(since=derived.cursor), seed)
        derived.cursor += len(reports)
        # A fill of an order whose entry is still reserved (its placer died) waits
        # until the ledger knows the order; at the end none may be left waiting.
        waiting = [*derived.pending, *reports]
        derived.pending = [f for f in waiting if f.order_id not in orders_by_id]
        for fill in waiting:
            if fill.order_id in orders_by_id:
                derived.apply(fill, orders_by_id[fill.order_id])

    async def place_once(intent: OrderIntent) -> None:
        # An error here is settled below: the signal is fired again, or recovered.
        with contextlib.suppress(ExchangeUnavailable, RateLimited, OrderRejected):
            await ledger.place_intent(exchange, intent)

    for _ in range(rng.randint(1, bursts)):
        fired = [i for i in intents if rng.random() < 0.7 for _ in range(rng.randint(1, 4))]
        rng.shuffle(fired)
        tasks = [asyncio.create_task(place_once(intent)) for intent in fired]

        async def chaos(tasks: list[asyncio.Task[None]]) -> None:
            for _ in range(rng.randint(0, 30)):
                await asyncio.sleep(0)
            if rng.random() < 0.3:
                exchange.restart()  # answers of the calls in flight are lost
            if tasks and rng.random() < 0.3:
                rng.choice(tasks).cancel()  # a placer dies between reserve and result

        await asyncio.wait_for(asyncio.gather(chaos(tasks), *tasks, return_exceptions=True), 60)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"seed {seed}: {task.exception()!r}") from task.exception()
        exchange.advance(rng.randint(0, 3))
        await read_fills()
        if rng.random() < 0.5:  # the process restarts: a new ledger, recover first
            ledger = new_ledger()
            await ledger.recover(exchange)

    # Settle: every signal fired again until it has an outcome.
    outcome: dict[str, str] = {}
    for intent in intents:
        for _ in range(SETTLE_TRIES):
            try:
                placed = await ledger.place_intent(exchange, intent)
                outcome[intent.key] = placed.order.id
                break
            except OrderRejected:
                outcome[intent.key] = "rejected"
                break
            except (ExchangeUnavailable, RateLimited):
                continue
        assert intent.key in outcome, f"seed {seed}: {intent} never settled"
    exchange.advance(rng.randint(0, 4))
    await read_fills()
    await check(seed, exchange, ledger, intents, outcome, derived)
    return exchange.outcomes


async def check(
    seed: int,
    exchange: CampaignExchange,
    ledger: IdempotencyLedger,
    intents: list[OrderIntent],
    outcome: dict[str, str],
    derived: Derived,
) -> None:
    at_exchange: dict[str | None, list[ExchangeOrder]] = defaultdict(list)
    for order in exchange.orders:  # the oracle: every order ever accepted
        at_exchange[order.client_order_id].append(order)
    entries = {i.key: e for i in intents if (e := await ledger.entry(i.key)) is not None}
    for intent in intents:
        key, entry = intent.key, entries.get(intent.key)
        assert entry is not None, f"seed {seed}: no ledger entry for {intent}"
        if outcome[key] == "rejected":
            assert entry.status is EntryStatus.REJECTED, f"seed {seed}: {entry}"
            assert at_exchange[key] == [], f"seed {seed}: a rejected signal is at the exchange"
        else:
            assert entry.status is EntryStatus.PLACED, f"seed {seed}: {entry}"
            assert [o.id for o in at_exchange[key]] == [outcome[key]], (
                f"seed {seed}: {intent.signal_id} is at the exchange "
                f"{len(at_exchange[key])} times, not once"
            )
            assert entry.order is not None and entry.order.id == outcome[key], f"seed {seed}"
            [order] = at_exchange[key]
            assert order.time_in_force is intent.time_in_force, f"seed {seed}: {order}"
            if intent.time_in_force is not TimeInForce.GTC and intent.type is OrderType.LIMIT:
                assert order.status.final, f"seed {seed}: an {intent.time_in_force} order rests"
    keys = {i.key for i in intents}
    phantoms = [o for o in exchange.orders if o.client_order_id not in keys]
    assert phantoms == [], f"seed {seed}: orders no signal intended: {phantoms}"
    assert len(exchange.orders) == sum(v != "rejected" for v in outcome.values()), f"seed {seed}"
    reserved = [k for k, e in entries.items() if e.status is EntryStatus.RESERVED]
    assert reserved == [], f"seed {seed}: left reserved: {reserved}"

    # What the fills say against what the exchange says.
    positions = await patiently(exchange.fetch_positions, seed)
    derived_positions = {s: a for s, a in derived.positions.items() if a != 0}
    assert {p.symbol: p.amount for p in positions} == derived_positions, f"seed {seed}"
    open_orders = await patiently(exchange.fetch_open_orders, seed)
    locked: dict[str, Decimal] = defaultdict(Decimal)
    for order in open_orders:
        base, quote = order.symbol.split("/")
        if order.price is not None and order.side is OrderSide.BUY:
            locked[quote] += order.remaining * order.price
        elif order.price is not None:
            locked[base] += order.remaining
    balances = await patiently(exchange.fetch_balance, seed)
    for asset, total in derived.totals.items():
        balance = balances[asset]
        assert balance.total == total, f"seed {seed}: {asset} {balance.total} != {total} from fills"
        assert balance.locked == locked[asset], f"seed {seed}: {asset} locked"
    assert derived.pending == [], f"seed {seed}: fills of orders the ledger does not know"
    assert len(derived.seen) == len(exchange.fills), f"seed {seed}: a fill report never came"


async def campaign(
    seeds: range, open_store: Callable[[], Awaitable[StateStore]], *, shared: bool, **size: int
) -> Counter[str]:
    """Run ``seeds``, each on a store of its own, or (``shared``) all on one store:
    each run's strategy id is its own, so runs do not share keys."""
    totals: Counter[str] = Counter()
    store = await open_store()
    try:
        for seed in seeds:
            if not shared and seed != seeds[0]:
                await store.aclose()
                store = await open_store()
            totals += await one_run(seed, store, **size)
    finally:
        with contextlib.suppress(CapabilityError):  # a backend that cannot drop
            await store.backend.drop_namespace(forget=True)
        await store.aclose()
    return totals


def assert_faults_were_exercised(totals: Counter[str], seeds: range) -> None:
    # A campaign that never hit a fault proves nothing.
    for outcome in ("accepted", "ExchangeUnavailable", "RateLimited", "OrderRejected"):
        assert totals[outcome] > 0, (
            f"seeds {seeds.start}-{seeds.stop - 1}: no create_order ended {outcome}: {totals}"
        )


@pytest.mark.asyncio
async def test_seeded_runs_on_memory() -> None:
    settings = Settings()
    host = PluginHost.from_settings(settings)

    async def open_store() -> StateStore:
        return await statekit.open("memory://", settings=settings, host=host)

    seeds = range(FIRST_SEED, FIRST_SEED + RUNS)
    totals = await campaign(seeds, open_store, shared=False, signals=8, bursts=3)
    assert_faults_were_exercised(totals, seeds)
    print(f"campaign (memory, seeds {seeds.start}-{seeds.stop - 1}): outcomes {dict(totals)}")


@pytest.mark.asyncio
async def test_a_run_is_reproducible_from_its_seed() -> None:
    settings = Settings()
    host = PluginHost.from_settings(settings)

    async def run(seed: int) -> tuple[Counter[str], list[tuple[str, str]]]:
        async with await statekit.open("memory://", settings=settings, host=host) as store:
            outcomes = await one_run(seed, store, signals=8, bursts=3)
            keys = [(e.key, e.status.value) async for e in IdempotencyLedger(store).entries()]
            return outcomes, keys

    for seed in (7, 42, 977):
        assert await run(seed) == await run(seed), f"seed {seed}"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_fifty_runs_on_sqlite(tmp_path: Path) -> None:
    settings = Settings()
    host = PluginHost.from_settings(settings)

    async def open_store() -> StateStore:
        url = f"sqlite:///{tmp_path / 'campaign.db'}"
        return await statekit.open(url, settings=settings, host=host)

    totals = await campaign(range(50), open_store, shared=True, signals=5, bursts=2)
    assert_faults_were_exercised(totals, range(50))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_fifty_runs_on_postgres() -> None:
    base = server_url("postgres")
    settings = Settings()
    host = PluginHost.from_settings(settings)

    async def open_store() -> StateStore:
        url = f"{base}?namespace={fresh_namespace('campaign')}"
        return await statekit.open(url, settings=settings, host=host)

    totals = await campaign(range(50), open_store, shared=True, signals=5, bursts=2)
    assert_faults_were_exercised(totals, range(50))
