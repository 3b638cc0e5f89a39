"""Behaviour specific to Redis, against the real server: namespaces, key layout, watch
resume and trimming, durability checks, corruption, existing clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from statekit_redis import Layout, RedisBackend
from statekit_redis.backend import INLINE_MAX
from statekit_redis.options import parse_url, with_namespace

import statekit
from statekit import Write
from statekit.backend import Capability, Record
from statekit.codec import from_micros, to_micros
from statekit.errors import BackendError, BackendUnavailable, ConfigError, SerializationError
from statekit.store import StateStore
from statekit.testing import server_control

Opener = Callable[..., Awaitable[StateStore]]


@pytest_asyncio.fixture
async def open_store(
    namespace_url: Callable[[], str], drop: Callable[[str], Awaitable[None]]
) -> AsyncIterator[Opener]:
    """Opens stores (a fresh namespace unless a URL is given); closes and drops them after."""
    opened: list[tuple[str, StateStore]] = []

    async def open_(url: str | None = None, **options: str) -> StateStore:
        url = url or namespace_url()
        if options:
            url += "&" + "&".join(f"{k}={v}" for k, v in options.items())
        store = await statekit.open(url)
        opened.append((url, store))
        return store

    yield open_
    for _, store in opened:
        await store.aclose()
    for url in {parse_url(u).namespace: u for u, _ in opened}.values():
        await drop(url)


def layout(store: StateStore) -> Layout:
    backend = store.backend
    assert isinstance(backend, RedisBackend)
    return backend.layout


async def namespace_keys(raw: aioredis.Redis, store: StateStore) -> set[str]:
    pattern = layout(store).prefix + "*"
    return {key.decode() async for key in raw.scan_iter(match=pattern, count=1000)}


async def take(changes: AsyncIterator[Record], count: int, within: float = 20.0) -> list[Record]:
    out: list[Record] = []

    async def run() -> None:
        async for record in changes:
            out.append(record)
            if len(out) == count:
                return

    await asyncio.wait_for(run(), within)
    return out


# -- namespaces and layout ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_namespaces_are_isolated(open_store: Opener) -> None:
    one, two = await open_store(), await open_store()
    async with one.watch("") as changes_one, two.watch("") as changes_two:
        for i in range(3):
            await one.put("position/EURUSD", {"qty": i}, kind="pos")
        await two.put("position/EURUSD", {"qty": 100}, kind="pos")
        await two.put("position/GBPUSD", {"qty": 200}, kind="pos")

        assert (await one.get("position/EURUSD")).version == 3  # type: ignore[union-attr]
        assert (await two.get("position/EURUSD")).version == 1  # type: ignore[union-attr]
        assert [r.key async for r in one.scan("position/")] == ["position/EURUSD"]
        assert [r.key async for r in two.scan("position/")] == [
            "position/EURUSD",
            "position/GBPUSD",
        ]
        assert len(await one.history("position/EURUSD")) == 3
        assert len(await two.history("position/EURUSD")) == 1
        assert [(r.key, r.data) for r in await take(changes_two, 2)] == [
            ("position/EURUSD", {"qty": 100}),
            ("position/GBPUSD", {"qty": 200}),
        ]
        assert [r.version for r in await take(changes_one, 3)] == [1, 2, 3]
        with pytest.raises(TimeoutError):
            await take(changes_one, 1, within=0.3)
    assert await one.backend.prune("position/EURUSD", 3) == 2
    assert len(await two.history("position/EURUSD")) == 1


@pytest.mark.asyncio
async def test_every_key_of_a_namespace_is_in_one_cluster_slot(
    open_store: Opener, raw: aioredis.Redis
) -> None:
    store = await open_store()
    await store.put("a", 1)
    await store.batch([Write("b", 2), Write("c/ü", 3), Write("{tag}d", 4)])
    await store.delete("a")
    keys = await namespace_keys(raw, store)
    names = layout(store)
    assert keys == {
        names.heads,
        names.live,
        names.log,
        names.seq,
        names.meta,
        names.history("a"),
        names.history("b"),
        names.history("c/ü"),
        names.history("{tag}d"),
    }
    assert len({key_slot(key.encode()) for key in keys}) == 1


@pytest.mark.asyncio
async def test_stored_layout(open_store: Opener, raw: aioredis.Redis) -> None:
    store = await open_store()
    put = await store.put("k", {"x": [1, 2.5]}, kind="note", meta={"user_id": "u"})
    gone = await store.delete("k")
    names = layout(store)
    assert await raw.hgetall(names.heads) == {b"k": f"2:0:{to_micros(gone.at)}".encode()}
    assert await raw.zrange(names.live, 0, -1) == []
    members = await raw.zrange(names.history("k"), 0, -1, withscores=True)
    assert [score for _, score in members] == [1.0, 2.0]
    assert members[0][0].startswith(f'{{"v":1,"at":{to_micros(put.at)},"k":'.encode())
    first = json.loads(members[0][0])
    assert first == {
        "v": 1,
        "k": "note",
        "m": {"user_id": "u"},
        "at": first["at"],
        "d": {"x": [1, 2.5]},
    }
    assert json.loads(members[1][0])["d"] is None
    entries = await raw.xrange(names.log)
    assert [entry_id for entry_id, _ in entries] == [b"1-0", b"2-0"]
    assert entries[0][1][b"k"] == b"k" and entries[0][1][b"v"] == b"1"
    assert await raw.get(names.seq) == b"2"
    assert await raw.hget(names.meta, "layout") == b"2"
    assert (put.version, gone.version) == (1, 2)


@pytest.mark.asyncio
async def test_a_layout_1_namespace_is_read_written_and_marked(
    open_store: Opener, raw: aioredis.Redis, namespace_url: Callable[[], str]
) -> None:
    """What statekit-redis 0.1 left (``at`` after the meta, heads without it) goes on
    working: its versions read, time travel finds them, new versions rise past them."""
    url = namespace_url()
    names = layout(await open_store(url))
    future = to_micros(datetime.now(UTC)) + 60_000_000  # a writer whose clock ran ahead
    old = [f'{{"v":{v},"k":"state","m":{{"n":"x"}},"at":{future + v},"d":{v}}}' for v in (1, 2)]
    await raw.zadd(names.history("old"), {old[0]: 1, old[1]: 2})
    await raw.hset(names.heads, "old", "2:1")
    await raw.zadd(names.live, {"old": 0})
    await raw.hset(names.meta, "layout", 1)
    again = await open_store(url)
    assert await raw.hget(names.meta, "layout") == b"2"
    assert (await again.get("old")).data == 2  # type: ignore[union-attr]
    new = await again.put("old", 3)
    assert new.version == 3 and to_micros(new.at) == future + 3  # past v2, not the clock
    assert (await again.get("old", as_of=from_micros(future + 1))).data == 1  # type: ignore[union-attr]
    assert (await again.get("old", as_of=new.at)) == new


@pytest.mark.asyncio
async def test_scan_bounds_with_lex_marker_characters(open_store: Opener) -> None:
    store = await open_store()
    keys = ["-a", "+b", "[c", "(d", "[[e", "plain", "\U0010ffffz"]
    await store.batch([Write(k, k) for k in keys])
    assert [r.key async for r in store.scan()] == sorted(keys)
    assert [r.key async for r in store.scan("[")] == ["[[e", "[c"]
    assert [r.key async for r in store.scan("-")] == ["-a"]
    assert [r.key async for r in store.scan("+")] == ["+b"]
    assert [r.key async for r in store.scan("\U0010ffff")] == ["\U0010ffffz"]


@pytest.mark.asyncio
async def test_drop_namespace_removes_everything(open_store: Opener, raw: aioredis.Redis) -> None:
    store = await open_store()
    await store.batch([Write(f"k/{i}", i) for i in range(1_100)])
    backend = store.backend
    assert isinstance(backend, RedisBackend)
    assert await backend.drop_namespace() == 1_100 + 5
    assert await namespace_keys(raw, store) == set()


@pytest.mark.asyncio
async def test_a_newer_layout_is_refused(
    namespace_url: Callable[[], str], raw: aioredis.Redis, drop: Callable[[str], Awaitable[None]]
) -> None:
    url = namespace_url()
    meta = Layout(parse_url(url).namespace).meta
    await raw.hset(meta, "layout", 99)
    try:
        with pytest.raises(BackendError, match="layout version 99"):
            await RedisBackend.open(url)
    finally:
        await raw.delete(meta)
    await drop(url)


@pytest.mark.asyncio
async def test_corrupt_stored_versions_are_serialization_errors(
    open_store: Opener, raw: aioredis.Redis
) -> None:
    store = await open_store()
    await store.put("ok", 1)
    history = layout(store).history("bad")
    await raw.zadd(history, {b"{not json": 1})
    with pytest.raises(SerializationError) as err:
        await store.backend.latest(["bad"])
    assert err.value.key == "bad"
    await raw.delete(history)
    await raw.zadd(history, {b'{"v":1}': 1})
    with pytest.raises(SerializationError, match="not a statekit record"):
        await store.backend.read("bad")
    await raw.delete(history)  # written by hand, so drop_namespace() does not know it


@pytest.mark.asyncio
async def test_wrong_key_types_are_backend_errors(open_store: Opener, raw: aioredis.Redis) -> None:
    store = await open_store()
    await raw.set(layout(store).heads, "not a hash")
    with pytest.raises(BackendError, match="something other than statekit"):
        await store.put("k", 1)
    await raw.delete(layout(store).heads)


# -- watch -------------------------------------------------------------------------------


async def kill_watcher(raw: aioredis.Redis) -> int:
    """CLIENT KILL the connections blocked in XREAD (the watcher), once there is one."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        ids = [c["id"] for c in await raw.client_list() if c.get("cmd") == "xread"]
        if ids or asyncio.get_running_loop().time() > deadline:
            return sum([await raw.client_kill_filter(_id=i) for i in ids])
        await asyncio.sleep(0.01)  # the watcher is reconnecting


