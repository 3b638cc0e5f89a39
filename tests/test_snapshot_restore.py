"""Snapshot restore reads what changed, not the whole store, and writes what a full
comparison would (statekit/snapshots.py, issue 16).

Each scenario is checked against the full comparison: the same store seen without
``Capability.CHANGES`` (:func:`statekit.testing.snapshots.full_comparison`) compares
every key, so after a restore through the changes it must find nothing left to
write, and on twin prefixes both restores must write the same keys.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import pytest

import statekit
from statekit import StateStore
from statekit.backend import Record, Write
from statekit.snapshots import (
    KEYS_PER_PART,
    PART_KIND,
    SNAPSHOT_KIND,
    SNAPSHOT_PREFIX,
    Snapshots,
)
from statekit.testing._guard import GuardedBackend
from statekit.testing.snapshots import full_comparison


def full(store: StateStore) -> Snapshots:
    return full_comparison(store)


async def live(store: StateStore, prefix: str) -> dict[str, tuple[str, Any]]:
    return {r.key: (r.kind, r.data) async for r in store.scan(prefix)}


async def captured(store: StateStore, snapshot_id: str) -> dict[str, Any]:
    return await store.snapshots.get(snapshot_id)


async def mutate(store: StateStore, prefix: str, rng: random.Random, keys: int) -> None:
    """Changes, deletes, creates, a kind change and a change undone, under ``prefix``."""
    picks = rng.sample(range(keys), 12)
    await store.batch(Write(f"{prefix}{i:04d}", {"v": -i}) for i in picks[:5])
    for i in picks[5:8]:
        await store.delete(f"{prefix}{i:04d}")
    await store.batch(Write(f"{prefix}new{i}", {"n": i}) for i in rng.sample(range(1000), 3))
    await store.put(f"{prefix}{picks[8]:04d}", {"v": picks[8]}, kind="other")
    await store.put(f"{prefix}{picks[9]:04d}", {"v": "x"})
    await store.put(f"{prefix}{picks[9]:04d}", {"v": picks[9]})  # back to the captured value
    await store.delete(f"{prefix}new-gone")  # nothing to delete: never written


def twin(prefix: str, keys: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k.partition("/")[2]: v for k, v in keys.items()}


@pytest.mark.asyncio
async def test_restore_equals_the_full_comparison_round_after_round(store: StateStore) -> None:
    for prefix in ("a/", "b/"):
        await store.batch(Write(f"{prefix}{i:04d}", {"v": i}) for i in range(300))
    await store.put("other/1", 1)
    snap_a = await store.snapshots.create(prefix="a/")
    snap_b = await full(store).create(prefix="b/")
    for round_ in range(4):
        for prefix in ("a/", "b/"):
            await mutate(store, prefix, random.Random(round_), 300)
        await store.put("other/1", round_ + 2)
        restored = await store.snapshots.restore(snap_a.id)
        assert restored == await full(store).restore(snap_b.id)
        assert restored == 5 + 3 + 3 + 1  # the change undone needs no write
        assert await full(store).restore(snap_a.id) == 0  # nothing left for a full pass
        assert await live(store, "a/") == twin("a/", await live(store, "b/"))
        assert {k: v for k, (_, v) in (await live(store, "a/")).items()} == await captured(
            store, snap_a.id
        )
        # the same writes: every key has the same versions under both prefixes
        versions = {r.key: r.version async for r in store.scan("a/")}
        assert versions == twin("a/", {r.key: r.version async for r in store.scan("b/")})
    assert (await store.get("other/1")).data == 5  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_writers_in_other_tasks_during_create(store: StateStore) -> None:
    await store.batch(Write(f"k/{i:04d}", {"v": i}) for i in range(400))
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            await store.put(f"k/{(n * 97 + i * 13) % 450:04d}", {"w": n, "i": i})
            i += 1
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(writer(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    snap = await store.snapshots.create(prefix="k/")
    stop.set()
    await asyncio.gather(*tasks)
    await mutate(store, "k/", random.Random(7), 400)

    await store.snapshots.restore(snap.id)

    assert {k: v for k, (_, v) in (await live(store, "k/")).items()} == await captured(
        store, snap.id
    )
    assert await full(store).restore(snap.id) == 0


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    import statekit
    from statekit.backend import Write

    async def main(url: str) -> None:
        async with await statekit.open(url) as store:
            print("ready", flush=True)
            for i in range(400):
                await store.batch([Write(f"k/{(i * 7) % 500:04d}", {"p": i}), Write("p", i)])

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
@pytest.mark.asyncio
async def test_a_writer_in_another_process_during_create(store_url: str) -> None:
    async with await statekit.open(store_url) as store:
        await store.batch(Write(f"k/{i:04d}", {"v": i}) for i in range(400))
        command = [sys.executable, "-c", WRITER, store_url]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as writer:
            assert writer.stdout is not None
            assert (await asyncio.to_thread(writer.stdout.readline)).strip() == "ready"
            while await store.get("p") is None:
                await asyncio.sleep(0.005)
            snap = await store.snapshots.create(prefix="k/")
            written = await store.get("p")
            assert await asyncio.to_thread(writer.wait, 120) == 0
        assert written is not None and written.data != 399  # created while it wrote
        await mutate(store, "k/", random.Random(3), 400)

        await store.snapshots.restore(snap.id)

        assert {k: v for k, (_, v) in (await live(store, "k/")).items()} == await captured(
            store, snap.id
        )
        assert await full(store).restore(snap.id) == 0


@pytest.mark.asyncio
async def test_a_snapshot_of_everything_leaves_other_snapshots_alone(store: StateStore) -> None:
    await store.batch(Write(f"k/{i:03d}", i) for i in range(100))
    first = await store.snapshots.create("k only", prefix="k/")
    everything = await store.snapshots.create("all")
    assert everything.keys == 100
    later = await store.snapshots.create("after", prefix="k/")
    await store.put("k/000", -1)

    assert await store.snapshots.restore(everything.id) == 1

    assert [s.id for s in await store.snapshots.list()] == [first.id, everything.id, later.id]
    assert (await store.snapshots.get(later.id))["k/000"] == 0
    assert len(await store.snapshots.get(first.id)) == 100
    assert await full(store).restore(everything.id) == 0


@pytest.mark.asyncio
async def test_old_snapshots_with_values_inline_still_work(store: StateStore) -> None:
    await store.batch(Write(f"k/{i}", {"v": i}) for i in range(5))
    entries = {f"k/{i}": {"version": 1, "kind": "state", "data": {"v": i}} for i in range(4)}
    value = {"description": "old", "prefix": "k/", "keys": entries}
    await store.append_reserved([Write(SNAPSHOT_PREFIX + "old", value, SNAPSHOT_KIND)])  # type: ignore[arg-type]
    await store.put("k/0", {"v": 9})

    (info,) = await store.snapshots.list()
    assert (info.id, info.keys, info.prefix) == ("old", 4, "k/")
    assert (await store.snapshots.diff("old")).as_dict()["added"] == {"k/4": {"v": 4}}
    assert await store.snapshots.restore("old") == 2  # k/0 back, k/4 deleted
    assert await store.snapshots.get("old") == {f"k/{i}": {"v": i} for i in range(4)}
    assert {k: v for k, (_, v) in (await live(store, "k/")).items()} == await captured(store, "old")


class CountingBackend(GuardedBackend):
    """Counts the records a backend hands back, and the captured keys inside parts."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.rows: Counter[str] = Counter()

    def _count(self, records: Sequence[Record]) -> None:
        self.rows["records"] += len(records)
        for record in records:
            if record.kind == PART_KIND and isinstance(record.data, dict):
                self.rows["captured"] += len(record.data["keys"])  # type: ignore[arg-type]

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        found = await super().latest(keys)
        self._count(list(found.values()))
        return found

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        found = await super().as_of(keys, at)
        self._count(list(found.values()))
        return found

    async def read(self, key: str, **kwargs: Any) -> list[Record]:
        found = await super().read(key, **kwargs)
        self._count(found)
        return found

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        async def counted() -> AsyncIterator[Record]:
            async for record in super(CountingBackend, self).scan(prefix, kind):
                self._count([record])
                yield record

        return counted()


@pytest.mark.asyncio
async def test_restoring_10_changed_keys_of_10_000_reads_about_10(store_url: str) -> None:
    async with await statekit.open(store_url) as opened:
        backend = CountingBackend(opened.backend)
        store = StateStore(backend)
        for start in range(0, 10_000, 1000):
            await store.batch(Write(f"k/{i:05d}", {"v": i}) for i in range(start, start + 1000))
        snap = await store.snapshots.create(prefix="k/")
        for round_ in range(5):
            changed = random.Random(round_).sample(range(10_000), 10)
            await store.batch(Write(f"k/{i:05d}", {"v": -1}) for i in changed)
            backend.rows.clear()

            assert await store.snapshots.restore(snap.id) == 10

            # header, mark, <= 20 parts and 20 heads: this restore's keys and the last
            # one's (its mark keeps earlier rounds' keys out)
            assert backend.rows["records"] <= 42, backend.rows
            assert backend.rows["captured"] <= 20 * 3 * KEYS_PER_PART, backend.rows
        # the counter would have caught a full comparison
        await store.put("k/00000", -1)
        backend.rows.clear()
        assert await full(store).restore(snap.id) == 1
        assert backend.rows["records"] >= 10_000
        assert backend.rows["captured"] == 10_000
