"""Migrating legacy JSON state files: bad input, idempotency, backups, folders, the CLI,
and the save rules of the legacy managers (values JSON cannot hold, history)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import statekit
from statekit.backend import Record
from statekit.cli import app
from statekit.compat import (
    StateMigrator,
    TradingStateManager,
    UnifiedStateManager,
    ValidationError,
    create_enhanced_trading_state_manager,
    legacy_value,
    migrate_legacy_system,
    validate_migration,
)
from statekit.compat.legacy_format import read_legacy_file
from statekit.config import load_settings
from statekit.trading import kinds

GOOD: dict[str, Any] = {
    "active_positions": {
        "EURUSD": {"direction": "long", "quantity": 100000, "entry_price": 1.0985},
        "GBPUSD": {"direction": "short", "quantity": 5000},
    },
    "pair_states": {"EURUSD": {"position": "long", "cooldown": 0}},
    "portfolio_data": {"total_value": 50000},
    "timestamp": "2024-05-01T12:00:00",
}


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


def write(path: Path | str, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def store_of(path: Path | str) -> str:
    """The SQLite store beside a legacy file (the documented default)."""
    place = Path(path).absolute()
    db = place / "statekit.db" if place.is_dir() else place.with_name(place.stem + ".statekit.db")
    return f"sqlite:///{db}"


def records(url: str, prefix: str = "") -> dict[str, Record]:
    async def scan() -> dict[str, Record]:
        async with await statekit.open(url, settings=load_settings(config_file="")) as store:
            return {r.key: r async for r in store.scan(prefix)}

    return asyncio.run(scan())


def versions(url: str, key: str) -> int:
    async def count() -> int:
        async with await statekit.open(url, settings=load_settings(config_file="")) as store:
            return len(await store.history(key, limit=1000))

    return asyncio.run(count())


def migrate(path: Path | str, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
    migrator = StateMigrator(path)
    ok = migrator.migrate_trading_state(**kwargs)
    return ok, migrator.get_migration_report()


def reasons(report: dict[str, Any]) -> dict[str, str]:
    return {f["item"]: f["reason"] for f in report["failures"]}


# -- a good file ----------------------------------------------------------------------------


def test_a_good_file_migrates_every_item_and_stays_untouched() -> None:
    source = write("state.json", GOOD)
    before = source.read_bytes()
    ok, report = migrate(source, backup_original=False)
    assert ok
    assert report["total_items"] == report["successful_items"] == 4
    assert report["failed_items"] == 0
    assert report["failures"] == []
    assert report["written"] == 4
    assert report["source"] == "state.json"
    assert source.read_bytes() == before
    stored = records(store_of(source))
    assert stored["position/EURUSD"].data == GOOD["active_positions"]["EURUSD"]
    assert stored["position/EURUSD"].kind == kinds.LEGACY_POSITION
    assert stored["position/EURUSD"].meta == {
        "by": "statekit migrate",
        "note": "migrated from state.json",
    }
    assert stored["pair/EURUSD"].kind == kinds.LEGACY_PAIR_STATE
    assert stored["portfolio"].data == {"total_value": 50000}
    assert validate_migration(source) == {
        "valid": True,
        "issues": [],
        "source": "state.json",
        "target": store_of(source),
        "checked_items": 4,
    }


def test_positions_may_be_called_positions_and_portfolio_portfolio() -> None:
    source = write("old.json", {"positions": {"X": {"q": 1}}, "portfolio": {"cash": 3}})
    ok, report = migrate(source)
    assert ok, report
    loaded = TradingStateManager(source, auto_migrate=False)
    state = loaded.load_trading_state()
    loaded.shutdown()
    assert state is not None
    assert state["active_positions"] == {"X": {"q": 1}}
    assert state["portfolio_data"] == {"cash": 3}


# -- idempotency ------------------------------------------------------------------------------


def test_running_again_changes_nothing() -> None:
    source = write("state.json", GOOD)
    assert migrate(source)[0]
    url = store_of(source)
    before = {key: r.version for key, r in records(url).items()}
    ok, again = migrate(source)
    assert ok
    assert again["already_migrated"] is True
    assert again["successful_items"] == 4
    assert again["written"] == 0
    assert {key: r.version for key, r in records(url).items()} == before
    assert versions(url, "trading/index") == 1


def test_running_again_reports_the_first_runs_failures() -> None:
    source = write("state.json", '{"active_positions": {"A": {"q": NaN}, "B": {"q": 1}}}')
    ok, first = migrate(source)
    ok_again, again = migrate(source)
    assert not ok and not ok_again
    assert again["already_migrated"] is True
    assert again["failures"] == first["failures"]
    assert again["successful_items"] == first["successful_items"] == 1


def test_a_changed_file_is_migrated_again_with_replace_semantics() -> None:
    source = write("state.json", GOOD)
    assert migrate(source)[0]
    changed = {**GOOD, "active_positions": {"EURUSD": {"direction": "flat"}}}
    write(source, changed)
    ok, report = migrate(source)
    assert ok
    assert report["already_migrated"] is False
    assert report["written"] == 1  # EURUSD changed
    assert report["deleted"] == 1  # GBPUSD is gone from the file
    assert report["unchanged"] == 2  # pair state and portfolio
    stored = records(store_of(source), "position/")
    assert set(stored) == {"position/EURUSD"}
    assert versions(store_of(source), "position/GBPUSD") == 2  # its history stays


def test_a_failed_item_keeps_the_stored_value() -> None:
    source = write("state.json", GOOD)
    assert migrate(source)[0]
    write(
        source,
        '{"active_positions": {"EURUSD": {"q": Infinity}, "GBPUSD": {"q": 2}}, "pair_states": {}}',
    )
    ok, report = migrate(source)
    assert not ok
    assert "active_positions.EURUSD" in reasons(report)
    stored = records(store_of(source), "position/")
    assert stored["position/EURUSD"].data == GOOD["active_positions"]["EURUSD"]  # not deleted
    assert stored["position/GBPUSD"].data == {"q": 2}


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "item", "reason"),
    [
        ('{"active_positions": {"A": {"q": 1}', "(file)", "truncated"),
        ('{"active_positions": {"A": {"q": 1},, }}', "(file)", "not valid JSON"),
        ("", "(file)", "empty"),
        ('[{"A": 1}]', "(file)", "top level must be a JSON object, not array"),
        ('{"active_positions": {}, "strategy": "x"}', "strategy", "unknown top-level field"),
        ('{"active_positions": [1, 2]}', "active_positions", "not array"),
        ('{"active_positions": {"A": 5}}', "active_positions.A", "not number"),
        ('{"active_positions": {"A": {"q": NaN}}}', "active_positions.A", "NaN"),
        ('{"active_positions": {"A": {"q": 1}, "A": {"q": 2}}}', "active_positions.A", "more than"),
        ('{"active_positions": {"A": {"q": 1, "q": 2}}}', "active_positions.A", "'q' appears"),
        ('{"active_positions": {}, "timestamp": 5}', "timestamp", "must be a string"),
        ('{"positions": {}, "active_positions": {}}', "positions", "both given"),
        ('{"portfolio_data": [1]}', "portfolio_data", "not array"),
    ],
)
def test_bad_input_is_reported_with_its_reason(text: str, item: str, reason: str) -> None:
    source = write("state.json", text)
    ok, report = migrate(source)
    assert not ok
    found = reasons(report)
    assert item in found, report["failures"]
    assert reason in found[item]
    assert report["failed_items"] == len(report["failures"]) >= 1
    assert report["total_items"] == report["successful_items"] + report["failed_items"]
    assert source.read_text() == text  # never modified


def test_valid_items_still_migrate_beside_bad_ones() -> None:
    text = (
        '{"active_positions": {"A": {"q": NaN}, "B": {"q": 1}, "B": {"q": 2}, "C": {"q": 3},'
        ' "D": "x"}, "pair_states": {"C": {"cooldown": 1}}, "extra": true}'
    )
    source = write("state.json", text)
    ok, report = migrate(source)
    assert not ok
    assert set(reasons(report)) == {
        "active_positions.A",
        "active_positions.B",
        "active_positions.D",
        "extra",
    }
    assert report["successful_items"] == 2
    assert report["total_items"] == 6
    stored = records(store_of(source))
    assert set(stored) >= {"position/C", "pair/C"}
    assert not {"position/A", "position/B", "position/D"} & set(stored)


def test_a_non_utf8_file_is_one_failure() -> None:
    source = Path("state.json")
    source.write_bytes(b'{"active_positions": {"\xff": {}}}')
    ok, report = migrate(source)
    assert not ok
    assert "not UTF-8" in reasons(report)["(file)"]


def test_an_item_the_store_refuses_fails_alone(tmp_path: Path) -> None:
    settings = load_settings(
        config_file="", url=f"sqlite:///{tmp_path / 'small.db'}", max_value_bytes=1000
    )
    target = UnifiedStateManager(settings=settings)
    big = {"notes": "x" * 2000}
    source = write("state.json", {"active_positions": {"BIG": big, "OK": {"q": 1}}})
    migrator = StateMigrator(source, target)
    assert not migrator.migrate_trading_state(backup_original=False)
    report = migrator.get_migration_report()
    assert "the limit is 1000" in reasons(report)["active_positions.BIG"]
    assert target.get_all_positions() == {"OK": {"q": 1}}
    target.shutdown()


def test_a_missing_path_is_one_failure() -> None:
    ok, report = migrate("nowhere.json")
    assert not ok
    assert "no such file" in reasons(report)["(file)"]
    assert not migrate_legacy_system("nowhere/")


# -- backups ------------------------------------------------------------------------------------


def test_backup_is_a_copy_beside_the_source_never_overwriting() -> None:
    source = write("state.json", GOOD)
    Path("state.json.bak").write_text("someone else's backup")
    ok, report = migrate(source, backup_original=True)
    assert ok
    assert report["backup"] == "state.json.bak.1"
    assert Path("state.json.bak").read_text() == "someone else's backup"
    assert Path("state.json.bak.1").read_bytes() == source.read_bytes()

    write(source, {**GOOD, "pair_states": {}})
    ok, report = migrate(source, backup_original=True)
    assert ok
    assert report["backup"] == "state.json.bak.2"
    assert json.loads(Path("state.json.bak.2").read_text())["pair_states"] == {}


def test_a_backup_with_the_same_bytes_is_reused() -> None:
    source = write("state.json", GOOD)
    Path("state.json.bak").write_bytes(source.read_bytes())
    ok, report = migrate(source, backup_original=True)
    assert ok
    assert report["backup"] == "state.json.bak"
    assert not Path("state.json.bak.1").exists()


def test_no_backup_when_not_asked() -> None:
    assert migrate(write("state.json", GOOD), backup_original=False)[0]
    assert not list(Path().glob("*.bak*"))


# -- dry run -------------------------------------------------------------------------------------


def test_a_dry_run_writes_nothing_and_says_what_it_would_do() -> None:
    source = write("state.json", GOOD)
    migrator = StateMigrator(source)
    assert migrator.migrate_trading_state(backup_original=True, dry_run=True)
    report = migrator.get_migration_report()
    assert report["dry_run"] is True
    assert report["written"] == 4
    assert report["successful_items"] == 4
    assert report["backup"] is None
    assert not list(Path().glob("*.bak*"))
    assert records(store_of(source)) == {}


# -- folders -------------------------------------------------------------------------------------


def test_a_folder_is_migrated_oldest_first_so_the_newest_file_is_the_state() -> None:
    # File names in the opposite order of the timestamps: the timestamps decide.
    write("backups/a.json", {"active_positions": {"NEW": {}}, "timestamp": "2024-05-03T00:00:00"})
    write("backups/b.json", {"active_positions": {"OLD": {}}, "timestamp": "2024-05-01T00:00:00"})
    write("backups/c.json", {"active_positions": {"MID": {}}, "timestamp": "2024-05-02T00:00:00"})
    write("backups/notes.txt", "not a state file")
    assert migrate_legacy_system("backups/")
    url = store_of("backups")
    assert set(records(url, "position/")) == {"position/NEW"}
    assert versions(url, "position/OLD") == 2  # written, then deleted by a later state
    migrator = StateMigrator("backups")
    assert migrator.migrate_trading_state(backup_original=False)
    report = migrator.get_migration_report()
    assert [Path(f["source"]).name for f in report["files"]] == ["b.json", "c.json", "a.json"]
    assert all(f["already_migrated"] for f in report["files"])
    assert validate_migration("backups")["valid"]


def test_an_empty_folder_is_a_failure() -> None:
    Path("empty").mkdir()
    ok, report = migrate("empty")
    assert not ok
    assert "no legacy *.json files" in reasons(report)["(file)"]


def test_a_folder_names_each_failure_with_its_file() -> None:
    write("d/good.json", GOOD)
    write("d/bad.json", "{")
    ok, report = migrate("d")
    assert not ok
    assert "bad.json: (file)" in reasons(report)
    assert report["successful_items"] == 4


# -- validate_migration --------------------------------------------------------------------------


def test_validate_lists_each_difference() -> None:
    source = write("state.json", GOOD)
    manager = TradingStateManager(source)
    assert manager.load_trading_state() is not None  # first use migrates
    assert manager.save_trading_state(
        {"EURUSD": {"direction": "flat"}, "NEW": {}}, GOOD["pair_states"]
    )
    manager.shutdown()
    result = validate_migration(source)
    assert not result["valid"]
    issues = {i["item"]: i["reason"] for i in result["issues"]}
    assert issues == {
        "active_positions.EURUSD": "differs from the store in direction, entry_price, quantity",
        "active_positions.GBPUSD": "not in the store",
        "active_positions.NEW": "in the store but not in the source",
    }


def test_validate_against_a_manager_target(tmp_path: Path) -> None:
    target = create_enhanced_trading_state_manager("sqlite", {"path": str(tmp_path / "target.db")})
    source = write("state.json", GOOD)
    assert StateMigrator(source, target).migrate_trading_state(backup_original=False)
    assert validate_migration(source, target.enhanced_manager)["valid"]
    assert target.get_system_status()["store_url"] == f"sqlite:///{tmp_path / 'target.db'}"
    target.shutdown()
    assert not Path(store_of(source).removeprefix("sqlite:///")).exists()


def test_validate_never_raises_for_an_unreachable_store() -> None:
    result = validate_migration(write("state.json", GOOD), "nosuchscheme://x")
    assert result["valid"] is False
    assert result["issues"][0]["item"] == "(store)"


# -- the managers' automatic migration and save rules -------------------------------------


def test_first_use_migrates_once_and_never_over_newer_state() -> None:
    source = write("state.json", GOOD)
    before = source.read_bytes()
    manager = TradingStateManager(source)
    loaded = manager.load_trading_state()
    assert loaded is not None
    assert loaded["active_positions"] == GOOD["active_positions"]
    assert loaded["portfolio_data"] == GOOD["portfolio_data"]
    assert manager.save_trading_state({"EURUSD": {"direction": "flat"}}, {})
    manager.shutdown()
    # a restarted bot: the legacy file is unchanged, so it is not migrated over the new state
    again = TradingStateManager(source)
    state = again.load_trading_state()
    again.shutdown()
    assert state is not None
    assert state["active_positions"] == {"EURUSD": {"direction": "flat"}}
    assert source.read_bytes() == before
    assert Path("state.statekit.db").is_file()


def test_values_json_cannot_hold_follow_the_rule() -> None:
    manager = TradingStateManager("state.json")
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    positions = {
        "EURUSD": {
            "entry_time": when,
            "day": date(2024, 5, 1),
            "price": Decimal("1.0985"),
            "legs": ("EUR", "USD"),
            "by_id": {2: "a", True: "b", None: "c", 1.5: "d"},
        }
    }
    assert manager.save_trading_state(positions, {})
    loaded = manager.load_trading_state()
    manager.shutdown()
    assert loaded is not None
    assert loaded["active_positions"]["EURUSD"] == {
        "entry_time": "2024-05-01T12:00:00+00:00",
        "day": "2024-05-01",
        "price": "1.0985",
        "legs": ["EUR", "USD"],
        "by_id": {"2": "a", "true": "b", "null": "c", "1.5": "d"},
    }


@pytest.mark.parametrize(
    ("positions", "named"),
    [
        ({"A": {"pnl": float("nan")}}, "active_positions.A.pnl"),
        ({"A": {"pnl": Decimal("Infinity")}}, "active_positions.A.pnl"),
        ({"A": {"tags": {1, 2}}}, "active_positions.A.tags: a set"),
        ({"A": 5}, "active_positions.A: must be a JSON object"),
        ({"": {}}, "a symbol must be a non-empty str"),
        ({"A\n": {}}, "not usable as a symbol"),
    ],
)
def test_a_bad_value_fails_the_whole_save_with_the_reason_logged(
    positions: dict[str, Any], named: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = TradingStateManager("state.json")
    assert manager.save_trading_state({"KEEP": {"q": 1}}, {"KEEP": {}})
    assert manager.save_trading_state({**positions, "OTHER": {"q": 2}}, {}) is False
    loaded = manager.load_trading_state()
    manager.shutdown()
    assert named in caplog.text
    assert loaded is not None  # nothing of the refused save landed
    assert loaded["active_positions"] == {"KEEP": {"q": 1}}
    assert loaded["pair_states"] == {"KEEP": {}}


def test_legacy_value_on_its_own() -> None:
    assert legacy_value({"a": [1, 2.5, "x", None, True]}) == {"a": [1, 2.5, "x", None, True]}
    with pytest.raises(ValidationError, match=r"\$\.a\[1\]: nan"):
        legacy_value({"a": [1, float("nan")]})
    with pytest.raises(ValidationError, match="both become '1'"):
        legacy_value({1: "x", "1": "y"})


def test_unchanged_items_are_not_rewritten_and_removed_ones_are_deleted() -> None:
    manager = UnifiedStateManager(legacy_state_path="state.json")
    assert manager.save_trading_state({"A": {"q": 1}, "B": {"q": 1}}, {}, user_id="bot")
    assert manager.save_trading_state({"A": {"q": 1}}, {}, user_id="bot")
    history = manager.get_state_history(state_type="position", limit=10)
    manager.shutdown()
    assert [(h["state_id"], h["version"], h["deleted"]) for h in history] == [
        ("position/B", 2, True),
        ("position/B", 1, False),
        ("position/A", 1, False),
    ]
    assert history[0]["description"] == "position B deleted"
    assert history[0]["user_id"] == "bot"
    assert history[0]["data"] is None
    assert history[0]["state_type"] == "position"
    assert history[0]["timestamp"].endswith("+00:00")


def test_save_position_keeps_the_rest_of_the_state_in_history() -> None:
    manager = UnifiedStateManager(legacy_state_path="state.json")
    assert manager.save_trading_state({"A": {"q": 1}}, {"A": {"cooldown": 0}})
    assert manager.save_position("B", {"q": 2}, user_id="influx", description="Trade executed")
    assert manager.get_all_positions() == {"A": {"q": 1}, "B": {"q": 2}}
    entries = manager.get_state_history(limit=10)
    manager.shutdown()
    assert {e["state_id"] for e in entries} == {"position/A", "pair/A", "position/B"}
    newest = entries[0]
    assert (newest["state_id"], newest["description"], newest["user_id"]) == (
        "position/B",
        "Trade executed",
        "influx",
    )


def test_history_refuses_an_unknown_state_type() -> None:
    manager = UnifiedStateManager(legacy_state_path="state.json")
    try:
        with pytest.raises(ValidationError, match="state_type 'orders' is unknown"):
            manager.get_state_history(state_type="orders")
    finally:
        manager.shutdown()


def test_status_and_health_never_raise_for_an_unreachable_store() -> None:
    settings = load_settings(config_file="", url="nosuchscheme://host/db")
    manager = UnifiedStateManager(settings=settings)
    assert manager.health_check() is False
    status = manager.get_system_status()
    assert status["healthy"] is False
    assert status["initialized"] is False
    assert status["active_positions"] is None
    assert "nosuchscheme" in status["error"]
    assert manager.save_trading_state({}, {}) is False
    with pytest.raises(statekit.StatekitError):
        manager.load_trading_state()  # never "no state": the bot would think it is flat
    manager.shutdown()


def test_status_says_whether_saves_are_atomic() -> None:
    manager = UnifiedStateManager(legacy_state_path="state.json")
    status = manager.get_system_status()
    manager.shutdown()
    assert status["atomic"] is True
    assert status["database_type"] == "sqlite"
    assert status["healthy"] is True
    assert status["active_positions"] == 0


def test_connection_config_hides_secrets() -> None:
    manager = create_enhanced_trading_state_manager(
        "postgresql", {"host": "db", "user": "bot", "password": "hunter2", "database": "s"}
    )
    shown = manager.config.database.get_connection_config()
    manager.shutdown()
    assert shown == {
        "database_type": "postgresql",
        "postgres_host": "db",
        "postgres_port": 5432,
        "postgres_db": "s",
        "postgres_user": "bot",
        "postgres_password": "***",
    }


def test_enhanced_manager_refuses_unknown_config_keys() -> None:
    with pytest.raises(statekit.ConfigError, match="unknown key"):
        create_enhanced_trading_state_manager("influxdb", {"url": "http://x", "tokn": "t"})


def test_the_api_server_refuses_a_public_host_without_a_key() -> None:
    # The API itself is tested in tests/test_api_unit.py; here: no silent exposure.
    manager = UnifiedStateManager(settings=load_settings("", "", url="memory://"))
    with pytest.raises(statekit.ConfigError, match="without an API key"):
        manager.start_api_server_sync(host="0.0.0.0")
    with pytest.raises(statekit.ConfigError, match="without an API key"):
        asyncio.run(manager.start_api_server(host="0.0.0.0"))
    manager.shutdown()


def test_read_legacy_file_only_reads(tmp_path: Path) -> None:
    source = write("state.json", GOOD)
    stat = source.stat()
    parsed = read_legacy_file(source)
    assert parsed.positions == GOOD["active_positions"]
    assert parsed.timestamp == "2024-05-01T12:00:00"
    assert source.stat().st_mtime_ns == stat.st_mtime_ns


# -- the CLI ---------------------------------------------------------------------------------------


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})  # rows on one line


def test_cli_migrates_and_prints_a_summary() -> None:
    write("state.json", GOOD)
    result = run("migrate", "state.json", "--backup")
    assert result.exit_code == 0, result.output
    assert "state.json" in result.stdout
    assert "state.json.bak" in result.stdout
    assert Path("state.json.bak").is_file()
    assert set(records(store_of("state.json"), "position/")) == {
        "position/EURUSD",
        "position/GBPUSD",
    }
    again = run("migrate", "state.json")
    assert again.exit_code == 0
    assert "already migrated" in again.stdout


def test_cli_exits_non_zero_and_lists_failed_items() -> None:
    write("state.json", '{"active_positions": {"A": {"q": NaN}, "B": {}}}')
    result = run("migrate", "state.json")
    assert result.exit_code == 1
    assert "active_positions.A" in result.stdout
    assert "NaN" in result.stdout or "nan" in result.stdout
    assert result.stderr.splitlines() == ["error: 1 of 2 items failed to migrate (listed above)"]


def test_cli_missing_path_is_one_line() -> None:
    write("state.json", GOOD)
    result = run("migrate", "state.json", "gone.json")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: gone.json: no such file or folder"]
    assert "Traceback" not in result.output
    assert not Path("state.statekit.db").exists()  # nothing ran


def test_cli_dry_run_writes_nothing() -> None:
    write("state.json", GOOD)
    result = run("migrate", "state.json", "--dry-run", "--backup")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout
    assert not Path("state.json.bak").exists()
    assert records(store_of("state.json")) == {}


def test_cli_url_option_picks_the_store(tmp_path: Path) -> None:
    write("a.json", {"active_positions": {"A": {}}})
    write("b.json", {"pair_states": {"B": {}}})
    url = f"sqlite:///{tmp_path / 'one.db'}"
    result = run("--url", url, "migrate", "a.json", "b.json")
    assert result.exit_code == 0, result.output
    assert set(records(url)) >= {"position/A", "pair/B"}
    assert not Path("a.statekit.db").exists()
