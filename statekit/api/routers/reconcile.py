"""``/reconcile``: the reconciliation engines' metrics and the intents they work on.

Read from the store only (no exchange call): what the engines of
:mod:`statekit.trading.reconcile` stored. ``GET /metrics`` serves the same metrics
to Prometheus (:mod:`statekit.api.routers.metrics`).
"""

from __future__ import annotations

import logging
from typing import Annotated

import pydantic
from fastapi import APIRouter, Path

from statekit.api.dependencies import RedactorDep, StoreDep
from statekit.api.errors import ApiError, responses
from statekit.api.models import IntentListOut, IntentOut, ReconcileMetricsOut, intent_out
from statekit.errors import ValidationError
from statekit.redact import Redactor
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.reconcile import Intent, IntentStatus, IntentStore, read_metrics
from statekit.trading.reconcile.intents import INTENT_PREFIX, STATUS_PREFIX, check_intent_id

__all__ = ["reconcile_metrics", "router"]

log = logging.getLogger("statekit.api")

router = APIRouter()


async def reconcile_metrics(
    store: StateStore, redactor: Redactor
) -> dict[str, ReconcileMetricsOut]:
    """Every scope's stored metrics snapshot; one that does not parse is left out
    (and logged): it must not hide the others, nor break a Prometheus scrape."""
    found: dict[str, ReconcileMetricsOut] = {}
    for scope, snapshot in (await read_metrics(store)).items():
        try:
            found[scope] = ReconcileMetricsOut.model_validate(snapshot)
        except pydantic.ValidationError as exc:
            log.warning(
                "reconcile metrics of scope %r do not parse, left out: %s",
                scope,
                redactor.text(str(exc.errors()[0]["msg"])),
            )
    return found


@router.get(
    "/reconcile/metrics",
    response_model=dict[str, ReconcileMetricsOut],
    tags=["reconcile"],
)
async def get_reconcile_metrics(
    store: StoreDep, redactor: RedactorDep
) -> dict[str, ReconcileMetricsOut]:
    """Every scope's reconciliation metrics, by scope (`{}` when no engine has run)."""
    return await reconcile_metrics(store, redactor)


@router.get(
    "/reconcile/intents",
    response_model=IntentListOut,
    tags=["reconcile"],
)
async def list_intents(store: StoreDep) -> IntentListOut:
    """Every intent with its status, in id order (from the store: no exchange call)."""
    statuses: dict[str, IntentStatus] = {}
    unreadable: list[str] = []
    async for record in store.scan(STATUS_PREFIX, kind=kinds.INTENT_STATUS):
        try:
            status = IntentStatus.from_record(record)
        except pydantic.ValidationError:
            unreadable.append(record.key)
            continue
        statuses[status.intent_id] = status
    items: list[IntentOut] = []
    async for record in store.scan(INTENT_PREFIX, kind=kinds.INTENT):
        try:
            intent = Intent.from_record(record)
        except pydantic.ValidationError:
            unreadable.append(record.key)
            continue
        items.append(intent_out(intent, statuses.get(intent.id)))
    return IntentListOut(items=items, unreadable=unreadable)


@router.get(
    "/reconcile/intents/{intent_id}",
    response_model=IntentOut,
    tags=["reconcile"],
    responses=responses(404),
)
async def get_intent(
    intent_id: Annotated[str, Path(description="The intent's id.")],
    store: StoreDep,
) -> IntentOut:
    """One intent with its status."""
    try:
        check_intent_id(intent_id)
    except ValidationError:
        # No intent can have this id: it is absent, not a bad request.
        raise ApiError(404, f"no intent {intent_id!r}", intent_id=intent_id) from None
    intents = IntentStore(store)
    intent = await intents.get(intent_id)
    if intent is None:
        raise ApiError(404, f"no intent {intent_id!r}", intent_id=intent_id)
    return intent_out(intent, await intents.status(intent_id))
