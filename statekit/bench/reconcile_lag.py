"""The reconcile bench's lag under ``engine.run()``: how the engine runs in production."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from functools import partial

from statekit.backend import JSON
from statekit.bench.harness import Result
from statekit.errors import StatekitError
from statekit.store import StateStore
from statekit.trading.reconcile import IntentSpec, IntentStore, ReconcileEngine

__all__ = ["run_lag"]


def _samples_reach(engine: ReconcileEngine, wanted: int) -> bool:
    return len(engine.metrics.lag) >= wanted


async def _until(done: Callable[[], bool], what: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            raise StatekitError(f"reconcile bench: {what} within {within:g} s")
        await asyncio.sleep(0.002)


async def run_lag(
    engine: ReconcileEngine,
    store: StateStore,
    specs: Sequence[tuple[str, IntentSpec]],
    *,
    changes: int,
    rounds: int,
    seed: int,
) -> Result:
    """The steady lag as the engine runs in production: ``engine.run()`` (passes every
    ``resync`` second, and the watch queueing each changed intent at once), while
    ``changes`` intents get a new price at once, ``rounds`` times, each round once
    the last is in sync, at a random moment of the resync cycle."""
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    intents = IntentStore(store)
    rng = random.Random(seed)
    prices = {intent_id: spec.price for intent_id, spec in specs}
    count = min(changes, len(specs))
    started = time.perf_counter()
    try:
        await _until(lambda: engine.metrics.passes >= 1, "the running engine's first pass")
        engine.metrics.lag.clear()
        for _ in range(rounds):
            await asyncio.sleep(rng.uniform(0, engine.resync))
            wanted = len(engine.metrics.lag) + count
            for intent_id in rng.sample(list(prices), count):
                intent = await intents.get(intent_id)
                assert intent is not None and intent.spec.price is not None
                original = prices[intent_id]
                assert original is not None
                moved = original - 1 if intent.spec.price == original else original
                await intents.update(intent_id, price=moved)  # away and back: never crosses
            await _until(partial(_samples_reach, engine, wanted), "the changes in sync")
    finally:
        stop.set()
        await running
    snapshot = engine.metrics.snapshot()
    return {
        "lag_mode": "engine.run(): watch + passes",
        "lag_rounds": rounds,
        "lag_p50_seconds": _rounded(snapshot["lag_p50_seconds"]),
        "lag_p99_seconds": _rounded(snapshot["lag_p99_seconds"]),
        "lag_samples": snapshot["lag_samples"],
        "lag_phase_seconds": round(time.perf_counter() - started, 3),
    }


def _rounded(value: object) -> JSON:
    return round(value, 4) if isinstance(value, float) else None
