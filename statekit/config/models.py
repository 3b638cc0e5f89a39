"""statekit's settings: what each one means, and the store URL they give.

:class:`Settings` and its sections are pydantic models whose defaults are the lowest
source; :func:`load_settings` fills them from every other source in precedence order
(:mod:`statekit.config.sources`). Every problem is a :class:`statekit.errors.ConfigError`
with one line naming the file or variable and the setting. Secrets are
:class:`pydantic.SecretStr`: they never appear in ``repr()``, in errors, or in
:meth:`Settings.masked`.
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args
from urllib.parse import quote, urlencode, urlsplit

import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from statekit.config.load import LOAD, Load, config_error
from statekit.config.sources import settings_sources
from statekit.errors import ConfigError
from statekit.redact import redact_url

__all__ = [
    "DATABASE_TYPES",
    "DEFAULT_MAX_VALUE_BYTES",
    "LOG_LEVELS",
    "ApiSettings",
    "CacheSettings",
    "DatabaseSettings",
    "PluginSettings",
    "Settings",
    "load_settings",
]

DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024

DatabaseType = Literal["sqlite", "memory", "postgresql", "postgres", "influxdb", "redis", "mongodb"]
DATABASE_TYPES: tuple[str, ...] = get_args(DatabaseType)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


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
    metrics: bool = True
    """Count and time store operations and HTTP requests for ``GET /metrics`` (a few
    microseconds per request). Off: ``/metrics`` serves only what is read at scrape time."""


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
    log_format: Literal["text", "json"] = "text"
    """How ``statekit serve`` writes its log: text lines, or JSON lines with the request
    id (docs/operations.md, "Logs")."""
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)

    def __init__(self, **values: Any) -> None:
        load = LOAD.get()
        token = LOAD.set(Load()) if load is None else None
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            # pydantic's own text quotes the input values, secrets included: rebuild it.
            # `from None` keeps that text out of tracebacks too.
            raise config_error(exc, LOAD.get() or Load(), type(self)) from None
        finally:
            if token is not None:
                LOAD.reset(token)

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
        """Our sources in precedence order (:mod:`statekit.config.sources`);
        pydantic-settings' env/.env/secrets sources are unused."""
        return settings_sources(settings_cls, init_settings, LOAD.get() or Load())

    def store_url(self) -> str:
        """The URL :func:`statekit.open` uses when given none.

        ``url`` when set, else one built from ``database``. It may hold a password or
        token: pass it on, never log it (use :func:`statekit.redact.redact_url`).
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
    load = Load(
        config_file=config_file,
        env_file=env_file,
        environ=dict(os.environ),
    )
    token = LOAD.set(load)
    try:
        return Settings(**overrides)
    finally:
        LOAD.reset(token)


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
