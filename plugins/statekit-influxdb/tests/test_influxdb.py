"""InfluxDB-specific behaviour against the real server: where points land, that they
never merge, replicate, the legacy settings, errors."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from statekit_influxdb import InfluxBackend
from statekit_influxdb.options import with_options
from statekit_influxdb.points import SUB_MICRO

import statekit
from statekit.backend import Record, Write
from statekit.codec import to_micros
from statekit.errors import BackendError, BackendUnavailable, CapabilityError
from statekit.store import StateStore

from .conftest import Raw  # type: ignore[import-not-found]


@pytest_asyncio.fixture
async def url(
    namespace_url: Callable[[], str], drop: Callable[[str], Awaitable[None]]
) -> AsyncIterator[str]:
    fresh = namespace_url()
    yield fresh
    await drop(fresh)


@pytest_asyncio.fixture
async def backend(url: str) -> AsyncIterator[InfluxBackend]:
    backend = await InfluxBackend.open(url)
    yield backend
    await backend.aclose()


def _ns(backend: InfluxBackend) -> str:
    return f"ns = '{backend.namespace}'"


@pytest.mark.asyncio
async def test_points_land_at_the_write_time_not_1970(backend: InfluxBackend, raw: Raw) -> None:
    """1.6 reads precision=us as ns (points land in 1970): the time must be the record's."""
    store = StateStore(backend, owns_backend=False)
    record = await store.put("position/EURUSD", {"qty": 1}, kind="position")
    rows = await raw.rows(f'SELECT "version", "kind" FROM "statekit" WHERE {_ns(backend)}')
    assert len(rows) == 1
    time_ns, version, kind = rows[0]
    assert isinstance(time_ns, int) and (version, kind) == (1, "position")
    assert time_ns // 1000 == to_micros(record.at)
    assert abs(datetime.fromtimestamp(time_ns / 1e9, UTC) - datetime.now(UTC)) < timedelta(
        minutes=5
    )
    # And a time-bounded dashboard query finds it.
    recent = await raw.rows(
        f'SELECT "version" FROM "statekit" WHERE {_ns(backend)} AND time > now() - 1h'
    )
    assert len(recent) == 1


@pytest.mark.asyncio
async def test_versions_with_the_same_timestamp_do_not_merge(
    backend: InfluxBackend, raw: Raw
) -> None:
    at = datetime.now(UTC)
    # Whatever time the caller passes (a second store object, a clock that stepped
    # back), each version is stamped past the previous one: distinct points, in order.
    first = await backend.append([Write("k", {"n": 1})], at)
    second = await backend.append([Write("k", {"n": 0})], at - timedelta(seconds=1))
    third = await backend.append([Write("k", {"n": 2})], at)
    records = first + second + third
    assert [r.version for r in records] == [1, 2, 3]
    assert records[0].at < records[1].at < records[2].at
    assert [r.data for r in await backend.read("k")] == [{"n": 1}, {"n": 0}, {"n": 2}]
    rows = await raw.rows(f'SELECT "version" FROM "statekit" WHERE {_ns(backend)}')
    assert len(rows) == 3 and len({row[0] for row in rows}) == 3


@pytest.mark.asyncio
async def test_a_batch_of_one_time_in_one_request_keeps_every_version(
    backend: InfluxBackend,
) -> None:
    at = datetime.now(UTC)
    # SUB_MICRO (1,000) versions of one key in one microsecond, in one request.
    records = [Record("k", v, "state", {"v": v}, {}, at) for v in range(1, SUB_MICRO + 1)]
    await backend.replicate(records)
    stored = await backend.read("k")
    assert [r.version for r in stored] == list(range(1, SUB_MICRO + 1))
    assert {r.at for r in stored} == {at}


@pytest.mark.asyncio
async def test_replicate_writes_exactly_and_is_idempotent(backend: InfluxBackend, raw: Raw) -> None:
    base = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    records = [
        Record("order/7f3a", 1, "order", {"qty": "1.5"}, {"user_id": "t1"}, base),
        Record("order/7f3a", 2, "order", {"qty": "2"}, {}, base + timedelta(microseconds=3)),
        Record("order/7f3a", 3, "order", None, {"why": "filled"}, base + timedelta(seconds=1)),
        Record("pos/a\\b 50%", 4, "position", [1, 2.5, "x"], {}, base),
    ]
    await backend.replicate(records)
    await backend.replicate(records[1:])  # a retried copy
    assert await backend.read("order/7f3a") == records[:3]
    assert await backend.read("pos/a\\b 50%") == [records[3]]
    assert await backend.latest(["order/7f3a", "pos/a\\b 50%"]) == {
        "order/7f3a": records[2],
        "pos/a\\b 50%": records[3],
    }
    count = await raw.rows(f'SELECT count("version") FROM "statekit" WHERE {_ns(backend)}')
    assert count[0][1] == 4
    store = StateStore(backend, owns_backend=False)
    assert [r.key async for r in store.scan()] == ["pos/a\\b 50%"]  # the order is deleted
    assert await store.get("order/7f3a", as_of=base + timedelta(microseconds=5)) == records[1]


