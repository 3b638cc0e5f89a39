"""TieredBackend: a primary with read caches, write-behind mirrors and a fallback journal.

It is itself a :class:`~statekit.backend.Backend`, so the StateStore and every
feature built on the contract work over it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Self, TypeVar

from statekit.backend import ANY, Backend, Capability, Guard, Health, Record, Write, guarded_append
from statekit.errors import BackendUnavailable, ConflictError, StatekitError
from statekit.tiered.cache import ReadCache
from statekit.tiered.fallback import CLOCK_SKEW, DEFERRED_AT, WRITE_ID, FallbackPath
from statekit.tiered.journal import FallbackJournal
from statekit.tiered.mirrors import Mirror
from statekit.tiered.shared import SharedCache, SharedLevel
from statekit.tiered.unopened import UnopenedPrimary

__all__ = ["CLOCK_SKEW", "DEFERRED_AT", "WRITE_ID", "TieredBackend"]

log = logging.getLogger("statekit.tiered")

T = TypeVar("T")


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
      mirror never delays or fails a write. While the primary is unavailable,
      reads it cannot answer are asked of the mirrors.
    - **fallback**: when the primary is unavailable, unconditional appends are
      kept in a durable local journal and replayed, in order and exactly once,
      when it is back (docs/tiered.md, "Fallback journal", says what is
      guaranteed). Such an append returns records with ``version == 0``
      (pending); reads of this store see them. A conditional append
      (``expect``) is never journaled: it waits for the journal to drain and goes
      to the primary, or raises BackendUnavailable having written nothing
      (:class:`~statekit.tiered.fallback.FallbackPath`).

    ``primary`` may be an :class:`UnopenedPrimary` (the store opened during an
    outage): it is opened in the background, then the journal is replayed.
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
        drain_timeout: float = 10.0,
        on_open: Callable[[Backend], Awaitable[None]] | None = None,
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
        self._on_open = on_open
        self._fallback = (
            FallbackPath(
                self, fallback, replay_interval=replay_interval, drain_timeout=drain_timeout
            )
            if fallback is not None
            else None
        )
        self._down: str | None = None  # why the primary failed last, until it answers
        self._watches: list[tuple[str, asyncio.Future[AsyncIterator[Record]]]] = []
        """Watches asked for before the primary opened: started when it opens."""
        self._invalidator: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> Self:
        raise StatekitError("a tiered store is opened with statekit.open(primary=..., ...)")

    async def start(self) -> None:
        """Start the background work: mirrors, cache invalidation, a pending replay."""
        for mirror in self.mirrors:
            mirror.start()
        pending = 0 if self._fallback is None else await self._fallback.load()
        if isinstance(self.primary, UnopenedPrimary):
            assert self._fallback is not None  # statekit.open opens it so only with one
            self._note_down(self.primary.error)
            log.warning("the primary is unavailable; the store starts without it: %s", self._down)
            self._fallback.start_replay()
            return
        await self._opened()
        if pending and self._fallback is not None:
            log.warning("%d writes pending in the fallback journal: replaying", pending)
            self._fallback.start_replay()

    async def _opened(self) -> None:
        """The primary is open: start what needs it."""
        self.capabilities = self.primary.capabilities
        watches, self._watches = self._watches, []
        for prefix, future in watches:  # before anything is replayed: they see it all
            try:
                changes = await self.primary.watch(prefix)
            except StatekitError as exc:
                future.set_exception(exc)
            else:
                if future.cancelled():
                    await _close(changes)
                else:
                    future.set_result(changes)
        cached = self.cache is not None or self.shared is not None
        if cached and Capability.WATCH in self.primary.capabilities:
            changes = await self.primary.watch("")
            self._invalidator = asyncio.get_running_loop().create_task(
                self._invalidate(changes), name="statekit-cache-invalidation"
            )

    async def _connect(self) -> None:
        primary = self.primary
        assert isinstance(primary, UnopenedPrimary)
        opened = await primary.connect()
        try:
            if self._on_open is not None:
                await self._on_open(opened)
            self.primary = opened
            await self._opened()
        except BaseException:
            self.primary = primary
            await opened.aclose()
            raise
        log.warning("the primary %s is open now", opened.name)

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

    # -- the primary's state ----------------------------------------------------------

    def _note_down(self, exc: BaseException) -> None:
        if self._down is None:
            log.warning("the primary %s is unavailable: %s", self.primary.name, exc)
        self._down = str(exc) or type(exc).__name__
        if self._fallback is not None:
            self._fallback.signal()

    def _note_up(self) -> None:
        if self._down is not None:
            self._down = None
            log.warning("the primary %s answers again", self.primary.name)
            if self._fallback is not None:
                self._fallback.signal()

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        # Guards pass through to the primary (its capability is this store's); a
        # guarded append is conditional: never deferred past an outage.
        conditional = bool(guards) or any(w.expect is not ANY for w in writes)
        fallback = self._fallback
        if fallback is not None:
            writes = [replace(w, meta={**w.meta, WRITE_ID: uuid.uuid4().hex}) for w in writes]
            if fallback.pending():
                if not conditional:  # keep order: queue behind what is pending
                    return await fallback.defer(writes, at, uncertain=False)
                await fallback.drained()
        try:
            records = await guarded_append(self.primary, writes, at, guards)
        except ConflictError as exc:
            self._note_up()
            await self.evict([exc.key])
            raise
        except BackendUnavailable as exc:
            self._note_down(exc)
            if fallback is None or conditional:
                # A conditional write is never decided against what this store saw
                # before the outage: the caller is told (it may have committed, as
                # with any call that fails part way).
                raise
            # The primary may or may not have committed it: replay looks its id up.
            return await fallback.defer(writes, at, uncertain=True)
        self._note_up()
        if fallback is not None:
            fallback.observe(at, records)
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

    @property
    def origin(self) -> Backend:
        return self.primary

    async def cached(self, keys: Sequence[str]) -> dict[str, Record | None]:
        found: dict[str, Record | None] = {}
        for key in keys:
            hit, head = self.cache.get(key) if self.cache is not None else (False, None)
            if hit:
                found[key] = head
        missing = [key for key in keys if key not in found]
        if missing and self.shared is not None:
            found.update(await self.shared.get_many(missing))
        return found

    async def evict(self, keys: Sequence[str]) -> None:
        if self.cache is not None:
            self.cache.invalidate(keys)
        if self.shared is not None:
            await self.shared.invalidate(keys)

    async def settle(self) -> None:
        """Wait until the fallback journal is replayed and mirrors have caught up
        (wrap it in ``asyncio.timeout`` to bound the wait)."""
        if self._fallback is not None:
            await self._fallback.settle()
        for mirror in self.mirrors:
            await mirror.drain()

    async def rejected(self) -> list[dict[str, Any]]:
        """Deferred writes the primary refused at replay, with why."""
        return [] if self._fallback is None else await self._fallback.rejected()

    async def fallback_stats(self) -> dict[str, Any]:
        """The fallback journal's figures (``health()["fallback"]``, docs/tiered.md)."""
        assert self._fallback is not None, "this tiered store has no fallback journal"
        return await self._fallback.stats()

    # -- reads ----------------------------------------------------------------------

    async def _ask(self, call: Callable[[Backend], Awaitable[T]]) -> T:
        """``call`` on the primary; while it is unavailable, on the first mirror that answers."""
        try:
            result = await call(self.primary)
        except BackendUnavailable as exc:
            self._note_down(exc)
            for mirror in self.mirrors:
                with contextlib.suppress(StatekitError):
                    return await call(mirror.backend)
            raise
        self._note_up()
        return result

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        missing = list(keys)
        overlay = {} if self._fallback is None else self._fallback.overlay
        if overlay:
            missing = []
            for key in keys:
                pending = overlay.get(key)
                if pending is None:
                    missing.append(key)
                else:
                    found[key] = pending
            if not missing:
                return found
        cache, shared = self.cache, self.shared
        if cache is None and shared is None:
            found.update(await self._ask(lambda b: b.latest(missing)))
            return found
        if cache is not None:
            keys, missing = missing, []
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
            asked = missing
            fetched = await self._ask(lambda b: b.latest(asked))
            heads = {key: fetched.get(key) for key in missing}
            if cache is not None:
                for key, head in heads.items():
                    cache.put(key, head)
            if shared is not None:
                await shared.put_many(heads)
            found.update(fetched)
        return found

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        return await self._ask(lambda b: b.as_of(keys, at))

    async def position(self) -> str:
        return await self.primary.position()  # a mirror's commit order is its own

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        keys = await self.primary.changed(since, prefix)
        overlay = {} if self._fallback is None else self._fallback.overlay
        pending = [key for key in overlay if key.startswith(prefix)]  # not committed yet
        return sorted({*keys, *pending}) if pending else keys

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        def call(b: Backend) -> Awaitable[list[Record]]:
            return b.read(key, after=after, before=before, limit=limit, newest_first=newest_first)

        return await self._ask(call)

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        return self._scan(prefix, kind)

    async def _scan(self, prefix: str, kind: str | None) -> AsyncIterator[Record]:
        overlay = {} if self._fallback is None else self._fallback.overlay
        pending = sorted(
            (r for k, r in overlay.items() if k.startswith(prefix)), key=lambda r: r.key
        )
        records = await self._scan_source(prefix, kind)
        i = 0
        async for record in records:
            while i < len(pending) and pending[i].key < record.key:
                if _listed(pending[i], kind):
                    yield pending[i]
                i += 1
            if i < len(pending) and pending[i].key == record.key:
                if _listed(pending[i], kind):
                    yield pending[i]
                i += 1
                continue
            yield record
        for record in pending[i:]:
            if _listed(record, kind):
                yield record

    async def _scan_source(self, prefix: str, kind: str | None) -> AsyncIterator[Record]:
        """The primary's scan, started; the first mirror's when the primary cannot start it."""
        sources = [self.primary, *(m.backend for m in self.mirrors)]
        for i, source in enumerate(sources):
            records = source.scan(prefix, kind)
            try:
                first = await anext(records, None)
            except BackendUnavailable as exc:
                if i == 0:
                    self._note_down(exc)
                if i == len(sources) - 1:
                    raise
                continue
            except StatekitError:
                if i == 0 or i == len(sources) - 1:
                    raise
                continue
            if i == 0:
                self._note_up()
            return _chain(first, records)
        raise AssertionError("unreachable")  # pragma: no cover

    async def prune(self, key: str, before_version: int) -> int:
        return await self.primary.prune(key, before_version)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        if isinstance(self.primary, UnopenedPrimary):
            if Capability.WATCH not in self.capabilities:
                return await self.primary.watch(prefix)  # raises as the primary would
            future: asyncio.Future[AsyncIterator[Record]] = (
                asyncio.get_running_loop().create_future()
            )
            self._watches.append((prefix, future))
            return self._watch_once_open(future)
        return await self.primary.watch(prefix)

    async def _watch_once_open(
        self, future: asyncio.Future[AsyncIterator[Record]]
    ) -> AsyncIterator[Record]:
        """A watch asked for before the primary opened: it starts as the primary opens,
        before the journal replays (commits of other processes before that are missed)."""
        try:
            changes = await future
        finally:
            future.cancel()  # closing this before the primary opened: no watch is started
        try:
            async for record in changes:
                yield record
        finally:
            await _close(changes)

    async def replicate(self, records: Sequence[Record]) -> None:
        await self.primary.replicate(records)

    async def health(self) -> Health:
        try:
            health = await self.primary.health()
        except BackendUnavailable as exc:
            if self.fallback is None:
                raise
            self._note_down(exc)
            health = Health(False, 0.0, {"error": str(exc)})
        else:
            self._note_up()
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
        if self._fallback is None:
            return Health(health.ok, health.latency_ms, detail)
        fallback = await self._fallback.stats()
        detail["fallback"] = fallback
        if fallback["primary"] != "up":
            detail["degraded"] = (
                f"the primary is unavailable ({self._down}); writes go to the fallback journal "
                f"({fallback['pending']} pending), conditional writes are refused"
            )
        elif fallback["pending"]:
            detail["degraded"] = (
                f"the fallback journal is draining ({fallback['pending']} writes pending)"
            )
        # The store still takes writes (into the journal) and serves reads.
        return Health(True, health.latency_ms, detail)

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
        if self._invalidator is not None:
            self._invalidator.cancel()
            with contextlib.suppress(asyncio.CancelledError, StatekitError):
                await self._invalidator
        if self._fallback is not None:
            await self._fallback.aclose()
        for mirror in self.mirrors:
            await mirror.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        await self.primary.aclose()


def _listed(record: Record, kind: str | None) -> bool:
    return not record.deleted and (kind is None or record.kind == kind)


async def _close(changes: AsyncIterator[Record]) -> None:
    close = getattr(changes, "aclose", None)
    if close is not None:
        await close()


async def _chain(first: Record | None, rest: AsyncIterator[Record]) -> AsyncIterator[Record]:
    if first is None:
        return
    yield first
    async for record in rest:
        yield record
