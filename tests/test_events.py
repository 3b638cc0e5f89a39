"""Event sourcing (statekit.trading.events) on SQLite and PostgreSQL: appends under
contention from tasks and processes, the fold's rules, snapshots, projections, retention."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import statekit
from statekit import CapabilityError, ConflictError, StateStore, ValidationError
from statekit.backend import Capability, Record, Write
from statekit.backends.memory import MemoryBackend
from statekit.errors import HistoryUnavailable
from statekit.store import Retention
from statekit.testing._pool import worker_pool
from statekit.trading import Order, OrderStatus, Position, TradingState
from statekit.trading.events import (
    Aggregate,
    AggregateType,
    Event,
    EventStore,
    OrderCancelled,
    OrderFill,
    OrderFilled,
    OrderPartiallyFilled,
    OrderPlaced,
    OrderPlacement,
    PositionChange,
    PositionClosed,
    PositionClosing,
    PositionModified,
    PositionOpened,
    PositionOpening,
)

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
ORDER = Aggregate.order("o-1")
BTC = Aggregate.position("BTC-USD")


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``store`` and ``store_url`` (tests/conftest.py) on a durable backend."""
    return str(request.param)


def placed(amount: str = "2", price: str = "100", at: datetime = T0) -> OrderPlaced:
    return OrderPlaced(
        at=at, payload=OrderPlacement(symbol="BTC-USD", side="buy", amount=amount, price=price)
    )


def partial(amount: str, price: str = "100") -> OrderPartiallyFilled:
    return OrderPartiallyFilled(payload=OrderFill(amount=amount, price=price))


def filled(amount: str, price: str = "100") -> OrderFilled:
    return OrderFilled(payload=OrderFill(amount=amount, price=price))


def opened(amount: str, price: str) -> PositionOpened:
    return PositionOpened(payload=PositionOpening(amount=amount, price=price))


def modified(amount: str, price: str) -> PositionModified:
    return PositionModified(payload=PositionChange(amount=amount, price=price))


def closed(price: str) -> PositionClosed:
    return PositionClosed(payload=PositionClosing(price=price))


async def projection(store: StateStore, key: str) -> Record:
    record = await store.get(key)
    assert record is not None, key
    return record


async def stream_keys(store: StateStore) -> dict[str, int]:
    return {r.key: r.version async for r in store.scan("")}


# -- the fold ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_partial_fills_average_the_price_and_a_last_fill_completes(store: StateStore) -> None:
    events = EventStore(store)
    await events.append(ORDER, [placed("2", "101")], expect_version=0)
    await events.append(ORDER, [partial("0.5", "100"), partial("0.5", "102")], expect_version=1)
    order = await events.reconstruct_order_state("o-1")
    assert order is not None
    assert (order.status, order.filled, order.remaining) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal(1),
        Decimal(1),
    )
    assert order.average_price == Decimal(101)
    assert order.created_at == T0

    await events.append(ORDER, [filled("1", "104")], expect_version=3)
    order = await events.reconstruct_order_state("o-1")
    assert order is not None
    assert (order.status, order.filled, order.remaining) == (OrderStatus.FILLED, 2, 0)
    assert order.average_price == Decimal("102.5")  # (100*0.5 + 102*0.5 + 104*1) / 2
    assert await events.version(ORDER) == 4


@pytest.mark.asyncio
async def test_cancel_after_a_partial_fill_keeps_what_filled(store: StateStore) -> None:
    events = EventStore(store)
    await events.append(ORDER, [placed("3"), partial("1", "99"), OrderCancelled()])
    order = await events.reconstruct_order_state("o-1")
    assert order is not None
    assert (order.status, order.filled, order.remaining) == (OrderStatus.CANCELLED, 1, 2)
    assert order.average_price == Decimal(99)
    assert await events.reconstruct_order_state("never-placed") is None


@pytest.mark.asyncio
async def test_position_open_modify_close_realizes_pnl(store: StateStore) -> None:
    events = EventStore(store)
    await events.append(BTC, [opened("2", "100"), modified("1", "130")])
    position = await events.reconstruct_position_state("BTC-USD")
    assert position is not None
    assert (position.amount, position.entry_price, position.realized_pnl) == (3, 110, 0)

    await events.append(BTC, [modified("-2", "125")])  # takes 2 off at +15
    position = await events.reconstruct_position_state("BTC-USD")
    assert position is not None
    assert (position.amount, position.entry_price, position.realized_pnl) == (1, 110, 30)

    await events.append(BTC, [closed("100")])  # the last one at -10
    position = await events.reconstruct_position_state("BTC-USD")
    assert position is not None
    assert (position.amount, position.entry_price, position.realized_pnl) == (0, None, 20)

    # The symbol keeps one stream: opening again (short) carries the realized PnL on.
    await events.append(BTC, [opened("-4", "90"), modified("2", "80"), closed("95")])
    position = await events.reconstruct_position_state("BTC-USD")
    assert position is not None
    # short 4 @ 90: 2 covered at 80 (+20), 2 at 95 (-10)
    assert (position.amount, position.realized_pnl) == (0, 30)
    assert await events.version(BTC) == 7


