"""The async StateStore: everything users call, built once over the storage contract."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from statekit.backend import (
    ANY,
    JSON,
    MICROSECOND,
    Backend,
    Capability,
    Expect,
    Guard,
    Health,
    Record,
    Write,
    guarded_append,
)
from statekit.codec import (
    MAX_VERSION,
    Codec,
    check_bound,
    check_key,
    check_kind,
    check_prefix,
    encode,
)
from statekit.errors import (
    CapabilityError,
    ConflictError,
    HistoryUnavailable,
    ValidationError,
)

if TYPE_CHECKING:
    from statekit.snapshots import Snapshots

log = logging.getLogger("statekit.store")

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "DEFAULT_RETRY_FOR",
    "RESERVED_PREFIX",
    "Fence",
    "Retention",
    "StateStore",
    "Watch",
    "open",
]

DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024
DEFAULT_RETRY_FOR = 10.0
"""Seconds ``update()`` keeps retrying a conflicting read-modify-write."""
RESERVED_PREFIX = "_sk/"
"""Keys statekit keeps for itself (snapshots). Users cannot write them directly."""
STORE_ID_KEY = RESERVED_PREFIX + "store-id"
"""A random id written once into a store: names its entries in a shared cache."""

UpdateFn = Callable[[JSON], JSON | Awaitable[JSON]]


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history to keep per key; the head is always kept.

    :param keep_last: keep at least the newest N versions.
    :param older_than: drop versions written longer ago than this.
    :param before_version: drop versions below this one (a fixed cut, which appends
        made meanwhile cannot move, e.g. up to an event stream's snapshot).
    With several, a version is kept when any rule keeps it.
    """

    keep_last: int | None = None
    older_than: timedelta | None = None
    before_version: int | None = None

    def __post_init__(self) -> None:
        if (self.keep_last, self.older_than, self.before_version) == (None, None, None):
            raise ValidationError(
                "Retention needs keep_last, older_than or before_version", reason="retention"
            )
        if self.keep_last is not None and self.keep_last < 1:
            raise ValidationError("Retention.keep_last must be >= 1", reason="retention")


class Fence(Protocol):
    """What ``fence=`` takes: the holder of a fencing token, e.g. a
    :class:`statekit.trading.leases.Lease` (docs/leases.md).

    The store hands a fenced write to its fence, which appends it atomically with a
    check of its token, so that the write is refused (``FencedOff``, nothing stored)
    once a newer holder exists. The fence does the append because it knows how: a
    guard on its key where the backend has guarded appends, else its key re-written
    in the same batch (then its token moves with every fenced write, and one
    holder's fenced writes must not race each other).
    """

    async def append_fenced(self, store: StateStore, writes: Sequence[Write]) -> list[Record]:
        """Append ``writes`` to ``store`` atomically with the token check.

        Returns the records of ``writes`` (in their order), nothing of the fence's own.

        :raises FencedOff: a newer holder exists; nothing was written.
        :raises ConflictError: one of ``writes`` failed its own ``expect``.
        """
        ...


class Validators(Protocol):
    """What the store asks before a value of a kind is stored (a ValidatorRegistry)."""

    def validate(self, kind: str, key: str, data: JSON) -> None: ...


