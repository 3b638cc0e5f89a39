"""Following a namespace's commits: LISTEN/NOTIFY to wake up, commit numbers to read.

Notifications carry only ``{"ns", "seq"}``; the records are read from
``statekit_versions`` by their commit number (``commit_seq``, then ``pos`` in the
batch), which ``statekit_append`` hands out in commit order. So a watcher that
loses its connection reconnects, LISTENs again and reads on from the last record
it delivered: nothing is lost, nothing comes twice.

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

_LAST_POS = 2**31 - 1  # a cursor (seq, _LAST_POS) means "all of commit seq was seen"
POLL_SECONDS = 5.0
"""Without a notification, look anyway this often: a connection that died silently
(no FIN from a vanished host) is found out by the query failing."""

Cursor = tuple[int, int]


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
            cursor=(0, _LAST_POS),
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
        """LISTEN, then read the namespace's commit number: the starting point.

        LISTEN comes first, so a commit after the number was read always
        notifies this watcher.
        """
        try:
            await self._listen()
            with self._guard.calls():
                seq = await self._conn.fetchval(queries.COMMIT_SEQ, self._namespace)
        except BaseException:
            await self._drop_connection()
            raise
        self.cursor = (seq or 0, _LAST_POS)

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
            rows = await self._conn.fetch(self._query, self._namespace, *cursor, *self._bounds)
        except DRIVER_ERRORS as exc:
            error = self._guard.translate(exc)
            if self._closed:
                return [], cursor
            if not isinstance(error, BackendUnavailable):
                raise error from exc
            self._lost = True  # the next read reconnects, at once (see _notified)
            return [], cursor
        changes = [row for row in rows if row[1] is not None]
        # Decode the page whole before moving the cursor, so a bad row can never
        # cause a record to be delivered twice.
        records = [to_record(*row[3:]) for row in changes]
        if len(changes) == queries.WATCH_PAGE:
            return records, (changes[-1][1], changes[-1][2])
        if rows:
            # Same snapshot as the rows: every commit up to the counter has been read.
            return records, (rows[0][0], _LAST_POS)
        return records, cursor

    async def _notified(self, seconds: float) -> None:
        """Wait for a notification, a lost connection or ``seconds`` (see POLL_SECONDS)."""
        if self._lost:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def close(self, *, by_backend: bool = False) -> None:
        """:meth:`aclose`; ``by_backend`` makes a later ``__anext__`` raise BackendError."""
        if self._closed:
            return
        await super().close(by_backend=by_backend)  # the backend forgets it (on_close)
        self._wakeup.set()
        await self._drop_connection()
