"""Leases across processes with fencing tokens (statekit.trading.leases), on SQLite and
PostgreSQL, with several tasks and several processes."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import statekit
from statekit import (
    BackendUnavailable,
    Capability,
    CapabilityError,
    ConflictError,
    FencedOff,
    Guard,
    LockTimeout,
    StateStore,
    ValidationError,
    Write,
)
from statekit.backend import Record
from statekit.backends.memory import MemoryBackend
from statekit.testing._capabilities import needs
from statekit.testing._pool import worker_pool
from statekit.trading.leases import KEEP_VERSIONS, LEASE_KIND, Lease, LeaseState

TTL = 5.0
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
PROCESS_JOIN = 120  # seconds: only a hang gets near this


class FakeClock:
    """A UTC clock the test moves by hand, shared by the holders of a test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``store`` and ``store_url`` (tests/conftest.py): a store every process of the
    test can open, a SQLite file or a fresh PostgreSQL namespace."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def moves(store: StateStore) -> int:
    """How far one fenced write moves the token: 0 where the backend has guarded
    appends (the write carries a guard on the lease key), else 1 (it re-writes the key)."""
    return 0 if Capability.GUARDED_APPEND in store.capabilities else 1


# -- arguments and capabilities ------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "ttl", "reason"),
    [
        ("", 1.0, "lease name"),
        ("  ", 1.0, "lease name"),
        (" padded", 1.0, "lease name"),
        (7, 1.0, "lease name"),
        ("x" * 600, 1.0, None),  # the key is too long
        ("ok", 0, "lease ttl"),
        ("ok", -1.0, "lease ttl"),
        ("ok", float("nan"), "lease ttl"),
        ("ok", float("inf"), "lease ttl"),
        ("ok", True, "lease ttl"),
        ("ok", "10", "lease ttl"),
        ("ok", timedelta(0), "lease ttl"),
    ],
)
async def test_a_bad_name_or_ttl_is_refused(name: Any, ttl: Any, reason: str | None) -> None:
    async with StateStore(await MemoryBackend.open()) as store:
        with pytest.raises(ValidationError) as info:
            Lease(store, name, ttl=ttl)
        if reason is not None:
            assert info.value.reason == reason
        with pytest.raises(ValidationError):
            Lease(store, "ok", ttl=1, timeout=-1)
        with pytest.raises(ValidationError):
            Lease(store, "ok", ttl=1, poll=0)
        lease = Lease(store, "ok", ttl=timedelta(seconds=2))
        assert lease.ttl == 2.0 and lease.key == "lease/ok"
        with pytest.raises(ValidationError):
            await lease.acquire(timeout=-1)
        assert await store.get("lease/ok") is None


@pytest.mark.asyncio
async def test_a_backend_without_compare_and_set_is_refused() -> None:
    class NoCas(MemoryBackend):
        capabilities = MemoryBackend.capabilities - {Capability.COMPARE_AND_SET}

    async with StateStore(await NoCas.open()) as store:
        with pytest.raises(CapabilityError) as info:
            Lease(store, "reconciler", ttl=TTL)
        assert info.value.capability == "compare_and_set"


@pytest.mark.asyncio
async def test_fenced_writes_need_atomic_batches_but_the_lease_itself_does_not() -> None:
    class NoBatches(MemoryBackend):
        capabilities = MemoryBackend.capabilities - {Capability.ATOMIC_BATCH}

    async with StateStore(await NoBatches.open()) as store:
        lease = Lease(store, "reconciler", ttl=TTL)
        assert await lease.acquire(timeout=0) == 1
        assert await lease.renew() == 2
        with pytest.raises(CapabilityError) as info:
            await store.put("book", 1, fence=lease)
        assert info.value.capability == "atomic_batch"
        assert await store.get("book") is None
        assert await lease.release()


