"""Seed 003's usage examples, run with only their import line changed.

Each test body is the seed's snippet as written, except:

- ``from utils.<module> import X`` is now ``from statekit.compat import X`` (the
  old line is kept above it as a comment);
- names the seed uses without defining them (``positions``, ``datetime``,
  ``logger``, the user's own classes) are defined before the snippet, saying so;
- what the seed only prints is also asserted after the snippet.

Each runs against SQLite and against PostgreSQL (the ``target`` fixture), with the
working directory in a temp folder. The migration examples are in
test_seed_migration.py; the legacy state file in test_legacy_state_file.py.
"""

from __future__ import annotations

import io
import logging
import unittest
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from statekit.trading import kinds

if TYPE_CHECKING:
    from conftest import Target

Closing = Callable[..., None]


def _count(value: Any) -> int:
    return value if isinstance(value, int) else len(value)


def test_quick_start_drop_in_replacement(target: Target, closing: Closing) -> None:
    """Quick Start, 1. Basic Usage (Drop-in Replacement)."""
    # --- seed 003 ---
    # Old way
    # from utils.state_manager import TradingStateManager
    from statekit.compat import TradingStateManager

    state_manager = TradingStateManager("state.json")
    closing(state_manager)

    # New way (backward compatible)
    # from utils.unified_state_manager import create_backward_compatible_manager
    from statekit.compat import create_backward_compatible_manager

    state_manager = create_backward_compatible_manager("state.json")
    closing(state_manager)

    # Use exactly the same interface
    positions = {"EURUSD": {"direction": "long", "quantity": 100000}}
    pair_states = {"EURUSD": {"position": "long", "cooldown": 0}}

    success = state_manager.save_trading_state(positions, pair_states)
    loaded_state = state_manager.load_trading_state()
    # --- end of seed ---

    assert success is True
    assert loaded_state is not None
    assert loaded_state["active_positions"] == positions
    assert loaded_state["pair_states"] == pair_states
    # Stored as one versioned key per item, the legacy dicts exactly as given.
    records = target.records()
    assert records["position/EURUSD"].kind == kinds.LEGACY_POSITION
    assert records["position/EURUSD"].data == positions["EURUSD"]
    assert records["pair/EURUSD"].kind == kinds.LEGACY_PAIR_STATE
    assert records["pair/EURUSD"].data == pair_states["EURUSD"]


def test_quick_start_same_state_seen_by_a_second_manager(target: Target, closing: Closing) -> None:
    """What one process saved, the next one (a restarted bot) loads."""
    from statekit.compat import TradingStateManager

    first = TradingStateManager("state.json")
    closing(first)
    positions = {"EURUSD": {"direction": "long", "quantity": 100000, "entry_price": 1.0985}}
    pair_states = {"EURUSD": {"position": "long", "cooldown": 0}}
    assert first.save_trading_state(positions, pair_states) is True

    second = TradingStateManager("state.json")
    closing(second)
    loaded = second.load_trading_state()

    assert loaded is not None
    assert loaded["active_positions"] == positions
    assert loaded["pair_states"] == pair_states


def test_quick_start_save_replaces_the_whole_state(target: Target, closing: Closing) -> None:
    """As with the JSON file: a position no longer given is gone after the next save,
    and an unchanged one gets no new version."""
    from statekit.compat import TradingStateManager

    manager = TradingStateManager("state.json")
    closing(manager)
    both = {"EURUSD": {"direction": "long"}, "GBPUSD": {"direction": "short"}}
    assert manager.save_trading_state(both, {"EURUSD": {"position": "long"}}) is True
    one = {"EURUSD": {"direction": "long"}}
    assert manager.save_trading_state(one, {"EURUSD": {"position": "long"}}) is True

    loaded = manager.load_trading_state()

    assert loaded is not None
    assert loaded["active_positions"] == one
    assert "position/GBPUSD" not in target.records()
    assert len(target.history("position/EURUSD")) == 1  # saved twice, unchanged


