"""TradingState.save plans from its last save: fewer reads, the same compare-and-set guarantees."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio

import statekit
from statekit import ConflictError, StateStore
from statekit.backend import Guard, Record, Write
from statekit.backends.memory import MemoryBackend
from statekit.compat.legacy_state import LegacyState
from statekit.config import load_settings
from statekit.testing._pool import worker_pool
from statekit.trading import Balance, Position, TradingState


class CountingBackend(MemoryBackend):
    """The memory backend, counting the reads and appends the store asks of it."""

    calls: Counter[str]

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        self.calls["latest"] += 1
        return await super().latest(keys)

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        self.calls["scan"] += 1
        async for record in super().scan(prefix, kind):
            yield record

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        self.calls["append"] += 1
        self.calls["written"] += len(writes)
        self.calls["guarded"] += len(guards)
        return await super().append(writes, at, guards=guards)


@pytest_asyncio.fixture
async def counted() -> AsyncIterator[tuple[StateStore, CountingBackend]]:
    backend = await CountingBackend.open("memory://")
    backend.calls = Counter()
    async with StateStore(backend) as store:
        yield store, backend


def book(count: int, amount: int = 1) -> list[Position]:
    return [Position(symbol=f"S{i:03d}", amount=amount) for i in range(count)]


@pytest.mark.asyncio
async def test_a_save_after_a_save_reads_nothing_and_writes_what_changed(
    counted: tuple[StateStore, CountingBackend],
) -> None:
    store, backend = counted
    state = TradingState(store)
    positions = book(200)
    await state.save(positions=positions)
    backend.calls.clear()

    positions[7] = Position(symbol="S007", amount=2)
    result = await state.save(positions=positions)

    assert (result.written, result.deleted, result.unchanged) == (1, 0, 199)
    # one append of the changed item, the index guarded (the same keys); no scan, no head read
    assert backend.calls == Counter({"append": 1, "written": 1, "guarded": 1})
    backend.calls.clear()
    await state.save(positions=positions[:-1])  # closes one position: a new index version
    assert backend.calls == Counter({"append": 1, "written": 2})
    assert sorted((await TradingState(store).load()).positions) == [f"S{i:03d}" for i in range(199)]


@pytest.mark.asyncio
async def test_another_saver_between_saves_is_seen_as_before(store: StateStore) -> None:
    """A second writer saves between two saves: the next save conflicts on the index,
    reads the store again and saves the whole state it was given, as it always did."""
    mine, theirs = TradingState(store), TradingState(store)
    await mine.save(positions=book(5))
    await theirs.save(positions=[*book(5, amount=9), Position(symbol="NEW", amount=1)])

    result = await mine.save(positions=[*book(4), Position(symbol="S004", amount=3)])

    assert (result.written, result.deleted) == (5, 1)  # theirs undone, NEW closed
    loaded = (await TradingState(store).load()).positions
    assert {s: int(p.amount or 0) for s, p in loaded.items()} == {
        "S000": 1,
        "S001": 1,
        "S002": 1,
        "S003": 1,
        "S004": 3,
    }
    versions = [r.version for r in await store.history("position/S004")]
    assert versions == [3, 2, 1]  # mine, theirs, mine: nothing overwritten unseen


@pytest.mark.asyncio
async def test_a_key_added_by_another_saver_fails_the_guard_of_a_save_of_the_same_keys(
    counted: tuple[StateStore, CountingBackend],
) -> None:
    """A save that adds or removes no key guards the index instead of writing it; another
    saver's new key moved the index, so the save reads again and closes that key."""
    store, backend = counted
    mine, theirs = TradingState(store), TradingState(store)
    await mine.save(positions=book(3))
    await theirs.save(positions=[*book(3), Position(symbol="NEW", amount=1)])
    backend.calls.clear()

    result = await mine.save(positions=[*book(2), Position(symbol="S002", amount=3)])

    assert (result.written, result.deleted) == (1, 1)  # S002 written, NEW closed
    assert backend.calls["guarded"] == 1 and backend.calls["scan"] == 1  # refused, read again
    assert sorted((await TradingState(store).load()).positions) == ["S000", "S001", "S002"]
    index = await store.get("trading/index")
    assert index is not None and index.data == {"keys": [f"position/S00{i}" for i in range(3)]}


