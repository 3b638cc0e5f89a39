"""statekit's settings: where they come from, what they mean, and the store URL they give.

Sources, highest precedence first (docs/configuration.md has the full table):

1. keyword overrides given to :func:`load_settings`
2. ``STATEKIT_*`` process environment variables
3. legacy ``TRADING_STATE_*`` process environment variables
4. the ``.env`` file (its ``STATEKIT_*`` names over its ``TRADING_STATE_*`` names)
5. ``config.json`` (the legacy product's format)
6. defaults

Every problem is a :class:`statekit.errors.ConfigError` with one line naming the file
or variable and the setting. Secrets are :class:`pydantic.SecretStr`: they never appear
in ``repr()``, in errors, or in :meth:`Settings.masked`.
"""

from __future__ import annotations

import difflib
import functools
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import quote, urlencode, urlsplit

import pydantic
import pydantic_core
from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from statekit.codec import redact_url
from statekit.errors import ConfigError

__all__ = [
    "DATABASE_TYPES",
    "DEFAULT_MAX_VALUE_BYTES",
    "LEGACY_ENV_NAMES",
    "LOG_LEVELS",
    "ApiSettings",
    "CacheSettings",
    "DatabaseSettings",
    "PluginSettings",
    "Settings",
    "load_settings",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024

DatabaseType = Literal["sqlite", "memory", "postgresql", "postgres", "influxdb", "redis", "mongodb"]
DATABASE_TYPES: tuple[str, ...] = get_args(DatabaseType)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

ENV_PREFIX = "STATEKIT_"
CONFIG_FILE_VAR = "STATEKIT_CONFIG_FILE"
ENV_FILE_VAR = "STATEKIT_ENV_FILE"
DEFAULT_CONFIG_FILE = "config.json"
DEFAULT_ENV_FILE = ".env"

Path_ = tuple[str, ...]

LEGACY_ENV_NAMES: Mapping[str, Path_] = {
    "TRADING_STATE_DB_TYPE": ("database", "database_type"),
    "TRADING_STATE_POSTGRES_HOST": ("database", "postgres_host"),
    "TRADING_STATE_POSTGRES_PORT": ("database", "postgres_port"),
    "TRADING_STATE_POSTGRES_DB": ("database", "postgres_db"),
    "TRADING_STATE_POSTGRES_USER": ("database", "postgres_user"),
    "TRADING_STATE_POSTGRES_PASSWORD": ("database", "postgres_password"),
    "TRADING_STATE_INFLUXDB_URL": ("database", "influxdb_url"),
    "TRADING_STATE_INFLUXDB_TOKEN": ("database", "influxdb_token"),
    "TRADING_STATE_INFLUXDB_ORG": ("database", "influxdb_org"),
    "TRADING_STATE_INFLUXDB_BUCKET": ("database", "influxdb_bucket"),
    "TRADING_STATE_API_ENABLED": ("api", "enabled"),
    "TRADING_STATE_API_HOST": ("api", "host"),
    "TRADING_STATE_API_PORT": ("api", "port"),
    "TRADING_STATE_ENABLE_VALIDATION": ("enable_validation",),
    "TRADING_STATE_ENABLE_FILE_FALLBACK": ("enable_file_fallback",),
    "TRADING_STATE_LOG_LEVEL": ("log_level",),
}
"""The legacy product's environment variables and the setting each one sets."""

# Short names kept identical to the ones statekit/host.py reads from the environment.
_STATEKIT_ALIASES: Mapping[str, Path_] = {
    "STATEKIT_DISABLE_PLUGIN_AUTOLOAD": ("plugins", "disable_autoload"),
    "STATEKIT_BLOCKED_PLUGINS": ("plugins", "blocked"),
}

# Keys the legacy product's config.json could hold that statekit has no use for. They are
# accepted (and logged) so an existing file keeps loading; any other unknown key is an error.
_LEGACY_IGNORED_KEYS: frozenset[Path_] = frozenset(
    {
        ("database", "connection_timeout"),
        ("database", "retry_attempts"),
        ("backup_retention_days",),
    }
)


class _Section(BaseModel):
    # extra="forbid": a misspelt key ("databse", "postgres_prot") is reported, not
    # silently ignored while the default is used in its place.
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


class DatabaseSettings(_Section):
    """Which database :meth:`Settings.store_url` points at, when ``url`` is not set."""

    database_type: DatabaseType = "sqlite"
    """sqlite, memory, postgresql (or postgres), influxdb, redis or mongodb."""
    sqlite_path: str = "statekit.db"
    """The SQLite file, relative to the working directory unless absolute."""
    postgres_host: str = "localhost"
    """PostgreSQL server host."""
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    """PostgreSQL server port."""
    postgres_db: str = "statekit"
    """PostgreSQL database name."""
    postgres_user: str = "postgres"
    """PostgreSQL user."""
    postgres_password: SecretStr = SecretStr("")
    """PostgreSQL password (secret); empty means none (e.g. peer auth or ~/.pgpass)."""
    influxdb_url: str = "http://localhost:8086"
    """InfluxDB server URL, http:// or https://."""
    influxdb_token: SecretStr = SecretStr("")
    """InfluxDB API token (secret)."""
    influxdb_org: str = ""
    """InfluxDB organisation."""
    influxdb_bucket: str = "statekit"
    """InfluxDB bucket."""

    @field_validator("database_type", mode="before")
    @classmethod
    def _lower_type(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    def get_connection_config(self) -> dict[str, Any]:
        """The settings of the chosen database type, for troubleshooting (seed 003).

        Secrets are ``"***"`` when set and ``""`` when empty: safe to print.
        """
        fields = {
            "sqlite": ("sqlite_path",),
            "postgresql": (
                "postgres_host",
                "postgres_port",
                "postgres_db",
                "postgres_user",
                "postgres_password",
            ),
            "influxdb": ("influxdb_url", "influxdb_org", "influxdb_bucket", "influxdb_token"),
        }.get("postgresql" if self.database_type == "postgres" else self.database_type, ())
        masked = _masked(self)
        return {"database_type": self.database_type, **{name: masked[name] for name in fields}}


class ApiSettings(_Section):
    """The REST/WebSocket API (``statekit serve``)."""

    enabled: bool = False
    """Start the API with the store."""
    host: str = "127.0.0.1"
    """Interface to bind. Loopback by default: exposing it is an explicit choice."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port to bind."""
    api_key: SecretStr | None = None
    """Key clients must send (secret). None: no key is configured."""
    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed by CORS. Empty: CORS closed."""
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    """Largest request body the API accepts (413 above it)."""


class CacheSettings(_Section):
    """The read cache in front of the store."""

    enabled: bool = False
    """Cache reads. Off by default: another process's writes are seen only after ttl."""
    ttl_seconds: int = Field(default=300, gt=0)
    """How long a cached read is served."""
    max_size: int = Field(default=1000, gt=0)
    """How many keys the cache holds."""
    shared_url: SecretStr | None = None
    """A cache shared by processes, asked after the in-process one (e.g. ``redis://host/0``;
    secret: it may hold a password). Used only when ``enabled``."""


class PluginSettings(_Section):
    """Which plugins the host loads."""

    disable_autoload: bool = False
    """Do not load plugins from the ``statekit`` entry-point group."""
    blocked: list[str] = Field(default_factory=list)
    """Plugin names never to load, built-ins included."""


class Settings(BaseSettings):
    """statekit's effective settings. Build them with :func:`load_settings`.

    ``Settings(**overrides)`` reads the same sources as ``load_settings(**overrides)``
    with the default file locations, and raises :class:`ConfigError` the same way.
    """

    model_config = SettingsConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )

    url: SecretStr | None = None
    """Store URL (secret: it may hold a password). Set, it wins over ``database``."""
    max_value_bytes: int = Field(default=DEFAULT_MAX_VALUE_BYTES, gt=0)
    """Largest encoded value the store accepts."""
    enable_validation: bool = True
    """Run the registered validators before every write."""
    enable_file_fallback: bool = False
    """Journal writes to a local file when the database is unreachable."""
    fallback_path: str = "statekit-fallback.db"
    """The fallback journal's SQLite file (one per process), when the fallback is on."""
    mirrors: list[str] = Field(default_factory=list)
    """Store URLs every committed version is copied to (write-behind), e.g. InfluxDB."""
    log_level: LogLevel = "INFO"
    """DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."""
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)

    def __init__(self, **values: Any) -> None:
        load = _LOAD.get()
        token = _LOAD.set(_Load()) if load is None else None
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            # pydantic's own text quotes the input values, secrets included: rebuild it.
            # `from None` keeps that text out of tracebacks too.
            raise _config_error(exc, _LOAD.get() or _Load()) from None
        finally:
            if token is not None:
                _LOAD.reset(token)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Our sources in precedence order; pydantic-settings' env/.env/secrets are unused."""
        load = _LOAD.get() or _Load()
        env_file = _pick_file(
            load.env_file, ENV_FILE_VAR, load.environ, {}, DEFAULT_ENV_FILE, "env_file"
        )
        dotenv = _read_dotenv(env_file.path) if env_file else {}
        config_file = _pick_file(
            load.config_file,
            CONFIG_FILE_VAR,
            load.environ,
            dotenv,
            DEFAULT_CONFIG_FILE,
            "config_file",
        )
        statekit_names = _statekit_names(settings_cls)
        return (
            _OverridesSource(settings_cls, init_settings, load),
            _VariablesSource(settings_cls, load, load.environ, statekit_names, "STATEKIT_*"),
            _VariablesSource(settings_cls, load, load.environ, LEGACY_ENV_NAMES, "TRADING_STATE_*"),
            _VariablesSource(settings_cls, load, dotenv, statekit_names, "STATEKIT_*", env_file),
            _VariablesSource(
                settings_cls, load, dotenv, LEGACY_ENV_NAMES, "TRADING_STATE_*", env_file
            ),
            _JsonFileSource(settings_cls, load, config_file),
        )

    def store_url(self) -> str:
        """The URL :func:`statekit.open` uses when given none.

        ``url`` when set, else one built from ``database``. It may hold a password or
        token: pass it on, never log it (use :func:`statekit.codec.redact_url`).
        """
        if self.url is not None and self.url.get_secret_value():
            return self.url.get_secret_value()
        db = self.database
        kind = db.database_type
        if kind == "sqlite":
            if not db.sqlite_path or any(c in db.sqlite_path for c in "?#"):
                raise ConfigError(
                    "database.sqlite_path must name a file and hold no '?' or '#'",
                    source="database.sqlite_path",
                )
            return f"sqlite:///{db.sqlite_path}"
        if kind == "memory":
            return "memory://"
        if kind in ("postgresql", "postgres"):
            return _postgres_url(db)
        if kind == "influxdb":
            return _influxdb_url(db)
        if kind in ("redis", "mongodb"):
            raise ConfigError(
                f"database.database_type is {kind!r}, which is configured by url alone: "
                f"set STATEKIT_URL (e.g. {kind}://localhost/...)",
                source="url",
            )
        # Only reachable when validation was bypassed (model_construct).
        raise ConfigError(
            f"database.database_type {kind!r} is unknown; use one of {', '.join(DATABASE_TYPES)}",
            source="database.database_type",
        )

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON-able data, for ``statekit doctor``.

        Every secret is ``"***"`` when set, ``""`` when set to empty and ``None`` when
        unset, so the output tells whether a secret is configured, never what it is.
        """
        return _masked(self)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Settings:
    """statekit's settings from overrides, environment, ``.env``, ``config.json``, defaults.

    :param config_file: the JSON file to read. Default: ``$STATEKIT_CONFIG_FILE``, else
        ``./config.json`` when it exists. A named file that does not exist is an error;
        ``""`` reads none.
    :param env_file: the ``.env`` file to read. Default: ``$STATEKIT_ENV_FILE``, else
        ``./.env`` when it exists. Same rules as ``config_file``.
    :param overrides: settings that win over every source, e.g. ``url="memory://"`` or
        ``database={"postgres_port": 5433}`` (merged into the other sources' section).
    :raises ConfigError: a file is missing or unreadable, or a setting is invalid.
    """
    load = _Load(
        config_file=config_file,
        env_file=env_file,
        environ=dict(os.environ),
    )
    token = _LOAD.set(load)
    try:
        return Settings(**overrides)
    finally:
        _LOAD.reset(token)


# --- one load: its inputs and where each value came from -------------------------------


@dataclass(frozen=True)
class _Origin:
    """Where a value came from, so an error can name the variable or file."""

    path: Path_
    prefix: str  # "", "<file>: ", "override "
    variable: str | None  # the variable's name; None: name the setting instead
    source: str  # ConfigError.source
    implicit_file: bool = False  # from ./config.json found by looking, not named by anyone

    def label(self, loc: tuple[int | str, ...]) -> str:
        return f"{self.prefix}{self.variable or _dotted(loc)}"


@dataclass
class _Load:
    """The inputs of one settings load, shared with its sources.

    settings_customise_sources is a classmethod that receives no per-call arguments,
    so load_settings() hands over its files through a context variable (thread- and
    task-local, reset after the load) rather than class state.
    """

    config_file: str | os.PathLike[str] | None = None
    env_file: str | os.PathLike[str] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    origins: list[_Origin] = field(default_factory=list)  # highest precedence first

    def origin_of(self, loc: tuple[int | str, ...]) -> _Origin | None:
        for origin in self.origins:
            n = min(len(origin.path), len(loc))
            if origin.path[:n] == loc[:n]:
                return origin
        return None


_LOAD: ContextVar[_Load | None] = ContextVar("statekit_settings_load", default=None)


@dataclass(frozen=True)
class _File:
    path: Path
    implicit: bool  # found by looking in the working directory, not named by anyone


def _pick_file(
    explicit: str | os.PathLike[str] | None,
    variable: str,
    environ: Mapping[str, str],
    dotenv: Mapping[str, str | None],
    default: str,
    argument: str,
) -> _File | None:
    named: tuple[str, str] | None = None  # (path, who named it)
    if explicit is not None:
        named = (os.fspath(explicit), f"the {argument} argument")
    else:
        for where, variables in (("", environ), (" in .env", dotenv)):
            value = _lookup(variables, variable)
            if value is not None:
                named = (value, f"{variable}{where}")
                break
    if named is None:
        path = Path(default)
        return _File(path, implicit=True) if path.is_file() else None
    if named[0] == "":
        return None  # named as empty: read no file at all
    path = Path(named[0]).expanduser()
    if not path.is_file():
        problem = "not a file" if path.exists() else "no such file"
        raise ConfigError(f"{path}: {problem} (named by {named[1]})", source=os.fspath(path))
    return _File(path, implicit=False)


def _lookup(variables: Mapping[str, str | None], name: str) -> str | None:
    for key, value in variables.items():
        if key.upper() == name and value is not None:
            return value
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start})", source=os.fspath(path)
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read: {exc.strerror or exc}", source=os.fspath(path)
        ) from None


def _read_dotenv(path: Path) -> dict[str, str | None]:
    text = _read_text(path)
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(
                f"{path} line {binding.original.line}: not a NAME=value line",
                source=os.fspath(path),
            )
    return dotenv_values(stream=io.StringIO(text), interpolate=True)


def _read_json(file: _File) -> dict[str, Any]:
    text = _read_text(file.path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg only: exc.doc is the whole file, secrets included.
        raise ConfigError(
            f"{file.path} line {exc.lineno} column {exc.colno}: {exc.msg}",
            source=os.fspath(file.path),
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{file.path}: arrays or objects are nested too deeply to read",
            source=os.fspath(file.path),
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file.path}: the top level must be a JSON object {{...}}, not {type(data).__name__}",
            source=os.fspath(file.path),
        )
    return data


# --- the sources --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    path: Path_
    is_list: bool


@functools.cache
def _secret_paths(settings_cls: type[BaseModel]) -> frozenset[Path_]:
    """Where the SecretStr settings are (url, database.postgres_password...)."""
    paths: set[Path_] = set()

    def walk(model: type[BaseModel], path: Path_) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))
            elif annotation is SecretStr or SecretStr in get_args(annotation):
                paths.add((*path, name))

    walk(settings_cls, ())
    return frozenset(paths)


def _hide_secrets(data: Mapping[str, Any], secrets: frozenset[Path_]) -> dict[str, Any]:
    """A copy of ``data`` with every secret string already wrapped in SecretStr.

    So a source's output never holds a secret in plain text, not even in
    pydantic-settings' own debug log (PYDANTIC_SETTINGS_DEBUG=1).
    """
    out = dict(data)
    for path in secrets:
        parent: Any = out
        for key in path[:-1]:
            child = parent.get(key) if isinstance(parent, dict) else None
            if not isinstance(child, dict):
                break
            parent[key] = parent = dict(child)  # copy: never mutate the caller's overrides
        else:
            if isinstance(parent.get(path[-1]), str):
                parent[path[-1]] = SecretStr(parent[path[-1]])
    return out


@functools.cache
def _statekit_names(settings_cls: type[BaseSettings]) -> Mapping[str, _Target]:
    """STATEKIT_<FIELD> and STATEKIT_<SECTION>__<FIELD> for every setting, plus aliases."""
    names: dict[str, _Target] = {}

    def walk(model: type[BaseModel], path: Path_) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))
                continue
            full = (*path, name)
            names[ENV_PREFIX + "__".join(full).upper()] = _Target(
                full, get_origin(annotation) is list
            )

    walk(settings_cls, ())
    for alias, path in _STATEKIT_ALIASES.items():
        names[alias] = names[ENV_PREFIX + "__".join(path).upper()]
    return names


class _VariablesSource(PydanticBaseSettingsSource):
    """Settings from NAME=value variables: the process environment or a .env file.

    Names match case-insensitively; an empty value counts as unset. A list setting
    takes a JSON array or a comma-separated string.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        load: _Load,
        variables: Mapping[str, str | None],
        names: Mapping[str, _Target | Path_],
        kind: str,
        file: _File | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self._load = load
        self._variables = variables
        self._names = {
            name: t if isinstance(t, _Target) else _Target(t, is_list=False)
            for name, t in names.items()
        }
        self._file = file
        # pydantic-settings keys its per-source debug output by __name__.
        self.__name__ = f"{file.path if file else 'environment'} {kind}"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every variable at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = f"{self._file.path}: " if self._file else ""
        found: dict[Path_, tuple[str, str, _Target]] = {}
        for name, raw in self._variables.items():
            target = self._names.get(name.upper())
            if target is None or raw is None or raw == "":
                continue
            earlier = found.get(target.path)
            if earlier is not None and earlier[1] != raw:
                raise ConfigError(
                    f"{prefix}{earlier[0]} and {name} both set {_dotted(target.path)} "
                    "to different values; set only one",
                    source=os.fspath(self._file.path) if self._file else name,
                )
            found[target.path] = (name, raw, target)
        data: dict[str, Any] = {}
        for path, (name, raw, target) in sorted(found.items()):
            source = os.fspath(self._file.path) if self._file else name
            value: Any = _split_list(raw, f"{prefix}{name}", source) if target.is_list else raw
            _put(data, path, value)
            self._load.origins.append(_Origin(path, prefix, name, source))
        return _hide_secrets(data, _secret_paths(self.settings_cls))


def _split_list(raw: str, label: str, source: str) -> list[Any]:
    if raw.lstrip().startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{label}: not a JSON array (column {exc.colno}: {exc.msg})", source=source
            ) from None
        except RecursionError:
            raise ConfigError(f"{label}: nested too deeply to read", source=source) from None
        return list(value)  # a valid JSON text starting with "[" is an array
    return [part.strip() for part in raw.split(",") if part.strip()]


