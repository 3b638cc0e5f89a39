"""The API's hottest request, ``GET /states/{state_id}`` of a live value, without the router.

:class:`StateReads` sits inside the Guard (the API key and body limit are checked
first) and before FastAPI's router. A plain ``GET /states/<key>`` (no query string)
of a key with a live value is answered here with the very response the route makes
(:func:`statekit.api.preconditions.tagged_json`: same status, headers and bytes).
Everything else goes on to the routes, which answer it as documented: a query
(``as_of``, ``state_type``), a ``.../history`` path, a statekit key, an absent key,
an error, an app with ``dependency_overrides``. The route still exists and is what
OpenAPI describes; this skips FastAPI's route matching and dependency solving,
about half of a GET's time, where the answer is the same either way.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from statekit.api.preconditions import tagged_json
from statekit.store import RESERVED_PREFIX, StateStore

__all__ = ["StateReads"]

_PREFIX = "/states/"


def _key(scope: Scope) -> str | None:
    """The key a request for the fast path names, or None when the routes must answer."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string"):
        return None
    if scope.get("root_path"):  # mounted under a prefix: leave path handling to Starlette
        return None
    path: str = scope["path"]
    if not path.startswith(_PREFIX) or path.endswith("/history"):
        # "/states/<id>/history" is the history route's (a key may end in "/history" too:
        # then the route decides, as it always did).
        return None
    key = path[len(_PREFIX) :]
    if not key or key.startswith(RESERVED_PREFIX):
        return None
    return key


class StateReads:
    """ASGI middleware: the fast path for ``GET /states/{state_id}`` (module docstring).

    :param app: the application (the routes answer what this does not).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _key(scope)
        if key is not None:
            owner = scope.get("app")
            state = getattr(owner, "state", None)
            store = getattr(state, "store", None)
            if isinstance(store, StateStore) and not getattr(owner, "dependency_overrides", None):
                try:
                    record = await store.get(key)
                except Exception:  # the route meets it again and answers it as documented
                    record = None
                if record is not None:
                    scope["statekit.route"] = "/states/{state_id}"  # for the HTTP metrics
                    await tagged_json(record)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
