"""Namespaces, transactions, the no-transaction path, errors, and opening."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient
from statekit_mongodb import MongoBackend
from statekit_mongodb.documents import HEADS, VERSIONS
from statekit_mongodb.options import MongoOptions

from statekit.backend import Capability, Record, Write
from statekit.codec import to_micros
from statekit.errors import BackendUnavailable, CapabilityError, ConfigError, ConflictError
from statekit.store import StateStore

Opener = Callable[..., Awaitable[MongoBackend]]


def now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.asyncio
async def test_namespaces_are_isolated(open_backend: Opener) -> None:
    one, two = await open_backend("a"), await open_backend("b")
    await one.append([Write("k", 1)], now())
    await two.append([Write("k", 2)], now())
    await two.append([Write("k", 3)], now())
    assert (await one.latest(["k"]))["k"].data == 1
    assert [r.version for r in await two.read("k")] == [1, 2]
    assert [r.key async for r in one.scan()] == ["k"]
    assert await one.drop_namespace() == 1
    assert await one.latest(["k"]) == {}
    assert (await two.latest(["k"]))["k"].version == 2


@pytest.mark.asyncio
async def test_capabilities_come_from_hello(open_backend: Opener) -> None:
    backend = await open_backend()
    assert Capability.WATCH in backend.capabilities  # change streams, or polling
    if backend.topology == "standalone":
        assert Capability.ATOMIC_BATCH not in backend.capabilities
        assert backend.sequenced and not backend.change_streams
    else:
        assert Capability.ATOMIC_BATCH in backend.capabilities
        assert backend.transactions and backend.change_streams
    health = await backend.health()
    assert health.ok and health.detail["topology"] == backend.topology


@pytest.mark.asyncio
async def test_transactions_off_refuses_batches_but_keeps_cas(
    open_backend: Opener, mongo_url: str
) -> None:
    backend = await open_backend("off", mongo_url + "&transactions=off")
    assert not backend.transactions
    assert Capability.ATOMIC_BATCH not in backend.capabilities
    store = StateStore(backend, owns_backend=False)
    with pytest.raises(CapabilityError):
        await store.batch([Write("a", 1), Write("b", 2)])
    with pytest.raises(CapabilityError):
        await backend.append([Write("a", 1), Write("b", 2)], now())
    await store.put("a", 1, expect=0)
    with pytest.raises(ConflictError):
        await store.put("a", 2, expect=0)
    await asyncio.gather(*(store.update("n", lambda v: (v or 0) + 1) for _ in range(10)))
    assert [r.version for r in await store.history("n", newest_first=False)] == list(range(1, 11))


@pytest.mark.asyncio
async def test_a_half_done_write_is_finished_by_the_next_one(open_backend: Opener) -> None:
    """A writer that died after moving the head (the version still ``pending``) leaves
    nothing missing: readers and writers finish its copy into the history."""
    backend = await open_backend()
    await backend.append([Write("k", "v1")], now())
    heads = backend._heads
    pending = {
        "ns": backend.namespace,
        "key": "k",
        "v": 2,
        "kind": "state",
        "data": '"v2"',
        "meta": "{}",
        "at": 1,
    }
    head = {**pending, "live": True}
    await heads.update_one(
        {"ns": backend.namespace, "key": "k"}, {"$set": {**head, "pending": pending}}
    )
    assert [r.data for r in await backend.read("k")] == ["v1", "v2"]
    await heads.update_one({"ns": backend.namespace, "key": "k"}, {"$set": {"pending": pending}})
    records = await backend.append([Write("k", "v3", expect=2)], now())
    assert records[0].version == 3
    assert [r.version for r in await backend.read("k")] == [1, 2, 3]
    if backend.transactions:
        await heads.update_one(
            {"ns": backend.namespace, "key": "k"},
            {"$set": {"pending": {**pending, "v": 3, "data": '"v3"'}}},
        )
        batch = await backend.append([Write("k", "v4", expect=3), Write("j", 1)], now())
        assert [r.version for r in batch] == [4, 1]


@pytest.mark.asyncio
async def test_a_batch_is_one_transaction(open_backend: Opener) -> None:
    backend = await open_backend()
    store = StateStore(backend, owns_backend=False)
    await store.put("a", 0)
    if not backend.transactions:  # a standalone mongod: the batch is refused, never faked
        with pytest.raises(CapabilityError):
            await store.batch([Write("a", 1, expect=1), Write("b0", 0, expect=0)])
        return

    async def racer(i: int) -> bool:
        try:
            await store.batch([Write("a", i, expect=1), Write(f"b{i}", i, expect=0)])
            return True
        except ConflictError:
            return False

    results = await asyncio.gather(*(racer(i) for i in range(6)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert [r.key async for r in store.scan("b")] == [f"b{winner}"]
    assert (await store.get("a")).data == winner  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_values_are_stored_as_json_text(open_backend: Opener) -> None:
    backend = await open_backend()
    value = {"big": 2**70, "$dollar": 1, "dot.key": [1.0, 1], "z": 1, "a": 2}
    await backend.append([Write("v", value)], now())
    got = (await backend.latest(["v"]))["v"]
    assert got.data == value and list(got.data) == list(value)  # type: ignore[arg-type]
    assert type(got.data["dot.key"][0]) is float  # type: ignore[index,call-overload]
    raw = await backend._versions.find_one({"ns": backend.namespace, "key": "v"})
    assert raw is not None and isinstance(raw["data"], str)


@pytest.mark.asyncio
async def test_replicate_is_idempotent(open_backend: Opener) -> None:
    backend = await open_backend()
    at = now()
    records = [Record("m", v, "state", {"v": v}, {}, at) for v in (1, 2, 3)]
    await backend.replicate(records[:2])
    await backend.replicate(records)
    await backend.replicate(records[:1])
    assert [r.version for r in await backend.read("m")] == [1, 2, 3]
    assert (await backend.latest(["m"]))["m"] == records[2]


@pytest.mark.asyncio
async def test_an_unreachable_server_fails_fast_without_the_password() -> None:
    with pytest.raises(BackendUnavailable) as err:
        await MongoBackend.open("mongodb://admin:hunter2@127.0.0.1:9/?serverSelectionTimeoutMS=300")
    assert "hunter2" not in str(err.value) and err.value.retryable


@pytest.mark.asyncio
async def test_from_client_leaves_the_client_open(secantus_url: str) -> None:
    options = MongoOptions.parse(secantus_url)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        options.uri, **options.client_kwargs
    )
    try:
        backend = await MongoBackend.from_client(client, namespace="fromclient_test")
        await backend.append([Write("k", 1)], now())
        await backend.drop_namespace()
        await backend.aclose()
        assert await client.admin.command("ping")
        with pytest.raises(ConfigError):
            await MongoBackend.from_client(client, namespace="bad/ns")
    finally:
        await client.close()


def test_collection_names() -> None:
    assert (HEADS, VERSIONS) == ("statekit_heads", "statekit_versions")


def _stages(plan: dict[str, object]) -> list[dict[str, object]]:
    """Every stage of an explain plan, outermost first."""
    found = [plan]
    for name in ("inputStage", "queryPlan"):
        inner = plan.get(name)
        if isinstance(inner, dict):
            found += _stages(inner)
    return found


@pytest.mark.asyncio
async def test_as_of_is_one_seek_of_the_ns_key_at_index(open_backend: Opener) -> None:
    """The planner's view (what a real MongoDB executes as one key examined): an index
    scan with bounds on (ns, key, at), not a collection scan of the history."""
    backend = await open_backend("asof")
    written = [(await backend.append([Write("k", n)], now()))[0] for n in range(20)]
    query, projection, sort = backend.as_of_query("k", to_micros(written[9].at))
    assert (await backend.as_of(["k"], written[9].at))["k"] == written[9]
    cursor = backend._versions.find(query, projection).sort(sort).limit(1)
    plan = (await cursor.explain())["queryPlanner"]["winningPlan"]
    scans = [stage for stage in _stages(plan) if stage.get("stage") == "IXSCAN"]
    assert [scan["keyPattern"] for scan in scans] == [{"ns": 1, "key": 1, "at": 1}], plan