class _JsonFileSource(PydanticBaseSettingsSource):
    """Settings from config.json: the legacy product's sections and top-level keys."""

    def __init__(self, settings_cls: type[BaseSettings], load: _Load, file: _File | None):
        super().__init__(settings_cls)
        self._load = load
        self._file = file
        self.__name__ = f"{file.path if file else 'no config file'}"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads the whole file at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._file is None:
            return {}
        data = _read_json(self._file)
        for path in sorted(_LEGACY_IGNORED_KEYS):
            parent = _get(data, path[:-1])
            if isinstance(parent, dict) and path[-1] in parent:
                del parent[path[-1]]
                log.info("%s: ignoring legacy setting %s", self._file.path, _dotted(path))
        source = os.fspath(self._file.path)
        for path in _leaves(data):
            self._load.origins.append(
                _Origin(path, f"{self._file.path}: ", None, source, self._file.implicit)
            )
        return _hide_secrets(data, _secret_paths(self.settings_cls))


class _OverridesSource(PydanticBaseSettingsSource):
    """The keyword overrides (pydantic-settings' init source), remembered for errors."""

    def __init__(
        self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource, load: _Load
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._load = load
        self.__name__ = "overrides"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        for path in _leaves(data):
            self._load.origins.append(_Origin(path, "override ", None, "override"))
        return _hide_secrets(data, _secret_paths(self.settings_cls))


# --- helpers ------------------------------------------------------------------------------


def _put(data: dict[str, Any], path: Path_, value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def _get(data: Any, path: Path_) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _leaves(data: Mapping[str, Any], path: Path_ = ()) -> Iterator[Path_]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key)


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The setting names allowed where ``loc`` points (for "did you mean")."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _config_error(exc: pydantic.ValidationError, load: _Load) -> ConfigError:
    """One ConfigError naming, for each problem, the variable or file and the setting."""
    lines: list[str] = []
    sources: list[str] = []
    # include_input=False: the input may be a secret. pydantic's msg texts name the
    # expected type or allowed values, never the input.
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = tuple(error["loc"])
        origin = load.origin_of(loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            if origin is not None and origin.implicit_file:
                message += (
                    f"; if this {DEFAULT_CONFIG_FILE} is not statekit's, "
                    f"set {CONFIG_FILE_VAR}= (empty) to skip it"
                )
        lines.append(f"{origin.label(loc) if origin else _dotted(loc)}: {message}")
        sources.append(origin.source if origin else _dotted(loc))
    return ConfigError("; ".join(lines), source=sources[0] if sources else None)


def _masked(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            out[name] = "***" if value.get_secret_value() else ""
        elif name == "mirrors":  # URLs: a password in one is shown as ***
            out[name] = [redact_url(url) for url in value]
        elif isinstance(value, BaseModel):
            out[name] = _masked(value)
        else:
            out[name] = pydantic_core.to_jsonable_python(value)
    return out


def _postgres_url(db: DatabaseSettings) -> str:
    auth = quote(db.postgres_user, safe="")
    password = db.postgres_password.get_secret_value()
    if password:
        auth += ":" + quote(password, safe="")
    host = f"[{db.postgres_host}]" if ":" in db.postgres_host else db.postgres_host
    at = f"{auth}@" if auth else ""
    return f"postgresql://{at}{host}:{db.postgres_port}/{quote(db.postgres_db, safe='')}"


def _influxdb_url(db: DatabaseSettings) -> str:
    bad = ConfigError(
        "database.influxdb_url must be http://host:port or https://host:port",
        source="database.influxdb_url",
    )
    try:
        parts = urlsplit(db.influxdb_url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise bad from None
    netloc = parts.netloc
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in netloc:
        raise bad
    if parts.path.strip("/") or parts.query:
        raise ConfigError(
            "database.influxdb_url must not have a path or query; set url instead",
            source="database.influxdb_url",
        )
    query: dict[str, str] = {}
    if db.influxdb_org:
        query["org"] = db.influxdb_org
    if db.influxdb_token.get_secret_value():
        query["token"] = db.influxdb_token.get_secret_value()
    scheme = "influxdbs" if parts.scheme == "https" else "influxdb"  # TLS by scheme
    tail = f"?{urlencode(query)}" if query else ""
    return f"{scheme}://{netloc}/{quote(db.influxdb_bucket, safe='')}{tail}"
