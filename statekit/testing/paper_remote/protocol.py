"""The wire format: one JSON object per line; Decimals as text, enums as values, errors typed."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from statekit.trading.models import OrderSide, OrderType, TimeInForce

__all__ = [
    "DEFAULT_TIMEOUT",
    "LINE_LIMIT",
    "SCHEME",
    "error",
    "line",
    "number",
    "raised",
    "text",
]

SCHEME = "paper+tcp"
"""The URL scheme: ``paper+tcp://127.0.0.1:PORT``."""
DEFAULT_TIMEOUT = 10.0
"""Seconds a :class:`RemoteExchange` call waits for its answer."""
LINE_LIMIT = 64 * 2**20
"""The longest line either side reads: the oracles (every order, every fill) can be long."""
_ERRORS: dict[str, type[ExchangeError]] = {
    cls.__name__: cls
    for cls in (ExchangeError, ExchangeUnavailable, RateLimited, OrderRejected, OrderNotFound)
}
# A caller's mistake (a negative ``since``, a float amount) raises what the
# in-process exchange raises.
_MISTAKES: dict[str, type[Exception]] = {"ValueError": ValueError, "TypeError": TypeError}


def line(message: dict[str, Any]) -> bytes:
    """``message`` as one line of the protocol."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def number(value: Any, what: str) -> Any:
    """A Decimal from its text; anything else as sent (the exchange refuses a float)."""
    if not isinstance(value, str):
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a number") from None


def text(value: object) -> object:
    """An argument as JSON: Decimal as its exact text, an enum as its value."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, OrderSide | OrderType | TimeInForce):
        return value.value
    return value


def error(exc: Exception) -> dict[str, Any]:
    """``exc`` as the ``error`` member of a response."""
    if isinstance(exc, ExchangeError):
        names = ("exchange", "retry_after") if isinstance(exc, RateLimited) else ("exchange",)
        # A subclass (a test double's own error) is sent as the statekit type it extends.
        kind = next(c.__name__ for c in type(exc).__mro__ if _ERRORS.get(c.__name__) is c)
        return {
            "type": kind,
            "message": str(exc),
            "fields": {name: getattr(exc, name, None) for name in names},
        }
    kind = "TypeError" if isinstance(exc, TypeError) else "ValueError"
    return {"type": kind, "message": str(exc), "fields": {}}


def raised(reported: dict[str, Any]) -> Exception:
    """The exception the server reported (a response's ``error``), rebuilt with its type
    and fields."""
    kind, message = str(reported.get("type")), str(reported.get("message"))
    fields = reported.get("fields") or {}
    exchange = fields.get("exchange")
    if kind in _MISTAKES:
        return _MISTAKES[kind](message)
    if kind == "RateLimited":
        return RateLimited(message, exchange=exchange, retry_after=fields.get("retry_after"))
    return _ERRORS.get(kind, ExchangeError)(message, exchange=exchange)
