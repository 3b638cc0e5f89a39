"""The ``postgresql://`` URL: statekit's own options, and the DSN asyncpg gets.

statekit's options (``namespace``, ``schema``, ``pool_min``...) are taken out of
the query; the libpq/asyncpg parameters asyncpg understands (``sslmode``,
``host=/socket/dir``...) stay in the DSN. Anything else is a ConfigError, so a
misspelt option is reported instead of being sent to the server as a setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from statekit import codec
from statekit.errors import ConfigError
from statekit.kit import StoreUrl

__all__ = [
    "DEFAULT_NAMESPACE",
    "DRIVER_PARAMS",
    "READ_FROM",
    "SESSION_ATTRS",
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
        "read",
        "standby_wait",
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

READ_FROM = ("primary", "standby")
"""Where ``?read=`` sends history, scan and as-of reads (:class:`PostgresOptions`)."""

SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
"""The ``target_session_attrs`` values asyncpg knows."""

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_namespace(namespace: str, where: str) -> str:
    """``namespace`` if it is a valid namespace name (statekit's one rule), else ConfigError."""
    return codec.check_namespace(namespace, backend="postgresql", where=where)


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
    :param read: ``primary`` (the default): every call goes to the server the URL's
        ``target_session_attrs`` picks. ``standby``: history (``read``), ``scan`` and
        ``as_of`` go through a second pool that prefers a standby
        (``target_session_attrs=prefer-standby``), with read-your-writes
        (:class:`statekit_postgres.pool.StandbyReads`); ``latest`` (what a CAS and
        ``update`` read), watch, ``changed`` and every write stay on the primary.
    :param standby_wait: seconds a standby read waits for the standby to replay this
        backend's own last write before it reads from the primary instead (0: never wait).
    :param password: the password (in the URL's user part or its ``password=``), unquoted.
    :param url: the URL as given (for the DriverGuard, which masks its secrets; never
        show it).
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
    read: str = "primary"
    standby_wait: float = 0.1
    password: str | None = field(default=None, repr=False)
    url: str = field(default="", repr=False)

    @classmethod
    def for_pool(cls, namespace: str) -> PostgresOptions:
        """Options of a backend built on a caller's pool (no URL of its own)."""
        return cls(dsn="", shown="<asyncpg pool>", namespace=check_namespace(namespace, "pool"))

    @classmethod
    def parse(cls, url: str) -> PostgresOptions:
        """Split ``url`` into statekit's options and the DSN; ConfigError when invalid."""
        u = StoreUrl.parse(
            url,
            backend="postgresql",
            schemes=("postgresql", "postgres"),
            options=STATEKIT_PARAMS,
            driver_options=DRIVER_PARAMS,
            example="postgresql://user:password@host:port/database?namespace=...",
            multi_host=True,
        )
        driver = dict(u.driver)
        options: dict[str, Any] = {"namespace": u.namespace()}
        if "schema" in u.options:
            schema = u.options["schema"]
            if not _SCHEMA.fullmatch(schema):
                raise u.invalid(
                    "schema",
                    schema,
                    "must be a lower-case identifier (a-z 0-9 _, at most 63 characters, "
                    "not starting with a digit)",
                )
            options["schema"] = schema
        pool_min = u.integer("pool_min", 1)
        pool_max = u.integer("pool_max", max(10, pool_min))
        if pool_max < 1 or pool_min > pool_max:
            raise ConfigError(
                f"postgresql URL {u.shown!r}: need 0 <= pool_min <= pool_max and pool_max >= 1 "
                f"(got pool_min={pool_min}, pool_max={pool_max})",
                source="url",
            )
        options["pool_min"], options["pool_max"] = pool_min, pool_max
        options["statement_timeout"] = u.seconds("statement_timeout", 0.0)
        options["connect_timeout"] = u.seconds("connect_timeout", 10.0, zero=False)
        if "command_timeout" in u.options:
            options["command_timeout"] = u.seconds("command_timeout", 0.0, zero=False)
        options["read"] = u.choice("read", "primary", READ_FROM)
        options["standby_wait"] = u.seconds("standby_wait", 0.1, maximum=60.0)
        attrs = driver.get("target_session_attrs")
        if attrs is not None and attrs not in SESSION_ATTRS:
            raise u.invalid(
                "target_session_attrs", attrs, f"must be one of {', '.join(SESSION_ATTRS)}"
            )
        if "application_name" in driver:
            options["application_name"] = driver["application_name"]
        dsn = u.driver_url(scheme="postgresql", drop=("application_name",))
        password = driver.get("password", u.password) or None
        return cls(dsn=dsn, shown=u.shown, password=password, url=url, **options)

    def connect_kwargs(self, *, standby: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``asyncpg.create_pool``.

        :param standby: for the pool of standby reads (``?read=standby``): the same
            hosts, ``target_session_attrs=prefer-standby`` (asyncpg then takes the
            first host in recovery, else any that answers).
        """
        settings = {"application_name": self.application_name}
        if self.statement_timeout:
            settings["statement_timeout"] = str(max(1, round(self.statement_timeout * 1000)))
        if self.schema is not None:
            settings["search_path"] = self.schema
        kwargs: dict[str, Any] = {
            "dsn": self.dsn,
            "timeout": self.connect_timeout,
            "command_timeout": self.command_timeout,
            "server_settings": settings,
        }
        if standby:
            kwargs["target_session_attrs"] = "prefer-standby"  # wins over the DSN's
        return kwargs
