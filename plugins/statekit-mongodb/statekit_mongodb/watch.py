"""Following a namespace's commits through a change stream on ``statekit_versions``.

Each version is one inserted document, so the stream's insert events are the
commits, in commit order (a transaction's inserts in their order). The stream's
resume token is kept after every event; when the connection is lost or the
server restarts, the stream is opened again with ``resume_after`` that token:
nothing is lost, nothing comes twice. Deletes (``prune``) are not commits and are
not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Self

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.collection import AsyncCollection

from statekit.backend import Record
from statekit.codec import prefix_end
from statekit.errors import BackendError, BackendUnavailable
from statekit.kit import DriverGuard
from statekit.kit.follow import BACKOFF_FIRST, BACKOFF_MAX, Closable
from statekit_mongodb.documents import to_record
from statekit_mongodb.translate import DRIVER_ERRORS

__all__ = ["MongoWatch"]

log = logging.getLogger("statekit.mongodb")

MAX_AWAIT_MS = 500
"""How long one getMore waits on the server for a new event."""


class MongoWatch:
    """An async iterator of the commits to keys under a prefix, in commit order.

    Made by :meth:`MongoBackend.watch`, which opens the change stream (the
    starting point) before returning it. Close it with :meth:`aclose`.

    :param versions: ``statekit_versions``.
    :param guard: the backend's DriverGuard: driver errors, named with its URL.
    :param namespace: whose commits to follow.
    :param prefix: only keys starting with this.
    """

    def __init__(
        self,
        versions: AsyncCollection[dict[str, Any]],
        guard: DriverGuard,
        namespace: str,
        prefix: str,
    ) -> None:
        self._versions = versions
        self._guard = guard
        self._where = guard.shown
        bounds: dict[str, str] = {"$gte": prefix}
        high = prefix_end(prefix)
        if high is not None:
            bounds["$lt"] = high
        self._pipeline: list[Mapping[str, Any]] = [
            {
                "$match": {
                    "operationType": "insert",
                    "fullDocument.ns": namespace,
                    "fullDocument.key": bounds,
                }
            }
        ]
        self._stream: AsyncChangeStream[dict[str, Any]] | None = None
        self._token: Mapping[str, Any] | None = None
        self._closed = False
        self._closed_by_backend = False
        self._on_close: Callable[[Closable], None] | None = None
        self.reconnects = 0
        """How many times the stream was lost and resumed."""

    def on_close(self, callback: Callable[[Closable], None]) -> None:
        """Call ``callback(self)`` once the watch is closed (its backend forgets it)."""
        self._on_close = callback

    async def _open(self) -> None:
        self._stream = await self._versions.watch(
            self._pipeline, resume_after=self._token, max_await_time_ms=MAX_AWAIT_MS
        )
        # Before any event, the token of the stream's starting point (postBatchResumeToken).
        self._token = self._stream.resume_token or self._token

    async def start(self) -> None:
        """Open the stream: every commit after this returns is delivered."""
        await self._open()

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await stream.close()

    async def _resume(self) -> None:
        """Open the stream again after the token, with backoff while the server is away."""
        await self._drop_stream()
        delay = BACKOFF_FIRST
        while not self._closed:
            try:
                await self._open()
            except DRIVER_ERRORS as exc:
                error = self._guard.translate(exc)
                if not isinstance(error, BackendUnavailable):
                    raise error from exc
                log.warning("mongodb watch on %s: resuming in %.2fs: %s", self._where, delay, error)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self.reconnects += 1
            return

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Record:
        while True:
            if self._closed:
                if self._closed_by_backend:
                    raise BackendError(
                        f"{self._guard.where}: the backend was closed", backend=self._guard.backend
                    )
                raise StopAsyncIteration
            if self._stream is None:
                await self._resume()
                continue
            try:
                change = await self._stream.try_next()
            except DRIVER_ERRORS as exc:
                if self._closed:
                    continue
                error = self._guard.translate(exc)
                if not isinstance(error, BackendUnavailable):
                    raise error from exc
                log.warning("mongodb watch on %s: stream lost: %s", self._where, error)
                await self._drop_stream()
                continue
            if change is None:
                # No event this round; the token still moves on (postBatchResumeToken).
                self._token = self._stream.resume_token or self._token
                continue
            record = to_record(change["fullDocument"])
            self._token = change["_id"]
            return record

    async def aclose(self) -> None:
        """Stop following and close the stream. Calling it twice is harmless."""
        await self.close()

    async def close(self, *, by_backend: bool = False) -> None:
        """:meth:`aclose`; ``by_backend`` makes a later ``__anext__`` raise BackendError."""
        if self._closed:
            return
        self._closed = True
        self._closed_by_backend = by_backend
        if self._on_close is not None:
            self._on_close(self)
        await self._drop_stream()
