"""Conformance of guarded appends (``Capability.GUARDED_APPEND``): a guard is a version
another key must have, checked atomically with the writes, never written."""

from __future__ import annotations

import asyncio
from time import time

import pytest

from statekit.backend import Capability, Guard, Write
from statekit.errors import ConflictError, ValidationError
from statekit.store import StateStore
from statekit.testing import _workers
from statekit.testing._capabilities import needs, needs_url
from statekit.testing._pool import lined_up

__all__ = ["GuardContract"]

RACERS = 4
"""Tasks (or processes) appending under a guard while it is bumped."""
PACE = 0.001
"""Seconds each racer pauses between its appends."""


async def _racing_appends(store: StateStore, log_key: str, guard: Guard) -> int:
    count = 0
    while True:
        try:
            await store.append([Write(log_key, {"n": count})], guards=[guard])
        except ConflictError as exc:
            if exc.key != guard.key:
                raise
            return count
        count += 1
        # Paced a little: on stores where racing appends conflict and start over
        # (MongoDB), unpaced racers could starve the bump they race.
        await asyncio.sleep(PACE)


class GuardContract:
    """Guarded appends, run when the backend declares ``GUARDED_APPEND``."""

    @pytest.mark.asyncio
    async def test_a_guard_that_holds_lets_the_writes_land_unwritten(
        self, store: StateStore
    ) -> None:
        needs(store, Capability.GUARDED_APPEND, Capability.ATOMIC_BATCH)
        await store.put("guard/g", {"token": 1})
        await store.put("guard/g", {"token": 2})
        records = await store.append(
            [Write("guard/a", 1), Write("guard/b", 2)], guards=[Guard("guard/g", 2)]
        )
        assert [(r.key, r.version) for r in records] == [("guard/a", 1), ("guard/b", 1)]
        head = await store.get("guard/g")
        assert head is not None and head.version == 2, "a guard's key gains no version"
        # 0: the guarded key has no live value (never written, or deleted).
        await store.append([Write("guard/a", 3)], guards=[Guard("guard/none", 0)])
        assert await store.get("guard/none") is None
        await store.delete("guard/g")
        await store.append([Write("guard/a", 4)], guards=[Guard("guard/g", 0)])
        await store.append([Write("guard/a", 5)], guards=[Guard("guard/g", 3)])
        a = await store.get("guard/a")
        assert a is not None and (a.version, a.data) == (4, 5)
        g = (await store.backend.latest(["guard/g"]))["guard/g"]
        assert (g.version, g.deleted) == (3, True)

    @pytest.mark.asyncio
    async def test_a_stale_guard_stores_nothing(self, store: StateStore) -> None:
        needs(store, Capability.GUARDED_APPEND, Capability.ATOMIC_BATCH)
        await store.put("guard/g", 1)
        await store.put("guard/g", 2)
        await store.put("guard/a", "before")
        for guard in (Guard("guard/g", 1), Guard("guard/g", 0), Guard("guard/g", 3)):
            with pytest.raises(ConflictError) as err:
                await store.append(
                    [Write("guard/a", "after"), Write("guard/b", "new")],
                    guards=[Guard("guard/free", 0), guard],
                )
            assert (err.value.key, err.value.expected, err.value.actual) == (
                "guard/g",
                guard.version,
                2,
            )
        with pytest.raises(ConflictError) as err:
            await store.append([Write("guard/b", "new")], guards=[Guard("guard/never", 1)])
        assert (err.value.key, err.value.actual) == ("guard/never", 0)
        a = await store.get("guard/a")
        assert a is not None and (a.version, a.data) == (1, "before")
        assert await store.get("guard/b") is None
        g = await store.get("guard/g")
        assert g is not None and g.version == 2

    @pytest.mark.asyncio
    async def test_a_guard_key_is_never_a_written_key(self, store: StateStore) -> None:
        needs(store, Capability.GUARDED_APPEND)
        with pytest.raises(ValidationError):
            await store.append([Write("guard/g", 1)], guards=[Guard("guard/g", 0)])
        assert await store.get("guard/g") is None

    @pytest.mark.asyncio
    async def test_tasks_racing_a_guard_bump_never_write_after_it(self, store: StateStore) -> None:
        needs(store, Capability.GUARDED_APPEND, Capability.ATOMIC_BATCH, Capability.HISTORY)
        await store.put("guard/g", "holder-1")
        racers = [
            asyncio.create_task(_racing_appends(store, "guard/log", Guard("guard/g", 1)))
            for _ in range(RACERS)
        ]
        await asyncio.sleep(0.05)
        # The bump writes the log too, in the same batch: the log's versions order the
        # racers' appends against it.
        await store.batch(
            [Write("guard/g", "holder-2", expect=1), Write("guard/log", {"bump": True})]
        )
        await self._bump_and_check(store, sum(await asyncio.gather(*racers)))

    async def _bump_and_check(self, store: StateStore, landed: int) -> None:
        log = await store.history("guard/log", limit=landed + 10, newest_first=False)
        bumps = [r.version for r in log if r.data == {"bump": True}]
        assert bumps == [landed + 1], "an append guarded by the old version landed after the bump"
        assert len(log) == landed + 1

    @pytest.mark.asyncio
    async def test_processes_racing_a_guard_bump_never_write_after_it(
        self, store: StateStore, backend_url: str | None
    ) -> None:
        needs(store, Capability.GUARDED_APPEND, Capability.ATOMIC_BATCH, Capability.HISTORY)
        backend_url = needs_url(store, backend_url)
        await store.put("guard/g", "holder-1")
        pool, start_at = await lined_up(RACERS)
        futures = [
            asyncio.wrap_future(
                pool.submit(
                    _workers.guarded_appends, backend_url, "guard/log", "guard/g", 1, start_at
                )
            )
            for _ in range(RACERS)
        ]
        deadline = time() + 60
        while await store.get("guard/log") is None and time() < deadline:
            if any(f.done() for f in futures):
                break  # a process failed: its error shows below
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the processes append meanwhile
        await store.batch(
            [Write("guard/g", "holder-2", expect=1), Write("guard/log", {"bump": True})]
        )
        landed = sum(await asyncio.gather(*futures))
        await self._bump_and_check(store, landed)