@pytest.mark.asyncio
async def test_savers_changing_different_items_of_the_same_keys_keep_both_changes(
    store: StateStore,
) -> None:
    """Neither save overwrites or reverts a version it has not seen: both changes stay."""
    mine, theirs = TradingState(store), TradingState(store)
    await mine.save(positions=book(3))
    await theirs.save(positions=book(3))
    await theirs.save(positions=[*book(2), Position(symbol="S002", amount=9)])

    result = await mine.save(positions=[Position(symbol="S000", amount=5), *book(3)[1:]])

    assert (result.written, result.unchanged) == (1, 2)
    loaded = (await TradingState(store).load()).positions
    assert [int(p.amount or 0) for p in loaded.values()] == [5, 1, 9]
    assert [r.version for r in await store.history("trading/index")] == [1]


@pytest.mark.asyncio
async def test_a_write_to_a_changed_item_between_saves_is_never_overwritten_unseen(
    store: StateStore,
) -> None:
    state = TradingState(store)
    await state.save(positions=book(3))
    await store.put("position/S001", {"symbol": "S001", "amount": "7"}, kind="trading.position")

    positions = book(3)
    positions[1] = Position(symbol="S001", amount=5)
    result = await state.save(positions=positions)

    assert result.written == 1
    history = await store.history("position/S001")
    assert [r.data["amount"] for r in history if isinstance(r.data, dict)] == ["5", "7", "1"]


@pytest.mark.asyncio
async def test_single_item_writes_through_the_state_make_the_next_save_read(
    counted: tuple[StateStore, CountingBackend],
) -> None:
    store, backend = counted
    state = TradingState(store)
    await state.save(positions=book(3))
    await state.positions.save(Position(symbol="S001", amount=8))
    backend.calls.clear()

    result = await state.save(positions=book(3))

    assert backend.calls["scan"] == 1  # read again: the single write is reverted, as before
    assert (result.written, result.unchanged) == (1, 2)
    assert (await state.positions.get("S001")) == Position(symbol="S001", amount=1)


@pytest.mark.asyncio
async def test_a_model_changed_in_place_is_saved(store: StateStore) -> None:
    state = TradingState(store)
    positions = book(3)
    await state.save(positions=positions)
    positions[2].amount = 4  # type: ignore[assignment]  # validated: Decimal("4")

    result = await state.save(positions=positions)

    assert result.written == 1
    assert (await state.positions.get("S002")) == Position(symbol="S002", amount=4)


@pytest.mark.asyncio
async def test_legacy_items_equal_to_the_last_save_are_not_converted_again(tmp_path: Path) -> None:
    settings = load_settings(config_file="", env_file="", url=f"sqlite:///{tmp_path / 's.db'}")
    legacy = LegacyState(settings)
    try:
        positions = {f"P{i}": {"price": 1.5, "n": i} for i in range(3)}
        await legacy.save(positions, {})
        items = legacy.items(positions, {}, None)["position/"]
        head = legacy.state.saved_head("position/P1")
        assert head is not None and items["position/P1"].data is head.data
        positions["P1"]["price"] = 2.5
        result = await legacy.save(positions, {})
        assert (result.written, result.unchanged) == (1, 2)
        loaded = await legacy.load()
        assert loaded is not None and loaded["active_positions"] == positions
    finally:
        await legacy.aclose()


