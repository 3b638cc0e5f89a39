"""The storage contract every backend implements (ARCHITECTURE §1).

A key holds an append-only sequence of versions 1, 2, 3 ... without gaps. The
newest version is the current state; older ones are its history. A version whose
``data`` is ``None`` is a tombstone: the key was deleted at that version.

Backends implement the few async primitives of :class:`Backend`; everything a
user calls (get/put/update/history/snapshots...) is built once on top of them in
:class:`statekit.store.StateStore`.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeAlias

from statekit.errors import CapabilityError, ConflictError, ValidationError

__all__ = [
    "ANY",
    "JSON",
    "MICROSECOND",
    "Backend",
    "Capability",
    "Expect",
    "Guard",
    "Health",
    "Record",
    "Write",
    "check_expect",
    "check_guard",
    "counted_position",
    "guarded_append",
    "next_at",
]

JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
"""A value that JSON can hold exactly."""


class _Any(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any.ANY
"""``expect=ANY``: write whatever the head version is."""

Expect: TypeAlias = _Any | int
"""``ANY`` (no check), ``0`` (no live value: never written or deleted) or ``n`` (head is n)."""


class Capability(enum.StrEnum):
    """What a backend can do. The core refuses a feature whose capability is missing."""

    ATOMIC_BATCH = "atomic_batch"
    """Several writes in one append land together or not at all."""
    COMPARE_AND_SET = "compare_and_set"
    """``expect=0`` / ``expect=n`` are checked atomically with the write."""
    WATCH = "watch"
    """Commits can be followed as they happen."""
    HISTORY = "history"
    """Older versions are kept and can be read."""
    TTL_HINT = "ttl_hint"
    """The backend may expire data on its own (caches)."""
    DURABLE = "durable"
    """A committed write survives the process (and, per backend docs, the machine)."""
    GUARDED_APPEND = "guarded_append"
    """``append()`` takes guards: versions of other keys checked atomically with the
    writes, not written (:class:`Guard`)."""
    CHANGES = "changes"
    """:meth:`Backend.position` and :meth:`Backend.changed` say which keys changed since
    a point, at a cost in proportion to the change, not to the keys stored."""


@dataclass(frozen=True, slots=True)
class Record:
    """One version of one key, as stored.

    :param key: the key.
    :param version: 1, 2, 3 ... without gaps per key.
    :param kind: what the value is (``position``, ``order``...); used by scan and validators.
    :param data: the JSON value, or ``None`` for a tombstone (the key was deleted).
    :param meta: free JSON fields about the change (``user_id``, ``description``...).
    :param at: when the version was committed, UTC, microsecond precision; strictly
        later than the key's previous version (see :meth:`Backend.append`).
    """

    key: str
    version: int
    kind: str
    data: JSON
    meta: Mapping[str, JSON]
    at: datetime

    @property
    def deleted(self) -> bool:
        """True when this version is a tombstone."""
        return self.data is None


@dataclass(frozen=True, slots=True)
class Write:
    """One change to append: a new version of ``key``.

    :param key: the key.
    :param data: the new value, or ``None`` to delete (append a tombstone).
    :param kind: what the value is.
    :param meta: free JSON fields about the change.
    :param expect: ``ANY``, ``0`` (key must have no live value) or ``n`` (head must be n).
    """

    key: str
    data: JSON
    kind: str = "state"
    meta: Mapping[str, JSON] = field(default_factory=dict)
    expect: Expect = ANY
    encoded: str | None = field(default=None, repr=False, compare=False, kw_only=True)
    """``data`` as JSON text, filled in by the core's checks; read it with :meth:`data_json`."""

    def data_json(self) -> str | None:
        """``data`` as compact JSON text (None for a tombstone), encoded once per write."""
        if self.data is None:
            return None
        return self.encoded if self.encoded is not None else dumps(self.data)

    def meta_json(self) -> str:
        """``meta`` as compact JSON text."""
        return dumps(dict(self.meta)) if self.meta else "{}"


@dataclass(frozen=True, slots=True)
class Guard:
    """A version another key must have for an append to land; that key is not written.

    Checked atomically with the append's writes by backends declaring
    :attr:`Capability.GUARDED_APPEND` (e.g. a lease's fencing token, docs/leases.md).

    :param key: the guarded key; never one of the append's written keys.
    :param version: the head version it must have (0 = the key has no live value).
    """

    key: str
    version: int


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: JSON) -> str:
    """Compact JSON text of a normalized value: the one encoding every backend stores."""
    return _ENCODER.encode(value)


def check_expect(write: Write, head_version: int, head_deleted: bool, *, backend: str) -> None:
    """Raise ConflictError unless ``write.expect`` holds for a key whose head is as given.

    Backends call this inside their atomic section so that every backend applies
    the same rule. ``head_version`` is 0 when the key has never been written.
    """
    expect = write.expect
    if expect is ANY:
        return
    if expect == head_version or (expect == 0 and head_deleted):
        return
    raise ConflictError(write.key, expect, head_version, backend=backend)


