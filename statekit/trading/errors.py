"""The trading layer's errors: exchanges, orders, locks, fencing, reconciliation.

They subclass :class:`statekit.errors.StatekitError` like every statekit error; the
core's errors (storage, configuration, validation) live in :mod:`statekit.errors`.
``from statekit import FencedOff`` still works (the package re-exports them).
"""

from __future__ import annotations

from statekit.errors import StatekitError

__all__ = [
    "ExchangeError",
    "ExchangeUnavailable",
    "FencedOff",
    "IdempotencyConflict",
    "LockTimeout",
    "OrderNotFound",
    "OrderRejected",
    "RateLimited",
    "ReconcileError",
]


class ReconcileError(StatekitError):
    """Reconciliation could not bring actual state to the desired state.

    :param key: the work item (``orders/intent-7``, ``positions/BTC/USDT``).
    :param reason: a short machine-readable reason (``Rejected``, ``TooManyAttempts``).
    :param terminal: True when retrying cannot help: the engine does not retry the
        key with backoff (each full pass still looks at it, and the reconciler
        decides whether anything changed); False for a retryable failure.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        reason: str | None = None,
        terminal: bool = False,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason
        self.terminal = terminal


class LockTimeout(StatekitError):
    """A lock or lease was not acquired within its timeout.

    :param names: the lock (or lease) names asked for.
    :param timeout: the seconds waited.
    """

    def __init__(self, message: str, *, names: tuple[str, ...], timeout: float) -> None:
        super().__init__(message)
        self.names = names
        self.timeout = timeout


class FencedOff(StatekitError):
    """A write carried a lease's fencing token, and a newer holder has the lease since.

    Nothing of the write was stored.

    :param lease: the lease name.
    :param token: the token the write carried.
    :param current: the lease's token now (0: the lease is free).
    """

    def __init__(self, message: str, *, lease: str, token: int, current: int) -> None:
        super().__init__(message)
        self.lease = lease
        self.token = token
        self.current = current


class IdempotencyConflict(StatekitError):
    """An idempotency key was used again with different parameters.

    :param key: the idempotency key.
    :param differences: the parameters that differ, ``{name: (stored, given)}``.
    """

    def __init__(self, message: str, *, key: str, differences: dict[str, tuple[str, str]]) -> None:
        super().__init__(message)
        self.key = key
        self.differences = differences


class ExchangeError(StatekitError):
    """An exchange connector failed. ``retryable`` says whether the same call may succeed.

    :param exchange: the connector's name.
    """

    retryable = False

    def __init__(self, message: str, *, exchange: str | None = None) -> None:
        super().__init__(message)
        self.exchange = exchange


class ExchangeUnavailable(ExchangeError):
    """No answer (timeout, lost connection): **whether the request took effect is unknown**.

    After a create_order this means the order may exist; ask the exchange by
    client order id before doing anything else. Never assume either outcome.
    """

    retryable = True


class RateLimited(ExchangeError):
    """The exchange refused the request for its rate limit; it did not take effect.

    :param retry_after: seconds the exchange asked to wait, when it said.
    """

    retryable = True

    def __init__(
        self, message: str, *, exchange: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, exchange=exchange)
        self.retry_after = retry_after


class OrderRejected(ExchangeError):
    """The exchange refused the order (funds, size, price); it does not exist there."""


class OrderNotFound(ExchangeError):
    """The exchange knows no such order."""