def test_enhanced_usage(
    target: Target, closing: Closing, put_legacy: Callable[[str], bytes]
) -> None:
    """Quick Start, 2. Enhanced Usage (with a legacy file to auto-migrate)."""
    original = put_legacy("old_state.json")
    # Not in the seed: the snippet uses these without defining them.
    positions = {"EURUSD": {"direction": "long", "quantity": 100000}}
    pair_states = {"EURUSD": {"position": "long", "cooldown": 0}}

    # --- seed 003 ---
    # from utils.unified_state_manager import UnifiedStateManager
    from statekit.compat import UnifiedStateManager

    # Initialize with auto-migration
    with UnifiedStateManager(auto_migrate=True, legacy_state_path="old_state.json") as manager:
        # Save state with user tracking
        success = manager.save_trading_state(
            active_positions=positions,
            pair_states=pair_states,
            portfolio_data={"total_value": 50000},
            user_id="trader_1",
        )

        # Create snapshot
        manager.create_snapshot("End of day snapshot")

        # Get comprehensive status
        status = manager.get_system_status()
        print(f"System status: {status}")

        # Get state history for analysis
        history = manager.get_state_history(state_type="position", limit=50)
    # --- end of seed ---

    assert success is True
    assert _count(status["active_positions"]) == 1
    assert status["database_type"] == target.name
    assert isinstance(history, list)
    assert 1 <= len(history) <= 50
    for entry in history:
        assert "timestamp" in entry
        assert "description" in entry
    # The legacy file was migrated first (EURUSD has its migrated version, then
    # the saved one), then replaced by the save; the file itself is untouched.
    assert len(target.history("position/EURUSD")) == 2
    assert Path("old_state.json").read_bytes() == original
    records = target.records()
    assert records["portfolio"].kind == kinds.LEGACY_PORTFOLIO
    assert records["portfolio"].data == {"total_value": 50000}
    assert "trader_1" in records["position/EURUSD"].meta.values()  # who saved it

    with UnifiedStateManager() as again:
        loaded = again.load_trading_state()
    assert loaded is not None
    assert loaded["active_positions"] == positions
    assert loaded["pair_states"] == pair_states


def test_enhanced_usage_without_a_legacy_file(target: Target) -> None:
    """auto_migrate with no legacy file at the path: nothing to migrate, no error."""
    from statekit.compat import UnifiedStateManager

    positions = {"EURUSD": {"direction": "long", "quantity": 100000}}
    with UnifiedStateManager(auto_migrate=True, legacy_state_path="old_state.json") as manager:
        assert manager.save_trading_state(active_positions=positions, pair_states={}) is True
        loaded = manager.load_trading_state()

    assert loaded is not None
    assert loaded["active_positions"] == positions


def test_integration_with_the_main_trading_script(target: Target) -> None:
    """Integration with Existing Trading System: Update Main Trading Script."""
    # Not in the seed: the snippet's module has these imports and a logger.
    from datetime import datetime

    logger = logging.getLogger("trading")

    # --- seed 003 ---
    # In your main.py or trading script

    # Old imports
    # from utils.state_manager import TradingStateManager

    # New imports
    # from utils.unified_state_manager import get_state_manager
    from statekit.compat import get_state_manager

    class EnhancedTradingSystemV3:
        def __init__(self, data_provider: str = "ctrader", broker: str = "ctrader"):
            # ... existing initialization ...

            # Replace old state manager initialization
            # self.state_manager = TradingStateManager("state.json")

            # New enhanced state manager
            self.state_manager = get_state_manager(
                auto_migrate=True,
                legacy_state_path="state.json",  # Your existing state file
            )

            # Initialize the manager
            self.state_manager.initialize()

        def save_current_state(self):
            """Save current trading state with enhanced features."""
            # Existing state preparation code...
            active_positions = self.get_active_positions()
            pair_states = self.get_pair_states()
            portfolio_data = self.get_portfolio_data()

            # Enhanced save with user tracking
            success = self.state_manager.save_trading_state(
                active_positions=active_positions,
                pair_states=pair_states,
                portfolio_data=portfolio_data,
                user_id="trading_system",
            )

            if success:
                logger.info("State saved successfully to database")
            else:
                logger.error("Failed to save state")

            return success

        def load_previous_state(self):
            """Load previous state with enhanced error handling."""
            state = self.state_manager.load_trading_state()

            if state:
                logger.info("State loaded successfully from database")
                return state
            else:
                logger.warning("No previous state found")
                return None

        def create_end_of_day_snapshot(self):
            """Create end-of-day snapshot."""
            description = f"End of day snapshot - {datetime.now().strftime('%Y-%m-%d')}"
            success = self.state_manager.create_snapshot(description)

            if success:
                logger.info("End-of-day snapshot created")
            else:
                logger.error("Failed to create snapshot")

            return success

    # --- end of seed ---

    # Not in the seed: the trading system's own methods the snippet calls.
    class Bot(EnhancedTradingSystemV3):
        def get_active_positions(self) -> dict[str, Any]:
            return {"EURUSD": {"direction": "long", "quantity": 100000, "entry_price": 1.0985}}

        def get_pair_states(self) -> dict[str, Any]:
            return {"EURUSD": {"position": "long", "cooldown": 0}}

        def get_portfolio_data(self) -> dict[str, Any]:
            return {"total_value": 50000.0, "cash": 12500.25}

    bot = Bot()
    try:
        assert bot.load_previous_state() is None  # a fresh store: nothing yet
        assert bot.save_current_state() is True
        state = bot.load_previous_state()
        assert state is not None
        assert state["active_positions"] == bot.get_active_positions()
        assert state["pair_states"] == bot.get_pair_states()
        assert bot.create_end_of_day_snapshot()
    finally:
        bot.state_manager.shutdown()


