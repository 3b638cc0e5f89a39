"""The one place PyMongo's exceptions become statekit's (docs/writing-a-backend.md, Errors).

"The server cannot be reached or cannot answer now, the same call may work later"
is :class:`~statekit.errors.BackendUnavailable`: every ``ConnectionFailure``
(``AutoReconnect``, ``NetworkTimeout``, ``ServerSelectionTimeoutError``,
``NotPrimaryError``, ``WaitQueueTimeoutError``), a server shutting down or
stepping down, a transaction the server calls transient, a time limit. A bad URI
or client option is a :class:`~statekit.errors.ConfigError`; everything else of
PyMongo and BSON is a :class:`~statekit.errors.BackendError`. Every driver call of
the backend and its watchers runs in the backend's :class:`statekit.kit.DriverGuard`
(:func:`guard`), which masks the URL's password in every message.
"""

from __future__ import annotations

from bson.errors import BSONError
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
)

from statekit.errors import ConfigError, StatekitError
from statekit.kit import DriverGuard
from statekit_mongodb.options import MongoOptions

__all__ = ["DRIVER_ERRORS", "NAME", "RETRYABLE_CODES", "guard", "is_retryable", "mongo_error"]

NAME = "mongodb"

DRIVER_ERRORS: tuple[type[BaseException], ...] = (PyMongoError, BSONError, OSError)
"""What a driver call may raise; each is handed to :func:`mongo_error`."""

RETRYABLE_CODES: dict[int, str] = {
    6: "host unreachable",
    7: "host not found",
    50: "the operation exceeded its time limit",
    89: "network timeout",
    91: "the server is shutting down",
    112: "write conflict",
    189: "the primary stepped down",
    251: "the transaction was aborted (NoSuchTransaction)",
    262: "the operation exceeded its time limit",
    9001: "socket exception",
    10107: "the server is not the primary",
    11600: "the server was interrupted at shutdown",
    11602: "the server was interrupted because of a step down",
    13435: "the server is not the primary and secondaryOk is false",
    13436: "the server is not the primary or secondary (recovering)",
}
"""Server error codes that mean "try again later" (MongoDB's retryable-error list,
plus time limits and transient transaction errors)."""

_RETRYABLE_LABELS = ("TransientTransactionError", "RetryableWriteError", "ResetPool")


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` means the same call may succeed later."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | OSError):
        return True
    if isinstance(exc, PyMongoError) and any(map(exc.has_error_label, _RETRYABLE_LABELS)):
        return True
    return isinstance(exc, OperationFailure) and exc.code in RETRYABLE_CODES


def mongo_error(guard: DriverGuard, exc: BaseException) -> StatekitError | None:
    """The statekit error for a PyMongo or BSON exception (None: the guard's default, a
    BackendError with the driver's text)."""
    if isinstance(exc, ConfigurationError):
        return ConfigError(f"mongodb URL {guard.shown}: {guard.detail(exc)}", source="url")
    if is_retryable(exc):
        code = getattr(exc, "code", None)
        reason = RETRYABLE_CODES.get(code, "") if code else ""
        return guard.unavailable(reason or "cannot reach the server", exc)
    if isinstance(exc, OperationFailure) and exc.code in (13, 18):
        return guard.failed("the server refused the login or the operation", exc)
    return None


def guard(options: MongoOptions) -> DriverGuard:
    """The DriverGuard of a backend with these options: every driver call runs in it."""
    return DriverGuard(
        NAME, options.url or options.shown, errors=DRIVER_ERRORS, translate=mongo_error
    )
