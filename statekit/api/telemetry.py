"""What the API tells operations: its metrics registry, request ids, access lines.

:class:`ApiMetrics` is one app's :class:`~prometheus_client.CollectorRegistry` (one per
app, never the process-global one: two apps in one process, or in one test run, do
not share or fight over series). It holds the store's series
(:mod:`statekit.observe.store`), the HTTP requests' and the collectors that read the
hub, locks and tiers at scrape time (:mod:`statekit.observe.collectors`).

:class:`RequestTelemetry` is the outermost middleware: every HTTP request gets an id
(the client's ``X-Request-ID`` when it is a sane token, else a new one), echoed in the
response and set in :data:`statekit.observe.logs.REQUEST_ID` while it is served; it
is counted and timed by method, route template (:func:`route_of`) and status; with JSON
logs, one access line is logged per request (logger ``statekit.access``).
"""

from __future__ import annotations

import itertools
import logging
import re
import uuid
from time import perf_counter
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statekit.observe.collectors import HubCollector, LockCollector, TieredCollector
from statekit.observe.logs import REQUEST_ID
from statekit.observe.metrics import LATENCY_BUCKETS, StoreMetrics

__all__ = ["REQUEST_ID_HEADER", "ROUTE_KEY", "ApiMetrics", "RequestTelemetry", "route_of"]

REQUEST_ID_HEADER: Final = "X-Request-ID"
ROUTE_KEY: Final = "statekit.route"
"""Where a middleware that answers for a route names it in the ASGI scope."""
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_HEADER_BYTES: Final = REQUEST_ID_HEADER.lower().encode()
_PREFIX: Final = uuid.uuid4().hex[:16] + "-"
_COUNTER = itertools.count(1)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
access_log = logging.getLogger("statekit.access")


class ApiMetrics:
    """One app's registry and the series in it (docs/operations.md, "Metrics").

    :param app_state: the app's ``app.state``: the collectors read its ``store``,
        ``hub`` and ``locks`` at each scrape.
    """

    def __init__(self, app_state: Any) -> None:
        self.registry = CollectorRegistry()
        self.store = StoreMetrics(self.registry)
        self.requests = Counter(
            "statekit_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.seconds = Histogram(
            "statekit_http_request_seconds",
            "Seconds from a request's arrival to the end of its response.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(HubCollector(lambda: app_state.hub.stats()))
        self.registry.register(LockCollector(lambda: app_state.locks))
        self.registry.register(TieredCollector(lambda: app_state.store.backend))


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new id: this
    process's random prefix and a counter (unique, and cheaper than a uuid4 per request)."""
    for name, value in scope["headers"]:
        if name == _HEADER_BYTES:
            given: str = value.decode("latin-1")
            if _SANE_ID.fullmatch(given):
                return given
            break
    return f"{_PREFIX}{next(_COUNTER):x}"


def route_of(scope: Scope) -> str:
    """The template of the route that answered (``/states/{state_id}``); for the fast
    path of ``GET /states/{state_id}`` (:mod:`.fastpath`), the route it stands in for;
    ``unrouted`` for what no route answered (the Guard's 401 and 413, unknown paths)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str):
        return template
    named = scope.get(ROUTE_KEY)
    return named if isinstance(named, str) else "unrouted"


class RequestTelemetry:
    """ASGI middleware: request id, HTTP metrics, access lines (module docstring).

    :param app: the application.
    :param metrics: the app's :class:`ApiMetrics` (None: requests are not counted).
    :param access_lines: log one ``statekit.access`` line per request (JSON logs).
    """

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics | None, access_lines: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_lines = access_lines
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        status = 500  # what the client meets when the app fails before answering
        start = perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Appended as it is: the app never sets this header itself.
                headers = list(message.get("headers", ()))
                headers.append((_HEADER_BYTES, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._done(scope, status, perf_counter() - start)
            REQUEST_ID.reset(token)

    def _done(self, scope: Scope, status: int, seconds: float) -> None:
        if self.metrics is None and not self.access_lines:
            return
        method = scope["method"] if scope["method"] in _METHODS else "other"
        route = route_of(scope)
        # The label children, looked up once per (method, route, status): a labels()
        # call takes a lock and builds a key, a few microseconds per request otherwise.
        children = self._children.get((method, route, status))
        if children is None and self.metrics is not None:
            children = self._children[method, route, status] = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.seconds.labels(method, route),
            )
        if children is not None:
            children[0].inc()
            children[1].observe(seconds)
        if self.access_lines:
            access_log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
