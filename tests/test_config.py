"""Settings: every source, the precedence between them, store URLs, errors and secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

import statekit
from statekit.backends.memory import MemoryBackend
from statekit.compat.settings import LEGACY_ENV_NAMES
from statekit.config import (
    DATABASE_TYPES,
    DEFAULT_MAX_VALUE_BYTES,
    DatabaseSettings,
    Settings,
    load_settings,
)
from statekit.errors import ConfigError
from statekit.host import PluginHost

# The legacy product's config.json, exactly as seed 003 documents it.
SEED_CONFIG_JSON = """\
{
  "database": {
    "database_type": "influxdb",
    "influxdb_url": "http://localhost:8086",
    "influxdb_token": "your-token",
    "influxdb_org": "trading-org",
    "influxdb_bucket": "trading-states"
  },
  "api": {
    "enabled": true,
    "host": "0.0.0.0",
    "port": 8000
  },
  "cache": {
    "enabled": true,
    "ttl_seconds": 300,
    "max_size": 1000
  },
  "enable_validation": true,
  "enable_file_fallback": true,
  "log_level": "INFO"
}
"""


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No STATEKIT_*/TRADING_STATE_* variables, and a working directory of our own."""
    for name in list(os.environ):
        if name.upper().startswith(("STATEKIT_", "TRADING_STATE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def dig(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# --- defaults --------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert settings.url is None
    assert settings.max_value_bytes == DEFAULT_MAX_VALUE_BYTES == 16 * 1024 * 1024
    assert settings.enable_validation is True
    assert settings.enable_file_fallback is False
    assert settings.log_level == "INFO"
    assert settings.database.database_type == "sqlite"
    assert settings.database.sqlite_path == "statekit.db"
    assert settings.api.enabled is False
    assert settings.api.host == "127.0.0.1"
    assert settings.api.port == 8000
    assert settings.api.api_key is None
    assert settings.api.cors_origins == []
    assert (settings.cache.ttl_seconds, settings.cache.max_size) == (300, 1000)
    assert settings.plugins.disable_autoload is False
    assert settings.plugins.blocked == []
    assert settings.store_url() == "sqlite:///statekit.db"


def test_settings_constructor_reads_the_same_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_STATE_API_PORT", "9001")
    assert Settings().api.port == 9001
    assert Settings(api={"port": 9002}).api.port == 9002
    with pytest.raises(ConfigError):
        Settings(api={"port": "nope"})


# --- legacy TRADING_STATE_* names -------------------------------------------------------

LEGACY_CASES = [
    ("TRADING_STATE_DB_TYPE", "postgresql", "postgresql"),
    ("TRADING_STATE_POSTGRES_HOST", "db.example", "db.example"),
    ("TRADING_STATE_POSTGRES_PORT", "6543", 6543),
    ("TRADING_STATE_POSTGRES_DB", "trading_states", "trading_states"),
    ("TRADING_STATE_POSTGRES_USER", "trader", "trader"),
    ("TRADING_STATE_POSTGRES_PASSWORD", "pw-legacy", "pw-legacy"),
    ("TRADING_STATE_INFLUXDB_URL", "http://influx:8086", "http://influx:8086"),
    ("TRADING_STATE_INFLUXDB_TOKEN", "tok-legacy", "tok-legacy"),
    ("TRADING_STATE_INFLUXDB_ORG", "trading-org", "trading-org"),
    ("TRADING_STATE_INFLUXDB_BUCKET", "trading-states", "trading-states"),
    ("TRADING_STATE_API_ENABLED", "true", True),
    ("TRADING_STATE_API_HOST", "0.0.0.0", "0.0.0.0"),
    ("TRADING_STATE_API_PORT", "8080", 8080),
    ("TRADING_STATE_ENABLE_VALIDATION", "false", False),
    ("TRADING_STATE_ENABLE_FILE_FALLBACK", "true", True),
    ("TRADING_STATE_LOG_LEVEL", "debug", "DEBUG"),
]


def test_every_legacy_name_is_tested() -> None:
    assert {name for name, _, _ in LEGACY_CASES} == set(LEGACY_ENV_NAMES)


@pytest.mark.parametrize(("name", "raw", "expected"), LEGACY_CASES)
def test_legacy_env_name(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, expected: object
) -> None:
    monkeypatch.setenv(name, raw)
    assert dig(load_settings(), LEGACY_ENV_NAMES[name]) == expected


@pytest.mark.parametrize(("name", "raw", "expected"), LEGACY_CASES)
def test_legacy_name_in_dotenv(tmp_path: Path, name: str, raw: str, expected: object) -> None:
    write(tmp_path / ".env", f"{name}={raw}\n")
    assert dig(load_settings(), LEGACY_ENV_NAMES[name]) == expected


def test_the_legacy_names_are_a_dialect_found_by_entry_point() -> None:
    # statekit.config knows no legacy name: statekit's pyproject registers the compat
    # dialect in the statekit.settings_dialects group, read at the first load.
    from statekit.compat.settings import TRADING_STATE
    from statekit.config.dialects import installed_dialects

    assert TRADING_STATE in installed_dialects()
    assert TRADING_STATE.variables is LEGACY_ENV_NAMES


def test_the_config_package_does_not_import_compat() -> None:
    code = (
        "import sys, statekit.config; "
        "assert not any(m.startswith('statekit.compat') for m in sys.modules), 'imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_seed_env_block_gives_an_influxdb_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "TRADING_STATE_DB_TYPE": "influxdb",
        "TRADING_STATE_INFLUXDB_URL": "http://localhost:8086",
        "TRADING_STATE_INFLUXDB_TOKEN": "your-token-here",
        "TRADING_STATE_INFLUXDB_ORG": "trading-org",
        "TRADING_STATE_INFLUXDB_BUCKET": "trading-states",
    }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().store_url() == (
        "influxdb://localhost:8086/trading-states?org=trading-org&token=your-token-here"
    )


# --- STATEKIT_* names -------------------------------------------------------------------

TWO = ["https://a", "https://b"]
RM = ["redis", "mongodb"]


@pytest.mark.parametrize(
    ("name", "raw", "path", "expected"),
    [
        ("STATEKIT_URL", "memory://", ("url",), "memory://"),
        ("STATEKIT_MAX_VALUE_BYTES", "1024", ("max_value_bytes",), 1024),
        ("STATEKIT_ENABLE_VALIDATION", "0", ("enable_validation",), False),
        ("STATEKIT_ENABLE_FILE_FALLBACK", "yes", ("enable_file_fallback",), True),
        ("STATEKIT_LOG_LEVEL", "Warning", ("log_level",), "WARNING"),
        ("STATEKIT_DATABASE__DATABASE_TYPE", "MEMORY", ("database", "database_type"), "memory"),
        ("STATEKIT_DATABASE__SQLITE_PATH", "x.db", ("database", "sqlite_path"), "x.db"),
        ("STATEKIT_DATABASE__POSTGRES_HOST", "pg", ("database", "postgres_host"), "pg"),
        ("STATEKIT_DATABASE__POSTGRES_PASSWORD", "pw", ("database", "postgres_password"), "pw"),
        ("STATEKIT_DATABASE__INFLUXDB_TOKEN", "tk", ("database", "influxdb_token"), "tk"),
        ("STATEKIT_API__API_KEY", "key", ("api", "api_key"), "key"),
        ("STATEKIT_API__CORS_ORIGINS", "https://a, https://b", ("api", "cors_origins"), TWO),
        ("STATEKIT_API__CORS_ORIGINS", '["https://a"]', ("api", "cors_origins"), ["https://a"]),
        ("STATEKIT_CACHE__ENABLED", "on", ("cache", "enabled"), True),
        ("STATEKIT_CACHE__TTL_SECONDS", "60", ("cache", "ttl_seconds"), 60),
        ("STATEKIT_CACHE__MAX_SIZE", "10", ("cache", "max_size"), 10),
        ("STATEKIT_PLUGINS__DISABLE_AUTOLOAD", "1", ("plugins", "disable_autoload"), True),
        ("STATEKIT_PLUGINS__BLOCKED", "a,b", ("plugins", "blocked"), ["a", "b"]),
        ("STATEKIT_DISABLE_PLUGIN_AUTOLOAD", "true", ("plugins", "disable_autoload"), True),
        ("STATEKIT_BLOCKED_PLUGINS", " redis, ,mongodb ", ("plugins", "blocked"), RM),
        ("statekit_api__port", "9000", ("api", "port"), 9000),  # names match in any case
    ],
)
def test_statekit_env_name(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, path: tuple[str, ...], expected: object
) -> None:
    monkeypatch.setenv(name, raw)
    assert dig(load_settings(), path) == expected


def test_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKIT_URL", "")
    monkeypatch.setenv("STATEKIT_API__PORT", "")
    settings = load_settings()
    assert settings.url is None
    assert settings.api.port == 8000


def test_plugin_env_names_match_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKIT_BLOCKED_PLUGINS", "memory")
    monkeypatch.setenv("STATEKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    settings = load_settings()
    assert settings.plugins.blocked == ["memory"]
    assert settings.plugins.disable_autoload is True
    assert "memory" in PluginHost().blocked


def test_two_names_for_one_setting_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKIT_BLOCKED_PLUGINS", "a")
    monkeypatch.setenv("STATEKIT_PLUGINS__BLOCKED", "a")
    assert load_settings().plugins.blocked == ["a"]
    monkeypatch.setenv("STATEKIT_PLUGINS__BLOCKED", "b")
    with pytest.raises(ConfigError, match=r"both set plugins\.blocked") as err:
        load_settings()
    assert "STATEKIT_BLOCKED_PLUGINS" in str(err.value)
    assert "STATEKIT_PLUGINS__BLOCKED" in str(err.value)


def test_env_list_that_is_bad_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKIT_API__CORS_ORIGINS", '["https://a",')
    with pytest.raises(ConfigError, match=r"^STATEKIT_API__CORS_ORIGINS: not a JSON array") as err:
        load_settings()
    assert err.value.source == "STATEKIT_API__CORS_ORIGINS"


def test_unknown_statekit_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment is shared with plugins and other tools; only config.json is strict.
    monkeypatch.setenv("STATEKIT_POSTGRES_POOL_SIZE", "5")
    assert load_settings().store_url() == "sqlite:///statekit.db"


# --- config.json ------------------------------------------------------------------------


def test_seed_config_json_loads(tmp_path: Path) -> None:
    write(tmp_path / "config.json", SEED_CONFIG_JSON)
    settings = load_settings()
    db = settings.database
    assert db.database_type == "influxdb"
    assert db.influxdb_url == "http://localhost:8086"
    assert db.influxdb_token.get_secret_value() == "your-token"
    assert (db.influxdb_org, db.influxdb_bucket) == ("trading-org", "trading-states")
    assert (settings.api.enabled, settings.api.host, settings.api.port) == (True, "0.0.0.0", 8000)
    assert (settings.cache.enabled, settings.cache.ttl_seconds, settings.cache.max_size) == (
        True,
        300,
        1000,
    )
    assert settings.enable_validation is True
    assert settings.enable_file_fallback is True
    assert settings.log_level == "INFO"
    assert settings.store_url() == (
        "influxdb://localhost:8086/trading-states?org=trading-org&token=your-token"
    )


def test_config_json_statekit_keys(tmp_path: Path) -> None:
    write(
        tmp_path / "config.json",
        json.dumps({"url": "memory://", "max_value_bytes": 10, "plugins": {"blocked": ["x"]}}),
    )
    settings = load_settings()
    assert settings.store_url() == "memory://"
    assert settings.max_value_bytes == 10
    assert settings.plugins.blocked == ["x"]


def test_config_file_argument(tmp_path: Path) -> None:
    write(tmp_path / "config.json", json.dumps({"log_level": "ERROR"}))
    other = write(tmp_path / "other.json", json.dumps({"log_level": "DEBUG"}))
    assert load_settings().log_level == "ERROR"
    assert load_settings(config_file=other).log_level == "DEBUG"
    assert load_settings(config_file=str(other)).log_level == "DEBUG"


def test_config_file_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / "config.json", json.dumps({"log_level": "ERROR"}))
    other = write(tmp_path / "other.json", json.dumps({"log_level": "DEBUG"}))
    monkeypatch.setenv("STATEKIT_CONFIG_FILE", str(other))
    assert load_settings().log_level == "DEBUG"


def test_config_file_named_in_dotenv(tmp_path: Path) -> None:
    write(tmp_path / "cfg.json", json.dumps({"log_level": "DEBUG"}))
    write(tmp_path / ".env", "STATEKIT_CONFIG_FILE=cfg.json\n")
    assert load_settings().log_level == "DEBUG"


def test_config_file_named_empty_reads_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(tmp_path / "config.json", '{"someone_elses": "file"}')
    assert load_settings(config_file="").log_level == "INFO"
    monkeypatch.setenv("STATEKIT_CONFIG_FILE", "")
    assert load_settings().log_level == "INFO"


@pytest.mark.parametrize("how", ["argument", "env"])
def test_missing_named_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    missing = tmp_path / "nope.json"
    if how == "env":
        monkeypatch.setenv("STATEKIT_CONFIG_FILE", str(missing))
    with pytest.raises(ConfigError, match="no such file") as err:
        load_settings(config_file=missing if how == "argument" else None)
    assert str(missing) in str(err.value)
    assert err.value.source == str(missing)
    assert ("STATEKIT_CONFIG_FILE" in str(err.value)) is (how == "env")


def test_no_config_json_is_fine() -> None:
    assert load_settings().database.database_type == "sqlite"


def test_corrupt_json_names_file_line_and_column(tmp_path: Path) -> None:
    write(tmp_path / "config.json", '{\n  "log_level": "INFO",\n  "api": {"port": 1 "x": 2}\n}\n')
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == "config.json line 3 column 21: Expecting ',' delimiter"
    assert err.value.source == "config.json"
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "config.json: the top level must be a JSON object {...}, not list"),
        ('"x"', "config.json: the top level must be a JSON object {...}, not str"),
        ("", "config.json line 1 column 1: Expecting value"),
    ],
)
def test_json_that_is_not_an_object(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "config.json", text)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == message


