"""Seed 003's migration examples, run with only their import line changed.

Automatic migration (a file, a folder), manual migration with ``StateMigrator``
(against the configured store, and verbatim against the InfluxDB test server, as
the seed does) and the troubleshooting check ``validate_migration``. The round
trips the seed shows, on the legacy fixture file (data/state.json). Bad input is
covered by the migration's own tests.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import statekit
from statekit.backend import Record
from statekit.testing import fresh_namespace, require_server, server_url
from statekit.trading import kinds

if TYPE_CHECKING:
    from conftest import Target

Closing = Callable[..., None]
PutLegacy = Callable[[str | Path], bytes]

ITEMS = 6  # the fixture's 3 positions + 3 pair states


def _legacy_items(records: dict[str, Record]) -> dict[str, tuple[str, Any]]:
    return {
        key: (record.kind, record.data)
        for key, record in records.items()
        if key.startswith(("position/", "pair/"))
    }


def _expected_items(legacy: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    items = {
        f"position/{name}": (kinds.LEGACY_POSITION, data)
        for name, data in legacy["active_positions"].items()
    }
    items.update(
        (f"pair/{name}", (kinds.LEGACY_PAIR_STATE, data))
        for name, data in legacy["pair_states"].items()
    )
    return items


def _copies_of(original: bytes, besides: Path) -> list[Path]:
    """Files under the working directory, other than ``besides``, holding ``original``."""
    return [
        p
        for p in Path.cwd().rglob("*")
        if p.is_file() and p.resolve() != besides.resolve() and p.read_bytes() == original
    ]


def test_automatic_migration_of_one_file(
    target: Target, put_legacy: PutLegacy, legacy_state: dict[str, Any]
) -> None:
    """Migration: Automatic Migration, a single file; then re-run (idempotent)."""
    original = put_legacy("trading_state.json")

    # --- seed 003 ---
    # from utils.unified_state_manager import migrate_legacy_system
    from statekit.compat import migrate_legacy_system

    # Migrate single file
    success = migrate_legacy_system("trading_state.json")
    # --- end of seed ---

    assert success is True
    assert Path("trading_state.json").read_bytes() == original
    records = target.records()
    assert _legacy_items(records) == _expected_items(legacy_state)
    versions = {key: record.version for key, record in records.items()}

    assert migrate_legacy_system("trading_state.json") is True  # again: nothing changes

    assert {key: r.version for key, r in target.records().items()} == versions
    assert Path("trading_state.json").read_bytes() == original


def test_automatic_migration_of_a_folder(
    target: Target, put_legacy: PutLegacy, legacy_state: dict[str, Any]
) -> None:
    """Migration: Automatic Migration, a whole folder of legacy files."""
    originals = {
        name: put_legacy(f"state_backups/{name}")
        for name in ("state_2025-01-16.json", "state_2025-01-17.json", "state_2025-01-18.json")
    }

    # --- seed 003 ---
    from statekit.compat import migrate_legacy_system

    # Migrate entire directory
    success = migrate_legacy_system("./state_backups/")
    # --- end of seed ---

    assert success is True
    for name, original in originals.items():
        assert Path("state_backups", name).read_bytes() == original
    # Every file holds the same state here, so the store holds it once, as given.
    records = target.records()
    assert _legacy_items(records) == _expected_items(legacy_state)
    assert all(len(target.history(key)) == 1 for key in _legacy_items(records))


def test_manual_migration_into_the_configured_store(
    target: Target, put_legacy: PutLegacy, closing: Closing, legacy_state: dict[str, Any]
) -> None:
    """Migration: Manual Migration, with the configured store as the target.

    The seed names InfluxDB; here the target is the store the settings name (see
    the InfluxDB test below for the seed's own arguments).
    """
    original = put_legacy("old_state.json")
    printed: list[str] = []
    print = printed.append  # the snippet's print, captured

    # from utils.state_migration import StateMigrator
    # from utils.enhanced_state_manager import create_enhanced_trading_state_manager
    from statekit.compat import StateMigrator, create_enhanced_trading_state_manager

    # Create target manager
    target_manager = create_enhanced_trading_state_manager()
    closing(target_manager)

    # Create migrator
    migrator = StateMigrator("old_state.json", target_manager)

    # Perform migration
    success = migrator.migrate_trading_state(backup_original=True)

    # Get detailed report
    report = migrator.get_migration_report()
    print(f"Migrated {report['successful_items']}/{report['total_items']} items")

    assert success is True
    assert printed == [f"Migrated {ITEMS}/{ITEMS} items"]
    assert Path("old_state.json").read_bytes() == original
    assert _copies_of(original, Path("old_state.json")), "backup_original=True keeps a copy"
    assert _legacy_items(target.records()) == _expected_items(legacy_state)
    loaded = target_manager.load_trading_state()
    assert loaded is not None
    assert loaded["active_positions"] == legacy_state["active_positions"]
    assert loaded["pair_states"] == legacy_state["pair_states"]


def test_troubleshooting_validate_migration(
    target: Target, put_legacy: PutLegacy, closing: Closing, legacy_state: dict[str, Any]
) -> None:
    """Troubleshooting, 2. Migration Issues: validate_migration after a migration,
    and after the store was changed behind the file's back."""
    put_legacy("old_state.json")
    printed: list[str] = []
    print = printed.append  # the snippet's print, captured
    from statekit.compat import get_state_manager

    manager = get_state_manager(auto_migrate=True, legacy_state_path="old_state.json")
    closing(manager)
    manager.initialize()

    # --- seed 003 ---
    # Validate migration
    # from utils.state_migration import validate_migration
    from statekit.compat import validate_migration

    result = validate_migration("old_state.json", manager.enhanced_manager)
    print(f"Migration valid: {result['valid']}")
    print(f"Issues: {result['issues']}")
    # --- end of seed ---

    assert result["valid"] is True
    assert result["issues"] == []
    assert printed == ["Migration valid: True", "Issues: []"]

    changed = dict(legacy_state["active_positions"])
    changed["EURUSD"] = {**changed["EURUSD"], "quantity": 1}
    assert manager.save_trading_state(changed, legacy_state["pair_states"]) is True

    result = validate_migration("old_state.json", manager.enhanced_manager)

    assert result["valid"] is False
    assert any("EURUSD" in str(issue) for issue in result["issues"])


# -- the seed's manual migration, verbatim, into InfluxDB ---------------------------------


def _influx_http(url: str) -> str:
    """``influxdb://host:port/db`` -> ``http://host:port`` (the seed's ``url``)."""
    parts = urllib.parse.urlsplit(url)
    scheme = "https" if parts.scheme == "influxdbs" else "http"
    return f"{scheme}://{parts.netloc}"


def _influx_query(base: str, q: str) -> None:
    data = urllib.parse.urlencode({"q": q}).encode()
    with urllib.request.urlopen(f"{base}/query", data=data, timeout=30) as reply:
        assert reply.status == 200, reply.read()


@pytest.fixture
def influx_bucket(workdir: Path) -> Iterator[tuple[str, str]]:
    """(the test server's http URL, a fresh database on it), dropped afterwards."""
    base = _influx_http(server_url("influxdb"))
    try:
        _influx_query(base, "SHOW DATABASES")
    except OSError as exc:  # URLError included
        require_server("influxdb", str(exc))
    bucket = fresh_namespace("compat")
    try:
        yield base, bucket
    finally:
        _influx_query(base, f'DROP DATABASE "{bucket}"')


def test_manual_migration_into_influxdb(
    influx_bucket: tuple[str, str], put_legacy: PutLegacy, legacy_state: dict[str, Any]
) -> None:
    """Migration: Manual Migration, as the seed writes it, against the InfluxDB test server.

    Only the imports change, and ``url``/``bucket`` point at the test server (a
    fresh database); ``token`` and ``org`` are the seed's (the test server has no
    authentication, so they are sent and not checked).
    """
    http_url, fresh_bucket = influx_bucket
    original = put_legacy("old_state.json")
    printed: list[str] = []
    print = printed.append  # the snippet's print, captured

    # --- seed 003 ---
    # from utils.state_migration import StateMigrator
    # from utils.enhanced_state_manager import create_enhanced_trading_state_manager
    from statekit.compat import StateMigrator, create_enhanced_trading_state_manager

    # Create target manager
    target_manager = create_enhanced_trading_state_manager(
        database_type="influxdb",
        database_config={
            "url": http_url,  # seed: 'http://localhost:8086'
            "token": "your-token",
            "org": "trading-org",
            "bucket": fresh_bucket,  # seed: 'trading-states'
        },
    )

    # Create migrator
    migrator = StateMigrator("old_state.json", target_manager)

    # Perform migration
    success = migrator.migrate_trading_state(backup_original=True)

    # Get detailed report
    report = migrator.get_migration_report()
    print(f"Migrated {report['successful_items']}/{report['total_items']} items")
    # --- end of seed ---

    try:
        assert success is True
        assert printed == [f"Migrated {ITEMS}/{ITEMS} items"]
        assert Path("old_state.json").read_bytes() == original
        assert _copies_of(original, Path("old_state.json")), "backup_original=True keeps a copy"
        loaded = target_manager.load_trading_state()
        assert loaded is not None
        assert loaded["active_positions"] == legacy_state["active_positions"]
        assert loaded["pair_states"] == legacy_state["pair_states"]
    finally:
        for name in ("shutdown", "close"):
            method = getattr(target_manager, name, None)
            if callable(method):
                method()
                break

    # In InfluxDB itself, through statekit's own InfluxDB backend.
    host = urllib.parse.urlsplit(http_url).netloc

    async def read() -> dict[str, Record]:
        async with await statekit.open(f"influxdb://{host}/{fresh_bucket}") as store:
            return {r.key: r async for r in store.scan("")}

    assert _legacy_items(asyncio.run(read())) == _expected_items(legacy_state)


def test_the_fixture_is_a_legacy_file() -> None:
    """The fixture is what a legacy TradingStateManager wrote: naive ISO times, floats."""
    data = json.loads(Path(__file__).with_name("data").joinpath("state.json").read_text())
    assert set(data) >= {"active_positions", "pair_states"}
    times = [p["entry_time"] for p in data["active_positions"].values()]
    assert all("+" not in t and not t.endswith("Z") for t in times)
    assert any(isinstance(p["entry_price"], float) for p in data["active_positions"].values())
    assert len(data["active_positions"]) + len(data["pair_states"]) == ITEMS
