"""TieredBackend: a primary with read caches, write-behind mirrors and a fallback journal.

It is itself a :class:`~statekit.backend.Backend`, so the StateStore and every
feature built on the contract work over it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

from statekit.backend import ANY, Backend, Capability, Health, Record, Write
from statekit.codec import from_micros, to_micros
from statekit.errors import BackendUnavailable, ConflictError, StatekitError
from statekit.tiered.cache import ReadCache
from statekit.tiered.journal import FallbackJournal, JournalEntry
from statekit.tiered.mirrors import Mirror
from statekit.tiered.shared import SharedCache, SharedLevel
from statekit.tiered.unopened import UnopenedPrimary

__all__ = ["CLOCK_SKEW", "DEFERRED_AT", "WRITE_ID", "TieredBackend"]

log = logging.getLogger("statekit.tiered")

T = TypeVar("T")

WRITE_ID = "statekit.write_id"
"""Meta field naming each write when a fallback journal is on: replay looks it up to tell
whether a write whose outcome was lost (a call failed part way, a process died) landed."""

DEFERRED_AT = "statekit.deferred_at"
"""Meta field of a write replayed from the fallback journal: when it was accepted (ISO 8601
UTC). Its ``at`` is the time of the replay, so that the key's versions stay in time order."""

CLOCK_SKEW = timedelta(minutes=2)
"""How far the primary's clock is assumed to lag this host's until a lag is observed:
looking a write id up, replay searches a key's versions back to when the entry was
first sent, less the lag (see :meth:`TieredBackend._margin`)."""

LAG_MARGIN = timedelta(seconds=1)
"""Added to the largest lag observed (this host's clock at a call less the ``at`` the
primary gave it)."""

