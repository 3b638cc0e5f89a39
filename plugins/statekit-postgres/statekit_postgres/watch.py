"""Following a namespace's commits: LISTEN/NOTIFY to wake up, feed positions to read.

Wake-ups carry only ``{"ns"}``; the records are read from ``statekit_versions`` by
their feed position ``(xid, commit_seq, pos)``, only below the horizon of the
reading statement's snapshot (the oldest transaction it saw running in this
database), which no transaction still running can precede
(:mod:`statekit_postgres.schema`, :data:`statekit_postgres.queries.CHANGES`).
So a watcher that loses its connection reconnects, LISTENs again and reads on
from the last record it delivered: nothing is lost, nothing comes twice. It
starts from the snapshot taken when it subscribed: it delivers exactly the
commits that snapshot could not see.

When rows wait above the horizon (a transaction older than theirs is still
running), the watcher looks again soon, without a wake-up (``HELD_BACK_SECONDS``).

The buffering, the waiting and the back-off while the server is away are
:class:`statekit.kit.CommitFollower`'s; this module adds the LISTEN connection
and the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from statekit.backend import Record
from statekit.codec import prefix_end
from statekit.errors import BackendUnavailable
from statekit.kit import CommitFollower, DriverGuard
from statekit_postgres import queries
from statekit_postgres.pool import Connections
from statekit_postgres.records import to_record
from statekit_postgres.schema import CHANNEL
from statekit_postgres.translate import DRIVER_ERRORS

__all__ = ["PostgresWatch"]

_LAST_SEQ = 2**62  # a cursor (xid, _LAST_SEQ, _LAST_POS): "all of transaction xid was seen"
_LAST_POS = 2**31 - 1
POLL_SECONDS = 5.0
"""Without a notification, look anyway this often: a connection that died silently
(no FIN from a vanished host) is found out by the query failing."""
HELD_BACK_SECONDS = (0.002, 0.1)
"""While committed rows wait above the horizon, look again after the first figure,
doubling up to the second: the transaction holding them back sends no wake-up when it
is not statekit's."""

Cursor = tuple[int, int, int]


