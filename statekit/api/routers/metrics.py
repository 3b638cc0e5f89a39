"""``GET /metrics``: the Prometheus text exposition of the reconciliation metrics and,
with a fallback journal, of the journal's figures.

Its success is text, but its errors are JSON like every other route's: they are
documented as such here, and ``create_app`` documents its 401 the same way.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from statekit.api.dependencies import RedactorDep, StoreDep
from statekit.api.errors import json_responses
from statekit.api.routers.reconcile import reconcile_metrics
from statekit.errors import BackendUnavailable
from statekit.tiered import TieredBackend
from statekit.tiered.metrics import fallback_prometheus
from statekit.trading.reconcile import prometheus_text

__all__ = ["PROMETHEUS_CONTENT_TYPE", "PrometheusResponse", "router"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of ``GET /metrics``: Prometheus' text exposition format 0.0.4."""


class PrometheusResponse(PlainTextResponse):
    """A Prometheus text exposition (``GET /metrics``)."""

    media_type = PROMETHEUS_CONTENT_TYPE


router = APIRouter()


@router.get(
    "/metrics",
    response_class=PrometheusResponse,
    tags=["reconcile"],
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4.",
            "content": {PROMETHEUS_CONTENT_TYPE: {"schema": {"type": "string"}}},
        },
        # Overrides the app's error docs, which FastAPI would give this route's
        # text/plain media type (create_app does the same for the API key's 401).
        **json_responses(413, 422, 501, 503),
    },
)
async def metrics(store: StoreDep, redactor: RedactorDep) -> PrometheusResponse:
    """Metrics for Prometheus: reconciliation (`statekit_reconcile_*`, one series per
    scope) and, with a fallback journal, its figures (`statekit_fallback_*`).

    Needs the API key when one is configured, as every route but `/health` does.
    """
    backend = store.backend
    journaled = isinstance(backend, TieredBackend) and backend.fallback is not None
    try:
        found = await reconcile_metrics(store, redactor)
    except BackendUnavailable:
        if not journaled:
            raise
        found = {}  # an outage is when the journal's figures matter most: serve them
    text = prometheus_text({scope: out.model_dump(mode="json") for scope, out in found.items()})
    if isinstance(backend, TieredBackend) and backend.fallback is not None:
        text += fallback_prometheus(await backend.fallback_stats())
    return PrometheusResponse(text)
