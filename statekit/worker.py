"""One thread that runs blocking calls in order, off the event loop.

Backends over blocking I/O (sqlite3, files) give each connection or folder its
own :class:`Worker`: leaner than ``loop.run_in_executor`` (one queue hand-off in,
one ``call_soon_threadsafe`` out, no chained futures), and calls run in the
order they were made, as a connection needs. :class:`Gathered` hands the worker
the calls that arrived while it was busy as one group (a group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Gathered", "Outcome", "Worker"]

T = TypeVar("T")
A = TypeVar("A")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; nobody wants the outcome
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class Worker:
    """Runs jobs one after the other on a private thread.

    A job whose caller is cancelled still runs to its end: a commit is never
    abandoned half way (it commits or rolls back).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        # daemon: a program that never closes its store must still be able to exit
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, future, loop = job
            result, error = None, None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, not swallowed
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(_settle, future, result, error)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the future settles with its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, args, future, loop))
        return future

    def stop(self) -> None:
        """Let the thread finish the queued jobs and end."""
        self._jobs.put(None)


Outcome = tuple[Any, BaseException | None]
"""What one item of a group came to: ``(result, None)`` or ``(None, error)``."""


class Gathered(Generic[A]):
    """Calls that arrive while the worker runs a group are run as the next group.

    ``run(items)`` runs on the worker with every item submitted since the previous
    group was handed over, and returns one :data:`Outcome` per item, in order. A
    group starts one loop turn after the previous one settled, so that the callers
    it woke can submit their next item into it (a commit per group, not per item).

    Like a :class:`Worker` job, an item whose caller was cancelled still runs.

    :param worker: the thread the groups run on (other jobs keep their turn on it).
    :param run: the group function, called on the worker thread.
    """

    def __init__(self, worker: Worker, run: Callable[[list[A]], list[Outcome]]) -> None:
        self._worker = worker
        self._run = run
        self._queued: list[tuple[A, asyncio.Future[Any]]] = []
        self._active = False  # a group is running or about to start
        self._idle: asyncio.Event | None = None
        self._closed: Callable[[], BaseException] | None = None

    def submit(self, item: A) -> asyncio.Future[Any]:
        """Queue ``item`` for the next group; the future settles with its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed is not None:
            future.set_exception(self._closed())
            return future
        self._queued.append((item, future))
        if not self._active:
            self._active = True
            loop.call_soon(self._start)
        return future

    def _start(self) -> None:
        group, self._queued = self._queued, []
        if not group:
            self._finish()
            return
        job = self._worker.submit(self._run, [item for item, _ in group])
        job.add_done_callback(lambda done: self._settled(group, done))

    def _settled(
        self, group: list[tuple[A, asyncio.Future[Any]]], job: asyncio.Future[Any]
    ) -> None:
        error = job.exception()
        outcomes: list[Outcome] = (
            [(None, error)] * len(group) if error is not None else job.result()
        )
        for (_, future), (result, failure) in zip(group, outcomes, strict=True):
            _settle(future, result, failure)
        # One turn later: the callers just woken submit into the next group first.
        asyncio.get_running_loop().call_soon(self._start)

    def _finish(self) -> None:
        self._active = False
        if self._idle is not None:
            self._idle.set()

    async def close(self, error: Callable[[], BaseException]) -> None:
        """Refuse new items with ``error()``; wait until the queued ones have run."""
        self._closed = error
        while self._active:
            self._idle = asyncio.Event()
            await self._idle.wait()
