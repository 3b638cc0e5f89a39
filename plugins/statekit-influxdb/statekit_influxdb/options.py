"""``influxdb://`` and ``influxdbs://`` URLs: where the server is, how to log in, what to use.

::

    influxdb://[user:password@]host[:port][/database][?namespace=..&token=..&org=..&...]
    influxdbs://...                 the same over HTTPS

The path is the database (an InfluxDB 2.x/3.x *bucket*); default ``statekit``, port
8086. Credentials are either ``user:password`` in the URL (HTTP basic auth, or the
``u``/``p`` query parameters with ``auth=params``) or ``token=`` (sent as
``Authorization: Token ...``, what InfluxDB 2.x's v1 API and 3.x expect). The legacy
``TRADING_STATE_INFLUXDB_URL/TOKEN/ORG/BUCKET`` settings become such a URL
(:func:`statekit.config.Settings.store_url`). Unknown options are a ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from statekit.errors import ConfigError
from statekit.kit import StoreUrl, with_options

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DATABASE",
    "DEFAULT_MEASUREMENT",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "OPTIONS",
    "InfluxOptions",
    "check_name",
    "database_url",
    "parse_url",
    "with_options",
]

DEFAULT_PORT = 8086
DEFAULT_DATABASE = "statekit"
DEFAULT_NAMESPACE = "default"
DEFAULT_MEASUREMENT = "statekit"
DEFAULT_TIMEOUT = 10.0
"""Seconds one HTTP request may take in all (a 1 MiB value included)."""
DEFAULT_CONNECT_TIMEOUT = 2.0
"""Seconds to wait for a TCP connection: short, so calls fail fast while the server is down."""

OPTIONS = frozenset(
    {
        "namespace",
        "measurement",
        "rp",
        "token",
        "org",
        "auth",
        "timeout",
        "connect_timeout",
        "create",
        "verify",
        "ca_file",
    }
)

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_name(value: str, what: str) -> str:
    """``value`` when it is a usable measurement name, else ConfigError (the same
    rule as namespaces, :func:`statekit.codec.check_namespace`).

    Names are 1-64 of ``A-Z a-z 0-9 _ . -``, so they need no escaping anywhere.
    """
    if not _NAME.fullmatch(value):
        raise ConfigError(
            f"influxdb {what} {value!r} must be 1-64 of A-Z a-z 0-9 _ . -", source="url"
        )
    return value


@dataclass(frozen=True, slots=True)
class InfluxOptions:
    """A parsed store URL.

    :param base_url: ``http(s)://host:port`` of the server.
    :param shown: the URL with secrets masked, for errors and ``doctor``.
    :param database: the database (2.x/3.x: the bucket) the points go to.
    :param namespace: the statekit namespace: the ``ns`` tag of every point.
    :param measurement: the measurement the points go to.
    :param retention_policy: the ``rp`` to write to and read from; None = the default.
    :param org: the 2.x organisation (informational: the v1 API takes it from the token).
    :param username: for basic auth or ``u``/``p`` parameters.
    :param password: see ``username``.
    :param token: sent as ``Authorization: Token <token>``.
    :param auth: ``basic`` (an Authorization header) or ``params`` (``u``/``p`` parameters).
    :param timeout: seconds one request may take in all.
    :param connect_timeout: seconds to wait for a connection.
    :param create_database: send ``CREATE DATABASE`` on open (a refusal is not an error).
    :param verify: check the server's TLS certificate.
    :param ca_file: CA bundle to check it with.
    :param url: the URL as given, whose secrets are scrubbed from driver text (never show it).
    """

    base_url: str
    shown: str
    database: str = DEFAULT_DATABASE
    namespace: str = DEFAULT_NAMESPACE
    measurement: str = DEFAULT_MEASUREMENT
    retention_policy: str | None = None
    org: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    auth: Literal["basic", "params"] = "basic"
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    create_database: bool = True
    verify: bool = True
    ca_file: str | None = None
    url: str = field(default="", repr=False)

    @property
    def tls(self) -> bool:
        return self.base_url.startswith("https://")

    def headers(self) -> dict[str, str]:
        """The Authorization header, if the credentials go in one."""
        if self.token:
            return {"Authorization": f"Token {self.token}"}
        return {}

    def credentials(self) -> tuple[str, str] | None:
        """(user, password) for HTTP basic auth, when that is how they are sent."""
        if self.username is not None and self.auth == "basic":
            return (self.username, self.password or "")
        return None

    def params(self) -> dict[str, str]:
        """Query parameters every request carries: ``db``, ``rp`` and ``u``/``p`` if asked."""
        out = {"db": self.database}
        if self.retention_policy:
            out["rp"] = self.retention_policy
        if self.username is not None and self.auth == "params":
            out["u"] = self.username
            out["p"] = self.password or ""
        return out


def parse_url(url: str) -> InfluxOptions:
    """Parse a store URL; ConfigError (never showing a secret) when it is bad."""
    u = StoreUrl.parse(
        url,
        backend="influxdb",
        schemes=("influxdb", "influxdbs"),
        options=OPTIONS,
        example="influxdb://[user:password@]host[:port][/database][?namespace=...]",
        needs_host=True,
    )
    database = u.path.strip("/")
    if "/" in database:
        raise ConfigError(
            f"influxdb URL {u.shown!r}: the path is one database name, not {database!r}",
            source="url",
        )
    token = u.text("token", "") or None
    if token and u.user is not None:
        raise ConfigError(
            f"influxdb URL {u.shown!r} has both user:password and token=; give one", source="url"
        )
    auth = u.text("auth", "basic")
    if auth not in ("basic", "params"):
        raise u.invalid(
            "auth", auth, "must be basic (an Authorization header) or params (u and p query "
            "parameters)"
        )  # fmt: skip
    host = u.host or ""
    netloc_host = f"[{host}]" if ":" in host else host
    scheme = "https" if u.scheme == "influxdbs" else "http"
    return InfluxOptions(
        base_url=f"{scheme}://{netloc_host}:{u.port or DEFAULT_PORT}",
        shown=u.shown,
        database=database or DEFAULT_DATABASE,
        namespace=u.namespace(),
        measurement=check_name(u.text("measurement", DEFAULT_MEASUREMENT), "measurement"),
        retention_policy=u.text("rp", "") or None,
        org=u.text("org", "") or None,
        username=u.user,
        password=u.password,
        token=token,
        auth="params" if auth == "params" else "basic",
        timeout=u.seconds("timeout", DEFAULT_TIMEOUT, zero=False),
        connect_timeout=u.seconds("connect_timeout", DEFAULT_CONNECT_TIMEOUT, zero=False),
        create_database=u.boolean("create", True),
        verify=u.boolean("verify", True),
        ca_file=u.text("ca_file", "") or None,
        url=url,
    )


def database_url(url: str, database: str) -> str:
    """``url`` pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))
