"""Snapshots: point-in-time copies of the live keys, themselves stored as versioned keys.

A snapshot is a header key ``_sk/snapshot/<id>`` (kind ``statekit.snapshot``:
description, prefix, how many keys) and its parts, ``_sk/snapshot-part/<nonce>/<n>``
(kind ``statekit.snapshot-part``), each holding about :data:`KEYS_PER_PART`
captured keys with their version, kind and value; a key's part is a hash of the
key, so the part holding any one key is known without reading the others.
Holding the values (not only version numbers) keeps a snapshot restorable after
the history it came from is pruned. Restoring appends new versions, so the
restore itself is in the audit trail and can be undone by restoring an earlier
snapshot. Snapshots made before parts existed (every value inline in the
header) are still read and restored.

**Restoring what changed, not everything.** Where the backend has
:attr:`~statekit.backend.Capability.CHANGES`, the header also keeps
``store.position()`` read *before* the capture scan, and the keys the capture
did not take at the head it scanned (written while it ran). The promise kept:
every key under the prefix that :meth:`~statekit.store.StateStore.changed` does
not list since that position, and that is not among those keys, holds exactly
its captured value (or is absent, as in the snapshot). So a restore reads and
compares only those keys, and only the parts holding them, and makes the same
writes as a comparison of every key would. After writing, a restore records the
position it read before its own reads (the part key ``.../mark``): the same
promise then holds from there, so the next restore looks only at what changed
since this one. Without the capability (or for old snapshots) every key is
compared.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from statekit.backend import ANY, JSON, Capability, Expect, Record, Write
from statekit.codec import check_key
from statekit.errors import (
    AlreadyExists,
    ConflictError,
    NotFound,
    SerializationError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterable, Sequence

__all__ = [
    "KEYS_PER_PART",
    "PART_KIND",
    "PART_PREFIX",
    "SNAPSHOT_KIND",
    "SNAPSHOT_PREFIX",
    "SnapshotDiff",
    "SnapshotInfo",
    "Snapshots",
]

SNAPSHOT_PREFIX = "_sk/snapshot/"
SNAPSHOT_KIND = "statekit.snapshot"
PART_PREFIX = "_sk/snapshot-part/"
"""Where parts live: not under :data:`SNAPSHOT_PREFIX`, so listing reads headers only."""
PART_KIND = "statekit.snapshot-part"
MARK_KIND = "statekit.snapshot-mark"
KEYS_PER_PART = 16
"""Captured keys per part, on average: a restore of one changed key decodes about this many."""
_RESERVED = "_sk/"  # statekit.store.RESERVED_PREFIX (not imported: the store imports us)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One snapshot, without its contents."""

    id: str
    description: str
    prefix: str
    created_at: datetime
    keys: int

    def as_dict(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "description": self.description,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "keys": self.keys,
        }


@dataclass(frozen=True, slots=True)
class SnapshotDiff:
    """What changed between two snapshots (or a snapshot and the live state).

    ``changed`` maps a key to ``(before, after)`` values.
    """

    added: dict[str, JSON] = field(default_factory=dict)
    removed: dict[str, JSON] = field(default_factory=dict)
    changed: dict[str, tuple[JSON, JSON]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, JSON]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": {k: {"before": b, "after": a} for k, (b, a) in self.changed.items()},
        }


Captured = dict[str, dict[str, Any]]
"""Captured keys: key -> ``{"version", "kind", "data"}``."""


def _entries(record: Record) -> Captured:
    """The captured keys a record (an old-format header, or a part) holds inline."""
    data = record.data
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise SerializationError(f"{record.key!r} is not a statekit snapshot", key=record.key)
    return data["keys"]  # type: ignore[return-value]


def _part_of(key: str, parts: int) -> int:
    """The part holding ``key``: a stable hash, the same in every process."""
    return zlib.crc32(key.encode()) % parts


