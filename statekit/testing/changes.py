"""Conformance of ``Capability.CHANGES``: :meth:`~statekit.backend.Backend.position` and
:meth:`~statekit.backend.Backend.changed` name every key changed since a point, and
only what changed around and after it, whoever wrote it."""

from __future__ import annotations

import asyncio

import pytest

from statekit.backend import Capability, Write
from statekit.errors import StatekitError
from statekit.store import StateStore
from statekit.testing import _workers
from statekit.testing._capabilities import needs, needs_url
from statekit.testing._pool import lined_up

__all__ = ["ChangesContract"]

WRITERS = 4
"""Tasks (or processes) writing while a position is taken."""


async def _write_until(store: StateStore, name: str, stop: asyncio.Event) -> list[str]:
    """Write fresh keys ``chg/race/<name>/<n>`` until ``stop``; the keys whose write
    was issued after ``stop`` was set last (none: stop came between two writes)."""
    written: list[str] = []
    n = 0
    while not stop.is_set():
        await store.put(f"chg/race/{name}/{n:05d}", n)
        n += 1
        await asyncio.sleep(0)  # an in-process store may never yield on its own
    # One more after the flag: issued after the position was taken, so it must be listed.
    key = f"chg/race/{name}/{n:05d}"
    await store.put(key, n)
    written.append(key)
    return written


class ChangesContract:
    """What changed since a position, run when the backend declares ``CHANGES``."""

    @pytest.mark.asyncio
    async def test_changed_lists_what_changed_since_a_position(self, store: StateStore) -> None:
        needs(store, Capability.CHANGES)
        await store.batch([Write(f"chg/old/{i:02d}", i) for i in range(40)])
        await store.put("chg/gone", "here")
        since = await store.position()
        assert isinstance(since, str)
        await store.put("chg/old/03", "new")
        await store.put("chg/old/03", "newer")  # twice: listed once
        await store.delete("chg/gone")  # a tombstone counts
        await store.put("chg/made", 1)  # a key created since
        await store.put("other/x", 1)  # outside the prefix
        changed = await store.changed(since, "chg/")
        assert changed == ["chg/gone", "chg/made", "chg/old/03"], (
            "changed() must list exactly the keys written after the position (no key "
            f"written before it with no write open across it), sorted; got {changed}"
        )
        assert await store.changed(since) == [*changed, "other/x"]
        assert await store.changed(await store.position(), "chg/") == []

    @pytest.mark.asyncio
    async def test_a_bad_position_is_refused_with_a_statekit_error(self, store: StateStore) -> None:
        needs(store, Capability.CHANGES)
        for bad in ("not a position", "", "-1", "9" * 40):
            with pytest.raises(StatekitError):
                await store.changed(bad)

    @pytest.mark.asyncio
    async def test_writes_of_racing_tasks_after_a_position_are_listed(
        self, store: StateStore
    ) -> None:
        needs(store, Capability.CHANGES)
        stop = asyncio.Event()
        writers = [asyncio.create_task(_write_until(store, str(i), stop)) for i in range(WRITERS)]
        await asyncio.sleep(0.05)
        since = await store.position()
        stop.set()
        after = [key for keys in await asyncio.gather(*writers) for key in keys]
        changed = set(await store.changed(since, "chg/race/"))
        missing = sorted(set(after) - changed)
        assert not missing, f"written after position {since!r} but not listed: {missing}"

    @pytest.mark.asyncio
    async def test_writes_of_other_processes_after_a_position_are_listed(
        self, store: StateStore, backend_url: str | None
    ) -> None:
        needs(store, Capability.CHANGES)
        backend_url = needs_url(store, backend_url)
        await store.put("chg/before", 1)
        since = await store.position()
        pool, _ = await lined_up(2)
        await asyncio.gather(
            *(
                asyncio.wrap_future(pool.submit(_workers.put_many, backend_url, f"chg/p{i}/", 5))
                for i in range(2)
            )
        )
        expected = [f"chg/p{i}/{n}" for i in range(2) for n in range(5)]
        assert await store.changed(since, "chg/p") == expected
        assert "chg/before" not in await store.changed(since, "chg/")
