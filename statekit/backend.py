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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeAlias

from statekit.errors import CapabilityError, ConflictError

__all__ = [
    "ANY",
    "JSON",
    "Backend",
    "Capability",
    "Expect",
    "Health",
    "Record",
    "Write",
    "check_expect",
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


@dataclass(frozen=True, slots=True)
class Record:
    """One version of one key, as stored.

    :param key: the key.
    :param version: 1, 2, 3 ... without gaps per key.
    :param kind: what the value is (``position``, ``order``...); used by scan and validators.
    :param data: the JSON value, or ``None`` for a tombstone (the key was deleted).
    :param meta: free JSON fields about the change (``user_id``, ``description``...).
    :param at: when the core issued the write, UTC, microsecond precision.
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
        Keys are distinct within one call. ``at`` is stamped on every record.
        Returns the new records in the order of ``writes``.
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
        delivered once, in commit order. Close the iterator (``aclose()``) to stop.
        Backends without :attr:`Capability.WATCH` raise CapabilityError.
        """

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
