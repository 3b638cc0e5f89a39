"""URL parsing: options, credentials, TLS, the legacy settings; no server needed."""

from __future__ import annotations

import pytest
from statekit_influxdb import InfluxClient, parse_url
from statekit_influxdb.influxql import ident, literal, prefix_regex
from statekit_influxdb.options import with_options
from statekit_influxdb.points import decode_key, encode_key

from statekit.config import load_settings
from statekit.errors import ConfigError


def test_defaults() -> None:
    options = parse_url("influxdb://localhost")
    assert options.base_url == "http://localhost:8086"
    assert (options.database, options.namespace, options.measurement) == (
        "statekit",
        "default",
        "statekit",
    )
    assert options.params() == {"db": "statekit"}
    assert options.headers() == {} and options.credentials() is None
    assert options.create_database and options.verify


def test_tls_database_and_options() -> None:
    options = parse_url(
        "influxdbs://db.example:9999/trading%20states?namespace=desk1&measurement=m.v2"
        "&rp=autogen&timeout=3.5&connect_timeout=0.5&create=false&verify=no&org=acme"
    )
    assert options.base_url == "https://db.example:9999" and options.tls
    assert options.database == "trading states"
    assert (options.namespace, options.measurement) == ("desk1", "m.v2")
    assert options.params() == {"db": "trading states", "rp": "autogen"}
    assert (options.timeout, options.connect_timeout) == (3.5, 0.5)
    assert not options.create_database and not options.verify
    assert options.org == "acme"


def test_user_password_go_as_basic_auth_or_params() -> None:
    basic = parse_url("influxdb://trader:p%40ss@localhost/db")
    assert basic.credentials() == ("trader", "p@ss")
    assert "u" not in basic.params()
    params = parse_url("influxdb://trader:p%40ss@localhost/db?auth=params")
    assert params.credentials() is None
    assert params.params() == {"db": "db", "u": "trader", "p": "p@ss"}


def test_token_goes_in_the_authorization_header() -> None:
    options = parse_url("influxdb://localhost/bucket?token=s3cr3t&org=trading-org")
    assert options.headers() == {"Authorization": "Token s3cr3t"}
    assert "s3cr3t" not in repr(options) and "s3cr3t" not in options.shown


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost/db", "must start with influxdb://"),
        ("influxdb:///db", "names no host"),
        ("influxdb://localhost/a/b", "one database name"),
        ("influxdb://localhost/db?namespce=x", "unknown influxdb URL option 'namespce'"),
        ("influxdb://localhost/db?namespace=a/b", "namespace"),
        ("influxdb://localhost/db?timeout=0", "timeout"),
        ("influxdb://localhost/db?create=maybe", "create"),
        ("influxdb://localhost/db?auth=digest", "auth"),
        ("influxdb://u:pw@localhost/db?token=t0ken", "both user:password and token"),
        ("influxdb://localhost:99999/db", "malformed"),
    ],
)
def test_bad_urls_are_config_errors_without_secrets(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(url)
    assert problem in str(err.value)
    assert err.value.source == "url"
    assert "t0ken" not in str(err.value) and ":pw@" not in str(err.value)


def test_legacy_settings_become_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "TRADING_STATE_DB_TYPE": "influxdb",
        "TRADING_STATE_INFLUXDB_URL": "https://influx.example:8086",
        "TRADING_STATE_INFLUXDB_TOKEN": "legacy-token",
        "TRADING_STATE_INFLUXDB_ORG": "trading-org",
        "TRADING_STATE_INFLUXDB_BUCKET": "trading-states",
    }.items():
        monkeypatch.setenv(name, value)
    options = parse_url(load_settings(config_file="", env_file="").store_url())
    assert options.base_url == "https://influx.example:8086"
    assert options.database == "trading-states"
    assert options.org == "trading-org"
    assert options.headers() == {"Authorization": "Token legacy-token"}


def test_with_options_keeps_the_others() -> None:
    url = with_options("influxdb://h/db?token=t&namespace=a", namespace="b")
    options = parse_url(url)
    assert (options.namespace, options.token) == ("b", "t")


@pytest.mark.parametrize(
    "key", ["plain/key", "a\\b", "50%", "%25", "%5C\\%", "a b,c=d", "ü/📈", "'quoted\""]
)
def test_key_tags_encode_reversibly(key: str) -> None:
    tag = encode_key(key)
    assert "\\" not in tag
    assert decode_key(tag) == key


def test_influxql_quoting() -> None:
    assert literal("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert ident('say "key"') == '"say \\"key\\""'
    assert prefix_regex("a.b*/(c)") == "/^a\\.b\\*\\/\\(c\\)/"


@pytest.mark.asyncio
async def test_a_client_never_shows_its_secrets() -> None:
    client = InfluxClient(parse_url("influxdb://u:hunter2@127.0.0.1:9/db?auth=params"))
    try:
        assert "hunter2" not in client.options.shown
    finally:
        await client.aclose()
