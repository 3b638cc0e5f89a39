"""The trading layer: models, validators through the plugin host, TradingState over real stores."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

import statekit
from statekit import CapabilityError, ConflictError, PluginHost, StateStore, ValidationError
from statekit.backend import JSON
from statekit.backends.memory import MemoryBackend
from statekit.config import Settings
from statekit.registry import ValidatorRegistry
from statekit.testing._pool import worker_pool
from statekit.trading import (
    Balance,
    Direction,
    Order,
    OrderStatus,
    PairState,
    Portfolio,
    Position,
    TradingState,
)

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``store`` (tests/conftest.py) on the embedded backends."""
    return str(request.param)


# -- models ------------------------------------------------------------------------------


def test_money_is_decimal_from_the_float_the_user_meant() -> None:
    position = Position(symbol="BTC-USD", amount=0.1, entry_price=64250.5)
    assert position.amount == Decimal("0.1")  # not 0.1000000000000000055...
    assert position.entry_price == Decimal("64250.5")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"amount": float("nan")}, "finite"),
        ({"entry_price": "inf"}, "finite"),
        ({"entry_price": -1}, "entry_price cannot be negative"),
        ({"leverage": -2}, "greater than or equal to 0"),
        ({"last_updated": datetime(2026, 1, 1)}, "needs a timezone"),
        ({"direction": "sideways"}, "direction"),
        ({"amount": 1, "direction": "short"}, "contradicts"),
        ({"amount": "ten"}, "decimal"),
    ],
)
def test_bad_positions_are_refused_naming_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=problem):
        Position(symbol="BTC-USD", **fields)


def test_times_are_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    position = Position(symbol="X", last_updated=datetime(2026, 1, 1, 10, tzinfo=paris))
    assert position.last_updated == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert position.last_updated is not None and position.last_updated.tzinfo is UTC


