"""The StateStore over the contract: bad input, retries, capabilities, watch, snapshots."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import pytest
import pytest_asyncio

import statekit
from statekit import (
    ANY,
    Capability,
    CapabilityError,
    Codec,
    ConflictError,
    PluginError,
    PluginHost,
    Retention,
    SerializationError,
    StateStore,
    ValidationError,
    Write,
)
from statekit.backend import JSON
from statekit.backends.memory import MemoryBackend
from statekit.codec import prefix_end, redact_url
from statekit.config import Settings
from statekit.errors import BackendError, StatekitError
from statekit.testing._guard import GuardedBackend, LeakedDriverError


@pytest_asyncio.fixture
async def store() -> AsyncIterator[StateStore]:
    async with StateStore(await MemoryBackend.open(), max_value_bytes=4096) as s:
        yield s


async def snapshot_of(store: StateStore) -> list[tuple[str, int, JSON]]:
    """Everything stored, to prove a refused write changed nothing."""
    out = []
    async for head in store.backend.scan():
        for rec in await store.backend.read(head.key):
            out.append((rec.key, rec.version, rec.data))
    return out


BAD_KEYS: list[tuple[Any, str]] = [
    ("", "empty"),
    ("x" * 513, "513 characters"),
    ("bad\nkey", "control character"),
    ("tab\tkey", "control character"),
    ("nul\x00key", "control character"),
    ("lone\ud800", "surrogate"),
    (42, "must be a str"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
async def test_bad_keys_are_refused_with_the_problem_named(
    store: StateStore, key: Any, message: str
) -> None:
    await store.put("keep", {"v": 1})
    before = await snapshot_of(store)
    with pytest.raises(ValidationError, match=message):
        await store.put(key, {"v": 2})
    with pytest.raises(ValidationError, match=message):
        await store.batch([Write("keep", {"v": 3}), Write(key, 1)])
    assert await snapshot_of(store) == before


BAD_VALUES: list[tuple[Any, str]] = [
    (math.nan, "NaN"),
    ({"px": math.inf}, r"\$\.px"),
    (b"bytes", "bytes"),
    ({"tags": {1, 2}}, r"set at \$\.tags"),
    ({"qty": Decimal("1.5")}, r"Decimal at \$\.qty.*Codec"),
    ({1: "int key"}, "dict key"),
    ([object()], "object"),
    (datetime(2026, 1, 1), "datetime"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
async def test_values_json_cannot_hold_are_refused(
    store: StateStore, value: Any, message: str
) -> None:
    await store.put("keep", {"v": 1})
    before = await snapshot_of(store)
    with pytest.raises(SerializationError, match=message) as err:
        await store.put("keep", value)
    assert err.value.key == "keep"
    with pytest.raises(SerializationError):
        await store.put("other", 1, meta={"bad": value})
    with pytest.raises(SerializationError):
        await store.update("keep", lambda _: value)
    assert await snapshot_of(store) == before


@pytest.mark.asyncio
async def test_a_codec_makes_decimal_storable_one_way() -> None:
    async with StateStore(await MemoryBackend.open(), codec=Codec({Decimal: str})) as s:
        rec = await s.put("bal", {"usd": Decimal("10.01"), "lots": (1, 2)})
        assert rec.data == {"usd": "10.01", "lots": [1, 2]}
        assert (await s.get("bal")).data == {"usd": "10.01", "lots": [1, 2]}  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_enum_values_are_stored_as_plain_values(store: StateStore) -> None:
    class Side(StrEnum):
        BUY = "buy"

    class Level(IntEnum):
        HIGH = 3

    rec = await store.put("e", {"side": Side.BUY, "level": Level.HIGH, "ok": True})
    assert rec.data == {"side": "buy", "level": 3, "ok": True}
    assert type(rec.data["side"]) is str  # type: ignore[index]


@pytest.mark.asyncio
async def test_a_value_above_the_size_limit_is_refused(store: StateStore) -> None:
    await store.put("keep", "small")
    before = await snapshot_of(store)
    with pytest.raises(ValidationError, match=r"value for 'keep' is \d+ bytes; the limit is 4096"):
        await store.put("keep", "x" * 5000)
    assert await snapshot_of(store) == before


@pytest.mark.asyncio
async def test_the_caller_mutating_a_value_later_changes_nothing(store: StateStore) -> None:
    value = {"legs": [{"qty": 1}]}
    await store.put("order", value)
    value["legs"][0]["qty"] = 99
    got = await store.get("order")
    assert got is not None and got.data == {"legs": [{"qty": 1}]}
    got.data["legs"][0]["qty"] = 7  # type: ignore[index]
    assert (await store.get("order")).data == {"legs": [{"qty": 1}]}  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_other_bad_writes(store: StateStore) -> None:
    await store.put("keep", 1)
    before = await snapshot_of(store)
    with pytest.raises(ValidationError, match="use delete"):
        await store.put("keep", None)
    with pytest.raises(ValidationError, match="twice in one batch"):
        await store.batch([Write("a", 1), Write("a", 2)])
    with pytest.raises(ValidationError, match="reserved prefix"):
        await store.put("_sk/snapshot/x", 1)
    with pytest.raises(ValidationError, match="expect"):
        await store.put("keep", 2, expect=-1)
    with pytest.raises(ValidationError, match="expect"):
        await store.put("keep", 2, expect=True)
    with pytest.raises(ValidationError, match="kind"):
        await store.put("keep", 2, kind="")
    with pytest.raises(ValidationError, match="kind"):
        await store.put("keep", 2, kind="k" * 65)
    with pytest.raises(ValidationError, match="meta"):
        await store.put("keep", 2, meta=["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="timezone"):
        await store.get("keep", as_of=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="limit"):
        await store.history("keep", limit=0)
    with pytest.raises(ValidationError, match="Retention"):
        Retention()
    assert await snapshot_of(store) == before
    assert await store.batch([]) == []


@pytest.mark.asyncio
async def test_update_retries_on_conflict_then_gives_up(store: StateStore) -> None:
    await store.put("n", 0)
    calls = 0

    async def interfering(value: JSON) -> JSON:
        # Another writer sneaks in between our read and our write, every time.
        nonlocal calls
        calls += 1
        await store.put("n", -calls)
        return 1

    with pytest.raises(ConflictError) as err:
        await store.update("n", interfering, retries=3, backoff=0.0001)
    assert calls == 4 and err.value.key == "n"

    async def async_fn(value: JSON) -> JSON:
        assert isinstance(value, int)
        return value * 10

    assert (await store.update("n", async_fn)).data == -40
    assert (await store.update("fresh", lambda v: [v])).data == [None]
    with pytest.raises(ValidationError, match="returned None"):
        await store.update("n", lambda v: None)


@pytest.mark.asyncio
async def test_update_keeps_the_kind_and_deleted_keys_start_again(store: StateStore) -> None:
    await store.put("pos", {"q": 1}, kind="position")
    assert (await store.update("pos", lambda v: {"q": 2})).kind == "position"
    await store.delete("pos")
    rec = await store.update("pos", lambda v: {"q": 0 if v is None else 99})
    assert rec.data == {"q": 0} and rec.version == 4 and rec.kind == "position"


class NoFrillsBackend(MemoryBackend):
    """A backend that honestly declares nothing optional."""

    name = "nofrills"
    capabilities = frozenset({Capability.DURABLE})

    async def watch(self, prefix: str = "") -> AsyncIterator[statekit.Record]:
        raise CapabilityError("no watch", backend=self.name, capability="watch")


@pytest.mark.asyncio
async def test_missing_capabilities_are_refused_not_faked() -> None:
    async with StateStore(NoFrillsBackend()) as s:
        await s.put("k", 1)
        for call in [
            lambda: s.put("k", 2, expect=1),
            lambda: s.update("k", lambda v: v),
            lambda: s.batch([Write("a", 1), Write("b", 2)]),
            lambda: s.history("k"),
            lambda: s.get("k", as_of=datetime.now().astimezone()),
            lambda: s.prune("k", Retention(keep_last=1)),
            lambda: s.position(),
            lambda: s.changed("1"),
        ]:
            with pytest.raises(CapabilityError) as err:
                await call()
            assert err.value.backend == "nofrills"
        with pytest.raises(CapabilityError, match="'watch' capability"):
            s.watch()
        assert (await s.put("k", 3, expect=ANY)).version == 2
        # snapshots still work, without CAS and atomic batches
        snap = await s.snapshots.create()
        await s.put("k", 4)
        assert await s.snapshots.restore(snap.id) == 1
        assert (await s.get("k")).data == 3  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_watch_without_async_with_starts_at_first_step(store: StateStore) -> None:
    changes = store.watch("a/")
    await store.put("a/1", 1)  # before the first step: not seen
    task = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    await store.put("a/2", 2)
    assert (await asyncio.wait_for(task, 5)).key == "a/2"
    await changes.aclose()


@pytest.mark.asyncio
async def test_watch_and_scan_leave_out_statekit_keys(store: StateStore) -> None:
    async with store.watch() as changes:
        await store.snapshots.create("s")
        await store.put("user", 1)
        assert (await asyncio.wait_for(anext(changes), 5)).key == "user"
    assert [r.key async for r in store.scan()] == ["user"]
    assert len([r async for r in store.scan("_sk/")]) == 1


@pytest.mark.asyncio
async def test_changed_leaves_out_statekit_keys_and_refuses_a_non_text_position(
    store: StateStore,
) -> None:
    since = await store.position()
    await store.snapshots.create("s")
    await store.put("user", 1)
    assert await store.changed(since) == ["user"]
    assert len(await store.changed(since, "_sk/")) >= 1
    with pytest.raises(ValidationError, match="position"):
        await store.changed(7)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_snapshots_ids_prefixes_and_errors(store: StateStore) -> None:
    await store.put("position/A", 1, kind="position")
    await store.put("order/1", {"s": "open"}, kind="order")
    snap = await store.snapshots.create("positions only", prefix="position/", snapshot_id="eod-1")
    assert (snap.id, snap.keys, snap.prefix) == ("eod-1", 1, "position/")
    with pytest.raises(ConflictError):
        await store.snapshots.create(snapshot_id="eod-1")
    with pytest.raises(ValidationError, match="no snapshot 'nope'"):
        await store.snapshots.restore("nope")
    await store.put("order/1", {"s": "filled"}, kind="order")
    await store.put("position/B", 2, kind="position")
    second = await store.snapshots.create(snapshot_id="eod-2", prefix="position/")
    diff = await store.snapshots.diff("eod-1", "eod-2")
    assert diff.as_dict() == {"added": {"position/B": 2}, "removed": {}, "changed": {}}
    await store.snapshots.restore("eod-1")
    # restoring a prefix leaves keys outside it alone
    assert (await store.get("order/1")).data == {"s": "filled"}  # type: ignore[union-attr]
    assert await store.get("position/B") is None
    restored = await store.history("position/A")
    assert restored[0].version == 1  # unchanged value: no new version
    tomb = (await store.history("position/B"))[0]
    assert tomb.deleted and tomb.meta == {"restored_from": "eod-1"}
    assert [s.id for s in await store.snapshots.list()] == ["eod-1", "eod-2"]
    assert second.as_dict()["keys"] == 2


@pytest.mark.asyncio
async def test_retention_over_a_prefix(store: StateStore) -> None:
    for key in ["r/a", "r/b", "s/c"]:
        for i in range(5):
            await store.put(key, i)
    assert await store.apply_retention(Retention(keep_last=2), prefix="r/") == 6
    assert len(await store.history("r/a")) == 2
    assert len(await store.history("s/c")) == 5
    assert await store.prune("absent", Retention(keep_last=1)) == 0
    recent = Retention(older_than=timedelta(hours=1), keep_last=1)
    assert await store.prune("s/c", recent) == 0


@pytest.mark.asyncio
async def test_open_by_url_and_unknown_schemes(tmp_path: Any) -> None:
    settings = Settings()
    async with await statekit.open("memory://", settings=settings) as s:
        assert s.backend.name == "memory"
    builtins_only = PluginHost(autoload=False)  # as if no plugin were installed
    with pytest.raises(
        PluginError, match=r"postgresql.*installed: memory, sqlite.*statekit-postgres"
    ):
        await statekit.open("postgresql://u:pw@127.0.0.1:1/db", host=builtins_only)
    with pytest.raises(PluginError, match=r"'ftp'.*installed: memory, sqlite"):
        await statekit.open("ftp://x", settings=settings, host=builtins_only)
    with pytest.raises(ValidationError, match="not a store URL"):
        await statekit.open("just-a-path.db", settings=settings)


def test_redact_url_hides_passwords_and_tokens() -> None:
    assert redact_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert (
        redact_url("influxdb://h:8086/b?org=o&token=abc") == "influxdb://h:8086/b?org=o&token=***"
    )
    assert redact_url("sqlite:///state.db") == "sqlite:///state.db"


def test_prefix_end_orders_every_prefixed_key_below_it() -> None:
    assert prefix_end("") is None
    assert prefix_end("a/") == "a0"
    assert prefix_end("\ud7ff") == "\ue000"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None


class LeakyBackend(MemoryBackend):
    async def latest(self, keys: Any) -> Any:
        raise KeyError("driver internals")


@pytest.mark.asyncio
async def test_the_contract_guard_catches_leaking_driver_errors() -> None:
    guarded = GuardedBackend(LeakyBackend())
    with pytest.raises(LeakedDriverError, match="KeyError"):
        await guarded.latest(["k"])
    with pytest.raises(BackendError):
        await GuardedBackend(await _closed_memory()).latest(["k"])


async def _closed_memory() -> MemoryBackend:
    backend = MemoryBackend()
    await backend.aclose()
    return backend


def test_every_public_error_is_a_statekit_error() -> None:
    for name in statekit.__all__:
        obj = getattr(statekit, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, StatekitError), name
    err = ConflictError("k", 1, 2, backend="x")
    assert (err.key, err.expected, err.actual, err.backend, err.retryable) == (
        "k",
        1,
        2,
        "x",
        False,
    )
    assert statekit.BackendUnavailable("down").retryable


def test_every_statekit_error_keeps_its_fields_across_processes() -> None:
    import pickle

    from statekit.errors import CapabilityError
    from statekit.trading.errors import FencedOff, IdempotencyConflict, LockTimeout, RateLimited

    errors: list[StatekitError] = [
        FencedOff("fenced", lease="desk", token=3, current=4),
        LockTimeout("timed out", names=("balance",), timeout=1.5),
        IdempotencyConflict("differs", key="k", differences={"amount": ("1", "2")}),
        RateLimited("slow down", exchange="paper", retry_after=2.0),
        ConflictError("k", 1, 2, backend="sqlite"),
        ValidationError("bad", key="k", reason="why"),
        CapabilityError("no", backend="influxdb", capability="atomic_batch"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert copy.__dict__ == error.__dict__ and str(copy) == str(error)
