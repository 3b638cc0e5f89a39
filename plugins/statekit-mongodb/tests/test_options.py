"""The URL: statekit's options are taken out, PyMongo's pass through, the rest is refused."""

from __future__ import annotations

import pytest
from statekit_mongodb.options import DRIVER_DEFAULTS, MongoOptions, with_namespace
from statekit_mongodb.translate import guard

from statekit.errors import ConfigError


def test_defaults() -> None:
    options = MongoOptions.parse("mongodb://localhost")
    assert (options.namespace, options.database, options.transactions) == (
        "default",
        "statekit",
        "auto",
    )
    assert options.uri == "mongodb://localhost/"
    assert options.client_kwargs == DRIVER_DEFAULTS
    assert (options.watch, options.poll_interval) == ("auto", 0.05)


def test_watch_and_poll_interval() -> None:
    options = MongoOptions.parse("mongodb://h/?watch=poll&poll_interval=0.5&retryWrites=false")
    assert (options.watch, options.poll_interval) == ("poll", 0.5)
    assert options.uri == "mongodb://h/?retryWrites=false"
    assert MongoOptions.parse("mongodb://h/?watch=changestream").watch == "changestream"
    assert MongoOptions.for_client("n", "d", watch="poll", poll_interval=1).watch == "poll"
    with pytest.raises(ConfigError, match="watch"):
        MongoOptions.for_client("n", "d", watch="sometimes")  # type: ignore[arg-type]


def test_statekit_options_are_stripped_and_driver_options_kept() -> None:
    options = MongoOptions.parse(
        "mongodb://u:s3cr%2Ft@h1:27017,h2/appdb?namespace=bot.1&replicaSet=rs0"
        "&serverSelectionTimeoutMS=500&transactions=off&retryWrites=false"
    )
    assert options.namespace == "bot.1" and options.database == "appdb"
    assert options.transactions == "off"
    assert options.uri == (
        "mongodb://u:s3cr%2Ft@h1:27017,h2/appdb?replicaSet=rs0"
        "&serverSelectionTimeoutMS=500&retryWrites=false"
    )
    assert options.client_kwargs == {"connectTimeoutMS": 2000}  # the URL set the other
    assert "s3cr" not in options.shown and "s3cr" not in repr(options)
    assert guard(options).scrub("auth failed for s3cr/t") == "auth failed for ***"


def test_database_parameter_and_path() -> None:
    assert MongoOptions.parse("mongodb://h/?database=x").database == "x"
    assert MongoOptions.parse("mongodb://h/x?database=x").database == "x"
    with pytest.raises(ConfigError, match="give one"):
        MongoOptions.parse("mongodb://h/x?database=y")
    with pytest.raises(ConfigError, match="database"):
        MongoOptions.parse("mongodb://h/?database=a.b")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://h/?namespce=x", "unknown mongodb URL option 'namespce'"),
        ("mongodb://h/?namespace=a/b", "namespace"),
        ("mongodb://h/?namespace=" + "a" * 65, "namespace"),
        ("mongodb://h/?namespace=a&namespace=b", "twice"),
        ("mongodb://h/?transactions=maybe", "transactions"),
        ("mongodb://h/?watch=stream", "watch='stream' must be auto, poll or changestream"),
        ("mongodb://h/?poll_interval=fast", "poll_interval"),
        ("mongodb://h/?poll_interval=0", "poll_interval"),
        ("mongodb://h/?poll_interval=nan", "poll_interval"),
        ("redis://h/", "not a mongodb"),
        ("mongodb:///db", "no host"),
        ("mongodb://h/#frag", "fragment"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MongoOptions.parse(url)


def test_errors_never_show_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        MongoOptions.parse("mongodb://admin:hunter2@h/?bogus=1")
    assert "hunter2" not in str(err.value)


def test_with_namespace_replaces_it() -> None:
    url = with_namespace("mongodb://h:1/?retryWrites=false&namespace=a", "b")
    assert MongoOptions.parse(url).namespace == "b"
    assert "retryWrites=false" in url
    assert MongoOptions.parse(with_namespace("mongodb://h:1", "c")).namespace == "c"


def test_mongodb_srv_is_accepted() -> None:
    options = MongoOptions.parse("mongodb+srv://cluster.example.com/db?namespace=n")
    assert options.uri.startswith("mongodb+srv://cluster.example.com/db")