class PostgresWatch(CommitFollower[Cursor]):
    """An async iterator of the commits to keys under a prefix, in commit order.

    Made by :meth:`PostgresBackend.watch`, which fixes the starting point
    (:meth:`subscribe`) before returning it. Close it with :meth:`aclose`; the backend's
    ``aclose`` closes the watchers still open. ``reconnects`` counts the reads that
    found the server away and the connections opened again after a loss.

    :param pool: where the watcher's own LISTEN connection comes from (``dedicated``).
    :param guard: the backend's DriverGuard: driver errors and its closed state.
    :param namespace: whose commits to follow.
    :param prefix: only keys starting with this.
    """

    def __init__(self, pool: Connections, guard: DriverGuard, namespace: str, prefix: str) -> None:
        super().__init__(
            backend=guard.backend,
            where=guard.shown,
            read=self._read,
            cursor=(0, _LAST_SEQ, _LAST_POS),
            interval=POLL_SECONDS,
            wait=self._notified,
        )
        self._pool = pool
        self._guard = guard
        self._namespace = namespace
        high = prefix_end(prefix)
        self._query = queries.CHANGES if high is None else queries.CHANGES_BOUNDED
        self._bounds: tuple[str, ...] = (prefix,) if high is None else (prefix, high)
        self._conn: Any = None
        self._lost = False
        self._wakeup = asyncio.Event()
        self._start = "1:1:"  # the snapshot subscribe took (this one sees nothing)
        self._held_back: float | None = None  # the next short wait while rows are held

    @property
    def server_pid(self) -> int | None:
        """The server process of the watcher's connection (for pg_stat_activity), if any."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else int(conn.get_server_pid())

    # -- connection --------------------------------------------------------------------

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            mine = json.loads(payload).get("ns") == self._namespace
        except (ValueError, AttributeError):
            mine = True  # not statekit's payload: looking costs one query, missing costs more
        if mine:
            self._wakeup.set()

    def _on_terminated(self, conn: Any) -> None:
        # Only the current connection has this callback (it is removed on release).
        self._lost = True
        self._wakeup.set()

    async def _listen(self) -> None:
        """Open a connection LISTENing on the channel; driver errors translated."""
        with self._guard.calls():  # BackendError once the backend is closed
            conn = await self._pool.dedicated()
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
                conn.add_termination_listener(self._on_terminated)
            except BaseException:
                await self._pool.release_dedicated(conn)
                raise
        self._conn, self._lost = conn, False

    async def subscribe(self) -> None:
        """LISTEN, then take a snapshot: the starting point.

        LISTEN comes first, so a commit the snapshot cannot see always wakes this
        watcher. Rows below the snapshot's xmin are all visible to it: the cursor
        starts there, and the snapshot filters the rows above it.
        """
        try:
            await self._listen()
            with self._guard.calls():
                snapshot = str(await self._conn.fetchval(queries.FEED_START))
        except BaseException:
            await self._drop_connection()
            raise
        self._start = snapshot
        self.cursor = (int(snapshot.split(":", 1)[0]) - 1, _LAST_SEQ, _LAST_POS)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.remove_termination_listener(self._on_terminated)
        if not conn.is_closed():
            # UNLISTEN: a connection going back to a caller's pool must not keep it.
            with contextlib.suppress(*DRIVER_ERRORS):
                await asyncio.wait_for(conn.remove_listener(CHANNEL, self._on_notify), 5)
        await self._pool.release_dedicated(conn)

    # -- reading -----------------------------------------------------------------------

    async def _read(self, cursor: Cursor) -> tuple[list[Record], Cursor]:
        """The next commits after ``cursor``; a lost connection is opened again first
        (BackendUnavailable while the server is away: the follower backs off)."""
        if self._conn is None or self._lost:
            await self._drop_connection()
            await self._listen()
            self.reconnects += 1
        self._wakeup.clear()  # before reading: a commit during the read wakes us again
        try:
            rows = await self._conn.fetch(
                self._query, self._namespace, *cursor, self._start, *self._bounds
            )
        except DRIVER_ERRORS as exc:
            error = self._guard.translate(exc)
            if self._closed:
                return [], cursor
            if not isinstance(error, BackendUnavailable):
                raise error from exc
            self._lost = True  # the next read reconnects, at once (see _notified)
            return [], cursor
        changes = [row for row in rows if row[2] is not None]
        # Decode the page whole before moving the cursor, so a bad row can never
        # cause a record to be delivered twice.
        records = [to_record(*row[5:]) for row in changes]
        held = bool(rows and rows[0][1]) and len(changes) < queries.WATCH_PAGE
        if not held:
            self._held_back = None
        elif changes or self._held_back is None:
            self._held_back = HELD_BACK_SECONDS[0]  # the feed moves: look again soon
        if changes:
            return records, (changes[-1][2], changes[-1][3], changes[-1][4])
        return records, cursor

    async def _notified(self, seconds: float) -> None:
        """Wait for a notification, a lost connection or ``seconds`` (see POLL_SECONDS),
        or a short while when rows are held back (see HELD_BACK_SECONDS)."""
        if self._lost:
            return
        held = self._held_back
        if held is not None:
            seconds = min(seconds, held)
            self._held_back = min(held * 2, HELD_BACK_SECONDS[1])
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the wake-up is set (gh-86296): a closing watch would poll on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    async def close(self, *, by_backend: bool = False) -> None:
        """:meth:`aclose`; ``by_backend`` makes a later ``__anext__`` raise BackendError."""
        if self._closed:
            return
        await super().close(by_backend=by_backend)  # the backend forgets it (on_close)
        self._wakeup.set()
        await self._drop_connection()
