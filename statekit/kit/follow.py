"""Following a store's commits by polling a commit sequence: the one watch follower.

A backend whose commits carry a number that rises in commit order (an
auto-increment row id written under the write lock, a per-namespace counter, a
journal offset, a stream id) gets ``watch`` from two functions:

``position() -> cursor``
    Where the commit sequence stands now. :meth:`CommitFollower.start` awaits it
    before returning, so **the starting point is fixed when ``watch()`` returns**:
    every commit after that is delivered, none before.
``read(cursor) -> (records, next_cursor)``
    The commits after ``cursor`` under the watcher's prefix, in commit order, one
    page of them, decoded whole before it returns (so a bad row cannot make a
    record come twice), and the cursor just past what it returned (or past the
    commits it looked at and filtered out).

The follower delivers each record once, in order. When a read returns nothing and
the cursor did not move, it waits ``interval`` seconds (or the backend's own
``wait``, e.g. a notification). **Restarts:** when a read raises
:class:`~statekit.errors.BackendUnavailable` (the server went away), the follower
keeps its cursor, logs a warning, waits with a doubling, jittered back-off, and
reads again from the same cursor once the server is back: nothing is lost, nothing
comes twice (``reconnects`` counts these). Any other error is raised to the
consumer. ``retry=False`` raises BackendUnavailable too (for embedded stores
where it means a held lock, not an absent server).

Closing: ``aclose()`` ends the iteration (StopAsyncIteration); the backend closes
its followers with ``close(by_backend=True)`` (see :class:`Watchers`), after which
``__anext__`` raises BackendError.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, Self, TypeVar

from statekit.backend import Record
from statekit.errors import BackendError, BackendUnavailable

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "Closable", "CommitFollower", "Watchers"]

C = TypeVar("C")

BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
"""Seconds between reads while the server is away: doubling from the first to the max."""

log = logging.getLogger("statekit.watch")

Read = Callable[[C], Awaitable[tuple[Sequence[Record], C]]]


class CommitFollower(Generic[C]):
    """An async iterator of the commits after a starting point, in commit order.

    Build it with :meth:`start`. See the module docstring for the protocol.

    :param backend: the backend's name (errors, logs).
    :param where: the store, redacted (errors, logs).
    :param read: the next page of commits after a cursor (module docstring).
    :param cursor: where to start.
    :param interval: seconds to wait when nothing new came.
    :param wait: the wait itself (default ``asyncio.sleep``); a backend with
        notifications returns early on one.
    :param retry: keep polling through BackendUnavailable (see the module docstring).
    """

    def __init__(
        self,
        *,
        backend: str,
        where: str,
        read: Read[C],
        cursor: C,
        interval: float,
        wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
        retry: bool = True,
    ) -> None:
        self.backend = backend
        self.where = where
        self.cursor = cursor
        """Just past the last commit read (records read but not yet delivered are buffered)."""
        self.reconnects = 0
        """How many reads failed because the server was away, and polling went on."""
        self._read = read
        self._interval = interval
        self._wait = wait
        self._retry = retry
        self._ready: collections.deque[Record] = collections.deque()
        self._closed = False
        self._closed_by_backend = False
        self._on_close: Callable[[Closable], None] | None = None

    @classmethod
    async def start(
        cls,
        position: Callable[[], Awaitable[C]],
        read: Read[C],
        *,
        backend: str,
        where: str,
        interval: float,
        wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
        retry: bool = True,
        watchers: Watchers | None = None,
    ) -> CommitFollower[C]:
        """Read the starting point with ``position()``, then return the follower.

        :param watchers: the backend's set of open followers, closed by its ``aclose``.
        The other parameters are the constructor's.
        """
        follower = cls(
            backend=backend,
            where=where,
            read=read,
            cursor=await position(),
            interval=interval,
            wait=wait,
            retry=retry,
        )
        if watchers is not None:
            watchers.add(follower)
            follower.on_close(watchers.discard)
        return follower

    def on_close(self, callback: Callable[[Closable], None]) -> None:
        """Call ``callback(self)`` once the follower is closed (its backend forgets it)."""
        self._on_close = callback

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Record:
        delay = BACKOFF_FIRST
        while not self._ready:
            if self._closed:
                if self._closed_by_backend:
                    raise BackendError(
                        f"{self.backend} {self.where}: the backend was closed",
                        backend=self.backend,
                    )
                raise StopAsyncIteration
            try:
                records, cursor = await self._read(self.cursor)
            except BackendUnavailable as exc:
                if self._closed:
                    continue
                if not self._retry:
                    raise
                log.warning(
                    "%s watch on %s: reading again in %.2fs: %s",
                    self.backend,
                    self.where,
                    delay,
                    exc,
                )
                self.reconnects += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            if self._closed:
                continue
            moved = cursor != self.cursor
            self._ready.extend(records)
            self.cursor = cursor
            if not records and not moved:
                await self._wait(self._interval)
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Stop following. Calling it twice is harmless."""
        await self.close()

    async def close(self, *, by_backend: bool = False) -> None:
        """:meth:`aclose`; ``by_backend`` makes a later ``__anext__`` raise BackendError."""
        if self._closed:
            return
        self._closed = True
        self._closed_by_backend = by_backend
        self._ready.clear()
        if self._on_close is not None:
            self._on_close(self)


class Closable(Protocol):
    """A watcher a backend closes on ``aclose`` (a CommitFollower, or a backend's own)."""

    async def close(self, *, by_backend: bool = False) -> None: ...


class Watchers:
    """A backend's open watchers, so its ``aclose`` can close them (weakly held: a
    watcher the caller dropped is forgotten; one closed by its caller leaves)."""

    def __init__(self) -> None:
        self._open: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, watcher: Closable) -> None:
        self._open.add(watcher)

    def discard(self, watcher: Closable) -> None:
        self._open.discard(watcher)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Closable]:
        return iter(list(self._open))

    async def close_all(self) -> None:
        """Close every open watcher; their next ``__anext__`` raises BackendError."""
        for watcher in list(self._open):
            await watcher.close(by_backend=True)
