"""``mysql://`` and ``mariadb://``: statekit's versioned keys in MySQL or MariaDB, via aiomysql.

The tables, the append transaction, the reads and the watch are
:class:`statekit.kit.sql.SqlBackend`'s; this module gives MySQL's dialect, the pool
and the error codes. Keys, kinds and namespaces are ``VARBINARY``: MySQL's text
collations fold case and ignore trailing spaces, so ``"A"`` and ``"a "`` would be
one key. Values are ``LONGBLOB`` holding the JSON text, ``at`` is microseconds
from the server's ``UTC_TIMESTAMP(6)``.

URL: ``mysql://user:password@host:3306/database?namespace=default&pool_max=10
&connect_timeout=10&poll_interval=0.05`` (``mariadb://`` is the same).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import aiomysql  # type: ignore[import-untyped]
import pymysql  # type: ignore[import-untyped]

from statekit.codec import DEFAULT_NAMESPACE, check_namespace
from statekit.errors import ConfigError, StatekitError
from statekit.kit import DbapiConnection, DriverGuard, SqlBackend, SqlDialect, StoreUrl, tables

__all__ = ["MysqlBackend"]

OPTIONS = ("namespace", "pool_max", "connect_timeout", "poll_interval")

UNAVAILABLE = {
    1040: "too many connections",
    1053: "the server is shutting down",
    1205: "a lock wait timed out",
    1213: "deadlock",
    1290: "the server is read-only",
    1927: "the connection was killed",
    2002: "cannot reach the server",
    2003: "cannot reach the server",
    2006: "the server went away",
    2013: "the connection was lost",
}
"""Server and client error codes that mean "the same call may work later"."""
ERRORS = (pymysql.err.MySQLError, OSError)

DIALECT = SqlDialect(
    tables=(
        "SET SESSION sql_notes = 0",  # "table exists" notes would be Python warnings
        *tables(
            ns="VARBINARY(64)",
            key="VARBINARY(2048)",
            kind="VARBINARY(256)",
            text="LONGBLOB",
            suffix=" ENGINE=InnoDB",
            inline_indexes=True,
        ),
    ),
    seed="INSERT INTO statekit_commits (ns, seq) VALUES (?, 0) ON DUPLICATE KEY UPDATE seq = seq",
    clock="TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6))",
)


def _translate(guard: DriverGuard, exc: BaseException) -> StatekitError | None:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code in UNAVAILABLE:
        return guard.unavailable(UNAVAILABLE[code], exc)
    if isinstance(exc, pymysql.err.InterfaceError):
        return guard.unavailable("the connection is closed", exc)
    if code in (1044, 1045, 1049):
        return guard.failed("the server refused the login or does not have the database", exc)
    return None


class MysqlBackend(SqlBackend):
    """MySQL or MariaDB through an aiomysql pool: :meth:`open` a URL, or :meth:`from_pool`
    (a pool made with ``autocommit=True``, which :meth:`aclose` leaves open)."""

    name = "mysql"
    dialect = DIALECT

    def __init__(
        self, pool: Any, *, namespace: str, url: str, owns_pool: bool, poll_interval: float
    ) -> None:
        guard = DriverGuard(self.name, url, errors=ERRORS, translate=_translate)
        super().__init__(guard=guard, namespace=namespace, poll_interval=poll_interval)
        self._pool, self._owns_pool = pool, owns_pool

    @classmethod
    async def open(cls, url: str) -> Self:
        u = StoreUrl.parse(
            url, backend=cls.name, schemes=("mysql", "mariadb"), options=OPTIONS,
            example="mysql://user:password@host:3306/database?namespace=...",
        )  # fmt: skip
        if not u.database:
            raise ConfigError(f"mysql URL {u.shown!r} names no database", source="url")
        namespace, poll = u.namespace(), u.seconds("poll_interval", 0.05, zero=False, maximum=60)
        pool_max = u.integer("pool_max", 10, minimum=1)
        timeout = u.seconds("connect_timeout", 10.0, zero=False)
        with DriverGuard(cls.name, url, errors=ERRORS, translate=_translate).calls():
            pool = await aiomysql.create_pool(
                host=u.host or "localhost", port=u.port or 3306, user=u.user or "",
                password=u.password or "", db=u.database, charset="utf8mb4", autocommit=True,
                minsize=1, maxsize=pool_max, connect_timeout=timeout,
            )  # fmt: skip
        backend = cls(pool, namespace=namespace, url=url, owns_pool=True, poll_interval=poll)
        await backend.prepare()
        return backend

    @classmethod
    async def from_pool(
        cls, pool: Any, *, namespace: str = DEFAULT_NAMESPACE, poll_interval: float = 0.05
    ) -> Self:
        check_namespace(namespace, backend=cls.name, where="pool")
        backend = cls(
            pool, namespace=namespace, url="<aiomysql pool>", owns_pool=False,
            poll_interval=poll_interval,
        )  # fmt: skip
        await backend.prepare()
        return backend

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[DbapiConnection]:
        async with self._pool.acquire() as conn:
            yield DbapiConnection(conn)

    async def close_driver(self) -> None:
        if self._owns_pool:
            self._pool.close()
            await self._pool.wait_closed()