BAD_ORDER_EVENTS: list[tuple[str, list[Event], list[Event], str]] = [
    ("negative fill", [placed("2")], [partial("-1")], "fill not positive"),
    ("zero fill", [placed("2")], [partial("0")], "fill not positive"),
    ("fill beyond amount", [placed("2")], [partial("1"), partial("1.5")], "overfill"),
    ("filled short of amount", [placed("2")], [filled("1")], "fill short of amount"),
    ("partial fill that completes", [placed("2")], [partial("2")], "partial fill completes"),
    ("fill at price 0", [placed("2")], [partial("1", "0")], "price not positive"),
    ("event for a filled order", [placed("2"), filled("2")], [partial("1")], "order filled"),
    ("event for a cancelled order", [placed("2"), OrderCancelled()], [filled("2")], "cancelled"),
    ("cancel twice", [placed("2"), OrderCancelled()], [OrderCancelled()], "cancelled"),
    ("fill before placing", [], [partial("1")], "no such order"),
    ("placed twice", [placed("2")], [placed("2")], "placed twice"),
    ("bad order", [], [placed("0")], "bad order"),
    ("position event on an order", [placed("2")], [closed("1")], "wrong aggregate type"),
]


@pytest.mark.parametrize(
    ("before", "bad", "reason"),
    [pytest.param(b, e, r, id=name) for name, b, e, r in BAD_ORDER_EVENTS],
)
@pytest.mark.asyncio
async def test_bad_order_events_are_refused_and_nothing_is_stored(
    store: StateStore, before: list[Event], bad: list[Event], reason: str
) -> None:
    events = EventStore(store, snapshot_every=1)
    await events.append(ORDER, before)
    keys = await stream_keys(store)
    with pytest.raises(ValidationError) as caught:
        await events.append(ORDER, bad)
    assert reason in caught.value.reason
    assert caught.value.key == "events/order/o-1"
    assert await stream_keys(store) == keys, "no event, projection or snapshot stored"


@pytest.mark.parametrize(
    ("before", "bad", "reason"),
    [
        ([], [modified("1", "10")], "position closed"),
        ([opened("1", "10"), closed("11")], [closed("12")], "position closed"),
        ([opened("1", "10")], [opened("1", "10")], "already open"),
        ([opened("2", "10")], [modified("-2", "10")], "modify closes"),
        ([opened("2", "10")], [modified("-3", "10")], "flip"),
        ([opened("2", "10")], [modified("1", "-5")], "price not positive"),
        ([], [opened("0", "10")], "zero amount"),
        ([], [placed("1")], "wrong aggregate type"),
    ],
)
@pytest.mark.asyncio
async def test_bad_position_events_are_refused(
    store: StateStore, before: list[Event], bad: list[Event], reason: str
) -> None:
    events = EventStore(store)
    await events.append(BTC, before)
    keys = await stream_keys(store)
    with pytest.raises(ValidationError) as caught:
        await events.append(BTC, bad)
    assert reason in caught.value.reason
    assert await stream_keys(store) == keys


@pytest.mark.asyncio
async def test_an_event_naming_another_aggregate_or_version_is_refused(store: StateStore) -> None:
    events = EventStore(store)
    with pytest.raises(ValidationError, match="is for 'o-2'"):
        await events.append(ORDER, [placed().model_copy(update={"aggregate_id": "o-2"})])
    with pytest.raises(ValidationError, match="would be version 1"):
        await events.append(ORDER, [placed().model_copy(update={"version": 5})])
    assert await events.version(ORDER) == 0


