"""TieredBackend: a primary with read caches, write-behind mirrors and a fallback journal.

It is itself a :class:`~statekit.backend.Backend`, so the StateStore and every
feature built on the contract work over it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Self

from statekit.backend import Backend, Capability, Health, Record, Write
from statekit.codec import from_micros, to_micros
from statekit.errors import BackendUnavailable, ConflictError, StatekitError
from statekit.tiered.cache import ReadCache
from statekit.tiered.journal import FallbackJournal, JournalEntry
from statekit.tiered.mirrors import Mirror
from statekit.tiered.shared import SharedCache, SharedLevel

__all__ = ["DEFERRED_AT", "WRITE_ID", "TieredBackend"]

log = logging.getLogger("statekit.tiered")

WRITE_ID = "statekit.write_id"
"""Meta field naming each write when a fallback journal is on: replay uses it to tell
whether a write whose outcome was unknown (the primary failed mid-call) landed."""

DEFERRED_AT = "statekit.deferred_at"
"""Meta field of a write replayed from the fallback journal: when it was accepted (ISO 8601
UTC). Its ``at`` is the time of the replay, so that the key's versions stay in time order."""

_LOOKBACK = 64  # versions of a key searched for a write id at replay


class TieredBackend(Backend):
    """``primary`` plus optional ``cache``, ``shared`` cache, ``mirrors`` and ``fallback`` journal.

    - **cache**: heads read through ``latest`` are kept for ``cache.ttl`` seconds;
      the store's own writes update it, a conflict evicts the key, and commits of
      other writers evict theirs when the primary can watch.
    - **shared**: a second level shared by several processes (e.g. Redis), asked
      after ``cache`` and before the primary. Heads read from the primary and
      records this store commits are put into it (version-monotone: an older
      version never replaces a newer one); commits of other writers seen through
      the primary's watch are put too. A conflict evicts the key. A failing shared
      cache is counted and skipped, never raised (:class:`SharedLevel`).
    - **mirrors**: every committed record is offered to each mirror's bounded
      queue and copied in the background (:class:`Mirror`); a slow or dead
      mirror never delays or fails a write.
    - **fallback**: when the primary is unavailable, appends are kept in a
      durable local journal and replayed in order when it is back. Such an
      append returns records with ``version == 0`` (pending). While anything is
      pending, new appends queue behind it, so order is kept. A pending write's
      ``expect`` is checked at replay; a conflict then is kept among the
      rejected (``rejected()``, ``health()``), never dropped silently.
    """

    name = "tiered"

    def __init__(
        self,
        primary: Backend,
        *,
        cache: ReadCache | None = None,
        shared: SharedCache | None = None,
        mirrors: Sequence[Backend] = (),
        fallback: FallbackJournal | None = None,
        replay_interval: float = 0.25,
    ) -> None:
        self.primary = primary
        self.name = f"tiered({primary.name})"  # type: ignore[misc]
        self.capabilities = primary.capabilities
        self.cache = cache
        self.shared = SharedLevel(shared) if shared is not None else None
        self.primary_reads = 0
        """Keys ``latest`` had to ask the primary for (neither level had them)."""
        self.mirrors = [Mirror(m) for m in mirrors]
        self.fallback = fallback
        self.replay_interval = replay_interval
        self._pending = 0
        self._replayer: asyncio.Task[None] | None = None
        self._invalidator: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> Self:
        raise StatekitError("a tiered store is opened with statekit.open(primary=..., ...)")

    async def start(self) -> None:
        """Start the background work: mirrors, cache invalidation, a pending replay."""
        for mirror in self.mirrors:
            mirror.start()
        cached = self.cache is not None or self.shared is not None
        if cached and Capability.WATCH in self.primary.capabilities:
            changes = await self.primary.watch("")
            self._invalidator = asyncio.get_running_loop().create_task(
                self._invalidate(changes), name="statekit-cache-invalidation"
            )
        if self.fallback is not None:
            self._pending, _ = await self.fallback.counts()
            if self._pending:
                log.warning("%d writes pending in the fallback journal: replaying", self._pending)
                self._start_replay()

    async def _invalidate(self, changes: AsyncIterator[Record]) -> None:
        try:
            async for record in changes:
                # This store's own commits are in the cache already (and in the shared
                # level, put at commit): only another writer's commit needs sharing.
                own = self.cache is not None and self.cache.holds(record.key, record.version)
                if self.cache is not None:
                    self.cache.invalidate_older(record.key, record.version)
                if self.shared is not None and not own:
                    await self.shared.put_many({record.key: record})
        except StatekitError as exc:  # the watch failed: fall back to TTL expiry alone
            log.warning("cache invalidation stopped (entries now expire by ttl): %s", exc)

    # -- writes -------------------------------------------------------------------

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        if self.fallback is not None:
            writes = [replace(w, meta={**w.meta, WRITE_ID: uuid.uuid4().hex}) for w in writes]
            if self._pending:  # keep order: queue behind what is pending
                return await self._defer(writes, at, uncertain=False)
        try:
            records = await self.primary.append(writes, at)
        except ConflictError as exc:
            await self._evict([exc.key])
            raise
        except BackendUnavailable:
            if self.fallback is None:
                raise
            # The primary may or may not have committed it: replay checks the write id.
            return await self._defer(writes, at, uncertain=True)
        await self._committed(records)
        return records

    async def _committed(self, records: Sequence[Record]) -> None:
        for mirror in self.mirrors:
            mirror.offer(records)
        if self.cache is not None:
            for record in records:
                self.cache.put(record.key, record)
        if self.shared is not None:
            # Awaited: once append returns, other processes' reads see this version
            # (unless the shared cache failed; then they see it at watch or ttl).
            await self.shared.put_many({record.key: record for record in records})

    async def _evict(self, keys: Sequence[str]) -> None:
        if self.cache is not None:
            self.cache.invalidate(keys)
        if self.shared is not None:
            await self.shared.invalidate(keys)

    async def _defer(
        self, writes: Sequence[Write], at: datetime, *, uncertain: bool
    ) -> list[Record]:
        assert self.fallback is not None
        self._pending += 1  # before the await: a concurrent append must queue behind this
        try:
            await self.fallback.add(writes, to_micros(at), uncertain=uncertain)
        except BaseException:
            self._pending -= 1
            raise
        await self._evict([w.key for w in writes])
        self._start_replay()
        return [Record(w.key, 0, w.kind, w.data, dict(w.meta), at) for w in writes]

    def _start_replay(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(
                self._replay(), name="statekit-fallback-replay"
            )

    async def _replay(self) -> None:
        assert self.fallback is not None
        delay = self.replay_interval
        while True:
            entry = await self.fallback.first()
            if entry is None:
                return
            try:
                await self._replay_one(entry)
                delay = self.replay_interval
            except BackendUnavailable:
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 5.0)

    async def _replay_one(self, entry: JournalEntry) -> None:
        assert self.fallback is not None
        if entry.uncertain and await self._landed(entry.writes[0]):
            await self.fallback.done(entry.seq)  # it did commit before the primary went away
            self._pending -= 1
            return
        accepted = from_micros(entry.at_micros).isoformat(timespec="microseconds")
        writes = [replace(w, meta={**w.meta, DEFERRED_AT: accepted}) for w in entry.writes]
        try:
            records = await self.primary.append(writes, datetime.now(UTC))
        except BackendUnavailable:
            raise  # still down: the replay loop waits and tries again
        except StatekitError as exc:  # refused for good (a conflict, a value it cannot hold)
            if isinstance(exc, ConflictError):
                reason = (
                    f"conflict on {exc.key!r}: expected version {exc.expected}, found {exc.actual}"
                )
            else:
                reason = f"{type(exc).__name__}: {exc}"
            log.error("fallback replay: write refused by the primary, kept as rejected: %s", reason)
            await self.fallback.reject(entry.seq, reason)
            self._pending -= 1
            return
        await self.fallback.done(entry.seq)
        self._pending -= 1
        await self._committed(records)

    async def _landed(self, write: Write) -> bool:
        if Capability.HISTORY not in self.primary.capabilities:
            return False  # cannot tell: replay it (documented: may then apply twice)
        wanted = write.meta.get(WRITE_ID)
        recent = await self.primary.read(write.key, newest_first=True, limit=_LOOKBACK)
        return any(r.meta.get(WRITE_ID) == wanted for r in recent)

    async def settle(self) -> None:
        """Wait until the fallback journal is replayed and mirrors have caught up
        (wrap it in ``asyncio.timeout`` to bound the wait)."""
        if self._replayer is not None:
            await asyncio.shield(self._replayer)
        for mirror in self.mirrors:
            await mirror.drain()

    async def rejected(self) -> list[dict[str, Any]]:
        """Deferred writes the primary refused at replay, with why."""
        if self.fallback is None:
            return []
        return [
            {"seq": r.seq, "at": r.at, "reason": r.reason, "writes": r.writes}
            for r in await self.fallback.rejected()
        ]

    # -- reads ----------------------------------------------------------------------

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        cache, shared = self.cache, self.shared
        if cache is None and shared is None:
            return await self.primary.latest(keys)
        found: dict[str, Record] = {}
        missing = list(keys)
        if cache is not None:
            missing = []
            for key in keys:
                hit, head = cache.get(key)
                if not hit:
                    missing.append(key)
                elif head is not None:
                    found[key] = head
        if missing and shared is not None:
            entries = await shared.get_many(missing)
            for key, head in entries.items():
                if cache is not None:
                    cache.put(key, head)
                if head is not None:
                    found[key] = head
            missing = [key for key in missing if key not in entries]
        if missing:
            self.primary_reads += len(missing)
            fetched = await self.primary.latest(missing)
            heads = {key: fetched.get(key) for key in missing}
            if cache is not None:
                for key, head in heads.items():
                    cache.put(key, head)
            if shared is not None:
                await shared.put_many(heads)
            found.update(fetched)
        return found

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        return await self.primary.as_of(keys, at)

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        return await self.primary.read(
            key, after=after, before=before, limit=limit, newest_first=newest_first
        )

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        return self.primary.scan(prefix, kind)

    async def prune(self, key: str, before_version: int) -> int:
        return await self.primary.prune(key, before_version)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        return await self.primary.watch(prefix)

    async def replicate(self, records: Sequence[Record]) -> None:
        await self.primary.replicate(records)

    async def health(self) -> Health:
        health = await self.primary.health()
        detail: dict[str, Any] = dict(health.detail)
        if self.cache is not None:
            detail["cache"] = {
                **self.cache.stats.as_dict(),
                "size": len(self.cache),
                "ttl_s": self.cache.ttl,
                "max_size": self.cache.max_size,
                "primary_reads": self.primary_reads,
            }
        if self.shared is not None:
            detail["shared_cache"] = await self.shared.describe()
            if self.cache is None:
                detail["shared_cache"]["primary_reads"] = self.primary_reads
        if self.mirrors:
            detail["mirrors"] = [m.describe() for m in self.mirrors]
        if self.fallback is not None:
            pending, rejected = await self.fallback.counts()
            detail["fallback"] = {
                "path": str(self.fallback.path),
                "pending": pending,
                "rejected": rejected,
            }
        return Health(health.ok, health.latency_ms, detail)

    def describe(self) -> dict[str, Any]:
        return {
            **self.primary.describe(),
            "tiers": {
                "cache": self.cache is not None,
                "shared_cache": self.shared.cache.describe() if self.shared else None,
                "mirrors": [m.backend.name for m in self.mirrors],
                "fallback": str(self.fallback.path) if self.fallback else None,
            },
        }

    async def aclose(self) -> None:
        for task in (self._invalidator, self._replayer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StatekitError):
                    await task
        for mirror in self.mirrors:
            await mirror.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()
        await self.primary.aclose()