def test_integration_with_an_influxdb_manager(target: Target, closing: Closing) -> None:
    """Integration with Existing Trading System: Update InfluxDB Integration."""
    # Not in the seed: the user's own classes and imports the snippet builds on.
    from typing import Dict  # noqa: UP035 - the seed's spelling

    from statekit.compat import get_state_manager

    class TradingConfig:
        pass

    class InfluxDBManager:
        def __init__(self, config: TradingConfig) -> None:
            self.config = config
            self.trades: list[dict[str, Any]] = []

        def store_trade_data(self, trade_data: Dict[str, Any]) -> None:  # noqa: UP006
            self.trades.append(trade_data)

    # --- seed 003 ---
    # In your InfluxDBManager class

    class EnhancedInfluxDBManager(InfluxDBManager):
        def __init__(self, config: TradingConfig):
            super().__init__(config)

            # Add state manager integration
            self.state_manager = get_state_manager()

        def store_trade_data(self, trade_data: Dict[str, Any]):  # noqa: UP006
            """Enhanced trade data storage with state management."""
            # Store in InfluxDB as before
            super().store_trade_data(trade_data)

            # Also store in state management system for versioning
            if "pair" in trade_data:
                self.state_manager.save_position(
                    pair=trade_data["pair"],
                    position_data=trade_data,
                    user_id="influxdb_integration",
                    description="Trade executed",
                )

    # --- end of seed ---

    influx = EnhancedInfluxDBManager(TradingConfig())
    closing(influx.state_manager)
    trade = {"pair": "EURUSD", "direction": "long", "quantity": 100000, "price": 1.0985}
    influx.store_trade_data(trade)
    influx.store_trade_data({"note": "no pair: not a position"})

    assert influx.trades[0] == trade
    positions = influx.state_manager.get_all_positions()
    assert _count(positions) == 1
    if isinstance(positions, dict):
        assert positions["EURUSD"] == trade
    history = influx.state_manager.get_state_history(state_type="position", limit=10)
    assert [e["description"] for e in history] == ["Trade executed"]


def test_monitoring_system_health_and_state_analytics(target: Target, closing: Closing) -> None:
    """Monitoring and Analytics: System Health Monitoring, then State Analytics."""
    # Not in the seed: the snippets' import, and a state to look at.
    from statekit.compat import get_state_manager

    saved = {
        "EURUSD": {"direction": "long", "quantity": 100000},
        "GBPUSD": {"direction": "short", "quantity": 50000},
    }
    with get_state_manager() as setup:
        assert setup.save_trading_state(saved, {"EURUSD": {"position": "long"}}) is True
        assert setup.save_trading_state(
            {**saved, "GBPUSD": {"direction": "short", "quantity": 25000}},
            {"EURUSD": {"position": "long"}},
        )

    out = io.StringIO()

    def print(*args: object) -> None:  # the snippets' print, captured
        out.write(" ".join(map(str, args)) + "\n")

    # --- seed 003: System Health Monitoring ---
    # Check system health
    manager = get_state_manager()
    health_ok = manager.health_check()
    status = manager.get_system_status()

    print(f"System healthy: {health_ok}")
    print(f"Active positions: {status['active_positions']}")
    print(f"Database type: {status['database_type']}")
    # --- seed 003: State Analytics ---
    # Get comprehensive state history
    history = manager.get_state_history(state_type="position", limit=1000)

    # Analyze position changes over time
    for entry in history:
        print(f"{entry['timestamp']}: {entry['description']}")

    # Get all current positions
    positions = manager.get_all_positions()
    print(f"Total active positions: {len(positions)}")
    # --- end of seed ---
    closing(manager)

    assert health_ok is True
    assert _count(status["active_positions"]) == 2
    assert status["database_type"] == target.name
    assert len(history) == 3  # EURUSD once, GBPUSD twice
    assert len(positions) == 2
    if isinstance(positions, dict):
        assert positions["GBPUSD"] == {"direction": "short", "quantity": 25000}
    text = out.getvalue()
    assert "System healthy: True" in text
    assert f"Database type: {target.name}" in text
    assert "Total active positions: 2" in text


