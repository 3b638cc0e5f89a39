"""``WS /ws``: the live change feed, served by the app's :class:`~statekit.api.ws.ChangeHub`.

The handshake passes the Guard middleware (which checks HTTP requests only); the hub
accepts it and, without a valid key, closes it with 4401 so the client sees why.
The protocol is in docs/websocket.md.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from statekit.api.dependencies import ApiKeyDep, HubDep
from statekit.api.guard import WS_SUBPROTOCOL

__all__ = ["router"]

router = APIRouter()


@router.websocket("/ws")
async def changes(websocket: WebSocket, hub: HubDep, key: ApiKeyDep) -> None:
    """Subscribe to topics (``states:<kind>``...) and receive every committed change.

    The API key goes in ``X-API-Key`` / ``Authorization: Bearer``, in the subprotocol
    ``statekit.key.<base64url>`` (browsers: offered with ``statekit``) or ``?api_key=``.
    """
    offered = websocket.scope.get("subprotocols", ())
    await hub.serve(
        websocket,
        authorized=key.allows(websocket.scope),
        subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None,
    )
