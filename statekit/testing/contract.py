"""The backend conformance suite: every backend subclasses :class:`BackendContract`.

::

    import pytest_asyncio
    from statekit.testing import BackendContract

    class TestMyBackend(BackendContract):
        @pytest_asyncio.fixture
        async def backend(self):
            backend = await MyBackend.open(url_of_an_empty_store)
            yield backend
            await backend.aclose()

        @pytest.fixture
        def backend_url(self):
            return url_of_that_same_store   # or None if other processes cannot reach it

Every test goes through a wrapper that fails when a driver exception (not a
``statekit.errors.StatekitError``) escapes the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from statekit.backend import ANY, JSON, Backend, Capability, Record, Write
from statekit.errors import (
    CapabilityError,
    ConflictError,
    HistoryUnavailable,
)
from statekit.store import Retention, StateStore
from statekit.testing._capabilities import needs
from statekit.testing._guard import GuardedBackend
from statekit.testing.changes import ChangesContract
from statekit.testing.durability import DurabilityContract, ServerControl, _bump
from statekit.testing.guards import GuardContract
from statekit.testing.history import TimeOrderContract
from statekit.testing.inputs import BadInputContract
from statekit.testing.namespaces import NamespaceContract
from statekit.testing.outage import OutageContract
from statekit.testing.snapshots import SnapshotContract

__all__ = ["BackendContract"]


async def _collect(it: AsyncIterator[Record], count: int, within: float = 10.0) -> list[Record]:
    out: list[Record] = []

    async def take() -> None:
        async for record in it:
            out.append(record)
            if len(out) == count:
                return

    await asyncio.wait_for(take(), within)
    return out


class BackendContract(
    TimeOrderContract,
    BadInputContract,
    OutageContract,
    DurabilityContract,
    GuardContract,
    ChangesContract,
    SnapshotContract,
    NamespaceContract,
):
    """Contract tests for a :class:`statekit.backend.Backend`.

    Provide the ``backend`` fixture (an async fixture yielding an EMPTY backend)
    and, when other processes can open the same store, ``backend_url``.
    """

    # -- fixtures the backend author provides ----------------------------------------

    @pytest_asyncio.fixture
    async def backend(self, *fixtures: Any, **named: Any) -> AsyncIterator[Backend]:
        """Yields an EMPTY backend, closed afterwards: each backend's test class defines
        it, taking whichever fixtures it needs (hence this signature, which type
        checkers let any override have)."""
        raise NotImplementedError("define an async `backend` fixture yielding an empty backend")
        yield  # an async generator, like the fixtures that override it

    @pytest.fixture
    def backend_url(self) -> str | None:
        """A URL that ``statekit.open`` in another process resolves to the same store."""
        return None

    @pytest.fixture
    def server(self) -> ServerControl | None:
        """Stops and starts the backend's server (``stop()``/``start()``); None if embedded."""
        return None

    # -- fixtures of the suite ----------------------------------------------------------

    @pytest_asyncio.fixture
    async def guarded(self, backend: Backend) -> GuardedBackend:
        return GuardedBackend(backend)

    @pytest_asyncio.fixture
    async def store(self, guarded: GuardedBackend) -> StateStore:
        return StateStore(guarded, owns_backend=False)

    needs = staticmethod(needs)

    # -- versions ---------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_versions_start_at_one_and_have_no_gaps(self, store: StateStore) -> None:
        versions = [(await store.put("k", {"n": i})).version for i in range(5)]
        assert versions == [1, 2, 3, 4, 5]
        deleted = await store.delete("k")
        assert deleted.version == 6 and deleted.deleted
        assert (await store.put("k", {"n": 6})).version == 7
        assert (await store.put("other", 1)).version == 1

    @pytest.mark.asyncio
    async def test_record_fields_round_trip(self, store: StateStore) -> None:
        before = datetime.now(UTC) - timedelta(seconds=1)
        put = await store.put(
            "order/1",
            {"qty": "1.5", "tags": ["a", "b"], "ok": True, "px": 1.25, "n": None},
            kind="order",
            meta={"user_id": "trader_1", "description": "opened"},
        )
        got = await store.get("order/1")
        assert got == put
        assert got.kind == "order"
        assert got.data == {"qty": "1.5", "tags": ["a", "b"], "ok": True, "px": 1.25, "n": None}
        assert got.meta == {"user_id": "trader_1", "description": "opened"}
        assert got.at.tzinfo is not None and got.at.utcoffset() == timedelta(0)
        assert before < got.at < datetime.now(UTC) + timedelta(seconds=1)

    @pytest.mark.asyncio
    async def test_absent_and_deleted_keys_read_as_none(self, store: StateStore) -> None:
        assert await store.get("nope") is None
        assert await store.backend.read("nope") == []
        await store.put("gone", 1)
        await store.delete("gone")
        assert await store.get("gone") is None
        heads = await store.backend.latest(["gone", "nope"])
        assert list(heads) == ["gone"] and heads["gone"].deleted

    @pytest.mark.asyncio
    async def test_latest_of_many_keys(self, store: StateStore) -> None:
        for i in range(3):
            await store.put(f"m/{i}", i)
        many = await store.get_many(["m/0", "m/2", "m/9"])
        assert {k: r.data for k, r in many.items()} == {"m/0": 0, "m/2": 2}

    # -- compare and set --------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_conflict_error_carries_key_expected_actual(self, store: StateStore) -> None:
        self.needs(store, Capability.COMPARE_AND_SET)
        await store.put("acct", {"bal": 1}, expect=0)
        await store.put("acct", {"bal": 2}, expect=1)
        with pytest.raises(ConflictError) as err:
            await store.put("acct", {"bal": 3}, expect=1)
        assert (err.value.key, err.value.expected, err.value.actual) == ("acct", 1, 2)
        with pytest.raises(ConflictError) as err:
            await store.put("acct", {"bal": 3}, expect=0)
        assert (err.value.expected, err.value.actual) == (0, 2)
        with pytest.raises(ConflictError) as err:
            await store.put("fresh", 1, expect=3)
        assert (err.value.key, err.value.expected, err.value.actual) == ("fresh", 3, 0)
        assert (await store.get("acct")).data == {"bal": 2}  # type: ignore[union-attr]
        assert await store.get("fresh") is None

    @pytest.mark.asyncio
    async def test_expect_zero_accepts_a_deleted_key(self, store: StateStore) -> None:
        self.needs(store, Capability.COMPARE_AND_SET)
        await store.put("idem/1", "first", expect=0)
        await store.delete("idem/1", expect=1)
        record = await store.put("idem/1", "again", expect=0)
        assert record.version == 3

    @pytest.mark.asyncio
    async def test_expect_zero_lets_exactly_one_concurrent_writer_win(
        self, store: StateStore
    ) -> None:
        self.needs(store, Capability.COMPARE_AND_SET)

        async def reserve(i: int) -> bool:
            try:
                await store.put("idem/race", {"winner": i}, expect=0)
                return True
            except ConflictError:
                return False

        results = await asyncio.gather(*(reserve(i) for i in range(10)))
        assert results.count(True) == 1
        assert len(await store.history("idem/race")) == 1

    # -- batches ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_batch_lands_whole_in_order(self, store: StateStore) -> None:
        self.needs(store, Capability.ATOMIC_BATCH)
        await store.put("b", 0)
        records = await store.batch([Write("c", 1, "x"), Write("b", 2, "y"), Write("a", None, "z")])
        assert [(r.key, r.version, r.kind) for r in records] == [
            ("c", 1, "x"),
            ("b", 2, "y"),
            ("a", 1, "z"),
        ]
        assert len({r.at for r in records}) == 1
        assert (await store.get("b")).data == 2  # type: ignore[union-attr]

    @pytest.mark.asyncio
    async def test_batch_with_one_failed_expect_writes_nothing(self, store: StateStore) -> None:
        self.needs(store, Capability.ATOMIC_BATCH, Capability.COMPARE_AND_SET)
        await store.put("pos/a", {"q": 1})
        await store.put("pos/b", {"q": 1})
        with pytest.raises(ConflictError) as err:
            await store.batch(
                [
                    Write("pos/new", {"q": 5}, expect=0),
                    Write("pos/a", {"q": 2}, expect=1),
                    Write("pos/b", {"q": 2}, expect=7),  # fails
                    Write("pos/c", {"q": 2}),
                ]
            )
        assert err.value.key == "pos/b"
        assert await store.get("pos/new") is None
        assert await store.get("pos/c") is None
        assert [r.version for r in await store.history("pos/a")] == [1]
        assert (await store.get("pos/b")).version == 1  # type: ignore[union-attr]

    # -- concurrency ------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_concurrent_tasks_never_lose_an_update(self, store: StateStore) -> None:
        self.needs(store, Capability.COMPARE_AND_SET)

        async def worker() -> None:
            for _ in range(25):
                await store.update("counter", _bump)

        await asyncio.gather(*(worker() for _ in range(8)))
        counter = await store.get("counter")
        assert counter is not None and counter.data == 200 and counter.version == 200

    # -- history ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_history_order_and_paging(self, store: StateStore) -> None:
        self.needs(store, Capability.HISTORY)
        for i in range(1, 8):
            await store.put("h", i)
        newest = await store.history("h", limit=3)
        assert [r.version for r in newest] == [7, 6, 5]
        page2 = await store.history("h", limit=3, before=newest[-1].version)
        assert [r.version for r in page2] == [4, 3, 2]
        oldest = await store.history("h", limit=3, newest_first=False)
        assert [r.version for r in oldest] == [1, 2, 3]
        page2 = await store.history("h", limit=3, newest_first=False, after=3)
        assert [r.version for r in page2] == [4, 5, 6]
        assert [r.data for r in await store.history("h", limit=100, newest_first=False)] == [
            1,
            2,
            3,
            4,
            5,
            6,
            7,
        ]
        between = await store.backend.read("h", after=2, before=5)
        assert [r.version for r in between] == [3, 4]

    @pytest.mark.asyncio
    async def test_get_as_of_a_timestamp(self, store: StateStore) -> None:
        self.needs(store, Capability.HISTORY)
        v1 = await store.put("px", 100)
        v2 = await store.put("px", 101)
        v3 = await store.delete("px")
        assert await store.get("px", as_of=v1.at - timedelta(microseconds=1)) is None
        assert (await store.get("px", as_of=v1.at)) == v1
        assert (await store.get("px", as_of=v2.at + timedelta(microseconds=0))) == v2
        assert await store.get("px", as_of=v3.at) is None
        assert await store.get("never", as_of=datetime.now(UTC)) is None

    @pytest.mark.asyncio
    async def test_prune_never_drops_the_head(self, store: StateStore) -> None:
        self.needs(store, Capability.HISTORY)
        for i in range(10):
            await store.put("p", i)
        assert await store.backend.prune("p", 8) == 7
        assert [r.version for r in await store.history("p", newest_first=False)] == [8, 9, 10]
        assert await store.backend.prune("p", 1_000) == 2
        assert [r.version for r in await store.history("p")] == [10]
        assert (await store.get("p")).data == 9  # type: ignore[union-attr]
        assert (await store.put("p", 10)).version == 11  # still gap-free after pruning
        assert await store.backend.prune("absent", 5) == 0

    @pytest.mark.asyncio
    async def test_retention_and_pruned_as_of(self, store: StateStore) -> None:
        self.needs(store, Capability.HISTORY)
        first = await store.put("r", 0)
        for i in range(1, 6):
            await store.put("r", i)
        assert await store.prune("r", Retention(keep_last=2)) == 4
        assert [r.version for r in await store.history("r")] == [6, 5]
        with pytest.raises(HistoryUnavailable):
            await store.get("r", as_of=first.at)
        assert await store.prune("r", Retention(older_than=timedelta(days=1))) == 0

    # -- scan -------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_scan_filters_by_prefix_and_kind(self, store: StateStore) -> None:
        for key, kind in [
            ("position/EURUSD", "position"),
            ("position/BTCUSDT", "position"),
            ("positional", "misc"),
            ("order/1", "order"),
            ("position/ETHUSDT", "note"),
            ("position/é", "position"),
        ]:
            await store.put(key, {"k": key}, kind=kind)
        await store.put("position/GONE", 1, kind="position")
        await store.delete("position/GONE")

        keys = [r.key async for r in store.scan("position/")]
        assert keys == ["position/BTCUSDT", "position/ETHUSDT", "position/EURUSD", "position/é"]
        positions = [r.key async for r in store.scan("position/", kind="position")]
        assert positions == ["position/BTCUSDT", "position/EURUSD", "position/é"]
        everything = [r.key async for r in store.scan()]
        assert everything == sorted(everything) and len(everything) == 6
        assert [r.key async for r in store.scan(kind="order")] == ["order/1"]
        assert [r.key async for r in store.scan("zzz")] == []
        heads = [r async for r in store.scan("position/E")]
        assert [r.data for r in heads] == [{"k": "position/ETHUSDT"}, {"k": "position/EURUSD"}]

    @pytest.mark.asyncio
    async def test_scan_returns_every_key_of_a_large_set(self, store: StateStore) -> None:
        count = 1_200  # more than one page for backends that page
        if Capability.ATOMIC_BATCH in store.capabilities:
            await store.batch([Write(f"big/{i:05d}", i) for i in range(count)])
        else:
            for i in range(count):
                await store.put(f"big/{i:05d}", i)
        keys = [r.key async for r in store.scan("big/")]
        assert keys == [f"big/{i:05d}" for i in range(count)]

    # -- watch ------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_watch_delivers_each_commit_once_in_order(self, store: StateStore) -> None:
        self.needs(store, Capability.WATCH)
        await store.put("w/before", 0)  # committed before the watch: not delivered
        async with store.watch("w/") as changes:
            expected: list[tuple[str, int]] = []
            for i in range(20):
                rec = await store.put(f"w/{i % 3}", i)
                expected.append((rec.key, rec.version))
            if Capability.ATOMIC_BATCH in store.capabilities:
                for rec in await store.batch([Write("w/x", 1), Write("w/y", 2)]):
                    expected.append((rec.key, rec.version))
            gone = await store.delete("w/0")
            expected.append((gone.key, gone.version))
            await store.put("elsewhere", 1)  # outside the prefix
            got = await _collect(changes, len(expected))
            assert [(r.key, r.version) for r in got] == expected
            assert got[-1].deleted
            # nothing more arrives: no duplicates, nothing from outside the prefix
            with pytest.raises(TimeoutError):
                await _collect(changes, 1, within=0.5)

    @pytest.mark.asyncio
    async def test_two_watchers_each_see_every_commit(self, store: StateStore) -> None:
        self.needs(store, Capability.WATCH)
        async with store.watch("") as one, store.watch("t/") as two:
            await store.put("t/1", 1)
            await store.put("u/1", 1)
            await store.put("t/2", 2)
            assert [r.key for r in await _collect(one, 3)] == ["t/1", "u/1", "t/2"]
            assert [r.key for r in await _collect(two, 2)] == ["t/1", "t/2"]

    # -- values -----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_unicode_keys_and_values(self, store: StateStore) -> None:
        value = {"名前": "ビットコイン", "emoji": "📈🚀", "quote": 'a"b\\c', "nul-free": "ü\u2028"}
        for key in ["position/日本円", "ключ/€", "emoji/📈", "space key/ok"]:
            await store.put(key, value, meta={"note": "ñ"})
            got = await store.get(key)
            assert got is not None and got.key == key and got.data == value
            assert got.meta == {"note": "ñ"}
        assert [r.key async for r in store.scan("ключ/")] == ["ключ/€"]

    @pytest.mark.asyncio
    async def test_one_mebibyte_value(self, store: StateStore) -> None:
        blob = "x" * (1024 * 1024)
        record = await store.put("blob", {"payload": blob, "n": 1})
        got = await store.get("blob")
        assert got is not None and got.data == {"payload": blob, "n": 1}
        assert got.version == record.version == 1

    @pytest.mark.asyncio
    async def test_numbers_and_nesting_round_trip(self, store: StateStore) -> None:
        value: JSON = {
            "big": 2**53 + 1,
            "neg": -7,
            "float": 0.1,
            "exp": 1e-12,
            "deep": [[[{"a": [1]}]]],
            "empty": {},
            "list": [],
            "zero": 0,
            "f": False,
        }
        await store.put("nums", value)
        got = await store.get("nums")
        assert got is not None and got.data == value

    # -- capabilities ---------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_capabilities_are_declared_honestly(self, store: StateStore) -> None:
        caps = store.capabilities
        assert caps <= set(Capability), "capabilities must be statekit.Capability members"
        await store.put("cap", 1)
        if Capability.COMPARE_AND_SET in caps:
            with pytest.raises(ConflictError):
                await store.put("cap", 2, expect=0)
        else:
            with pytest.raises(CapabilityError):
                await store.put("cap", 2, expect=1)
            with pytest.raises(CapabilityError):
                await store.update("cap", _bump)
        if Capability.ATOMIC_BATCH not in caps:
            with pytest.raises(CapabilityError):
                await store.batch([Write("c1", 1), Write("c2", 2)])
        if Capability.HISTORY in caps:
            await store.put("cap", 2)
            assert len(await store.history("cap")) == 2
        else:
            with pytest.raises(CapabilityError):
                await store.history("cap")
        if Capability.WATCH not in caps:
            with pytest.raises(CapabilityError):
                store.watch()
            with pytest.raises(CapabilityError):
                await store.backend.watch("")

    # -- errors -----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_writes_with_any_expect_need_no_capability(self, store: StateStore) -> None:
        record = await store.put("plain", 1, expect=ANY)
        assert record.version == 1

    @pytest.mark.asyncio
    async def test_replicate_copies_versions_as_given(self, store: StateStore) -> None:
        """A backend that can be a mirror stores foreign versions exactly, idempotently."""
        at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        records = [
            Record("mirror/a", 1, "position", {"q": 1}, {"user_id": "u"}, at),
            Record("mirror/a", 2, "position", {"q": 2}, {}, at + timedelta(seconds=1)),
            Record("mirror/b", 7, "order", {"s": "open"}, {}, at),
        ]
        try:
            await store.backend.replicate(records)
        except CapabilityError:
            pytest.skip(f"{store.backend.name} cannot be a mirror")
        await store.backend.replicate(records[1:])  # a retried copy changes nothing
        history = await store.backend.read("mirror/a")
        assert history == records[:2]
        head = await store.get("mirror/b")
        assert head == records[2]

    # -- snapshots (built in the core over the contract) -------------------------------------

    @pytest.mark.asyncio
    async def test_snapshot_create_diff_restore(self, store: StateStore) -> None:
        await store.put("position/EURUSD", {"qty": 1}, kind="position")
        await store.put("position/GBPUSD", {"qty": 2}, kind="position")
        snap = await store.snapshots.create("end of day")
        assert snap.keys == 2
        await store.put("position/EURUSD", {"qty": 5}, kind="position")
        await store.delete("position/GBPUSD")
        await store.put("position/USDJPY", {"qty": 3}, kind="position")
        diff = await store.snapshots.diff(snap.id)
        assert diff.changed == {"position/EURUSD": ({"qty": 1}, {"qty": 5})}
        assert diff.removed == {"position/GBPUSD": {"qty": 2}}
        assert diff.added == {"position/USDJPY": {"qty": 3}}
        assert [s.id for s in await store.snapshots.list()] == [snap.id]
        assert await store.snapshots.restore(snap.id) == 3
        assert not await store.snapshots.diff(snap.id)
        live = {r.key: r.data async for r in store.scan()}
        assert live == {"position/EURUSD": {"qty": 1}, "position/GBPUSD": {"qty": 2}}