# -- one process -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_acquire_write_release_and_acquire_again(store: StateStore) -> None:
    first = Lease(store, "reconciler", ttl=TTL, owner="first")
    assert not first.held and first.token == 0 and first.expires_at is None
    assert await first.acquire(timeout=0) == 1
    assert first.held and first.expires_at is not None
    current = await first.current()
    assert current is not None and current.owner == "first" and current.token == 1
    assert current.holder == first.holder

    step = moves(store)  # with guarded appends, a fenced write leaves the token as it is
    record = await store.put("book", {"qty": 1}, fence=first)
    assert record.version == 1
    assert first.token == 1 + step
    (a, b) = await store.batch([Write("book", {"qty": 2}), Write("fills", [1])], fence=first)
    assert (a.version, b.version) == (2, 1)
    assert first.token == 1 + 2 * step
    deleted = await store.delete("fills", fence=first)
    assert deleted.deleted and first.token == 1 + 3 * step
    updated = await store.update("book", lambda v: {"qty": 3}, fence=first)
    assert updated.data == {"qty": 3} and first.token == 1 + 4 * step
    head = await store.get("lease/reconciler")
    assert head is not None and head.version == first.token

    with pytest.raises(ValidationError) as held:
        await first.acquire(timeout=0)
    assert held.value.reason == "held"

    assert await first.release()
    assert not first.held
    assert await first.current() is None
    assert not await first.release()  # nothing left to release

    second = Lease(store, "reconciler", ttl=TTL)
    # after the release's tombstone (2 + 4 * step)
    assert await second.acquire(timeout=0) == 3 + 4 * step
    assert second.holder != first.holder
    assert await second.release()
    assert await first.acquire(timeout=0) == 5 + 4 * step  # tokens only grow
    assert await first.release()

    history = await store.history("lease/reconciler", limit=100, newest_first=False)
    assert [r.meta["lease"] for r in history] == [
        "acquire",
        *["fence"] * 4 * step,
        "release",
        "acquire",
        "release",
        "acquire",
        "release",
    ]
    assert {r.kind for r in history} == {LEASE_KIND}


@pytest.mark.asyncio
async def test_async_with_acquires_and_releases(store: StateStore) -> None:
    async with Lease(store, "job", ttl=TTL, timeout=1) as lease:
        assert lease.held
        await store.put("job/state", "running", fence=lease)
    assert not lease.held
    assert await lease.current() is None


@pytest.mark.asyncio
async def test_a_held_lease_times_out_naming_the_holder(
    store: StateStore, clock: FakeClock
) -> None:
    holder = Lease(store, "reconciler", ttl=TTL, owner="a", clock=clock)
    await holder.acquire()
    other = Lease(store, "reconciler", ttl=TTL, clock=clock, poll=0.01)
    assert not await other.try_acquire()
    with pytest.raises(LockTimeout) as info:
        await other.acquire(timeout=0.05)
    assert info.value.names == ("reconciler",)
    assert info.value.timeout == 0.05
    assert str(holder.holder) in str(info.value)
    with pytest.raises(LockTimeout):
        async with Lease(store, "reconciler", ttl=TTL, clock=clock, timeout=0):
            raise AssertionError("never entered")
    assert not other.held and holder.held


@pytest.mark.asyncio
async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(
    store: StateStore, clock: FakeClock
) -> None:
    step = moves(store)
    first = Lease(store, "reconciler", ttl=TTL, clock=clock)
    second = Lease(store, "reconciler", ttl=TTL, clock=clock)
    await first.acquire(timeout=0)
    await store.put("book", "first", fence=first)
    assert not await second.try_acquire()  # not expired yet
    clock.advance(TTL)  # expiry is judged by the taker: at expires_at it is free
    assert await second.acquire(timeout=0) == 2 + step
    taken = await store.history("lease/reconciler", limit=1)
    assert taken[0].meta["took_over"] == first.holder
    await store.put("book", "second", fence=second)

    with pytest.raises(FencedOff) as info:
        await store.put("book", "first, late", fence=first)
    assert info.value.lease == "reconciler"
    assert info.value.token == 1 + step
    assert info.value.current == second.token == 2 + 2 * step
    assert not first.held
    book = await store.get("book")
    assert book is not None and book.data == "second"
    assert [r.data for r in await store.history("book", newest_first=False)] == [
        "first",
        "second",
    ]

    with pytest.raises(FencedOff):
        await first.renew()
    with pytest.raises(FencedOff):
        await store.batch([Write("other", 1)], fence=first)
    assert await store.get("other") is None
    assert not await first.release()  # the newer holder's lease is left alone
    assert second.held and (await second.current()) is not None
    await store.put("book", "second again", fence=second)