def test_json_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_bytes(b'{"log_level": "\xff"}')
    with pytest.raises(ConfigError, match=r"^config\.json: not UTF-8 text \(byte 15\)$"):
        load_settings()


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    with pytest.raises(ConfigError, match=r"conf\.d: not a file \(named by the config_file"):
        load_settings(config_file=tmp_path / "conf.d")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"databse": {}},
            "config.json: databse: unknown setting (did you mean 'database'?)",
        ),
        (
            {"database": {"postgres_prot": 5432}},
            "config.json: database.postgres_prot: unknown setting (did you mean 'postgres_port'?)",
        ),
        (
            {"cache": {"colour": "red"}},
            "config.json: cache.colour: unknown setting",
        ),
    ],
)
def test_unknown_keys_in_config_json_are_errors(
    tmp_path: Path, data: dict[str, Any], message: str
) -> None:
    cfg = write(tmp_path / "cfg.json", json.dumps(data))
    with pytest.raises(ConfigError) as err:
        load_settings(config_file="cfg.json")
    assert str(err.value) == message.replace("config.json", "cfg.json")
    assert err.value.source == "cfg.json"
    # The implicit ./config.json also says how to skip a file that is not statekit's.
    cfg.rename(tmp_path / "config.json")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(message)
    assert "set STATEKIT_CONFIG_FILE= (empty) to skip it" in str(err.value)


