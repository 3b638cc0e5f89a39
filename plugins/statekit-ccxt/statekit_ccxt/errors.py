"""ccxt's exceptions translated into statekit's, in this one place.

The hierarchy read is ccxt's own (``ccxt/base/errors.py``, ccxt 4.5): the
network failures (``NetworkError``: ``RequestTimeout``, ``ExchangeNotAvailable``,
``InvalidNonce``, ``RateLimitExceeded``, ``DDoSProtection``) and the answers
ccxt could not read (``BadResponse``, ``CancelPending``) all sit under
``OperationFailed``, which is *not* a ``ccxt.ExchangeError``; ``OrderNotFound``
is a kind of ``InvalidOrder``. So the order of the checks below matters:

=====================================================  ===========================
ccxt                                                   statekit
=====================================================  ===========================
``RateLimitExceeded``, ``DDoSProtection``              RateLimited
other ``OperationFailed`` (timeouts, lost connections,  ExchangeUnavailable
``ExchangeNotAvailable``, ``InvalidNonce``,
``BadResponse``, ``CancelPending``)
``OrderNotFound``                                      OrderNotFound
``AuthenticationError`` (``PermissionDenied``,         ExchangeError (terminal)
``AccountSuspended``...)
``InvalidOrder``, ``InsufficientFunds``,               OrderRejected from
``BadRequest`` (``BadSymbol``), ``OperationRejected``  ``create_order``; a terminal
                                                       ExchangeError from any other
                                                       call
any other ``ccxt.ExchangeError``                       ExchangeError (terminal)
=====================================================  ===========================

``DDoSProtection`` is a rate limit: in ccxt 4.5 every exchange raises it for
HTTP 418/429 answers, "too many requests", "server busy" and temporary
lockouts, all refusals before anything happened. Binance raises it for *every*
HTTP 429, before it reads the ``-1003`` body, so treating it as "no answer"
would turn each Binance rate limit into an unknown outcome.
"""

from __future__ import annotations

import asyncio

import aiohttp
import ccxt  # type: ignore[import-untyped]  # ccxt ships no type information

from statekit.trading.errors import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)

__all__ = ["translate"]

_REFUSALS = (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest, ccxt.OperationRejected)
"""The venue looked at the request and said no: nothing happened."""


def translate(exc: Exception, *, exchange: str, request: str) -> ExchangeError:
    """The statekit error for ``exc``, raised by ccxt while doing ``request``.

    :param exchange: the connector's name, kept in ``ExchangeError.exchange``.
    :param request: the connector method (``create_order``...): a refusal is an
        OrderRejected only for ``create_order``, where it means "the order does not exist".
    """
    message = f"{exchange}: {request} failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return RateLimited(message, exchange=exchange)
    if isinstance(exc, ccxt.OperationFailed):
        return ExchangeUnavailable(message, exchange=exchange)
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(message, exchange=exchange)
    if isinstance(exc, ccxt.AuthenticationError):
        return ExchangeError(message, exchange=exchange)  # the same keys will not do better
    if isinstance(exc, _REFUSALS):
        if request == "create_order":
            return OrderRejected(message, exchange=exchange)
        return ExchangeError(message, exchange=exchange)
    if isinstance(exc, ccxt.BaseError):
        if isinstance(exc.__cause__, aiohttp.ClientError):
            # ccxt names an aiohttp failure it has no class for (a broken payload...)
            # a plain ExchangeError; the answer was lost all the same.
            return ExchangeUnavailable(message, exchange=exchange)
        return ExchangeError(message, exchange=exchange)
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return ExchangeUnavailable(message, exchange=exchange)  # a transport error ccxt let through
    # Not ccxt's: a bug reading the venue's answer. Whether the request took effect
    # is unknown, and retrying would fail the same way: terminal, and said so.
    return ExchangeError(f"{message} (unexpected; please report it)", exchange=exchange)
