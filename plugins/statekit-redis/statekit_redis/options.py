"""``redis://`` and ``rediss://`` URLs: statekit's own options, and what goes to redis-py.

::

    redis://[[user]:password@]host[:port][/db][?namespace=orders&log_max=100000&...]
    rediss://...        TLS
    redis+cluster://[[user]:password@]host1:port1[,host2:port2...][/][?namespace=...]
    rediss+cluster://...  a Redis Cluster (TLS); the hosts are seeds, any node will do

statekit reads ``namespace``, ``log_max``, ``wait`` and ``wait_timeout`` and strips
them; the options listed in :data:`DRIVER_OPTIONS` go to redis-py unchanged. Anything
else is a ConfigError, so a misspelt option fails at open() instead of being ignored.

``wait=N`` makes each append wait (``WAIT N``, on the connection that wrote) until N
replicas hold it, at most ``wait_timeout`` seconds (default 1); fewer is a
BackendUnavailable (the write is on the master, not known to be on its replicas).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from statekit.errors import ConfigError
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

DEFAULT_WAIT_TIMEOUT = 1.0
"""Seconds an append with ``wait=N`` waits for its replicas unless ``wait_timeout`` says."""
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

STATEKIT_OPTIONS = frozenset({"namespace", "log_max", "wait", "wait_timeout"})
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
    :param seeds: a cluster URL's ``(host, port)`` list; empty for one server.
    :param wait: replicas each append waits for (``WAIT``); 0 = none.
    :param wait_timeout: seconds an append waits for them.
    """

    driver_url: str
    shown: str
    namespace: str
    log_max: int
    connect_timeout: float | None
    named: frozenset[str] = frozenset()
    seeds: tuple[tuple[str, int], ...] = ()
    wait: int = 0
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT

    @property
    def cluster(self) -> bool:
        """True for a ``redis+cluster://`` URL."""
        return bool(self.seeds)


def parse_url(url: str, *, options: frozenset[str] = STATEKIT_OPTIONS) -> RedisOptions:
    """Split a store URL into statekit's options and redis-py's URL; ConfigError if bad.

    :param options: statekit's options this URL may hold (a cache URL has no ``log_max``).
    """
    u = StoreUrl.parse(
        url,
        backend="redis",
        schemes=("redis", "rediss", *CLUSTER_SCHEMES),
        options=options,
        driver_options=DRIVER_OPTIONS,
        example="redis://[[user]:password@]host[:port][/db][?namespace=...] or "
        "redis+cluster://host1:port1[,host2:port2...][?namespace=...]",
        needs_host=True,
        multi_host=True,
    )
    named = frozenset(u.options) | {name for name, _ in u.driver}
    seeds: tuple[tuple[str, int], ...] = ()
    driver_url = u.driver_url()
    if u.scheme in CLUSTER_SCHEMES:
        seeds = _seeds(u)
        # redis-py parses the options from a one-host URL; the seeds go to RedisCluster.
        host, port = seeds[0]
        at = urlsplit(u.given).netloc.rpartition("@")
        query = urlsplit(driver_url).query
        netloc = f"{at[0]}{at[1]}{host}:{port}"
        driver_url = urlunsplit((u.scheme.split("+")[0], netloc, "", query, ""))
    elif "," in urlsplit(u.given).netloc:
        raise ConfigError(
            f"redis URL {u.shown!r} names several hosts: use redis+cluster:// for a cluster",
            source="url",
        )
    timeout = u.options.get("wait_timeout")
    wait_timeout = DEFAULT_WAIT_TIMEOUT
    if timeout is not None:
        try:
            wait_timeout = float(timeout)
        except ValueError:
            raise u.invalid("wait_timeout", timeout, "must be a number of seconds") from None
        if not 0 < wait_timeout < 3600:
            raise u.invalid("wait_timeout", timeout, "must be seconds between 0 and 3600")
    return RedisOptions(
        seeds=seeds,
        wait=u.integer("wait", 0, minimum=0),
        wait_timeout=wait_timeout,
        driver_url=driver_url,
        shown=u.shown,
        namespace=u.namespace(),
        log_max=u.integer("log_max", DEFAULT_LOG_MAX, minimum=1),
        connect_timeout=None if "socket_connect_timeout" in named else DEFAULT_CONNECT_TIMEOUT,
        named=named,
    )


def with_namespace(url: str, namespace: str) -> str:
    """``url`` with its ``namespace`` option set to ``namespace`` (other options kept)."""
    return with_options(url, namespace=namespace)


def _seeds(u: StoreUrl) -> tuple[tuple[str, int], ...]:
    """The ``(host, port)`` seeds of a cluster URL; ConfigError for a bad one."""
    if u.path.strip("/") not in {"", "0"}:
        raise ConfigError(
            f"redis URL {u.shown!r}: a Redis Cluster has only database 0", source="url"
        )
    seeds = []
    for part in urlsplit(u.given).netloc.rpartition("@")[2].split(","):
        host, colon, port = part.rpartition(":")
        if not colon:
            host, port = part, "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"redis URL {u.shown!r}: {part!r} is not host:port", source="url")
        seeds.append((host, int(port)))
    return tuple(seeds)
