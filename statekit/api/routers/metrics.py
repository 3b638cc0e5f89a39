"""``GET /metrics``: the Prometheus text exposition of the app's registry (store
operations, HTTP requests, WebSocket hub, locks, caches, mirrors:
:class:`statekit.api.telemetry.ApiMetrics`), of the reconciliation metrics the engines
stored, and, with a fallback journal, of the journal's figures. docs/operations.md
lists every series.

The reconciliation and journal series are rendered as they always were (the CLI's
``statekit reconcile metrics --prometheus`` prints the same text), so scrapes and
dashboards made for them keep working.

Its success is text, but its errors are JSON like every other route's: they are
documented as such here, and ``create_app`` documents its 401 the same way.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest

from statekit.api.dependencies import RedactorDep, StoreDep
from statekit.api.errors import json_responses
from statekit.api.routers.reconcile import reconcile_metrics
from statekit.api.telemetry import ApiMetrics
from statekit.errors import BackendError
from statekit.tiered import TieredBackend
from statekit.tiered.metrics import fallback_prometheus
from statekit.trading.reconcile import prometheus_text
from statekit.trading.reconcile.metrics import lag_histogram_prometheus

__all__ = ["PROMETHEUS_CONTENT_TYPE", "PrometheusResponse", "router"]

log = logging.getLogger("statekit.api")

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
async def metrics(request: Request, store: StoreDep, redactor: RedactorDep) -> PrometheusResponse:
    """Metrics for Prometheus: store operations (`statekit_store_*`), HTTP requests
    (`statekit_http_*`), WebSocket clients (`statekit_ws_*`), locks (`statekit_lock_*`),
    caches and mirrors (`statekit_cache_*`, `statekit_mirror_*`), reconciliation
    (`statekit_reconcile_*`, one series per scope, with
    `statekit_reconcile_last_update_timestamp_seconds`) and, with a fallback journal,
    its figures (`statekit_fallback_*`). Every series is described in
    docs/operations.md.

    Needs the API key when one is configured, as every route but `/health` and the
    API docs do. Served while the store fails too (then without the reconcile series).
    """
    backend = store.backend
    try:
        found = await reconcile_metrics(store, redactor)
    except BackendError as exc:
        # An outage is when the other figures (errors, the journal's) matter most: serve
        # them; the reconcile series are absent until the store answers again.
        log.warning("GET /metrics without the reconcile series: %s", redactor.text(str(exc)))
        found = {}
    registry: ApiMetrics = request.app.state.metrics
    text = generate_latest(registry.registry).decode()
    snapshots = {scope: out.model_dump(mode="json") for scope, out in found.items()}
    text += prometheus_text(snapshots) + lag_histogram_prometheus(snapshots)
    if isinstance(backend, TieredBackend) and backend.fallback is not None:
        text += fallback_prometheus(await backend.fallback_stats())
    return PrometheusResponse(text)