@pytest.mark.asyncio
async def test_a_model_holding_a_mutable_value_is_turned_into_json_each_save(
    store: StateStore,
) -> None:
    state = TradingState(store)
    position = Position(symbol="S000", amount=1, notes={"stop": 1})  # type: ignore[call-arg]
    await state.save(positions=[position])
    position.notes["stop"] = 2  # type: ignore[attr-defined]  # changed in place, same object

    result = await state.save(positions=[position])

    assert result.written == 1
    record = await store.get("position/S000")
    assert record is not None and isinstance(record.data, dict)
    assert record.data["notes"] == {"stop": 2}


@pytest.mark.asyncio
async def test_changing_a_returned_record_does_not_change_what_the_next_save_compares(
    store: StateStore,
) -> None:
    state = TradingState(store)
    result = await state.save(positions=book(2))
    for record in result.records:
        assert isinstance(record.data, dict)
        record.data["amount"] = "99"  # the caller's copy

    again = await state.save(positions=book(2))

    assert (again.written, again.unchanged) == (0, 2)
    assert (await state.positions.get("S000")) == Position(symbol="S000", amount=1)


@pytest.mark.asyncio
async def test_a_single_write_to_an_item_the_save_leaves_unchanged_is_kept(
    store: StateStore,
) -> None:
    """Documented in statekit/trading/saved.py: the heads of the last save cannot see it."""
    state = TradingState(store)
    await state.save(positions=book(3))
    await store.put("position/S002", {"symbol": "S002", "amount": "7"}, kind="trading.position")

    positions = book(3)
    positions[0] = Position(symbol="S000", amount=5)
    result = await state.save(positions=positions)

    assert (result.written, result.unchanged) == (1, 2)
    assert (await state.positions.get("S002")) == Position(symbol="S002", amount=7)


@pytest.mark.asyncio
async def test_a_restore_writes_only_the_keys_that_changed(
    counted: tuple[StateStore, CountingBackend],
) -> None:
    """Writes are in proportion to the change; reads are not yet (docs/benchmarks.md)."""
    store, backend = counted
    await store.batch(Write(f"k/{i:04d}", {"v": i}) for i in range(1000))
    info = await store.snapshots.create("before", prefix="k/")
    await store.batch(Write(f"k/{i:04d}", {"v": -1}) for i in range(0, 1000, 100))
    backend.calls.clear()

    assert await store.snapshots.restore(info.id) == 10

    assert (backend.calls["append"], backend.calls["written"]) == (1, 10)
    assert (await store.get("k/0100")) is not None
    assert [r.data async for r in store.scan("k/")] == [{"v": i} for i in range(1000)]


@pytest.mark.asyncio
async def test_legacy_load_reads_the_legacy_keys_only(tmp_path: Path) -> None:
    settings = load_settings(config_file="", env_file="", url=f"sqlite:///{tmp_path / 's.db'}")
    legacy = LegacyState(settings)
    try:
        await legacy.save({"EURUSD": {"qty": 1}}, {"EURUSD": {"cooldown": 0}}, {"cash": 5})
        store = legacy.state.store
        for key in ("prices/EURUSD", "position_notes", "order/1", "pairs"):
            await store.put(key, {"other": True})
        await legacy.save({}, None)  # a save that only deletes still moves the timestamp
        index = await store.get("trading/index")

        loaded = await legacy.load()

        assert loaded is not None and index is not None
        assert loaded["active_positions"] == {}
        assert loaded["pair_states"] == {"EURUSD": {"cooldown": 0}}
        assert loaded["portfolio_data"] == {"cash": 5}
        assert loaded["timestamp"] == index.at.isoformat()
    finally:
        await legacy.aclose()


