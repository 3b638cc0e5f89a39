"""The idempotency ledger: one order per intent, through duplicates, unknown outcomes and crashes.

Runs on memory, SQLite and PostgreSQL (a fresh namespace per test), with many
tasks and with several processes. The exchange is the paper exchange, scripted
where a test needs one exact fault, or (across processes) a small exchange
whose book lives in a SQLite file the processes share.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import statekit
from statekit import StateStore
from statekit.errors import ValidationError
from statekit.trading.errors import (
    ExchangeUnavailable,
    IdempotencyConflict,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from statekit.trading.exchange import ExchangeConnector, ExchangeOrder, ExchangePosition, Fill
from statekit.trading.idempotency import (
    KEY_LENGTH,
    KEY_PREFIX,
    KIND,
    EntryStatus,
    IdempotencyLedger,
    OrderIntent,
    Retry,
    idempotency_key,
)
from statekit.trading.models import Balance, OrderSide, OrderStatus, OrderType, TimeInForce
from statekit.trading.paper import PaperExchange

FAST = Retry(attempts=4, backoff=0.0, max_backoff=0.0)
SIGNAL: dict[str, Any] = {
    "strategy_id": "momentum",
    "signal_id": "sig-1",
    "symbol": "BTC/USDT",
    "side": "buy",
    "type": "limit",
    "amount": Decimal("0.5"),
    "price": Decimal("100"),
}


# -- exchanges for the tests ---------------------------------------------------------------------


class ScriptedPaper(PaperExchange):
    """The paper exchange with one exact fault per call, from a script per method.

    ``create_order`` steps: ``before`` (unavailable, not placed), ``after`` (placed,
    then unavailable), ``rate`` (rate-limited), ``crash-after`` (placed, then a
    RuntimeError: the caller's process 'dies'), ``crash-before`` (RuntimeError,
    nothing sent), ``None`` (answer). Lookup steps: ``down`` (unavailable), ``None``.
    """

    def __init__(self, **script: list[str | None]) -> None:
        super().__init__(
            prices={"BTC/USDT": [Decimal(100)] * 5, "ETH/USDT": [Decimal(10)] * 5},
            balances={"USDT": Decimal(1_000_000), "BTC": Decimal(100)},
        )
        self.script = script
        self.creates = 0
        self.lookups = 0

    def _next_fault(self, method: str) -> str | None:
        steps = self.script.get(method)
        return steps.pop(0) if steps else None

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
        self.creates += 1
        step = self._next_fault("create")
        if step == "before":
            raise ExchangeUnavailable("timed out before accept", exchange=self.name)
        if step == "rate":
            raise RateLimited("slow down", exchange=self.name, retry_after=0.0)
        if step == "crash-before":
            raise RuntimeError("process died before sending")
        order = await super().create_order(
            symbol,
            type,
            side,
            amount,
            price,
            client_order_id=client_order_id,
            time_in_force=time_in_force,
        )
        if step == "after":
            raise ExchangeUnavailable("timed out after accept", exchange=self.name)
        if step == "crash-after":
            raise RuntimeError("process died after sending")
        return order

    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        self.lookups += 1
        if self._next_fault("lookup") == "down":
            raise ExchangeUnavailable("lookup timed out", exchange=self.name)
        return await super().fetch_order_by_client_id(client_order_id, symbol)


class BookExchange(ExchangeConnector):
    """A tiny exchange whose order book is a statekit store, so processes can share it.

    Every create_order request that reaches it is logged (``calls/``); client ids
    are unique (``expect=0``) unless ``unique_client_ids`` is False.
    """

    name = "book"

    def __init__(self, book: StateStore, *, unique_client_ids: bool = True) -> None:
        self.book = book
        self.unique_client_ids = unique_client_ids

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
        await self.book.put(f"calls/{uuid.uuid4().hex}", {"client_order_id": client_order_id})
        now = datetime.now(UTC)
        order = ExchangeOrder(
            id=uuid.uuid4().hex,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=type,
            amount=amount,
            price=price,
            time_in_force=time_in_force,
            status=OrderStatus.OPEN,
            created_at=now,
            updated_at=now,
        )
        data = order.model_dump(mode="json")
        if not self.unique_client_ids:
            await self.book.put(f"orders/{order.id}", data)
            await self.book.put(f"by-client/{client_order_id}", data)
            return order
        try:
            await self.book.put(f"by-client/{client_order_id}", data, expect=0)
        except statekit.ConflictError:
            raise OrderRejected("duplicate clientOrderId", exchange=self.name) from None
        await self.book.put(f"orders/{order.id}", data)
        return order

    async def fetch_order_by_client_id(
        self, client_order_id: str, symbol: str
    ) -> ExchangeOrder | None:
        record = await self.book.get(f"by-client/{client_order_id}")
        return None if record is None else ExchangeOrder.model_validate(record.data)

    async def orders(self) -> list[ExchangeOrder]:
        return [ExchangeOrder.model_validate(r.data) async for r in self.book.scan("orders/")]

    async def calls(self) -> int:
        return len([r async for r in self.book.scan("calls/")])

    async def cancel_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        raise OrderNotFound(order_id, exchange=self.name)

    async def fetch_order(self, order_id: str, symbol: str) -> ExchangeOrder:
        raise OrderNotFound(order_id, exchange=self.name)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return await self.orders()

    async def fetch_positions(self, symbols: Sequence[str] | None = None) -> list[ExchangePosition]:
        return []

    async def fetch_balance(self) -> dict[str, Balance]:
        return {}

    async def fetch_fills(self, symbol: str | None = None, since: int = 0) -> list[Fill]:
        return []


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def move(self, **delta: float) -> None:
        self.now += timedelta(**delta)


# -- stores -------------------------------------------------------------------------------------


# ``store`` (memory, SQLite, PostgreSQL) comes from tests/conftest.py.


@pytest_asyncio.fixture
async def memory() -> AsyncIterator[StateStore]:
    async with await statekit.open("memory://") as s:
        yield s


# -- the key ------------------------------------------------------------------------------------


def test_the_key_is_deterministic_canonical_and_fits_exchange_client_ids() -> None:
    key = idempotency_key(**SIGNAL)
    assert key == idempotency_key(**SIGNAL)  # no timestamp, no randomness
    assert len(key) == KEY_LENGTH and key.startswith("sk") and key.isalnum()
    # The same numbers written differently are one intent.
    same = {**SIGNAL, "amount": Decimal("0.50"), "price": Decimal("1E+2"), "side": OrderSide.BUY}
    assert idempotency_key(**same) == key
    # Pinned: a change of the canonical form would re-key every stored entry.
    digest = hashlib.sha256(OrderIntent(**SIGNAL).canonical().encode()).hexdigest()
    assert key == "sk" + digest[:30]
    assert OrderIntent(**SIGNAL).canonical() == (
        '["statekit.idempotency/1","momentum","sig-1","BTC/USDT","buy","limit","0.5","100"]'
    )
    for name, other in [
        ("strategy_id", "meanrev"),
        ("signal_id", "sig-2"),
        ("symbol", "ETH/USDT"),
        ("side", "sell"),
        ("amount", Decimal("0.6")),
        ("price", Decimal("101")),
    ]:
        assert idempotency_key(**{**SIGNAL, name: other}) != key, name
    market = {**SIGNAL, "type": "market", "price": None}
    assert idempotency_key(**market) != key


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": Decimal(0)}, "amount"),
        ({"amount": Decimal("NaN")}, "amount"),
        ({"price": None}, "price"),
        ({"side": "long"}, "side or type"),
        ({"time_in_force": "gtd"}, "time_in_force"),
        ({"signal_id": ""}, "signal_id"),
        ({"amount": [1]}, "amount type"),
    ],
)
def test_bad_intents_are_refused_before_anything_is_stored(
    change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        OrderIntent(**{**SIGNAL, **change})
    assert caught.value.reason == reason


# -- time in force ------------------------------------------------------------------------------


def test_gtc_keys_are_the_keys_computed_before_time_in_force_existed() -> None:
    # Computed with the ledger as it was before time_in_force: entries stored
    # then must still answer for their keys.
    limit: dict[str, Any] = {
        "strategy_id": "mm",
        "signal_id": "sig-1",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "limit",
        "amount": Decimal("0.5"),
        "price": Decimal("100"),
    }
    market: dict[str, Any] = {
        **limit,
        "signal_id": "sig-2",
        "side": "sell",
        "type": "market",
        "amount": Decimal("1.50"),
        "price": None,
    }
    assert idempotency_key(**limit) == "skd82cfc3567675bebb1a01ad5fe9d7e"
    assert idempotency_key(**limit, time_in_force="gtc") == "skd82cfc3567675bebb1a01ad5fe9d7e"
    assert idempotency_key(**market) == "skffb3694365aa67d888814d8a570ee8"
    assert OrderIntent(**limit).params() == {
        "strategy_id": "mm",
        "signal_id": "sig-1",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "limit",
        "amount": "0.5",
        "price": "100",
    }


def test_ioc_and_fok_are_other_keys_with_the_time_in_force_appended() -> None:
    gtc = OrderIntent(**SIGNAL)
    ioc = OrderIntent(**SIGNAL, time_in_force=TimeInForce.IOC)
    fok = OrderIntent(**SIGNAL, time_in_force="fok")  # type: ignore[arg-type]
    assert fok.time_in_force is TimeInForce.FOK
    assert len({gtc.key, ioc.key, fok.key}) == 3
    assert ioc.canonical() == (
        '["statekit.idempotency/1","momentum","sig-1","BTC/USDT","buy","limit","0.5","100","ioc"]'
    )
    assert ioc.params() == {**gtc.params(), "time_in_force": "ioc"}
    assert ioc.key == idempotency_key(**SIGNAL, time_in_force="ioc")
    for intent in (gtc, ioc, fok):
        assert OrderIntent.from_params(intent.params()) == intent


@pytest.mark.asyncio
async def test_the_ledger_sends_the_time_in_force_with_the_order(memory: StateStore) -> None:
    exchange = ScriptedPaper()
    ledger = IdempotencyLedger(memory, retry=FAST)
    # Nothing to take at 99 or below now (the price is 100): IOC cancels, FOK kills.
    ioc = await ledger.place(
        exchange, **{**SIGNAL, "price": Decimal(99)}, time_in_force=TimeInForce.IOC
    )
    assert ioc.order.time_in_force is TimeInForce.IOC
    assert ioc.order.status is OrderStatus.CANCELLED and ioc.order.filled == 0
    fok = await ledger.place_intent(
        exchange, OrderIntent(**{**SIGNAL, "signal_id": "sig-2"}, time_in_force=TimeInForce.FOK)
    )
    assert fok.order.time_in_force is TimeInForce.FOK and fok.order.status is OrderStatus.FILLED
    gtc = await ledger.place(exchange, **{**SIGNAL, "price": Decimal(99)})
    assert gtc.order.time_in_force is TimeInForce.GTC and gtc.order.status is OrderStatus.OPEN
    assert [o.time_in_force for o in exchange.orders] == [
        TimeInForce.IOC,
        TimeInForce.FOK,
        TimeInForce.GTC,
    ]
    entry = await ledger.entry(ioc.key)
    assert entry is not None and entry.params["time_in_force"] == "ioc"
    assert entry.order is not None and entry.order.time_in_force is TimeInForce.IOC
    # A replay is the same order, the time in force included.
    again = await ledger.place(exchange, **{**SIGNAL, "price": Decimal(99)}, time_in_force="ioc")
    assert again.replayed and again.order == ioc.order and exchange.creates == 3


@pytest.mark.asyncio
async def test_an_entry_stored_before_time_in_force_reads_as_gtc(memory: StateStore) -> None:
    exchange = ScriptedPaper()
    ledger = IdempotencyLedger(memory, retry=FAST)
    placed = await ledger.place(exchange, **SIGNAL, key="own-key")
    # The entry as the ledger wrote it before time_in_force: no such parameter,
    # and an order without the field.
    record = await memory.get(KEY_PREFIX + "own-key")
    assert record is not None and isinstance(record.data, dict)
    old = dict(record.data)
    assert isinstance(old["params"], dict) and "time_in_force" not in old["params"]
    assert isinstance(old["order"], dict)
    old["order"] = {k: v for k, v in old["order"].items() if k != "time_in_force"}
    await memory.put(KEY_PREFIX + "own-key", old, kind=KIND, expect=record.version)
    entry = await ledger.entry("own-key")
    assert entry is not None and entry.order is not None
    assert entry.order.time_in_force is TimeInForce.GTC
    assert OrderIntent.from_params(entry.params).time_in_force is TimeInForce.GTC
    assert entry.differences(OrderIntent(**SIGNAL)) == {}
    replay = await ledger.place(exchange, **SIGNAL, time_in_force="gtc", key="own-key")
    assert replay.replayed and replay.order.id == placed.order.id
    # Reused with another time in force: a conflict that names it.
    with pytest.raises(IdempotencyConflict) as caught:
        await ledger.place(exchange, **SIGNAL, time_in_force=TimeInForce.FOK, key="own-key")
    assert caught.value.differences == {"time_in_force": ("gtc", "fok")}
    assert exchange.creates == 1


# -- placing ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_signal_places_once_and_a_replay_returns_the_same_order(store: StateStore) -> None:
    exchange = ScriptedPaper()
    ledger = IdempotencyLedger(store, retry=FAST)
    first = await ledger.place(exchange, **SIGNAL)
    again = await ledger.place(exchange, **SIGNAL)
    assert not first.replayed and again.replayed
    assert again.order.id == first.exchange_order_id
    assert first.order.client_order_id == first.key == idempotency_key(**SIGNAL)
    assert exchange.creates == 1 and len(exchange.orders) == 1
    entry = await ledger.entry(first.key)
    assert entry is not None and entry.status is EntryStatus.PLACED and entry.attempts == 1
    assert entry.params["amount"] == "0.5" and entry.exchange == "paper"
    # reserved first, then the outcome: the audit trail has both
    history = await store.history(KEY_PREFIX + first.key)
    assert [r.meta["status"] for r in history] == ["placed", "reserved"]


@pytest.mark.asyncio
async def test_fifty_concurrent_duplicates_send_one_order_and_all_get_it(store: StateStore) -> None:
    exchange = ScriptedPaper()
    ledger = IdempotencyLedger(store, retry=FAST, poll=0.001)
    results = await asyncio.wait_for(
        asyncio.gather(*(ledger.place(exchange, **SIGNAL) for _ in range(50))), 60
    )
    assert exchange.creates == 1 and len(exchange.orders) == 1
    assert {r.order.id for r in results} == {exchange.orders[0].id}
    assert sum(not r.replayed for r in results) == 1


@pytest.mark.asyncio
async def test_an_own_key_reused_with_other_parameters_is_a_conflict(memory: StateStore) -> None:
    exchange = ScriptedPaper()
    ledger = IdempotencyLedger(memory, retry=FAST)
    await ledger.place(exchange, **SIGNAL, key="rebalance-2026-01-05")
    with pytest.raises(IdempotencyConflict) as caught:
        await ledger.place(
            exchange, **{**SIGNAL, "amount": Decimal("0.7")}, key="rebalance-2026-01-05"
        )
    assert caught.value.key == "rebalance-2026-01-05"
    assert caught.value.differences == {"amount": ("0.5", "0.7")}
    assert "amount: 0.5 != 0.7" in str(caught.value)
    assert exchange.creates == 1
    with pytest.raises(ValidationError, match="client order id"):
        await ledger.place(exchange, **SIGNAL, key="has spaces")


@pytest.mark.asyncio
async def test_a_rejection_is_final_for_the_key_and_replayed_as_an_error(store: StateStore) -> None:
    exchange = ScriptedPaper()
    ledger = IdempotencyLedger(store, retry=FAST)
    too_big = {**SIGNAL, "amount": Decimal(1_000_000)}
    with pytest.raises(OrderRejected, match="insufficient funds"):
        await ledger.place(exchange, **too_big)
    with pytest.raises(OrderRejected, match="insufficient funds"):
        await ledger.place(exchange, **too_big)
    assert exchange.creates == 1 and exchange.orders == []
    entry = await ledger.entry(idempotency_key(**too_big))
    assert entry is not None and entry.status is EntryStatus.REJECTED


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("script", "creates"),
    [
        (["after"], 1),  # placed, answer lost: found by client id, not sent again
        (["before"], 2),  # not placed: the lookup says so, sent again
        (["before", "before", "after"], 3),
        (["rate", "rate"], 3),  # nothing happened: sent again
    ],
)
async def test_unknown_outcomes_are_asked_never_guessed(
    memory: StateStore, script: list[str | None], creates: int
) -> None:
    exchange = ScriptedPaper(create=list(script))
    ledger = IdempotencyLedger(memory, retry=FAST)
    placed = await ledger.place(exchange, **SIGNAL)
    assert exchange.creates == creates
    assert [o.id for o in exchange.orders] == [placed.order.id]
    entry = await ledger.entry(placed.key)
    assert entry is not None and entry.status is EntryStatus.PLACED and entry.attempts == creates


@pytest.mark.asyncio
async def test_a_lookup_that_never_answers_leaves_the_entry_for_recover(store: StateStore) -> None:
    exchange = ScriptedPaper(create=["after"], lookup=["down"] * 5)
    ledger = IdempotencyLedger(store, retry=FAST)
    with pytest.raises(ExchangeUnavailable, match="outcome unknown"):
        await ledger.place(exchange, **SIGNAL)
    key = idempotency_key(**SIGNAL)
    entry = await ledger.entry(key)
    assert entry is not None and entry.status is EntryStatus.RESERVED
    recovery = await ledger.recover(exchange)
    assert [p.order.id for p in recovery.placed] == [exchange.orders[0].id]
    assert recovery.released == [] and recovery.unresolved == []
    assert (await ledger.place(exchange, **SIGNAL)).replayed
    assert exchange.creates == 1 and len(exchange.orders) == 1


@pytest.mark.asyncio
async def test_rate_limited_past_the_retries_drops_the_reservation(memory: StateStore) -> None:
    exchange = ScriptedPaper(create=["rate"] * 5)
    ledger = IdempotencyLedger(memory, retry=FAST)
    with pytest.raises(RateLimited):
        await ledger.place(exchange, **SIGNAL)
    assert await ledger.entry(idempotency_key(**SIGNAL)) is None  # nothing happened
    assert exchange.orders == []
    assert not (await ledger.place(exchange, **SIGNAL)).replayed  # a later try places it


@pytest.mark.asyncio
async def test_unavailable_past_the_retries_with_nothing_placed_drops_it(
    memory: StateStore,
) -> None:
    exchange = ScriptedPaper(create=["before"] * 5)
    ledger = IdempotencyLedger(memory, retry=FAST)
    with pytest.raises(ExchangeUnavailable, match="does not have it"):
        await ledger.place(exchange, **SIGNAL)
    assert await ledger.entry(idempotency_key(**SIGNAL)) is None and exchange.orders == []


@pytest.mark.asyncio
async def test_a_crash_after_sending_is_recovered_from_the_exchange(store: StateStore) -> None:
    exchange = ScriptedPaper(create=["crash-after"])
    ledger = IdempotencyLedger(store, retry=FAST)
    with pytest.raises(RuntimeError):
        await ledger.place(exchange, **SIGNAL)
    restarted = IdempotencyLedger(store, retry=FAST)  # a new process, same store
    recovery = await restarted.recover(exchange)
    assert [p.order.id for p in recovery.placed] == [exchange.orders[0].id]
    assert (await restarted.place(exchange, **SIGNAL)).replayed
    assert exchange.creates == 1 and len(exchange.orders) == 1


@pytest.mark.asyncio
async def test_a_crash_before_sending_is_released_not_placed_by_recover(store: StateStore) -> None:
    exchange = ScriptedPaper(create=["crash-before"])
    ledger = IdempotencyLedger(store, retry=FAST)
    with pytest.raises(RuntimeError):
        await ledger.place(exchange, **SIGNAL)
    recovery = await ledger.recover(exchange)
    assert recovery.released == [idempotency_key(**SIGNAL)] and recovery.placed == []
    assert exchange.orders == []  # recover never sends
    placed = await ledger.place(exchange, **SIGNAL)  # the signal fired again
    assert not placed.replayed and len(exchange.orders) == 1


@pytest.mark.asyncio
async def test_recover_leaves_young_reservations_and_unanswered_ones(memory: StateStore) -> None:
    clock = Clock()
    exchange = ScriptedPaper(create=["crash-after"], lookup=["down"] * 5)
    ledger = IdempotencyLedger(memory, retry=FAST, clock=clock)
    with pytest.raises(RuntimeError):
        await ledger.place(exchange, **SIGNAL)
    assert (await ledger.recover(exchange, older_than=30)).unresolved == []  # too young
    clock.move(seconds=31)
    key = idempotency_key(**SIGNAL)
    assert (await ledger.recover(exchange, older_than=30)).unresolved == [key]
    entry = await ledger.entry(key)
    assert entry is not None and entry.status is EntryStatus.RESERVED
    assert [p.key for p in (await ledger.recover(exchange)).placed] == [key]


@pytest.mark.asyncio
async def test_a_duplicate_takes_over_a_stale_reservation_after_the_grace(
    memory: StateStore,
) -> None:
    clock = Clock()
    exchange = ScriptedPaper(create=["crash-after"])
    ledger = IdempotencyLedger(memory, retry=FAST, grace=60, poll=0.001, clock=clock)
    with pytest.raises(RuntimeError):
        await ledger.place(exchange, **SIGNAL)
    waiting = asyncio.create_task(ledger.place(exchange, **SIGNAL))
    await asyncio.sleep(0.02)
    assert not waiting.done()  # the first placer may still be at work: wait
    clock.move(seconds=61)
    placed = await asyncio.wait_for(waiting, 10)
    assert placed.order.id == exchange.orders[0].id and exchange.creates == 1


@pytest.mark.asyncio
async def test_an_expired_entry_reads_as_absent(memory: StateStore) -> None:
    clock = Clock()
    ledger = IdempotencyLedger(memory, retry=FAST, clock=clock, retention=timedelta(hours=24))
    # An exchange that refuses a reused client id: the replay gets the old order back.
    paper = ScriptedPaper()
    first = await ledger.place(paper, **SIGNAL)
    clock.move(hours=23)
    assert (await ledger.place(paper, **SIGNAL)).replayed
    clock.move(hours=2)
    entry = await ledger.entry(first.key)
    assert entry is not None and ledger.expired(entry)
    again = await ledger.place(paper, **SIGNAL)
    assert not again.replayed and again.order.id == first.order.id and len(paper.orders) == 1
    assert paper.creates == 2  # sent, refused as a duplicate client id, found by it

    # One that accepts a reused client id places a second order: what retention means.
    async with await statekit.open("memory://") as book_store:
        book = BookExchange(book_store, unique_client_ids=False)
        other = {**SIGNAL, "signal_id": "sig-2"}
        await ledger.place(book, **other)
        clock.move(hours=25)
        await ledger.place(book, **other)
        assert len(await book.orders()) == 2

    assert await ledger.purge() == 1  # the first signal's; sig-2 was just placed again
    clock.move(hours=25)
    assert await ledger.purge() == 1
    assert [e async for e in ledger.entries()] == []


@pytest.mark.asyncio
async def test_a_store_without_compare_and_set_is_refused() -> None:
    from statekit.backend import Capability
    from statekit.errors import CapabilityError

    async with await statekit.open("memory://") as s:
        s.backend.capabilities = frozenset(
            c for c in s.backend.capabilities if c is not Capability.COMPARE_AND_SET
        )
        with pytest.raises(CapabilityError, match="compare_and_set"):
            IdempotencyLedger(s)


# -- several processes ---------------------------------------------------------------------------


def _place_in_process(ledger_url: str, book_url: str, tasks: int, crash: bool) -> None:
    async def run() -> None:
        async with (
            await statekit.open(ledger_url) as store,
            await statekit.open(book_url) as book_store,
        ):
            book: ExchangeConnector = BookExchange(book_store)
            if crash:
                book = _CrashingBook(book_store)
            ledger = IdempotencyLedger(store, retry=FAST, poll=0.002, max_poll=0.02)
            await asyncio.gather(*(ledger.place(book, **SIGNAL) for _ in range(tasks)))

    asyncio.run(run())


class _CrashingBook(BookExchange):
    """Places the order, then the process dies before the ledger records it."""

    async def create_order(self, *args: Any, **kwargs: Any) -> ExchangeOrder:
        await super().create_order(*args, **kwargs)
        os._exit(3)


def _run_processes(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[int | None]:
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=target, args=a) for a in args]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    return [p.exitcode for p in processes]


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
def test_processes_placing_the_same_signal_send_one_order(tmp_path: Path, store_url: str) -> None:
    ledger_url = store_url
    book_url = f"sqlite:///{tmp_path / 'book.db'}"
    exits = _run_processes(_place_in_process, [(ledger_url, book_url, 4, False)] * 3)
    assert exits == [0, 0, 0]

    async def check() -> None:
        async with (
            await statekit.open(ledger_url) as store,
            await statekit.open(book_url) as book_store,
        ):
            book = BookExchange(book_store)
            assert await book.calls() == 1 and len(await book.orders()) == 1
            entry = await IdempotencyLedger(store).entry(idempotency_key(**SIGNAL))
            assert entry is not None and entry.status is EntryStatus.PLACED
            assert entry.order is not None and entry.order.id == (await book.orders())[0].id

    asyncio.run(check())


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
def test_a_process_dying_between_reserve_and_result_is_recovered(
    tmp_path: Path, store_url: str
) -> None:
    ledger_url = store_url
    book_url = f"sqlite:///{tmp_path / 'book.db'}"
    assert _run_processes(_place_in_process, [(ledger_url, book_url, 1, True)]) == [3]

    async def check() -> None:
        async with (
            await statekit.open(ledger_url) as store,
            await statekit.open(book_url) as book_store,
        ):
            book = BookExchange(book_store)
            ledger = IdempotencyLedger(store, retry=FAST)
            entry = await ledger.entry(idempotency_key(**SIGNAL))
            assert entry is not None and entry.status is EntryStatus.RESERVED
            recovery = await ledger.recover(book)
            (order,) = await book.orders()
            assert [p.order.id for p in recovery.placed] == [order.id]
            assert (await ledger.place(book, **SIGNAL)).replayed
            assert await book.calls() == 1

    asyncio.run(check())
