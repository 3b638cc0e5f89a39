"""``/snapshots``: capture the live keys (under a prefix), list, read, diff and restore.

A snapshot is itself a versioned key (:mod:`statekit.snapshots`); restoring writes
new versions, so what it replaced stays in the history.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from statekit.api.dependencies import StoreDep
from statekit.api.errors import ApiError, responses
from statekit.api.models import (
    ChangedValue,
    RestoreOut,
    SnapshotDetailOut,
    SnapshotDiffOut,
    SnapshotIn,
    SnapshotListOut,
    SnapshotOut,
    snapshot_out,
)
from statekit.backend import JSON
from statekit.errors import ConflictError, ValidationError
from statekit.snapshots import SNAPSHOT_KIND, SNAPSHOT_PREFIX
from statekit.store import RESERVED_PREFIX, StateStore

__all__ = ["router"]

SnapshotId = Annotated[str, Path(description="The snapshot id.")]

router = APIRouter()


async def _captured(store: StateStore, snapshot_id: str) -> dict[str, JSON]:
    """The values snapshot ``snapshot_id`` captured; 404 when there is no such snapshot."""
    try:
        return await store.snapshots.get(snapshot_id)
    except ValidationError as exc:
        if exc.reason == "unknown snapshot":
            raise ApiError(404, f"no snapshot {snapshot_id!r}", snapshot_id=snapshot_id) from None
        raise


@router.post(
    "/snapshots",
    status_code=201,
    response_model=SnapshotOut,
    tags=["snapshots"],
    responses=responses(400, 409),
)
async def create_snapshot(
    store: StoreDep,
    body: Annotated[SnapshotIn | None, Body()] = None,
) -> SnapshotOut:
    """Capture every live key (under `prefix`)."""
    body = body or SnapshotIn()
    if body.prefix.startswith(RESERVED_PREFIX):
        raise ApiError(422, f"keys under {RESERVED_PREFIX!r} are statekit's own", reason="reserved")
    try:
        info = await store.snapshots.create(
            body.description, prefix=body.prefix, snapshot_id=body.snapshot_id or None
        )
    except ConflictError as exc:
        if exc.key != SNAPSHOT_PREFIX + (body.snapshot_id or ""):
            raise
        raise ApiError(
            409,
            f"snapshot {body.snapshot_id!r} exists already; choose another snapshot_id",
            snapshot_id=body.snapshot_id,
        ) from None
    return snapshot_out(info)


@router.get("/snapshots", response_model=SnapshotListOut, tags=["snapshots"])
async def list_snapshots(store: StoreDep) -> SnapshotListOut:
    """Every snapshot, oldest first."""
    return SnapshotListOut(items=[snapshot_out(i) for i in await store.snapshots.list()])


@router.post(
    "/snapshots/{snapshot_id:path}/restore",
    response_model=RestoreOut,
    tags=["snapshots"],
    responses=responses(404),
)
async def restore_snapshot(snapshot_id: SnapshotId, store: StoreDep) -> RestoreOut:
    """Make the live keys under the snapshot's prefix equal to it (new versions)."""
    await _captured(store, snapshot_id)  # 404 before anything is written
    changed = await store.snapshots.restore(snapshot_id)
    return RestoreOut(snapshot_id=snapshot_id, changed=changed)


@router.get(
    "/snapshots/{snapshot_id:path}/diff",
    response_model=SnapshotDiffOut,
    tags=["snapshots"],
    responses=responses(404),
)
async def diff_snapshot(
    snapshot_id: SnapshotId,
    store: StoreDep,
    against: Annotated[
        str | None, Query(description="Another snapshot (default: the live state).")
    ] = None,
) -> SnapshotDiffOut:
    """What changed from the snapshot to `against` (or to the live state)."""
    await _captured(store, snapshot_id)
    if against is not None:
        await _captured(store, against)
    diff = await store.snapshots.diff(snapshot_id, against)
    return SnapshotDiffOut(
        snapshot_id=snapshot_id,
        against=against,
        added=diff.added,
        removed=diff.removed,
        changed={k: ChangedValue(before=b, after=a) for k, (b, a) in diff.changed.items()},
    )


@router.get(
    "/snapshots/{snapshot_id:path}",
    response_model=SnapshotDetailOut,
    tags=["snapshots"],
    responses=responses(404),
)
async def get_snapshot(snapshot_id: SnapshotId, store: StoreDep) -> SnapshotDetailOut:
    """One snapshot with the values it captured."""
    states = await _captured(store, snapshot_id)
    record = await store.get(SNAPSHOT_PREFIX + snapshot_id)
    if record is None or record.kind != SNAPSHOT_KIND or not isinstance(record.data, dict):
        raise ApiError(404, f"no snapshot {snapshot_id!r}", snapshot_id=snapshot_id)
    return SnapshotDetailOut(
        snapshot_id=snapshot_id,
        description=str(record.data.get("description", "")),
        prefix=str(record.data.get("prefix", "")),
        created_at=record.at,
        keys=len(states),
        states=states,
    )