@pytest.mark.asyncio
async def test_watch_resumes_after_its_connection_is_killed(
    open_store: Opener, raw: aioredis.Redis
) -> None:
    store = await open_store()
    total, kills = 150, 0
    async with store.watch("w/") as changes:
        expected: list[tuple[str, int]] = []

        async def write() -> None:
            nonlocal kills
            for i in range(total):
                record = await store.put(f"w/{i % 7}", {"i": i})
                expected.append((record.key, record.version))
                await store.put("elsewhere", i)  # outside the prefix
                if i % 30 == 15:
                    kills += await kill_watcher(raw)
                await asyncio.sleep(0)

        writer = asyncio.create_task(write())
        got = await take(changes, total)
        await writer
        assert [(r.key, r.version) for r in got] == expected
        assert [r.data for r in got] == [{"i": i} for i in range(total)]
        with pytest.raises(TimeoutError):  # and nothing twice
            await take(changes, 1, within=0.5)
    assert kills == 5


@pytest.mark.asyncio
async def test_watch_reports_entries_trimmed_before_it_read_them(open_store: Opener) -> None:
    store = await open_store(log_max="10")
    changes = await store.backend.watch("")
    try:
        # MAXLEN ~ trims whole stream nodes (100 entries each): 300 commits lose the oldest.
        await store.batch([Write(f"k/{i}", i) for i in range(300)])
        with pytest.raises(BackendError, match=r"watch fell behind: log entries 1 to \d+"):
            await take(changes, 1)
    finally:
        await changes.aclose()  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_watch_reads_large_versions_from_their_history(
    open_store: Opener, raw: aioredis.Redis
) -> None:
    store = await open_store()
    big = {"blob": "x" * (INLINE_MAX + 1)}
    async with store.watch("") as changes:
        await store.put("small", 1)
        await store.put("big", big)
        await store.batch([Write("big2", big), Write("small2", 2)])
        got = await take(changes, 4)
    assert [(r.key, r.data) for r in got] == [
        ("small", 1),
        ("big", big),
        ("big2", big),
        ("small2", 2),
    ]
    fields = [f for _, f in await raw.xrange(layout(store).log)]
    assert [b"r" in f for f in fields] == [True, False, False, True]