def check_guard(guard: Guard, head_version: int, head_deleted: bool, *, backend: str) -> None:
    """Raise ConflictError (naming the guard's key) unless ``guard`` holds for a key
    whose head is as given: the rule of :func:`check_expect` with ``expect=version``."""
    if guard.version == head_version or (guard.version == 0 and head_deleted):
        return
    raise ConflictError(guard.key, guard.version, head_version, backend=backend)


MICROSECOND: Final = timedelta(microseconds=1)
"""The step by which ``at`` rises past the previous version's when the clock has not."""


def counted_position(since: str, *, backend: str) -> int:
    """A :meth:`Backend.position` that is a count (a commit number), read back; a
    ValidationError when ``since`` is not one."""
    if not (since.isascii() and since.isdigit() and len(since) < 19):  # < 2**63
        raise ValidationError(
            f"{since!r} is not a position of the {backend} backend", reason="since"
        )
    return int(since)


def next_at(clock: datetime, previous: Iterable[datetime | None]) -> datetime:
    """The ``at`` of an append: ``clock``, raised past every key's previous ``at``.

    :param clock: the clock reading taken inside the atomic section.
    :param previous: the head's ``at`` of each key written (None for a new key).
    """
    latest = max((p for p in previous if p is not None), default=None)
    return clock if latest is None or clock > latest else latest + MICROSECOND


async def _version_at(backend: Backend, key: str, at: datetime) -> Record | None:
    """The newest version of ``key`` with ``record.at <= at``, by bisecting its versions
    with :meth:`Backend.read` (one read per step; needs ``at`` rising with the version).

    ``low`` is a version at or before ``at``; from ``high`` on every version is later
    than ``at`` or absent. Each step reads the first version in ``[middle, high)``, so
    gaps in the versions (a mirror's copies) are fine.
    """
    oldest = await backend.read(key, limit=1)
    if not oldest or oldest[0].at > at:
        return None
    newest = (await backend.read(key, limit=1, newest_first=True))[0]
    if newest.at <= at:
        return newest
    low, high = oldest[0], newest.version
    while high - low.version > 1:
        middle = (low.version + high) // 2
        probe = await backend.read(key, after=middle - 1, before=high, limit=1)
        if probe and probe[0].at <= at:
            low = probe[0]
        else:
            high = middle
    return low


async def guarded_append(
    backend: Backend, writes: Sequence[Write], at: datetime, guards: Sequence[Guard]
) -> list[Record]:
    """``backend.append(writes, at, guards=guards)``, or without ``guards=`` when there
    are none (so backends without :attr:`Capability.GUARDED_APPEND` keep their
    signature): for backends that wrap another (tiered, test wrappers)."""
    if not guards:
        return await backend.append(writes, at)
    append: Any = backend.append
    records: list[Record] = await append(writes, at, guards=guards)
    return records


@dataclass(frozen=True, slots=True)
class Health:
    """What ``health()`` found.

    :param ok: the backend answered a round trip.
    :param latency_ms: how long that round trip took.
    :param detail: backend-specific facts (path, server version, warnings...).
    """

    ok: bool
    latency_ms: float
    detail: Mapping[str, JSON] = field(default_factory=dict)