def test_legacy_positions_read_naive_times_as_utc_and_keep_extra_fields() -> None:
    legacy = {"direction": "long", "quantity": 100000, "entry_time": "2025-01-18T10:00:00"}
    position = Position.from_legacy("EURUSD", {**legacy, "note": "from the old bot"})
    assert position.symbol == "EURUSD" and position.direction is Direction.LONG
    assert position.entry_time == datetime(2025, 1, 18, 10, tzinfo=UTC)
    assert position.model_extra == {"note": "from the old bot"}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"amount": 0}, "more than 0"),
        ({"type": "limit"}, "needs a price"),
        ({"type": "stop", "price": 1}, "needs a stop_price"),
        ({"price": 0}, "price must be more than 0"),
        ({"price": 1, "filled": 2}, "more than amount"),
        ({"price": 1, "status": "filled", "filled": "0.5"}, "filled == amount"),
        ({"price": 1, "side": "long"}, "side"),
        ({"price": 1, "colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_orders_are_refused(fields: dict[str, Any], problem: str) -> None:
    base: dict[str, Any] = {"id": "o-1", "symbol": "BTC-USD", "side": "buy", "amount": 1}
    with pytest.raises(pydantic.ValidationError, match=problem):
        Order(**{**base, **fields})


def test_order_status_and_remaining() -> None:
    order = Order(id="o-1", symbol="X", side="buy", amount="1.5", price=10, filled="0.5")
    assert order.remaining == Decimal(1)
    assert not order.status.final and OrderStatus.CANCELLED.final
    assert Balance(asset="USDT", free=10, locked="2.5").total == Decimal("12.5")


# -- validators through the host -------------------------------------------------------


@pytest.mark.asyncio
async def test_the_store_refuses_bad_trading_values_written_directly(store: StateStore) -> None:
    with pytest.raises(ValidationError, match="amount"):
        await store.put("position/X", {"symbol": "X", "amount": "lots"}, kind="trading.position")
    with pytest.raises(ValidationError, match="object"):
        await store.put("position/Y", [1, 2], kind="trading.legacy_position")
    assert await store.get("position/X") is None and await store.get("position/Y") is None


class MaxPositionSize:
    """A third-party rule for the same kind: no position above 10 units."""

    @statekit.hookimpl
    def statekit_register_validators(self, registry: ValidatorRegistry) -> None:
        def at_most_ten(key: str, data: JSON) -> None:
            assert isinstance(data, dict)
            if abs(Decimal(str(data.get("amount", 0)))) > 10:
                raise ValueError(f"{key}: amount above the 10-unit limit")

        registry.add("trading.position", at_most_ten)


@pytest.mark.asyncio
async def test_a_plugin_adds_its_own_rule_and_validation_can_be_turned_off(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    host = PluginHost(autoload=False, plugins=[("max-size", MaxPositionSize())])
    async with await statekit.open(url, host=host) as store:
        state = TradingState(store)
        await state.positions.save(Position(symbol="X", amount=10))
        with pytest.raises(ValidationError, match="10-unit limit"):
            await state.positions.save(Position(symbol="X", amount=11))
        assert (await state.positions.get("X")) == Position(symbol="X", amount=10)
    off = Settings(enable_validation=False)
    async with await statekit.open(url, host=host, settings=off) as store:
        await TradingState(store).positions.save(Position(symbol="X", amount=11))


# -- TradingState ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_items_round_trip_with_history_and_as_of(store: StateStore) -> None:
    state = TradingState(store)
    first = Position(symbol="BTC-USD", amount="0.5", entry_price=64000, last_updated=NOW)
    await state.positions.save(first, by="strategy-a", note="opened")
    between = datetime.now(UTC)
    await asyncio.sleep(0.001)
    second = first.model_copy(update={"amount": Decimal("0.75")})
    await state.positions.save(second)
    assert await state.positions.get("BTC-USD") == second
    assert await state.positions.get("BTC-USD", as_of=between) == first
    history = await state.positions.history("BTC-USD")
    assert [r.version for r in history] == [2, 1]
    assert history[1].meta == {"by": "strategy-a", "note": "opened"}
    assert history[1].data == {
        "symbol": "BTC-USD",
        "amount": "0.5",
        "entry_price": "64000",
        "last_updated": "2026-11-20T09:30:00Z",
    }
    order = Order(id="o-1", symbol="BTC-USD", side="buy", amount=1, price=64000)
    await state.orders.save(order)
    balance = Balance(asset="USDT", free=1000)
    await state.balances.save(balance)
    await state.save_portfolio(Portfolio(total_value=50000, currency="USD"))
    assert await state.orders.all() == {"o-1": order}
    assert await state.balances.get("USDT") == balance
    assert await state.portfolio() == Portfolio(total_value=50000, currency="USD")
    await state.positions.delete("BTC-USD")
    assert await state.positions.get("BTC-USD") is None
    assert [r.deleted for r in await state.positions.history("BTC-USD")] == [True, False, False]


@pytest.mark.asyncio
async def test_save_is_one_batch_that_skips_unchanged_and_deletes_removed(
    store: StateStore,
) -> None:
    state = TradingState(store)
    positions = [Position(symbol=s, amount=i + 1) for i, s in enumerate(["A", "B", "C"])]
    pairs = [PairState(pair="EURUSD", position=Direction.LONG, cooldown=0)]
    result = await state.save(positions=positions, pair_states=pairs, portfolio=Portfolio(cash=1))
    assert (result.written, result.deleted, result.unchanged) == (5, 0, 0)
    saved_at = datetime.now(UTC)
    await asyncio.sleep(0.001)
    # B changes, C is closed (left out), A is as it was; pair states are not given: untouched.
    result = await state.save(positions=[positions[0], Position(symbol="B", amount=20)])
    assert (result.written, result.deleted, result.unchanged) == (1, 1, 1)
    snapshot = await state.load()
    assert sorted(snapshot.positions) == ["A", "B"]
    assert snapshot.positions["B"].amount == 20
    assert snapshot.pair_states == {"EURUSD": pairs[0]}
    assert snapshot.portfolio == Portfolio(cash=1)
    assert [r.version for r in await state.positions.history("A")] == [1]  # never rewritten
    before = await state.load(as_of=saved_at)
    assert sorted(before.positions) == ["A", "B", "C"]
    assert before.positions["B"].amount == 2


@pytest.mark.asyncio
async def test_a_bad_item_fails_the_whole_save_and_changes_nothing(store: StateStore) -> None:
    state = TradingState(store)
    await state.save(positions=[Position(symbol="A", amount=1)])
    with pytest.raises(ValidationError, match="expected a Position"):
        await state.save(positions=[Position(symbol="A", amount=2), {"symbol": "B"}])  # type: ignore[list-item]
    bad = Position.model_construct(symbol="B", amount=Decimal("NaN"))  # skips pydantic's checks
    with pytest.raises(ValidationError):
        await state.save(positions=[Position(symbol="A", amount=2), bad])
    assert (await state.load()).positions == {"A": Position(symbol="A", amount=1)}


@pytest.mark.asyncio
async def test_save_needs_atomic_batches_unless_allowed() -> None:
    class NoBatches(MemoryBackend):
        capabilities = MemoryBackend.capabilities - {statekit.Capability.ATOMIC_BATCH}

    async with StateStore(await NoBatches.open("memory://")) as store:
        with pytest.raises(CapabilityError):
            await TradingState(store).save(positions=[Position(symbol="A")])
        state = TradingState(store, allow_non_atomic=True)
        assert not state.atomic
        result = await state.save(positions=[Position(symbol="A"), Position(symbol="B")])
        assert result.written == 2
        assert sorted((await state.load()).positions) == ["A", "B"]


@pytest.mark.asyncio
async def test_accounts_are_kept_apart_by_prefix(store: StateStore) -> None:
    one, two = TradingState(store, prefix="acct-1/"), TradingState(store, prefix="acct-2/")
    await one.save(positions=[Position(symbol="A", amount=1)])
    await two.save(positions=[Position(symbol="A", amount=2)])
    await one.save(positions=[])  # closes acct-1's A only
    assert (await one.load()).positions == {}
    assert (await two.load()).positions == {"A": Position(symbol="A", amount=2)}


@pytest.mark.asyncio
async def test_concurrent_saves_never_interleave(store: StateStore) -> None:
    """Tasks saving whole states at once: the final state is exactly one of them."""
    state = TradingState(store)

    async def save(n: int) -> None:
        book = [Position(symbol=f"P{i}", amount=n) for i in range(5)]
        for attempt in range(20):
            try:
                await state.save(positions=book)
                return
            except ConflictError:
                await asyncio.sleep(0.001 * attempt)
        raise AssertionError("never saved")

    await asyncio.gather(*(save(n) for n in range(1, 9)))
    amounts = {p.amount for p in (await state.load()).positions.values()}
    assert len(amounts) == 1


def _save_in_process(url: str, n: int) -> None:
    async def run() -> None:
        async with await statekit.open(url) as store:
            state = TradingState(store)
            book = [Position(symbol=f"P{i}", amount=n) for i in range(5)]
            for attempt in range(50):
                try:
                    await state.save(positions=book, by=f"process-{n}")
                    return
                except ConflictError:
                    await asyncio.sleep(0.002 * attempt)
            raise AssertionError("never saved")

    asyncio.run(run())


def test_processes_saving_at_once_leave_one_whole_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    pool = worker_pool()  # four warm processes of their own, each opening the store
    for future in [pool.submit(_save_in_process, url, n) for n in range(1, 5)]:
        future.result(120)

    async def check() -> None:
        async with await statekit.open(url) as store:
            state = TradingState(store)
            positions = (await state.load()).positions
            assert len({p.amount for p in positions.values()}) == 1
            # every save landed whole: each process wrote a version of every position
            # (the index lists the same keys after each, so only the first wrote it)
            writers: dict[str, list[str]] = {}
            for symbol in positions:
                for record in await store.history(f"position/{symbol}", limit=100):
                    writer = record.meta["by"]
                    assert isinstance(writer, str) and writer.startswith("process-")
                    writers.setdefault(writer, []).append(symbol)
            assert sorted(writers) == [f"process-{n}" for n in range(1, 5)]
            assert all(sorted(symbols) == sorted(positions) for symbols in writers.values())
            assert len(await store.history("trading/index", limit=100)) == 1

    asyncio.run(check())
