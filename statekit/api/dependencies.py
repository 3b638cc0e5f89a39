"""What a route is handed (FastAPI ``Depends``): the store and the rest of the app's context.

:func:`statekit.api.create_app` puts the store, the settings' redactor, the API key,
the WebSocket hub, the locks and the trading view on ``app.state``; a route names what
it needs by type (``store: StoreDep``). So the routers in :mod:`statekit.api.routers`
are plain module-level ``APIRouter`` objects that serve every app, and a test can
swap any of these with ``app.dependency_overrides``.

Every one is ``async def``, though none awaits: FastAPI runs a plain ``def``
dependency on a worker thread, a thread hand-off per dependency per request.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.requests import HTTPConnection

from statekit.api.guard import ApiKey
from statekit.api.ws import ChangeHub
from statekit.redact import Redactor
from statekit.store import StateStore
from statekit.trading.locks import KeyedLocks
from statekit.trading.state import TradingState

__all__ = [
    "ApiKeyDep",
    "HubDep",
    "LocksDep",
    "RedactorDep",
    "StoreDep",
    "TradingDep",
    "documented_key",
    "get_api_key",
    "get_hub",
    "get_locks",
    "get_redactor",
    "get_store",
    "get_trading",
]


async def get_store(connection: HTTPConnection) -> StateStore:
    """The open store the app serves (the app does not close it)."""
    return cast(StateStore, connection.app.state.store)


async def get_redactor(connection: HTTPConnection) -> Redactor:
    """What must never leave the server: the API key and the store URLs' secrets."""
    return cast(Redactor, connection.app.state.redactor)


async def get_api_key(connection: HTTPConnection) -> ApiKey:
    """The configured API key check (the Guard middleware enforces it on HTTP routes)."""
    return cast(ApiKey, connection.app.state.api_key)


async def get_hub(connection: HTTPConnection) -> ChangeHub:
    """The WebSocket change hub the app's lifespan runs."""
    return cast(ChangeHub, connection.app.state.hub)


async def get_locks(connection: HTTPConnection) -> KeyedLocks | None:
    """The process's keyed locks, when the app was given them."""
    return cast(KeyedLocks | None, connection.app.state.locks)


async def get_trading(connection: HTTPConnection) -> TradingState:
    """The trading view (positions, orders, balances) over the store."""
    return cast(TradingState, connection.app.state.trading)


StoreDep = Annotated[StateStore, Depends(get_store)]
RedactorDep = Annotated[Redactor, Depends(get_redactor)]
ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]
HubDep = Annotated[ChangeHub, Depends(get_hub)]
LocksDep = Annotated[KeyedLocks | None, Depends(get_locks)]
TradingDep = Annotated[TradingState, Depends(get_trading)]


# Documents the key in OpenAPI (the Guard middleware is what enforces it).
_HEADER_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
_BEARER_KEY = HTTPBearer(auto_error=False, description="The API key as a bearer token.")


async def documented_key(
    _header: Annotated[str | None, Depends(_HEADER_KEY)],
    _bearer: Annotated[Any, Depends(_BEARER_KEY)],
) -> None:
    """The API key's two forms, for OpenAPI: ``create_app`` adds it to the guarded routes."""
    return None
