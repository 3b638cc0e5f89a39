"""The postgresql:// URL: statekit's options, what reaches asyncpg, what is refused."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from statekit_postgres import PostgresOptions
from statekit_postgres.translate import guard

from statekit.errors import ConfigError


def test_defaults() -> None:
    options = PostgresOptions.parse("postgresql://bot@db.example:5433/trading")
    assert options.namespace == "default"
    assert options.schema is None
    assert (options.pool_min, options.pool_max) == (1, 10)
    assert options.statement_timeout == 0
    assert options.command_timeout is None
    assert options.dsn == "postgresql://bot@db.example:5433/trading"
    kwargs = options.connect_kwargs()
    assert kwargs["server_settings"] == {"application_name": "statekit"}
    assert kwargs["timeout"] == 10.0


def test_statekit_options_are_taken_out_of_the_dsn() -> None:
    options = PostgresOptions.parse(
        "postgres://bot:pw@h/db?namespace=bot-1.eu_a&schema=trading_state&pool_min=2&pool_max=4"
        "&statement_timeout=2.5&connect_timeout=3&command_timeout=7&sslmode=require"
        "&application_name=mybot"
    )
    assert options.namespace == "bot-1.eu_a"
    assert options.schema == "trading_state"
    assert (options.pool_min, options.pool_max) == (2, 4)
    assert options.statement_timeout == 2.5
    assert urlsplit(options.dsn).scheme == "postgresql"
    assert parse_qs(urlsplit(options.dsn).query) == {"sslmode": ["require"]}
    kwargs = options.connect_kwargs()
    assert kwargs["server_settings"] == {
        "application_name": "mybot",
        "statement_timeout": "2500",
        "search_path": "trading_state",
    }
    assert (kwargs["timeout"], kwargs["command_timeout"]) == (3.0, 7.0)


def test_unix_socket_form_keeps_its_shape() -> None:
    options = PostgresOptions.parse(
        "postgresql://postgres@/statekit?host=/var/run/postgresql&namespace=a"
    )
    parts = urlsplit(options.dsn)
    assert options.dsn.startswith("postgresql://postgres@/statekit?")
    assert parse_qs(parts.query) == {"host": ["/var/run/postgresql"]}
    assert options.namespace == "a"


def test_pool_max_follows_a_large_pool_min() -> None:
    assert PostgresOptions.parse("postgresql://h/db?pool_min=20").pool_max == 20
    assert PostgresOptions.parse("postgresql://h/db?pool_min=0&pool_max=1").pool_min == 0


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("namespac=x", "unknown postgresql URL option 'namespac'"),
        ("search_path=x", "unknown postgresql URL option 'search_path'"),
        ("namespace=", "namespace=''"),
        ("namespace=a/b", "namespace='a/b'"),
        ("namespace=" + "n" * 65, "1 to 64 characters"),
        ("namespace=a:b", "namespace='a:b'"),
        ("namespace=a&namespace=b", "sets namespace twice"),
        ("schema=Trading", "schema='Trading'"),
        ("schema=1x", "schema='1x'"),
        ("pool_max=0", "pool_max >= 1"),
        ("pool_min=5&pool_max=2", "pool_min <= pool_max"),
        ("pool_max=lots", "pool_max='lots' is not an integer"),
        ("statement_timeout=-1", "must be >= 0"),
        ("statement_timeout=nan", "must be >= 0"),
        ("connect_timeout=0", "connect_timeout must be > 0"),
        ("command_timeout=soon", "is not a number of seconds"),
    ],
)
def test_bad_options_are_config_errors(query: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        PostgresOptions.parse(f"postgresql://bot:s3cret@h/db?{query}")
    assert fragment in str(err.value)
    assert err.value.source == "url"
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://h/db",
        "postgresql://bot:s3cret@h:notaport/db",
        "postgresql://bot:s3cret@h/db#frag",
    ],
)
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        PostgresOptions.parse(url)
    assert "s3cret" not in str(err.value)


def test_the_password_is_masked_everywhere_it_could_show() -> None:
    options = PostgresOptions.parse("postgresql://bot:p%40ss%2Fw0rd@h/db?namespace=a")
    assert options.password == "p@ss/w0rd"
    assert "p%40ss" not in options.shown and "***" in options.shown
    assert "p%40ss" not in repr(options) and "p@ss" not in repr(options)
    assert guard(options).scrub("auth failed for p@ss/w0rd (p%40ss%2Fw0rd)") == (
        "auth failed for *** (***)"
    )
    in_query = PostgresOptions.parse("postgresql://bot@h/db?password=hunter2")
    assert guard(in_query).scrub("hunter2!") == "***!"
    assert "hunter2" not in in_query.shown


def test_for_pool_checks_the_namespace() -> None:
    assert PostgresOptions.for_pool("bot1").namespace == "bot1"
    with pytest.raises(ConfigError):
        PostgresOptions.for_pool("no spaces")
