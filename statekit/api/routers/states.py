"""``/states``: a state's live value, its history, and conditional writes (ETag/If-Match).

Keys may hold ``/`` (``position/EURUSD``), so the key is a ``{state_id:path}``;
statekit's own keys (under :data:`~statekit.store.RESERVED_PREFIX`) are never shown
nor written here. Conditional requests are :mod:`statekit.api.preconditions`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Response

from statekit.api import preconditions
from statekit.api.dependencies import StoreDep
from statekit.api.errors import ApiError, responses
from statekit.api.models import HistoryOut, StateIn, StateListOut, StateOut, state_out
from statekit.api.preconditions import IfMatch, IfNoneMatch
from statekit.backend import JSON
from statekit.codec import MAX_KEY_LENGTH, MAX_KIND_LENGTH, MAX_VERSION
from statekit.errors import ConflictError
from statekit.store import RESERVED_PREFIX

__all__ = ["MAX_PAGE", "router"]

MAX_PAGE = 1000
"""The largest ``limit`` a list or history request may ask for."""

StateId = Annotated[
    str, Path(description="The store key; it may hold `/` (e.g. `position/EURUSD`).")
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many items.")]


def _reserved(key: str) -> bool:
    return key.startswith(RESERVED_PREFIX)


def _not_found(key: str, what: str = "no live value") -> ApiError:
    return ApiError(404, f"{key!r} has {what}", key=key)


router = APIRouter()


@router.post(
    "/states",
    status_code=201,
    response_model=StateOut,
    tags=["states"],
    responses=responses(400, 409, 412),
)
async def put_state(
    body: StateIn,
    store: StoreDep,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Store `data` as the new version of `state_id` (create or update).

    The response's `ETag` is the new version; send it back as `If-Match` to
    update only what you read (412 when someone else wrote meanwhile).
    """
    precondition = preconditions.parse(if_match, if_none_match)
    key = body.state_id
    if body.data is None:
        raise ApiError(
            422,
            "data must not be null; use DELETE /states/{state_id} to remove a key",
            key=key,
            reason="None value",
        )
    meta: dict[str, JSON] = {}
    if body.description is not None:
        meta["note"] = body.description
    if body.user_id is not None:
        meta["by"] = body.user_id
    expect = await preconditions.expect(store, key, precondition)
    try:
        record = await store.put(key, body.data, kind=body.state_type, meta=meta, expect=expect)
    except ConflictError as exc:
        if precondition is None or exc.key != key:
            raise
        raise preconditions.failed(key, precondition, exc.actual) from None
    return preconditions.tagged_json(record, 201, Location="/states/" + quote(key, safe="/"))


@router.get(
    "/states",
    response_model=StateListOut,
    tags=["states"],
)
async def list_states(
    store: StoreDep,
    prefix: Annotated[
        str, Query(max_length=MAX_KEY_LENGTH, description="Only keys starting with this.")
    ] = "",
    state_type: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_KIND_LENGTH, description="Only values of this kind."),
    ] = None,
    limit: Limit = 100,
    cursor: Annotated[
        str | None, Query(description="The `next_cursor` of the previous page.")
    ] = None,
) -> StateListOut:
    """Live keys in key order, one page at a time."""
    if _reserved(prefix):
        raise ApiError(422, f"keys under {RESERVED_PREFIX!r} are statekit's own", reason="reserved")
    items: list[StateOut] = []
    next_cursor: str | None = None
    records = store.scan(prefix, state_type)
    try:
        async for record in records:
            if cursor is not None and record.key <= cursor:
                continue
            if len(items) == limit:
                next_cursor = items[-1].state_id
                break
            items.append(state_out(record))
    finally:
        close: Callable[[], Any] | None = getattr(records, "aclose", None)
        if close is not None:
            await close()
    return StateListOut(items=items, next_cursor=next_cursor)


# Declared before /states/{state_id:path}: a key may hold "/", and this route must win.
@router.get(
    "/states/{state_id:path}/history",
    response_model=HistoryOut,
    tags=["states"],
    responses=responses(404),
)
async def state_history(
    state_id: StateId,
    store: StoreDep,
    limit: Limit = 100,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_VERSION,
            description="Only versions below this (the `next_before` of a page).",
        ),
    ] = None,
) -> HistoryOut:
    """Versions of `state_id`, newest first (deletions included, `data` null)."""
    if _reserved(state_id):
        raise _not_found(state_id, "no history")
    records = await store.history(state_id, limit=limit, before=before)
    if not records and before is None:
        raise _not_found(state_id, "no history")
    next_before = records[-1].version if len(records) == limit and records[-1].version > 1 else None
    return HistoryOut(
        state_id=state_id, items=[state_out(r) for r in records], next_before=next_before
    )


@router.get(
    "/states/{state_id:path}",
    response_model=StateOut,
    tags=["states"],
    responses=responses(404, 410),
)
async def get_state(
    state_id: StateId,
    store: StoreDep,
    state_type: Annotated[
        str | None, Query(description="404 unless the value is of this kind.")
    ] = None,
    as_of: Annotated[
        datetime | None,
        Query(
            description="ISO 8601 time with an offset (e.g. `2025-01-18T12:00:00Z`): "
            "the version current then."
        ),
    ] = None,
) -> Response:
    """The live version of `state_id` (or the one current at `as_of`), with its `ETag`."""
    if _reserved(state_id):
        raise _not_found(state_id)
    record = await store.get(state_id, as_of=as_of)
    if record is None:
        raise _not_found(state_id, "no live value" if as_of is None else "no value then")
    if state_type is not None and record.kind != state_type:
        raise ApiError(
            404,
            f"{state_id!r} is a {record.kind!r}, not a {state_type!r}",
            key=state_id,
            state_type=record.kind,
        )
    return preconditions.tagged_json(record)


@router.delete(
    "/states/{state_id:path}",
    response_model=StateOut,
    tags=["states"],
    responses=responses(400, 404, 412),
)
async def delete_state(
    state_id: StateId,
    response: Response,
    store: StoreDep,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> StateOut:
    """Delete `state_id`: a tombstone version (returned); its history stays."""
    precondition = preconditions.parse(if_match, if_none_match)
    if _reserved(state_id):
        raise _not_found(state_id)
    head = await store.get(state_id)
    if head is None:
        if isinstance(precondition, int) and precondition != 0:
            raise preconditions.failed(state_id, precondition, 0)
        raise _not_found(state_id)
    if precondition == 0:
        raise preconditions.failed(state_id, precondition, head.version)
    expect = await preconditions.expect(store, state_id, precondition)
    try:
        record = await store.delete(state_id, expect=expect)
    except ConflictError as exc:
        if precondition is None:
            raise
        raise preconditions.failed(state_id, precondition, exc.actual) from None
    return preconditions.tagged(record, response)
