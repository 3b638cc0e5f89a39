"""The one place asyncpg's exceptions become statekit's (docs/writing-a-backend.md, Errors).

Every driver call of the backend and its watchers runs in the backend's
:class:`statekit.kit.DriverGuard` (:func:`guard`), which hands what asyncpg raises to
:func:`postgres_error` and masks the URL's password in every message.

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

from asyncpg import exceptions as pg  # type: ignore[import-untyped]

from statekit.backend import Write, check_expect
from statekit.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ConflictError,
    StatekitError,
)
from statekit.kit import DriverGuard
from statekit_postgres.options import PostgresOptions
from statekit_postgres.schema import CONFLICT_SQLSTATE

__all__ = ["DRIVER_ERRORS", "guard", "postgres_error"]

NAME = "postgresql"

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    pg.PostgresError,
    pg.InterfaceError,
    pg.InternalClientError,
    OSError,
    TimeoutError,
)
"""What a driver call may raise; each is handed to :func:`postgres_error`."""

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


def _conflict(guard: DriverGuard, exc: pg.PostgresError) -> StatekitError:
    try:
        detail = json.loads(exc.detail or "")
        write = Write(str(detail["key"]), None, expect=int(detail["expected"]))
        actual, deleted = int(detail["actual"]), bool(detail["deleted"])
    except (ValueError, TypeError, KeyError) as bad:
        return BackendError(
            f"{guard.where}: unreadable conflict report from statekit_append: {bad}",
            backend=NAME,
        )
    try:
        check_expect(write, actual, deleted, backend=NAME)
    except ConflictError as conflict:
        return conflict
    return BackendError(
        f"{guard.where}: statekit_append refused {write.key!r} (expect={write.expect}, "
        f"head {actual}, deleted={deleted}) but check_expect accepts it; "
        "the function's rule is out of date: reopen to migrate",
        backend=NAME,
    )


def _server_error(guard: DriverGuard, exc: pg.PostgresError) -> StatekitError:
    state = exc.sqlstate or ""
    if state == CONFLICT_SQLSTATE:
        return _conflict(guard, exc)
    code = f"{type(exc).__name__} {state}: {guard.detail(exc)}"
    if state.startswith("08") or state in _RETRYABLE_STATES:
        reason = _RETRYABLE_STATES.get(state, "the connection failed")
        return BackendUnavailable(f"{guard.where}: {reason} ({code})", backend=NAME)
    if state.startswith("28"):
        return guard.failed("the server refused the login", exc)
    return BackendError(f"{guard.where}: {code}", backend=NAME)


def postgres_error(guard: DriverGuard, exc: BaseException) -> StatekitError | None:
    """The statekit error for an asyncpg exception (None: the guard's default rule, a
    BackendError with the driver's text)."""
    if isinstance(exc, pg.PostgresError):
        return _server_error(guard, exc)
    if isinstance(exc, pg.ClientConfigurationError):
        return ConfigError(f"postgresql URL {guard.shown}: {guard.detail(exc)}", source="url")
    if isinstance(exc, pg.DataError):  # an argument asyncpg could not encode
        return guard.failed("asyncpg could not send an argument", exc)
    if isinstance(exc, pg.InternalClientError):
        # The connection's protocol state is broken (e.g. the server's goodbye
        # arrived mid-call); that connection is dropped, a new one will do.
        return guard.unavailable("the connection broke", exc)
    if isinstance(exc, pg.InterfaceError | OSError):
        # A refused, reset or closed connection; asyncpg's InterfaceError also covers
        # "connection is closed" when the server went away between calls.
        return guard.unavailable("cannot reach the server", exc)
    if isinstance(exc, TimeoutError):
        return guard.unavailable("no answer in time (connect_timeout / command_timeout)")
    return None


def guard(options: PostgresOptions) -> DriverGuard:
    """The DriverGuard of a backend with these options: every driver call runs in it."""
    return DriverGuard(
        NAME,
        options.url or options.shown,
        errors=DRIVER_ERRORS,
        translate=postgres_error,
        secrets=[options.password] if options.password else [],
    )
