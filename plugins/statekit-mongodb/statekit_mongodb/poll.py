"""Following a namespace's commits by polling ``statekit_versions`` (no change streams).

Where a deployment has no change streams (a standalone ``mongod``), or with
``?watch=poll``, every version document carries ``seq``: its namespace's commit
number, 1, 2, 3 ... The writer takes it *with the insert that stores the version*:
it reads the highest ``seq`` of the namespace and inserts its version as that
plus one, under a unique index on ``(ns, seq)``; a writer that loses the number
to another reads again (:meth:`MongoBackend._store_version`). A number is
therefore never taken without being used, and ``seq`` n + 1 is inserted only once
n is visible, so when ``seq`` M can be read every number below M can be read too
(or was pruned). The watcher keeps the number it has delivered up to, and on
each look reads the namespace's highest ``seq`` M, then the versions under its
prefix between its number and M, in ``seq`` order, and moves its number to M:
no waiting for gaps, nothing twice, nothing missed. A key's versions are
numbered in version order (the next version cannot be written before the
previous one is stored with its number), so they arrive in order.

A write whose writer died after moving the head (the commit) but before storing
the version (still ``pending`` on the head) is finished by the watcher itself,
every :data:`SWEEP_EVERY` seconds, so it arrives even if nobody writes that key
again. Version documents without ``seq`` (written by a release before it, or
copied without it) are never delivered and never get in the way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from typing import TYPE_CHECKING, Any, Self

from pymongo.asynchronous.collection import AsyncCollection

from statekit.backend import Record
from statekit.codec import prefix_end
from statekit.errors import BackendError, BackendUnavailable, StatekitError
from statekit_mongodb.documents import to_record
from statekit_mongodb.translate import DRIVER_ERRORS, NAME

if TYPE_CHECKING:
    from statekit_mongodb.backend import MongoBackend

__all__ = ["SWEEP_EVERY", "MongoPoll"]

log = logging.getLogger("statekit.mongodb")

PAGE = 500
SWEEP_EVERY = 2.0
"""Seconds between a watcher's looks for heads left ``pending`` by a writer that died."""
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
_LOOK_ERRORS: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, BackendUnavailable)


class MongoPoll:
    """An async iterator of the commits to keys under a prefix, in ``seq`` order.

    Made by :meth:`MongoBackend.watch`, which reads the starting number before
    returning it. Close it with :meth:`aclose`.
    """

    def __init__(
        self, backend: MongoBackend, versions: AsyncCollection[dict[str, Any]], prefix: str
    ) -> None:
        self._backend = backend
        self._versions = versions
        self._where = backend.options.shown
        self._interval = backend.options.poll_interval
        self._bounds: dict[str, str] = {"$gte": prefix}
        high = prefix_end(prefix)
        if high is not None:
            self._bounds["$lt"] = high
        self._seq = 0
        self._ready: collections.deque[Record] = collections.deque()
        self._next_sweep = 0.0
        self._closed = False
        self._closed_by_backend = False
        self.reconnects = 0
        """How many times a look failed because the server was away, and polling went on."""

    async def start(self) -> None:
        """Read the namespace's highest number: every commit after it is delivered."""
        self._seq = await self._backend._highest_seq()
        self._next_sweep = asyncio.get_running_loop().time() + SWEEP_EVERY

    async def _look(self) -> None:
        """One look: finish stranded writes (now and then), then read what is new."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_sweep:
            await self._backend._finish_stranded(self._bounds)
            self._next_sweep = loop.time() + SWEEP_EVERY
        ns = self._backend.namespace
        top = await self._versions.find_one(
            {"ns": ns, "seq": {"$gt": self._seq}}, {"_id": 0, "seq": 1}, sort=[("seq", -1)]
        )
        if top is None:
            return
        high = int(top["seq"])
        # Every number up to `high` is visible now (or pruned): read them, in order.
        # Two $match stages (a real mongod merges them): SecantusDB then reads the
        # (ns, seq) index, where one find with the key range too scans the collection.
        pipeline: list[dict[str, Any]] = [
            {"$match": {"ns": ns, "seq": {"$gt": self._seq, "$lte": high}}},
            {"$match": {"key": self._bounds}},
            {"$sort": {"seq": 1}},
            {"$limit": PAGE},
            {"$project": {"_id": 0}},
        ]
        docs = await (await self._versions.aggregate(pipeline)).to_list()
        self._seq = high if len(docs) < PAGE else int(docs[-1]["seq"])
        self._ready.extend(to_record(doc) for doc in docs)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Record:
        delay = BACKOFF_FIRST
        while True:
            if self._closed:
                if self._closed_by_backend:
                    raise BackendError(
                        f"mongodb {self._where}: the backend was closed", backend=NAME
                    )
                raise StopAsyncIteration
            if self._ready:
                return self._ready.popleft()
            try:
                await self._look()
            except _LOOK_ERRORS as exc:
                if self._closed:
                    continue
                error = exc if isinstance(exc, StatekitError) else self._backend._translate(exc)
                if not isinstance(error, BackendUnavailable):
                    raise error from exc
                # The number is kept: once the server is back, polling goes on from it.
                log.warning("mongodb watch on %s: polling in %.2fs: %s", self._where, delay, error)
                self.reconnects += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            if not self._ready:
                await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        """Stop following. Calling it twice is harmless."""
        await self.close()

    async def close(self, *, by_backend: bool = False) -> None:
        """:meth:`aclose`; ``by_backend`` makes a later ``__anext__`` raise BackendError."""
        if self._closed:
            return
        self._closed = True
        self._closed_by_backend = by_backend
        self._backend._forget_watch(self)
