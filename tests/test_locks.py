"""Keyed locks: ordering, reentrancy, timeouts, cancellation, statistics, and the
seed-002 "check the balance, then deduct" flow over real stores.

No wall-clock assertions: every timeout here only fails on a hang.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from decimal import Decimal
from pathlib import Path

import pytest

from statekit import StateStore
from statekit.bench import BenchConfig
from statekit.bench.locks import bench_locks
from statekit.errors import StatekitError, ValidationError
from statekit.trading import Balance, TradingState
from statekit.trading.errors import LockTimeout
from statekit.trading.locks import KeyedLocks, LockOrderError

HANG = 60.0
"""Seconds after which a test that should finish at once is declared hung."""

NAMES = [
    "balance",
    "order/1",
    "order/2",
    "position/BTC-USD",
    "position/ETH-USD",
    "position/SOL-USD",
    "trade",
]


async def holding(locks: KeyedLocks, *names: str) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A task that holds ``names`` until the returned event is set."""
    taken = asyncio.Event()
    done = asyncio.Event()

    async def run() -> None:
        async with locks.hold(*names):
            taken.set()
            await done.wait()

    task = asyncio.create_task(run())
    await asyncio.wait_for(taken.wait(), HANG)
    return task, done


async def waiting_on(locks: KeyedLocks, name: str, count: int = 1) -> None:
    """Returns once ``count`` tasks queue for ``name``."""
    for _ in range(10_000):
        if locks.statistics()[name].waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"nobody queued for {name}")


# -- many tasks, overlapping sets ---------------------------------------------------------


@pytest.mark.asyncio
async def test_200_tasks_over_overlapping_sets_neither_deadlock_nor_lose_updates() -> None:
    locks = KeyedLocks()
    rng = random.Random(2)
    counters = dict.fromkeys(NAMES, 0)
    expected = dict.fromkeys(NAMES, 0)
    plans: list[tuple[list[str], int]] = []
    for _ in range(200):
        names = rng.sample(NAMES, rng.randint(1, 4))
        rng.shuffle(names)  # given in any order: hold() sorts them
        plans.append((names, rng.randint(0, len(names))))
        for name in names:
            expected[name] += 1

    async def bump(names: list[str]) -> None:
        seen = {name: counters[name] for name in names}
        await asyncio.sleep(0)  # another task would change them here, if it could
        for name in names:
            counters[name] = seen[name] + 1

    async def work(names: list[str], split: int) -> None:
        ordered = sorted(names)
        if split == 0:
            async with locks.hold(*names, timeout=HANG):
                await bump(names)
            return
        # Nested: the outer hold takes a prefix, the inner one the rest plus one name
        # held already (reentrant). Adding names that sort later is allowed.
        outer, inner = ordered[:split], ordered[split:]
        async with locks.hold(*outer, timeout=HANG):
            await asyncio.sleep(0)
            async with locks.hold(outer[-1], *inner, timeout=HANG):
                await bump(names)

    await asyncio.wait_for(asyncio.gather(*(work(n, s) for n, s in plans)), HANG)

    assert counters == expected
    stats = locks.statistics()
    assert {name: s.acquisitions for name, s in stats.items()} == expected
    assert sum(s.contended for s in stats.values()) > 0
    for s in stats.values():
        assert not s.held and s.waiting == 0 and s.timeouts == 0 and s.cancelled == 0
        assert 0 <= s.contended <= s.acquisitions
        assert 0 <= s.mean_wait_ms <= s.max_wait_ms
        assert 0 <= s.mean_hold_ms <= s.max_hold_ms
    assert locks.live == 0, "idle locks are dropped"


@pytest.mark.asyncio
async def test_opposite_orders_cannot_deadlock() -> None:
    locks = KeyedLocks()
    log: list[str] = []

    async def take(*names: str) -> None:
        for _ in range(50):
            async with locks.hold(*names):
                log.append(names[0])
                await asyncio.sleep(0)

    await asyncio.wait_for(
        asyncio.gather(take("balance", "position/BTC-USD"), take("position/BTC-USD", "balance")),
        HANG,
    )
    assert len(log) == 100


# -- reentrancy and the nested order rule -------------------------------------------------


@pytest.mark.asyncio
async def test_a_task_holds_a_name_again_inside_a_nested_hold() -> None:
    locks = KeyedLocks()
    async with locks.hold("balance"):
        # Two more holds, nested: the second inside the first (same as two with-blocks).
        async with (
            locks.hold("balance", "position/BTC-USD", timeout=0),
            locks.hold("balance", timeout=0),
        ):
            assert locks.locked("balance")
        assert locks.locked("balance"), "the outer hold still holds it"
        assert not locks.locked("position/BTC-USD")
    assert not locks.locked("balance")
    assert locks.statistics()["balance"].acquisitions == 1


