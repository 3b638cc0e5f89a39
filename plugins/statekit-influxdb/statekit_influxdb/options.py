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
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from statekit import codec
from statekit.codec import redact_url
from statekit.errors import ConfigError

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
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


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


def _float(name: str, value: str, shown: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigError(
            f"influxdb URL {shown!r}: {name}={value!r} must be a number of seconds > 0",
            source="url",
        )
    return number


def _bool(name: str, value: str, shown: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(
        f"influxdb URL {shown!r}: {name}={value!r} must be true or false", source="url"
    )


def parse_url(url: str) -> InfluxOptions:
    """Parse a store URL; ConfigError (never showing a secret) when it is bad."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigError(f"influxdb URL {shown!r} is malformed: {exc}", source="url") from exc
    if parts.scheme not in {"influxdb", "influxdbs"}:
        raise ConfigError(
            f"influxdb URL {shown!r} must start with influxdb:// or influxdbs:// (TLS)",
            source="url",
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"influxdb URL {shown!r} names no host", source="url")
    path = unquote(parts.path.strip("/"))
    if "/" in path:
        raise ConfigError(
            f"influxdb URL {shown!r}: the path is one database name, not {path!r}", source="url"
        )
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in OPTIONS:
            raise ConfigError(
                f"unknown influxdb URL option {name!r} in {shown!r}; the options are: "
                f"{', '.join(sorted(OPTIONS))}",
                source="url",
            )
        if name in given:
            raise ConfigError(f"influxdb URL {shown!r} gives {name} twice", source="url")
        given[name] = value
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    token = given.get("token") or None
    if token and username is not None:
        raise ConfigError(
            f"influxdb URL {shown!r} has both user:password and token=; give one", source="url"
        )
    auth = given.get("auth", "basic")
    if auth not in {"basic", "params"}:
        raise ConfigError(
            f"influxdb URL {shown!r}: auth={auth!r} must be basic (an Authorization header) "
            "or params (u and p query parameters)",
            source="url",
        )
    netloc_host = f"[{host}]" if ":" in host else host
    scheme = "https" if parts.scheme == "influxdbs" else "http"
    return InfluxOptions(
        base_url=f"{scheme}://{netloc_host}:{port}",
        shown=shown,
        database=path or DEFAULT_DATABASE,
        namespace=codec.check_namespace(
            given.get("namespace", DEFAULT_NAMESPACE), backend="influxdb"
        ),
        measurement=check_name(given.get("measurement", DEFAULT_MEASUREMENT), "measurement"),
        retention_policy=given.get("rp") or None,
        org=given.get("org") or None,
        username=username,
        password=password,
        token=token,
        auth="params" if auth == "params" else "basic",
        timeout=_float("timeout", given["timeout"], shown)
        if "timeout" in given
        else DEFAULT_TIMEOUT,
        connect_timeout=(
            _float("connect_timeout", given["connect_timeout"], shown)
            if "connect_timeout" in given
            else DEFAULT_CONNECT_TIMEOUT
        ),
        create_database=_bool("create", given["create"], shown) if "create" in given else True,
        verify=_bool("verify", given["verify"], shown) if "verify" in given else True,
        ca_file=given.get("ca_file") or None,
    )


def with_options(url: str, **options: str) -> str:
    """``url`` with the given query options set (others kept), e.g. a fresh ``namespace``."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in options]
    return urlunsplit(parts._replace(query=urlencode([*kept, *options.items()])))


def database_url(url: str, database: str) -> str:
    """``url`` pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))
