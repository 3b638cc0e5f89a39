"""Bad input outside the store contract: store URLs, config files, legacy state files.

Keys, kinds, values and versions given to a store are in the conformance suite
(:mod:`statekit.testing.inputs`), which every backend runs. Here: what is refused
before a store exists, and the legacy entry points. Each case asserts the statekit
error (never a raw ``ValueError``/``RecursionError``) and that nothing was written.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import statekit
from statekit.backends.sqlite import SqliteBackend
from statekit.codec import MAX_INT_DIGITS, Codec, encode
from statekit.errors import ConfigError, SerializationError

# -- store URLs ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("url", ["", "   "])
async def test_an_empty_store_url_is_an_error_not_the_default(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="store URL is empty") as err:
        await statekit.open(url)
    assert err.value.source == "url"
    with pytest.raises(ConfigError, match="store URL is empty"):
        await statekit.open(primary=url)
    assert list(tmp_path.iterdir()) == [], "an empty URL opened the default store"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "redis://[::1",
        "postgresql://[::1]:5432[/db",
        "mongodb://[::1",
        "influxdb://[::1",
        "sqlite://[::1",
        "file://[::1",
        "memory://[::1",
    ],
)
async def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="malformed") as err:
        await statekit.open(url)
    assert err.value.source == "url"


@pytest.mark.asyncio
async def test_a_mongodb_url_with_a_bad_port_is_a_config_error() -> None:
    pytest.importorskip("statekit_mongodb")
    with pytest.raises(ConfigError, match="malformed"):
        await statekit.open("mongodb://127.0.0.1:port/db")


@pytest.mark.asyncio
@pytest.mark.parametrize("url", ["memory://?x=1", "memory://?namespace=a", "memory:?poll=1"])
async def test_memory_refuses_options_like_every_backend(url: str) -> None:
    with pytest.raises(ConfigError, match="unknown memory URL option"):
        await statekit.open(url)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("poll_interval=-1", "poll_interval"),
        ("poll_interval=0", "poll_interval"),
        ("poll_interval=nan", "poll_interval"),
        ("poll_interval=inf", "poll_interval"),
        ("busy_timeout=-1", "busy_timeout"),
        ("busy_timeout=nan", "busy_timeout"),
        ("busy_timeout=inf", "busy_timeout"),
        ("busy_timeout=-inf", "busy_timeout"),
        ("poll_interval=1&poll_interval=2", "poll_interval twice"),
        ("synchronous=", "synchronous"),
        ("colour", "unknown sqlite URL option 'colour'"),
    ],
)
async def test_sqlite_refuses_bad_option_values(query: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with pytest.raises(ConfigError, match=message):
        await statekit.open(f"sqlite:///{path}?{query}")
    assert not path.exists(), "a refused URL created its file"


def test_sqlite_backend_refuses_bad_seconds_when_built_directly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="poll_interval"):
        SqliteBackend(tmp_path / "x.db", poll_interval=float("nan"))
    with pytest.raises(ConfigError, match="busy_timeout"):
        SqliteBackend(tmp_path / "x.db", busy_timeout=-0.5)
    assert SqliteBackend(tmp_path / "x.db", busy_timeout=0).busy_timeout == 0


@pytest.mark.asyncio
async def test_sqlite_refuses_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO users (name) VALUES ('ada')")
        con.execute("CREATE VIEW names AS SELECT name FROM users")
    con.close()
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="not a statekit database") as err:
        await statekit.open(f"sqlite:///{path}")
    assert "names, users" in str(err.value)
    assert path.read_bytes() == before, "the foreign file was changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal/-shm left
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()


@pytest.mark.asyncio
async def test_sqlite_opens_an_empty_file_and_its_own_database(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    async with await statekit.open(f"sqlite:///{empty}") as store:
        await store.put("k", 1)
    async with await statekit.open(f"sqlite:///{empty}") as store:  # a statekit file now
        assert (await store.put("k", 2)).version == 2
    # A statekit database that the user also keeps a table of their own in stays usable.
    with sqlite3.connect(empty) as con:
        con.execute("CREATE TABLE notes (text TEXT)")
    con.close()
    async with await statekit.open(f"sqlite:///{empty}") as store:
        assert (await store.put("k", 3)).version == 3


# -- the codec: the checks the conformance suite relies on ------------------------------------


def test_encode_names_the_path_of_a_lone_surrogate_and_escapes_it() -> None:
    with pytest.raises(SerializationError) as err:
        encode({"a": [1, {"b\udc80": "x"}]}, key="k")
    assert err.value.path == "$.a[1].b\\udc80"
    assert err.value.key == "k"
    str(err.value).encode()  # printable: the surrogate is written out
    assert encode({"ascii": 1, "ü": "😀"}) == '{"ascii":1,"ü":"😀"}'


def test_integers_are_refused_past_4300_digits_whatever_this_process_allows() -> None:
    codec = Codec()
    largest = 10**MAX_INT_DIGITS - 1
    assert codec.normalize({"n": largest}) == {"n": largest}
    assert codec.normalize([-largest]) == [-largest]
    for value, path in (({"n": largest + 1}, "$.n"), ([{"x": -(largest + 1)}], "$[0].x")):
        with pytest.raises(SerializationError) as err:
            codec.normalize(value, key="k")
        assert err.value.path == path
        assert f"more than {MAX_INT_DIGITS} digits" in str(err.value)


def test_a_value_nested_very_deep_is_refused_without_recursion_error() -> None:
    value: object = 0
    for _ in range(100_000):
        value = [value]
    with pytest.raises(SerializationError, match="nested deeper than 200"):
        Codec().normalize(value, key="k")


def test_stored_json_nested_too_deep_for_python_is_a_serialization_error() -> None:
    from statekit.codec import loads

    with pytest.raises(SerializationError, match="not valid JSON"):
        loads("[" * 100_000 + "]" * 100_000, key="k")