@pytest.mark.asyncio
async def test_a_nested_hold_that_would_invert_the_order_is_refused_taking_nothing() -> None:
    locks = KeyedLocks()
    async with locks.hold("position/BTC-USD"):
        with pytest.raises(LockOrderError) as caught:
            async with locks.hold("balance", "trade"):
                raise AssertionError("not reached")
        assert caught.value.name == "balance"
        assert caught.value.held == "position/BTC-USD"
        assert caught.value.names == ("balance", "trade")
        assert "outer hold" in str(caught.value)
        assert not locks.locked("balance") and not locks.locked("trade")
        # Names after the ones held are fine.
        async with locks.hold("trade", timeout=0):
            pass
    assert locks.live == 0
    # After the outer hold ends, the same task may take them in any grouping again.
    async with locks.hold("balance", "position/BTC-USD"):
        pass


@pytest.mark.asyncio
async def test_a_task_started_inside_a_hold_does_not_share_it() -> None:
    locks = KeyedLocks()
    async with locks.hold("balance"):

        async def child() -> None:
            async with locks.hold("balance", timeout=0.01):
                raise AssertionError("the child must not get the parent's lock")

        with pytest.raises(LockTimeout):
            await asyncio.wait_for(child(), HANG)


# -- timeouts, cancellation, errors -------------------------------------------------------


@pytest.mark.asyncio
async def test_a_timeout_names_the_locks_and_releases_what_was_taken() -> None:
    locks = KeyedLocks()
    holder, done = await holding(locks, "position/BTC-USD")

    with pytest.raises(LockTimeout) as caught:
        # Takes "balance" first (sorted), then waits for the position and gives up.
        async with locks.hold("position/BTC-USD", "balance", timeout=0.05):
            raise AssertionError("not reached")

    assert caught.value.names == ("balance", "position/BTC-USD")
    assert caught.value.timeout == 0.05
    assert "'position/BTC-USD'" in str(caught.value)
    assert not locks.locked("balance"), "the name taken before the wait is released"
    async with locks.hold("balance", timeout=0):
        pass
    stats = locks.statistics()
    assert stats["position/BTC-USD"].timeouts == 1
    assert stats["position/BTC-USD"].waiting == 0
    done.set()
    await asyncio.wait_for(holder, HANG)
    assert locks.live == 0


@pytest.mark.asyncio
async def test_timeout_zero_takes_only_free_locks() -> None:
    locks = KeyedLocks()
    async with locks.hold("trade", timeout=0):
        pass
    holder, done = await holding(locks, "trade")
    with pytest.raises(LockTimeout):
        async with locks.hold("trade", timeout=0):
            pass
    done.set()
    await asyncio.wait_for(holder, HANG)


@pytest.mark.asyncio
async def test_cancelling_a_waiter_releases_what_it_took() -> None:
    locks = KeyedLocks()
    holder, done = await holding(locks, "position/BTC-USD")

    async def wants_both() -> None:
        async with locks.hold("balance", "position/BTC-USD"):
            raise AssertionError("not reached")

    waiter = asyncio.create_task(wants_both())
    await waiting_on(locks, "position/BTC-USD")
    assert locks.locked("balance")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, HANG)

    assert not locks.locked("balance")
    assert locks.live == 1  # only the holder's
    assert locks.statistics()["position/BTC-USD"].cancelled == 1
    done.set()
    await asyncio.wait_for(holder, HANG)
    assert locks.live == 0


@pytest.mark.asyncio
async def test_a_waiter_cancelled_just_as_the_lock_is_handed_to_it_passes_it_on() -> None:
    locks = KeyedLocks()
    first = locks.hold("order/7")
    await first.__aenter__()
    got: list[str] = []

    async def wait(tag: str) -> None:
        async with locks.hold("order/7"):
            got.append(tag)

    second = asyncio.create_task(wait("second"))
    third = asyncio.create_task(wait("third"))
    await waiting_on(locks, "order/7", 2)
    # No await in between: the lock goes to `second`, which is cancelled before it runs.
    await first.__aexit__(None, None, None)
    second.cancel()

    results = await asyncio.wait_for(asyncio.gather(second, third, return_exceptions=True), HANG)
    assert isinstance(results[0], asyncio.CancelledError)
    assert got == ["third"], "the cancelled task passed the lock on"
    assert locks.live == 0


@pytest.mark.asyncio
async def test_an_error_in_the_body_releases_every_name() -> None:
    locks = KeyedLocks()
    with pytest.raises(ZeroDivisionError):
        async with locks.hold("balance", "position/BTC-USD", "order/1"):
            _ = 1 / 0
    assert locks.live == 0
    async with locks.hold("balance", "position/BTC-USD", "order/1", timeout=0):
        pass


