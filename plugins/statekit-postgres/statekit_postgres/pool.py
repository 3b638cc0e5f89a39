"""Where PostgresBackend gets its connections: its own small pool, or the caller's.

Why its own pool rather than ``asyncpg.Pool``: asyncpg's pool returns every
connection through ``asyncio.shield`` (a new task) and re-arms an idle timer on
each release. On the 2-core machines this project runs on that costs ~70 µs per
call, more than everything statekit itself does around a ``put``
(docs/backends/postgresql.md, Benchmark). :class:`ConnectionPool` hands out
idle connections without a task or a timer: acquiring a warm connection does
not even yield to the event loop.

A backend built on a caller's ``asyncpg.Pool`` (:meth:`PostgresBackend.from_pool`)
uses it through :class:`AsyncpgPool`, with the same interface.

Every new connection is made by ``asyncpg.connect`` with the URL's hosts, so a
multi-host URL (``postgresql://h1,h2/db?target_session_attrs=read-write``) follows a
failover by itself: once the connections to the old primary are found lost (and the
idle ones dropped with them), the next one goes to whichever host is writable now.
:class:`StandbyReads` sends some reads to a standby (``?read=standby``).
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

from asyncpg import exceptions as pg  # type: ignore[import-untyped]

__all__ = [
    "MAX_IDLE_SECONDS",
    "AsyncpgPool",
    "ConnectionPool",
    "Connections",
    "Lease",
    "StandbyReads",
    "lost_connection",
]

MAX_IDLE_SECONDS = 300.0
"""A connection idle longer is closed rather than reused: firewalls and servers
(idle_session_timeout) drop idle connections without telling anyone."""


class Connections(Protocol):
    """What the backend needs from a pool."""

    async def acquire(self) -> Any: ...

    async def release(self, conn: Any, error: BaseException | None) -> None: ...

    async def dedicated(self) -> Any: ...

    async def release_dedicated(self, conn: Any) -> None: ...

    def stats(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


class Lease:
    """``async with Lease(pool) as conn``: a connection for one call, returned after it
    together with whatever the call raised (the pool decides what to keep)."""

    __slots__ = ("_pool", "conn")

    def __init__(self, pool: Connections) -> None:
        self._pool = pool
        self.conn: Any = None

    async def __aenter__(self) -> Any:
        self.conn = await self._pool.acquire()
        return self.conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pool.release(self.conn, exc)


# shutdown, crash, starting up; read-only (a demoted primary: the next connection
# may find the new one)
_GONE_STATES = frozenset({"57P01", "57P02", "57P03", "25006"})


def lost_connection(error: BaseException) -> bool:
    """True when ``error`` says the connection (and likely its idle siblings) is gone."""
    if isinstance(error, pg.PostgresError):
        state = error.sqlstate or ""
        return state.startswith("08") or state in _GONE_STATES
    return isinstance(error, OSError | pg.InterfaceError | pg.InternalClientError)


def _discard(conn: Any) -> None:
    conn.terminate()  # no goodbye: the connection is broken, busy or unwanted


class ConnectionPool:
    """Up to ``max_size`` asyncpg connections, made by ``connect``, reused LIFO.

    :param connect: opens one connection (``asyncpg.connect`` with the URL's settings).
    :param min_size: connections opened by :meth:`start` and kept when idle.
    :param max_size: connections open at most; further callers wait their turn.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], *, min_size: int, max_size: int
    ) -> None:
        self._connect = connect
        self.min_size, self.max_size = min_size, max_size
        self._idle: list[tuple[Any, float]] = []  # (connection, released at), newest last
        self._size = 0  # open or opening, idle or in use; dedicated ones not counted
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def start(self) -> None:
        """Open ``min_size`` connections (at least one, so a bad URL fails now)."""
        opened = [await self.acquire() for _ in range(max(1, self.min_size))]
        for conn in opened:
            await self.release(conn, None)

    async def acquire(self) -> Any:
        """An idle connection, a new one while below ``max_size``, else the next released."""
        while True:
            if self._closed:
                raise pg.InterfaceError("the pool is closed")
            idle = self._idle
            while idle:
                conn, since = idle.pop()
                if not conn.is_closed() and time.monotonic() - since < MAX_IDLE_SECONDS:
                    return conn
                self._size -= 1
                _discard(conn)
            if self._size < self.max_size:
                self._size += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._size -= 1
                    self._wake_one()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken but leave: pass the turn on
                elif waiter in self._waiters:  # _wake_one may have dropped it already
                    self._waiters.remove(waiter)
                raise

    async def release(self, conn: Any, error: BaseException | None) -> None:
        """Put ``conn`` back after a call that raised ``error`` (None: it succeeded).

        After a server error (a failed ``expect``, say) the connection is healthy
        and is kept. After anything else (cancellation, a timeout) it may still be
        busy, so it is dropped. When it was lost, so are the idle ones: they went
        through the same restart or network failure, and the next call should get
        a fresh connection rather than fail on a stale one.
        """
        reusable = error is None or (
            isinstance(error, pg.PostgresError) and not lost_connection(error)
        )
        if self._closed or not reusable or conn.is_closed() or conn.is_in_transaction():
            self._size -= 1
            _discard(conn)
            if error is not None and lost_connection(error):
                self._expire_idle()
        else:
            self._idle.append((conn, time.monotonic()))
            if len(self._idle) > self.min_size and not self._waiters:
                self._trim()
        self._wake_one()

    def _expire_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._size -= 1
            _discard(conn)

    def _trim(self) -> None:
        # Drop connections idle too long, oldest first, keeping min_size.
        now = time.monotonic()
        while len(self._idle) > self.min_size and now - self._idle[0][1] >= MAX_IDLE_SECONDS:
            conn, _ = self._idle.pop(0)
            self._size -= 1
            _discard(conn)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def dedicated(self) -> Any:
        """A connection of its own (a watcher's), outside the pool's count."""
        return await self._connect()

    async def release_dedicated(self, conn: Any) -> None:
        try:
            await asyncio.wait_for(conn.close(), timeout=5)
        except (pg.PostgresError, pg.InterfaceError, OSError, TimeoutError):
            _discard(conn)

    def stats(self) -> dict[str, int]:
        return {
            "min": self.min_size,
            "max": self.max_size,
            "size": self._size,
            "idle": len(self._idle),
        }

    async def close(self) -> None:
        """Close idle connections politely; ones in use are dropped when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._size -= 1
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (pg.PostgresError, pg.InterfaceError, OSError, TimeoutError):
                _discard(conn)  # the server is gone: nothing was left to say to it
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # they find the pool closed


class AsyncpgPool:
    """A caller's ``asyncpg.Pool`` behind :class:`Connections`; never closed here."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def acquire(self) -> Any:
        return await self.pool.acquire()

    async def release(self, conn: Any, error: BaseException | None) -> None:
        await self.pool.release(conn)  # asyncpg resets, or drops a broken connection

    async def dedicated(self) -> Any:
        return await self.pool.acquire()  # held for the watcher's lifetime

    async def release_dedicated(self, conn: Any) -> None:
        try:
            await self.pool.release(conn, timeout=5)
        except (pg.PostgresError, pg.InterfaceError, OSError, TimeoutError):
            conn.terminate()

    def stats(self) -> dict[str, int]:
        pool = self.pool
        return {
            "min": pool.get_min_size(),
            "max": pool.get_max_size(),
            "size": pool.get_size(),
            "idle": pool.get_idle_size(),
        }

    async def close(self) -> None:
        """Nothing: the pool belongs to the caller."""


