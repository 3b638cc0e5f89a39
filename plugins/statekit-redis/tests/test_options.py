"""URL options and persistence rules: pure functions, no server needed."""

from __future__ import annotations

import socket

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from statekit_redis import Persistence, RedisBackend
from statekit_redis.options import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LOG_MAX,
    parse_url,
    with_namespace,
)

import statekit
from statekit.errors import BackendUnavailable, ConfigError
from statekit.host import PluginHost


def test_defaults() -> None:
    options = parse_url("redis://localhost:6379/0")
    assert options.namespace == "default"
    assert options.log_max == DEFAULT_LOG_MAX
    assert options.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    assert options.driver_url == "redis://localhost:6379/0"


def test_statekit_options_are_stripped_and_driver_options_kept() -> None:
    options = parse_url(
        "rediss://u:pw@host:6380/2?namespace=orders.v1&log_max=500"
        "&socket_timeout=3&ssl_cert_reqs=none&socket_connect_timeout=1"
    )
    assert (options.namespace, options.log_max) == ("orders.v1", 500)
    assert options.connect_timeout is None  # the URL gives its own
    assert options.driver_url == (
        "rediss://u:pw@host:6380/2?socket_timeout=3&ssl_cert_reqs=none&socket_connect_timeout=1"
    )
    assert "pw" not in options.shown and "***" in options.shown


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis://h/0?namespce=x", "unknown redis URL option 'namespce'"),
        ("redis://h/0?decode_responses=true", "unknown redis URL option"),
        ("redis://h/0?namespace=a{b}", "namespace"),
        ("redis://h/0?namespace=", "namespace"),
        ("redis://h/0?namespace=" + "x" * 65, "namespace"),
        ("redis://h/0?namespace=a*b", "namespace"),
        ("redis://h/0?log_max=0", "log_max"),
        ("redis://h/0?log_max=many", "log_max"),
        ("redis://h/0?namespace=a&namespace=b", "twice"),
        ("redis:///0", "no host"),
        ("redis://h:notaport/0", "malformed"),
        ("http://h/0", "redis://"),
        ("redis://h1:1,h2:2/0", "redis+cluster://"),
        ("redis+cluster://h1:1,h2:2/1", "database 0"),
        ("redis+cluster://h1:1,:2/", "is not host:port"),
        ("redis+cluster://h1:1/?wait=-1", "wait"),
        ("redis+cluster://h1:1/?wait=x", "wait"),
        ("redis+cluster://h1:1/?wait=1&wait_timeout=0", "wait_timeout"),
        ("redis+cluster://h1:1/?wait=1&wait_timeout=soon", "wait_timeout"),
    ],
)
def test_bad_urls_are_config_errors(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(url)
    assert fragment in str(err.value)
    assert err.value.source == "url"


@pytest.mark.asyncio
async def test_open_refuses_a_bad_option_before_connecting() -> None:
    with pytest.raises(ConfigError, match="unknown redis URL option"):
        await statekit.open("redis://127.0.0.1:1/0?nope=1")
    with pytest.raises(ConfigError, match="bad redis URL option"):
        await RedisBackend.open("redis://127.0.0.1:1/0?db=abc")


@pytest.mark.asyncio
async def test_unreachable_server_is_unavailable_without_the_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailable) as err:
        await statekit.open(f"redis://trader:s3cr3t@127.0.0.1:{port}/0?namespace=x")
    assert err.value.retryable
    assert err.value.backend == "redis"
    assert "s3cr3t" not in str(err.value)
    assert f"redis://trader:***@127.0.0.1:{port}/0" in str(err.value)
    assert "s3cr3t" not in repr(err.value.__cause__)


def test_with_namespace_replaces_only_the_namespace() -> None:
    url = with_namespace("redis://h/1?namespace=a&socket_timeout=2", "b")
    assert parse_url(url).namespace == "b"
    assert parse_url(url).driver_url == "redis://h/1?socket_timeout=2"


