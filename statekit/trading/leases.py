"""Leases across processes, with fencing tokens (docs/leases.md).

A lease is the key ``lease/<name>`` holding ``{holder, owner, ttl, acquired_at,
expires_at}``. Whoever writes it with a compare-and-set holds it until
``expires_at``; after that, anyone may take it over, again with a compare-and-set.
The key's version is the **fencing token**: it only grows, and a newer holder
always has a larger one.

A write fenced by a lease (``store.put(..., fence=lease)``) is appended with a
guard (:class:`~statekit.backend.Guard`): the lease key must still be at the
holder's token, checked atomically with the write, and is not written. If
another holder took the lease meanwhile, the lease key's version has moved, the
append fails on it and nothing is written: :class:`~statekit.errors.FencedOff`.
So the token moves only with acquire, renew and release, a holder's fenced
writes run concurrently (no lock, no extra round trip), and the lease key's
history grows only with its holders (renewals prune it to the last
:data:`KEEP_VERSIONS`). On a backend without guarded appends
(``Capability.GUARDED_APPEND``) a fenced write is appended in one atomic batch
with the lease key re-written as it is, ``expect=<token>``, one at a time: there
each fenced write moves the token on by one; the :class:`Lease` keeps track.

Time is the writer's clock: the holder stamps ``expires_at`` from its clock, a
taker judges expiry by its own. The ttl must exceed the clock skew between them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from statekit.backend import JSON, Capability, Guard, Record, Write
from statekit.codec import check_key
from statekit.errors import ConflictError, StatekitError, ValidationError
from statekit.store import Retention, StateStore
from statekit.trading import kinds
from statekit.trading.errors import FencedOff, LockTimeout

__all__ = ["KEEP_VERSIONS", "LEASE_KIND", "LEASE_PREFIX", "Lease", "LeaseState"]

log = logging.getLogger("statekit.leases")

LEASE_PREFIX = "lease/"
"""Lease ``name`` lives at the key ``lease/<name>``."""
LEASE_KIND = kinds.LEASE
"""The kind of lease keys."""
KEEP_VERSIONS = 32
"""Versions of the lease key kept: once the token is this many past the last prune,
an acquire or renew drops all but the last ``KEEP_VERSIONS`` (on backends with history)."""

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LeaseState:
    """What a lease key says: who holds it, until when.

    :param holder: the holder's id, new for each acquisition (``host:pid:random``).
    :param owner: the label the holder gave itself (``reconciler-1``), or ``""``.
    :param ttl: the seconds each acquire or renew holds the lease for.
    :param acquired_at: when this holder took the lease (its clock, UTC).
    :param expires_at: when the lease may be taken by another (the holder's clock, UTC).
    :param token: the lease key's version: the fencing token.
    """

    holder: str
    owner: str
    ttl: float
    acquired_at: datetime
    expires_at: datetime
    token: int

    @classmethod
    def from_record(cls, record: Record) -> LeaseState:
        """Read a lease key's record; a value that is not a lease is a ValidationError."""
        data = record.data
        try:
            assert isinstance(data, dict)
            holder, owner, ttl = data["holder"], data.get("owner", ""), data["ttl"]
            acquired_at, expires_at = data["acquired_at"], data["expires_at"]
            assert isinstance(holder, str) and isinstance(owner, str)
            assert isinstance(ttl, int | float) and isinstance(acquired_at, str)
            assert isinstance(expires_at, str)
            state = cls(
                holder=holder,
                owner=owner,
                ttl=float(ttl),
                acquired_at=datetime.fromisoformat(acquired_at),
                expires_at=datetime.fromisoformat(expires_at),
                token=record.version,
            )
            assert state.expires_at.tzinfo is not None
        except (AssertionError, KeyError, ValueError):
            raise ValidationError(
                f"{record.key!r} (version {record.version}) does not hold a lease: {data!r}",
                key=record.key,
                reason="not a lease",
            ) from None
        return state

    def to_json(self) -> JSON:
        """The value stored at the lease key (``token`` is the key's version, not stored)."""
        return {
            "holder": self.holder,
            "owner": self.owner,
            "ttl": self.ttl,
            "acquired_at": self.acquired_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValidationError(
            f"a lease name is a non-empty string without surrounding spaces, not {name!r}",
            reason="lease name",
        )
    return check_key(LEASE_PREFIX + name)


def _seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{what} is seconds (a number), not {value!r}", reason=what)
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValidationError(f"{what} must be finite and {bound}, not {value!r}", reason=what)
    return seconds


class Lease:
    """A named lease over a store with compare-and-set; its version is a fencing token.

    ``Lease(store, "reconciler", ttl=10)`` names the lease; nothing is written until
    :meth:`acquire`. ``async with`` acquires (waiting up to ``timeout``) and releases::

        async with Lease(store, "reconciler", ttl=10, timeout=30) as lease:
            await store.put("position/EURUSD", value, fence=lease)  # FencedOff when lost
            await lease.renew()                                      # before ttl runs out

    One Lease object is one would-be holder; its fenced writes, renewals and release
    run one at a time. Use a Lease from one event loop.

    :param store: the store; its backend needs compare-and-set (fenced writes also
        need atomic batches).
    :param name: the lease name; the key is ``lease/<name>``.
    :param ttl: seconds (or a timedelta) an acquire or renew holds the lease for.
        It must exceed the clock skew between the machines sharing the lease.
    :param timeout: how long ``async with`` waits for the lease (None: as long as it takes).
    :param poll: seconds between attempts while waiting (jittered); default ttl/10,
        at most 0.25 s.
    :param owner: a label stored with the lease, to say who holds it.
    :param clock: the current UTC time (tests may pass their own).
    :raises CapabilityError: the backend has no compare-and-set.
    :raises ValidationError: a bad name, ttl, timeout or poll.
    """

    def __init__(
        self,
        store: StateStore,
        name: str,
        *,
        ttl: float | timedelta,
        timeout: float | None = None,
        poll: float | None = None,
        owner: str = "",
        clock: Clock = _utc_now,
    ) -> None:
        self.key = _check_name(name)
        self.name = name
        self.ttl = _seconds(ttl, "lease ttl")
        self.timeout = None if timeout is None else _seconds(timeout, "timeout", allow_zero=True)
        self.poll = min(self.ttl / 10, 0.25) if poll is None else _seconds(poll, "poll")
        if not isinstance(owner, str):
            raise ValidationError(f"owner must be a string, not {owner!r}", reason="owner")
        self.owner = owner
        store.require(Capability.COMPARE_AND_SET, f"the lease {name!r}")
        self.store = store
        self._clock = clock
        self._state: LeaseState | None = None
        self._held = False
        self._seen: LeaseState | None = None
        self._lock = asyncio.Lock()
        self._guarded = Capability.GUARDED_APPEND in store.capabilities
        self._pruned = 0  # the token at the last prune of the lease key

    def __repr__(self) -> str:
        status = f"held, token {self.token}" if self._held else "not held"
        return f"<Lease {self.name!r} ttl={self.ttl}s {status}>"

    # -- what this holder knows --------------------------------------------------

    @property
    def held(self) -> bool:
        """True from a successful acquire until a release, or until a write found it lost.

        It does not look at the clock: see :attr:`expires_at`.
        """
        return self._held

    @property
    def token(self) -> int:
        """The fencing token: the lease key's version as this holder last wrote it.

        It moves on with every acquire and renewal (and, on a backend without
        guarded appends, with every fenced write); 0 before the first acquire.
        """
        return 0 if self._state is None else self._state.token

    @property
    def holder(self) -> str | None:
        """This holder's id in the lease key (new for each acquisition), or None."""
        return None if self._state is None else self._state.holder

    @property
    def expires_at(self) -> datetime | None:
        """When others may take the lease unless it is renewed (UTC), or None."""
        return None if self._state is None or not self._held else self._state.expires_at

    async def current(self) -> LeaseState | None:
        """Who holds the lease now, as stored (None: free); expiry is not judged here."""
        record = await self.store.get(self.key)
        return None if record is None else LeaseState.from_record(record)

    # -- acquire / renew / release -----------------------------------------------

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or expired (by this clock); never waits.

        :raises ValidationError: this Lease already holds it (renew instead).
        """
        async with self._lock:
            if self._held:
                raise ValidationError(
                    f"the lease {self.name!r} is already held by this Lease (token "
                    f"{self.token}); renew() it instead",
                    key=self.key,
                    reason="held",
                )
            record = await self.store.get(self.key)
            now = self._clock()
            meta: dict[str, JSON] = {"lease": "acquire"}
            if record is not None:
                other = LeaseState.from_record(record)
                if other.expires_at > now:
                    self._seen = other
                    return False
                meta["took_over"] = other.holder
            state = LeaseState(
                holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}",
                owner=self.owner,
                ttl=self.ttl,
                acquired_at=now,
                expires_at=now + timedelta(seconds=self.ttl),
                token=0,
            )
            write = Write(
                self.key,
                state.to_json(),
                LEASE_KIND,
                meta,
                0 if record is None else record.version,
            )
            try:
                (written,) = await self.store.append([write])
            except ConflictError:
                return False  # another taker was first
            self._state = LeaseState.from_record(written)
            self._held = True
        await self._prune()
        return True

    async def acquire(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 - LockTimeout names the holder
        """Take the lease, waiting while another holder's lease runs; returns the token.

        :param timeout: seconds to wait at most (0: one attempt); None: as long as it takes.
        :raises LockTimeout: still held by another after ``timeout``.
        """
        limit = None if timeout is None else _seconds(timeout, "timeout", allow_zero=True)
        deadline = None if limit is None else time.monotonic() + limit
        while not await self.try_acquire():
            delay = self.poll * random.uniform(0.5, 1.0)  # jitter: waiters spread out
            if self._seen is not None:  # no point polling long after the expiry
                until_expiry = (self._seen.expires_at - self._clock()).total_seconds()
                delay = max(0.001, min(delay, until_expiry + 0.001))
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = self._seen
                    by = f" by {seen.holder} until {seen.expires_at.isoformat()}" if seen else ""
                    raise LockTimeout(
                        f"the lease {self.name!r} is held{by}; gave up after {limit:g} s",
                        names=(self.name,),
                        timeout=limit or 0.0,
                    )
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
        return self.token

    async def renew(self) -> int:
        """Extend the lease to ttl from now (this clock); returns the new token.

        It works while no one else took the lease, even past ``expires_at``.

        :raises FencedOff: another holder took the lease (or it was released).
        """
        async with self._lock:
            state = self._require_held("renew")
            now = self._clock()
            renewed = replace(state, ttl=self.ttl, expires_at=now + timedelta(seconds=self.ttl))
            await self._append_guarded([], renewed, "renew")
            token = self.token
        await self._prune()
        return token

    async def _prune(self) -> None:
        """Keep the lease key's history bounded: once the token is :data:`KEEP_VERSIONS`
        past the last prune, drop all but the last ``KEEP_VERSIONS`` versions. Best
        effort: a failure is logged, and tried again at the next renewal."""
        token = self.token
        if (
            token - self._pruned < KEEP_VERSIONS
            or Capability.HISTORY not in self.store.capabilities
        ):
            return
        self._pruned = token
        try:
            await self.store.prune(self.key, Retention(keep_last=KEEP_VERSIONS))
        except StatekitError as exc:
            self._pruned = 0
            log.warning("could not prune the history of %s: %s", self.key, exc)

    async def release(self) -> bool:
        """Give the lease up (a tombstone version, so tokens keep growing).

        Returns False when there was nothing to release: never held, released
        already, or another holder took it meanwhile (which is left alone).
        """
        async with self._lock:
            if not self._held or self._state is None:
                return False
            try:
                await self._append_guarded([], None, "release")
            except FencedOff:
                return False
            self._held = False
            return True

    async def append_fenced(self, store: StateStore, writes: Sequence[Write]) -> list[Record]:
        """Append ``writes`` atomically with this lease's token check (the ``fence=`` path).

        ``store.put(key, value, fence=lease)`` and ``store.batch(writes, fence=lease)``
        call this. Returns the records of ``writes``.

        :raises FencedOff: another holder has the lease (or this Lease does not hold
            it); nothing was written.
        :raises ConflictError: a write's own ``expect`` failed; the lease is still held.
        :raises CapabilityError: the backend has no atomic batches.
        """
        if store is not self.store:
            raise ValidationError(
                f"the lease {self.name!r} belongs to another store object; a fence only "
                "guards writes to its own store",
                key=self.key,
                reason="other store",
            )
        store.require(Capability.ATOMIC_BATCH, f"a write fenced by the lease {self.name!r}")
        for write in writes:
            if write.key == self.key:
                raise ValidationError(
                    f"a write fenced by the lease {self.name!r} cannot write its key",
                    key=self.key,
                    reason="lease key",
                )
        if self._guarded:
            return await self._append_fenced(list(writes))
        async with self._lock:
            state = self._require_held("write")
            return await self._append_guarded(list(writes), state, "fence")

    async def _append_fenced(self, writes: list[Write]) -> list[Record]:
        """Append ``writes`` guarded by the lease key at this holder's token (the key is
        not written, no lock is taken: a holder's fenced writes run side by side)."""
        while True:
            tried = self._require_held("write").token
            try:
                return await self.store.append(writes, guards=[Guard(self.key, tried)])
            except ConflictError as exc:
                if exc.key != self.key:
                    raise
            # The lease key moved: a renewal of ours (maybe one whose answer was lost)
            # or another holder. Looked at under the lock: no renewal is half done.
            async with self._lock:
                state = self._require_held("write")
                if state.token != tried:
                    continue  # renewed meanwhile: try again with the new token
                head = await self.store.get(self.key)
                now = None if head is None else LeaseState.from_record(head)
                if now is not None and now.holder == state.holder and now.token > tried:
                    # Still ours (holder ids are unique per acquisition): a renewal
                    # landed but its answer was lost.
                    self._state = now
                    continue
                self._held = False
                raise FencedOff(
                    f"the lease {self.name!r} has a newer holder "
                    f"({now.holder if now else 'none: released'}, token "
                    f"{now.token if now else 0}); this write carried token {tried} "
                    "and was not stored",
                    lease=self.name,
                    token=tried,
                    current=now.token if now else 0,
                )

    # -- internals ---------------------------------------------------------------

    def _require_held(self, what: str) -> LeaseState:
        if not self._held or self._state is None:
            raise FencedOff(
                f"cannot {what} under the lease {self.name!r}: this Lease does not hold it",
                lease=self.name,
                token=self.token,
                current=0,
            )
        return self._state

    async def _append_guarded(
        self, writes: list[Write], lease: LeaseState | None, op: str
    ) -> list[Record]:
        """Append ``writes`` plus the lease key (``lease``; None = release) with
        ``expect=<token>``; a conflict on the lease key means another holder: FencedOff."""
        assert self._state is not None
        for attempt in range(2):
            guard = Write(
                self.key,
                None if lease is None else lease.to_json(),
                LEASE_KIND,
                {"lease": op},
                self._state.token,
            )
            try:
                records = await self.store.append([*writes, guard])
            except ConflictError as exc:
                if exc.key != self.key:
                    raise
                head = await self.store.get(self.key)
                now = None if head is None else LeaseState.from_record(head)
                if attempt == 0 and now is not None and now.holder == self._state.holder:
                    # Still ours: an earlier write of ours landed but its answer was
                    # lost (cancelled). Holder ids are unique per acquisition, so no
                    # one else took the lease in between.
                    self._state = now
                    if lease is not None:
                        lease = replace(lease, token=now.token)
                    continue
                tried = self._state.token
                self._held = False
                raise FencedOff(
                    f"the lease {self.name!r} has a newer holder "
                    f"({now.holder if now else 'none: released'}, token "
                    f"{now.token if now else exc.actual}); this write carried token {tried} "
                    "and was not stored",
                    lease=self.name,
                    token=tried,
                    current=now.token if now else 0,
                ) from exc
            self._state = replace(lease or self._state, token=records[-1].version)
            return records[:-1]
        raise AssertionError("unreachable")  # pragma: no cover

    async def __aenter__(self) -> Self:
        await self.acquire(self.timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
