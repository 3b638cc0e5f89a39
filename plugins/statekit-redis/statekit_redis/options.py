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

from statekit.kit import StoreUrl, with_options

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
    :param named: the options the URL names (statekit's and redis-py's).
    """

    driver_url: str
    shown: str
    namespace: str
    log_max: int
    connect_timeout: float | None
    named: frozenset[str] = frozenset()


def parse_url(url: str, *, options: frozenset[str] = STATEKIT_OPTIONS) -> RedisOptions:
    """Split a store URL into statekit's options and redis-py's URL; ConfigError if bad.

    :param options: statekit's options this URL may hold (a cache URL has no ``log_max``).
    """
    u = StoreUrl.parse(
        url,
        backend="redis",
        schemes=("redis", "rediss"),
        options=options,
        driver_options=DRIVER_OPTIONS,
        example="redis://[[user]:password@]host[:port][/db][?namespace=...]",
        needs_host=True,
    )
    named = frozenset(u.options) | {name for name, _ in u.driver}
    return RedisOptions(
        driver_url=u.driver_url(),
        shown=u.shown,
        namespace=u.namespace(),
        log_max=u.integer("log_max", DEFAULT_LOG_MAX, minimum=1),
        connect_timeout=None if "socket_connect_timeout" in named else DEFAULT_CONNECT_TIMEOUT,
        named=named,
    )


def with_namespace(url: str, namespace: str) -> str:
    """``url`` with its ``namespace`` option set to ``namespace`` (other options kept)."""
    return with_options(url, namespace=namespace)
