"""``python -m statekit.bench reconcile``: the reconciliation engine against the paper exchange.

``intents`` resting GTC limit orders (``--n``, 1000 by default) over ``symbols``
(100) are created in a fresh store, then one :class:`ReconcileEngine` (``keys``
keys at once, at most ``workers`` exchange calls at once, no rate limit: the paper
exchange has none) works against a :class:`PaperExchange`. One JSON line:

``full_pass_seconds``, ``first_runs``
    ``first``: the median of ``repeats`` passes that place every order, each in a
    fresh store (each placement: the leg's status with the ledger's reservation,
    then the outcome with the status and the actual order, both fenced);
    ``steady``: the next pass, with nothing to do.
``raw_seconds``, ``raw_runs``, ``raw``, ``ratio``, ``ratio_runs``
    the baseline (:data:`~statekit.bench.reconcile_raw.BASELINE`): the same orders
    placed on the same paper exchange and recorded by hand with the driver
    (sqlite3, or asyncpg for a PostgreSQL store), as many concurrent tasks as
    workers, run just before and just after each first pass. ``ratio`` is the
    median over the rounds of the engine's first pass time divided by that
    round's raw time (lower is better).
``lag_p50_seconds`` / ``lag_p99_seconds``
    under ``engine.run()`` (the watch queues a changed intent at once, passes every
    ``resync`` second): ``run_lag_rounds`` times, ``changes`` random intents (1 %
    by default) get a new price at once; the engine's own lag (from the intent's
    change to its status in sync, after the new order was placed).
``pass_lag_p50_seconds`` / ``pass_lag_p99_seconds``
    the same with ``run_once`` passes alone, ``lag_rounds`` times: the
    level-triggered lag.
``faults_passes_to_converge``
    the same intents in another fresh store, against a paper exchange injecting
    :data:`FAULTS` on every call for the whole run: passes until every intent is
    in sync (a pass whose observe failed counts too), at most :data:`MAX_PASSES`.

Every phase checks that the exchange ended up with exactly one open order per intent,
matching it, before its figures are printed.

``python -m statekit.bench.reconcile`` takes every knob (``--intents``,
``--symbols``, ``--store``, ``--faults on|off``, ``--changes``, ``--workers``,
``--keys``, ``--resync``, ``--repeats``, ``--run-rounds``); ``python -m statekit.bench
reconcile`` maps ``--n`` to intents and ``--url`` to the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import statekit
from statekit.backend import JSON
from statekit.bench.harness import BenchConfig, Result, drop_namespace, positive
from statekit.bench.reconcile_lag import run_lag
from statekit.bench.reconcile_raw import BASELINE, cancel_raw, raw_place, raw_side
from statekit.config import load_settings
from statekit.errors import StatekitError
from statekit.store import StateStore
from statekit.trading.models import OrderSide
from statekit.trading.paper import Faults, PaperExchange
from statekit.trading.reconcile import (
    IntentReconciler,
    IntentSpec,
    IntentStore,
    PassReport,
    ReconcileEngine,
)

__all__ = [
    "BASELINE",
    "DEFAULT_SYMBOLS",
    "FAULTS",
    "KEYS",
    "LAG_ROUNDS",
    "MAX_PASSES",
    "NO_FAULTS",
    "WORKERS",
    "ReconcileBench",
    "bench_reconcile",
    "intent_specs",
    "main",
    "paper_exchange",
    "run_reconcile_bench",
    "symbol_names",
]

DEFAULT_SYMBOLS = 100
"""Symbols the intents are spread over (fewer when there are fewer intents)."""
WORKERS = 8
"""Exchange calls the engine makes at once; the raw side runs as many tasks."""
KEYS = 64
"""Keys the engine reconciles at once (its ``workers``): their store writes share
commits, while at most :data:`WORKERS` of them talk to the exchange at a time."""
LAG_ROUNDS = 3
"""Rounds of price changes at most (``--rounds`` lowers it): each takes a full pass."""
MAX_PASSES = 20
"""Passes a phase may take to converge before the bench gives up."""
REPEATS = 3
"""First passes measured (each in a fresh store, beside its raw side); medians reported."""
RUN_LAG_ROUNDS = 20
"""Rounds of price changes under ``engine.run()`` (each a fraction of a second)."""
NO_FAULTS = Faults()
FAULTS = Faults(timeout_after_accept=0.01, lost_ack=0.01, rate_limit=0.01, duplicate_fill=0.01)
"""What the faults phase injects (probability per call, per fill report)."""
PRICE = Decimal(100)
"""Every symbol's price; the intents rest 10 to 14 away from it."""


