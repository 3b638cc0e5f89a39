"""One thread that runs blocking calls in order, off the event loop.

Backends over blocking I/O (sqlite3, files) give each connection or folder its
own :class:`Worker`: leaner than ``loop.run_in_executor`` (one queue hand-off in,
one ``call_soon_threadsafe`` out, no chained futures), and calls run in the
order they were made, as a connection needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Worker"]

T = TypeVar("T")


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
