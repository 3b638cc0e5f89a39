"""What every request passes before a route: the API key check and the body size limit.

One pure ASGI middleware, so that an unauthenticated or oversized request is refused
before its body is read into a route, and a refused request changes nothing.
CORS (only for configured origins) wraps it: see :func:`statekit.api.app.create_app`.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.datastructures import Headers, QueryParams
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statekit.api.apidocs import ASSETS_PREFIX, DOCS_PATHS
from statekit.api.errors import error_response

__all__ = [
    "KEY_SUBPROTOCOL_PREFIX",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "WS_SUBPROTOCOL",
    "ApiKey",
    "Guard",
    "JsonCORSMiddleware",
]

PUBLIC_PATHS = frozenset({"/health", "/"}) | DOCS_PATHS
"""Paths answered without the API key (GET only): load balancers probe ``/health``;
``/`` is the dashboard's HTML shell, which holds no data (its login form asks for the key);
a browser opens ``/docs`` and ``/redoc``, which load ``/openapi.json`` (the routes they
document still need the key)."""

PUBLIC_PREFIXES = ("/dashboard/static/", ASSETS_PREFIX + "/")
"""Path prefixes answered without the key (GET only): the dashboard's scripts and styles,
and the docs pages' assets."""

WS_SUBPROTOCOL = "statekit"
"""The WebSocket subprotocol the server selects when a client offers it."""

KEY_SUBPROTOCOL_PREFIX = "statekit.key."
"""A browser's way to send the key on a WebSocket (it cannot set headers, and a URL would
log it): offer the subprotocols ``statekit`` and ``statekit.key.<the key in base64url,
unpadded>``; the server selects ``statekit`` and never echoes the key."""


class ApiKey:
    """The configured API key, compared in constant time (:func:`hmac.compare_digest`).

    :param key: the key; None or empty: no key is configured and every request passes.
    """

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key else None

    @property
    def required(self) -> bool:
        return self._key is not None

    def matches(self, given: str | None) -> bool:
        """True when ``given`` is the key (always True when no key is configured)."""
        if self._key is None:
            return True
        if given is None:
            return False
        return hmac.compare_digest(given.encode(), self._key)

    @staticmethod
    def from_headers(headers: Headers) -> str | None:
        """The key a client sent: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
        given = headers.get("x-api-key")
        if given is not None:
            return given
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None

    @staticmethod
    def from_subprotocols(scope: Scope) -> str | None:
        """The key a WebSocket client offered as ``statekit.key.<base64url>`` (or None)."""
        for offered in scope.get("subprotocols", ()):
            if isinstance(offered, str) and offered.startswith(KEY_SUBPROTOCOL_PREFIX):
                encoded = offered[len(KEY_SUBPROTOCOL_PREFIX) :]
                try:
                    padded = encoded + "=" * (-len(encoded) % 4)
                    return base64.urlsafe_b64decode(padded.encode("ascii")).decode()
                except (binascii.Error, UnicodeError, ValueError):
                    return None  # not a key we could have been sent: refused as a wrong one
        return None

    def allows(self, scope: Scope) -> bool:
        """Whether the request or WebSocket of ``scope`` carries the key.

        A WebSocket may also pass it as a subprotocol (:data:`KEY_SUBPROTOCOL_PREFIX`,
        what the dashboard does: browsers cannot set headers on one) or as ``?api_key=``.
        """
        given = self.from_headers(Headers(scope=scope))
        if given is None and scope["type"] == "websocket":
            given = self.from_subprotocols(scope)
            if given is None:
                query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
                given = query.get("api_key")
        return self.matches(given)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class Guard:
    """ASGI middleware: 401 without the key (except GETs of :data:`PUBLIC_PATHS` and
    :data:`PUBLIC_PREFIXES`), 413 over the limit.

    WebSockets pass through; their route asks :meth:`ApiKey.allows` and tells the hub.

    :param app: the application.
    :param key: the API key check.
    :param max_body_bytes: the largest request body accepted.
    """

    def __init__(self, app: ASGIApp, *, key: ApiKey, max_body_bytes: int) -> None:
        self.app = app
        self.key = key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        public = scope["method"] in ("GET", "HEAD") and (
            path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        )
        if not public and not self.key.allows(scope):
            response = error_response(
                401,
                "unauthorized",
                "a valid API key is required: send it as X-API-Key (or Authorization: Bearer)",
                headers={"WWW-Authenticate": 'Bearer realm="statekit"'},
            )
            await response(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large()(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _TooLarge:
            await self._too_large()(scope, receive, send)
            return
        except _Disconnected:
            return  # the client left before sending its body: nothing to answer
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> Response:
        return error_response(
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_body_bytes} bytes (api.max_body_bytes)",
            limit=self.max_body_bytes,
        )

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, refusing it as soon as it passes the limit (chunked bodies too)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client left: let the app see the disconnect.
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body over once, then waits as the original."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the API's error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        reason = bytes(response.body).decode(errors="replace") or "CORS request refused"
        refused = error_response(400, "cors_refused", reason)
        for name, value in response.headers.items():
            if name.lower().startswith("access-control-") or name.lower() == "vary":
                refused.headers[name] = value
        return refused
