"""The one place PyMongo's exceptions become statekit's (docs/writing-a-backend.md, Errors).

"The server cannot be reached or cannot answer now, the same call may work later"
is :class:`~statekit.errors.BackendUnavailable`: every ``ConnectionFailure``
(``AutoReconnect``, ``NetworkTimeout``, ``ServerSelectionTimeoutError``,
``NotPrimaryError``, ``WaitQueueTimeoutError``), a server shutting down or
stepping down, a transaction the server calls transient, a time limit. A bad URI
or client option is a :class:`~statekit.errors.ConfigError`; everything else of
PyMongo and BSON is a :class:`~statekit.errors.BackendError`.
"""

from __future__ import annotations

from collections.abc import Callable

from bson.errors import BSONError
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
)

from statekit.errors import BackendError, BackendUnavailable, ConfigError, StatekitError

__all__ = ["DRIVER_ERRORS", "NAME", "RETRYABLE_CODES", "translate"]

NAME = "mongodb"

DRIVER_ERRORS: tuple[type[BaseException], ...] = (PyMongoError, BSONError, OSError)
"""What a driver call may raise; each is handed to :func:`translate`."""

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


def translate(
    exc: BaseException, *, where: str, scrub: Callable[[str], str] = str
) -> StatekitError:
    """The statekit error for a driver exception (raise it ``from exc``).

    :param where: the redacted URL, named in the message.
    :param scrub: masks the password in text that came from the driver.
    """
    text = scrub(str(exc).replace("\n", " "))
    if len(text) > 500:
        text = text[:500] + "..."
    kind = type(exc).__name__
    if isinstance(exc, ConfigurationError):
        return ConfigError(f"mongodb URL {where}: {text}", source="url")
    if is_retryable(exc):
        code = getattr(exc, "code", None)
        reason = RETRYABLE_CODES.get(code, "cannot reach the server") if code else None
        return BackendUnavailable(
            f"mongodb {where}: {reason or 'cannot reach the server'} ({kind}: {text})",
            backend=NAME,
        )
    if isinstance(exc, OperationFailure) and exc.code in (13, 18):
        return BackendError(
            f"mongodb {where}: the server refused the login or the operation ({kind}: {text})",
            backend=NAME,
        )
    return BackendError(f"mongodb {where}: {kind}: {text}", backend=NAME)
