"""``memory://``: everything in this process, for tests and throwaway runs.

Not durable and not shared between processes. Values are kept as JSON text so a
caller mutating a returned value cannot change what is stored, exactly as with
a database.
"""

from __future__ import annotations

import asyncio
import bisect
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Self
from urllib.parse import urlsplit

from statekit.backend import (
    Backend,
    Capability,
    Guard,
    Health,
    Record,
    Write,
    check_expect,
    check_guard,
    counted_position,
    next_at,
)
from statekit.codec import loads
from statekit.errors import BackendError
from statekit.hookspecs import hookimpl
from statekit.kit.records import stored
from statekit.kit.url import StoreUrl
from statekit.registry import BackendRegistry

__all__ = ["MemoryBackend"]


@dataclass(slots=True)
class _Stored:
    version: int
    kind: str
    data: str | None
    meta: str
    at: datetime

    def record(self, key: str) -> Record:
        data = None if self.data is None else loads(self.data, key=key, backend="memory")
        meta = loads(self.meta, key=key, backend="memory")
        assert isinstance(meta, dict)
        return Record(key, self.version, self.kind, data, meta, self.at)


class _Subscription:
    """One watcher's queue; held only by its iterator, so an abandoned one is collected."""

    __slots__ = ("__weakref__", "prefix", "queue")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queue: asyncio.Queue[Record] = asyncio.Queue()


class MemoryBackend(Backend):
    """An in-process backend with every capability but durability."""

    name = "memory"
    capabilities = frozenset(
        {
            Capability.ATOMIC_BATCH,
            Capability.COMPARE_AND_SET,
            Capability.WATCH,
            Capability.HISTORY,
            Capability.GUARDED_APPEND,
            Capability.CHANGES,
        }
    )

    def __init__(self) -> None:
        self._versions: dict[str, list[_Stored]] = {}
        self._heads: dict[str, int] = {}  # key -> head version (survives prune)
        self._keys: list[str] = []  # sorted, for scan
        self._log: list[str] = []  # the key of every version stored, in commit order
        self._lock = asyncio.Lock()
        self._subscriptions: weakref.WeakSet[_Subscription] = weakref.WeakSet()
        self._closed = False

    @classmethod
    async def open(cls, url: str = "memory://") -> Self:
        # It has no options: a misspelt one is refused, as by every backend. Any scheme
        # a plugin registers a MemoryBackend (subclass) for is its own.
        try:
            scheme = urlsplit(url).scheme.lower() or "memory"
        except ValueError:  # malformed: StoreUrl.parse says how
            scheme = "memory"
        StoreUrl.parse(url, backend="memory", schemes=(scheme,))
        return cls()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the memory backend is closed", backend=self.name)

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        self._check_open()
        async with self._lock:
            for guard in guards:
                versions = self._versions.get(guard.key)
                gone = not versions or versions[-1].data is None
                check_guard(guard, self._heads.get(guard.key, 0), gone, backend=self.name)
            previous: list[datetime | None] = []
            for w in writes:
                history = self._versions.get(w.key)
                head = history[-1] if history else None
                deleted = head is None or head.data is None
                check_expect(w, self._heads.get(w.key, 0), deleted, backend=self.name)
                previous.append(head.at if head else None)
            at = next_at(datetime.now(UTC), previous)
            records = []
            for w in writes:
                version = self._heads.get(w.key, 0) + 1
                stored = _Stored(version, w.kind, w.data_json(), w.meta_json(), at)
                if w.key not in self._versions:
                    self._versions[w.key] = []
                    bisect.insort(self._keys, w.key)
                self._versions[w.key].append(stored)
                self._heads[w.key] = version
                self._log.append(w.key)
                records.append(stored.record(w.key))
        for record in records:
            for sub in list(self._subscriptions):
                if record.key.startswith(sub.prefix):
                    sub.queue.put_nowait(record)
        return records

    async def replicate(self, records: Sequence[Record]) -> None:
        self._check_open()
        async with self._lock:
            for r in records:
                history = self._versions.setdefault(r.key, [])
                if not history:
                    bisect.insort(self._keys, r.key)
                if any(s.version == r.version for s in history):
                    continue  # already copied: replicate is idempotent
                _, version, kind, data, meta, _ = stored(r)
                history.append(_Stored(version, kind, data, meta, r.at))
                self._log.append(r.key)
                history.sort(key=lambda s: s.version)
                self._heads[r.key] = max(self._heads.get(r.key, 0), r.version)

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        self._check_open()
        chosen = [
            s
            for s in self._versions.get(key, ())
            if s.version > after and (before is None or s.version < before)
        ]
        if newest_first:
            chosen.reverse()
        if limit is not None:
            chosen = chosen[:limit]
        return [s.record(key) for s in chosen]

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        self._check_open()
        return {k: self._versions[k][-1].record(k) for k in keys if self._versions.get(k)}

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        self._check_open()
        found = {}
        for key in keys:
            history = self._versions.get(key, [])
            # `at` rises with the version: bisect on it.
            index = bisect.bisect_right(history, at, key=lambda s: s.at)
            if index:
                found[key] = history[index - 1].record(key)
        return found

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        self._check_open()
        start = bisect.bisect_left(self._keys, prefix)
        for key in self._keys[start:]:
            if not key.startswith(prefix):
                break
            head = self._versions[key][-1]
            if head.data is not None and (kind is None or head.kind == kind):
                yield head.record(key)

    async def position(self) -> str:
        self._check_open()
        return str(len(self._log))

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        self._check_open()
        start = counted_position(since, backend=self.name)
        return sorted({key for key in self._log[start:] if key.startswith(prefix)})

    async def prune(self, key: str, before_version: int) -> int:
        self._check_open()
        async with self._lock:
            history = self._versions.get(key, [])
            keep = [s for s in history[:-1] if s.version >= before_version] + history[-1:]
            dropped = len(history) - len(keep)
            if history:
                self._versions[key] = keep
            return dropped

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        self._check_open()
        sub = _Subscription(prefix)
        self._subscriptions.add(sub)
        return self._follow(sub)

    async def _follow(self, sub: _Subscription) -> AsyncIterator[Record]:
        try:
            while True:
                yield await sub.queue.get()
        finally:
            self._subscriptions.discard(sub)

    async def health(self) -> Health:
        started = perf_counter()
        self._check_open()
        keys = len(self._keys)
        return Health(True, (perf_counter() - started) * 1000, {"keys": keys})

    async def aclose(self) -> None:
        self._closed = True


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """The built-in ``memory://`` backend."""
    registry.add("memory", MemoryBackend)