@dataclass(frozen=True, slots=True)
class ReconcileBench:
    """What the reconcile benchmark runs.

    :param intents: resting limit orders wanted, over ``symbols`` symbols.
    :param symbols: symbols they are spread over (at most ``intents``).
    :param store: the store URL (``postgresql://...``: each phase uses a fresh
        namespace there, dropped afterwards); None: SQLite files in the scratch folder.
    :param faults: run the faults phase too.
    :param lag_rounds: rounds of price changes for the lag by passes (``run_once``).
    :param changes: intents changed per lag round (default 1 % of them, at least 1).
    :param workers: the engine's exchange calls at once, and the raw side's tasks.
    :param keys: the engine's workers (keys reconciled at once).
    :param resync: seconds between the engine's full passes under ``engine.run()``.
    :param seed: seeds the choice of changed intents and the exchange's faults.
    :param repeats: first passes, each in a fresh store beside its raw side; the
        medians are reported.
    :param run_lag_rounds: rounds of price changes under ``engine.run()``.
    """

    intents: int = 1000
    symbols: int = DEFAULT_SYMBOLS
    store: str | None = None
    faults: bool = True
    lag_rounds: int = LAG_ROUNDS
    changes: int | None = None
    workers: int = WORKERS
    keys: int = KEYS
    resync: float = 1.0
    seed: int = 0
    repeats: int = REPEATS
    run_lag_rounds: int = RUN_LAG_ROUNDS

    @property
    def changed_per_round(self) -> int:
        return self.changes if self.changes is not None else max(1, self.intents // 100)


def symbol_names(count: int) -> list[str]:
    """``S000/USDT``, ``S001/USDT``, ..."""
    return [f"S{i:03d}/USDT" for i in range(count)]


def paper_exchange(
    symbols: Sequence[str],
    *,
    faults: Faults = NO_FAULTS,
    seed: int = 0,
    prices: Sequence[Decimal] = (PRICE,),
    max_fill_per_step: Decimal | None = None,
) -> PaperExchange:
    """A paper exchange trading ``symbols`` along ``prices``, with funds for any test."""
    balances = {"USDT": Decimal(10) ** 15}
    for symbol in symbols:
        balances[symbol.partition("/")[0]] = Decimal(10) ** 12
    return PaperExchange(
        prices={symbol: list(prices) for symbol in symbols},
        balances=balances,
        seed=seed,
        faults=faults,
        max_fill_per_step=max_fill_per_step,
    )


def intent_specs(count: int, symbols: Sequence[str]) -> list[tuple[str, IntentSpec]]:
    """``count`` resting GTC limit orders round-robin over ``symbols``: buys 10-14 under
    :data:`PRICE`, sells 10-14 over it, so none fills."""
    specs = []
    for i in range(count):
        buy = i % 2 == 0
        offset = 10 + (i // 2) % 5
        specs.append(
            (
                f"b{i:06d}",
                IntentSpec(
                    symbol=symbols[i % len(symbols)],
                    side=OrderSide.BUY if buy else OrderSide.SELL,
                    amount=Decimal(1),
                    price=PRICE - offset if buy else PRICE + offset,
                ),
            )
        )
    return specs


def _phase_url(base: str | None, scratch: Path, tag: str) -> tuple[str, bool]:
    """A fresh store for one phase, and whether its namespace is dropped afterwards."""
    if base is None:
        return f"sqlite:///{scratch / f'reconcile-{tag}.db'}", False
    scheme = base.partition("://")[0]
    if scheme in ("postgres", "postgresql"):
        namespace = f"bench_reconcile_{tag}_{uuid.uuid4().hex[:8]}"
        return f"{base}{'&' if '?' in base else '?'}namespace={namespace}", True
    if scheme == "sqlite":  # the file named, one per phase beside it: x-first.db, x-faults.db
        location, mark, options = base.partition("?")
        path = Path(location.removeprefix("sqlite://"))
        phase = path.with_name(f"{path.stem}-{tag}{path.suffix}")
        return f"sqlite://{phase}{mark}{options}", False
    return base, False  # memory:// and the like: a new one per open


@asynccontextmanager
async def _fresh_store(base: str | None, scratch: Path, tag: str) -> AsyncIterator[StateStore]:
    url, drop = _phase_url(base, scratch, tag)
    settings = load_settings(config_file="", env_file="")
    async with await statekit.open(url, settings=settings) as store:
        try:
            async for _ in store.scan("intent/"):
                raise StatekitError(f"reconcile bench: the store at {url} already has intents")
            yield store
        finally:
            if drop:
                await drop_namespace(store.backend)


async def _durability(store: StateStore) -> str:
    detail = (await store.backend.health()).detail
    if "synchronous_commit" in detail:
        return f"synchronous_commit={detail['synchronous_commit']}"
    if "synchronous" in detail:
        return f"WAL synchronous={detail['synchronous']}"
    return f"{store.backend.name}: not durable"


def _engine(store: StateStore, exchange: PaperExchange, bench: ReconcileBench) -> ReconcileEngine:
    # No rate limit (the paper exchange has none); as many exchange calls at once as
    # the raw side has tasks.
    return ReconcileEngine(
        store,
        exchange,
        reconcilers=[IntentReconciler()],
        workers=bench.keys,
        calls=bench.workers,
        resync=bench.resync,
        rate=1e9,
        burst=10**9,
        lease_ttl=30.0,
    )


async def _create(store: StateStore, specs: Sequence[tuple[str, IntentSpec]]) -> float:
    intents = IntentStore(store)
    started = time.perf_counter()
    for intent_id, spec in specs:
        await intents.create(intent_id, spec)
    return time.perf_counter() - started


async def _timed_pass(engine: ReconcileEngine) -> tuple[PassReport | None, float]:
    """One pass and its wall time; None when its observe failed (the exchange did not
    answer the open-order snapshot): the engine's own loop retries those too."""
    started = time.perf_counter()
    try:
        report = await engine.run_once()
    except (StatekitError, OSError):
        return None, time.perf_counter() - started
    return report, time.perf_counter() - started


async def _converge(engine: ReconcileEngine) -> tuple[int, float, int]:
    """Passes until a pass ends in sync: (passes, seconds, actions)."""
    seconds = 0.0
    actions = 0
    for passes in range(1, MAX_PASSES + 1):
        report, took = await _timed_pass(engine)
        seconds += took
        if report is not None:
            actions += len(report.actions)
            if report.in_sync:
                return passes, seconds, actions
    raise StatekitError(f"reconcile bench: not in sync after {MAX_PASSES} passes")


async def _check_in_sync(store: StateStore, exchange: PaperExchange) -> None:
    """Exactly one open order per intent on the exchange, matching it; no other."""
    intents = {i.id: i.spec for i in await IntentStore(store).all()}
    statuses = await IntentStore(store).statuses()
    owner = {
        leg.client_order_id: intent_id
        for intent_id, status in statuses.items()
        for leg in status.legs
    }
    seen: set[str] = set()
    for order in exchange.orders:
        if order.status.final or order.client_order_id is None:
            continue
        if order.client_order_id.startswith("raw-"):
            raise StatekitError(f"reconcile bench: raw order {order.client_order_id} is open")
        intent_id = owner.get(order.client_order_id)
        spec = intents.get(intent_id or "")
        if intent_id is None or spec is None or intent_id in seen:
            raise StatekitError(f"reconcile bench: stray open order {order.client_order_id}")
        seen.add(intent_id)
        if (order.symbol, order.side, order.price, order.remaining) != (
            spec.symbol,
            spec.side,
            spec.price,
            spec.amount,
        ):
            raise StatekitError(f"reconcile bench: order {order.id} does not match {intent_id}")
    if seen != intents.keys():
        missing = sorted(intents.keys() - seen)[:5]
        raise StatekitError(f"reconcile bench: no open order for {missing}...")


async def _lag_rounds(
    engine: ReconcileEngine,
    store: StateStore,
    specs: Sequence[tuple[str, IntentSpec]],
    bench: ReconcileBench,
) -> tuple[list[int], float]:
    """Change ``changes`` random intents' prices per round, pass until in sync; the
    passes each round took, and the seconds in all."""
    intents = IntentStore(store)
    rng = random.Random(bench.seed)
    ids = [intent_id for intent_id, _ in specs]
    count = min(bench.changed_per_round, len(ids))
    passes: list[int] = []
    seconds = 0.0
    engine.metrics.lag.clear()
    for round_ in range(bench.lag_rounds):
        step = Decimal(-1 if round_ % 2 == 0 else 1)  # away and back: never crosses
        for intent_id in rng.sample(ids, count):
            intent = await intents.get(intent_id)
            assert intent is not None and intent.spec.price is not None
            await intents.update(intent_id, price=intent.spec.price + step)
        took, spent, _ = await _converge(engine)
        passes.append(took)
        seconds += spent
    return passes, seconds


async def run_reconcile_bench(bench: ReconcileBench, scratch: Path) -> Result:
    """Run every phase (module docstring); the JSON line."""
    if bench.intents < 1 or bench.symbols < 1 or bench.workers < 1 or bench.repeats < 1:
        raise StatekitError("reconcile bench: intents, symbols, workers, repeats must be >= 1")
    symbols = symbol_names(min(bench.symbols, bench.intents))
    specs = intent_specs(bench.intents, symbols)
    result: Result = {
        "backend": "reconcile",
        "workload": "intents",
        "intents": bench.intents,
        "symbols": len(symbols),
        "workers": bench.workers,
        "keys_at_once": bench.keys,
        "resync_seconds": bench.resync,
    }
    firsts: list[tuple[float, float, float]] = []  # (engine, raw, ratio) per round
    raw_runs: list[JSON] = []
    for round_ in range(bench.repeats):
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                _fresh_store(bench.store, scratch, f"first{round_}")
            )
            exchange = paper_exchange(symbols, seed=bench.seed)
            result["store"] = store.backend.name
            result["durability"] = await _durability(store)
            result["create_seconds"] = round(await _create(store, specs), 3)
            raw, label = raw_side(bench.store, scratch, bench.workers, tag=str(round_))
            record = await stack.enter_async_context(raw)
            engine = _engine(store, exchange, bench)
            stack.push_async_callback(engine.aclose)
            # The raw side runs just before and just after the engine's first pass
            # (its figure is the median of the two): side by side on the same machine.
            raws = [await raw_place(record, exchange, specs, bench.workers, f"{round_}a")]
            await cancel_raw(exchange)
            first, first_seconds = await _timed_pass(engine)
            if first is None or not first.in_sync:
                raise StatekitError("reconcile bench: the first pass left keys out of sync")
            raws.append(await raw_place(record, exchange, specs, bench.workers, f"{round_}b"))
            await cancel_raw(exchange)
            raw_runs += [round(r, 6) for r in raws]
            raw_seconds = statistics.median(raws)
            firsts.append((first_seconds, raw_seconds, first_seconds / raw_seconds))
            await _check_in_sync(store, exchange)
            result["first_pass_actions"] = len(first.actions)
            result["raw"] = label
            if round_ == bench.repeats - 1:
                result.update(await _steady_phases(engine, store, exchange, specs, bench))
    first_seconds = statistics.median(f for f, _, _ in firsts)
    result["full_pass_seconds"] = {
        # Microseconds: a short first pass rounded to milliseconds would not give
        # back the ratio printed beside it.
        "first": round(first_seconds, 6),
        "steady": result.pop("steady_seconds"),
    }
    result["first_runs"] = [round(f, 6) for f, _, _ in firsts]
    result["actions_per_second"] = round(bench.intents * 2 / first_seconds, 1)
    result["raw_seconds"] = round(statistics.median(r for _, r, _ in firsts), 6)
    result["raw_runs"] = raw_runs
    result["ratio"] = round(statistics.median(q for _, _, q in firsts), 2)
    result["ratio_runs"] = [round(q, 2) for _, _, q in firsts]
    result["baseline"] = BASELINE
    if bench.faults:
        result.update(await _faults_phase(bench, scratch, symbols, specs))
    result["python"] = platform.python_version()
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result


async def _steady_phases(
    engine: ReconcileEngine,
    store: StateStore,
    exchange: PaperExchange,
    specs: Sequence[tuple[str, IntentSpec]],
    bench: ReconcileBench,
) -> Result:
    """The steady pass, the lag by passes (``run_once``), then the lag under
    ``engine.run()`` (the watch queues a changed intent at once): how it runs."""
    steady, steady_seconds = await _timed_pass(engine)
    if steady is None or steady.actions:
        raise StatekitError("reconcile bench: the steady pass found work to do")
    result: Result = {"steady_seconds": round(steady_seconds, 6)}
    result["changes_per_round"] = min(bench.changed_per_round, bench.intents)
    lag_passes, lag_seconds = await _lag_rounds(engine, store, specs, bench)
    await _check_in_sync(store, exchange)
    snapshot = engine.metrics.snapshot()
    passes_each: list[JSON] = [*lag_passes]
    result["pass_lag_rounds"] = bench.lag_rounds
    result["pass_lag_passes"] = passes_each
    result["pass_lag_p50_seconds"] = _rounded(snapshot["lag_p50_seconds"])
    result["pass_lag_p99_seconds"] = _rounded(snapshot["lag_p99_seconds"])
    result["pass_lag_samples"] = snapshot["lag_samples"]
    result["pass_lag_phase_seconds"] = round(lag_seconds, 3)
    await engine.aclose()  # its lease goes: the running engine takes it
    engine = _engine(store, exchange, bench)
    result.update(
        await run_lag(
            engine,
            store,
            specs,
            changes=bench.changed_per_round,
            rounds=bench.run_lag_rounds,
            seed=bench.seed + 1,
        )
    )
    await _check_in_sync(store, exchange)
    return result


async def _faults_phase(
    bench: ReconcileBench,
    scratch: Path,
    symbols: Sequence[str],
    specs: Sequence[tuple[str, IntentSpec]],
) -> Result:
    """The same intents on a faulty exchange: passes, time and actions until in sync."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(_fresh_store(bench.store, scratch, "faults"))
        exchange = paper_exchange(symbols, faults=FAULTS, seed=bench.seed)
        await _create(store, specs)
        engine = _engine(store, exchange, bench)
        stack.push_async_callback(engine.aclose)
        passes, seconds, actions = await _converge(engine)
        await _check_in_sync(store, exchange)
        faults: JSON = {
            name: value
            for name, value in (
                ("timeout_after_accept", FAULTS.timeout_after_accept),
                ("lost_ack", FAULTS.lost_ack),
                ("rate_limit", FAULTS.rate_limit),
                ("duplicate_fill", FAULTS.duplicate_fill),
            )
        }
        return {
            "faults": faults,
            "faults_passes_to_converge": passes,
            "faults_seconds": round(seconds, 3),
            "faults_actions": actions,
            "faults_errors": engine.metrics.errors,
        }


def _rounded(value: object) -> JSON:
    return round(value, 4) if isinstance(value, float) else None


async def bench_reconcile(config: BenchConfig, scratch: Path) -> AsyncGenerator[Result, None]:
    """The :data:`statekit.bench.BACKENDS` entry: ``--n`` intents, ``--url`` the store,
    ``--rounds`` the pass-lag rounds (at most :data:`LAG_ROUNDS`), the first passes (at
    most :data:`REPEATS`) and a third of the lag rounds under ``engine.run()`` (at
    most :data:`RUN_LAG_ROUNDS`)."""
    bench = ReconcileBench(
        intents=config.n,
        store=config.url,
        lag_rounds=min(config.rounds, LAG_ROUNDS),
        repeats=min(config.rounds, REPEATS),
        run_lag_rounds=min(3 * config.rounds, RUN_LAG_ROUNDS),
    )
    yield await run_reconcile_bench(bench, scratch)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m statekit.bench.reconcile",
        description="The reconciliation engine against the paper exchange; one JSON line.",
    )
    parser.add_argument("--intents", type=positive, default=1000, help="default %(default)s")
    parser.add_argument(
        "--symbols", type=positive, default=DEFAULT_SYMBOLS, help="default %(default)s"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="store URL (postgresql://...: a fresh namespace per phase, dropped after); "
        "default: SQLite files in a temp folder",
    )
    parser.add_argument("--faults", choices=["on", "off"], default="on", help="faults phase")
    parser.add_argument(
        "--rounds", type=positive, default=LAG_ROUNDS, help="lag rounds (default %(default)s)"
    )
    parser.add_argument(
        "--changes", type=positive, default=None, help="intents changed per lag round (1 %%)"
    )
    parser.add_argument(
        "--workers",
        type=positive,
        default=WORKERS,
        help="the engine's exchange calls at once, the raw side's tasks (default %(default)s)",
    )
    parser.add_argument(
        "--keys", type=positive, default=KEYS, help="the engine's workers (default %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=positive, default=REPEATS, help="first passes (default %(default)s)"
    )
    parser.add_argument(
        "--run-rounds",
        type=positive,
        default=RUN_LAG_ROUNDS,
        help="lag rounds under engine.run() (default %(default)s)",
    )
    parser.add_argument(
        "--resync",
        type=float,
        default=1.0,
        help="seconds between full passes under engine.run() (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
    parser.add_argument(
        "--dir", type=Path, default=None, help="folder for the SQLite files (default: temp)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    import tempfile

    args = _parser().parse_args(argv)
    if args.dir is not None and not args.dir.is_dir():
        print(f"bench_reconcile: --dir {args.dir} is not a folder", file=sys.stderr)
        return 2
    bench = ReconcileBench(
        intents=args.intents,
        symbols=args.symbols,
        store=args.store,
        faults=args.faults == "on",
        lag_rounds=args.rounds,
        changes=args.changes,
        workers=args.workers,
        keys=args.keys,
        resync=args.resync,
        seed=args.seed,
        repeats=args.repeats,
        run_lag_rounds=args.run_rounds,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="statekit-bench-", dir=args.dir) as scratch:
            result = asyncio.run(run_reconcile_bench(bench, Path(scratch)))
    except (StatekitError, sqlite3.Error, OSError) as exc:
        print(f"bench_reconcile: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