_PAGE = 64  # versions per read while looking write ids up
_ROUND_WRITES = 5000  # writes read from the journal per replay round
_CHUNK_WRITES = 1000  # writes per append to the primary at replay
_MAX_DELAY = 1.0  # longest wait between attempts while the primary is down


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
      to the primary, or raises BackendUnavailable having written nothing.

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
        self.replay_interval = replay_interval
        self.drain_timeout = drain_timeout
        """How long a conditional append waits for the journal to drain."""
        self._on_open = on_open
        self._entries = 0  # journal entries known to be pending
        self._adding = 0  # journal appends in flight
        self._overlay: dict[str, Record] = {}  # key -> newest pending record of this store
        self._down: str | None = None  # why the primary failed last, until it answers
        self._progress = asyncio.Event()  # replaced and set at each replay step
        self._wake = asyncio.Event()  # cuts a replay backoff short
        self._backlog_since: float | None = None  # the primary answered, the journal not empty
        self._last_drain_s: float | None = None
        self._journaled = 0
        self._replayed = 0
        self._lag: timedelta | None = None  # how far the primary's clock lags, at most seen
        self._watches: list[tuple[str, asyncio.Future[AsyncIterator[Record]]]] = []
        """Watches asked for before the primary opened: started when it opens."""
        self._replayer: asyncio.Task[None] | None = None
        self._invalidator: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> Self:
        raise StatekitError("a tiered store is opened with statekit.open(primary=..., ...)")

    async def start(self) -> None:
        """Start the background work: mirrors, cache invalidation, a pending replay."""
        for mirror in self.mirrors:
            mirror.start()
        if self.fallback is not None:
            self._entries, _ = await self.fallback.counts()
            after = 0
            while entries := await self.fallback.batch(_ROUND_WRITES, after=after):
                for entry in entries:
                    for write in entry.writes:
                        self._overlay[write.key] = _pending_record(write, entry.at_micros)
                after = entries[-1].seq
        if isinstance(self.primary, UnopenedPrimary):
            self._note_down(self.primary.error)
            log.warning("the primary is unavailable; the store starts without it: %s", self._down)
            self._start_replay()
            return
        await self._opened()
        if self._entries:
            log.warning("%d writes pending in the fallback journal: replaying", self._entries)
            self._start_replay()

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
        self._signal()

    def _note_up(self) -> None:
        if self._down is not None:
            self._down = None
            log.warning("the primary %s answers again", self.primary.name)
            self._signal()

    def _signal(self) -> None:
        """Wake whoever waits for the replay to move (or the primary to fail)."""
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def _pending(self) -> bool:
        return bool(self._entries or self._adding)

    # -- writes -------------------------------------------------------------------

    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        conditional = any(w.expect is not ANY for w in writes)
        if self.fallback is not None:
            writes = [replace(w, meta={**w.meta, WRITE_ID: uuid.uuid4().hex}) for w in writes]
            if self._pending():
                if not conditional:  # keep order: queue behind what is pending
                    return await self._defer(writes, at, uncertain=False)
                await self._drained()
        try:
            records = await self.primary.append(writes, at)
        except ConflictError as exc:
            self._note_up()
            await self._evict([exc.key])
            raise
        except BackendUnavailable as exc:
            self._note_down(exc)
            if self.fallback is None or conditional:
                # A conditional write is never decided against what this store saw
                # before the outage: the caller is told (it may have committed, as
                # with any call that fails part way).
                raise
            # The primary may or may not have committed it: replay looks its id up.
            return await self._defer(writes, at, uncertain=True)
        self._note_up()
        self._observe(at, records)
        await self._committed(records)
        return records

    def _observe(self, sent: datetime, records: Sequence[Record]) -> None:
        """The primary gave ``records`` (sent at ``sent`` by this host's clock) their ``at``:
        how far behind this host's its clock may be."""
        if records:
            lag = max(timedelta(0), sent - records[0].at)
            self._lag = lag if self._lag is None else max(self._lag, lag)

    def _margin(self) -> timedelta:
        """How far before an entry's first send its write may carry an ``at``."""
        return CLOCK_SKEW if self._lag is None else self._lag + LAG_MARGIN

    async def _drained(self) -> None:
        """Wait (up to ``drain_timeout``) until the journal is empty; BackendUnavailable
        when the primary fails meanwhile or the journal does not drain in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        tried = False
        while self._pending():
            if self._down is not None:
                if tried:
                    raise BackendUnavailable(
                        f"a conditional write (expect=, update()) needs the primary, and it "
                        f"is unavailable ({self._down}) with {self._entries} writes waiting "
                        "in the fallback journal; nothing was written",
                        backend=self.name,
                    )
                tried = True  # let the replay try the primary once more now
                self._wake.set()
            self._start_replay()
            event = self._progress
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BackendUnavailable(
                    f"a conditional write (expect=, update()) waits for the fallback journal "
                    f"to drain, and {self._entries} writes still wait after "
                    f"{self.drain_timeout:g} s; nothing was written",
                    backend=self.name,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()

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
        records = [_pending_record(w, to_micros(at)) for w in writes]
        before = {r.key: self._overlay.get(r.key) for r in records}
        self._overlay.update((r.key, r) for r in records)  # this store reads its own writes
        self._adding += 1  # before the await: a concurrent append must queue behind this
        try:
            await self.fallback.add(writes, to_micros(at), uncertain=uncertain)
        except asyncio.CancelledError:
            raise  # the journal may still keep it: the replay settles the overlay
        except BaseException:
            for record in records:  # not kept: take it out of this store's reads
                if self._overlay.get(record.key) is record:
                    previous = before[record.key]
                    if previous is None:
                        del self._overlay[record.key]
                    else:
                        self._overlay[record.key] = previous
            raise
        else:
            self._entries += 1
            self._journaled += len(writes)
        finally:
            self._adding -= 1
            self._start_replay()
        await self._evict([w.key for w in writes])  # others must not read older heads
        return records

    def _start_replay(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(
                self._replay(), name="statekit-fallback-replay"
            )

    async def _replay(self) -> None:
        """Open the primary if need be, then replay the journal until it is empty."""
        delay = self.replay_interval
        while True:
            replayed = self._replayed
            try:
                if isinstance(self.primary, UnopenedPrimary):
                    await self._connect()
                    self._note_up()
                if self.fallback is None or not await self._replay_round():
                    return
                delay = self.replay_interval
                continue
            except BackendUnavailable as exc:
                self._note_down(exc)
                if self._replayed > replayed:  # it was answering: a lost answer, try again
                    delay = self.replay_interval
                    continue
            except StatekitError as exc:  # the journal itself failed: keep trying
                log.error("fallback replay failed, retrying: %s", exc)
                self._signal()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(delay / 2, delay)):
                    await self._wake.wait()
            delay = min(delay * 2, _MAX_DELAY)

    async def _replay_round(self) -> bool:
        """Replay the oldest entries; False when the journal was empty."""
        assert self.fallback is not None
        entries = await self.fallback.batch(_ROUND_WRITES)
        if not entries:
            self._entries = 0
            if not self._adding:
                self._overlay.clear()  # everything this store journaled has landed
            if self._backlog_since is not None:
                self._last_drain_s = time.monotonic() - self._backlog_since
                self._backlog_since = None
            self._signal()
            return False
        landed = await self._landed([e for e in entries if e.uncertain])
        self._note_up()
        if self._backlog_since is None:
            self._backlog_since = time.monotonic()
        # From here on an outcome may be lost: replay will look these ids up first.
        await self.fallback.sent([e.seq for e in entries], to_micros(datetime.now(UTC)))
        applied: list[JournalEntry] = []
        records: list[Record] = []
        chunks = self._chunks(entries, landed)
        try:
            for i, chunk in enumerate(chunks):
                try:
                    applied_now, records_now = await self._send(chunk, landed)
                except BaseException:
                    # The chunks after this one were never sent: unmark them (unless part
                    # of one had landed before: then its ids must still be looked up).
                    await self.fallback.unsent(
                        [
                            e.seq
                            for later in chunks[i + 1 :]
                            for e in later
                            if not any(w.meta.get(WRITE_ID) in landed for w in e.writes)
                        ]
                    )
                    raise
                applied += applied_now
                records += records_now
        finally:
            if applied:
                await self.fallback.done([e.seq for e in applied])
                self._settled(applied)
                self._replayed += len(records)
                await self._committed(records)
                self._signal()
        return True

    def _chunks(
        self, entries: Sequence[JournalEntry], landed: set[str]
    ) -> list[list[JournalEntry]]:
        """Consecutive entries, grouped into appends of distinct keys (the contract's rule).

        Without atomic batches each entry goes alone, so that a refusal is its own.
        """
        together = Capability.ATOMIC_BATCH in self.primary.capabilities
        chunks: list[list[JournalEntry]] = []
        keys: set[str] = set()
        size = 0
        for entry in entries:
            writes = [w for w in entry.writes if w.meta.get(WRITE_ID) not in landed]
            if (
                not chunks
                or not together
                or size + len(writes) > _CHUNK_WRITES
                or any(w.key in keys for w in writes)
            ):
                chunks.append([])
                keys, size = set(), 0
            chunks[-1].append(entry)
            keys.update(w.key for w in writes)
            size += len(writes)
        return chunks

    async def _send(
        self, chunk: list[JournalEntry], landed: set[str]
    ) -> tuple[list[JournalEntry], list[Record]]:
        """Append one chunk; a refusal of a chunk of several entries is isolated entry by entry."""
        assert self.fallback is not None
        writes = [
            replace(w, meta={**w.meta, DEFERRED_AT: _iso(entry.at_micros)})
            for entry in chunk
            for w in entry.writes
            if w.meta.get(WRITE_ID) not in landed
        ]
        if not writes:  # every write of it had landed already
            return chunk, []
        sent = datetime.now(UTC)
        try:
            records = await self.primary.append(writes, sent)
        except BackendUnavailable:
            raise  # still down, or the answer was lost: the next round looks the ids up
        except StatekitError as exc:  # refused for good (a conflict, a value it cannot hold)
            if len(chunk) > 1:
                applied: list[JournalEntry] = []
                records = []
                for entry in chunk:
                    applied_now, records_now = await self._send([entry], landed)
                    applied += applied_now
                    records += records_now
                return applied, records
            reason = _reason(exc)
            log.error("fallback replay: write refused by the primary, kept as rejected: %s", reason)
            await self.fallback.reject(chunk[0].seq, reason)
            self._settled(chunk)
            return [], []
        self._observe(sent, records)
        return chunk, records

    def _settled(self, entries: Iterable[JournalEntry]) -> None:
        """These entries left the journal: this store's reads stop overlaying them."""
        for entry in entries:
            self._entries = max(0, self._entries - 1)
            for write in entry.writes:
                pending = self._overlay.get(write.key)
                if pending is not None and pending.meta.get(WRITE_ID) == write.meta.get(WRITE_ID):
                    del self._overlay[write.key]

    async def _landed(self, entries: Sequence[JournalEntry]) -> set[str]:
        """The write ids of ``entries`` (whose outcome was lost) that the primary holds.

        Each key's versions are searched newest first, back to when its oldest such
        entry was first sent, less :meth:`_margin`: a write committed after it was
        sent carries an ``at`` no earlier than the primary's clock then.
        """
        wanted: dict[str, set[str]] = {}
        since: dict[str, int] = {}
        for entry in entries:
            sent = entry.at_micros if entry.sent_micros is None else entry.sent_micros
            for write in entry.writes:
                wanted.setdefault(write.key, set()).add(str(write.meta.get(WRITE_ID)))
                since[write.key] = min(since.get(write.key, sent), sent)
        found: set[str] = set()
        if not wanted:
            return found
        if Capability.HISTORY not in self.primary.capabilities:
            # Only the head can tell (documented: such a primary may apply a write twice).
            heads = await self.primary.latest(list(wanted))
            return {str(h.meta.get(WRITE_ID)) for h in heads.values()}
        for key, ids in wanted.items():
            bound = from_micros(since[key]) - self._margin()
            before: int | None = None
            while ids:
                page = await self.primary.read(key, before=before, limit=_PAGE, newest_first=True)
                for record in page:
                    write_id = record.meta.get(WRITE_ID)
                    if write_id in ids:
                        ids.discard(str(write_id))
                        found.add(str(write_id))
                if len(page) < _PAGE or page[-1].at < bound:
                    break
                before = page[-1].version
        return found

    async def settle(self) -> None:
        """Wait until the fallback journal is replayed and mirrors have caught up
        (wrap it in ``asyncio.timeout`` to bound the wait)."""
        while self._replayer is not None and not self._replayer.done():
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
        if self._overlay:
            missing = []
            for key in keys:
                pending = self._overlay.get(key)
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
        pending = sorted(
            (r for k, r in self._overlay.items() if k.startswith(prefix)), key=lambda r: r.key
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
        if self.fallback is None:
            return Health(health.ok, health.latency_ms, detail)
        fallback = await self.fallback_stats()
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

    async def fallback_stats(self) -> dict[str, Any]:
        """The fallback journal's figures (``health()["fallback"]``, docs/tiered.md)."""
        assert self.fallback is not None
        pending, rejected = await self.fallback.counts()
        oldest = await self.fallback.oldest()
        now = time.monotonic()
        if isinstance(self.primary, UnopenedPrimary):
            state = "not opened"
        else:
            state = "down" if self._down is not None else "up"
        return {
            "path": str(self.fallback.path),
            "primary": state,
            "pending": pending,
            "rejected": rejected,
            "oldest_pending_s": None
            if oldest is None
            else round(max(0.0, time.time() - oldest / 1e6), 3),
            "draining_s": None
            if self._backlog_since is None
            else round(now - self._backlog_since, 3),
            "last_drain_s": None if self._last_drain_s is None else round(self._last_drain_s, 3),
            "journaled": self._journaled,
            "replayed": self._replayed,
        }

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


def _pending_record(write: Write, at_micros: int) -> Record:
    """What this store reads for ``write`` while it waits in the journal: version 0."""
    return Record(write.key, 0, write.kind, write.data, dict(write.meta), from_micros(at_micros))


def _listed(record: Record, kind: str | None) -> bool:
    return not record.deleted and (kind is None or record.kind == kind)


def _iso(micros: int) -> str:
    return from_micros(micros).isoformat(timespec="microseconds")


def _reason(exc: StatekitError) -> str:
    if isinstance(exc, ConflictError):
        return f"conflict on {exc.key!r}: expected version {exc.expected}, found {exc.actual}"
    return f"{type(exc).__name__}: {exc}"


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