@pytest.mark.asyncio
async def test_odd_keys_round_trip_and_scan_by_prefix(backend: InfluxBackend) -> None:
    store = StateStore(backend, owns_backend=False)
    keys = ["a.b*c", "a.b/d", "a\\x", "a%y", "a,b=c d", "ab", "a'q\"", "(x)"]
    for key in keys:
        await store.put(key, {"k": key})
    for key in keys:
        got = await store.get(key)
        assert got is not None and got.data == {"k": key}
    assert [r.key async for r in store.scan("a.b")] == ["a.b*c", "a.b/d"]
    assert [r.key async for r in store.scan("a\\")] == ["a\\x"]
    assert [r.key async for r in store.scan("a%")] == ["a%y"]
    assert [r.key async for r in store.scan("(")] == ["(x)"]
    assert [r.key async for r in store.scan()] == sorted(keys)


@pytest.mark.asyncio
async def test_namespaces_are_isolated(url: str, namespace_url: Callable[[], str]) -> None:
    other = namespace_url()
    async with await statekit.open(url) as one, await statekit.open(other) as two:
        try:
            await one.put("k", 1)
            await two.put("k", "two")
            await two.put("k", "two again")
            assert (await one.get("k")).version == 1  # type: ignore[union-attr]
            assert [r.key async for r in two.scan()] == ["k"]
            assert await one.backend.prune("k", 5) == 0
            assert len(await two.history("k")) == 2
        finally:
            assert isinstance(two.backend, InfluxBackend)
            await two.backend.drop_namespace()


@pytest.mark.asyncio
async def test_expect_and_batches_are_refused(url: str) -> None:
    async with await statekit.open(url) as store:
        await store.put("k", 1)
        with pytest.raises(CapabilityError) as err:
            await store.put("k", 2, expect=1)
        assert err.value.capability == "compare_and_set"
        with pytest.raises(CapabilityError) as err:
            await store.batch([Write("a", 1), Write("b", 2)])
        assert err.value.capability == "atomic_batch"
        with pytest.raises(CapabilityError):
            await store.update("k", lambda v: v)
        assert [r.version for r in await store.history("k")] == [1]


@pytest.mark.asyncio
async def test_legacy_settings_reach_the_server(
    influx_url: str, raw: Raw, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """TRADING_STATE_INFLUXDB_* and no URL: statekit.open() creates the bucket's database."""
    from statekit_influxdb import parse_url

    bucket = f"legacy_{uuid.uuid4().hex[:10]}"
    options = parse_url(influx_url)
    monkeypatch.chdir(str(tmp_path))
    for name in ("STATEKIT_URL", "STATEKIT_CONFIG_FILE", "STATEKIT_ENV_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRADING_STATE_DB_TYPE", "influxdb")
    monkeypatch.setenv("TRADING_STATE_INFLUXDB_URL", options.base_url)
    monkeypatch.setenv(
        "TRADING_STATE_INFLUXDB_TOKEN", "legacy-token"
    )  # 1.x without auth ignores it
    monkeypatch.setenv("TRADING_STATE_INFLUXDB_ORG", "trading-org")
    monkeypatch.setenv("TRADING_STATE_INFLUXDB_BUCKET", bucket)
    try:
        async with await statekit.open() as store:
            assert isinstance(store.backend, InfluxBackend)
            assert store.backend.database == bucket
            await store.put("position/EURUSD", {"qty": 1}, kind="position")
            assert "legacy-token" not in str(store.backend.describe())
        rows = await raw.rows('SELECT "version", "kind" FROM "statekit"', database=bucket)
        assert [row[1:] for row in rows] == [[1, "position"]]
    finally:
        await raw.query(f'DROP DATABASE "{bucket}"')


@pytest.mark.asyncio
async def test_server_errors_carry_influxdb_text(influx_url: str) -> None:
    missing = with_options(influx_url.rsplit("/", 1)[0] + "/no_such_db", create="false")
    async with await statekit.open(missing) as store:
        with pytest.raises(BackendError) as err:
            await store.put("k", 1)
        assert "database not found" in str(err.value)
        assert not isinstance(err.value, BackendUnavailable)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.asyncio
async def test_an_unreachable_server_is_unavailable_and_no_secret_shows() -> None:
    port = _closed_port()
    for url in (
        f"influxdb://127.0.0.1:{port}/db?token=t0psecret",
        f"influxdb://trader:pa55word@127.0.0.1:{port}/db?auth=params",
    ):
        with pytest.raises(BackendUnavailable) as err:
            await statekit.open(url)
        assert err.value.retryable
        text = str(err.value) + repr(err.value.__cause__)
        assert "t0psecret" not in text and "pa55word" not in text


@pytest.mark.asyncio
async def test_health_and_describe(backend: InfluxBackend) -> None:
    health = await backend.health()
    assert health.ok and health.latency_ms > 0
    assert str(health.detail["server"]).startswith("influxdb 1.")
    facts = backend.describe()
    assert facts["backend"] == "influxdb" and facts["namespace"] == backend.namespace
    assert sorted(facts["capabilities"]) == ["durable", "history"]