@pytest.mark.asyncio
async def test_renew_after_losing_is_fenced_off(store: StateStore, clock: FakeClock) -> None:
    first = Lease(store, "reconciler", ttl=TTL, clock=clock)
    await first.acquire(timeout=0)
    clock.advance(TTL + 1)
    second = Lease(store, "reconciler", ttl=TTL, clock=clock)
    await second.acquire(timeout=0)
    with pytest.raises(FencedOff) as info:
        await first.renew()
    assert info.value.token == 1 and info.value.current == 2
    assert (await first.current()) == (await second.current())


@pytest.mark.asyncio
async def test_renew_extends_the_lease(store: StateStore, clock: FakeClock) -> None:
    first = Lease(store, "reconciler", ttl=TTL, clock=clock)
    second = Lease(store, "reconciler", ttl=TTL, clock=clock)
    await first.acquire(timeout=0)
    clock.advance(TTL * 0.8)
    assert await first.renew() == 2
    assert first.expires_at == clock.now + timedelta(seconds=TTL)
    clock.advance(TTL * 0.8)  # past the first expiry, not the renewed one
    assert not await second.try_acquire()
    clock.advance(TTL * 0.8)
    # expired but nobody took it: renewing still works (its token is still the newest)
    assert await first.renew() == 3
    assert not await second.try_acquire()


@pytest.mark.asyncio
async def test_a_conflict_of_the_users_own_write_stays_a_conflict(store: StateStore) -> None:
    lease = Lease(store, "reconciler", ttl=TTL)
    await lease.acquire(timeout=0)
    await store.put("book", 1, fence=lease)
    token = lease.token
    with pytest.raises(ConflictError) as info:
        await store.batch([Write("fills", [1]), Write("book", 2, expect=7)], fence=lease)
    assert info.value.key == "book"
    assert lease.held and lease.token == token
    assert await store.get("fills") is None
    head = await store.history("lease/reconciler", limit=1)
    assert head[0].version == token  # the lease key did not move either
    record = await store.put("book", 2, expect=1, fence=lease)
    assert record.version == 2 and lease.token == token + moves(store)


@pytest.mark.asyncio
async def test_fenced_writes_without_holding_are_refused(store: StateStore) -> None:
    lease = Lease(store, "reconciler", ttl=TTL)
    with pytest.raises(FencedOff) as info:
        await store.put("book", 1, fence=lease)  # never acquired
    assert info.value.token == 0
    with pytest.raises(FencedOff):
        await lease.renew()
    await lease.acquire(timeout=0)
    await lease.release()
    with pytest.raises(FencedOff):
        await store.put("book", 1, fence=lease)  # released
    assert await store.get("book") is None


@pytest.mark.asyncio
async def test_a_fence_guards_only_its_own_store_and_not_its_own_key(
    store: StateStore, store_url: str
) -> None:
    lease = Lease(store, "reconciler", ttl=TTL)
    await lease.acquire(timeout=0)
    with pytest.raises(ValidationError) as own:
        await store.put("lease/reconciler", {"holder": "me"}, fence=lease)
    assert own.value.reason == "lease key"
    async with await statekit.open(store_url) as other:
        with pytest.raises(ValidationError) as elsewhere:
            await other.put("book", 1, fence=lease)
        assert elsewhere.value.reason == "other store"
    assert lease.token == 1


@pytest.mark.asyncio
async def test_a_value_that_is_not_a_lease_is_refused(store: StateStore) -> None:
    await store.put("lease/odd", {"holder": "someone"})
    with pytest.raises(ValidationError) as info:
        await Lease(store, "odd", ttl=TTL).acquire(timeout=0)
    assert info.value.reason == "not a lease"


@pytest.mark.asyncio
async def test_one_holders_concurrent_fenced_writes_all_land(store: StateStore) -> None:
    lease = Lease(store, "reconciler", ttl=30)
    await lease.acquire(timeout=0)

    async def write(n: int) -> Record:
        return await store.put(f"item/{n}", n, fence=lease)

    records = await asyncio.gather(*(write(n) for n in range(20)))
    assert all(r.version == 1 for r in records)
    assert lease.token == 1 + 20 * moves(store) and lease.held


class LosesOneAnswer(MemoryBackend):
    """Commits, then (once, when told) loses the answer."""

    lose_next = False

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        records = await super().append(writes, at, guards=guards)
        if self.lose_next:
            self.lose_next = False
            raise BackendUnavailable("connection lost after the commit", backend=self.name)
        return records


