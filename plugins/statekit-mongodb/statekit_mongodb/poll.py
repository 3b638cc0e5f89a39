"""Following a namespace's commits by polling ``statekit_versions`` (no change streams).

Where a deployment has no change streams (a standalone ``mongod``), or with
``?watch=poll``, every version document carries ``seq``: its namespace's commit
number, 1, 2, 3 ... The writer takes it *with the insert that stores the version*:
it reads the highest ``seq`` of the namespace and inserts its version as that
plus one, under a unique index on ``(ns, seq)``; a writer that loses the number
to another reads again (:meth:`statekit_mongodb.writes.Writer.store_version`). A number is
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
from collections.abc import Mapping
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection

from statekit.backend import Record
from statekit.codec import prefix_end
from statekit.kit import CommitFollower, DriverGuard, Watchers
from statekit_mongodb.documents import to_record

__all__ = ["SWEEP_EVERY", "MongoPoll", "Numbering", "follow"]

PAGE = 500
SWEEP_EVERY = 2.0
"""Seconds between a watcher's looks for heads left ``pending`` by a writer that died."""


class Numbering(Protocol):
    """What a polling watcher needs of the namespace's writer
    (:class:`statekit_mongodb.writes.Writer`)."""

    async def highest_seq(self) -> int:
        """The namespace's highest commit number, 0 before the first."""
        ...

    async def finish_stranded(self, bounds: Mapping[str, Any]) -> None:
        """Finish the writes to keys in ``bounds`` whose writer moved the head and died."""
        ...


class MongoPoll:
    """The commit sequence of one namespace under a prefix, for
    :class:`statekit.kit.CommitFollower`: :meth:`position` and :meth:`read`. The
    follower does the rest (buffering, waiting, riding out an absent server).

    :param numbering: the namespace's writer (commit numbers, stranded writes).
    :param versions: ``statekit_versions``.
    :param guard: the backend's DriverGuard (driver errors, the closed state).
    :param namespace: whose commits to follow.
    :param prefix: only keys starting with this.
    """

    def __init__(
        self,
        numbering: Numbering,
        versions: AsyncCollection[dict[str, Any]],
        guard: DriverGuard,
        namespace: str,
        prefix: str,
    ) -> None:
        self._numbering = numbering
        self._versions = versions
        self._guard = guard
        self._namespace = namespace
        self._bounds: dict[str, str] = {"$gte": prefix}
        high = prefix_end(prefix)
        if high is not None:
            self._bounds["$lt"] = high
        self._next_sweep = 0.0

    async def position(self) -> int:
        """The namespace's highest number: every commit after it is delivered."""
        with self._guard.calls():
            seq = await self._numbering.highest_seq()
        self._next_sweep = asyncio.get_running_loop().time() + SWEEP_EVERY
        return seq

    async def read(self, seq: int) -> tuple[list[Record], int]:
        """One look: finish stranded writes (now and then), then read what is new."""
        with self._guard.calls():
            loop = asyncio.get_running_loop()
            if loop.time() >= self._next_sweep:
                await self._numbering.finish_stranded(self._bounds)
                self._next_sweep = loop.time() + SWEEP_EVERY
            ns = self._namespace
            top = await self._versions.find_one(
                {"ns": ns, "seq": {"$gt": seq}}, {"_id": 0, "seq": 1}, sort=[("seq", -1)]
            )
            if top is None:
                return [], seq
            high = int(top["seq"])
            # Every number up to `high` is visible now (or pruned): read them, in order.
            # Two $match stages (a real mongod merges them): SecantusDB then reads the
            # (ns, seq) index, where one find with the key range too scans the collection.
            pipeline: list[dict[str, Any]] = [
                {"$match": {"ns": ns, "seq": {"$gt": seq, "$lte": high}}},
                {"$match": {"key": self._bounds}},
                {"$sort": {"seq": 1}},
                {"$limit": PAGE},
                {"$project": {"_id": 0}},
            ]
            docs = await (await self._versions.aggregate(pipeline)).to_list()
            records = [to_record(doc) for doc in docs]
        return records, high if len(docs) < PAGE else int(docs[-1]["seq"])


async def follow(
    numbering: Numbering,
    versions: AsyncCollection[dict[str, Any]],
    guard: DriverGuard,
    namespace: str,
    prefix: str,
    *,
    interval: float,
    watchers: Watchers,
) -> CommitFollower[int]:
    """A polling watch under ``prefix``, started now (:class:`MongoPoll` for the
    parameters), one of the backend's ``watchers``."""
    poll = MongoPoll(numbering, versions, guard, namespace, prefix)
    return await CommitFollower.start(
        poll.position,
        poll.read,
        backend=guard.backend,
        where=guard.shown,
        interval=interval,
        watchers=watchers,
    )
