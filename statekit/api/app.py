"""The REST + WebSocket API over one open store: :func:`create_app`.

Routes, status codes and examples are in docs/api.md. The app does not own the
store: whoever opened it closes it (:func:`statekit.api.serve` does both).

The routes live in :mod:`statekit.api.routers`, one router per resource; they get
the store and the rest of the app's context by dependency
(:mod:`statekit.api.dependencies`) from ``app.state``, which :func:`create_app` fills.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

import statekit
from statekit.api import apidocs, dashboard
from statekit.api.dependencies import documented_key
from statekit.api.errors import install_handlers, json_responses, responses
from statekit.api.fastpath import StateReads
from statekit.api.guard import ApiKey, Guard, JsonCORSMiddleware
from statekit.api.routers import (
    health,
    metrics,
    reconcile,
    snapshots,
    states,
    stats,
    trading,
    ws,
)
from statekit.api.routers.health import HEALTH_TIMEOUT_SECONDS
from statekit.api.routers.metrics import PROMETHEUS_CONTENT_TYPE, PrometheusResponse
from statekit.api.routers.states import MAX_PAGE
from statekit.api.telemetry import ApiMetrics, RequestTelemetry
from statekit.api.ws import ChangeHub
from statekit.config import ApiSettings, Settings
from statekit.errors import StatekitError
from statekit.observe.store import instrument
from statekit.redact import Redactor
from statekit.store import StateStore
from statekit.trading.locks import KeyedLocks
from statekit.trading.state import TradingState

__all__ = [
    "HEALTH_TIMEOUT_SECONDS",
    "MAX_PAGE",
    "PROMETHEUS_CONTENT_TYPE",
    "PrometheusResponse",
    "create_app",
    "redactor_for",
]


def redactor_for(settings: Settings) -> Redactor:
    """What must never leave the server: the API key, and the secrets of every store URL."""
    key = settings.api.api_key
    urls = list(settings.mirrors)
    with contextlib.suppress(StatekitError):  # no URL can be built: no secret in one either
        urls.append(settings.store_url())
    shared = settings.cache.shared_url
    if shared is not None:
        urls.append(shared.get_secret_value())
    return Redactor([key.get_secret_value()] if key else [], urls)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the WebSocket hub on the app's store while the app serves."""
    hub: ChangeHub = app.state.hub
    await hub.start(app.state.store)
    try:
        yield
    finally:
        await hub.stop()


def create_app(
    store: StateStore,
    settings: Settings,
    *,
    locks: KeyedLocks | None = None,
    hub: ChangeHub | None = None,
) -> FastAPI:
    """The REST + WebSocket API over ``store`` (which the app does not close).

    :param store: an open store. Its operations are counted into this app's metrics
        registry from now on (:func:`statekit.observe.store.instrument`; a later app
        over the same store takes them over).
    :param settings: ``settings.api`` gives the API key, CORS origins and body limit;
        the store URLs in ``settings`` are secrets kept out of every response.
    :param locks: the process's :class:`KeyedLocks`, reported by ``GET /stats/locks``.
    :param hub: the WebSocket change hub (default: a new one). The app's lifespan
        starts it on ``store`` and stops it.
    """
    api = settings.api
    key = ApiKey(api.api_key.get_secret_value() if api.api_key else None)
    redactor = redactor_for(settings)
    app = FastAPI(
        title="statekit",
        version=statekit.__version__,
        summary="Versioned trading state: states, history, snapshots, trading views, "
        "reconciliation, live changes.",
        lifespan=_lifespan,
        responses=responses(413, 422, 501, 503),  # every route may meet these
        docs_url=None,  # FastAPI's pages load from a CDN: apidocs serves them from the wheel
        redoc_url=None,
    )
    # What the routes get by dependency (statekit.api.dependencies).
    app.state.store = store
    app.state.redactor = redactor
    app.state.api_key = key
    app.state.hub = hub or ChangeHub()
    app.state.locks = locks
    app.state.trading = TradingState(store)
    app.state.metrics = ApiMetrics(app.state)
    counting = app.state.metrics if api.metrics else None
    instrument(store, counting.store if counting else None)
    install_handlers(app, redactor)
    _add_middleware(app, api, key)
    app.add_middleware(  # the outermost: it sees every answer, the Guard's 401s too
        RequestTelemetry, metrics=counting, access_lines=settings.log_format == "json"
    )
    apidocs.install(app)

    # Every HTTP route but /health needs the key (the Guard middleware enforces it;
    # the dependency and the 401 document it). The order is the order routes match in.
    secured = [Depends(documented_key)] if key.required else []
    unauthorized = responses(401) if key.required else {}
    app.include_router(health.router)
    for router in (states.router, snapshots.router, trading.router, reconcile.router):
        app.include_router(router, dependencies=secured, responses=unauthorized)
    # /metrics answers text: FastAPI would document a 401 in that media type, but it is JSON.
    text_unauthorized = json_responses(401) if key.required else {}
    app.include_router(metrics.router, dependencies=secured, responses=text_unauthorized)
    app.include_router(stats.router, dependencies=secured, responses=unauthorized)
    app.include_router(ws.router)
    dashboard.install(app)  # `/` and /dashboard/... (docs/dashboard.md)
    return app


def _add_middleware(app: FastAPI, api: ApiSettings, key: ApiKey) -> None:
    """The Guard (API key, body limit) and, for configured origins only, CORS around it;
    inside the Guard, the fast path of ``GET /states/{state_id}`` (:mod:`.fastpath`)."""
    app.add_middleware(StateReads)  # added first: the innermost, after the Guard's checks
    app.add_middleware(Guard, key=key, max_body_bytes=api.max_body_bytes)
    if api.cors_origins:
        app.add_middleware(
            JsonCORSMiddleware,
            allow_origins=list(api.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "X-API-Key",
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
            ],
            expose_headers=["ETag", "Retry-After"],
        )