@pytest.mark.asyncio
async def test_a_watch_ends_with_an_error_when_the_backend_closes(
    namespace_url: Callable[[], str], drop: Callable[[str], Awaitable[None]]
) -> None:
    url = namespace_url()
    backend = await RedisBackend.open(url)
    changes = await backend.watch("")
    waiting = asyncio.create_task(anext(changes))
    await asyncio.sleep(0.1)  # blocked in XREAD
    await backend.aclose()
    with pytest.raises(BackendError, match="closed"):
        await asyncio.wait_for(waiting, 10)
    await changes.aclose()  # type: ignore[attr-defined]
    await drop(url)


# -- durability and health ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_test_server_persists_so_the_store_is_durable(open_store: Opener) -> None:
    store = await open_store()
    assert Capability.DURABLE in store.capabilities
    health = await store.health()
    assert health.ok and health.latency_ms > 0
    detail: dict[str, Any] = dict(health.detail)
    assert detail["persistence"]["appendonly"] == "yes"
    assert detail["persistence"]["source"] == "CONFIG GET"
    assert detail["durable"] is True
    assert detail["warnings"] == []
    assert str(detail["server"]).startswith("redis ")
    await store.put("k", 1)
    detail = dict((await store.health()).detail)
    assert (detail["keys"], detail["live_keys"], detail["log_entries"]) == (1, 1, 1)


