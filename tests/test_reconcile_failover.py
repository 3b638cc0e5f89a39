"""One active engine per scope across OS processes: kill the active one, the standby takes over.

Two engine processes share a store (SQLite file or PostgreSQL) and one paper
exchange (served over TCP by this test's process). While the strategy keeps
changing intents, the active engine is killed with SIGKILL, in the middle of
its work; the standby takes the lease over after its ttl and converges. The
exchange's own record is the judge: no client order id twice, and exactly one
open order per intent, matching its latest spec. A second test kills the engine
right after one commit stored the reservations of several orders (the workers'
batches merged), before any of them was sent.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import signal
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import statekit
from statekit.backend import Record, Write
from statekit.store import StateStore
from statekit.testing.paper_remote import PaperExchangeServer, RemoteExchange
from statekit.trading import OrderSide, PaperExchange
from statekit.trading.idempotency.entries import KEY_PREFIX
from statekit.trading.leases import Lease
from statekit.trading.reconcile import IntentSpec, IntentStore, ReconcileEngine

from .conftest import assert_one_open_order_per_intent

pytestmark = pytest.mark.asyncio

D = Decimal
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
INTENTS = 24
LEASE_TTL = 1.0
PATIENCE = 180.0  # seconds before a stuck run is reported (a hang guard, not a speed check)


def _engine_main(store_url: str, exchange_url: str, owner: str) -> None:
    asyncio.run(_run_engine(store_url, exchange_url, owner))


async def _run_engine(store_url: str, exchange_url: str, owner: str) -> None:
    async with await statekit.open(store_url) as store:
        exchange = RemoteExchange(exchange_url)
        engine = ReconcileEngine(
            store, exchange, lease_ttl=LEASE_TTL, resync=0.05, owner=owner, workers=4
        )
        await engine.run()  # until killed


async def _holder(store: StateStore) -> str | None:
    state = await Lease(store, "reconcile-default", ttl=LEASE_TTL).current()
    return None if state is None else state.owner


async def _until(check: object, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not await check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``store_url`` (tests/conftest.py): a store that several processes share."""
    return str(request.param)


async def test_killed_engine_is_replaced_without_double_placement(store_url: str) -> None:
    rng = random.Random(5)
    paper = PaperExchange(
        prices={s: [D(100)] for s in SYMBOLS},
        balances={"USDT": D(10_000_000)},
    )
    spawn = multiprocessing.get_context("spawn")
    async with PaperExchangeServer(paper) as server, await statekit.open(store_url) as store:
        intents = IntentStore(store)
        for n in range(INTENTS):
            spec = IntentSpec(
                symbol=SYMBOLS[n % len(SYMBOLS)], side=OrderSide.BUY, amount=D(1), price=D(50 + n)
            )
            await intents.create(f"i{n}", spec)

        active = spawn.Process(target=_engine_main, args=(store_url, server.url, "a"))
        active.start()
        standby = spawn.Process(target=_engine_main, args=(store_url, server.url, "b"))
        try:

            async def a_leads() -> bool:
                return await _holder(store) == "a" and len(paper.orders) >= INTENTS // 2

            await _until(a_leads, "engine a to take the lease and place orders")
            standby.start()
            for round_ in range(60):  # the strategy keeps amending while a works
                intent_id = f"i{rng.randrange(INTENTS)}"
                await intents.update(intent_id, price=D(40 + rng.randrange(50)))
                if round_ == 30:
                    active.kill()  # SIGKILL: no release, no cleanup, maybe mid-placement
                await asyncio.sleep(rng.uniform(0, 0.02))
            active.join()

            async def b_leads() -> bool:
                return await _holder(store) == "b"

            await _until(b_leads, "engine b to take over")

            async def converged() -> bool:
                wanted = {i.id: i for i in await intents.all()}
                statuses = await intents.statuses()
                open_orders = [o for o in paper.orders if not o.status.final]
                if len(open_orders) != len(wanted):
                    return False
                for intent in wanted.values():
                    status = statuses.get(intent.id)
                    if status is None or status.observed_generation != intent.generation:
                        return False
                return True

            await _until(converged, "engine b to converge")
        finally:
            for process in (active, standby):
                if process.is_alive():
                    process.kill()
                if process.pid is not None:
                    process.join()

        orders = paper.orders
        # Every order at the exchange belongs to one intent's legs: nothing untracked.
        await assert_one_open_order_per_intent(intents, orders)
        assert all(o.filled == 0 for o in orders)  # nothing crossed: no fill to explain
        # b took the lease over from a holder that never released it (it was killed).
        history = await store.history("lease/reconcile-default", limit=100_000)
        assert any(r.meta.get("took_over") for r in history)


