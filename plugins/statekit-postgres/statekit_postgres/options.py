"""The ``postgresql://`` URL: statekit's own options, and the DSN asyncpg gets.

statekit's options (``namespace``, ``schema``, ``pool_min``...) are taken out of
the query; the libpq/asyncpg parameters asyncpg understands (``sslmode``,
``host=/socket/dir``...) stay in the DSN. Anything else is a ConfigError, so a
misspelt option is reported instead of being sent to the server as a setting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from statekit import codec
from statekit.codec import redact_url
from statekit.errors import ConfigError

__all__ = [
    "DEFAULT_NAMESPACE",
    "DRIVER_PARAMS",
    "STATEKIT_PARAMS",
    "PostgresOptions",
    "check_namespace",
]

DEFAULT_NAMESPACE = "default"

STATEKIT_PARAMS: frozenset[str] = frozenset(
    {
        "namespace",
        "schema",
        "pool_min",
        "pool_max",
        "statement_timeout",
        "connect_timeout",
        "command_timeout",
    }
)
"""Query parameters statekit reads itself and removes before connecting."""

DRIVER_PARAMS: frozenset[str] = frozenset(
    {
        "host",
        "port",
        "dbname",
        "database",
        "user",
        "password",
        "passfile",
        "service",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "application_name",
    }
)
"""Query parameters passed on to asyncpg (libpq's names; ``application_name`` is a
server setting asyncpg forwards)."""

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_namespace(namespace: str, where: str) -> str:
    """``namespace`` if it is a valid namespace name (statekit's one rule), else ConfigError."""
    return codec.check_namespace(namespace, backend="postgresql", where=where)


def _number(name: str, raw: str, shown: str, *, minimum: float, integer: bool) -> float:
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number of seconds"
        raise ConfigError(
            f"postgresql URL {shown!r}: {name}={raw!r} is not {kind}", source="url"
        ) from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(
            f"postgresql URL {shown!r}: {name}={raw!r} must be >= {minimum:g}", source="url"
        )
    return value


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """A parsed ``postgresql://`` URL.

    :param dsn: the URL without statekit's options, for asyncpg. It may hold a
        password: never print it (``shown`` is the redacted URL).
    :param shown: the whole URL with its password masked, for errors and doctor.
    :param namespace: whose keys these are; stores in other namespaces of the same
        database never see or touch them.
    :param schema: the PostgreSQL schema holding statekit's tables (created when
        missing); None = the connection's default (usually ``public``).
    :param pool_min: connections the pool keeps open.
    :param pool_max: connections the pool may open.
    :param statement_timeout: seconds a statement may run on the server (0 = no limit).
    :param connect_timeout: seconds to wait for a connection.
    :param command_timeout: seconds a call may wait for its answer on the client
        (None = no limit).
    :param password: the password in the URL, only to scrub it from driver messages.
    """

    dsn: str = field(repr=False)
    shown: str
    namespace: str = DEFAULT_NAMESPACE
    schema: str | None = None
    pool_min: int = 1
    pool_max: int = 10
    statement_timeout: float = 0.0
    connect_timeout: float = 10.0
    command_timeout: float | None = None
    application_name: str = "statekit"
    password: str | None = field(default=None, repr=False)

    @classmethod
    def for_pool(cls, namespace: str) -> PostgresOptions:
        """Options of a backend built on a caller's pool (no URL of its own)."""
        return cls(dsn="", shown="<asyncpg pool>", namespace=check_namespace(namespace, "pool"))

    @classmethod
    def parse(cls, url: str) -> PostgresOptions:
        """Split ``url`` into statekit's options and the DSN; ConfigError when invalid."""
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError on a bad port
            password = unquote(parts.password) if parts.password else None
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            raise ConfigError(
                f"postgresql URL {shown!r} is malformed; expected "
                "postgresql://user:password@host:port/database?namespace=...",
                source="url",
            ) from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(f"{shown!r} is not a postgresql:// or postgres:// URL", source="url")
        if parts.fragment:
            raise ConfigError(f"postgresql URL {shown!r} has a #fragment", source="url")
        ours: dict[str, str] = {}
        driver: list[tuple[str, str]] = []
        for name, value in pairs:
            if name in STATEKIT_PARAMS:
                if name in ours:
                    raise ConfigError(f"postgresql URL {shown!r} sets {name} twice", source="url")
                ours[name] = value
            elif name in DRIVER_PARAMS:
                driver.append((name, value))
            else:
                known = ", ".join(sorted(STATEKIT_PARAMS | DRIVER_PARAMS))
                raise ConfigError(
                    f"unknown postgresql URL option {name!r} in {shown!r}; known options: {known}",
                    source="url",
                )
        if "password" in dict(driver):
            password = dict(driver)["password"]

        options: dict[str, Any] = {}
        options["namespace"] = check_namespace(ours.get("namespace", DEFAULT_NAMESPACE), shown)
        if "schema" in ours:
            if not _SCHEMA.fullmatch(ours["schema"]):
                raise ConfigError(
                    f"postgresql URL {shown!r}: schema={ours['schema']!r} must be a lower-case "
                    "identifier (a-z 0-9 _, at most 63 characters, not starting with a digit)",
                    source="url",
                )
            options["schema"] = ours["schema"]
        for name in ("pool_min", "pool_max"):
            if name in ours:
                options[name] = int(_number(name, ours[name], shown, minimum=0, integer=True))
        pool_min = options.get("pool_min", 1)
        pool_max = options.get("pool_max", max(10, pool_min))
        if pool_max < 1 or pool_min > pool_max:
            raise ConfigError(
                f"postgresql URL {shown!r}: need 0 <= pool_min <= pool_max and pool_max >= 1 "
                f"(got pool_min={pool_min}, pool_max={pool_max})",
                source="url",
            )
        options["pool_min"], options["pool_max"] = pool_min, pool_max
        if "statement_timeout" in ours:
            options["statement_timeout"] = _number(
                "statement_timeout", ours["statement_timeout"], shown, minimum=0, integer=False
            )
        for name in ("connect_timeout", "command_timeout"):
            if name in ours:
                seconds = _number(name, ours[name], shown, minimum=0, integer=False)
                if seconds == 0:
                    raise ConfigError(
                        f"postgresql URL {shown!r}: {name} must be > 0 seconds", source="url"
                    )
                options[name] = seconds
        app = dict(driver).get("application_name")
        if app is not None:
            options["application_name"] = app
        driver = [(n, v) for n, v in driver if n != "application_name"]

        # Built by hand: urlunsplit drops the "//" of a URL without a host
        # (postgresql://user@/db?host=/socket/dir must keep it).
        query = urlencode(driver)
        dsn = f"postgresql://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
        return cls(dsn=dsn, shown=shown, password=password or None, **options)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``asyncpg.create_pool``."""
        settings = {"application_name": self.application_name}
        if self.statement_timeout:
            settings["statement_timeout"] = str(max(1, round(self.statement_timeout * 1000)))
        if self.schema is not None:
            settings["search_path"] = self.schema
        return {
            "dsn": self.dsn,
            "timeout": self.connect_timeout,
            "command_timeout": self.command_timeout,
            "server_settings": settings,
        }

    def scrub(self, text: str) -> str:
        """``text`` with the password masked, for messages built from driver errors."""
        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                text = text.replace(form, "***")
        return text
