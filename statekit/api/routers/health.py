"""``GET /health``: whether the store answers, for load balancers (no API key needed)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

import statekit
from statekit.api.dependencies import RedactorDep, StoreDep
from statekit.api.errors import RETRY_AFTER_SECONDS
from statekit.api.models import ErrorBody, HealthOut
from statekit.errors import StatekitError

__all__ = ["HEALTH_TIMEOUT_SECONDS", "router"]

HEALTH_TIMEOUT_SECONDS = 5.0
"""``GET /health`` answers 503 when the backend takes longer than this."""

router = APIRouter()


@router.get(
    "/health",
    response_model=HealthOut,
    tags=["health"],
    responses={503: {"model": HealthOut, "description": "The backend is unavailable."}},
)
async def health(response: Response, store: StoreDep, redactor: RedactorDep) -> HealthOut:
    """Whether the store answers (no API key needed): `ok`, `degraded` (the primary is
    unreachable or the fallback journal is draining; writes are still taken) or
    `unavailable` (503)."""
    out = HealthOut(
        status="ok",
        backend=store.backend.name,
        latency_ms=0.0,
        version=statekit.__version__,
        capabilities=sorted(c.value for c in store.capabilities),
    )
    started = asyncio.get_running_loop().time()
    problem: str | None = None
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            found = await store.health()
        out.latency_ms = round(found.latency_ms, 3)
        if not found.ok:
            problem = "the backend reports itself unhealthy"
        elif found.detail.get("degraded"):
            # Still serving (writes go to the fallback journal): 200, but said.
            out.status = "degraded"
            out.degraded = redactor.text(str(found.detail["degraded"]))
    except TimeoutError:
        problem = f"the backend did not answer within {HEALTH_TIMEOUT_SECONDS:g}s"
    except StatekitError as exc:
        problem = redactor.text(str(exc) or type(exc).__name__)
    if problem is not None:
        out.status = "unavailable"
        out.latency_ms = round((asyncio.get_running_loop().time() - started) * 1000, 3)
        out.error = ErrorBody(code="backend_unavailable", message=problem)
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return out
