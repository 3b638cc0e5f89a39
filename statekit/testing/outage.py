"""Contract test of a backend as the primary of a fallback journal (docs/tiered.md).

A tiered store replays its fallback journal exactly once by looking up the write ids
(``meta["statekit.write_id"]``) of every entry whose outcome was lost, paging a key's
versions newest first with :meth:`~statekit.backend.Backend.read`. So every backend must
keep ``meta`` as written and page with ``before=``. :class:`OutageContract` (inherited by
:class:`~statekit.testing.BackendContract`) puts the backend under test behind a tiered
store, takes it "down", journals writes, then lets replayed appends commit and lose
their answer: each write must land exactly once, in order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import pytest

from statekit.backend import Backend, Capability, Guard, Health, Record, Write, guarded_append
from statekit.errors import BackendUnavailable
from statekit.store import StateStore
from statekit.testing._capabilities import needs
from statekit.tiered import WRITE_ID, FallbackJournal, TieredBackend

__all__ = ["OutageContract"]

WRITES = 60
KEYS = 6


class _Flaky(Backend):
    """The backend under test, but "down" on demand, or losing the answers of the next
    ``lose`` appends after they commit."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.capabilities = inner.capabilities
        self.down = False
        self.lose = 0

    @classmethod
    async def open(cls, url: str) -> Self:
        raise NotImplementedError

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable("taken down by the outage contract", backend=self.name)

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        self._check()
        records = await guarded_append(self.inner, writes, at, guards)
        if self.lose:
            self.lose -= 1
            raise BackendUnavailable("answer lost after commit (injected)", backend=self.name)
        return records

    async def read(self, key: str, **kwargs: Any) -> list[Record]:
        self._check()
        return await self.inner.read(key, **kwargs)

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        self._check()
        return await self.inner.latest(keys)

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        return self.inner.scan(prefix, kind)

    async def position(self) -> str:
        self._check()
        return await self.inner.position()

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        self._check()
        return await self.inner.changed(since, prefix)

    async def prune(self, key: str, before_version: int) -> int:
        return await self.inner.prune(key, before_version)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        return await self.inner.watch(prefix)

    async def health(self) -> Health:
        self._check()
        return await self.inner.health()

    async def aclose(self) -> None:
        return None  # the suite's fixture closes the backend under test


class OutageContract:
    """Exactly-once replay of a fallback journal into this backend (mixed into
    ``BackendContract``)."""

    @pytest.mark.asyncio
    async def test_a_fallback_journal_replays_each_write_once_through_lost_answers(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        needs(store, Capability.HISTORY)
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        flaky = _Flaky(store.backend)
        journal = await FallbackJournal.open(tmp_path / "outage-journal.db")
        tiered = TieredBackend(flaky, fallback=journal, replay_interval=0.01)
        await tiered.start()
        outer = StateStore(tiered)
        try:
            flaky.down = True
            expected: dict[str, list[int]] = {f"outage/{k}": [] for k in range(KEYS)}
            for i in range(WRITES):
                key = f"outage/{rng.randrange(KEYS)}"
                record = await outer.put(key, {"i": i})
                assert record.version == 0, f"seed {seed}: not journaled: {record}"
                expected[key].append(i)
            flaky.down = False
            flaky.lose = 3  # three replayed appends commit, then their answers are lost
            await asyncio.wait_for(tiered.settle(), 60)
            assert await tiered.rejected() == [], f"seed {seed}"
            for key, values in expected.items():
                history = await store.history(key, newest_first=False, limit=WRITES + 1)
                assert [r.data for r in history] == [{"i": i} for i in values], (
                    f"seed {seed}: {key} holds {[r.data for r in history]}"
                )
                ids = [r.meta.get(WRITE_ID) for r in history]
                assert len(set(ids)) == len(ids) and None not in ids, f"seed {seed}: {ids}"
        finally:
            await tiered.aclose()
