"""Contract tests of a key's history as a true record: time order and time travel.

What :class:`TimeOrderContract` holds every backend to (docs/concepts.md):

- per key, ``at`` strictly rises with the version, whoever writes: several tasks on
  one store object, several store objects, several processes;
- the records of one atomic batch share one ``at``;
- ``get(key, as_of=t)`` is the newest version with ``at <= t``, for every version
  (and ``get_many(keys, as_of=t)`` the same for several keys at once).

:class:`~statekit.testing.BackendContract` inherits it; its ``store`` and
``backend_url`` fixtures serve these tests too.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from time import time

import pytest

from statekit.backend import MICROSECOND, Capability, Record, Write
from statekit.store import StateStore
from statekit.testing import _workers
from statekit.testing._capabilities import needs, needs_url
from statekit.testing._pool import lined_up

__all__ = ["TimeOrderContract", "assert_true_history"]

TASKS = 4
PUTS_PER_TASK = 30
PROCESSES = 2
PUTS_PER_PROCESS = 40


def _live(record: Record | None) -> Record | None:
    return None if record is None or record.deleted else record


async def assert_true_history(store: StateStore, key: str, *, seed: int | None = None) -> int:
    """Assert that ``key``'s whole history is in time order and that ``as_of`` finds
    every version, at its ``at`` and one microsecond before. Returns the versions seen.

    :param seed: printed in every failure, so that a random run can be replayed.
    """
    where = f"{store.backend.name}, key {key!r}" + ("" if seed is None else f", seed {seed}")
    history = await store.history(key, limit=1_000_000, newest_first=False)
    assert history, f"{where}: no history"
    assert [r.version for r in history] == list(range(1, len(history) + 1)), where
    for earlier, later in itertools.pairwise(history):
        assert earlier.at < later.at, (
            f"{where}: version {later.version} has at {later.at.isoformat()}, not after "
            f"version {earlier.version}'s {earlier.at.isoformat()}"
        )
    previous: Record | None = None
    for record in history:
        at_it = await store.get(key, as_of=record.at)
        assert at_it == _live(record), f"{where}: as_of the at of v{record.version}: {at_it}"
        just_before = await store.get(key, as_of=record.at - MICROSECOND)
        assert just_before == _live(previous), (
            f"{where}: as_of 1 µs before v{record.version}: {just_before}"
        )
        previous = record
    return len(history)


class TimeOrderContract:
    """Time order and time travel, under concurrency (mixed into ``BackendContract``)."""

    @pytest.mark.asyncio
    async def test_at_rises_with_the_version_for_concurrent_tasks(self, store: StateStore) -> None:
        """Several tasks on ONE store object write one key (puts and deletes)."""
        needs(store, Capability.HISTORY)
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        plans = [[rng.random() < 0.1 for _ in range(PUTS_PER_TASK)] for _ in range(TASKS)]

        async def writer(task: int, deletes: list[bool]) -> None:
            for n, delete in enumerate(deletes):
                if delete:
                    await store.delete("time/one", meta={"task": task})
                else:
                    await store.put("time/one", {"task": task, "n": n})

        await asyncio.gather(*(writer(t, plan) for t, plan in enumerate(plans)))
        seen = await assert_true_history(store, "time/one", seed=seed)
        assert seen == TASKS * PUTS_PER_TASK, f"seed {seed}"

    @pytest.mark.asyncio
    async def test_a_batch_shares_one_at_and_rises_on_every_key(self, store: StateStore) -> None:
        """Batches over overlapping keys, from several tasks: each batch one ``at``,
        every key's ``at`` rising; ``get_many(as_of=)`` reads a batch whole."""
        needs(store, Capability.HISTORY, Capability.ATOMIC_BATCH)
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        keys = ["time/a", "time/b", "time/c"]
        batches: list[list[Record]] = []

        async def writer() -> None:
            for _ in range(15):
                chosen = rng.sample(keys, rng.randint(1, 3))
                records = await store.batch([Write(k, {"k": k}) for k in chosen])
                batches.append(records)

        await asyncio.gather(*(writer() for _ in range(TASKS)))
        for records in batches:
            assert len({r.at for r in records}) == 1, f"seed {seed}: {records}"
        for key in keys:
            await assert_true_history(store, key, seed=seed)
        for records in batches:
            at = records[0].at
            seen = await store.get_many(keys, as_of=at)
            for record in records:
                assert seen[record.key] == record, f"seed {seed}: as_of {at.isoformat()}"

    @pytest.mark.asyncio
    async def test_at_rises_across_store_objects_and_processes(
        self, store: StateStore, backend_url: str | None
    ) -> None:
        """Processes, a second store object and this one write one key at once."""
        needs(store, Capability.HISTORY, Capability.COMPARE_AND_SET)
        backend_url = needs_url(store, backend_url)
        import statekit

        async with await statekit.open(backend_url) as second:
            pool, start_at = await lined_up(PROCESSES)

            async def local(other: StateStore, tag: str) -> None:
                await asyncio.sleep(max(0.0, start_at - time()))
                for n in range(PUTS_PER_PROCESS):
                    await other.put("time/shared", {"by": tag, "n": n})

            futures = [
                asyncio.wrap_future(
                    pool.submit(
                        _workers.put_one,
                        backend_url,
                        "time/shared",
                        PUTS_PER_PROCESS,
                        start_at,
                    )
                )
                for _ in range(PROCESSES)
            ]
            await asyncio.gather(local(store, "this"), local(second, "second"), *futures)
        seen = await assert_true_history(store, "time/shared")
        assert seen == (PROCESSES + 2) * PUTS_PER_PROCESS

    @pytest.mark.asyncio
    async def test_as_of_between_versions_and_for_several_keys(self, store: StateStore) -> None:
        needs(store, Capability.HISTORY)
        v1 = await store.put("tt/x", 1)
        v2 = await store.put("tt/x", 2)
        y1 = await store.put("tt/y", "y")
        gone = await store.delete("tt/x")
        v4 = await store.put("tt/x", 4)
        assert await store.get("tt/x", as_of=v1.at - MICROSECOND) is None
        assert await store.get("tt/x", as_of=v1.at + (v2.at - v1.at) / 2) == v1  # between
        assert await store.get("tt/x", as_of=v2.at) == v2
        assert await store.get("tt/x", as_of=gone.at) is None
        assert await store.get("tt/x", as_of=v4.at) == v4
        many = await store.get_many(["tt/x", "tt/y", "tt/none"], as_of=y1.at)
        assert many == {"tt/x": v2, "tt/y": y1}
        assert await store.get_many(["tt/x", "tt/y"], as_of=gone.at) == {"tt/y": y1}
        assert await store.get_many(["tt/x"], as_of=v1.at - MICROSECOND) == {}
