"""The sync portal: one event loop in one background thread, for sync callers.

statekit's core is async only (ARCHITECTURE §5). The legacy drop-in is sync, so
each manager owns one :class:`Portal`: a thread running an asyncio loop, onto
which :meth:`Portal.call` hands a coroutine function and whose result it waits
for. There is no second, sync implementation of anything: the portal is the
only bridge.

It works from plain sync code and from code that runs inside an event loop in
another thread (an ``async def main()`` that calls the sync API: that loop is
blocked for the duration of the call, as with any blocking call). Calling it
from its own thread would wait for itself forever, so that is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

from statekit.errors import StatekitError

__all__ = ["Portal"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


async def _awaited(fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
    return await fn(*args, **kwargs)


def _settle(future: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    """Copy a finished task's outcome into the future its caller waits on."""
    if task.cancelled():
        future.cancel()
    if not future.set_running_or_notify_cancel():
        return  # cancelled: by the task's end, or by its caller giving up
    if (error := task.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())


class Portal:
    """An event loop running in its own daemon thread; sync code calls coroutines on it.

    ``Portal()`` starts the thread; :meth:`close` (or leaving ``with Portal() as p``)
    cancels what still runs there and ends it. There is no shared, module-level
    portal: each owner makes and closes its own.

    :param name: the thread's name (shows in debuggers and thread dumps).
    """

    def __init__(self, name: str = "statekit-portal") -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Whatever still runs was called by someone who is told it was cancelled.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    @property
    def closed(self) -> bool:
        """:meth:`close` was called: :meth:`call` refuses new work."""
        return self._closed

    @property
    def in_portal_thread(self) -> bool:
        """The caller runs on the portal's own thread (inside a coroutine it runs)."""
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` on the portal's loop and return its result.

        Blocks the calling thread until it is done. An exception raised by ``fn``
        is raised here, unchanged. When the waiting caller is interrupted
        (KeyboardInterrupt), the coroutine is cancelled.

        :raises StatekitError: the portal is closed (or closes while ``fn`` runs),
            or the call comes from the portal's own thread (it would wait forever).
        """
        if self.in_portal_thread:
            raise StatekitError(
                "a sync statekit.compat call was made from inside the portal's own event "
                "loop, where it would wait for itself forever; await the async API instead"
            )

        # One hand-off each way (a task started by call_soon_threadsafe, its outcome
        # copied into a concurrent future): a legacy load that is a copy of the last
        # one is mostly this, so it does less than run_coroutine_threadsafe's chaining.
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        running: list[asyncio.Task[T]] = []

        def start() -> None:
            if future.cancelled():
                return  # the caller gave up before it started
            try:
                task = self._loop.create_task(_awaited(fn, *args, **kwargs))
            except BaseException as exc:  # fn is not a coroutine function, or the loop closed
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
                return
            running.append(task)
            task.add_done_callback(lambda done: _settle(future, done))

        # The try covers the hand-off too: an interrupt that lands before the caller
        # waits (the loop thread may run the call first) still cancels it.
        try:
            with self._lock:  # no new work is queued once close() has started
                if self._closed:
                    raise StatekitError(
                        "this statekit.compat portal is closed (shutdown() was called)"
                    )
                self._loop.call_soon_threadsafe(start)
            return future.result()
        except StatekitError:
            raise
        except concurrent.futures.CancelledError:
            raise StatekitError("the call was cancelled: the portal closed while it ran") from None
        except BaseException:
            # KeyboardInterrupt and the like: stop the work we no longer wait for.
            if future.cancel():
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    self._loop.call_soon_threadsafe(lambda: [t.cancel() for t in running])
            raise

    def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Start ``await fn(*args, **kwargs)`` on the portal's loop and return at once.

        For long-running work (the API server): the returned future holds the result;
        cancelling it cancels the work. :meth:`close` cancels what is still running.

        :raises StatekitError: the portal is closed.
        """

        async def invoke() -> T:
            return await fn(*args, **kwargs)

        with self._lock:
            if self._closed:
                raise StatekitError("this statekit.compat portal is closed (shutdown() was called)")
            return asyncio.run_coroutine_threadsafe(invoke(), self._loop)

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and end the thread. Idempotent.

        Called from a coroutine running on the portal itself, it only stops the
        loop (the thread cannot wait for itself to end).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_portal_thread:
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