def test_legacy_keys_without_a_statekit_meaning_are_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path / "config.json",
        json.dumps(
            {
                "database": {"database_type": "postgresql", "connection_timeout": 60},
                "backup_retention_days": 30,
            }
        ),
    )
    with caplog.at_level(logging.INFO, logger="statekit.config"):
        settings = load_settings()
    assert settings.database.database_type == "postgresql"
    assert "ignoring legacy setting database.connection_timeout" in caplog.text
    assert "ignoring legacy setting backup_retention_days" in caplog.text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"database": {"postgres_port": "five"}},
            "config.json: database.postgres_port: Input should be a valid integer",
        ),
        ({"database": []}, "config.json: database: Input should be a valid dictionary"),
        ({"api": {"port": 70000}}, "config.json: api.port: Input should be less than or equal"),
        ({"cache": {"ttl_seconds": 0}}, "config.json: cache.ttl_seconds: Input should be greater"),
        ({"api": {"cors_origins": ["a", 1]}}, "config.json: api.cors_origins[1]: Input should"),
        ({"log_level": "LOUD"}, "config.json: log_level: Input should be 'DEBUG', 'INFO'"),
        ({"enable_validation": "maybe"}, "config.json: enable_validation: Input should be"),
    ],
)
def test_wrong_types_in_config_json(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    write(tmp_path / "config.json", json.dumps(data))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(message)
    assert err.value.source == "config.json"


# --- .env -------------------------------------------------------------------------------


def test_dotenv_default_file(tmp_path: Path) -> None:
    write(
        tmp_path / ".env",
        "# comment\nexport TRADING_STATE_DB_TYPE=postgresql\n"
        "STATEKIT_DATABASE__POSTGRES_HOST='pg.internal'\nUNRELATED=1\n",
    )
    settings = load_settings()
    assert settings.database.database_type == "postgresql"
    assert settings.database.postgres_host == "pg.internal"
    assert "UNRELATED" not in os.environ
    assert "TRADING_STATE_DB_TYPE" not in os.environ  # .env is read, never exported


def test_dotenv_statekit_name_beats_legacy_name(tmp_path: Path) -> None:
    write(
        tmp_path / ".env",
        "STATEKIT_DATABASE__POSTGRES_HOST=new\nTRADING_STATE_POSTGRES_HOST=old\n",
    )
    assert load_settings().database.postgres_host == "new"


def test_env_file_argument_and_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / ".env", "TRADING_STATE_LOG_LEVEL=ERROR\n")
    write(tmp_path / "a.env", "TRADING_STATE_LOG_LEVEL=DEBUG\n")
    write(tmp_path / "b.env", "TRADING_STATE_LOG_LEVEL=WARNING\n")
    assert load_settings().log_level == "ERROR"
    assert load_settings(env_file="a.env").log_level == "DEBUG"
    monkeypatch.setenv("STATEKIT_ENV_FILE", "b.env")
    assert load_settings().log_level == "WARNING"
    assert load_settings(env_file=tmp_path / "a.env").log_level == "DEBUG"
    assert load_settings(env_file="").log_level == "INFO"


