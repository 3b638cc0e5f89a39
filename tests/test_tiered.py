"""The tiered store on built-in backends: cache, mirrors, fallback journal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio

import statekit
from statekit import BackendUnavailable, ConflictError, Record, StateStore, Write
from statekit.backends.memory import MemoryBackend
from statekit.config import Settings
from statekit.testing import assert_true_history
from statekit.tiered import WRITE_ID, FallbackJournal, ReadCache, TieredBackend
from statekit.tiered.backend import DEFERRED_AT


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
async def test_a_conflict_at_replay_is_kept_and_reported(
    tmp_path: Path, journal: FallbackJournal
) -> None:
    primary = Switchable()
    store, backend = await tiered(primary, tmp_path, fallback=journal)
    async with store:
        await store.put("idem/1", "first")
        primary.down = True
        await store.put("idem/1", "mine", expect=1)  # accepted; checked at replay
        await MemoryBackend.append(
            primary, [Write("idem/1", "theirs")], datetime.now().astimezone()
        )
        primary.down = False
        await asyncio.wait_for(backend.settle(), 10)
        (rejected,) = await backend.rejected()
        assert "expected version 1, found 2" in rejected["reason"]
        assert rejected["writes"][0]["key"] == "idem/1"
        assert (await store.get("idem/1")).data == "theirs"  # type: ignore[union-attr]
        assert (await store.health()).detail["fallback"]["rejected"] == 1  # type: ignore[index]
        with pytest.raises(ConflictError):  # with the primary up, conflicts are immediate
            await store.put("idem/1", "late", expect=1)


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
