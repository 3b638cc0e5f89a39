"""The one place asyncpg's exceptions become statekit's (docs/writing-a-backend.md, Errors).

Everything that means "the server cannot be reached or answered, the same call may
work later" is :class:`~statekit.errors.BackendUnavailable`: a refused or dropped
connection (``OSError``, ``ConnectionDoesNotExistError``, asyncpg's
``InterfaceError`` and ``InternalClientError``), a server shutting down or
starting up (57P01/57P02/57P03), too many connections, a timeout, a deadlock or
serialization failure, a standby that refuses writes. A failed ``expect`` raised
by ``statekit_append`` (SQLSTATE SK409) becomes
:class:`~statekit.errors.ConflictError` through
:func:`statekit.backend.check_expect`, the rule every backend shares.
docs/backends/postgresql.md has the whole table.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from asyncpg import exceptions as pg  # type: ignore[import-untyped]

from statekit.backend import Write, check_expect
from statekit.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ConflictError,
    StatekitError,
)
from statekit_postgres.schema import CONFLICT_SQLSTATE

__all__ = ["DRIVER_ERRORS", "translate"]

NAME = "postgresql"

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    pg.PostgresError,
    pg.InterfaceError,
    pg.InternalClientError,
    OSError,
    TimeoutError,
)
"""What a driver call may raise; each is handed to :func:`translate`."""

_RETRYABLE_STATES = {
    "25006": "the server is read-only (a standby, or during failover)",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "53000": "the server is out of resources",
    "53100": "the server's disk is full",
    "53200": "the server is out of memory",
    "53300": "too many connections",
    "55P03": "a lock was not available in time",
    "57014": "the statement was cancelled (statement_timeout?)",
    "57P01": "the server is shutting down",
    "57P02": "the server crashed",
    "57P03": "the server is starting up or shutting down",
    "57P05": "the connection was idle too long",
}


def _conflict(exc: pg.PostgresError, where: str) -> StatekitError:
    try:
        detail = json.loads(exc.detail or "")
        write = Write(str(detail["key"]), None, expect=int(detail["expected"]))
        actual, deleted = int(detail["actual"]), bool(detail["deleted"])
    except (ValueError, TypeError, KeyError) as bad:
        return BackendError(
            f"postgresql {where}: unreadable conflict report from statekit_append: {bad}",
            backend=NAME,
        )
    try:
        check_expect(write, actual, deleted, backend=NAME)
    except ConflictError as conflict:
        return conflict
    return BackendError(
        f"postgresql {where}: statekit_append refused {write.key!r} (expect={write.expect}, "
        f"head {actual}, deleted={deleted}) but check_expect accepts it; "
        "the function's rule is out of date: reopen to migrate",
        backend=NAME,
    )


def translate(
    exc: BaseException, *, where: str, scrub: Callable[[str], str] = str
) -> StatekitError:
    """The statekit error for a driver exception (raise it ``from exc``).

    :param where: the redacted URL, named in the message.
    :param scrub: masks the password in text that came from the driver.
    """
    text = scrub(str(exc).replace("\n", " "))
    kind = type(exc).__name__
    if isinstance(exc, pg.PostgresError):
        state = exc.sqlstate or ""
        if state == CONFLICT_SQLSTATE:
            return _conflict(exc, where)
        if state.startswith("08") or state in _RETRYABLE_STATES:
            reason = _RETRYABLE_STATES.get(state, "the connection failed")
            return BackendUnavailable(
                f"postgresql {where}: {reason} ({kind} {state}: {text})", backend=NAME
            )
        if state.startswith("28"):
            return BackendError(
                f"postgresql {where}: the server refused the login ({kind}: {text})",
                backend=NAME,
            )
        return BackendError(f"postgresql {where}: {kind} {state}: {text}", backend=NAME)
    if isinstance(exc, pg.ClientConfigurationError):
        return ConfigError(f"postgresql URL {where}: {text}", source="url")
    if isinstance(exc, pg.DataError):  # an argument asyncpg could not encode
        return BackendError(f"postgresql {where}: {kind}: {text}", backend=NAME)
    if isinstance(exc, pg.InternalClientError):
        # The connection's protocol state is broken (e.g. the server's goodbye
        # arrived mid-call); that connection is dropped, a new one will do.
        return BackendUnavailable(
            f"postgresql {where}: the connection broke ({kind}: {text})", backend=NAME
        )
    if isinstance(exc, pg.InterfaceError | OSError):
        # A refused, reset or closed connection; asyncpg's InterfaceError also covers
        # "connection is closed" when the server went away between calls.
        return BackendUnavailable(
            f"postgresql {where}: cannot reach the server ({kind}: {text})", backend=NAME
        )
    if isinstance(exc, TimeoutError):
        return BackendUnavailable(
            f"postgresql {where}: no answer in time (connect_timeout / command_timeout)",
            backend=NAME,
        )
    return BackendError(f"postgresql {where}: {kind}: {text}", backend=NAME)
