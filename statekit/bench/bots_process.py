"""One trading bot in a process of its own: what ``python -m statekit.bench bots`` runs
many of, and what tests/test_many_bots.py runs a few of (importable under spawn).

A bot is the writer a strategy process is to its state. Each *cycle* places one
order and books its fill, four writes, each timed:

1. ``order/<bot>-<n>`` created through :class:`~statekit.trading.state.TradingState`
   with ``expect=0``: a placement that is retried cannot create the order twice;
2. the same order saved as filled with ``expect=<its version>`` (compare-and-set);
3. the bot's position ``position/<symbol>`` saved with ``expect=<its version>``:
   the bot is the only writer of its keys, so this CAS never conflicts;
4. :data:`SHARED_KEY` incremented with ``store.update()``: every bot of the
   namespace writes it, so in a shared namespace the bots contend on it and
   conflicts are retried (counted in :attr:`BotReport.conflicts`).

A bot's keys are under ``bot/<name>/``. Because step 4 runs once per cycle and
only after steps 1-3 succeeded, :data:`SHARED_KEY` ends equal to the sum of the
cycles of every bot of the namespace: anything less is a lost update.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, TypeVar

import statekit
from statekit.backend import JSON, Record
from statekit.config import load_settings
from statekit.host import PluginHost
from statekit.store import StateStore
from statekit.trading.models import Order, OrderSide, OrderStatus, Position
from statekit.trading.state import TradingState

__all__ = ["SHARED_KEY", "BotReport", "BotSpec", "bot_process", "run_bot"]

SHARED_KEY = "bots/fills"
"""The counter every bot of a namespace increments once per cycle."""
WRITES_PER_CYCLE = 4
"""Writes of one cycle: order placed, order filled, position, shared counter."""
READY_TIMEOUT = 300.0
"""Seconds a bot waits for the go signal before giving up (a hang guard)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BotSpec:
    """What one bot does.

    :param url: the store URL, its namespace option included.
    :param name: the bot's name: its keys are under ``bot/<name>/``.
    :param seconds: run for this long after the go signal...
    :param cycles: ...or run exactly this many cycles (one of the two).
    :param symbol: the instrument its orders and position are in.
    :param start_at: ``time.time()`` to start at under :func:`run_bot`, so bots in
        a process pool contend from their first cycle (None: at once).
    """

    url: str
    name: str
    seconds: float | None = None
    cycles: int | None = None
    symbol: str = "BTC-USD"
    start_at: float | None = None


@dataclass(frozen=True, slots=True)
class BotReport:
    """What one bot did.

    :param name: the bot's name.
    :param cycles: orders placed and filled (each :data:`WRITES_PER_CYCLE` writes).
    :param seconds: wall time of its cycles.
    :param conflicts: conflicts ``store.update()`` retried on the shared counter.
    :param latencies: seconds of each write, in order.
    :param cpu_seconds: the bot process's own CPU time over its cycles.
    """

    name: str
    cycles: int
    seconds: float
    conflicts: int
    latencies: tuple[float, ...]
    cpu_seconds: float = 0.0

    @property
    def ops(self) -> int:
        """Writes done."""
        return self.cycles * WRITES_PER_CYCLE


def _increment(value: JSON) -> JSON:
    return (value if isinstance(value, int) else 0) + 1


class _Bot:
    """An open store and the bot's own versions of its keys."""

    def __init__(self, spec: BotSpec, store: StateStore) -> None:
        self.spec = spec
        self.store = store
        self.state = TradingState(store, prefix=f"bot/{spec.name}/")
        self.position_version = 0
        self.latencies: list[float] = []
        self.conflicts = 0
        chained = store.on_retried_conflict

        def counted(operation: str) -> None:
            self.conflicts += 1
            if chained is not None:
                chained(operation)

        store.on_retried_conflict = counted

    async def timed(self, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        result = await call()
        self.latencies.append(time.perf_counter() - started)
        return result

    async def cycle(self, n: int) -> None:
        """Place order ``n``, book its fill, move the position, count the fill."""
        spec, orders = self.spec, self.state.orders
        price = Decimal("64250.5")
        order = Order(
            id=f"{spec.name}-{n}",
            symbol=spec.symbol,
            side=OrderSide.BUY,
            amount=Decimal(1),
            price=price,
            strategy_id=spec.name,
        )
        placed: Record = await self.timed(lambda: orders.save(order, expect=0))
        filled = order.model_copy(
            update={"status": OrderStatus.FILLED, "filled": order.amount, "average_price": price}
        )
        await self.timed(lambda: orders.save(filled, expect=placed.version))
        position = Position(symbol=spec.symbol, amount=Decimal(n + 1), entry_price=price)
        saved: Record = await self.timed(
            lambda: self.state.positions.save(position, expect=self.position_version)
        )
        self.position_version = saved.version
        await self.timed(lambda: self.store.update(SHARED_KEY, _increment))


async def _run(spec: BotSpec, ready: Callable[[], None], go: Callable[[], None]) -> BotReport:
    settings = load_settings(config_file="", env_file="")  # the URL alone, as every bot
    host = PluginHost.from_settings(settings)
    async with await statekit.open(spec.url, settings=settings, host=host) as store:
        bot = _Bot(spec, store)
        # Warm up before the clock starts: the plugins the first value with a kind
        # loads (0.6 s of imports), the connection (Redis connects at its first
        # command) and a read. What is timed is a running bot, not its start.
        host.validators()
        await store.get(SHARED_KEY)
        ready()
        await asyncio.to_thread(go)
        started, cpu = time.perf_counter(), time.process_time()
        deadline = started + spec.seconds if spec.seconds is not None else None
        n = 0
        while (spec.cycles is None or n < spec.cycles) and (
            deadline is None or time.perf_counter() < deadline
        ):
            await bot.cycle(n)
            n += 1
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return BotReport(spec.name, n, elapsed, bot.conflicts, tuple(bot.latencies), cpu)


def run_bot(spec: BotSpec) -> BotReport:
    """Run one bot to the end of its cycles or seconds (for a process pool)."""

    def wait() -> None:
        if spec.start_at is not None:
            time.sleep(max(0.0, spec.start_at - time.time()))

    return asyncio.run(_run(spec, lambda: None, wait))


def bot_process(spec: BotSpec, go: Event, messages: Queue[Any]) -> None:
    """A ``multiprocessing`` target: open the store, say ready, wait for ``go``, run.

    Puts ``("ready", name)`` on ``messages`` once the store is open, then ``("done",
    BotReport)``, or ``("error", text)`` as soon as anything fails.
    """

    def wait_for_go() -> None:
        if not go.wait(READY_TIMEOUT):
            raise TimeoutError(f"no go signal in {READY_TIMEOUT:.0f} s")

    try:
        report = asyncio.run(_run(spec, lambda: messages.put(("ready", spec.name)), wait_for_go))
    except Exception as exc:  # reported to the parent, which raises it with the bot's name
        messages.put(("error", f"bot {spec.name}: {type(exc).__name__}: {exc}"))
        return
    messages.put(("done", report))
