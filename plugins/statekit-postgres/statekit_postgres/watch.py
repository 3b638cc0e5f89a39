"""Following a namespace's commits: LISTEN/NOTIFY to wake up, commit numbers to read.

Notifications carry only ``{"ns", "seq"}``; the records are read from
``statekit_versions`` by their commit number (``commit_seq``, then ``pos`` in the
batch), which ``statekit_append`` hands out in commit order. So a watcher that
loses its connection reconnects, LISTENs again and reads on from the last record
it delivered: nothing is lost, nothing comes twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
from typing import TYPE_CHECKING, Any, Self

from statekit.backend import Record
from statekit.codec import prefix_end
from statekit.errors import BackendError, BackendUnavailable
from statekit_postgres import queries
from statekit_postgres.records import to_record
from statekit_postgres.schema import CHANNEL
from statekit_postgres.translate import DRIVER_ERRORS

if TYPE_CHECKING:
    from statekit_postgres.backend import PostgresBackend

__all__ = ["PostgresWatch"]

log = logging.getLogger("statekit.postgres")

_LAST_POS = 2**31 - 1  # a cursor (seq, _LAST_POS) means "all of commit seq was seen"
POLL_SECONDS = 5.0
"""Without a notification, look anyway this often: a connection that died silently
(no FIN from a vanished host) is found out by the query failing."""
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0


class PostgresWatch:
    """An async iterator of the commits to keys under a prefix, in commit order.

    Made by :meth:`PostgresBackend.watch`, which fixes the starting point before
    returning it. Close it with :meth:`aclose`; the backend's ``aclose`` closes
    the watchers still open.
    """

    def __init__(self, backend: PostgresBackend, prefix: str) -> None:
        self._backend = backend
        self._namespace = backend.namespace
        self._where = backend.options.shown
        high = prefix_end(prefix)
        self._query = queries.CHANGES if high is None else queries.CHANGES_BOUNDED
        self._bounds: tuple[str, ...] = (prefix,) if high is None else (prefix, high)
        self._conn: Any = None
        self._lost = False
        self._wakeup = asyncio.Event()
        self._buffer: collections.deque[Record] = collections.deque()
        self._seq, self._pos = 0, _LAST_POS
        self._closed = False
        self._closed_by_backend = False
        self.reconnects = 0
        """How many times the connection was lost and opened again."""

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

    async def _listen(self) -> Any:
        """A connection LISTENing on the channel; driver errors translated."""
        conn = await self._backend._watch_connect()
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_terminated)
        except BaseException:
            await self._backend._watch_release(conn)
            raise
        return conn

    async def start(self) -> None:
        """LISTEN, then read the namespace's commit number: the starting point.

        LISTEN comes first, so a commit after the number was read always
        notifies this watcher.
        """
        try:
            self._conn = await self._listen()
            seq = await self._conn.fetchval(queries.COMMIT_SEQ, self._namespace)
        except DRIVER_ERRORS as exc:
            await self._drop_connection()
            raise self._backend._translate(exc) from exc
        except BaseException:
            await self._drop_connection()
            raise
        self._seq, self._pos = seq or 0, _LAST_POS

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.remove_termination_listener(self._on_terminated)
        if not conn.is_closed():
            # UNLISTEN: a connection going back to a caller's pool must not keep it.
            with contextlib.suppress(*DRIVER_ERRORS):
                await asyncio.wait_for(conn.remove_listener(CHANNEL, self._on_notify), 5)
        await self._backend._watch_release(conn)

    async def _reconnect(self) -> None:
        """Open a new connection, with backoff while the server is away."""
        await self._drop_connection()
        delay = BACKOFF_FIRST
        while not self._closed:
            try:
                self._conn = await self._listen()
            except DRIVER_ERRORS as exc:
                error = self._backend._translate(exc)
                if not isinstance(error, BackendUnavailable):
                    raise error from exc
                log.warning(
                    "postgresql watch on %s: reconnecting in %.2fs: %s", self._where, delay, error
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self._lost = False
            self.reconnects += 1
            return

    # -- reading -----------------------------------------------------------------------

    async def _poll(self) -> None:
        """Buffer the next commits, or wait for a notification (or the poll interval)."""
        if self._conn is None or self._lost:
            await self._reconnect()
            if self._closed:
                return
        self._wakeup.clear()  # before reading: a commit during the read wakes us again
        try:
            rows = await self._conn.fetch(
                self._query, self._namespace, self._seq, self._pos, *self._bounds
            )
        except DRIVER_ERRORS as exc:
            error = self._backend._translate(exc)
            if self._closed:
                return
            if not isinstance(error, BackendUnavailable):
                raise error from exc
            log.warning("postgresql watch on %s: connection lost: %s", self._where, error)
            self._lost = True
            return
        changes = [row for row in rows if row[1] is not None]
        # Decode the page whole before buffering it or moving the cursor, so a bad
        # row can never cause a record to be delivered twice.
        self._buffer.extend([to_record(*row[3:]) for row in changes])
        if len(changes) == queries.WATCH_PAGE:
            self._seq, self._pos = changes[-1][1], changes[-1][2]
        elif rows:
            # Same snapshot as the rows: every commit up to the counter has been read.
            self._seq, self._pos = rows[0][0], _LAST_POS
        if not changes:
            with contextlib.suppress(TimeoutError):  # look anyway: see POLL_SECONDS
                await asyncio.wait_for(self._wakeup.wait(), POLL_SECONDS)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Record:
        while not self._buffer:
            if self._closed:
                if self._closed_by_backend:
                    raise BackendError(
                        f"postgresql {self._where}: the backend was closed", backend="postgresql"
                    )
                raise StopAsyncIteration
            await self._poll()
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """Stop following and release the connection. Calling it twice is harmless."""
        await self.close()

    async def close(self, *, by_backend: bool = False) -> None:
        """:meth:`aclose`; ``by_backend`` makes a later ``__anext__`` raise BackendError."""
        if self._closed:
            return
        self._closed = True
        self._closed_by_backend = by_backend
        self._buffer.clear()
        self._wakeup.set()
        self._backend._forget_watch(self)
        await self._drop_connection()