class Backend(ABC):
    """The storage contract. Subclass it to add a database to statekit.

    Every method raises only :class:`statekit.errors.StatekitError` subclasses:
    translate driver errors in one place with ``raise ... from exc``.
    """

    name: ClassVar[str]
    """Short name used in errors and ``statekit doctor`` (``sqlite``)."""

    capabilities: frozenset[Capability]
    """What this backend can do, honestly. A class attribute, or set per instance in
    :meth:`open` when it depends on the server (e.g. ``durable`` on a Redis without
    persistence is not declared)."""

    @classmethod
    @abstractmethod
    async def open(cls, url: str) -> Self:
        """Connect to the store at ``url`` and make it ready (schema, pools...)."""

    @abstractmethod
    async def append(self, writes: Sequence[Write], at: datetime) -> list[Record]:
        """Append one version per write, all or none.

        Each write's ``expect`` is checked against the head with
        :func:`check_expect` atomically with the append; the first failure
        raises :class:`~statekit.errors.ConflictError` and nothing is stored.
        Keys are distinct within one call.

        **Time order.** Every record of one append carries the same ``at``, decided
        inside the same atomic section that assigns the versions::

            at = max(clock, previous at of every key in the batch + 1 µs)

        so that, per key, ``at`` strictly rises with the version whatever the
        clocks, tasks, store objects and processes involved (:func:`next_at`).
        ``clock`` is read once the atomic section is entered: the database
        server's clock where it has one, else this host's. ``at`` (the core's
        reading when the call was made) may serve when nothing better is at hand.

        Returns the new records, with the ``at`` stored, in the order of ``writes``.

        **Guards.** A backend declaring :attr:`Capability.GUARDED_APPEND` takes
        ``guards: Sequence[Guard] = ()`` too: each guard's key must have the head
        :func:`check_guard` accepts, checked in the same atomic section; on a
        mismatch nothing is stored and ConflictError names the guard's key. The
        guards' keys gain no version. The core passes ``guards=`` only to such
        backends, never with a guard key among the written keys.
        """

    @abstractmethod
    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        """Versions of ``key`` with ``after < version < before``, in version order.

        ``newest_first`` reverses the order (and so which ``limit`` versions are kept).
        An unknown key gives an empty list.
        """

    @abstractmethod
    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        """The head record of each key that has one (tombstones included)."""

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        """The record each key held at ``at``: its newest version with ``record.at <= at``.

        Tombstones included; keys with no version at or before ``at`` (never
        written then, or that version pruned) are left out. Since ``at`` rises with
        the version (:meth:`append`), this is a search, never a walk: override it
        with an index lookup where the database has one. This default binary-searches
        the versions with :meth:`read`, ``O(log n)`` round trips per key.
        """
        found: dict[str, Record] = {}
        for key in keys:
            record = await _version_at(self, key, at)
            if record is not None:
                found[key] = record
        return found

    @abstractmethod
    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        """The head of every key starting with ``prefix`` that is not deleted, in key order.

        With ``kind``, only heads of that kind.
        """

    @abstractmethod
    async def prune(self, key: str, before_version: int) -> int:
        """Drop versions older than ``before_version``, never the head. Returns how many."""

    @abstractmethod
    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        """Start following commits to keys starting with ``prefix``.

        Awaiting this fixes the starting point: every commit after it is
        delivered once, in commit order: after every commit that finished before it
        began and every earlier commit to a key it writes or guards (so a key's
        versions come in version order). Commits that overlapped in time and share no
        key may come in either order (PostgreSQL: by transaction id).
        Close the iterator (``aclose()``) to stop.
        Backends without :attr:`Capability.WATCH` raise CapabilityError.
        """

    async def position(self) -> str:
        """A point in this namespace's commit order, for :meth:`changed`.

        Every commit that finished before the call is at or before it. Opaque
        text: store it (it is JSON-safe), hand it back, never parse it.
        Backends without :attr:`Capability.CHANGES` raise CapabilityError.
        """
        raise self._no_changes()

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        """The keys starting with ``prefix`` that may have a version committed after
        ``since`` (a :meth:`position` of this namespace), sorted and distinct.

        Complete: every key with a version committed after ``since`` is listed,
        tombstones and keys created since included. A key committed around ``since``
        may be listed too (a superset is allowed, never a subset). Costs in proportion
        to the versions committed since ``since``, not to the keys stored. A position
        from before :meth:`drop_namespace` means nothing afterwards.
        Backends without :attr:`Capability.CHANGES` raise CapabilityError.
        """
        raise self._no_changes()

    def _no_changes(self) -> CapabilityError:
        return CapabilityError(
            f"the {self.name} backend cannot say what changed since a position",
            backend=self.name,
            capability=Capability.CHANGES.value,
        )

    async def replicate(self, records: Sequence[Record]) -> None:
        """Store ``records`` exactly as given (key, version, kind, data, meta, at).

        What a mirror of a tiered store does with every committed version
        (e.g. into InfluxDB for dashboards). Idempotent: a version already
        present is left as it is, so a retried copy is harmless. Backends that
        cannot hold foreign versions keep this default, which refuses.
        """
        raise CapabilityError(
            f"the {self.name} backend cannot be a mirror (it does not implement replicate)",
            backend=self.name,
            capability="replicate",
        )

    @abstractmethod
    async def health(self) -> Health:
        """One round trip to the store, timed."""

    @property
    def origin(self) -> Backend:
        """The backend holding the truth: this one, unless it fronts another with
        caches (a tiered store answers with its primary)."""
        return self

    async def cached(self, keys: Sequence[str]) -> dict[str, Record | None]:
        """What this backend's caches hold for ``keys`` without asking its origin:
        key -> head (None: cached as absent); a key not cached is left out."""
        return {}

    async def evict(self, keys: Sequence[str]) -> None:  # noqa: B027  # optional
        """Drop cached copies of ``keys``; nothing to do without caches."""

    async def drop_namespace(self, *, forget: bool = False) -> int | None:
        """Delete every key and version of this backend's namespace, and nothing else
        (for tests, benchmarks and tools); how many were deleted, None when the server
        does not say. Optional: a CapabilityError where the backend cannot.

        :param forget: also delete what watchers of the namespace rely on (a commit
            counter), for a namespace nobody watches any more.
        """
        raise CapabilityError(
            f"the {self.name} backend cannot drop a namespace",
            backend=self.name,
            capability="drop_namespace",
        )

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and threads. Calling it twice is harmless."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def describe(self) -> dict[str, Any]:
        """Facts for ``statekit doctor``; never include secrets."""
        return {"backend": self.name, "capabilities": sorted(self.capabilities)}
