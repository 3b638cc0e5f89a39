"""The backend author's kit: the mechanics every backend needs, written once.

It builds on the core only (``statekit.backend``, ``codec``, ``errors``, ``redact``)
and is optional: a backend may use any part of it, or none.

- :class:`~statekit.kit.url.StoreUrl`: parse a store URL and its typed options,
  with ConfigErrors that name the option and mask the password.
- :class:`~statekit.kit.guard.DriverGuard`: the one place driver exceptions become
  statekit errors, and the "backend is closed" check.
- :mod:`statekit.kit.records`: rows and documents to :class:`~statekit.backend.Record`
  and back (JSON text or parsed, microseconds, ISO 8601, bytes columns), checked once.
- :class:`~statekit.kit.follow.CommitFollower`: ``watch`` by polling a commit
  sequence, with its start point, paging and restart behaviour.
- :class:`~statekit.kit.sql.SqlBackend`: the whole contract over SQL tables for a
  DB-API-like async driver; a subclass gives its dialect and its pool.

docs/writing-a-backend.md shows each in use.
"""

from typing import TYPE_CHECKING, Any

from statekit.kit.follow import CommitFollower, Watchers
from statekit.kit.guard import DriverGuard
from statekit.kit.records import (
    Fields,
    appended,
    decoded,
    from_document,
    from_micros,
    record,
    stored,
    to_micros,
    utc,
)
from statekit.kit.url import StoreUrl, with_options

if TYPE_CHECKING:
    from statekit.kit.sql import DbapiConnection, SqlBackend, SqlConnection, SqlDialect, tables

_SQL = frozenset({"DbapiConnection", "SqlBackend", "SqlConnection", "SqlDialect", "tables"})

__all__ = [
    "CommitFollower",
    "DbapiConnection",
    "DriverGuard",
    "Fields",
    "SqlBackend",
    "SqlConnection",
    "SqlDialect",
    "StoreUrl",
    "Watchers",
    "appended",
    "decoded",
    "from_document",
    "from_micros",
    "record",
    "stored",
    "tables",
    "to_micros",
    "utc",
    "with_options",
]


def __getattr__(name: str) -> Any:
    # The SQL base loads on first use: memory and sqlite use the kit but not it.
    if name in _SQL:
        from statekit.kit import sql

        return getattr(sql, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
