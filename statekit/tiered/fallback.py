"""The fallback journal's side of a tiered store: what is pending, what this store reads
of it, and the replay into the primary (docs/tiered.md, "Fallback journal")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from statekit.backend import Backend, Capability, Record, Write
from statekit.codec import from_micros, to_micros
from statekit.errors import BackendUnavailable, ConflictError, StatekitError
from statekit.tiered.journal import FallbackJournal, JournalEntry
from statekit.tiered.unopened import UnopenedPrimary

__all__ = ["CLOCK_SKEW", "DEFERRED_AT", "LAG_MARGIN", "WRITE_ID", "FallbackPath"]

log = logging.getLogger("statekit.tiered")

WRITE_ID = "statekit.write_id"
"""Meta field naming each write when a fallback journal is on: replay looks it up to tell
whether a write whose outcome was lost (a call failed part way, a process died) landed."""

DEFERRED_AT = "statekit.deferred_at"
"""Meta field of a write replayed from the fallback journal: when it was accepted (ISO 8601
UTC). Its ``at`` is the time of the replay, so that the key's versions stay in time order."""

CLOCK_SKEW = timedelta(minutes=2)
"""How far the primary's clock is assumed to lag this host's until a lag is observed:
looking a write id up, replay searches a key's versions back to when the entry was
first sent, less the lag (see :meth:`FallbackPath._margin`)."""

LAG_MARGIN = timedelta(seconds=1)
"""Added to the largest lag observed (this host's clock at a call less the ``at`` the
primary gave it)."""

_PAGE = 64  # versions per read while looking write ids up
_ROUND_WRITES = 5000  # writes read from the journal per replay round
_CHUNK_WRITES = 1000  # writes per append to the primary at replay
_MAX_DELAY = 1.0  # longest wait between attempts while the primary is down


class Owner(Protocol):
    """What the fallback path needs of the tiered backend that owns it."""

    primary: Backend
    _down: str | None

    @property
    def name(self) -> str: ...

    async def _connect(self) -> None: ...

    async def _committed(self, records: Sequence[Record]) -> None: ...

    async def evict(self, keys: Sequence[str]) -> None: ...

    def _note_down(self, exc: BaseException) -> None: ...

    def _note_up(self) -> None: ...