def test_data_validation(target: Target) -> None:
    """Data Validation: a valid position."""
    # Not in the seed: the snippet uses datetime without importing it.
    from datetime import datetime

    printed: list[str] = []
    print = printed.append  # the snippet's print, captured

    # --- seed 003 ---
    # Position schema validation
    # from utils.state_database import PositionSchema, ValidationError
    from statekit.compat import PositionSchema, ValidationError

    try:
        position = PositionSchema(
            symbol1="EUR",
            symbol2="USD",
            direction="long",
            entry_time=datetime.now(),
            quantity=100000,
            entry_price=1.0985,
        )
        print("Position data valid")
    except ValidationError as e:
        print(f"Validation error: {e}")
    # --- end of seed ---

    assert printed == ["Position data valid"]
    assert position.symbol1 == "EUR"
    assert position.quantity == 100000
    assert position.entry_price == Decimal("1.0985")  # Decimal, from the float's repr


@pytest.mark.parametrize(
    ("field", "bad"),
    [("quantity", -5), ("entry_price", float("nan")), ("direction", "sideways")],
)
def test_data_validation_refuses_bad_data(target: Target, field: str, bad: object) -> None:
    """Data Validation: the same snippet with one bad value takes the except branch."""
    from datetime import datetime

    printed: list[str] = []
    print = printed.append
    values: dict[str, Any] = {
        "symbol1": "EUR",
        "symbol2": "USD",
        "direction": "long",
        "entry_time": datetime.now(),
        "quantity": 100000,
        "entry_price": 1.0985,
    }
    values[field] = bad

    from statekit.compat import PositionSchema, ValidationError

    try:
        PositionSchema(**values)
        print("Position data valid")
    except ValidationError as e:
        print(f"Validation error: {e}")

    assert len(printed) == 1
    assert printed[0].startswith("Validation error: ")
    assert field in printed[0]


def test_api_security_and_cache_settings(target: Target) -> None:
    """Security Considerations: API Security; Troubleshooting 3: Performance Issues."""
    # --- seed 003: API Security ---
    # from utils.unified_state_manager import UnifiedStateManager  (implied by the seed)
    from statekit.compat import UnifiedStateManager

    # Enable API key authentication
    manager = UnifiedStateManager()
    manager.config.api.api_key = "your-secure-api-key"

    # Configure CORS for production
    manager.config.api.cors_origins = ["https://your-trading-dashboard.com"]
    # --- seed 003: Performance Issues ---
    # Enable caching
    manager.config.cache.enabled = True
    manager.config.cache.ttl_seconds = 600  # 10 minutes
    # --- end of seed ---

    key = manager.config.api.api_key
    assert getattr(key, "get_secret_value", lambda: key)() == "your-secure-api-key"
    assert "your-secure-api-key" not in repr(manager.config)  # a secret stays hidden
    assert manager.config.api.cors_origins == ["https://your-trading-dashboard.com"]
    assert manager.config.cache.enabled is True
    assert manager.config.cache.ttl_seconds == 600
    manager.initialize()
    try:
        assert manager.save_trading_state({"EURUSD": {"direction": "long"}}, {}) is True
        loaded = manager.load_trading_state()
        assert loaded is not None
        assert loaded["active_positions"] == {"EURUSD": {"direction": "long"}}
    finally:
        manager.shutdown()


def test_the_seeds_unit_test_passes(target: Target) -> None:
    """Testing: Unit Tests. The seed's TestCase, run by unittest's own runner."""
    # --- seed 003 ---
    # from utils.unified_state_manager import UnifiedStateManager
    from statekit.compat import UnifiedStateManager

    class TestStateManager(unittest.TestCase):
        def setUp(self):
            self.manager = UnifiedStateManager()
            self.manager.initialize()

        def test_save_and_load_state(self):
            positions = {"EURUSD": {"direction": "long"}}
            pair_states = {"EURUSD": {"position": "long"}}

            # Save state
            success = self.manager.save_trading_state(positions, pair_states)
            self.assertTrue(success)  # noqa: PT009

            # Load state
            loaded = self.manager.load_trading_state()
            self.assertIsNotNone(loaded)  # noqa: PT009
            self.assertEqual(loaded["active_positions"], positions)  # noqa: PT009

        def tearDown(self):
            self.manager.shutdown()

    # if __name__ == '__main__':
    #     unittest.main()
    # --- end of seed ---

    suite = unittest.defaultTestLoader.loadTestsFromTestCase(TestStateManager)
    stream = io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)

    assert result.testsRun == 1, stream.getvalue()
    assert result.wasSuccessful(), stream.getvalue()
