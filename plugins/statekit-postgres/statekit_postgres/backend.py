"""``postgresql://``: statekit's versioned keys in PostgreSQL, through asyncpg.

- Every append is one round trip: ``SELECT ... FROM statekit_append(...)``, a
  plpgsql function that locks the keys' heads in key order, checks every
  ``expect``, stamps the batch's time (the server's clock, past each key's
  previous version) and the namespace's next commit number, and writes the
  version rows and heads, all or nothing (docs/backends/postgresql.md).
- ``as_of`` is one round trip too: ``statekit_version_at`` binary-searches a
  key's versions on the primary key, since ``at`` rises with the version.
- Several bots share a database through namespaces (``?namespace=``): every
  statement is scoped to one, and :meth:`PostgresBackend.drop_namespace` drops
  only its own.
- ``watch`` reads the commit feed by position (the writing transaction's id, then
  the place in its batch; :mod:`statekit_postgres.schema`), so a dropped connection
  resumes where it stopped. It LISTENs for wake-ups: one append in a while carries a
  NOTIFY, not every one (:mod:`statekit_postgres.wakeups`).
- ``append(..., guards=...)`` checks other keys' head versions under the same locks,
  in the same transaction, without writing them (Capability.GUARDED_APPEND).
- The schema is created and upgraded on open (:mod:`statekit_postgres.schema`).
- A multi-host URL with ``target_session_attrs=read-write`` follows a failover: new
  connections go to whichever host is writable (:mod:`statekit_postgres.pool`).
  ``?read=standby`` sends history, scan and as-of reads to a standby, still seeing
  this backend's own writes (:class:`~statekit_postgres.pool.StandbyReads`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Self

import asyncpg  # type: ignore[import-untyped]

from statekit.backend import (
    ANY,
    Backend,
    Capability,
    Guard,
    Health,
    Record,
    Write,
    counted_position,
)
from statekit.codec import prefix_end
from statekit.errors import BackendError, ValidationError
from statekit.kit import Watchers, appended
from statekit_postgres import queries
from statekit_postgres.options import DEFAULT_NAMESPACE, PostgresOptions
from statekit_postgres.pool import (
    AsyncpgPool,
    ConnectionPool,
    Connections,
    Lease,
    StandbyReads,
)
from statekit_postgres.records import to_record
from statekit_postgres.schema import SCHEMA_VERSION, migrate
from statekit_postgres.translate import guard
from statekit_postgres.wakeups import Wakeups
from statekit_postgres.watch import PostgresWatch

__all__ = ["PostgresBackend"]

MIN_SERVER_VERSION = 110000
_ANY = -1  # expect=ANY on the wire
_NO_UPPER_BOUND = 2**62


class PostgresBackend(Backend):
    """PostgreSQL through an asyncpg pool. Open with :meth:`open` or :meth:`from_pool`."""

    name = "postgresql"
    capabilities = frozenset(
        {
            Capability.ATOMIC_BATCH,
            Capability.COMPARE_AND_SET,
            Capability.WATCH,
            Capability.HISTORY,
            Capability.DURABLE,
            Capability.GUARDED_APPEND,
            Capability.CHANGES,
        }
    )

    def __init__(
        self, pool: Connections, options: PostgresOptions, standby: Connections | None = None
    ) -> None:
        """Use :meth:`open` (a URL) or :meth:`from_pool` (your asyncpg pool): they also
        create or upgrade the schema.

        :param pool: where connections come from (:mod:`statekit_postgres.pool`).
        :param options: the parsed URL (namespace, timeouts...).
        :param standby: the pool of standby reads (``?read=standby``), if any.
        """
        self.options = options
        self.namespace = options.namespace
        self._pool = pool
        self._standby = (
            None if standby is None else StandbyReads(pool, standby, wait=options.standby_wait)
        )
        self.guard = guard(options)
        """Every driver call runs in it: errors translated in one place, the closed state."""
        self._watches = Watchers()
        self._wake_payload = json.dumps({"ns": self.namespace})
        self.wakeups = Wakeups(self._wake_up)
        """Sends the NOTIFYs that follow this backend's commits, coalesced."""

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to the database at ``url``, create or upgrade statekit's tables.

        :raises ConfigError: the URL is malformed or has an unknown option.
        :raises BackendUnavailable: the server cannot be reached (the URL in the
            message has its password masked).
        """
        options = PostgresOptions.parse(url)
        pool = ConnectionPool(
            functools.partial(asyncpg.connect, **options.connect_kwargs()),
            min_size=options.pool_min,
            max_size=options.pool_max,
        )
        standby = None
        if options.read == "standby":  # opened on first use: a standby down is no reason to fail
            standby = ConnectionPool(
                functools.partial(asyncpg.connect, **options.connect_kwargs(standby=True)),
                min_size=options.pool_min,
                max_size=options.pool_max,
            )
        backend = cls(pool, options, standby)
        try:
            await backend._prepare(pool.start)
        except BaseException:
            await backend.aclose()
            raise
        return backend

    @classmethod
    async def from_pool(cls, pool: Any, *, namespace: str = DEFAULT_NAMESPACE) -> Self:
        """A backend on the caller's ``asyncpg.Pool``, which :meth:`aclose` leaves open.

        Tables go into the first schema of the pool connections' search path.
        Each running watcher holds one connection of the pool.
        """
        backend = cls(AsyncpgPool(pool), PostgresOptions.for_pool(namespace))
        await backend._prepare()
        return backend

    async def _prepare(self, start: Callable[[], Awaitable[None]] | None = None) -> None:
        with self.guard.calls():
            if start is not None:
                await start()
            async with Lease(self._pool) as conn:
                encoding, version_num, _ = await conn.fetchrow(queries.SERVER_FACTS)
                if encoding != "UTF8":
                    raise BackendError(
                        f"postgresql {self.options.shown}: the database's encoding is "
                        f"{encoding}; statekit needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')",
                        backend=self.name,
                    )
                if version_num < MIN_SERVER_VERSION:
                    raise BackendError(
                        f"postgresql {self.options.shown}: server version {version_num} is "
                        "too old; statekit needs PostgreSQL 11 or newer",
                        backend=self.name,
                    )
                await migrate(conn, self.options.schema, where=self.options.shown)
                ahead = await conn.fetchrow(queries.XIDS_AHEAD, self.namespace)
            if ahead is not None:
                raise BackendError(
                    f"postgresql {self.options.shown}: namespace {self.namespace!r} holds "
                    f"versions written by transaction {ahead[0]}, but this cluster's next "
                    f"transaction id is {ahead[1]}: its data was restored from another "
                    "cluster's dump, and watch, changed() and snapshot restores compare "
                    "transaction ids. Move this cluster's ids past the restored ones before "
                    "opening it (docs/operations.md, 'Restoring a dump into another cluster')",
                    backend=self.name,
                )

    # -- every driver call runs in the guard -------------------------------------------

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        with self.guard.calls():
            async with Lease(self._pool) as conn:
                return list(await conn.fetch(query, *args))

    async def _fetchval(self, query: str, *args: Any) -> Any:
        with self.guard.calls():
            async with Lease(self._pool) as conn:
                return await conn.fetchval(query, *args)

    async def _fetch_history(self, query: str, *args: Any) -> list[Any]:
        """History, scan and as-of reads: from a standby under ``?read=standby``."""
        if self._standby is None:
            return await self._fetch(query, *args)
        with self.guard.calls():
            return await self._standby.fetch(query, *args)

    def _wrote(self) -> None:
        # Called whether the write succeeded or not: a lost answer may hide a commit.
        if self._standby is not None:
            self._standby.wrote()

    # -- the contract --------------------------------------------------------------------

    async def _wake_up(self) -> None:
        await self._fetchval(queries.WAKE_UP, self._wake_payload)

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        if not writes:
            return []
        keys = [w.key for w in writes]
        if len(writes) > 1 and len(set(keys)) != len(keys):
            raise ValidationError("a key appears twice in one append", reason="duplicate")
        ticket, notify = self.wakeups.begin()
        try:
            # The function stamps the server's clock, raised past each key's previous `at`.
            (versions, stamped), *_ = await self._fetch(
                queries.APPEND,
                self.namespace,
                keys,
                [w.kind for w in writes],
                [w.data_json() for w in writes],
                [w.meta_json() for w in writes],
                [_ANY if w.expect is ANY else w.expect for w in writes],
                [g.key for g in guards],
                [g.version for g in guards],
                notify,
            )
        finally:
            self._wrote()
        self.wakeups.committed(ticket, notify)
        return appended(writes, versions, stamped)

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        rows = await self._fetch_history(
            queries.READ_NEWEST_FIRST if newest_first else queries.READ_OLDEST_FIRST,
            self.namespace,
            key,
            after,
            _NO_UPPER_BOUND if before is None else before,
            limit,
        )
        return [to_record(*row) for row in rows]

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        if not keys:
            return {}
        rows = await self._fetch(queries.LATEST, self.namespace, list(keys))
        return {row[0]: to_record(*row) for row in rows}

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        if not keys:
            return {}
        rows = await self._fetch_history(queries.AS_OF, self.namespace, list(keys), at)
        return {row[0]: to_record(*row) for row in rows}

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        high = prefix_end(prefix)
        cursor, first = prefix, True
        # Keyset pages: no transaction or cursor stays open while the caller works.
        while True:
            args: list[Any] = [self.namespace, cursor]
            if high is not None:
                args.append(high)
            if kind is not None:
                args.append(kind)
            query = queries.scan_query(first, high is not None, kind is not None)
            rows = await self._fetch_history(query, *args)
            for row in rows:
                yield to_record(*row)
            if len(rows) < queries.SCAN_PAGE:
                return
            cursor, first = rows[-1][0], False

    async def prune(self, key: str, before_version: int) -> int:
        try:
            return int(await self._fetchval(queries.PRUNE, self.namespace, key, before_version))
        finally:
            self._wrote()

    async def position(self) -> str:
        return str(await self._fetchval(queries.POSITION))

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        # Versions committed after `since` come from transactions at or above its horizon.
        horizon = counted_position(since, backend=self.name)
        rows = await self._fetch(
            queries.CHANGED_KEYS, self.namespace, horizon, prefix, prefix_end(prefix)
        )
        return [row[0] for row in rows]

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        self.guard.check_open()
        watch = PostgresWatch(self._pool, self.guard, self.namespace, prefix)
        await watch.subscribe()
        self._watches.add(watch)
        watch.on_close(self._watches.discard)
        return watch

    async def health(self) -> Health:
        started = time.perf_counter()
        row = await self._fetch(queries.HEALTH, self.namespace)
        latency = (time.perf_counter() - started) * 1000
        version, sync, fsync, timeout, database, schema, schema_version, last_xid = row[0]
        warnings = []
        if sync in ("off", "local"):
            warnings.append(
                f"synchronous_commit={sync}: the last commits before a server crash can be lost"
            )
        if fsync == "off":
            warnings.append("fsync=off: a server crash can corrupt the database")
        detail: dict[str, Any] = {
            "server_version": version,
            "synchronous_commit": sync,
            "fsync": fsync,
            "statement_timeout": timeout,
            "database": database,
            "schema": schema,
            "schema_version": schema_version,
            "namespace": self.namespace,
            "last_commit_xid": last_xid or 0,
            "wakeups": {"carried": self.wakeups.carried, "alone": self.wakeups.alone},
            "pool": self._pool.stats(),
            "read": self.options.read,
            "watchers": len(self._watches),
        }
        if self._standby is not None:
            detail["standby_reads"] = self._standby.stats()
        if warnings:
            detail["warnings"] = warnings
        return Health(True, latency, detail)

    async def aclose(self) -> None:
        if self.guard.closed:
            return
        await self.wakeups.flush()  # watchers elsewhere hear of the last commits
        if not self.guard.close():
            return
        await self._watches.close_all()
        await self._pool.close()  # a caller's pool (from_pool) stays open
        if self._standby is not None:
            await self._standby.standby.close()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "url": self.options.shown,
            "namespace": self.namespace,
            "schema": self.options.schema,
            "schema_version": SCHEMA_VERSION,
        }

    # -- beyond the contract -------------------------------------------------------------

    async def drop_namespace(self, *, forget: bool = False) -> int:
        """Delete every key and version of this backend's namespace, and nothing else.

        Other namespaces in the same database are untouched: one bot's flush never
        wipes another's state. Returns how many keys were dropped.

        It takes the namespace's advisory lock exclusively, which every append holds
        shared until it commits: it waits for the appends under way, the ones that
        come later wait for it, and every key goes whole (head and versions).
        Watchers keep their place: feed positions are transaction ids, which never
        start again.

        :param forget: also delete the namespace's commit counter row left by
            schema versions 1-2, if any.
        """
        try:
            with self.guard.calls():
                async with Lease(self._pool) as conn, conn.transaction():
                    await conn.execute(queries.DROP_LOCK, self.namespace)
                    dropped = await conn.fetchval(queries.DROP, self.namespace)
                    if forget:
                        await conn.execute(queries.DROP_COUNTER, self.namespace)
        finally:
            self._wrote()
        return int(dropped)