class FallbackPath:
    """The journal ``journal`` of the tiered store ``owner``.

    - :meth:`defer` keeps unconditional writes the primary cannot take (or that must
      queue behind pending ones) and lays them over this store's reads (``overlay``);
    - a background task opens the primary if need be and replays the journal in
      rounds, exactly once: every entry is marked sent before it is, and an entry
      whose outcome was lost has its write ids looked up before anything is resent;
    - :meth:`drained` lets a conditional write wait for the journal to empty.
    """

    def __init__(
        self,
        owner: Owner,
        journal: FallbackJournal,
        *,
        replay_interval: float,
        drain_timeout: float,
    ) -> None:
        self.owner = owner
        self.journal = journal
        self.replay_interval = replay_interval
        self.drain_timeout = drain_timeout
        self.overlay: dict[str, Record] = {}
        """Key -> the newest of this store's writes still in the journal (version 0)."""
        self._entries = 0  # journal entries known to be pending
        self._adding = 0  # journal appends in flight
        self._progress = asyncio.Event()  # replaced and set at each replay step
        self._wake = asyncio.Event()  # cuts a replay backoff short
        self._backlog_since: float | None = None  # the primary answered, the journal not empty
        self._last_drain_s: float | None = None
        self._journaled = 0
        self._replayed = 0
        self._lag: timedelta | None = None  # how far the primary's clock lags, at most seen
        self._replayer: asyncio.Task[None] | None = None

    async def load(self) -> int:
        """Read what a previous process left pending into ``overlay``; how many entries."""
        self._entries, _ = await self.journal.counts()
        after = 0
        while entries := await self.journal.batch(_ROUND_WRITES, after=after):
            for entry in entries:
                for write in entry.writes:
                    self.overlay[write.key] = _pending_record(write, entry.at_micros)
            after = entries[-1].seq
        return self._entries

    def signal(self) -> None:
        """Wake whoever waits for the replay to move (or the primary to fail)."""
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def pending(self) -> bool:
        return bool(self._entries or self._adding)

    # -- writes -------------------------------------------------------------------

    def observe(self, sent: datetime, records: Sequence[Record]) -> None:
        """The primary gave ``records`` (sent at ``sent`` by this host's clock) their ``at``:
        how far behind this host's its clock may be."""
        if records:
            lag = max(timedelta(0), sent - records[0].at)
            self._lag = lag if self._lag is None else max(self._lag, lag)

    def _margin(self) -> timedelta:
        """How far before an entry's first send its write may carry an ``at``."""
        return CLOCK_SKEW if self._lag is None else self._lag + LAG_MARGIN

    async def drained(self) -> None:
        """Wait (up to ``drain_timeout``) until the journal is empty; BackendUnavailable
        when the primary fails meanwhile or the journal does not drain in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        tried = False
        while self.pending():
            if self.owner._down is not None:
                if tried:
                    raise BackendUnavailable(
                        f"a conditional write (expect=, update()) needs the primary, and it "
                        f"is unavailable ({self.owner._down}) with {self._entries} writes waiting "
                        "in the fallback journal; nothing was written",
                        backend=self.owner.name,
                    )
                tried = True  # let the replay try the primary once more now
                self._wake.set()
            self.start_replay()
            event = self._progress
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BackendUnavailable(
                    f"a conditional write (expect=, update()) waits for the fallback journal "
                    f"to drain, and {self._entries} writes still wait after "
                    f"{self.drain_timeout:g} s; nothing was written",
                    backend=self.owner.name,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()

    async def defer(
        self, writes: Sequence[Write], at: datetime, *, uncertain: bool
    ) -> list[Record]:
        records = [_pending_record(w, to_micros(at)) for w in writes]
        before = {r.key: self.overlay.get(r.key) for r in records}
        self.overlay.update((r.key, r) for r in records)  # this store reads its own writes
        self._adding += 1  # before the await: a concurrent append must queue behind this
        try:
            await self.journal.add(writes, to_micros(at), uncertain=uncertain)
        except asyncio.CancelledError:
            raise  # the journal may still keep it: the replay settles the overlay
        except BaseException:
            for record in records:  # not kept: take it out of this store's reads
                if self.overlay.get(record.key) is record:
                    previous = before[record.key]
                    if previous is None:
                        del self.overlay[record.key]
                    else:
                        self.overlay[record.key] = previous
            raise
        else:
            self._entries += 1
            self._journaled += len(writes)
        finally:
            self._adding -= 1
            self.start_replay()
        await self.owner.evict([w.key for w in writes])  # others must not read older heads
        return records

    def start_replay(self) -> None:
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
                if isinstance(self.owner.primary, UnopenedPrimary):
                    await self.owner._connect()
                    self.owner._note_up()
                if not await self._replay_round():
                    return
                delay = self.replay_interval
                continue
            except BackendUnavailable as exc:
                self.owner._note_down(exc)
                if self._replayed > replayed:  # it was answering: a lost answer, try again
                    delay = self.replay_interval
                    continue
            except StatekitError as exc:  # the journal itself failed: keep trying
                log.error("fallback replay failed, retrying: %s", exc)
                self.signal()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(delay / 2, delay)):
                    await self._wake.wait()
            delay = min(delay * 2, _MAX_DELAY)

    async def _replay_round(self) -> bool:
        """Replay the oldest entries; False when the journal was empty."""
        entries = await self.journal.batch(_ROUND_WRITES)
        if not entries:
            self._entries = 0
            if not self._adding:
                self.overlay.clear()  # everything this store journaled has landed
            if self._backlog_since is not None:
                self._last_drain_s = time.monotonic() - self._backlog_since
                self._backlog_since = None
            self.signal()
            return False
        landed = await self._landed([e for e in entries if e.uncertain])
        self.owner._note_up()
        if self._backlog_since is None:
            self._backlog_since = time.monotonic()
        # From here on an outcome may be lost: replay will look these ids up first.
        await self.journal.sent([e.seq for e in entries], to_micros(datetime.now(UTC)))
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
                    await self.journal.unsent(
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
                await self.journal.done([e.seq for e in applied])
                self._settled(applied)
                self._replayed += len(records)
                await self.owner._committed(records)
                self.signal()
        return True

    def _chunks(
        self, entries: Sequence[JournalEntry], landed: set[str]
    ) -> list[list[JournalEntry]]:
        """Consecutive entries, grouped into appends of distinct keys (the contract's rule).

        Without atomic batches each entry goes alone, so that a refusal is its own.
        """
        together = Capability.ATOMIC_BATCH in self.owner.primary.capabilities
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
            records = await self.owner.primary.append(writes, sent)
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
            await self.journal.reject(chunk[0].seq, reason)
            self._settled(chunk)
            return [], []
        self.observe(sent, records)
        return chunk, records

    def _settled(self, entries: Iterable[JournalEntry]) -> None:
        """These entries left the journal: this store's reads stop overlaying them."""
        for entry in entries:
            self._entries = max(0, self._entries - 1)
            for write in entry.writes:
                pending = self.overlay.get(write.key)
                if pending is not None and pending.meta.get(WRITE_ID) == write.meta.get(WRITE_ID):
                    del self.overlay[write.key]

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
        if Capability.HISTORY not in self.owner.primary.capabilities:
            # Only the head can tell (documented: such a primary may apply a write twice).
            heads = await self.owner.primary.latest(list(wanted))
            return {str(h.meta.get(WRITE_ID)) for h in heads.values()}
        for key, ids in wanted.items():
            bound = from_micros(since[key]) - self._margin()
            before: int | None = None
            while ids:
                page = await self.owner.primary.read(
                    key, before=before, limit=_PAGE, newest_first=True
                )
                for record in page:
                    write_id = record.meta.get(WRITE_ID)
                    if write_id in ids:
                        ids.discard(str(write_id))
                        found.add(str(write_id))
                if len(page) < _PAGE or page[-1].at < bound:
                    break
                before = page[-1].version
        return found

    async def rejected(self) -> list[dict[str, Any]]:
        """Deferred writes the primary refused at replay, with why."""
        return [
            {"seq": r.seq, "at": r.at, "reason": r.reason, "writes": r.writes}
            for r in await self.journal.rejected()
        ]

    async def stats(self) -> dict[str, Any]:
        """The fallback journal's figures (``health()["fallback"]``, docs/tiered.md)."""
        pending, rejected = await self.journal.counts()
        oldest = await self.journal.oldest()
        now = time.monotonic()
        if isinstance(self.owner.primary, UnopenedPrimary):
            state = "not opened"
        else:
            state = "down" if self.owner._down is not None else "up"
        return {
            "path": str(self.journal.path),
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

    async def settle(self) -> None:
        """Wait until the journal is replayed."""
        while self._replayer is not None and not self._replayer.done():
            await asyncio.shield(self._replayer)

    async def aclose(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError, StatekitError):
                await self._replayer
        await self.journal.aclose()


def _pending_record(write: Write, at_micros: int) -> Record:
    """What this store reads for ``write`` while it waits in the journal: version 0."""
    return Record(write.key, 0, write.kind, write.data, dict(write.meta), from_micros(at_micros))


def _iso(micros: int) -> str:
    return from_micros(micros).isoformat(timespec="microseconds")


def _reason(exc: StatekitError) -> str:
    if isinstance(exc, ConflictError):
        return f"conflict on {exc.key!r}: expected version {exc.expected}, found {exc.actual}"
    return f"{type(exc).__name__}: {exc}"
