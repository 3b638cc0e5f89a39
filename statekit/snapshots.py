"""Snapshots: point-in-time copies of the live keys, themselves stored as versioned keys.

A snapshot is the key ``_sk/snapshot/<id>`` (kind ``statekit.snapshot``) whose
value holds every captured key with its version, kind and value. Holding the
values (not only version numbers) keeps a snapshot restorable after the history
it came from is pruned. Restoring appends new versions, so the restore itself is
in the audit trail and can be undone by restoring an earlier snapshot.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from statekit.backend import ANY, JSON, Capability, Expect, Record, Write
from statekit.codec import check_key
from statekit.errors import SerializationError, ValidationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

__all__ = ["SNAPSHOT_KIND", "SNAPSHOT_PREFIX", "SnapshotDiff", "SnapshotInfo", "Snapshots"]

SNAPSHOT_PREFIX = "_sk/snapshot/"
SNAPSHOT_KIND = "statekit.snapshot"


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


def _captured(record: Record) -> dict[str, dict[str, Any]]:
    data = record.data
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise SerializationError(f"{record.key!r} is not a statekit snapshot", key=record.key)
    return data["keys"]  # type: ignore[return-value]


def _info(record: Record) -> SnapshotInfo:
    data = record.data
    assert isinstance(data, dict)
    return SnapshotInfo(
        id=record.key.removeprefix(SNAPSHOT_PREFIX),
        description=str(data.get("description", "")),
        prefix=str(data.get("prefix", "")),
        created_at=record.at,
        keys=len(_captured(record)),
    )


class SnapshotStore(Protocol):
    """What snapshots need of a :class:`~statekit.store.StateStore`."""

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    async def get(self, key: str, *, as_of: datetime | None = None) -> Record | None: ...

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]: ...

    async def append(self, writes: Iterable[Write]) -> list[Record]: ...

    async def append_reserved(self, writes: Iterable[Write]) -> list[Record]: ...


class Snapshots:
    """Create, list, restore and diff snapshots of one store (``store.snapshots``)."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    async def create(
        self, description: str = "", *, prefix: str = "", snapshot_id: str | None = None
    ) -> SnapshotInfo:
        """Capture every live key under ``prefix``.

        Each key is captured as of the moment the snapshot started: a key written
        while the capture runs is taken at its version from before that moment.
        :raises ConflictError: a snapshot with ``snapshot_id`` exists already.
        """
        store = self._store
        snapshot_id = snapshot_id or (
            datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        )
        key = check_key(SNAPSHOT_PREFIX + snapshot_id)
        started = datetime.now(UTC)
        captured: dict[str, JSON] = {}
        async for record in store.scan(prefix):
            if record.at > started and Capability.HISTORY in store.capabilities:
                earlier = await store.get(record.key, as_of=started)
                if earlier is None:
                    continue
                record = earlier
            captured[record.key] = {
                "version": record.version,
                "kind": record.kind,
                "data": record.data,
            }
        value: JSON = {"description": description, "prefix": prefix, "keys": captured}
        # Never overwrite an existing snapshot of the same id, where the backend can check.
        expect: Expect = 0 if Capability.COMPARE_AND_SET in store.capabilities else ANY
        write = Write(key, value, SNAPSHOT_KIND, {"description": description}, expect)
        (record,) = await store.append_reserved([write])
        return _info(record)

    async def _load(self, snapshot_id: str) -> Record:
        record = await self._store.get(check_key(SNAPSHOT_PREFIX + snapshot_id))
        if record is None or record.kind != SNAPSHOT_KIND:
            raise ValidationError(f"no snapshot {snapshot_id!r}", reason="unknown snapshot")
        return record

    async def get(self, snapshot_id: str) -> dict[str, JSON]:
        """The captured values of a snapshot, by key."""
        return {k: v["data"] for k, v in _captured(await self._load(snapshot_id)).items()}

    async def list(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        infos = [_info(r) async for r in self._store.scan(SNAPSHOT_PREFIX, SNAPSHOT_KIND)]
        return sorted(infos, key=lambda i: (i.created_at, i.id))

    async def restore(self, snapshot_id: str, *, meta: dict[str, JSON] | None = None) -> int:
        """Make the live keys under the snapshot's prefix equal to the snapshot.

        Captured keys get their captured value as a new version; keys created
        since are deleted (tombstoned). One atomic batch where the backend has
        atomic batches. Returns how many keys changed.
        """
        store = self._store
        record = await self._load(snapshot_id)
        captured = _captured(record)
        info = _info(record)
        current = {r.key: r async for r in store.scan(info.prefix)}
        change_meta: dict[str, JSON] = {"restored_from": snapshot_id, **(meta or {})}
        writes = [
            Write(key, entry["data"], entry["kind"], change_meta)
            for key, entry in sorted(captured.items())
            if key not in current
            or current[key].data != entry["data"]
            or current[key].kind != entry["kind"]
        ]
        writes += [
            Write(key, None, rec.kind, change_meta)
            for key, rec in sorted(current.items())
            if key not in captured
        ]
        if Capability.ATOMIC_BATCH in store.capabilities:
            await store.append(writes)
        else:
            for write in writes:
                await store.append([write])
        return len(writes)

    async def diff(self, a: str, b: str | None = None) -> SnapshotDiff:
        """What changed from snapshot ``a`` to snapshot ``b`` (None = the live state)."""
        before = await self.get(a)
        if b is None:
            prefix = _info(await self._load(a)).prefix
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