class StateStore:
    """Versioned keys with history, optimistic locking, snapshots and watch.

    Open one with :func:`statekit.open`; use ``async with`` or call :meth:`aclose`.

    :param backend: the storage backend (closed by :meth:`aclose` when ``owns_backend``).
    :param validators: validators per kind (from the plugin host); None = no validation.
    :param codec: how values become JSON; by default only JSON types pass.
    :param max_value_bytes: largest encoded value accepted.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        validators: Validators | None = None,
        codec: Codec | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        owns_backend: bool = True,
    ) -> None:
        self.backend = backend
        self._validators = validators
        self._codec = codec or Codec()
        self.max_value_bytes = max_value_bytes
        self._owns_backend = owns_backend
        self._snapshots: Snapshots | None = None
        self.on_retried_conflict: Callable[[str], None] | None = None
        """Called with ``"update"`` for each conflict :meth:`update` retries (the
        conflicts it raises reach the caller): set by :func:`statekit.observe.store.instrument`."""

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the backend if this store opened it."""
        if self._owns_backend:
            await self.backend.aclose()

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.backend.capabilities

    def require(self, capability: Capability, feature: str) -> None:
        """Raise CapabilityError unless the backend has ``capability``."""
        if capability not in self.backend.capabilities:
            raise CapabilityError(
                f"{feature} needs the {capability.value!r} capability, which the "
                f"{self.backend.name} backend does not have",
                backend=self.backend.name,
                capability=capability.value,
            )

    async def health(self) -> Health:
        """One timed round trip to the backend."""
        return await self.backend.health()

    @property
    def snapshots(self) -> Snapshots:
        """Create, list, restore and diff snapshots of this store."""
        if self._snapshots is None:
            from statekit.snapshots import Snapshots

            self._snapshots = Snapshots(self)
        return self._snapshots

    # -- writes ------------------------------------------------------------------

    def _prepare(self, write: Write, *, internal: bool = False) -> Write:
        key = check_key(write.key)
        if not internal and key.startswith(RESERVED_PREFIX):
            raise ValidationError(
                f"key {key!r} is in the reserved prefix {RESERVED_PREFIX!r}",
                key=key,
                reason="reserved",
            )
        kind = check_kind(write.kind, key)
        expect = write.expect
        if expect is not ANY:
            if not isinstance(expect, int) or isinstance(expect, bool):
                raise ValidationError(
                    f"expect for {key!r} must be ANY, 0 or a positive version, not {expect!r}",
                    key=key,
                    reason="expect",
                )
            # The version written is expect + 1, which must fit in 64 bits too.
            check_bound("expect", expect, minimum=0, maximum=MAX_VERSION - 1, key=key)
            self.require(Capability.COMPARE_AND_SET, f"expect={expect} on {key!r}")
        if not isinstance(write.meta, Mapping):
            raise ValidationError(f"meta for {key!r} must be a mapping", key=key, reason="meta")
        meta = self._codec.normalize(dict(write.meta), key=key)
        if meta:
            encode(meta, key=key, what="meta")  # refuses what no backend could store
        data = None if write.data is None else self._codec.normalize(write.data, key=key)
        encoded = None
        if data is not None:
            encoded = encode(data, key=key)
            # A character is at most 4 UTF-8 bytes: only count bytes when it could matter.
            too_big = len(encoded) * 4 > self.max_value_bytes
            size = len(encoded.encode()) if too_big else 0
            if size > self.max_value_bytes:
                raise ValidationError(
                    f"value for {key!r} is {size} bytes; the limit is {self.max_value_bytes} "
                    "(max_value_bytes)",
                    key=key,
                    reason="too large",
                )
            if self._validators is not None and not internal:
                self._validators.validate(kind, key, data)
        assert isinstance(meta, dict)
        return Write(key=key, data=data, kind=kind, meta=meta, expect=expect, encoded=encoded)

    async def append(
        self, writes: Iterable[Write], *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        """Check, stamp and append writes as one atomic batch. Prefer put/batch/update.

        :param guards: versions other keys must have for the batch to land, checked
            atomically with it; those keys are not written (needs
            :attr:`Capability.GUARDED_APPEND`).
        :raises ConflictError: a write's ``expect`` or a guard did not hold (the
            error names its key); nothing was stored.
        """
        return await self._checked([self._prepare(w) for w in writes], guards)

    async def append_reserved(
        self, writes: Iterable[Write], *, user: Iterable[Write] = ()
    ) -> list[Record]:
        """Append writes to statekit's own keys (under ``_sk/``): snapshots, the API's
        start marks. For statekit's layers; no validator runs on them.

        :param user: writes to other keys in the same atomic batch, checked as
            :meth:`append` checks them (a snapshot restore and its mark); their
            records come first.
        """
        prepared = [self._prepare(w) for w in user]
        prepared += [self._prepare(w, internal=True) for w in writes]
        return await self._checked(prepared)

    async def _checked(self, prepared: list[Write], guards: Sequence[Guard] = ()) -> list[Record]:
        if not prepared:
            return []
        if guards:
            return await self._guarded(prepared, guards)
        if len(prepared) > 1:
            self.require(Capability.ATOMIC_BATCH, f"a batch of {len(prepared)} writes")
            seen: set[str] = set()
            for w in prepared:
                if w.key in seen:
                    raise ValidationError(
                        f"key {w.key!r} appears twice in one batch", key=w.key, reason="duplicate"
                    )
                seen.add(w.key)
        # The backend raises this reading past each key's previous `at` (Backend.append).
        return await self.backend.append(prepared, datetime.now(UTC))

    async def _guarded(self, prepared: list[Write], guards: Sequence[Guard]) -> list[Record]:
        self.require(Capability.GUARDED_APPEND, "an append with guards")
        if len(prepared) > 1:
            self.require(Capability.ATOMIC_BATCH, f"a batch of {len(prepared)} writes")
        written = {w.key for w in prepared}
        if len(written) != len(prepared):
            raise ValidationError("a key appears twice in one batch", reason="duplicate")
        guarded: set[str] = set()
        for guard in guards:
            if not isinstance(guard, Guard):
                raise ValidationError(f"a guard is a Guard, not {guard!r}", reason="guard")
            key = check_key(guard.key)
            check_bound("guard version", guard.version, minimum=0, maximum=MAX_VERSION, key=key)
            if key in written or key in guarded:
                raise ValidationError(
                    f"{key!r} is guarded and written (or guarded twice) in one append",
                    key=key,
                    reason="guard key",
                )
            guarded.add(key)
        return await guarded_append(self.backend, prepared, datetime.now(UTC), tuple(guards))

    async def _append(self, writes: list[Write], fence: Fence | None) -> list[Record]:
        if fence is None:
            # Not self.append: an instrumented store (statekit.observe) counts a put once.
            return await self._checked([self._prepare(w) for w in writes])
        return await fence.append_fenced(self, writes)

    async def put(
        self,
        key: str,
        data: Any,
        *,
        kind: str = "state",
        meta: Mapping[str, Any] | None = None,
        expect: Expect = ANY,
        fence: Fence | None = None,
    ) -> Record:
        """Store ``data`` as the new version of ``key``.

        :param expect: ``ANY``; ``0`` = the key must have no live value; ``n`` = head must be n.
        :param fence: a lease (:class:`Fence`) whose token the write carries.
        :raises ConflictError: ``expect`` did not hold; nothing was written.
        :raises FencedOff: ``fence`` has a newer holder; nothing was written.
        """
        if data is None:
            raise ValidationError(
                f"put({key!r}, None): use delete() to remove a key", key=key, reason="None value"
            )
        (record,) = await self._append([Write(key, data, kind, meta or {}, expect)], fence)
        return record

    async def delete(
        self,
        key: str,
        *,
        meta: Mapping[str, Any] | None = None,
        expect: Expect = ANY,
        fence: Fence | None = None,
    ) -> Record:
        """Append a tombstone version: the key reads as absent, its history stays."""
        head = (await self.backend.latest([check_key(key)])).get(key)
        kind = head.kind if head else "state"
        (record,) = await self._append([Write(key, None, kind, meta or {}, expect)], fence)
        return record

    async def batch(self, writes: Iterable[Write], *, fence: Fence | None = None) -> list[Record]:
        """Append several writes atomically: all land, or (on any failed expect) none.

        :param fence: a lease (:class:`Fence`) whose token the batch carries.
        """
        return await self._append(list(writes), fence)

    async def update(
        self,
        key: str,
        fn: UpdateFn,
        *,
        kind: str | None = None,
        meta: Mapping[str, Any] | None = None,
        retry_for: float = DEFAULT_RETRY_FOR,
        retries: int | None = None,
        backoff: float = 0.002,
        max_backoff: float = 0.05,
        fence: Fence | None = None,
    ) -> Record:
        """Read-modify-write with optimistic locking.

        ``fn`` gets the current value (None when absent) and returns the new one
        (it may be async). When another writer got there first, the key is read
        again and ``fn`` called again, after a jittered exponential backoff (full
        jitter, from ``backoff`` doubling up to ``max_backoff`` seconds), for as long
        as ``retry_for`` allows: bounded by time, not by a count, so it holds under
        contention (docs/concepts.md).

        :param retry_for: seconds after which a conflict is raised instead of retried.
        :param retries: also stop after this many retries (None: only ``retry_for``).
        :param fence: a lease (:class:`Fence`) whose token each attempt carries.
        :raises ConflictError: still conflicting when ``retry_for`` (or ``retries``) ran out.
        :raises FencedOff: ``fence`` has a newer holder; nothing was written.
        """
        self.require(Capability.COMPARE_AND_SET, "update()")
        check_key(key)
        deadline = time.monotonic() + retry_for
        attempt = 0
        while True:
            head = (await self.backend.latest([key])).get(key)
            current = None if head is None else head.data
            new = fn(current)
            if inspect.isawaitable(new):
                new = await new
            if new is None:
                raise ValidationError(
                    f"update of {key!r}: the function returned None; return the new value "
                    "(use delete() to remove a key)",
                    key=key,
                    reason="None value",
                )
            write = Write(
                key,
                new,
                kind or (head.kind if head else "state"),
                meta or {},
                head.version if head else 0,
            )
            try:
                (record,) = await self._append([write], fence)
                return record
            except ConflictError:
                # Full jitter: spreads competing writers so they stop colliding.
                pause = random.uniform(0, min(max_backoff, backoff * 2**attempt))
                out_of_time = time.monotonic() + pause > deadline
                if out_of_time or (retries is not None and attempt >= retries):
                    raise
                if self.on_retried_conflict is not None:
                    self.on_retried_conflict("update")
            await asyncio.sleep(pause)
            attempt += 1

    # -- reads -------------------------------------------------------------------

    async def get(self, key: str, *, as_of: datetime | None = None) -> Record | None:
        """The live record of ``key`` (None when absent or deleted).

        :param as_of: the record that was current at that moment (needs history):
            the newest version with ``at <= as_of``, found by an index lookup or a
            binary search, never by walking the history.
        :raises HistoryUnavailable: the version current then was pruned.
        """
        check_key(key)
        if as_of is not None:
            return (await self._as_of([key], as_of)).get(key)
        head = (await self.backend.latest([key])).get(key)
        return None if head is None or head.deleted else head

    async def get_many(
        self, keys: Sequence[str], *, as_of: datetime | None = None
    ) -> dict[str, Record]:
        """Live records of several keys in one call; absent and deleted keys are left out.

        :param as_of: the records current at that moment, as :meth:`get` reads them.
        :raises HistoryUnavailable: the version of one key current then was pruned.
        """
        for key in keys:
            check_key(key)
        if as_of is not None:
            return await self._as_of(list(keys), as_of)
        heads = await self.backend.latest(list(keys))
        return {k: r for k, r in heads.items() if not r.deleted}

    async def _as_of(self, keys: list[str], at: datetime) -> dict[str, Record]:
        self.require(Capability.HISTORY, "get(as_of=...)")
        if at.tzinfo is None:
            raise ValidationError("as_of must be timezone-aware (use UTC)", reason="naive")
        found = await self.backend.as_of(keys, at)
        for key in keys:
            if key in found:
                continue
            # Nothing at or before `at`: the key did not exist yet, or that was pruned.
            oldest = await self.backend.read(key, limit=1)
            if oldest and oldest[0].version > 1:
                raise HistoryUnavailable(
                    f"{key!r} as of {at.isoformat()}: versions before {oldest[0].version} "
                    "were pruned",
                    key=key,
                )
        return {k: r for k, r in found.items() if not r.deleted}

    async def history(
        self,
        key: str,
        *,
        limit: int = 100,
        before: int | None = None,
        after: int = 0,
        newest_first: bool = True,
    ) -> list[Record]:
        """Versions of ``key`` (tombstones included), newest first by default.

        Page with ``before=<oldest version seen>`` (newest first) or
        ``after=<newest version seen>`` (oldest first).
        """
        self.require(Capability.HISTORY, "history()")
        check_key(key)
        check_bound("limit", limit, minimum=1, key=key)
        check_bound("after", after, minimum=0, key=key)
        if before is not None:
            check_bound("before", before, minimum=1, key=key)
        return await self.backend.read(
            key, after=after, before=before, limit=limit, newest_first=newest_first
        )

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        """Live records whose key starts with ``prefix`` (and of ``kind``), in key order."""
        check_prefix(prefix)
        if kind is not None:
            check_kind(kind)
        internal = prefix.startswith(RESERVED_PREFIX)
        async for record in self.backend.scan(prefix, kind):
            if internal or not record.key.startswith(RESERVED_PREFIX):
                yield record

    # -- changes -----------------------------------------------------------------

    async def position(self) -> str:
        """A point in the commit order to ask :meth:`changed` about later (opaque text).

        Every commit that finished before the call is at or before it.
        """
        self.require(Capability.CHANGES, "position()")
        return await self.backend.position()

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` that may have changed after the :meth:`position` ``since``.

        Sorted; complete (every key with a version committed after ``since``, deleted
        and new keys included), possibly with a few more committed around ``since``.
        Costs in proportion to what changed, not to the keys stored. Reserved keys
        are left out unless ``prefix`` is reserved, as with :meth:`scan`.
        """
        self.require(Capability.CHANGES, "changed()")
        if not isinstance(since, str):
            raise ValidationError(f"since must be a position (text), not {since!r}", reason="since")
        check_prefix(prefix)
        keys = await self.backend.changed(since, prefix)
        if prefix.startswith(RESERVED_PREFIX):
            return keys
        return [key for key in keys if not key.startswith(RESERVED_PREFIX)]

    # -- retention ---------------------------------------------------------------

    async def prune(self, key: str, retention: Retention) -> int:
        """Drop history of ``key`` that ``retention`` does not keep; never the head."""
        self.require(Capability.HISTORY, "prune()")
        check_key(key)
        head = (await self.backend.latest([key])).get(key)
        if head is None:
            return 0
        cut = head.version  # drop everything below this
        if retention.keep_last is not None:
            cut = min(cut, max(1, head.version - retention.keep_last + 1))
        if retention.before_version is not None:
            cut = min(cut, retention.before_version)
        if retention.older_than is not None:
            cutoff = datetime.now(UTC) - retention.older_than
            cut = min(cut, await self._first_version_since(key, cutoff, head.version))
        return await self.backend.prune(key, cut) if cut > 1 else 0

    async def _first_version_since(self, key: str, cutoff: datetime, head: int) -> int:
        # The version current just before the cutoff is the last one written before it.
        before = (await self.backend.as_of([key], cutoff - MICROSECOND)).get(key)
        return 1 if before is None else min(before.version + 1, head)

    async def apply_retention(self, retention: Retention, prefix: str = "") -> int:
        """Prune every live key under ``prefix``; returns the versions dropped."""
        keys = [r.key async for r in self.scan(prefix)]
        return sum([await self.prune(key, retention) for key in keys])

    # -- watch -------------------------------------------------------------------

    def watch(self, prefix: str = "") -> Watch:
        """Follow commits to keys under ``prefix``, each once, in commit order.

        ``async with store.watch("position/") as changes: async for rec in changes: ...``
        The starting point is fixed when the ``async with`` is entered (or at the
        first ``async for`` step when used without it). "Commit order" is as
        :meth:`Backend.watch <statekit.backend.Backend.watch>` defines it: a commit
        comes after every commit it could have seen; overlapping commits to disjoint
        keys may come in either order.
        """
        self.require(Capability.WATCH, "watch()")
        return Watch(self.backend, check_prefix(prefix))


class Watch:
    """Commits to keys under a prefix, as an async iterator. See :meth:`StateStore.watch`."""

    def __init__(self, backend: Backend, prefix: str) -> None:
        self._backend = backend
        self._prefix = prefix
        self._internal = prefix.startswith(RESERVED_PREFIX)
        self._changes: AsyncIterator[Record] | None = None

    async def start(self) -> Self:
        """Fix the starting point now; commits after this are delivered."""
        if self._changes is None:
            self._changes = await self._backend.watch(self._prefix)
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Record:
        await self.start()
        assert self._changes is not None
        while True:
            record = await anext(self._changes)
            if self._internal or not record.key.startswith(RESERVED_PREFIX):
                return record

    async def aclose(self) -> None:
        """Stop following."""
        changes, self._changes = self._changes, None
        close = getattr(changes, "aclose", None)
        if close is not None:
            await close()