@dataclass(frozen=True, slots=True)
class _Header:
    """A snapshot's header record, read once; ``parts`` is None for the old inline format."""

    record: Record
    parts: str | None
    part_count: int
    position: str | None
    recheck: tuple[str, ...]

    @classmethod
    def of(cls, record: Record) -> _Header:
        data = record.data
        if not isinstance(data, dict):
            raise SerializationError(f"{record.key!r} is not a statekit snapshot", key=record.key)
        parts = data.get("parts")
        if parts is None:
            _entries(record)  # the old format: every value inline
            return cls(record, None, 0, None, ())
        position, recheck = data.get("position"), data.get("recheck", [])
        part_count = data.get("part_count")
        if not (
            isinstance(parts, str)
            and isinstance(part_count, int)
            and isinstance(data.get("count"), int)
            and (position is None or isinstance(position, str))
            and isinstance(recheck, list)
        ):
            raise SerializationError(f"{record.key!r} is not a statekit snapshot", key=record.key)
        return cls(record, parts, part_count, position, tuple(map(str, recheck)))

    @property
    def prefix(self) -> str:
        assert isinstance(self.record.data, dict)
        return str(self.record.data.get("prefix", ""))

    def info(self) -> SnapshotInfo:
        data = self.record.data
        assert isinstance(data, dict)
        count = data["count"] if self.parts is not None else len(_entries(self.record))
        assert isinstance(count, int)
        return SnapshotInfo(
            id=self.record.key.removeprefix(SNAPSHOT_PREFIX),
            description=str(data.get("description", "")),
            prefix=self.prefix,
            created_at=self.record.at,
            keys=count,
        )

    def part_keys(self, keys: Iterable[str] | None = None) -> list[str]:
        """The part keys holding ``keys`` (every part when None)."""
        assert self.parts is not None
        if not self.part_count:
            return []
        numbers = (
            range(self.part_count)
            if keys is None
            else sorted({_part_of(k, self.part_count) for k in keys})
        )
        return [f"{self.parts}{n}" for n in numbers]

    @property
    def mark_key(self) -> str:
        assert self.parts is not None
        return self.parts + "mark"


class SnapshotStore(Protocol):
    """What snapshots need of a :class:`~statekit.store.StateStore`."""

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    async def get(self, key: str, *, as_of: datetime | None = None) -> Record | None: ...

    async def get_many(
        self, keys: Sequence[str], *, as_of: datetime | None = None
    ) -> dict[str, Record]: ...

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]: ...

    async def position(self) -> str: ...

    async def changed(self, since: str, prefix: str = "") -> list[str]: ...

    async def append(self, writes: Iterable[Write]) -> list[Record]: ...

    async def append_reserved(
        self, writes: Iterable[Write], *, user: Iterable[Write] = ()
    ) -> list[Record]: ...


