"""Conformance of snapshots over a backend: a snapshot's parts round-trip on every
backend, and where the backend has ``Capability.CHANGES``, a restore that reads only
what changed writes exactly what comparing every key would (:mod:`statekit.snapshots`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from statekit.backend import Capability, Write
from statekit.snapshots import KEYS_PER_PART, Snapshots
from statekit.store import StateStore
from statekit.testing._capabilities import needs

__all__ = ["SnapshotContract", "full_comparison"]

KEYS = 5 * KEYS_PER_PART
"""Keys of the snapshots these tests take: several parts' worth."""


class _Untracked:
    """A store seen without ``Capability.CHANGES``: its snapshots compare every key."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._store.capabilities - {Capability.CHANGES}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def full_comparison(store: StateStore) -> Snapshots:
    """``store``'s snapshots, restoring by comparing every key under the prefix."""
    return Snapshots(_Untracked(store))


async def _write(store: StateStore, writes: list[Write]) -> None:
    """One batch, or one write after another on a backend without atomic batches."""
    if Capability.ATOMIC_BATCH in store.capabilities:
        await store.batch(writes)
    else:
        for write in writes:
            await store.append([write])


async def _live(store: StateStore, prefix: str) -> dict[str, Any]:
    return {r.key: r.data async for r in store.scan(prefix)}


async def _change(store: StateStore, prefix: str, salt: int) -> None:
    """Values changed, keys deleted and created, a kind changed, under ``prefix``."""
    picks = [(salt * 7 + n * 11) % KEYS for n in range(8)]
    await _write(store, [Write(f"{prefix}{i:03d}", {"v": -i, "s": salt}) for i in picks[:4]])
    for i in picks[4:6]:
        await store.delete(f"{prefix}{i:03d}")
    await store.put(f"{prefix}{picks[6]:03d}", {"v": picks[6]}, kind="other")
    await store.put(f"{prefix}new{salt}", {"n": salt})


class SnapshotContract:
    """Snapshots built in the core over the contract (``store`` fixture of the suite)."""

    @pytest.mark.asyncio
    async def test_snapshot_parts_round_trip(self, store: StateStore) -> None:
        await _write(store, [Write(f"snap/{i:03d}", {"v": i}) for i in range(KEYS)])
        snap = await store.snapshots.create("parts", prefix="snap/")
        everything = await store.snapshots.create("all")  # never captures `snap`'s records
        assert (snap.keys, everything.keys) == (KEYS, KEYS)
        await _change(store, "snap/", 1)

        assert await store.snapshots.restore(snap.id) == 8
        assert await store.snapshots.get(snap.id) == {
            f"snap/{i:03d}": {"v": i} for i in range(KEYS)
        }
        assert await _live(store, "snap/") == await store.snapshots.get(snap.id)
        assert [s.id for s in await store.snapshots.list()] == [snap.id, everything.id]

    @pytest.mark.asyncio
    async def test_restore_of_what_changed_equals_the_full_comparison(
        self, store: StateStore
    ) -> None:
        needs(store, Capability.CHANGES)
        await _write(store, [Write(f"sa/{i:03d}", {"v": i}) for i in range(KEYS)])
        stop = asyncio.Event()

        async def write() -> None:
            n = 0
            while not stop.is_set():
                await store.put(f"sa/{(n * 13) % (KEYS + 5):03d}", {"w": n})
                n += 1
                await asyncio.sleep(0)

        writers = [asyncio.create_task(write()) for _ in range(2)]
        await asyncio.sleep(0)
        snap = await store.snapshots.create(prefix="sa/")  # while they write
        stop.set()
        await asyncio.gather(*writers)
        for salt in range(3):
            await _change(store, "sa/", salt)
            restored = await store.snapshots.restore(snap.id)

            assert await full_comparison(store).restore(snap.id) == 0  # nothing left
            assert await _live(store, "sa/") == await store.snapshots.get(snap.id)
            if salt:  # since the last restore: only what _change did
                assert restored == 8
