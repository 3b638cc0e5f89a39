"""An optional base for SQL backends over DB-API-like async drivers.

A SQL backend subclasses :class:`SqlBackend`, gives its :class:`SqlDialect` (table
definitions, placeholder, server clock) and two driver hooks (``connection()``
and ``close_driver()``), and gets the whole contract: append with a per-key
version check in one transaction, read/latest/scan/as_of/prune, replicate, watch
through :class:`~statekit.kit.follow.CommitFollower`, health, namespaces and
``drop_namespace``. ``statekit_mysql`` is a complete example in about 100 lines.

**Tables** (one set per database or schema, shared by namespaces)::

    statekit_commits  (ns PK, seq)                     the namespace's commit counter
    statekit_heads    (ns, sk_key PK, version, kind, live, at)
    statekit_versions (ns, sk_key, version PK, kind, data, meta, at, seq, pos)
                      + index (ns, seq, pos) for watch, (ns, sk_key, at) for as_of

``at`` is microseconds since the epoch (BIGINT: exact, no time-zone rules).
:func:`tables` writes the ``CREATE TABLE`` statements from a dialect's column types.

**How an append stays correct.** Every write transaction (append, replicate,
drop) first increments the namespace's counter row, which locks it until commit:
writers of a namespace commit one after the other, so each commit's number is
handed out in commit order and a head read inside the transaction is current. The
heads are then read (``FOR UPDATE`` where the dialect has it), every ``expect`` is
checked with :func:`~statekit.backend.check_expect`, ``at`` is taken from the
server's clock raised past each key's previous ``at``
(:func:`~statekit.backend.next_at`), and the versions and heads are written: all
or nothing. A failed append rolls its counter increment back, so commit numbers
have no holes a watcher could wait on.

**Watch** reads the counter (the starting point), then pages versions by (seq,
pos) up to the counter it read, under the prefix (module :mod:`statekit.kit.follow`).
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from statekit.backend import (
    JSON,
    Backend,
    Capability,
    Guard,
    Health,
    Record,
    Write,
    check_expect,
    check_guard,
    next_at,
)
from statekit.codec import prefix_end
from statekit.kit.follow import CommitFollower, Watchers
from statekit.kit.guard import DriverGuard
from statekit.kit.records import appended, from_micros, record, stored, to_micros

__all__ = ["DbapiConnection", "SqlBackend", "SqlConnection", "SqlDialect", "tables"]

PAGE = 500
"""Rows per scan or watch page, keys per latest() query."""
_LAST_POS = 2**31 - 1  # a cursor (seq, _LAST_POS) means "all of commit seq was read"
_COLUMNS = "v.sk_key, v.version, v.kind, v.data, v.meta, v.at"
_HEADS_JOIN = (
    "statekit_heads AS h JOIN statekit_versions AS v "
    "ON v.ns = h.ns AND v.sk_key = h.sk_key AND v.version = h.version"
)


class SqlConnection(Protocol):
    """The three calls :class:`SqlBackend` makes on a connection (``?`` placeholders are
    already the dialect's). Transactions are plain ``BEGIN``/``COMMIT``/``ROLLBACK``
    statements, so the connection runs in autocommit mode otherwise."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row of arguments."""
        ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query; all its rows."""
        ...


class DbapiConnection:
    """:class:`SqlConnection` over a DB-API-style async connection, whose ``cursor()`` is
    an async context manager with ``execute``, ``executemany``, ``fetchall`` and
    ``rowcount`` (aiomysql, asyncmy, aiopg)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self.raw.cursor() as cursor:
            await cursor.execute(sql, tuple(args))
            return int(cursor.rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.raw.cursor() as cursor:
            await cursor.executemany(sql, [tuple(row) for row in rows])

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.raw.cursor() as cursor:
            await cursor.execute(sql, tuple(args))
            return list(await cursor.fetchall())


def tables(
    *, ns: str, key: str, kind: str, text: str, suffix: str = "", inline_indexes: bool = False
) -> tuple[str, ...]:
    """The ``CREATE TABLE``/``CREATE INDEX ... IF NOT EXISTS`` statements of
    :class:`SqlBackend`'s tables, for :attr:`SqlDialect.tables`.

    :param ns: the namespace column's type (up to 64 ASCII characters).
    :param key: the key column's type: up to 512 characters, compared **byte for byte**
        (MySQL: ``VARBINARY(2048)``; its text collations fold case and trailing spaces).
    :param kind: the kind column's type (up to 64 characters, compared byte for byte).
    :param text: the type of the data and meta columns (JSON text of any length).
    :param suffix: appended to each ``CREATE TABLE`` (``ENGINE=InnoDB``).
    :param inline_indexes: declare the indexes inside ``CREATE TABLE`` (MySQL has no
        ``CREATE INDEX IF NOT EXISTS``) instead of as statements of their own.
    """
    indexes = (
        ("statekit_versions_seq", "ns, seq, pos"),
        ("statekit_versions_at", "ns, sk_key, at"),
    )
    inline = "".join(f", INDEX {name} ({cols})" for name, cols in indexes)
    return (
        f"CREATE TABLE IF NOT EXISTS statekit_commits (ns {ns} NOT NULL PRIMARY KEY, "
        f"seq BIGINT NOT NULL){suffix}",
        f"CREATE TABLE IF NOT EXISTS statekit_heads (ns {ns} NOT NULL, sk_key {key} NOT NULL, "
        f"version BIGINT NOT NULL, kind {kind} NOT NULL, live SMALLINT NOT NULL, "
        f"at BIGINT NOT NULL, PRIMARY KEY (ns, sk_key)){suffix}",
        f"CREATE TABLE IF NOT EXISTS statekit_versions (ns {ns} NOT NULL, "
        f"sk_key {key} NOT NULL, version BIGINT NOT NULL, kind {kind} NOT NULL, data {text}, "
        f"meta {text} NOT NULL, at BIGINT NOT NULL, seq BIGINT NOT NULL, pos INTEGER NOT NULL, "
        f"PRIMARY KEY (ns, sk_key, version){inline if inline_indexes else ''}){suffix}",
        *(
            ()
            if inline_indexes
            else tuple(
                f"CREATE INDEX IF NOT EXISTS {name} ON statekit_versions ({cols})"
                for name, cols in indexes
            )
        ),
    )


@dataclass(frozen=True, slots=True)
class SqlDialect:
    """What differs between SQL databases, for :class:`SqlBackend`.

    :param tables: statements creating the tables and indexes if missing (:func:`tables`).
    :param seed: a statement inserting ``(ns, 0)`` into statekit_commits unless present
        (``INSERT IGNORE``, ``ON CONFLICT DO NOTHING``...).
    :param param: the driver's placeholder (``%s``, ``?``); the base writes ``?``.
    :param clock: an SQL expression of the server's clock in microseconds since the
        epoch, UTC; None to use this host's clock.
    :param lock: appended to the head read of a write transaction (``FOR UPDATE``).
    :param begin: the statement starting a transaction.
    :param version: a query whose one value is the server's version (health).
    """

    tables: Sequence[str]
    seed: str
    param: str = "%s"
    clock: str | None = None
    lock: str = " FOR UPDATE"
    begin: str = "BEGIN"
    version: str = "SELECT VERSION()"

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` placeholders in the driver's style."""
        return text if self.param == "?" else text.replace("?", self.param)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class SqlBackend(Backend):
    """The contract over SQL tables (module docstring). A subclass sets ``name``,
    ``dialect``, implements :meth:`open`, :meth:`connection` and :meth:`close_driver`.

    :param guard: translates the driver's errors (:class:`~statekit.kit.guard.DriverGuard`).
    :param namespace: whose keys these are (checked by the caller, e.g.
        :meth:`~statekit.kit.url.StoreUrl.namespace`).
    :param poll_interval: seconds between a watcher's looks when nothing is new.
    """

    dialect: ClassVar[SqlDialect]
    capabilities = frozenset(
        {
            Capability.ATOMIC_BATCH,
            Capability.COMPARE_AND_SET,
            Capability.WATCH,
            Capability.HISTORY,
            Capability.DURABLE,
            Capability.GUARDED_APPEND,
        }
    )

    def __init__(self, *, guard: DriverGuard, namespace: str, poll_interval: float = 0.05) -> None:
        self.guard = guard
        self.namespace = namespace
        self.poll_interval = poll_interval
        self._watchers = Watchers()

    # -- what a subclass provides ---------------------------------------------------------

    @abstractmethod
    def connection(self) -> AbstractAsyncContextManager[SqlConnection]:
        """A connection for one call (from a pool), given back on exit."""

    @abstractmethod
    async def close_driver(self) -> None:
        """Release the pool or client, if this backend owns it."""

    # -- plumbing -------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return self.dialect.sql(text)

    async def prepare(self) -> None:
        """Create the tables if missing and the namespace's counter; call it in ``open``.
        On failure the backend is closed before the error is raised."""
        try:
            with self.guard.calls():
                async with self.connection() as conn:
                    for statement in self.dialect.tables:
                        await conn.execute(statement)
                    await conn.execute(self._sql(self.dialect.seed), (self.namespace,))
        except BaseException:
            await self.aclose()
            raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[tuple[SqlConnection, int, int]]:
        """A write transaction holding the namespace's counter: ``(conn, seq, clock µs)``."""
        clock = f", {self.dialect.clock}" if self.dialect.clock else ""
        async with self.connection() as conn:
            await conn.execute(self.dialect.begin)
            try:
                ns = (self.namespace,)
                if not await conn.execute(
                    self._sql("UPDATE statekit_commits SET seq = seq + 1 WHERE ns = ?"), ns
                ):
                    await conn.execute(
                        self._sql("INSERT INTO statekit_commits (ns, seq) VALUES (?, 1)"), ns
                    )
                row = (
                    await conn.fetch(
                        self._sql(f"SELECT seq{clock} FROM statekit_commits WHERE ns = ?"), ns
                    )
                )[0]
                now = int(row[1]) if clock else time.time_ns() // 1000
                yield conn, int(row[0]), now
            except BaseException:
                with contextlib.suppress(*self.guard.errors):
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def _heads(
        self, conn: SqlConnection, keys: Sequence[str]
    ) -> dict[str, tuple[int, bool, int]]:
        """``key -> (version, live, at µs)`` of the keys' heads, locked."""
        rows = await conn.fetch(
            self._sql(
                "SELECT sk_key, version, live, at FROM statekit_heads "
                f"WHERE ns = ? AND sk_key IN ({_marks(len(keys))}){self.dialect.lock}"
            ),
            (self.namespace, *keys),
        )
        return {_text(k): (int(v), bool(live), int(at)) for k, v, live, at in rows}

    async def _write(
        self,
        conn: SqlConnection,
        rows: Sequence[tuple[str, int, str, str | None, str, int]],
        seq: int,
        heads: dict[str, tuple[int, bool, int]],
    ) -> None:
        """Insert version rows (key, version, kind, data, meta, at) as commit ``seq`` and
        move the heads they pass (``heads``: the keys' heads before them)."""
        ns = self.namespace
        await conn.executemany(
            self._sql(
                "INSERT INTO statekit_versions (ns, sk_key, version, kind, data, meta, at, "
                "seq, pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            [(ns, *row, seq, pos) for pos, row in enumerate(rows)],
        )
        new, moved = [], []
        for key, version, kind, data, _, at in rows:
            head = heads.get(key)
            if head is None:
                new.append((ns, key, version, kind, data is not None, at))
            elif version > head[0]:
                moved.append((version, kind, data is not None, at, ns, key))
            else:
                continue
            heads[key] = (version, data is not None, at)
        if new:
            await conn.executemany(
                self._sql(
                    "INSERT INTO statekit_heads (ns, sk_key, version, kind, live, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)"
                ),
                new,
            )
        if moved:
            await conn.executemany(
                self._sql(
                    "UPDATE statekit_heads SET version = ?, kind = ?, live = ?, at = ? "
                    "WHERE ns = ? AND sk_key = ?"
                ),
                moved,
            )

    def _record(self, row: Sequence[Any]) -> Record:
        key, version, kind, data, meta, at = row
        return record(key, version, kind, data, meta, int(at), backend=self.name)

    # -- the contract -------------------------------------------------------------------

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        if not writes:
            return []
        with self.guard.calls():
            async with self._transaction() as (conn, seq, clock):
                if guards:  # read locked, like the heads: checked with the writes
                    guarded = await self._heads(conn, [g.key for g in guards])
                    for g in guards:
                        version, live, _ = guarded.get(g.key, (0, False, 0))
                        check_guard(g, version, not live, backend=self.name)
                heads = await self._heads(conn, [w.key for w in writes])
                versions = []
                for w in writes:
                    version, live, _ = heads.get(w.key, (0, False, 0))
                    check_expect(w, version, not live, backend=self.name)
                    versions.append(version + 1)
                stamp = next_at(from_micros(clock), [from_micros(h[2]) for h in heads.values()])
                micros = to_micros(stamp)
                rows = [
                    (w.key, v, w.kind, w.data_json(), w.meta_json(), micros)
                    for w, v in zip(writes, versions, strict=True)
                ]
                await self._write(conn, rows, seq, heads)
        return appended(writes, versions, stamp)

    async def replicate(self, records: Sequence[Record]) -> None:
        if not records:
            return
        with self.guard.calls():
            async with self._transaction() as (conn, seq, _):
                keys = sorted({r.key for r in records})
                heads = await self._heads(conn, keys)
                rows: list[tuple[str, int, str, str | None, str, int]] = []
                for r in records:
                    present = await conn.fetch(
                        self._sql(
                            "SELECT 1 FROM statekit_versions "
                            "WHERE ns = ? AND sk_key = ? AND version = ?"
                        ),
                        (self.namespace, r.key, r.version),
                    )
                    if not present and all(row[:2] != (r.key, r.version) for row in rows):
                        rows.append(stored(r))
                if rows:
                    await self._write(conn, rows, seq, heads)

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        order = "DESC" if newest_first else "ASC"
        query = (
            f"SELECT {_COLUMNS} FROM statekit_versions AS v WHERE v.ns = ? AND v.sk_key = ? "
            f"AND v.version > ? AND v.version < ? ORDER BY v.version {order} LIMIT ?"
        )
        args = (self.namespace, key, after, 2**63 - 1 if before is None else before)
        with self.guard.calls():
            async with self.connection() as conn:
                rows = await conn.fetch(
                    self._sql(query), (*args, 2**63 - 1 if limit is None else limit)
                )
        return [self._record(row) for row in rows]

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        with self.guard.calls():
            async with self.connection() as conn:
                for start in range(0, len(keys), PAGE):
                    chunk = keys[start : start + PAGE]
                    rows = await conn.fetch(
                        self._sql(
                            f"SELECT {_COLUMNS} FROM {_HEADS_JOIN} "
                            f"WHERE h.ns = ? AND h.sk_key IN ({_marks(len(chunk))})"
                        ),
                        (self.namespace, *chunk),
                    )
                    found.update((rec.key, rec) for rec in map(self._record, rows))
        return found

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        """One index lookup per key on (ns, sk_key, at): ``at`` rises with the version."""
        query = self._sql(
            f"SELECT {_COLUMNS} FROM statekit_versions AS v WHERE v.ns = ? AND v.sk_key = ? "
            "AND v.at <= ? ORDER BY v.at DESC LIMIT 1"
        )
        found: dict[str, Record] = {}
        with self.guard.calls():
            async with self.connection() as conn:
                for key in keys:
                    rows = await conn.fetch(query, (self.namespace, key, to_micros(at)))
                    if rows:
                        found[key] = self._record(rows[0])
        return found

    async def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        high = prefix_end(prefix)
        cursor, first = prefix, True
        while True:  # keyset pages: nothing stays open while the caller works
            where = ["h.ns = ?", "h.live = 1", f"h.sk_key {'>=' if first else '>'} ?"]
            args: list[Any] = [self.namespace, cursor]
            if high is not None:
                where.append("h.sk_key < ?")
                args.append(high)
            if kind is not None:
                where.append("h.kind = ?")
                args.append(kind)
            query = (
                f"SELECT {_COLUMNS} FROM {_HEADS_JOIN} WHERE {' AND '.join(where)} "
                f"ORDER BY h.sk_key LIMIT {PAGE}"
            )
            with self.guard.calls():
                async with self.connection() as conn:
                    page = [self._record(row) for row in await conn.fetch(self._sql(query), args)]
            for rec in page:
                yield rec
            if len(page) < PAGE:
                return
            cursor, first = page[-1].key, False

    async def prune(self, key: str, before_version: int) -> int:
        with self.guard.calls():
            async with self.connection() as conn:
                return await conn.execute(
                    self._sql(
                        "DELETE FROM statekit_versions WHERE ns = ? AND sk_key = ? "
                        "AND version < ? AND version < (SELECT version FROM statekit_heads "
                        "WHERE ns = ? AND sk_key = ?)"
                    ),
                    (self.namespace, key, before_version, self.namespace, key),
                )

    # -- watch ----------------------------------------------------------------------------

    async def _top(self, conn: SqlConnection) -> int:
        rows = await conn.fetch(
            self._sql("SELECT seq FROM statekit_commits WHERE ns = ?"), (self.namespace,)
        )
        return int(rows[0][0]) if rows else 0

    async def _position(self) -> tuple[int, int]:
        with self.guard.calls():
            async with self.connection() as conn:
                return await self._top(conn), _LAST_POS

    async def _changes(
        self, cursor: tuple[int, int], prefix: str
    ) -> tuple[list[Record], tuple[int, int]]:
        """The commits after ``cursor`` up to the counter read first: every commit up to
        it has committed (writers take numbers in commit order), so none is skipped."""
        seq, pos = cursor
        high = prefix_end(prefix)
        bound = " AND v.sk_key < ?" if high is not None else ""
        with self.guard.calls():
            async with self.connection() as conn:
                top = await self._top(conn)
                if top <= seq and pos == _LAST_POS:
                    return [], cursor
                rows = await conn.fetch(
                    self._sql(
                        f"SELECT v.seq, v.pos, {_COLUMNS} FROM statekit_versions AS v "
                        "WHERE v.ns = ? AND v.seq >= ? AND (v.seq > ? OR v.pos > ?) "
                        f"AND v.seq <= ? AND v.sk_key >= ?{bound} "
                        f"ORDER BY v.seq, v.pos LIMIT {PAGE}"
                    ),
                    (
                        self.namespace,
                        seq,
                        seq,
                        pos,
                        top,
                        prefix,
                        *(() if high is None else (high,)),
                    ),
                )
        records = [self._record(row[2:]) for row in rows]
        if len(rows) == PAGE:
            return records, (int(rows[-1][0]), int(rows[-1][1]))
        return records, (top, _LAST_POS)

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        self.guard.check_open()

        async def read(cursor: tuple[int, int]) -> tuple[list[Record], tuple[int, int]]:
            return await self._changes(cursor, prefix)

        return await CommitFollower.start(
            self._position,
            read,
            backend=self.name,
            where=self.guard.shown,
            interval=self.poll_interval,
            watchers=self._watchers,
        )

    # -- the rest -------------------------------------------------------------------------

    async def health(self) -> Health:
        started = time.perf_counter()
        with self.guard.calls():
            async with self.connection() as conn:
                version = (await conn.fetch(self.dialect.version))[0][0]
                top = await self._top(conn)
        detail: dict[str, JSON] = {
            "server_version": _text(version),
            "namespace": self.namespace,
            "commit_seq": top,
            "watchers": len(self._watchers),
        }
        return Health(True, (time.perf_counter() - started) * 1000, detail)

    async def drop_namespace(self, *, forget: bool = False) -> int:
        """Delete every key and version of this namespace, and nothing else; returns how
        many keys were dropped. The commit counter stays unless ``forget``, so a watcher
        still following the namespace never sees its numbers start again."""
        with self.guard.calls():
            async with self._transaction() as (conn, _, _):
                ns = (self.namespace,)
                await conn.execute(self._sql("DELETE FROM statekit_versions WHERE ns = ?"), ns)
                dropped = await conn.execute(
                    self._sql("DELETE FROM statekit_heads WHERE ns = ?"), ns
                )
                if forget:
                    await conn.execute(self._sql("DELETE FROM statekit_commits WHERE ns = ?"), ns)
                return dropped

    async def aclose(self) -> None:
        if not self.guard.close():
            return
        await self._watchers.close_all()
        await self.close_driver()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.guard.shown, "namespace": self.namespace}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else value