class LosesOneAnswerNoGuards(LosesOneAnswer):
    capabilities = MemoryBackend.capabilities - {Capability.GUARDED_APPEND}


@pytest.mark.asyncio
@pytest.mark.parametrize("backend_class", [LosesOneAnswer, LosesOneAnswerNoGuards])
async def test_a_lost_answer_does_not_fence_the_holder_off(
    backend_class: type[LosesOneAnswer],
) -> None:
    backend = await backend_class.open()
    async with StateStore(backend) as store:
        step = moves(store)
        lease = Lease(store, "reconciler", ttl=TTL)
        await lease.acquire(timeout=0)
        backend.lose_next = True
        with pytest.raises(BackendUnavailable):
            await store.put("book", 1, fence=lease)  # landed, but the answer was lost
        assert lease.token == 1
        record = await store.put("book", 2, fence=lease)  # still ours: it carries on
        assert record.version == 2 and lease.token == 1 + 2 * step
        # a renewal whose answer was lost: the next fenced write finds the key moved
        # on by this very holder, and carries on
        backend.lose_next = True
        with pytest.raises(BackendUnavailable):
            await lease.renew()
        record = await store.put("book", 3, fence=lease)
        assert record.version == 3 and lease.held
        head = await store.get("lease/reconciler")
        assert head is not None and lease.token == head.version
        # a real newer holder is still noticed
        assert isinstance(head.data, dict)
        await store.put("lease/reconciler", {**head.data, "holder": "someone-else"})
        with pytest.raises(FencedOff):
            await store.put("book", 4, fence=lease)
        assert not lease.held
        book = await store.get("book")
        assert book is not None and book.version == 3


@pytest.mark.asyncio
async def test_fenced_writes_leave_the_lease_key_alone(store: StateStore) -> None:
    """With guarded appends the lease key's history is its holders' only: acquire,
    renew, release; fenced writes, even concurrent with renewals, all land."""
    needs(store, Capability.GUARDED_APPEND)  # the suite's capability gate
    lease = Lease(store, "reconciler", ttl=30)
    await lease.acquire(timeout=0)

    async def write(n: int) -> Record:
        return await store.put(f"item/{n % 7}", n, fence=lease)

    async def renew() -> None:
        for _ in range(5):
            await lease.renew()
            await asyncio.sleep(0)

    results = await asyncio.gather(*(write(n) for n in range(60)), renew())
    assert len([r for r in results if r is not None]) == 60
    assert lease.held and lease.token == 6
    await lease.release()
    history = await store.history("lease/reconciler", limit=100, newest_first=False)
    assert [r.meta["lease"] for r in history] == ["acquire", *["renew"] * 5, "release"]


@pytest.mark.asyncio
async def test_renewals_keep_the_lease_history_bounded(store: StateStore) -> None:
    lease = Lease(store, "long-lived", ttl=30)
    await lease.acquire(timeout=0)
    for _ in range(3 * KEEP_VERSIONS):
        await lease.renew()
        history = await store.history("lease/long-lived", limit=10_000)
        assert len(history) <= 2 * KEEP_VERSIONS
    assert lease.token == 3 * KEEP_VERSIONS + 1
    history = await store.history("lease/long-lived", limit=10_000, newest_first=False)
    assert history[-1].version == lease.token
    assert [r.version for r in history] == list(range(history[0].version, lease.token + 1))
    await store.put("book", 1, fence=lease)  # still held, still fencing
    assert await lease.release()


# -- several processes -----------------------------------------------------------------


def _first_holder(url: str, ttl: float, acquired: Any, late: Any, results: Any) -> None:
    async def run() -> None:
        async with await statekit.open(url) as store:
            lease = Lease(store, "takeover", ttl=ttl)
            await lease.acquire(timeout=30)
            await store.put("book", {"by": "first"}, fence=lease)
            results.put(("first", lease.token))
            acquired.set()
            # The pause (a GC stall, a swapped-out VM): past the ttl, until the
            # second process has taken the lease over and written.
            assert late.wait(PROCESS_JOIN)
            try:
                await store.put("book", {"by": "first, late"}, fence=lease)
                results.put(("late", "written"))
            except FencedOff as exc:
                results.put(("late", "FencedOff", exc.token, exc.current))
            try:
                await lease.renew()
                results.put(("renew", "renewed"))
            except FencedOff:
                results.put(("renew", "FencedOff"))

    asyncio.run(run())