def test_missing_named_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^missing\.env: no such file \(named by the env_file"):
        load_settings(env_file="missing.env")
    monkeypatch.setenv("STATEKIT_ENV_FILE", "gone.env")
    with pytest.raises(ConfigError, match=r"^gone\.env: no such file \(named by STATEKIT_ENV_FILE"):
        load_settings()


def test_dotenv_line_that_does_not_parse(tmp_path: Path) -> None:
    write(tmp_path / ".env", "TRADING_STATE_LOG_LEVEL=INFO\nthis is not an assignment\n")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == ".env line 2: not a NAME=value line"
    assert err.value.source == ".env"


def test_dotenv_wrong_type_names_file_and_variable(tmp_path: Path) -> None:
    write(tmp_path / ".env", "TRADING_STATE_API_PORT=eighty\n")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(".env: TRADING_STATE_API_PORT: Input should be a valid int")
    assert err.value.source == ".env"


# --- precedence -------------------------------------------------------------------------

# Highest first. Each layer sets database.postgres_host to its own name.
LAYERS = [
    "override",
    "STATEKIT env",
    "TRADING_STATE env",
    ".env STATEKIT",
    ".env TRADING_STATE",
    "config.json",
    "default",
]


def apply_layers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layers: list[str]) -> Settings:
    if "STATEKIT env" in layers:
        monkeypatch.setenv("STATEKIT_DATABASE__POSTGRES_HOST", "STATEKIT env")
    if "TRADING_STATE env" in layers:
        monkeypatch.setenv("TRADING_STATE_POSTGRES_HOST", "TRADING_STATE env")
    dotenv = ""
    if ".env STATEKIT" in layers:
        dotenv += "STATEKIT_DATABASE__POSTGRES_HOST='.env STATEKIT'\n"
    if ".env TRADING_STATE" in layers:
        dotenv += "TRADING_STATE_POSTGRES_HOST='.env TRADING_STATE'\n"
    write(tmp_path / ".env", dotenv)
    if "config.json" in layers:
        write(tmp_path / "config.json", json.dumps({"database": {"postgres_host": "config.json"}}))
    overrides: dict[str, Any] = {}
    if "override" in layers:
        overrides["database"] = {"postgres_host": "override"}
    return load_settings(**overrides)