_PRIMARY_LSN = (
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END)::text"
)
_REPLAYED = "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= $1::text::pg_lsn"
_REPLICA_CONFLICT = "40001"  # a standby cancelled the read to replay (a recovery conflict)


def _standby_failed(error: BaseException) -> bool:
    """True when a standby read failed for a reason the primary does not share."""
    if isinstance(error, pg.PostgresError) and error.sqlstate == _REPLICA_CONFLICT:
        return True
    return lost_connection(error) or isinstance(error, TimeoutError)


class StandbyReads:
    """Reads sent to a standby (``?read=standby``) that still see this backend's writes.

    Read-your-writes: the backend counts the writes it sent (:meth:`wrote`, called
    whether they succeeded or not: a write whose answer was lost may have
    committed). A standby connection is known to have replayed some count of them.
    When a read comes after writes its connection has not been seen to replay,
    it asks the primary for its WAL position (once per new writes, not once per
    read) and polls the standby's ``pg_last_wal_replay_lsn()`` until it passes that
    position, for at most ``wait`` seconds; if it does not, or the standby cannot
    be reached or cancels the read (a recovery conflict), the read goes to the
    primary. Replay only moves forward, so a connection that has caught up stays
    caught up for every write counted before. A standby pool connected to a
    primary (``prefer-standby`` found no standby) passes every check at once.

    Writes this backend did not send (another process's) are seen as soon as the
    standby replays them: a standby read is as fresh as the standby, and
    ``synchronous_commit=remote_apply`` on the primary makes every standby read
    current (plugins/statekit-postgres/README.md).

    :param primary: the backend's pool (read-write).
    :param standby: the pool of standby reads (``target_session_attrs=prefer-standby``).
    :param wait: seconds a read waits for replay before it reads from the primary.
    """

    def __init__(self, primary: Connections, standby: Connections, *, wait: float) -> None:
        self.primary, self.standby, self.wait = primary, standby, wait
        self.written = 0
        self._lsn: tuple[int, str] = (0, "0/0")  # (writes it covers, the primary's position)
        self._replayed: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.counts = {"standby": 0, "waited": 0, "primary": 0}
        """Reads served by a standby, of which waited for replay; reads sent to the primary."""

    def wrote(self) -> None:
        """A write was sent: later reads must see it."""
        self.written += 1

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """The rows of ``query``, from a standby that has replayed this backend's writes,
        else from the primary."""
        written = self.written
        lsn = await self._target(written) if written else "0/0"
        try:
            async with Lease(self.standby) as conn:
                seen = self._replayed.get(conn, 0)
                if seen >= written or await self._catch_up(conn, lsn):
                    self._replayed[conn] = max(seen, written)
                    rows = list(await conn.fetch(query, *args))
                    self.counts["standby"] += 1
                    return rows
        except (pg.PostgresError, pg.InterfaceError, pg.InternalClientError, OSError) as exc:
            if not _standby_failed(exc):  # TimeoutError is an OSError
                raise
        self.counts["primary"] += 1
        async with Lease(self.primary) as conn:
            return list(await conn.fetch(query, *args))

    async def _target(self, written: int) -> str:
        # The primary's position now covers every write counted so far.
        covered, lsn = self._lsn
        if covered < written:
            async with Lease(self.primary) as conn:
                lsn = str(await conn.fetchval(_PRIMARY_LSN))
            if self._lsn[0] < written:
                self._lsn = (written, lsn)
        return lsn

    async def _catch_up(self, conn: Any, lsn: str) -> bool:
        if await conn.fetchval(_REPLAYED, lsn):
            return True
        self.counts["waited"] += 1
        deadline = time.monotonic() + self.wait
        pause = 0.001
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.02)
            if await conn.fetchval(_REPLAYED, lsn):
                return True
        return False

    def stats(self) -> dict[str, int]:
        return {**self.counts, "pool_size": self.standby.stats()["size"]}