def _second_holder(url: str, ttl: float, acquired: Any, late: Any, results: Any) -> None:
    async def run() -> None:
        async with await statekit.open(url) as store:
            lease = Lease(store, "takeover", ttl=ttl, poll=0.02)
            await lease.acquire(timeout=60)  # waits out the first holder's ttl
            await store.put("book", {"by": "second"}, fence=lease)
            results.put(("second", lease.token))

    try:
        assert acquired.wait(PROCESS_JOIN)
        asyncio.run(run())
    finally:
        late.set()


def test_a_paused_holder_is_taken_over_and_its_late_write_refused(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    acquired, late, results = ctx.Event(), ctx.Event(), ctx.Queue()
    args = (store_url, 0.5, acquired, late, results)
    processes = [
        ctx.Process(target=_first_holder, args=args),
        ctx.Process(target=_second_holder, args=args),
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(PROCESS_JOIN)
        assert p.exitcode == 0
    said: dict[str, tuple[Any, ...]] = {}
    for _ in range(4):
        item = results.get(timeout=10)
        said[item[0]] = item[1:]
    first_token, second_token = said["first"][0], said["second"][0]
    assert second_token > first_token
    assert said["late"] == ("FencedOff", first_token, second_token)
    assert said["renew"] == ("FencedOff",)

    async def check() -> None:
        async with await statekit.open(store_url) as store:
            history = await store.history("book", newest_first=False)
            assert [r.data for r in history] == [{"by": "first"}, {"by": "second"}]

    asyncio.run(check())


HOLDS = 3  # per contender
WRITES = 3  # fenced writes per hold


async def _contend(url: str, worker: str, tasks: int) -> None:
    async with await statekit.open(url) as store:

        async def contender(n: int) -> None:
            lease = Lease(store, "contended", ttl=30, poll=0.01, owner=f"{worker}/{n}")
            for _ in range(HOLDS):
                await lease.acquire(timeout=PROCESS_JOIN)
                hold = lease.holder
                try:
                    for i in range(WRITES):
                        entry = {"hold": hold, "token": lease.token, "i": i}
                        await store.put("journal", entry, fence=lease)
                        await asyncio.sleep(0.001)  # let the others try to get in
                except FencedOff:
                    pass  # only after a stall past the ttl: fencing kept the write out
                await lease.release()

        await asyncio.gather(*(contender(n) for n in range(tasks)))


def _contend_in_process(url: str, worker: str, tasks: int) -> None:
    asyncio.run(_contend(url, worker, tasks))


def test_concurrent_acquirers_hold_one_at_a_time(store_url: str) -> None:
    """Tasks in this process and in two others take the lease in turns; the journal of
    their fenced writes shows strictly increasing tokens and holds never interleaved."""
    pool = worker_pool()  # two warm processes of their own, each opening the store
    futures = [pool.submit(_contend_in_process, store_url, f"process-{n}", 2) for n in range(2)]
    asyncio.run(_contend(store_url, "parent", 2))
    for future in futures:
        future.result(PROCESS_JOIN)

    async def journal() -> tuple[list[Record], bool]:
        async with await statekit.open(store_url) as store:
            history = await store.history("journal", limit=10_000, newest_first=False)
            return history, moves(store) == 0

    history, guarded = asyncio.run(journal())
    entries = [r.data for r in history]
    tokens: list[int] = []
    holds: list[str] = []
    for entry in entries:
        assert isinstance(entry, dict) and isinstance(entry["token"], int)
        hold = entry["hold"]
        assert isinstance(hold, str)
        if guarded and holds and holds[-1] == hold:  # a hold's writes share its token
            assert entry["token"] == tokens[-1], "a hold's token moved without a renewal"
        else:
            assert not tokens or entry["token"] > tokens[-1], "tokens must strictly increase"
        tokens.append(entry["token"])
        if not holds or holds[-1] != hold:
            assert hold not in holds, f"hold {hold} was interleaved with another"
            holds.append(hold)
            assert entry["i"] == 0
    assert len(holds) == 6 * HOLDS  # every hold of the six contenders wrote


def test_lease_state_round_trips() -> None:
    state = LeaseState("h", "o", 1.5, T0, T0 + timedelta(seconds=1.5), 4)
    record = Record("lease/x", 4, LEASE_KIND, state.to_json(), {}, T0)
    assert LeaseState.from_record(record) == state
