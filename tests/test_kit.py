"""statekit.kit on its own: URLs, driver-error translation, rows, the commit follower.

The SQL base runs against a real server in plugins/statekit-mysql (the whole contract).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from statekit.backend import Record
from statekit.errors import BackendError, BackendUnavailable, ConfigError, SerializationError
from statekit.kit import (
    CommitFollower,
    DriverGuard,
    Fields,
    StoreUrl,
    Watchers,
    from_document,
    record,
    stored,
    with_options,
)

URL = "acme://bot:s3cret@db.example:7000/main?namespace=desk1&pool_max=4&sslmode=require"


def parse(url: str = URL) -> StoreUrl:
    return StoreUrl.parse(
        url,
        backend="acme",
        schemes=("acme", "acmes"),
        options=("namespace", "pool_max", "timeout", "mode"),
        driver_options=("sslmode",),
    )


def test_store_url_parts_and_typed_options() -> None:
    url = parse()
    assert (url.scheme, url.host, url.port, url.user, url.password) == (
        "acme",
        "db.example",
        7000,
        "bot",
        "s3cret",
    )
    assert url.database == "main" and url.driver == [("sslmode", "require")]
    assert url.namespace() == "desk1" and url.integer("pool_max", 10, minimum=1) == 4
    assert url.seconds("timeout", 2.5) == 2.5 and url.choice("mode", "a", ["a", "b"]) == "a"
    assert "s3cret" not in url.shown and "s3cret" not in repr(url)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("acme://h/db?colour=red", "colour"),
        ("acme://h/db?pool_max=0", "pool_max"),
        ("acme://h/db?pool_max=x", "pool_max"),
        ("acme://h/db?timeout=nan", "timeout"),
        ("acme://h/db?timeout=-1", "timeout"),
        ("acme://h/db?mode=c", "mode"),
        ("acme://h/db?namespace=a%2Fb", "namespace"),
        ("acme://h/db?mode=a&mode=b", "mode"),
        ("acme://h/db?bare", "bare"),
        ("acme://h:port/db", "malformed"),
        ("other://h/db", "acme://"),
        ("acme://h/db#frag", "fragment"),
    ],
)
def test_store_url_errors_name_the_problem(url: str, named: str) -> None:
    def read_all() -> None:
        parsed = parse(url.replace("//h", "//u:pw@h"))
        parsed.namespace()
        parsed.integer("pool_max", 1, minimum=1)
        parsed.seconds("timeout", 1.0)
        parsed.choice("mode", "a", ["a", "b"])

    with pytest.raises(ConfigError) as err:
        read_all()
    assert named in str(err.value) and ":pw@" not in str(err.value)
    assert err.value.source == "url"


def test_driver_guard_translates_and_masks() -> None:
    guard = DriverGuard("acme", URL, errors=(OSError, ValueError))
    with pytest.raises(BackendUnavailable) as unavailable, guard.calls():
        raise ConnectionRefusedError(f"refused for {URL}")
    assert "s3cret" not in str(unavailable.value) and unavailable.value.backend == "acme"
    with pytest.raises(BackendError) as failed, guard.calls():
        raise ValueError("password s3cret rejected")
    assert not failed.value.retryable and "s3cret" not in str(failed.value)
    assert isinstance(failed.value.__cause__, ValueError)
    assert guard.close() and not guard.close()
    with pytest.raises(BackendError, match="closed"), guard.calls():
        pass


def test_records_from_rows_of_bytes_and_micros() -> None:
    rec = record(b"k\xc3\xa9", 3, b"order", b'{"a":1}', b"{}", 1_000_001, backend="acme")
    assert rec == Record("ké", 3, "order", {"a": 1}, {}, datetime(1970, 1, 1, 0, 0, 1, 1, UTC))
    assert stored(rec) == ("ké", 3, "order", '{"a":1}', "{}", 1_000_001)
    with pytest.raises(SerializationError):
        record("k", 1, "x", None, "[1]", datetime(2026, 1, 1), backend="acme")


def test_store_url_for_the_driver_and_for_tools() -> None:
    url = parse(URL + "&mode=b")
    assert url.driver_url() == "acme://bot:s3cret@db.example:7000/main?sslmode=require"
    assert url.driver_url(scheme="x", drop=("sslmode",)) == "x://bot:s3cret@db.example:7000/main"
    assert parse("acme://h?sslmode=a").driver_url(empty_path="/") == "acme://h/?sslmode=a"
    assert parse("acme://h/db?mode=on").boolean("mode", False) is True
    assert parse("acme://h/db").boolean("mode", True) is True
    with pytest.raises(ConfigError, match="mode='maybe' must be true or false"):
        parse("acme://h/db?mode=maybe").boolean("mode", False)
    assert with_options("pg:///db?host=h", namespace="n") == "pg:///db?host=h&namespace=n"
    assert with_options("file:rel/dir", x="1") == "file:rel/dir?x=1"
    assert parse(with_options(URL, namespace="desk2", pool_max="5")).options == {
        "namespace": "desk2",
        "pool_max": "5",
    }


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("acme:///db", "names no host"),
        ("acme://u:pw@/db", "names no host"),
        ("other://h/db", "is not an acme URL: it must start with acme:// or acmes://"),
        ("acme://h/db?colour", "unknown acme URL option 'colour'"),
        ("acme://h/db?mode", "option 'mode' has no '=value'"),
        ("acme://h/db?tls=1", "the driver's: sslmode"),
    ],
)
def test_store_url_needs_a_host_and_names_unknown_options(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        StoreUrl.parse(
            url,
            backend="acme",
            schemes=("acme", "acmes"),
            options=("mode",),
            driver_options=("sslmode",),
            needs_host=True,
        )
    assert named in str(err.value) and ":pw@" not in str(err.value)


def test_driver_guard_labels_and_failures() -> None:
    guard = DriverGuard("acme", URL, errors=(OSError,), label="acme cache")
    error = guard.failure(ConnectionResetError("reset"))
    assert isinstance(error, BackendUnavailable) and str(error).startswith("acme cache acme://")
    assert isinstance(error.__cause__, ConnectionResetError)
    other = RuntimeError("not a driver error")
    assert guard.failure(other) is other

    def closed_while_calling() -> None:
        with guard.calls():
            guard.close()  # while the call runs: its error says why
            raise OSError("the pool is closed")

    with pytest.raises(BackendError, match="the backend is closed") as closed:
        closed_while_calling()
    assert isinstance(closed.value.__cause__, OSError)


def test_records_from_documents() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 6, UTC)
    short = Fields(version="v", kind="k", data="d", meta="m")
    doc = {"v": 2, "k": "order", "d": {"a": [1]}, "m": {"by": "x"}, "at": 1_000_001}
    assert from_document(doc, short, key="k1", backend="acme") == Record(
        "k1", 2, "order", {"a": [1]}, {"by": "x"}, datetime(1970, 1, 1, 0, 0, 1, 1, UTC)
    )
    text = {"key": "k2", "version": 1, "kind": "x", "data": None, "meta": "{}", "at": at}
    assert from_document(text, Fields(text=True), backend="acme").deleted
    iso = {"key": "k3", "version": 1, "kind": "x", "data": 1, "meta": {}, "at": at.isoformat()}
    assert from_document(iso, backend="acme").at == at
    for bad, problem in [
        ([1], "not a JSON object"),
        ({**doc, "v": True}, "version is not an integer"),
        ({**doc, "m": []}, "meta is not a JSON object"),
        ({k: v for k, v in doc.items() if k != "d"}, "has no 'd'"),
        ({**doc, "at": 10**20}, "out of range"),
    ]:
        with pytest.raises(SerializationError, match=problem) as err:
            from_document(bad, short, key="k1", backend="acme", where="f.json")
        assert str(err.value).startswith("f.json: stored version of 'k1' is not a statekit record")
        assert (err.value.key, err.value.backend) == ("k1", "acme")


class Log:
    """A commit log the follower reads: record i has commit number i + 1."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.failures = 0

    def commit(self, key: str) -> None:
        self.records.append(Record(key, 1, "k", 1, {}, datetime.now(UTC)))

    async def position(self) -> int:
        return len(self.records)

    async def read(self, cursor: int) -> tuple[Sequence[Record], int]:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("away", backend="acme")
        page = self.records[cursor : cursor + 2]  # pages of two
        return page, cursor + len(page)


async def follow(log: Log, watchers: Watchers | None = None) -> CommitFollower[int]:
    return await CommitFollower.start(
        log.position, log.read, backend="acme", where="here", interval=0.01, watchers=watchers
    )


@pytest.mark.asyncio
async def test_follower_starts_at_watch_pages_and_rides_out_an_outage() -> None:
    log = Log()
    log.commit("before")
    watchers = Watchers()
    changes = await follow(log, watchers)
    assert len(watchers) == 1
    for key in "abcde":
        log.commit(key)
    log.failures = 2
    got = [(await changes.__anext__()).key for _ in range(5)]
    assert got == list("abcde") and changes.reconnects == 2
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(changes.__anext__(), 0.1)
    await watchers.close_all()
    with pytest.raises(BackendError, match="closed"):
        await changes.__anext__()
    assert len(watchers) == 0


@pytest.mark.asyncio
async def test_follower_closed_by_its_consumer_stops() -> None:
    changes = await follow(Log())
    await changes.aclose()
    await changes.aclose()
    assert [r async for r in changes] == []