# -- concurrency -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_two_appenders_at_one_version_one_gets_a_conflict(store: StateStore) -> None:
    events = EventStore(store)
    await events.append(ORDER, [placed("10")], expect_version=0)
    results = await asyncio.gather(
        events.append(ORDER, [partial("1")], expect_version=1),
        events.append(ORDER, [partial("2")], expect_version=1),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    assert len(conflicts) == 1, results
    assert (conflicts[0].key, conflicts[0].expected, conflicts[0].actual) == (
        "events/order/o-1",
        1,
        2,
    )
    assert await events.version(ORDER) == 2
    with pytest.raises(ConflictError) as caught:
        await events.append(ORDER, [partial("1")], expect_version=0)
    assert caught.value.actual == 2


async def check_stream(events: EventStore, count: int, fills: int) -> None:
    """``count`` events, versions 1..count without gaps, each event once, and the
    projection and the snapshot-based rebuild both equal to the full fold."""
    read = await events.read(ORDER)
    assert [e.version for e in read] == list(range(1, count + 1))
    assert len({e.event_id for e in read}) == count
    full = await events.rebuild(ORDER, use_snapshot=False)
    fast = await events.rebuild(ORDER)
    assert full.version == fast.version == count
    assert full.state == fast.state
    assert isinstance(full.state, Order)
    assert full.state.filled == fills
    record = await projection(events.store, "order/o-1")
    assert Order.model_validate(record.data) == full.state
    assert record.meta["event_version"] == count


@pytest.mark.asyncio
async def test_many_tasks_appending_to_one_order_lose_and_duplicate_nothing(
    store: StateStore,
) -> None:
    events = EventStore(store, snapshot_every=7, retries=200)
    await events.append(ORDER, [placed("1000")])

    async def appender(n: int) -> list[str]:
        ids = []
        for _ in range(8):
            (event,) = await events.append(ORDER, [partial("1", str(100 + n))])
            ids.append(event.event_id)
        return ids

    ids = await asyncio.wait_for(asyncio.gather(*(appender(n) for n in range(10))), 120)
    await check_stream(events, 81, 80)
    stored = {e.event_id for e in await events.read(ORDER, since=1)}
    assert stored == {i for task in ids for i in task}


def _append_in_process(url: str, n: int, count: int) -> None:
    async def run() -> None:
        async with await statekit.open(url) as store:
            events = EventStore(store, snapshot_every=7, retries=500)
            for _ in range(count):
                await events.append(ORDER, [partial("1", str(100 + n))], meta={"by": f"p{n}"})

    asyncio.run(run())


@pytest.mark.slow
@pytest.mark.asyncio
async def test_processes_appending_to_one_order_lose_and_duplicate_nothing(
    store_url: str, store: StateStore
) -> None:
    events = EventStore(store, snapshot_every=7)
    await events.append(ORDER, [placed("1000")])
    pool = worker_pool()  # four warm processes of their own, each opening the store
    await asyncio.gather(
        *(asyncio.wrap_future(pool.submit(_append_in_process, store_url, n, 10)) for n in range(4))
    )
    await check_stream(events, 41, 40)
    history = await store.history("events/order/o-1", limit=100, newest_first=False)
    writers = [r.meta.get("by") for r in history[1:]]
    assert sorted(writers, key=str) == sorted([f"p{n}" for n in range(4) for _ in range(10)])


# -- snapshots ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_snapshot_plus_the_events_after_it_equals_the_full_fold(store: StateStore) -> None:
    events = EventStore(store, snapshot_every=5)
    await events.append(BTC, [opened("1", "100")])
    for i in range(22):  # grow and shrink by turns, at moving prices
        await events.append(BTC, [modified("2" if i % 2 == 0 else "-1", str(100 + 3 * i))])
    fast = await events.rebuild(BTC)
    full = await events.rebuild(BTC, use_snapshot=False)
    assert (fast.version, fast.snapshot_version, fast.folded) == (23, 20, 3)
    assert (full.snapshot_version, full.folded) == (0, 23)
    assert fast.state == full.state
    snap = await projection(store, "snapshots/position/BTC-USD")
    assert [r.data["version"] for r in await store.history(snap.key)] == [20, 15, 10, 5]  # type: ignore[call-overload,index]

    # An explicit snapshot covers the head; rebuild then folds nothing.
    assert await events.snapshot(BTC) == 23
    again = await events.rebuild(BTC)
    assert (again.snapshot_version, again.folded, again.state) == (23, 0, full.state)
    assert await events.snapshot(Aggregate.position("NONE")) == 0


@pytest.mark.asyncio
async def test_read_since_a_version_pages_in_order(store: StateStore) -> None:
    events = EventStore(store)
    await events.append(ORDER, [placed("100")])
    for _ in range(9):
        await events.append(ORDER, [partial("1")])
    assert [e.version for e in await events.read(ORDER, since=7)] == [8, 9, 10]
    assert [e.version for e in await events.read(ORDER, since=2, limit=3)] == [3, 4, 5]
    assert await events.read(ORDER, since=10) == []
    first = (await events.read(ORDER, limit=1))[0]
    assert isinstance(first, OrderPlaced) and first.aggregate_id == "o-1" and first.at == T0
    assert await events.aggregates(AggregateType.ORDER) == [ORDER]


# -- retention ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_prune_keeps_every_event_after_the_snapshot(store: StateStore) -> None:
    events = EventStore(store, snapshot_every=4)
    assert await events.prune(ORDER) == 0  # nothing: no snapshot
    await events.append(ORDER, [placed("100")])
    for _ in range(9):
        await events.append(ORDER, [partial("1")])
    before = await events.rebuild(ORDER, use_snapshot=False)

    assert await events.prune(ORDER) == 8  # the snapshot is at 8: versions 1..8 go

    after = await events.rebuild(ORDER)
    assert (after.version, after.snapshot_version, after.state) == (10, 8, before.state)
    assert [e.version for e in await events.read(ORDER, since=8)] == [9, 10]
    with pytest.raises(HistoryUnavailable, match=r"events 1\.\.8 .* were pruned"):
        await events.read(ORDER)
    with pytest.raises(HistoryUnavailable):
        await events.rebuild(ORDER, use_snapshot=False)
    await events.append(ORDER, [partial("1")], expect_version=10)  # appends go on


@pytest.mark.asyncio
async def test_a_store_prune_past_the_snapshot_is_refused_at_rebuild_not_folded_over(
    store: StateStore,
) -> None:
    events = EventStore(store, snapshot_every=4, projections=False)
    await events.append(ORDER, [placed("100")])
    for _ in range(9):
        await events.append(ORDER, [partial("1")])
    # The user's own retention, below the head but past the snapshot at 8.
    await store.prune("events/order/o-1", Retention(keep_last=1))
    with pytest.raises(HistoryUnavailable, match=r"events 9\.\.9"):
        await events.rebuild(ORDER)
    with pytest.raises(HistoryUnavailable):  # and so an append, which needs the state
        await events.append(ORDER, [partial("1")])


# -- projections -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_projections_equal_the_fold_after_every_append(store: StateStore) -> None:
    events = EventStore(store, snapshot_every=3)
    state = TradingState(store)
    script: list[tuple[Aggregate, Event]] = [
        (ORDER, placed("3")),
        (BTC, opened("1", "100")),
        (ORDER, partial("1", "101")),
        (BTC, modified("1", "110")),
        (ORDER, partial("1", "99")),
        (BTC, modified("-1", "120")),
        (ORDER, OrderCancelled()),
        (BTC, closed("90")),
    ]
    for aggregate, event in script:
        await events.append(aggregate, [event])
        fold = (await events.rebuild(aggregate, use_snapshot=False)).state
        if aggregate.type is AggregateType.ORDER:
            assert await state.orders.get("o-1") == fold
        else:
            assert await state.positions.get("BTC-USD") == fold
        record = await projection(store, events.projection_key(aggregate))
        assert record.meta["event_version"] == await events.version(aggregate)
    loaded = await state.load()
    assert set(loaded.orders) == {"o-1"} and set(loaded.positions) == {"BTC-USD"}
    assert await events.rebuild_projections() == 0  # all in step already


@pytest.mark.asyncio
async def test_a_failed_batch_leaves_neither_event_nor_projection(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = EventStore(store, snapshot_every=2)
    assert events.atomic
    await events.append(ORDER, [placed("3")])
    before = await stream_keys(store)
    real_append = store.backend.append

    async def poisoned(writes: Sequence[Write], at: datetime) -> list[Record]:
        # The event, the projection and the snapshot reach the backend in one batch;
        # one more write that cannot hold makes the backend refuse the whole batch.
        assert [w.key for w in writes] == [
            "events/order/o-1",
            "order/o-1",
            "snapshots/order/o-1",
        ]
        return await real_append([*writes, Write("poison", {}, expect=99)], at)

    monkeypatch.setattr(store.backend, "append", poisoned)
    with pytest.raises(ConflictError):
        await events.append(ORDER, [partial("1")], expect_version=1)
    monkeypatch.undo()
    assert await stream_keys(store) == before
    assert await store.get("snapshots/order/o-1") is None
    record = await projection(store, "order/o-1")
    assert record.data["status"] == "open"  # type: ignore[call-overload,index]
    await events.append(ORDER, [partial("1")], expect_version=1)  # and the stream goes on


@pytest.mark.asyncio
async def test_a_projection_overwritten_by_hand_is_put_back(store: StateStore) -> None:
    events = EventStore(store)
    await events.append(ORDER, [placed("3"), partial("1")])
    state = TradingState(store)
    order = await state.orders.get("o-1")
    assert order is not None
    await state.orders.save(order.model_copy(update={"filled": Decimal(2)}))
    # The append does not trust a projection it did not write: it folds.
    await events.append(ORDER, [partial("1")])
    fixed = await state.orders.get("o-1")
    assert fixed is not None and fixed.filled == 2
    await state.orders.save(fixed.model_copy(update={"filled": Decimal(0)}), by="someone")
    assert await events.rebuild_projections(AggregateType.ORDER) == 1
    assert await state.orders.get("o-1") == await events.reconstruct_order_state("o-1")


class _NoBatchMemory(MemoryBackend):
    """A memory store without atomic batches (as some backends are)."""

    capabilities = MemoryBackend.capabilities - {Capability.ATOMIC_BATCH}


@pytest.mark.asyncio
async def test_without_atomic_batches_the_event_lands_first_and_projections_catch_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = StateStore(await _NoBatchMemory.open("memory://"))
    events = EventStore(store, snapshot_every=2)
    assert not events.atomic
    await events.append(ORDER, [placed("3")])
    real_append = store.append

    async def crash_on_projection(writes: Any) -> list[Record]:
        writes = list(writes)
        if writes[0].key == "order/o-1":
            raise RuntimeError("crashed between the event and its projection")
        return await real_append(writes)

    monkeypatch.setattr(store, "append", crash_on_projection)
    with pytest.raises(RuntimeError):
        await events.append(ORDER, [partial("1")])
    monkeypatch.undo()
    assert await events.version(ORDER) == 2  # the event is the truth: it is stored
    behind = await projection(store, "order/o-1")
    assert behind.meta["event_version"] == 1

    assert await events.rebuild_projections() == 1
    caught_up = await projection(store, "order/o-1")
    assert caught_up.meta["event_version"] == 2
    assert Order.model_validate(caught_up.data) == await events.reconstruct_order_state("o-1")
    # The crash also cost the snapshot due at version 2; the next one is at 4.
    await events.append(ORDER, [partial("1")])
    assert (await events.rebuild(ORDER)).snapshot_version == 0
    await events.append(ORDER, [partial("0.5")])
    assert (await events.rebuild(ORDER)).snapshot_version == 4
    await store.aclose()


@pytest.mark.asyncio
async def test_a_store_without_compare_and_set_is_refused() -> None:
    class NoCas(MemoryBackend):
        capabilities = MemoryBackend.capabilities - {Capability.COMPARE_AND_SET}

    async with StateStore(await NoCas.open("memory://")) as store:
        with pytest.raises(CapabilityError) as caught:
            EventStore(store)
        assert caught.value.capability == "compare_and_set"


def test_events_are_json_with_decimal_strings_and_utc_times() -> None:
    event = partial("0.1", "64250.5")
    assert event.payload.amount == Decimal("0.1")
    later = event.model_copy(update={"at": T0 + timedelta(hours=1)})
    data = json.loads(later.model_dump_json())
    assert data["payload"] == {"amount": "0.1", "price": "64250.5", "trade_id": None}
    assert data["at"] == "2026-11-20T10:30:00Z"
    with pytest.raises(ValueError, match="timezone"):
        OrderPlaced(at=datetime(2026, 1, 1), payload=placed().payload)
    assert isinstance(Position(symbol="X"), Position)


# -- the benchmark -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bench_events_prints_rebuild_and_append_lines(tmp_path: Path) -> None:
    from statekit import bench

    config = bench.BenchConfig(n=5, rounds=1, directory=tmp_path)
    results = [r async for r in bench.run("events", config)]
    assert [r["workload"] for r in results] == ["rebuild", "append"]
    rebuild, append = results
    assert rebuild["events"] == 500 + 99 and rebuild["events_after_snapshot"] == 99
    for name in ("with_snapshot_ms", "without_snapshot_ms", "speedup"):
        value = rebuild[name]
        assert isinstance(value, float) and value > 0, name
    for name in ("statekit_ops_s", "raw_ops_s", "ratio"):
        value = append[name]
        assert isinstance(value, float) and value > 0, name
    assert append["durability"] == "WAL synchronous=FULL"
    assert list(tmp_path.iterdir()) == []