@pytest.mark.asyncio
async def test_two_legacy_managers_over_one_store_each_save_their_whole_state(
    tmp_path: Path,
) -> None:
    settings = load_settings(config_file="", env_file="", url=f"sqlite:///{tmp_path / 's.db'}")
    one, two = LegacyState(settings), LegacyState(settings)
    try:
        for turn in range(4):
            for legacy, name in ((one, "one"), (two, "two")):
                positions = {f"P{i}": {"by": name, "turn": turn} for i in range(3 + turn % 2)}
                await legacy.save(positions, {})
                loaded = await one.load()
                assert loaded is not None and loaded["active_positions"] == positions
    finally:
        await one.aclose()
        await two.aclose()


def _save_books_in_process(url: str, n: int) -> None:
    async def run() -> None:
        async with await statekit.open(url) as store:
            state = TradingState(store)
            for turn in range(6):  # after the first save, each plans from the last one
                book = [Position(symbol=f"P{i}", amount=n * 100 + turn) for i in range(5)]
                for attempt in range(100):
                    try:
                        await state.save(positions=book, by=f"process-{n}")
                        break
                    except ConflictError:
                        await asyncio.sleep(0.002 * (attempt % 10))
                else:
                    raise AssertionError("never saved")

    asyncio.run(run())


def test_processes_saving_again_and_again_leave_one_whole_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    pool = worker_pool()  # three warm processes of their own, each opening the store
    for future in [pool.submit(_save_books_in_process, url, n) for n in (1, 2, 3)]:
        future.result(120)

    async def check() -> None:
        async with await statekit.open(url) as store:
            positions = (await TradingState(store).load()).positions
            assert len(positions) == 5
            assert len({p.amount for p in positions.values()}) == 1  # one whole book
            for symbol in positions:  # every save landed once: each wrote every position
                assert len(await store.history(f"position/{symbol}", limit=100)) == 18
            # No save added or removed a key after the first: the index was guarded, not rewritten.
            assert len(await store.history("trading/index", limit=100)) == 1

    asyncio.run(check())


@pytest.mark.asyncio
async def test_models_no_longer_handed_over_are_not_kept(store: StateStore) -> None:
    state = TradingState(store)
    for n in range(20):  # a new asset each time, the older ones gone
        await state.save(balances=[Balance(asset=f"A{n}", free=1)])

    assert [memo[3] for memo in state.balances._dumped.values()] == ["balance/A19"]
    assert list(state.balances._dumped_ids) == ["balance/A19"]


@pytest.mark.asyncio
async def test_saves_racing_in_one_legacy_state_each_save_their_whole_state(
    tmp_path: Path,
) -> None:
    """Both saves compare their items with the heads before either holds the write lock;
    the second to write plans again from the heads the first left, whole."""
    settings = load_settings(config_file="", env_file="", url=f"sqlite:///{tmp_path / 's.db'}")
    legacy = LegacyState(settings)
    try:
        base = {f"P{i}": {"n": 0} for i in range(4)}
        await legacy.save(base, {})
        for turn in range(1, 6):
            first = {**base, "P1": {"n": turn}}
            second = {**base, "P2": {"n": turn}}  # P1 as before the first save
            await asyncio.gather(legacy.save(first, {}), legacy.save(second, {}))
            loaded = await legacy.load()
            assert loaded is not None and loaded["active_positions"] == second
            base = second
    finally:
        await legacy.aclose()


@pytest.mark.asyncio
async def test_items_built_before_another_save_of_the_state_are_compared_again(
    store: StateStore,
) -> None:
    """Items are built against the heads of the last save; a save landing in between
    moves those heads, so the plan compares every item again, not just the ones it knew
    had changed."""
    state = TradingState(store)
    positions = book(3)
    await state.save(positions=positions)
    stale = state.positions.items_of(positions)  # S001 unchanged, as far as it knew
    assert stale.others == []
    await state.save(positions=[positions[0], Position(symbol="S001", amount=5), positions[2]])

    result = await state.save_items({"position/": stale})

    assert (result.written, result.unchanged) == (1, 2)  # S001 back to what `stale` holds
    assert (await state.positions.get("S001")) == Position(symbol="S001", amount=1)