class Snapshots:
    """Create, list, restore and diff snapshots of one store (``store.snapshots``)."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    @property
    def _tracked(self) -> bool:
        return Capability.CHANGES in self._store.capabilities

    async def create(
        self, description: str = "", *, prefix: str = "", snapshot_id: str | None = None
    ) -> SnapshotInfo:
        """Capture every live key under ``prefix``.

        Each key is captured as of the moment the snapshot started: a key written
        while the capture runs is taken at its version from before that moment.
        :raises AlreadyExists: a snapshot with ``snapshot_id`` exists already (a
            :class:`ConflictError`).
        """
        store = self._store
        snapshot_id = snapshot_id or (
            datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        )
        key = check_key(SNAPSHOT_PREFIX + snapshot_id)
        # Read before the scan: a key unchanged since then is captured at its head.
        position = await store.position() if self._tracked else None
        captured, recheck = await self._capture(prefix)
        parts = f"{PART_PREFIX}{secrets.token_hex(8)}/"
        part_count = -(-len(captured) // KEYS_PER_PART)
        split: list[Captured] = [{} for _ in range(part_count)]
        for name, entry in captured.items():
            split[_part_of(name, part_count)][name] = entry
        header: JSON = {
            "description": description,
            "prefix": prefix,
            "count": len(captured),
            "parts": parts,
            "part_count": part_count,
            "position": position,
            "recheck": [k for k in sorted(recheck)],
        }
        # Never overwrite an existing snapshot of the same id, where the backend can check;
        # the parts' keys are new (a random nonce), written first so a listed header has them.
        expect: Expect = 0 if Capability.COMPARE_AND_SET in store.capabilities else ANY
        writes = [
            Write(f"{parts}{n}", {"keys": part}, PART_KIND, {}, expect)  # type: ignore[dict-item]
            for n, part in enumerate(split)
        ]
        writes.append(Write(key, header, SNAPSHOT_KIND, {"description": description}, expect))
        try:
            record = (await self._append(writes, reserved=True))[-1]
        except ConflictError as exc:
            if exc.key != key:
                raise
            raise AlreadyExists(
                key,
                exc.actual,
                what="snapshot",
                message=f"snapshot {snapshot_id!r} exists already",
                backend=exc.backend,
            ) from None
        return _Header.of(record).info()

    async def _capture(self, prefix: str) -> tuple[Captured, set[str]]:
        """The live keys under ``prefix`` as of now, and those not taken at the head scanned."""
        store = self._store
        started = datetime.now(UTC)
        captured: Captured = {}
        recheck: set[str] = set()
        async for record in store.scan(prefix):
            if record.at > started and Capability.HISTORY in store.capabilities:
                recheck.add(record.key)
                earlier = await store.get(record.key, as_of=started)
                if earlier is None:
                    continue
                record = earlier
            captured[record.key] = {
                "version": record.version,
                "kind": record.kind,
                "data": record.data,
            }
        return captured, recheck

    async def _append(self, writes: list[Write], *, reserved: bool = False) -> list[Record]:
        """One atomic batch where the backend has them, else one write after another."""
        store = self._store
        append = store.append_reserved if reserved else store.append
        if Capability.ATOMIC_BATCH in store.capabilities:
            return await append(writes) if writes else []
        return [record for write in writes for record in await append([write])]

    async def _header(self, snapshot_id: str) -> _Header:
        record = await self._store.get(check_key(SNAPSHOT_PREFIX + snapshot_id))
        if record is None or record.kind != SNAPSHOT_KIND:
            raise NotFound(
                f"no snapshot {snapshot_id!r}",
                key=snapshot_id,
                what="snapshot",
                reason="unknown snapshot",
            )
        return _Header.of(record)

    async def _captured(self, header: _Header) -> Captured:
        """Every captured entry."""
        if header.parts is None:
            return _entries(header.record)
        part_keys = header.part_keys()
        return _unpack(part_keys, await self._store.get_many(part_keys))

    async def get(self, snapshot_id: str) -> dict[str, JSON]:
        """The captured values of a snapshot, by key."""
        captured = await self._captured(await self._header(snapshot_id))
        return {k: captured[k]["data"] for k in sorted(captured)}

    async def list(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        scan = self._store.scan(SNAPSHOT_PREFIX, SNAPSHOT_KIND)
        infos = [_Header.of(r).info() async for r in scan]
        return sorted(infos, key=lambda i: (i.created_at, i.id))

    async def restore(self, snapshot_id: str, *, meta: dict[str, JSON] | None = None) -> int:
        """Make the live keys under the snapshot's prefix equal to the snapshot.

        Captured keys get their captured value as a new version; keys created
        since are deleted (tombstoned). One atomic batch where the backend has
        atomic batches. Returns how many keys changed. Where the backend has
        :attr:`~statekit.backend.Capability.CHANGES`, only the keys changed since
        the snapshot (or since its last restore) are read and compared.
        """
        header = await self._header(snapshot_id)
        change_meta: dict[str, JSON] = {"restored_from": snapshot_id, **(meta or {})}
        tracked = self._tracked and header.parts is not None
        # Read before this restore's reads, so it may become the next restore's start.
        position = await self._store.position() if tracked else None
        since = await self._since(header) if tracked else None
        if since is None:
            captured = await self._captured(header)
            current = {r.key: r async for r in self._store.scan(header.prefix)}
            looked_at = len(captured.keys() | current.keys())
        else:
            keys = await self._suspects(header, *since)
            part_keys = header.part_keys(keys)
            # The parts holding the keys and the keys' heads, in one read.
            records = await self._store.get_many([*part_keys, *sorted(keys)])
            captured = _unpack(part_keys, records, keys)
            current = {k: records[k] for k in keys if k in records}
            looked_at = len(keys)
        writes = _writes(captured, current, change_meta)
        # The mark makes the next restore look at this one's writes and what changes
        # from now on: worth a write only when this one looked at more than it wrote.
        if position is None or looked_at <= len(writes):
            await self._append(writes)
            return len(writes)
        mark = Write(header.mark_key, {"position": position}, MARK_KIND, {})
        if Capability.ATOMIC_BATCH in self._store.capabilities:
            await self._store.append_reserved([mark], user=writes)
        else:  # the mark only once every write landed
            await self._append(writes)
            await self._store.append_reserved([mark])
        return len(writes)

    async def _since(self, header: _Header) -> tuple[str, tuple[str, ...]] | None:
        """Where the promise of the module docstring starts: the last restore's mark, else
        the snapshot's own position with the keys to look at besides; None: nowhere."""
        mark = await self._store.get(header.mark_key)
        if mark is not None and isinstance(mark.data, dict):
            position = mark.data.get("position")
            if isinstance(position, str):
                return position, ()
        if header.position is None:
            return None
        return header.position, header.recheck

    async def _suspects(self, header: _Header, since: str, recheck: Iterable[str]) -> set[str]:
        """The keys that may differ from the snapshot: changed since ``since``, or rechecked."""
        prefix = header.prefix
        keys = set(await self._store.changed(since, prefix))
        keys.update(recheck)
        # A prefix outside statekit's own keys never covers them, as scan() does not.
        internal = prefix.startswith(_RESERVED)
        return {
            k for k in keys if k.startswith(prefix) and (internal or not k.startswith(_RESERVED))
        }

    async def diff(self, a: str, b: str | None = None) -> SnapshotDiff:
        """What changed from snapshot ``a`` to snapshot ``b`` (None = the live state)."""
        before = await self.get(a)
        if b is None:
            prefix = (await self._header(a)).prefix
            after: dict[str, JSON] = {r.key: r.data async for r in self._store.scan(prefix)}
        else:
            after = await self.get(b)
        return SnapshotDiff(
            added={k: v for k, v in after.items() if k not in before},
            removed={k: v for k, v in before.items() if k not in after},
            changed={
                k: (before[k], after[k]) for k in before if k in after and before[k] != after[k]
            },
        )


def _unpack(
    part_keys: list[str], records: dict[str, Record], keys: Collection[str] = ()
) -> Captured:
    """The entries the parts ``part_keys`` (read into ``records``) hold; of ``keys`` only,
    when given."""
    captured: Captured = {}
    for part_key in part_keys:
        if part_key not in records:
            raise SerializationError(f"snapshot part {part_key!r} is missing", key=part_key)
        entries = _entries(records[part_key])
        captured.update(entries if not keys else {k: v for k, v in entries.items() if k in keys})
    return captured


def _writes(captured: Captured, current: dict[str, Record], meta: dict[str, JSON]) -> list[Write]:
    """What makes the live records ``current`` equal to ``captured`` (same set of keys)."""
    writes = [
        Write(key, entry["data"], entry["kind"], meta)
        for key, entry in sorted(captured.items())
        if key not in current
        or current[key].data != entry["data"]
        or current[key].kind != entry["kind"]
    ]
    writes += [
        Write(key, None, rec.kind, meta)
        for key, rec in sorted(current.items())
        if key not in captured
    ]
    return writes