@pytest.mark.asyncio
@pytest.mark.parametrize("names", [(), ("",), ("balance", "")])
async def test_bad_names_are_refused(names: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        KeyedLocks().hold(*names)


@pytest.mark.asyncio
async def test_a_negative_timeout_is_refused() -> None:
    with pytest.raises(ValidationError):
        KeyedLocks().hold("balance", timeout=-1)


@pytest.mark.asyncio
async def test_a_hold_is_entered_once_at_a_time() -> None:
    locks = KeyedLocks()
    hold = locks.hold("balance")
    async with hold:
        with pytest.raises(StatekitError):
            await hold.__aenter__()
    async with hold:  # again, after it ended
        pass


# -- growth and statistics ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_locks_for_names_nobody_holds_are_dropped_and_stats_stay_bounded() -> None:
    locks = KeyedLocks(max_stats_names=10)
    for i in range(5_000):
        async with locks.hold(f"order/{i}", "balance"):
            pass
    assert locks.live == 0
    stats = locks.statistics()
    assert len(stats) == 11  # 10 names of their own, then the family
    assert stats["order/*"].acquisitions == 5_000 - 9
    assert stats["balance"].acquisitions == 5_000


@pytest.mark.asyncio
async def test_statistics_count_exactly_and_export_as_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    locks = KeyedLocks()
    holder, done = await holding(locks, "balance")

    async def take() -> None:
        async with locks.hold("balance", timeout=HANG):
            await asyncio.sleep(0)

    waiters = [asyncio.create_task(take()) for _ in range(3)]
    await waiting_on(locks, "balance", 3)
    live = locks.statistics()["balance"]
    assert live.held and live.waiting == 3
    done.set()
    await asyncio.wait_for(asyncio.gather(holder, *waiters), HANG)
    async with locks.hold("trade"):
        pass

    stats = locks.statistics()
    assert stats["balance"].acquisitions == 4
    assert stats["balance"].contended == 3
    assert stats["balance"].contention_rate_pct == 75.0
    assert stats["balance"].max_wait_ms > 0
    assert stats["balance"].mean_wait_ms <= stats["balance"].max_wait_ms
    assert stats["trade"].acquisitions == 1 and stats["trade"].contention_rate_pct == 0.0
    exported = locks.as_dict()
    assert json.loads(json.dumps(exported)) == exported
    assert exported["balance"]["contended"] == 3
    assert set(exported["balance"]) == {
        "name",
        "acquisitions",
        "contended",
        "contention_rate_pct",
        "mean_wait_ms",
        "max_wait_ms",
        "mean_hold_ms",
        "max_hold_ms",
        "timeouts",
        "cancelled",
        "held",
        "waiting",
    }

    with caplog.at_level(logging.INFO, logger="statekit.trading.locks"):
        locks.log_statistics()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("lock balance: 4 acquisitions, 75.0% contended")

    locks.reset_statistics()
    assert locks.statistics() == {}


# -- the seed-002 flow over a real store --------------------------------------------------

CASH = Decimal("100")
COST = Decimal("10")
BUYERS = 50


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``store`` (tests/conftest.py) on a durable backend: a file and a server."""
    return str(request.param)


@pytest.fixture
def trading(store: StateStore) -> TradingState:
    return TradingState(store)


async def buy(state: TradingState, locks: KeyedLocks | None) -> bool:
    """Seed 002's execute_trade: check the balance, place the order, deduct."""

    async def check_and_deduct() -> bool:
        balance = await state.balances.get("USD")
        assert balance is not None
        if balance.free < COST:
            return False
        await asyncio.sleep(0)  # the exchange call between the check and the deduction
        await state.balances.save(balance.model_copy(update={"free": balance.free - COST}))
        return True

    if locks is None:
        return await check_and_deduct()
    async with locks.hold("balance", timeout=HANG):
        return await check_and_deduct()


@pytest.mark.asyncio
async def test_with_the_lock_50_concurrent_buyers_never_overdraw(trading: TradingState) -> None:
    await trading.balances.save(Balance(asset="USD", free=CASH))
    locks = KeyedLocks()

    bought = await asyncio.wait_for(
        asyncio.gather(*(buy(trading, locks) for _ in range(BUYERS))), HANG
    )

    assert sum(bought) == CASH / COST
    balance = await trading.balances.get("USD")
    assert balance is not None and balance.free == 0
    stats = locks.statistics()["balance"]
    assert stats.acquisitions == BUYERS
    assert stats.contended > 0


@pytest.mark.asyncio
async def test_without_the_lock_the_same_code_overdraws(trading: TradingState) -> None:
    await trading.balances.save(Balance(asset="USD", free=CASH))

    bought = await asyncio.wait_for(
        asyncio.gather(*(buy(trading, None) for _ in range(BUYERS))), HANG
    )

    # Every buyer read the balance before any deducted: they spent more than there was.
    assert sum(bought) * COST > CASH


# -- the benchmark's shape (never its speed) ----------------------------------------------


@pytest.mark.asyncio
async def test_the_benchmark_yields_one_line_per_workload(tmp_path: Path) -> None:
    config = BenchConfig(n=20, rounds=1)
    results = [r async for r in bench_locks(config, tmp_path)]
    assert [r["workload"] for r in results] == [
        "uncontended",
        "uncontended_two",
        "contended_one",
        "contended_overlap",
    ]
    for r in results:
        assert r["backend"] == "locks"
        for field in ("statekit_ops_s", "raw_ops_s", "ratio", "statekit_us_op"):
            value = r[field]
            assert isinstance(value, float) and value > 0, field
    assert isinstance(results[0]["meets_target"], bool)
    assert results[2]["contention_rate_pct"] > 0  # type: ignore[operator]
    assert json.loads(json.dumps(results)) == results
