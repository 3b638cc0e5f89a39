"""Every API error as ``{"error": {"code", "message", ...fields}}``, translated in one place.

statekit's errors map to HTTP statuses here (docs/api.md has the table): a request
the server refuses is always a 4xx with a clear body, never a 5xx. Messages pass
through :class:`Redactor` so no secret (store URL password, API key) reaches a client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from statekit.api.models import ErrorOut
from statekit.codec import MAX_INT_DIGITS, escape_surrogates
from statekit.errors import (
    BackendError,
    BackendUnavailable,
    CapabilityError,
    ConflictError,
    HistoryUnavailable,
    NotFound,
    SerializationError,
    StatekitError,
    ValidationError,
)
from statekit.redact import Redactor
from statekit.trading.errors import FencedOff

__all__ = [
    "RETRY_AFTER_SECONDS",
    "ApiError",
    "allowed_methods",
    "error_response",
    "install_handlers",
    "json_responses",
    "responses",
]

log = logging.getLogger("statekit.api")

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` of a 503: the backend may be back by then."""

_HTTP_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "history_unavailable",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    501: "not_supported",
    503: "backend_unavailable",
}

_DESCRIPTIONS: Mapping[int, str] = {
    400: "Bad request: the body is not JSON, or a header (If-Match) is malformed.",
    401: "Unauthorized: the API key is missing or wrong.",
    404: "Not found.",
    409: "Conflict: the thing exists already, or changed meanwhile.",
    410: "Gone: the history needed for `as_of` was pruned.",
    412: "Precondition failed: `If-Match` / `If-None-Match` did not hold; nothing changed.",
    413: "The request body is larger than `api.max_body_bytes`.",
    422: "Validation error: the request (body, query, key, kind or value) was refused; "
    "nothing changed.",
    501: "The store's backend cannot do this (a missing capability).",
    503: "The backend cannot be reached now; retry after `Retry-After` seconds.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for these error statuses (every route also gets 401/413/422/503)."""
    return {
        status: {"model": ErrorOut, "description": _DESCRIPTIONS[status]} for status in statuses
    }


def json_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """:func:`responses` for a route whose success is not JSON: FastAPI would document
    its errors in the route's media type, but every error body is JSON."""
    return {
        status: {
            "description": doc["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        for status, doc in responses(*statuses).items()
    }


class ApiError(Exception):
    """An error response a route raises: status, stable code, message and fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _HTTP_CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})
        self.fields = fields


class _ErrorJSON(JSONResponse):
    """A JSON error body that renders whatever bad input it echoes.

    A refused key or value may hold a lone surrogate (JSON ``"\\ud800"``), which has
    no UTF-8 form: it is sent as the same JSON escape, so the body stays valid JSON
    and a client reads back exactly what it sent, instead of the render failing.
    """

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8", "backslashreplace")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **fields: Any,
) -> JSONResponse:
    """The one error body shape."""
    return _ErrorJSON(
        {"error": {"code": code, "message": message, **fields}},
        status_code=status,
        headers=dict(headers or {}),
    )


def _statekit_error(exc: StatekitError) -> ApiError:
    """The HTTP face of a statekit error."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ConflictError):
        return ApiError(409, message, key=exc.key, expected=exc.expected, actual=exc.actual)
    if isinstance(exc, FencedOff):
        return ApiError(409, message, code="fenced_off", lease=exc.lease)
    if isinstance(exc, BackendUnavailable):
        return ApiError(
            503, message, backend=exc.backend, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    if isinstance(exc, NotFound):
        return ApiError(404, message, key=exc.key)
    if isinstance(exc, ValidationError):
        return ApiError(422, message, key=exc.key, reason=exc.reason)
    if isinstance(exc, SerializationError):
        # Raised while checking a value to be written: the value is the problem.
        return ApiError(422, message, code="validation_error", key=exc.key, path=exc.path)
    if isinstance(exc, HistoryUnavailable):
        return ApiError(410, message, key=exc.key)
    if isinstance(exc, CapabilityError):
        return ApiError(501, message, backend=exc.backend, capability=exc.capability)
    if isinstance(exc, BackendError):
        return ApiError(500, message, code="backend_error", backend=exc.backend)
    return ApiError(500, message, code="internal_error")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on ``request``'s path (for ``Allow``)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def _pydantic_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Never echo "input": it may be large, and it may be a secret the client mistyped.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]


def _validation_error(exc: RequestValidationError) -> ApiError:
    """The HTTP face of a request FastAPI refused: 400 for a body that is not JSON, else 422."""
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return ApiError(400, "the request body is not valid JSON", code="bad_json")
    details = _pydantic_errors(errors)
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    if len(where) > 120:  # a value nested hundreds of levels deep
        where = where[:120] + "..."
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    if first["loc"] == ["body"] and first["type"] == "model_attributes_type":
        # curl -d without -H sends a form: say what the server expects.
        message = "the body must be a JSON object, sent with Content-Type: application/json"
    return ApiError(422, message, details=details)


def _http_error(request: Request, exc: StarletteHTTPException) -> ApiError:
    """The HTTP face of Starlette's own errors (404 no route, 405, a body it cannot parse)."""
    status = exc.status_code
    code = _HTTP_CODES.get(status, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if status == 400:
        code = "bad_json"
    if exc.detail == "There was an error parsing the body":
        # FastAPI's answer when Python's JSON parser gives up on a body that is
        # JSON (the syntax errors are RequestValidationErrors): say why it may have.
        message = (
            "the body could not be parsed: JSON nested too deeply, or an integer of "
            f"more than {MAX_INT_DIGITS} digits (send a big number as a string)"
        )
    headers = dict(exc.headers or {})
    if status == 405:
        # Starlette names the methods of the first route on the path only.
        headers["Allow"] = ", ".join(allowed_methods(request))
    return ApiError(status, message, code=code, headers=headers)


def install_handlers(app: FastAPI, redactor: Redactor) -> None:
    """Register the handlers that turn every failure into the error body."""

    def render(error: ApiError) -> JSONResponse:
        fields = {k: redactor.data(v) for k, v in error.fields.items()}
        return error_response(
            error.status,
            error.code,
            redactor.text(error.message),
            headers=error.headers,
            **fields,
        )

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return render(exc)

    async def on_statekit_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StatekitError)
        error = _statekit_error(exc)
        if error.status >= 500:
            log.error(
                "%s %s: %s: %s",
                request.method,
                request.url.path,
                type(exc).__name__,
                escape_surrogates(redactor.text(str(exc))),
            )
        return render(error)

    async def on_request_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return render(_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return render(_http_error(request, exc))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug: log it (type and redacted text, no locals), answer without details.
        log.error(
            "%s %s: unexpected %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            escape_surrogates(redactor.text(str(exc))),
        )
        return render(ApiError(500, "internal error", code="internal_error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StatekitError, on_statekit_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