@pytest.mark.parametrize("top", range(len(LAYERS)))
def test_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, top: int) -> None:
    """With every layer from LAYERS[top] down set, LAYERS[top] wins."""
    settings = apply_layers(monkeypatch, tmp_path, LAYERS[top:])
    expected = "localhost" if LAYERS[top] == "default" else LAYERS[top]
    assert settings.database.postgres_host == expected


@pytest.mark.parametrize("only", LAYERS[:-1])
def test_each_layer_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, only: str) -> None:
    assert apply_layers(monkeypatch, tmp_path, [only]).database.postgres_host == only


def test_sections_merge_across_layers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / "config.json", json.dumps({"database": {"postgres_db": "from_json"}}))
    write(tmp_path / ".env", "TRADING_STATE_POSTGRES_USER=from_dotenv\n")
    monkeypatch.setenv("TRADING_STATE_POSTGRES_HOST", "from_env")
    db = load_settings(database={"postgres_port": 6000}).database
    assert (db.postgres_db, db.postgres_user, db.postgres_host, db.postgres_port) == (
        "from_json",
        "from_dotenv",
        "from_env",
        6000,
    )


def test_error_names_the_source_that_won(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / "config.json", json.dumps({"api": {"port": "json-bad"}}))
    monkeypatch.setenv("TRADING_STATE_API_PORT", "env-bad")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == (
        "TRADING_STATE_API_PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    )
    assert err.value.source == "TRADING_STATE_API_PORT"
    with pytest.raises(ConfigError, match=r"^override api\.port: ") as err:
        load_settings(api={"port": "kw-bad"})
    assert err.value.source == "override"


def test_several_errors_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_STATE_POSTGRES_PORT", "x")
    monkeypatch.setenv("STATEKIT_CACHE__MAX_SIZE", "-1")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("TRADING_STATE_POSTGRES_PORT: Input should be a valid integer")
    assert "; STATEKIT_CACHE__MAX_SIZE: Input should be greater than 0" in message


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^override databse: unknown setting \(did you mean"):
        load_settings(databse={"database_type": "memory"})


# --- log level --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["debug", "Info", " WARNING ", "error", "critical"])
def test_log_level_any_case(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("TRADING_STATE_LOG_LEVEL", raw)
    assert load_settings().log_level == raw.strip().upper()


def test_log_level_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_STATE_LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == (
        "TRADING_STATE_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"
    )


# --- store_url --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        ({}, "sqlite:///statekit.db"),
        ({"database": {"sqlite_path": "data/state.db"}}, "sqlite:///data/state.db"),
        ({"database": {"sqlite_path": "/var/lib/sk.db"}}, "sqlite:////var/lib/sk.db"),
        ({"database": {"database_type": "memory"}}, "memory://"),
        (
            {"database": {"database_type": "postgresql"}},
            "postgresql://postgres@localhost:5432/statekit",
        ),
        (
            {
                "database": {
                    "database_type": "postgres",
                    "postgres_host": "db",
                    "postgres_port": 6543,
                    "postgres_db": "trading states",
                    "postgres_user": "ops@desk",
                    "postgres_password": "p@ss:w/rd%?#",
                }
            },
            "postgresql://ops%40desk:p%40ss%3Aw%2Frd%25%3F%23@db:6543/trading%20states",
        ),
        (
            {"database": {"database_type": "postgresql", "postgres_host": "::1"}},
            "postgresql://postgres@[::1]:5432/statekit",
        ),
        ({"database": {"database_type": "influxdb"}}, "influxdb://localhost:8086/statekit"),
        (
            {
                "database": {
                    "database_type": "influxdb",
                    "influxdb_url": "https://influx.example:443",
                    "influxdb_org": "my org",
                    "influxdb_token": "t/k=n&",
                    "influxdb_bucket": "b",
                }
            },
            "influxdbs://influx.example:443/b?org=my+org&token=t%2Fk%3Dn%26",
        ),
        (
            {"url": "redis://cache:6379/0", "database": {"database_type": "redis"}},
            "redis://cache:6379/0",
        ),
        (
            {"url": "mongodb://m/statekit", "database": {"database_type": "mongodb"}},
            "mongodb://m/statekit",
        ),
        ({"url": "memory://", "database": {"database_type": "postgresql"}}, "memory://"),
    ],
)
def test_store_url(overrides: dict[str, Any], url: str) -> None:
    assert load_settings(**overrides).store_url() == url


@pytest.mark.parametrize("kind", ["redis", "mongodb"])
def test_store_url_redis_and_mongodb_need_url(kind: str) -> None:
    settings = load_settings(database={"database_type": kind})
    with pytest.raises(ConfigError, match="set STATEKIT_URL") as err:
        settings.store_url()
    assert err.value.source == "url"


@pytest.mark.parametrize(
    "influxdb_url",
    ["localhost:8086", "ftp://h:1", "http://h:99999", "http://u:p@h:1", "http://h:1/api?x=1"],
)
def test_store_url_bad_influxdb_url(influxdb_url: str) -> None:
    settings = load_settings(
        database={"database_type": "influxdb", "influxdb_url": influxdb_url, "influxdb_token": "S"}
    )
    with pytest.raises(ConfigError, match=r"^database\.influxdb_url must") as err:
        settings.store_url()
    assert "S" not in str(err.value).replace("STATEKIT", "")  # the token stays out
    assert err.value.source == "database.influxdb_url"


def test_store_url_bad_sqlite_path() -> None:
    with pytest.raises(ConfigError, match="sqlite_path"):
        load_settings(database={"sqlite_path": "a?b.db"}).store_url()


def test_unknown_database_type_lists_allowed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_STATE_DB_TYPE", "oracle")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith("TRADING_STATE_DB_TYPE: Input should be ")
    assert all(f"'{kind}'" in message for kind in DATABASE_TYPES)
    # Validation bypassed: store_url() still refuses, listing the allowed values.
    monkeypatch.delenv("TRADING_STATE_DB_TYPE")
    settings = load_settings()
    settings.database = DatabaseSettings.model_construct(database_type="oracle")
    with pytest.raises(ConfigError, match="'oracle' is unknown; use one of sqlite, memory"):
        settings.store_url()


def test_statekit_open_uses_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_STATE_DB_TYPE", "memory")
    monkeypatch.setenv("STATEKIT_MAX_VALUE_BYTES", "1234")

    async def main() -> None:
        store = await statekit.open()
        try:
            assert isinstance(store.backend, MemoryBackend)
            assert store.max_value_bytes == 1234
        finally:
            await store.aclose()

    asyncio.run(main())


# --- secrets ----------------------------------------------------------------------------

SECRETS = {
    "url": "postgresql://u:URL-SECRET-1@h/db",
    "postgres_password": "PG-SECRET-2",
    "influxdb_token": "INFLUX-SECRET-3",
    "api_key": "API-SECRET-4",
}


def assert_no_secret(text: str) -> None:
    for secret in SECRETS.values():
        assert secret not in text
    assert "SECRET" not in text


def test_secrets_stay_out_of_repr_and_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STATEKIT_URL", SECRETS["url"])
    monkeypatch.setenv("TRADING_STATE_POSTGRES_PASSWORD", SECRETS["postgres_password"])
    write(tmp_path / ".env", f"TRADING_STATE_INFLUXDB_TOKEN={SECRETS['influxdb_token']}\n")
    write(tmp_path / "config.json", json.dumps({"api": {"api_key": SECRETS["api_key"]}}))
    settings = load_settings()
    assert settings.url is not None
    assert settings.url.get_secret_value() == SECRETS["url"]
    assert settings.api.api_key is not None
    assert settings.api.api_key.get_secret_value() == SECRETS["api_key"]
    assert_no_secret(repr(settings))
    assert_no_secret(str(settings))
    assert_no_secret(repr(settings.database))
    assert_no_secret(settings.model_dump_json())
    masked = settings.masked()
    assert_no_secret(json.dumps(masked))  # also proves it is JSON-able
    assert masked["url"] == "***"
    assert masked["database"]["postgres_password"] == "***"
    assert masked["database"]["influxdb_token"] == "***"
    assert masked["api"]["api_key"] == "***"
    assert masked["api"]["host"] == "127.0.0.1"  # the rest is shown as is


def test_masked_tells_unset_and_empty_secrets_apart() -> None:
    masked = load_settings().masked()
    assert masked["url"] is None
    assert masked["api"]["api_key"] is None
    assert masked["database"]["postgres_password"] == ""
    assert masked["database"]["influxdb_token"] == ""


def test_secrets_stay_out_of_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A secret given where a number belongs, and wrong types for the secrets themselves.
    monkeypatch.setenv("TRADING_STATE_POSTGRES_PORT", SECRETS["postgres_password"])
    write(
        tmp_path / "config.json",
        json.dumps({"api": {"api_key": 1234567, "port": SECRETS["api_key"]}}),
    )
    with pytest.raises(ConfigError) as err:
        load_settings(url=["x", SECRETS["url"]])
    message = str(err.value)
    assert_no_secret(message)
    assert_no_secret(repr(err.value))
    assert "1234567" not in message
    assert "override url: Input should be a valid string" in message
    assert "TRADING_STATE_POSTGRES_PORT: Input should be a valid integer" in message
    assert "config.json: api.api_key: Input should be a valid string" in message
    # pydantic's own error (which quotes inputs) is neither the cause nor shown as context.
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__


def test_secrets_stay_out_of_json_syntax_errors(tmp_path: Path) -> None:
    write(tmp_path / "config.json", '{"api": {"api_key": "API-SECRET-4" "port": 1}}')
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert_no_secret(str(err.value))
    assert str(err.value) == "config.json line 1 column 36: Expecting ',' delimiter"


def test_secrets_stay_out_of_logs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRADING_STATE_POSTGRES_PASSWORD", SECRETS["postgres_password"])
    write(tmp_path / "config.json", json.dumps({"backup_retention_days": 1}))
    with caplog.at_level(logging.DEBUG):
        load_settings().store_url()
    assert caplog.records  # the ignored legacy key was logged
    assert_no_secret(caplog.text)


def test_secrets_stay_out_of_pydantic_settings_debug_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PYDANTIC_SETTINGS_DEBUG", "1")
    monkeypatch.setenv("STATEKIT_URL", SECRETS["url"])
    write(tmp_path / ".env", f"TRADING_STATE_POSTGRES_PASSWORD={SECRETS['postgres_password']}\n")
    write(tmp_path / "config.json", json.dumps({"api": {"api_key": SECRETS["api_key"]}}))
    overrides: dict[str, Any] = {"database": {"influxdb_token": SECRETS["influxdb_token"]}}
    with caplog.at_level(logging.DEBUG, logger="pydantic_settings"):
        settings = load_settings(**overrides)
    assert "Resolving settings" in caplog.text
    assert ".env TRADING_STATE_*" in caplog.text  # each source is named in it
    assert_no_secret(caplog.text)
    assert settings.database.influxdb_token.get_secret_value() == SECRETS["influxdb_token"]
    assert overrides == {"database": {"influxdb_token": SECRETS["influxdb_token"]}}  # untouched


def test_assigned_secret_becomes_secretstr() -> None:
    settings = load_settings()
    settings.api.api_key = "API-SECRET-4"  # type: ignore[assignment]
    assert isinstance(settings.api.api_key, SecretStr)
    assert_no_secret(repr(settings))
    assert settings.masked()["api"]["api_key"] == "***"


# --- docs -------------------------------------------------------------------------------


def test_every_setting_and_name_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    names = [*LEGACY_ENV_NAMES, "STATEKIT_CONFIG_FILE", "STATEKIT_ENV_FILE"]
    names += ["STATEKIT_DISABLE_PLUGIN_AUTOLOAD", "STATEKIT_BLOCKED_PLUGINS"]
    for name, info in Settings.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            assert f"### `{name}`" in doc
            for sub in section.model_fields:
                assert f"| `{sub}`" in doc, f"{name}.{sub}"
                names.append(f"STATEKIT_{name}__{sub}".upper())
        else:
            assert f"| `{name}`" in doc, name
            names.append(f"STATEKIT_{name}".upper())
    for variable in names:
        assert f"`{variable}`" in doc, variable
