"""``/stats``: lock contention, read-cache counters and the WebSocket hub's figures."""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import APIRouter

from statekit.api.dependencies import HubDep, LocksDep, RedactorDep, StoreDep
from statekit.api.models import CacheStatsOut
from statekit.backend import JSON

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/stats/locks",
    response_model=dict[str, dict[str, pydantic.JsonValue]],
    tags=["stats"],
)
async def lock_stats(locks: LocksDep) -> dict[str, dict[str, JSON]]:
    """Contention per lock name (or family) of the server's KeyedLocks; `{}` if none."""
    return {} if locks is None else locks.as_dict()


@router.get("/stats/cache", response_model=CacheStatsOut, tags=["stats"])
async def cache_stats(store: StoreDep, redactor: RedactorDep) -> CacheStatsOut:
    """The read caches' counters (null when a cache is off)."""
    detail = (await store.health()).detail

    def section(name: str) -> dict[str, JSON] | None:
        value = detail.get(name)
        return redactor.data(value) if isinstance(value, dict) else None

    return CacheStatsOut(cache=section("cache"), shared_cache=section("shared_cache"))


@router.get(
    "/stats/ws",
    response_model=dict[str, pydantic.JsonValue],
    tags=["stats"],
)
async def ws_stats(hub: HubDep) -> dict[str, Any]:
    """The WebSocket hub: connections, subscriptions, dropped clients, queues."""
    return hub.stats()
