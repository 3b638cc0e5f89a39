"""The tiered store on built-in backends: cache, mirrors, fallback journal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import statekit
from statekit import Backend, BackendUnavailable, Health, Record, StateStore, Write
from statekit.backends.memory import MemoryBackend
from statekit.config import Settings
from statekit.testing import assert_true_history
from statekit.tiered import WRITE_ID, FallbackJournal, ReadCache, TieredBackend
from statekit.tiered.backend import DEFERRED_AT
from statekit.tiered.unopened import UnopenedPrimary


class Switchable(MemoryBackend):
    """A memory primary that can be 'down', or commit and then lose the reply."""

    name = "switchable"

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_reply = False

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        if self.down:
            raise BackendUnavailable("primary is down", backend=self.name)
        records = await super().append(writes, at)
        if self.lose_reply:  # committed, but the caller cannot know
            raise BackendUnavailable("connection lost after commit", backend=self.name)
        return records

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        if self.down:
            raise BackendUnavailable("primary is down", backend=self.name)
        return await super().latest(keys)

    async def health(self) -> Health:
        if self.down:
            raise BackendUnavailable("primary is down", backend=self.name)
        return await super().health()


class Refusing(Switchable):
    """Refuses one key for good (as a backend would a value it cannot hold)."""

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        if not self.down and any(w.key == "refused" for w in writes):
            raise statekit.BackendError("cannot hold this value", backend=self.name)
        return await super().append(writes, at)


class DeadMirror(MemoryBackend):
    name = "dead"

    async def replicate(self, records: Sequence[Record]) -> None:
        raise BackendUnavailable("mirror unreachable", backend=self.name)


async def tiered(
    primary: MemoryBackend, tmp_path: Path, **kwargs: object
) -> tuple[StateStore, TieredBackend]:
    backend = TieredBackend(primary, replay_interval=0.01, **kwargs)  # type: ignore[arg-type]
    await backend.start()
    return StateStore(backend), backend


@pytest_asyncio.fixture
async def journal(tmp_path: Path) -> AsyncIterator[FallbackJournal]:
    yield await FallbackJournal.open(tmp_path / "journal.db")


@pytest.mark.asyncio
async def test_cache_serves_hits_and_counts_them(tmp_path: Path) -> None:
    store, backend = await tiered(MemoryBackend(), tmp_path, cache=ReadCache(ttl=60, max_size=2))
    async with store:
        await store.put("a", 1)
        assert (await store.get("a")).data == 1  # type: ignore[union-attr]
        assert await store.get("absent") is None
        assert await store.get("absent") is None
        stats = backend.cache.stats  # type: ignore[union-attr]
        assert (stats.hits, stats.misses) == (2, 1)  # "a" came from its own write
        await store.put("b", 2)
        await store.put("c", 3)
        assert len(backend.cache) == 2  # type: ignore[arg-type]
        detail = (await store.health()).detail
        assert detail["cache"]["hits"] == 2  # type: ignore[index]


@pytest.mark.asyncio
async def test_cache_entries_expire(tmp_path: Path) -> None:
    primary = MemoryBackend()
    store, _ = await tiered(primary, tmp_path, cache=ReadCache(ttl=0.05, max_size=10))
    async with store:
        await store.put("k", 1)
        await primary.append([Write("k", 2)], datetime.now().astimezone())  # behind its back
        await asyncio.sleep(0.1)
        assert (await store.get("k")).data == 2  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_conflict_evicts_so_update_sees_the_new_head(tmp_path: Path) -> None:
    primary = MemoryBackend()
    primary.capabilities = MemoryBackend.capabilities - {statekit.Capability.WATCH}
    store, _ = await tiered(primary, tmp_path, cache=ReadCache(ttl=60, max_size=10))
    async with store:
        await store.put("n", 1)
        await primary.append([Write("n", 5)], datetime.now().astimezone())  # stale in cache
        assert (await store.update("n", lambda v: v + 1)).data == 6  # type: ignore[operator]


@pytest.mark.asyncio
async def test_watch_evicts_what_other_writers_commit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db?poll_interval=0.01"
    settings = Settings()
    async with (
        await statekit.open(url, settings=settings, cache=True) as cached,
        await statekit.open(url, settings=settings) as other,
    ):
        await cached.put("k", 1)
        assert (await cached.get("k")).data == 1  # type: ignore[union-attr]
        await other.put("k", 2)
        for _ in range(200):
            if (await cached.get("k")).data == 2:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        assert (await cached.get("k")).data == 2  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_mirrors_copy_every_version(tmp_path: Path) -> None:
    mirror = MemoryBackend()
    store, backend = await tiered(MemoryBackend(), tmp_path, mirrors=[mirror])
    async with store:
        for i in range(50):
            await store.put(f"m/{i % 5}", i, meta={"n": i})
        await store.batch([Write("m/x", 1), Write("m/y", 2)])
        await asyncio.wait_for(backend.settle(), 10)
        for key in ["m/0", "m/4", "m/x"]:
            assert await mirror.read(key) == await backend.primary.read(key)
        described = backend.mirrors[0].describe()
        assert described["copied"] == 52 and described["dropped"] == 0


@pytest.mark.asyncio
async def test_a_dead_mirror_never_blocks_or_fails_writes(tmp_path: Path) -> None:
    dead = DeadMirror()
    store, backend = await tiered(MemoryBackend(), tmp_path, mirrors=[dead])
    backend.mirrors[0]._queue = asyncio.Queue(10)  # a small queue, to see drops
    async with store:
        for i in range(30):
            assert (await store.put("k", i)).version == i + 1
        await asyncio.sleep(0.1)
        described = backend.mirrors[0].describe()
        assert described["dropped"] >= 19  # 30 offered, 10 queued, maybe 1 in flight
        assert described["retries"] >= 1 and "unreachable" in str(described["last_error"])
        assert described["lag_s"] >= 0


@pytest.mark.asyncio
async def test_fallback_keeps_writes_in_order_and_replays_them(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    primary = Switchable()
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        await store.put("k", 0)
        primary.down = True
        pending = [await store.put("k", i) for i in range(1, 6)]
        assert {r.version for r in pending} == {0}  # accepted, not yet in the primary
        assert (await store.health()).detail["fallback"]["pending"] == 5  # type: ignore[index]
        primary.down = False
        await store.put("k", 6)  # queues behind the pending ones: order is kept
        await asyncio.wait_for(backend.settle(), 10)
        history = await store.history("k", newest_first=False)
        assert [r.data for r in history] == [0, 1, 2, 3, 4, 5, 6]
        assert [r.version for r in history] == list(range(1, 8))
        assert (await store.health()).detail["fallback"]["pending"] == 0  # type: ignore[index]
        # Replayed, each got the time of its replay (the key's history stays in time
        # order and as_of exact); when the journal took it is in its meta.
        await assert_true_history(store, "k")
        accepted = [r.at.isoformat(timespec="microseconds") for r in pending]
        assert [r.meta.get(DEFERRED_AT) for r in history[1:6]] == accepted
        assert all(r.at > p.at for r, p in zip(history[1:6], pending, strict=True))
        assert DEFERRED_AT not in history[0].meta  # written straight to the primary
        assert DEFERRED_AT in history[6].meta  # it queued behind the pending ones


@pytest.mark.asyncio
async def test_a_write_that_landed_before_the_failure_is_not_replayed_twice(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    primary = Switchable()
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        primary.lose_reply = True
        assert (await store.put("k", "once")).version == 0  # outcome unknown: journaled
        primary.lose_reply = False
        await asyncio.wait_for(backend.settle(), 10)
        history = await store.history("k")
        assert [r.data for r in history] == ["once"]
        assert WRITE_ID in history[0].meta


@pytest.mark.asyncio
async def test_conditional_writes_during_an_outage_are_refused_never_journaled(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    """The issue's repro: 5 x update(+10) during an outage. Each is refused (nothing
    stored, the caller told); none is acknowledged and later dropped."""
    primary = Switchable()
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        await store.put("balance", 100)
        primary.down = True
        await store.put("other", 1)  # unconditional: journaled, guaranteed
        for _ in range(5):  # its read fails (no cache here), or its conditional write
            with pytest.raises(BackendUnavailable):
                await store.update("balance", lambda b: b + 10)
        with pytest.raises(BackendUnavailable, match="nothing was written"):
            await store.put("balance", 0, expect=1)
        assert (await store.get("other")).data == 1  # type: ignore[union-attr] # its own write
        primary.down = False
        await store.update("balance", lambda b: b + 10)  # waits for the drain, then applies
        await asyncio.wait_for(backend.settle(), 10)
        assert await backend.rejected() == []
        assert [r.data for r in await store.history("balance")] == [110, 100]
        assert (await store.get("other")).data == 1  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_conditional_write_waits_for_the_journal_to_drain(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    primary = Switchable()
    store, _ = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        await store.put("k", 0)
        primary.down = True
        await store.put("k", 1)
        primary.down = False
        # The journal still holds k=1: the conditional write is decided after it lands.
        record = await store.update("k", lambda v: v + 1)
        assert (record.version, record.data) == (3, 2)
        assert [r.data for r in await store.history("k", newest_first=False)] == [0, 1, 2]


@pytest.mark.asyncio
async def test_an_old_journal_entry_with_expect_that_conflicts_is_kept_and_reported(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    """Journals written by earlier statekit versions may hold conditional writes."""
    primary = Switchable()
    await MemoryBackend.append(primary, [Write("idem/1", "theirs")], datetime.now().astimezone())
    await journal.add(
        [Write("idem/1", "mine", expect=0, meta={WRITE_ID: "w1"})], 1, uncertain=False
    )
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        await asyncio.wait_for(backend.settle(), 10)
        (rejected,) = await backend.rejected()
        assert "expected version 0, found 1" in rejected["reason"]
        assert rejected["writes"][0]["key"] == "idem/1"
        assert (await store.get("idem/1")).data == "theirs"  # type: ignore[union-attr]
        assert (await store.health()).detail["fallback"]["rejected"] == 1  # type: ignore[index]


@pytest.mark.asyncio
async def test_pending_writes_survive_a_restart_of_the_process(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    primary = Switchable()
    primary.down = True
    store, _ = await tiered(primary, tmp_path, fallback=await FallbackJournal.open(path))
    await store.put("k", "while down")
    await store.aclose()  # the process stops with the write still pending
    primary2 = MemoryBackend()
    store2, backend2 = await tiered(primary2, tmp_path, fallback=await FallbackJournal.open(path))
    async with store2:
        await asyncio.wait_for(backend2.settle(), 10)
        assert (await store2.get("k")).data == "while down"  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_open_builds_tiers_from_arguments_and_settings(tmp_path: Path) -> None:
    settings = Settings(
        cache={"enabled": True, "ttl_seconds": 5, "max_size": 10},
        enable_file_fallback=True,
        fallback_path=str(tmp_path / "fb.db"),
        mirrors=[f"sqlite:///{tmp_path}/mirror.db"],
    )
    async with await statekit.open("memory://", settings=settings) as store:
        assert isinstance(store.backend, TieredBackend)
        await store.put("k", 1)
        await asyncio.wait_for(store.backend.settle(), 10)
        detail = (await store.health()).detail
        assert detail["cache"]["ttl_s"] == 5  # type: ignore[index]
        assert detail["fallback"]["path"].endswith("fb.db")  # type: ignore[index]
        assert detail["mirrors"][0]["copied"] == 1  # type: ignore[index]
    async with await statekit.open("memory://", settings=Settings()) as plain:
        assert not isinstance(plain.backend, TieredBackend)
    async with await statekit.open(primary="memory://", cache=True, settings=Settings()) as s:
        assert isinstance(s.backend, TieredBackend) and s.backend.cache is not None
    assert "***" in str(Settings(mirrors=["postgresql://u:pw@h/db"]).masked()["mirrors"])


@pytest.mark.asyncio
async def test_a_write_refused_for_good_at_replay_does_not_block_the_rest(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    primary = Refusing()
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        primary.down = True
        await store.put("refused", 1)
        await store.put("fine", 2)
        primary.down = False
        await asyncio.wait_for(backend.settle(), 10)
        (rejected,) = await backend.rejected()
        assert "BackendError: cannot hold this value" in rejected["reason"]
        assert (await store.get("fine")).data == 2  # type: ignore[union-attr]


class Counting(Switchable):
    """Counts appends; loses the reply of the next ``lose`` appends (they commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0
        self.lose = 0

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        if not self.down:
            self.appends += 1
        if self.lose and not self.down:
            self.lose -= 1
            await MemoryBackend.append(self, writes, at)
            raise BackendUnavailable("connection lost after commit", backend=self.name)
        return await super().append(writes, at)

    async def read(self, key: str, **kwargs: Any) -> list[Record]:
        if self.down:
            raise BackendUnavailable("primary is down", backend=self.name)
        return await super().read(key, **kwargs)

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        if self.down:
            return self._down()
        return super().scan(prefix, kind)

    async def _down(self) -> AsyncIterator[Record]:
        raise BackendUnavailable("primary is down", backend=self.name)
        yield  # pragma: no cover


@pytest.mark.asyncio
async def test_reads_of_this_store_see_its_pending_writes(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    primary = Counting()
    cache = ReadCache(ttl=60, max_size=100)  # delete() reads the kind of what it deletes
    store, backend = await tiered(primary, tmp_path, fallback=journal, cache=cache)
    async with store:
        await store.put("pos/a", 1, kind="position")
        await store.put("pos/b", 2, kind="position")
        primary.down = True
        await store.put("pos/a", 10, kind="position")
        await store.delete("pos/b")
        await store.put("pos/c", 30, kind="position")
        await store.put("ord/x", "open", kind="order")
        assert (await store.get("pos/a")).data == 10  # type: ignore[union-attr]
        assert await store.get("pos/b") is None
        got = await store.get_many(["pos/a", "pos/c", "ord/x"])
        assert {k: r.data for k, r in got.items()} == {"pos/a": 10, "pos/c": 30, "ord/x": "open"}
        # The primary cannot scan now: only this store's own pending writes are known.
        with pytest.raises(BackendUnavailable):
            [r async for r in store.scan("pos/")]
        health = await store.health()
        assert health.ok and "unavailable" in str(health.detail["degraded"])
        assert health.detail["fallback"]["primary"] == "down"  # type: ignore[index]
        primary.down = False
        # Up again, journal not yet replayed: a scan lays the pending writes over it.
        scanned = {r.key: r.data async for r in store.scan("pos/", kind="position")}
        assert scanned == {"pos/a": 10, "pos/c": 30}
        await asyncio.wait_for(backend.settle(), 10)
        assert (await store.get("pos/a")).version == 2  # type: ignore[union-attr]
        assert "degraded" not in (await store.health()).detail
        fallback = (await store.health()).detail["fallback"]
        assert fallback["journaled"] == fallback["replayed"] == 4  # type: ignore[index]
        assert fallback["last_drain_s"] is not None  # type: ignore[index]


@pytest.mark.asyncio
async def test_every_entry_whose_answer_was_lost_is_looked_up_before_resending(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    """The issue's fault: entries journaled behind another, their replay commits and the
    answer is lost. Each is in the primary once."""
    primary = Counting()
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        primary.down = True
        for i in range(1, 4):
            await store.put("k", i)  # the 2nd and 3rd were never sent: not "uncertain"
            await store.put(f"other/{i}", i)
        primary.lose = 2  # the first replay appends commit; their answers are lost
        primary.down = False
        await asyncio.wait_for(backend.settle(), 10)
        history = await store.history("k", newest_first=False)
        assert [r.data for r in history] == [1, 2, 3]
        ids = [r.meta[WRITE_ID] for r in history]
        assert len(set(ids)) == 3
        for i in range(1, 4):
            assert [r.data for r in await store.history(f"other/{i}")] == [i]


@pytest.mark.asyncio
async def test_replay_sends_batches_not_one_write_per_round_trip(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    primary = Counting()
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        primary.down = True
        await asyncio.gather(*(store.put(f"k/{i % 50}", i) for i in range(2000)))
        primary.down = False
        await asyncio.wait_for(backend.settle(), 30)
        # 2,000 writes over 50 keys: appends of distinct keys, 50 writes each at least.
        assert primary.appends <= 2000 // 50 + 2, primary.appends
        for key in range(50):
            history = await store.history(f"k/{key}", newest_first=False)
            assert [r.data for r in history] == list(range(key, 2000, 50))


class Reopening:
    """Opens a memory primary only once ``up`` is set."""

    def __init__(self, primary: MemoryBackend) -> None:
        self.primary = primary
        self.up = False
        self.error = BackendUnavailable("connection refused", backend="memory")

    async def __call__(self) -> Backend:
        if not self.up:
            raise self.error
        return self.primary


@pytest.mark.asyncio
async def test_a_store_opens_while_its_primary_is_down_and_replays_when_it_opens(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    real = MemoryBackend()
    opener = Reopening(real)
    unopened = UnopenedPrimary(
        "memory", MemoryBackend.capabilities, opener, opener.error, {"backend": "memory"}
    )
    mirror = MemoryBackend()
    await mirror.replicate(
        await MemoryBackend().append([Write("seen", "from the mirror")], datetime.now(UTC))
    )
    store, backend = await tiered(unopened, tmp_path, fallback=journal, mirrors=[mirror])  # type: ignore[arg-type]
    async with store:
        health = await store.health()
        assert health.ok and health.detail["fallback"]["primary"] == "not opened"  # type: ignore[index]
        assert (await store.put("k", 1)).version == 0
        assert (await store.get("k")).data == 1  # type: ignore[union-attr]
        assert (await store.get("seen")).data == "from the mirror"  # type: ignore[union-attr]
        with pytest.raises(BackendUnavailable, match="nothing was written"):
            await store.put("k", 2, expect=1)
        watch = await store.watch("k").start()  # asked for before the primary opens
        opener.up = True
        await asyncio.wait_for(backend.settle(), 10)
        assert backend.primary is real
        assert [r.data for r in await real.read("k")] == [1]
        assert (await store.put("k", 2, expect=1)).version == 2
        # It started as the primary opened, before the replay: it sees that too.
        seen = [await asyncio.wait_for(anext(watch), 10) for _ in range(2)]
        assert [(r.key, r.version) for r in seen] == [("k", 1), ("k", 2)]
        await watch.aclose()
