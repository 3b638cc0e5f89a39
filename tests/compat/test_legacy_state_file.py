"""A bot's existing state.json: loaded on first use, kept as it was, never read again.

``TradingStateManager("state.json")`` on a legacy file (data/state.json: positions
with naive ISO times and floats, pair states, the file's own timestamp) migrates it
into the configured store on first use. The file is never modified; after the first
save through statekit the store, not the file, is the state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import statekit
from statekit.trading import Direction, TradingState, kinds

if TYPE_CHECKING:
    from conftest import Target

Closing = Callable[..., None]
PutLegacy = Callable[[str | Path], bytes]


def test_existing_file_is_loaded_on_first_use(
    target: Target, closing: Closing, put_legacy: PutLegacy, legacy_state: dict[str, Any]
) -> None:
    original = put_legacy("state.json")
    from statekit.compat import TradingStateManager

    manager = TradingStateManager("state.json")
    closing(manager)
    loaded = manager.load_trading_state()

    assert loaded is not None
    assert loaded["active_positions"] == legacy_state["active_positions"]
    assert loaded["pair_states"] == legacy_state["pair_states"]
    assert Path("state.json").read_bytes() == original


def test_legacy_dicts_are_stored_exactly(
    target: Target, closing: Closing, put_legacy: PutLegacy, legacy_state: dict[str, Any]
) -> None:
    """Each position and pair state is one key of a legacy kind, the dict as the bot
    wrote it: floats stay floats, naive time strings stay as written, extra fields stay."""
    put_legacy("state.json")
    from statekit.compat import TradingStateManager

    manager = TradingStateManager("state.json")
    closing(manager)
    assert manager.load_trading_state() is not None

    records = target.records()
    for name, data in legacy_state["active_positions"].items():
        record = records[f"position/{name}"]
        assert record.kind == kinds.LEGACY_POSITION
        assert record.data == data
        assert record.version == 1
    for name, data in legacy_state["pair_states"].items():
        record = records[f"pair/{name}"]
        assert record.kind == kinds.LEGACY_PAIR_STATE
        assert record.data == data
    btc = records["position/BTCUSDT"].data
    assert isinstance(btc, dict)
    assert isinstance(btc["entry_price"], float)
    assert btc["entry_time"] == "2025-01-18T08:00:01.500000"


def test_first_use_migrates_once_and_the_store_wins_afterwards(
    target: Target, closing: Closing, put_legacy: PutLegacy, legacy_state: dict[str, Any]
) -> None:
    original = put_legacy("state.json")
    from statekit.compat import TradingStateManager

    first = TradingStateManager("state.json")
    closing(first)
    assert first.load_trading_state() is not None
    positions = dict(legacy_state["active_positions"])
    positions["EURUSD"] = {**positions["EURUSD"], "current_price": 1.1012}
    del positions["BTCUSDT"]
    assert first.save_trading_state(positions, legacy_state["pair_states"]) is True
    assert Path("state.json").read_bytes() == original  # the save went to the store

    # The bot restarts: the file still holds the old state; the store has the new one.
    second = TradingStateManager("state.json")
    closing(second)
    loaded = second.load_trading_state()

    assert loaded is not None
    assert loaded["active_positions"] == positions
    assert loaded["pair_states"] == legacy_state["pair_states"]
    assert "position/BTCUSDT" not in target.records()
    assert [r.version for r in target.history("position/EURUSD")] == [2, 1]
    assert len(target.history("position/GBPUSD-EURUSD")) == 1
    assert Path("state.json").read_bytes() == original


def test_save_before_load_still_keeps_the_file(
    target: Target, closing: Closing, put_legacy: PutLegacy
) -> None:
    """First use may be a save: the file is still migrated first (into history) and kept."""
    original = put_legacy("state.json")
    from statekit.compat import TradingStateManager

    manager = TradingStateManager("state.json")
    closing(manager)
    positions = {"EURUSD": {"direction": "long", "quantity": 1}}
    assert manager.save_trading_state(positions, {}) is True

    loaded = manager.load_trading_state()
    assert loaded is not None
    assert loaded["active_positions"] == positions
    assert loaded["pair_states"] == {}
    assert Path("state.json").read_bytes() == original
    assert len(target.history("position/EURUSD")) == 2  # the file's, then the save's


def test_typed_api_reads_what_the_drop_in_saved(
    target: Target, closing: Closing, put_legacy: PutLegacy
) -> None:
    """Growing into TradingState: the same keys read as models, naive times as UTC,
    floats as the Decimal of their repr, the bot's own fields kept."""
    put_legacy("state.json")
    from statekit.compat import TradingStateManager

    manager = TradingStateManager("state.json")
    closing(manager)
    assert manager.load_trading_state() is not None

    async def read() -> Any:
        async with await statekit.open(target.url) as store:
            return await TradingState(store).load()

    snapshot = asyncio.run(read())

    eur = snapshot.positions["EURUSD"]
    assert eur.symbol == "EURUSD"
    assert eur.entry_price == Decimal("1.0985")
    assert eur.quantity == Decimal("100000")
    assert eur.direction is Direction.LONG
    assert eur.entry_time == datetime(2025, 1, 17, 9, 30, 12, 123456, tzinfo=UTC)
    assert eur.model_extra == {"stop_loss": 1.0935, "take_profit": 1.1085}
    assert snapshot.positions["GBPUSD-EURUSD"].quantity == Decimal("50000.5")
    assert snapshot.pair_states["GBPUSD-EURUSD"].cooldown == 3
    assert snapshot.pair_states["AUDUSD-NZDUSD"].position is None
    assert set(snapshot.positions) == {"EURUSD", "GBPUSD-EURUSD", "BTCUSDT"}


def test_unconfigured_the_store_is_a_sqlite_file_beside_the_legacy_file(
    workdir: Path, put_legacy: PutLegacy, legacy_state: dict[str, Any]
) -> None:
    """With no store configured, ``state.json``'s state goes to ``state.statekit.db``
    beside it (so two bots in two folders never share a store by accident)."""
    original = put_legacy("bot/state.json")
    from statekit.compat import TradingStateManager

    manager = TradingStateManager("bot/state.json")
    try:
        loaded = manager.load_trading_state()
    finally:
        manager.shutdown()

    assert loaded is not None
    assert loaded["active_positions"] == legacy_state["active_positions"]
    assert Path("bot/state.json").read_bytes() == original
    assert Path("bot/state.statekit.db").is_file()
    assert not Path("statekit.db").exists()

    async def read() -> dict[str, Any]:
        async with await statekit.open(f"sqlite:///{workdir / 'bot/state.statekit.db'}") as store:
            return {r.key: r.data async for r in store.scan("position/")}

    assert asyncio.run(read()) == {
        f"position/{name}": data for name, data in legacy_state["active_positions"].items()
    }
