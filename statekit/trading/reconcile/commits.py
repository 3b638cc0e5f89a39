"""Fenced batches of concurrent workers, committed together (the engine's group commit),
and their reads, read together.

Every store write of the engine is fenced by the same lease, and each worker waits
for its batch to be stored before it acts on the exchange. :class:`Commits` lets
the batches that workers hand in while a commit is in flight ride on the next one:
one atomic, fenced append carrying several workers' batches, so N workers need
about one commit round trip (one fsync) per round instead of N.

Each batch keeps its guarantees: it is stored whole or not at all, its ``expect``
checks hold, and it is durable before its caller goes on. A merged commit that
fails on one batch's check (a ConflictError, a ValidationError) stores nothing;
its batches are then committed one by one, so each gets its own answer. A lost
lease (FencedOff) or an unreachable store fails every batch of the commit, as it
would have failed each of them alone. Batches writing the same key are never
merged (a key is written once per append): the later one waits for the next commit.

:class:`Reads` does the same for ``get_many``: the keys asked for while a read is in
flight are read together by the next one, which starts after they were asked for
(so a worker reads its own writes, and nothing older than its call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from statekit.backend import Record, Write
from statekit.errors import ConflictError, ValidationError
from statekit.store import Fence, StateStore

__all__ = ["MAX_MERGED", "Commits", "Reads"]

MAX_MERGED = 64
"""Batches merged into one commit at most."""

_Pending = tuple[list[Write], "asyncio.Future[list[Record]]"]


class Commits:
    """Fenced batches to ``store``, merged with those handed in meanwhile.

    :param store: where the batches go.
    :param fence: the lease every batch is fenced by.
    """

    def __init__(self, store: StateStore, fence: Fence) -> None:
        self.store = store
        self.fence = fence
        self._pending: list[_Pending] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None  # the drain, kept from the GC
        self.commits = 0
        """Appends made (merged or not): the figure merging lowers."""
        self.batches = 0
        """Batches handed in."""

    async def batch(self, writes: Sequence[Write]) -> list[Record]:
        """Store ``writes`` atomically under the fence; the records, in their order.

        :raises FencedOff: the lease has a newer holder; nothing was stored.
        :raises ConflictError: one of ``writes`` failed its ``expect``; nothing of
            ``writes`` was stored.
        """
        writes = list(writes)
        self.batches += 1
        if not writes:
            return []
        future: asyncio.Future[list[Record]] = asyncio.get_running_loop().create_future()
        self._pending.append((writes, future))
        if not self._running:
            self._running = True
            # The first batch in goes out at once: merging adds no wait, only the
            # batches that arrive while a commit is in flight share the next one.
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                taken = self._take()
                await self._commit(taken)
        finally:
            self._running = False

    def _take(self) -> list[_Pending]:
        """The pending batches of the next commit: in arrival order, no key twice."""
        taken: list[_Pending] = []
        left: list[_Pending] = []
        keys: set[str] = set()
        for item in self._pending:
            writes, future = item
            if future.done():  # its caller was cancelled
                continue
            mine = {w.key for w in writes}
            if len(taken) >= MAX_MERGED or keys & mine:
                left.append(item)
                continue
            keys |= mine
            taken.append(item)
        self._pending = left
        return taken

    async def _commit(self, taken: list[_Pending]) -> None:
        if len(taken) > 1:
            merged = [w for writes, _ in taken for w in writes]
            try:
                self.commits += 1
                records = await self.store.batch(merged, fence=self.fence)
            except (ConflictError, ValidationError):
                pass  # one batch's own check: each on its own, for its own answer
            except BaseException as exc:
                for _, future in taken:
                    _fail(future, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            else:
                start = 0
                for writes, future in taken:
                    if not future.done():
                        future.set_result(records[start : start + len(writes)])
                    start += len(writes)
                return
        for writes, future in taken:
            try:
                self.commits += 1
                records = await self.store.batch(writes, fence=self.fence)
            except BaseException as exc:
                _fail(future, exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not future.done():
                    future.set_result(records)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)


_Asked = tuple[list[str], "asyncio.Future[dict[str, Record]]"]


class Reads:
    """``store.get_many`` of concurrent callers, merged while a read is in flight."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._pending: list[_Asked] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self.reads = 0
        """Reads made (merged or not)."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        """The live records of ``keys`` (absent and deleted ones left out)."""
        future: asyncio.Future[dict[str, Record]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(keys), future))
        if not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                taken = [a for a in self._pending[:MAX_MERGED] if not a[1].done()]
                del self._pending[:MAX_MERGED]
                if taken:
                    await self._read(taken)
        finally:
            self._running = False

    async def _read(self, taken: list[_Asked]) -> None:
        keys = list(dict.fromkeys(k for asked, _ in taken for k in asked))
        try:
            self.reads += 1
            found = await self.store.get_many(keys)
        except BaseException as exc:
            for _, future in taken:
                _fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for asked, future in taken:
            if not future.done():
                future.set_result({k: found[k] for k in asked if k in found})
