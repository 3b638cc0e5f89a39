"""``redis://`` and ``rediss://`` URLs: statekit's own options, and what goes to redis-py.

::

    redis://[[user]:password@]host[:port][/db][?namespace=orders&log_max=100000&...]
    rediss://...        TLS

statekit reads ``namespace`` and ``log_max`` and strips them; the options listed in
:data:`DRIVER_OPTIONS` go to redis-py unchanged. Anything else is a ConfigError, so
a misspelt option fails at open() instead of being ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from statekit.codec import redact_url
from statekit.errors import ConfigError
from statekit_redis.layout import check_namespace

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LOG_MAX",
    "DEFAULT_NAMESPACE",
    "DRIVER_OPTIONS",
    "STATEKIT_OPTIONS",
    "RedisOptions",
    "parse_url",
    "with_namespace",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_LOG_MAX = 100_000
DEFAULT_CONNECT_TIMEOUT = 2.0
"""Seconds to wait for a TCP connection unless the URL says ``socket_connect_timeout``:
short, so a call to a server that is down fails fast with BackendUnavailable."""

STATEKIT_OPTIONS = frozenset({"namespace", "log_max"})
DRIVER_OPTIONS = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "max_connections",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "ssl_ciphers",
    }
)
"""redis-py URL options statekit passes through (see redis-py's ``from_url``)."""


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """A parsed store URL.

    :param driver_url: the URL for redis-py, statekit's options removed. It may hold
        a password: never show it; show :attr:`shown`.
    :param shown: the URL with secrets masked, for errors and ``doctor``.
    :param namespace: which statekit namespace (key prefix) of the database.
    :param log_max: about how many entries the watch log keeps (``XADD MAXLEN ~``).
    :param connect_timeout: the connect timeout to set when the URL has none.
    """

    driver_url: str
    shown: str
    namespace: str
    log_max: int
    connect_timeout: float | None


def parse_url(url: str, *, options: frozenset[str] = STATEKIT_OPTIONS) -> RedisOptions:
    """Split a store URL into statekit's options and redis-py's URL; ConfigError if bad.

    :param options: statekit's options this URL may hold (a cache URL has no ``log_max``).
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"redis URL {shown!r} is malformed: {exc}", source="url") from exc
    if parts.scheme not in {"redis", "rediss"}:
        raise ConfigError(
            f"redis URL {shown!r} must start with redis:// or rediss:// (TLS)", source="url"
        )
    if not parts.hostname:
        raise ConfigError(f"redis URL {shown!r} names no host", source="url")
    del port
    ours: dict[str, str] = {}
    driver: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in options:
            if name in ours:
                raise ConfigError(f"redis URL {shown!r} gives {name} twice", source="url")
            ours[name] = value
        elif name in DRIVER_OPTIONS:
            driver.append((name, value))
        else:
            raise ConfigError(
                f"unknown redis URL option {name!r} in {shown!r}; statekit's options: "
                f"{', '.join(sorted(options))}; redis-py's: "
                f"{', '.join(sorted(DRIVER_OPTIONS))}",
                source="url",
            )
    namespace = check_namespace(ours.get("namespace", DEFAULT_NAMESPACE))
    try:
        log_max = int(ours.get("log_max", DEFAULT_LOG_MAX))
    except ValueError:
        log_max = 0
    if log_max < 1:
        raise ConfigError(
            f"redis log_max={ours['log_max']!r}: give a whole number >= 1", source="url"
        )
    has_timeout = any(name == "socket_connect_timeout" for name, _ in driver)
    driver_url = urlunsplit(parts._replace(query=urlencode(driver), fragment=""))
    return RedisOptions(
        driver_url=driver_url,
        shown=shown,
        namespace=namespace,
        log_max=log_max,
        connect_timeout=None if has_timeout else DEFAULT_CONNECT_TIMEOUT,
    )


def with_namespace(url: str, namespace: str) -> str:
    """``url`` with its ``namespace`` option set to ``namespace`` (other options kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "namespace"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("namespace", namespace)])))