def _engine_killed_after_a_merged_reservation(
    store_url: str, exchange_url: str, marker: str
) -> None:
    asyncio.run(_run_engine_killed(store_url, exchange_url, marker))


async def _run_engine_killed(store_url: str, exchange_url: str, marker: str) -> None:
    """An engine that kills itself (SIGKILL) as soon as one commit has stored the
    reservations of several orders: after the batch reservation, before any of its
    orders is sent. The reserved client order ids go to ``marker`` first."""
    async with await statekit.open(store_url) as store:
        exchange = RemoteExchange(exchange_url)
        engine = ReconcileEngine(
            store, exchange, lease_ttl=LEASE_TTL, resync=0.05, owner="a", workers=16, calls=2
        )
        batch = store.batch

        async def batch_then_die(writes: Sequence[Write], **options: Any) -> list[Record]:
            records = await batch(writes, **options)
            reserved = [
                w.key.removeprefix(KEY_PREFIX)
                for w in writes
                if w.key.startswith(KEY_PREFIX)
                and isinstance(w.data, dict)
                and w.data.get("status") == "reserved"
            ]
            if len(reserved) >= 2:
                Path(marker).write_text(json.dumps(reserved))
                os.kill(os.getpid(), signal.SIGKILL)
            return records

        store.batch = batch_then_die  # type: ignore[method-assign]
        await engine.run()  # until it kills itself


async def test_killed_after_a_batch_reservation_nothing_is_placed_twice(
    store_url: str, tmp_path: Path
) -> None:
    """Many orders reserved in one commit, the engine killed before sending any of
    them: the next holder places each of them exactly once."""
    paper = PaperExchange(
        prices={s: [D(100)] for s in SYMBOLS},
        balances={"USDT": D(10_000_000)},
    )
    marker = tmp_path / "reserved.json"
    spawn = multiprocessing.get_context("spawn")
    async with PaperExchangeServer(paper) as server, await statekit.open(store_url) as store:
        intents = IntentStore(store)
        count = 40
        for n in range(count):
            spec = IntentSpec(
                symbol=SYMBOLS[n % len(SYMBOLS)], side=OrderSide.BUY, amount=D(1), price=D(50 + n)
            )
            await intents.create(f"i{n}", spec)

        active = spawn.Process(
            target=_engine_killed_after_a_merged_reservation,
            args=(store_url, server.url, str(marker)),
        )
        active.start()
        standby = spawn.Process(target=_engine_main, args=(store_url, server.url, "b"))
        try:
            await asyncio.get_running_loop().run_in_executor(None, active.join, PATIENCE)
            assert not active.is_alive(), "engine a never stored several reservations at once"
            reserved = json.loads(marker.read_text())
            assert len(reserved) >= 2
            sent = {o.client_order_id for o in paper.orders}
            assert not sent & set(reserved), "killed after sending, not between"

            standby.start()

            async def converged() -> bool:
                wanted = {i.id: i for i in await intents.all()}
                statuses = await intents.statuses()
                open_orders = [o for o in paper.orders if not o.status.final]
                if len(open_orders) != len(wanted):
                    return False
                return all(
                    (s := statuses.get(i.id)) is not None and s.observed_generation == i.generation
                    for i in wanted.values()
                )

            await _until(converged, "engine b to converge")
        finally:
            for process in (active, standby):
                if process.is_alive():
                    process.kill()
                if process.pid is not None:
                    process.join()

        client_ids = [o.client_order_id for o in paper.orders]
        for cid in reserved:
            assert client_ids.count(cid) == 1, f"{cid}: reserved, then placed once by b"
        await assert_one_open_order_per_intent(intents, paper.orders)