@pytest.mark.asyncio
async def test_a_server_without_persistence_is_not_durable(
    throwaway_redis: Callable[..., str],
) -> None:
    url = throwaway_redis("--save", "", "--appendonly", "no")
    async with await statekit.open(with_namespace(url, "t")) as store:
        assert Capability.DURABLE not in store.capabilities
        assert store.capabilities == {
            Capability.ATOMIC_BATCH,
            Capability.COMPARE_AND_SET,
            Capability.GUARDED_APPEND,
            Capability.WATCH,
            Capability.HISTORY,
        }
        assert type(store.backend).capabilities == store.capabilities  # the class is untouched
        health = await store.health()
        assert health.ok
        detail: dict[str, Any] = dict(health.detail)
        assert detail["durable"] is False
        (warning,) = detail["warnings"]
        assert "keeps nothing on disk" in warning
        assert (await store.put("still", "works")).version == 1


@pytest.mark.asyncio
async def test_a_server_that_evicts_keys_is_not_durable(
    throwaway_redis: Callable[..., str],
) -> None:
    url = throwaway_redis(
        "--save", "", "--appendonly", "yes", "--maxmemory", "100mb",
        "--maxmemory-policy", "allkeys-lru",
    )  # fmt: skip
    async with await statekit.open(with_namespace(url, "t")) as store:
        assert Capability.DURABLE not in store.capabilities
        detail: dict[str, Any] = dict((await store.health()).detail)
        assert detail["persistence"]["maxmemory_policy"] == "allkeys-lru"
        (warning,) = detail["warnings"]
        assert "evicts keys" in warning


@pytest.mark.asyncio
async def test_config_disabled_reads_aof_from_info(throwaway_redis: Callable[..., str]) -> None:
    # Managed Redis often renames CONFIG away; INFO persistence still tells about AOF.
    url = throwaway_redis("--save", "", "--appendonly", "yes", "--rename-command", "CONFIG", "")
    async with await statekit.open(with_namespace(url, "t")) as store:
        assert Capability.DURABLE in store.capabilities
        detail: dict[str, Any] = dict((await store.health()).detail)
        assert detail["persistence"] == {
            "appendonly": "yes",
            "appendfsync": "unknown",
            "save": "unknown",
            "maxmemory": "0",
            "maxmemory_policy": "noeviction",
            "source": "INFO",
        }


# -- existing clients ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_backend_on_an_existing_client_leaves_it_open(
    raw: aioredis.Redis, namespace_url: Callable[[], str]
) -> None:
    namespace = parse_url(namespace_url()).namespace
    backend = await RedisBackend.from_client(raw, namespace=namespace)
    async with StateStore(backend) as store:
        assert (await store.put("k", 1)).version == 1
    assert await raw.ping()  # still usable
    with pytest.raises(BackendError, match="closed"):
        await backend.latest(["k"])
    again = await RedisBackend.from_client(raw, namespace=namespace)
    assert await again.drop_namespace() == 1 + 5


@pytest.mark.asyncio
async def test_a_decoding_client_is_refused(redis_url: str) -> None:
    client = aioredis.Redis.from_url(parse_url(redis_url).driver_url, decode_responses=True)
    try:
        with pytest.raises(ConfigError, match="decode_responses=False"):
            await RedisBackend.from_client(client)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_client_that_resends_commands_is_refused(
    redis_url: str, namespace_url: Callable[[], str]
) -> None:
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    client = aioredis.Redis(host=host, port=int(port))  # redis-py 6+: retries by default
    try:
        with pytest.raises(ConfigError, match="does not re-send commands"):
            await RedisBackend.from_client(client)
    finally:
        await client.aclose()
    client = aioredis.Redis(host=host, port=int(port), retry=Retry(NoBackoff(), 0))
    try:
        namespace = parse_url(namespace_url()).namespace
        backend = await RedisBackend.from_client(client, namespace=namespace)
        assert (await backend.latest(["k"])) == {}
        assert await backend.drop_namespace() == 1  # the layout mark
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_watch_resumes_after_a_server_restart(open_store: Opener) -> None:
    server = server_control("redis")
    store = await open_store()
    async with store.watch("") as changes:
        await store.put("a", 1)
        assert [r.key for r in await take(changes, 1)] == ["a"]
        waiting = asyncio.create_task(take(changes, 2, within=60))
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await store.put("b", 2)
                break
            except BackendUnavailable:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        await store.put("c", 3)
        assert [(r.key, r.version) for r in await waiting] == [("b", 1), ("c", 1)]
