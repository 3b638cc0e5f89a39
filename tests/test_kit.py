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
from statekit.kit import CommitFollower, DriverGuard, StoreUrl, Watchers, record, stored

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