def test_a_cluster_url_names_its_seeds_and_keeps_the_options_for_redis_py() -> None:
    options = parse_url(
        "redis+cluster://u:pw@h1:7000,h2:7001/?namespace=n&wait=1&wait_timeout=0.5&socket_timeout=2"
    )
    assert options.cluster and options.seeds == (("h1", 7000), ("h2", 7001))
    assert (options.namespace, options.wait, options.wait_timeout) == ("n", 1, 0.5)
    assert options.driver_url == "redis://u:pw@h1:7000?socket_timeout=2"
    assert "pw" not in options.shown
    plain = parse_url("redis://h/0")
    assert not plain.cluster and plain.wait == 0


def test_plugin_serves_redis_and_rediss() -> None:
    host = PluginHost()
    for scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        assert host.backend_class(scheme) is RedisBackend
    (info,) = [i for i in host.plugins() if i.name == "redis"]
    assert info.distribution == "statekit-redis"
    assert info.error is None


# -- persistence rules -------------------------------------------------------------------


def test_aof_is_durable() -> None:
    config = {"appendonly": "yes", "appendfsync": "everysec", "save": ""}
    persistence = Persistence.from_server(config, None)
    assert persistence.durable
    assert persistence.warnings() == []
    assert persistence.describe() == "appendonly=yes appendfsync=everysec save=''"


def test_aof_without_fsync_is_durable_with_a_warning() -> None:
    config = {"appendonly": "yes", "appendfsync": "no", "save": ""}
    persistence = Persistence.from_server(config, None)
    assert persistence.durable
    (warning,) = persistence.warnings()
    assert "appendfsync no" in warning


def test_rdb_snapshots_only_are_not_durable() -> None:
    config = {"appendonly": "no", "appendfsync": "everysec", "save": "3600 1 300 100"}
    persistence = Persistence.from_server(config, None)
    assert not persistence.durable
    (warning,) = persistence.warnings()
    assert "only RDB snapshots" in warning and "3600 1 300 100" in warning


def test_nothing_on_disk_is_not_durable() -> None:
    persistence = Persistence.from_server({"appendonly": "no", "save": ""}, None)
    assert not persistence.durable
    (warning,) = persistence.warnings()
    assert "keeps nothing on disk" in warning


def test_config_refused_falls_back_to_info() -> None:
    info = {"aof_enabled": 1, "loading": 0, "maxmemory": 0, "maxmemory_policy": "noeviction"}
    persistence = Persistence.from_server(None, info)
    assert persistence.durable
    assert (persistence.source, persistence.save) == ("INFO", "unknown")
    assert persistence.maxmemory_policy == "noeviction"


def test_nothing_known_is_not_durable() -> None:
    persistence = Persistence.from_server(None, None)
    assert not persistence.durable
    assert persistence.detail()["appendonly"] == "unknown"
    (warning,) = persistence.warnings()
    assert "durability unknown" in warning


@pytest.mark.parametrize(
    ("maxmemory", "policy", "durable"),
    [
        ("104857600", "allkeys-lru", False),
        ("104857600", "allkeys-random", False),
        ("104857600", "volatile-lru", True),  # statekit's keys have no TTL
        ("104857600", "noeviction", True),
        ("0", "allkeys-lru", True),  # no limit: nothing is ever evicted
    ],
)
def test_eviction_of_statekit_keys_is_not_durable(
    maxmemory: str, policy: str, durable: bool
) -> None:
    config = {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "maxmemory": maxmemory,
        "maxmemory-policy": policy,
    }
    persistence = Persistence.from_server(config, None)
    assert persistence.durable is durable
    assert bool(persistence.warnings()) is not durable
    if not durable:
        assert "evicts keys" in persistence.warnings()[0]


@pytest.mark.asyncio
async def test_an_unreachable_cluster_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="cannot reach") as err:
        await RedisBackend.open("redis+cluster://127.0.0.1:1,127.0.0.1:2/?namespace=x")
    assert not isinstance(err.value, RedisClusterException)


@pytest.mark.asyncio
async def test_a_cluster_client_that_retries_commands_is_refused() -> None:
    """RedisCluster retries a command after a connection error by default (3 times): an
    append whose reply was lost would be applied again."""
    client = RedisCluster(host="127.0.0.1", port=1)
    try:
        with pytest.raises(ConfigError, match="does not re-send"):
            await RedisBackend.from_client(client)
    finally:
        await client.aclose()
