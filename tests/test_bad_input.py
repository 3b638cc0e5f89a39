"""Bad input outside the store contract: store URLs, config files, legacy state files.

Keys, kinds, values and versions given to a store are in the conformance suite
(:mod:`statekit.testing.inputs`), which every backend runs. Here: what is refused
before a store exists, and the legacy entry points. Each case asserts the statekit
error (never a raw ``ValueError``/``RecursionError``) and that nothing was written.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import statekit
from statekit.backends.sqlite import SqliteBackend
from statekit.cli import app
from statekit.codec import MAX_INT_DIGITS, Codec, encode
from statekit.compat import TradingStateManager, legacy_value
from statekit.compat.legacy_format import Failure, read_legacy_file
from statekit.config import load_settings
from statekit.errors import ConfigError, SerializationError, ValidationError

# -- store URLs ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("url", ["", "   "])
async def test_an_empty_store_url_is_an_error_not_the_default(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="store URL is empty") as err:
        await statekit.open(url)
    assert err.value.source == "url"
    with pytest.raises(ConfigError, match="store URL is empty"):
        await statekit.open(primary=url)
    assert list(tmp_path.iterdir()) == [], "an empty URL opened the default store"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "redis://[::1",
        "postgresql://[::1]:5432[/db",
        "mongodb://[::1",
        "influxdb://[::1",
        "sqlite://[::1",
        "file://[::1",
        "memory://[::1",
    ],
)
async def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="malformed") as err:
        await statekit.open(url)
    assert err.value.source == "url"


@pytest.mark.asyncio
async def test_a_mongodb_url_with_a_bad_port_is_a_config_error() -> None:
    pytest.importorskip("statekit_mongodb")
    with pytest.raises(ConfigError, match="malformed"):
        await statekit.open("mongodb://127.0.0.1:port/db")


@pytest.mark.asyncio
@pytest.mark.parametrize("url", ["memory://?x=1", "memory://?namespace=a", "memory:?poll=1"])
async def test_memory_refuses_options_like_every_backend(url: str) -> None:
    with pytest.raises(ConfigError, match="unknown memory URL option"):
        await statekit.open(url)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("poll_interval=-1", "poll_interval"),
        ("poll_interval=0", "poll_interval"),
        ("poll_interval=nan", "poll_interval"),
        ("poll_interval=inf", "poll_interval"),
        ("busy_timeout=-1", "busy_timeout"),
        ("busy_timeout=nan", "busy_timeout"),
        ("busy_timeout=inf", "busy_timeout"),
        ("busy_timeout=-inf", "busy_timeout"),
        ("poll_interval=1&poll_interval=2", "poll_interval twice"),
        ("synchronous=", "synchronous"),
        ("colour", "unknown sqlite URL option 'colour'"),
    ],
)
async def test_sqlite_refuses_bad_option_values(query: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with pytest.raises(ConfigError, match=message):
        await statekit.open(f"sqlite:///{path}?{query}")
    assert not path.exists(), "a refused URL created its file"


def test_sqlite_backend_refuses_bad_seconds_when_built_directly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="poll_interval"):
        SqliteBackend(tmp_path / "x.db", poll_interval=float("nan"))
    with pytest.raises(ConfigError, match="busy_timeout"):
        SqliteBackend(tmp_path / "x.db", busy_timeout=-0.5)
    assert SqliteBackend(tmp_path / "x.db", busy_timeout=0).busy_timeout == 0


@pytest.mark.asyncio
async def test_sqlite_refuses_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO users (name) VALUES ('ada')")
        con.execute("CREATE VIEW names AS SELECT name FROM users")
    con.close()
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="not a statekit database") as err:
        await statekit.open(f"sqlite:///{path}")
    assert "names, users" in str(err.value)
    assert path.read_bytes() == before, "the foreign file was changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal/-shm left
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()


@pytest.mark.asyncio
async def test_sqlite_opens_an_empty_file_and_its_own_database(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    async with await statekit.open(f"sqlite:///{empty}") as store:
        await store.put("k", 1)
    async with await statekit.open(f"sqlite:///{empty}") as store:  # a statekit file now
        assert (await store.put("k", 2)).version == 2
    # A statekit database that the user also keeps a table of their own in stays usable.
    with sqlite3.connect(empty) as con:
        con.execute("CREATE TABLE notes (text TEXT)")
    con.close()
    async with await statekit.open(f"sqlite:///{empty}") as store:
        assert (await store.put("k", 3)).version == 3


# -- the codec: the checks the conformance suite relies on ------------------------------------


def test_encode_names_the_path_of_a_lone_surrogate_and_escapes_it() -> None:
    with pytest.raises(SerializationError) as err:
        encode({"a": [1, {"b\udc80": "x"}]}, key="k")
    assert err.value.path == "$.a[1].b\\udc80"
    assert err.value.key == "k"
    str(err.value).encode()  # printable: the surrogate is written out
    assert encode({"ascii": 1, "ü": "😀"}) == '{"ascii":1,"ü":"😀"}'


def test_integers_are_refused_past_4300_digits_whatever_this_process_allows() -> None:
    codec = Codec()
    largest = 10**MAX_INT_DIGITS - 1
    assert codec.normalize({"n": largest}) == {"n": largest}
    assert codec.normalize([-largest]) == [-largest]
    for value, path in (({"n": largest + 1}, "$.n"), ([{"x": -(largest + 1)}], "$[0].x")):
        with pytest.raises(SerializationError) as err:
            codec.normalize(value, key="k")
        assert err.value.path == path
        assert f"more than {MAX_INT_DIGITS} digits" in str(err.value)


def test_a_value_nested_very_deep_is_refused_without_recursion_error() -> None:
    value: object = 0
    for _ in range(100_000):
        value = [value]
    with pytest.raises(SerializationError, match="nested deeper than 200"):
        Codec().normalize(value, key="k")


def test_stored_json_nested_too_deep_for_python_is_a_serialization_error() -> None:
    from statekit.codec import loads

    with pytest.raises(SerializationError, match="not valid JSON"):
        loads("[" * 100_000 + "]" * 100_000, key="k")


# -- config files, legacy state files and the command line ------------------------------------


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No settings from the developer's environment; the working directory is tmp_path."""
    for name in list(os.environ):
        if name.startswith(("STATEKIT_", "TRADING_STATE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def deep_json(depth: int, inner: str = "1") -> str:
    return '{"a":' * depth + inner + "}" * depth


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_a_config_file_nested_100000_deep_is_a_config_error(isolated: Path) -> None:
    config = isolated / "config.json"
    config.write_text('{"url": "memory://", "plugins": ' + deep_json(100_000) + "}")
    with pytest.raises(ConfigError, match="nested too deeply") as err:
        load_settings(config_file=config)
    assert err.value.source == str(config)
    result = cli("--config", str(config), "get", "k")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {config}: arrays or objects are nested too deeply to read"
    ]


def test_a_list_setting_nested_too_deep_is_a_config_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATEKIT_MIRRORS", "[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError, match="STATEKIT_MIRRORS: nested too deeply"):
        load_settings(config_file="")


def legacy_files(folder: Path) -> dict[str, Path]:
    """Legacy state files holding what the bad-input campaign found (and one good item)."""
    good = '"GBPUSD": {"qty": "2"}'
    texts = {
        "deep": '{"active_positions": {"EURUSD": ' + deep_json(50_000) + "}}",
        "deep_item": '{"active_positions": {"EURUSD": ' + deep_json(900) + ", " + good + "}}",
        "surrogate_value": '{"active_positions": {"EURUSD": {"note": "\\ud800"}, ' + good + "}}",
        "surrogate_symbol": '{"active_positions": {"EUR\\udfffUSD": {"qty": "1"}, ' + good + "}}",
        "surrogate_field": '{"active_positions": {"EURUSD": {"\\udc00": 1}, ' + good + "}}",
    }
    for name, text in texts.items():
        (folder / f"{name}.json").write_text(text)
    return {name: folder / f"{name}.json" for name in texts}


@pytest.mark.parametrize(
    ("name", "item", "reason"),
    [
        ("deep", "(file)", "nested too deeply to read"),
        ("deep_item", "active_positions.EURUSD", "nested deeper than 200 levels"),
        ("surrogate_value", "active_positions.EURUSD", "lone surrogate at $.note"),
        ("surrogate_symbol", "active_positions.EUR\\udfffUSD", "lone surrogate"),
        ("surrogate_field", "active_positions.EURUSD", "lone surrogate at $.\\udc00"),
    ],
)
def test_the_legacy_manager_reports_a_bad_file_and_keeps_the_good_items(
    isolated: Path, name: str, item: str, reason: str
) -> None:
    path = legacy_files(isolated)[name]
    before = path.read_bytes()
    manager = TradingStateManager(path)
    try:
        state = manager.load_trading_state()  # the first use migrates: no raw error
        report = manager.migration_report
    finally:
        manager.shutdown()
    assert report is not None
    failures = {f.item: f.reason for f in report.failures}
    assert item in failures and reason in failures[item], failures
    expected = {} if name == "deep" else {"GBPUSD": {"qty": "2"}}
    assert (state or {}).get("active_positions", {}) == expected
    assert path.read_bytes() == before


def test_statekit_migrate_lists_bad_legacy_files_and_exits_non_zero(isolated: Path) -> None:
    files = legacy_files(isolated)
    for name, path in files.items():
        result = cli("--url", f"sqlite:///{isolated / (name + '.db')}", "migrate", str(path))
        assert result.exit_code == 1, (name, result.output)
        assert "Traceback" not in result.output
        assert len(result.stderr.splitlines()) == 1, (name, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr
    found = cli("--url", f"sqlite:///{isolated / 'surrogate_symbol.db'}", "get", "position/GBPUSD")
    assert found.exit_code == 0 and '"qty"' in found.stdout


def test_legacy_values_that_contain_themselves_are_refused() -> None:
    looped: dict[str, Any] = {"qty": 1}
    looped["self"] = looped
    with pytest.raises(ValidationError) as err:
        legacy_value(looped, "active_positions.EURUSD")
    assert err.value.reason == "too deep"


def test_failure_reports_write_lone_surrogates_out() -> None:
    failure = Failure("active_positions.A\ud800", "bad \udfff")
    assert failure.as_dict() == {"item": "active_positions.A\\ud800", "reason": "bad \\udfff"}
    assert read_legacy_file(Path("/nonexistent/x.json")).unreadable


@pytest.mark.parametrize("option", [("--url", ""), ("--url", "  ")])
def test_an_empty_url_option_is_one_line_not_the_default_store(
    isolated: Path, option: tuple[str, str]
) -> None:
    result = cli(*option, "put", "k", "1")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: --url is empty; give a store URL (e.g. sqlite:///statekit.db or memory://), "
        "or leave the option out to use the configured store"
    ]
    assert list(isolated.iterdir()) == []
    serve = cli("serve", "--store", "")
    assert serve.exit_code == 1 and "--store is empty" in serve.stderr


def test_cli_values_nested_too_deep_or_unstorable_are_one_line(isolated: Path) -> None:
    url = f"sqlite:///{isolated / 'cli.db'}"
    for args, message in [
        (("put", "k", "[" * 50_000 + "]" * 50_000), "error: VALUE is nested too deeply to read"),
        (("put", "k", '{"a": "\\ud800"}'), "error: value for 'k' has a lone surrogate at $.a"),
        (("put", "k", "1", "--meta", '{"\\udfff": 1}'), "error: meta for 'k' has a lone surrogate"),
        (("history", "k", "--limit", str(2**64)), "error: limit for 'k' is 18446744073709551616"),
    ]:
        result = cli("--url", url, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(message), (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1
    assert cli("--url", url, "get", "k").exit_code == 1  # nothing was stored
