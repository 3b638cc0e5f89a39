"""Waking a namespace's watchers after commits, with as few NOTIFYs as will do.

A NOTIFY takes a cluster-wide lock from its commit until the commit is flushed, so
one per append would queue every writer of the server behind each other. Instead
``statekit_append`` notifies nobody, and the writing client calls
:meth:`Wakeups.committed` after each commit: when no wake-up is under way, one is
sent at once (an idle watcher hears of a commit one round trip after it); while one
is, the commits behind it share the next, sent at most once per ``interval``. So a
busy writer sends about ``1 / (interval + round trip)`` NOTIFYs a second, whatever
its commit rate, and the last commit of a burst is always followed by one.

A wake-up carries only the namespace: watchers read the feed by position
(:mod:`statekit_postgres.watch`), so a lost or late wake-up delays a watcher,
never skips a commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from statekit.errors import StatekitError

__all__ = ["INTERVAL", "Wakeups"]

INTERVAL = 0.002
"""Seconds between two wake-ups of one backend while it keeps committing."""

log = logging.getLogger("statekit.postgres")


class Wakeups:
    """Coalesces the wake-ups of one backend's commits (see the module docstring).

    :param send: sends one wake-up (a NOTIFY on a pooled connection).
    :param interval: the least time between two sends.
    """

    def __init__(self, send: Callable[[], Awaitable[None]], interval: float = INTERVAL) -> None:
        self._send = send
        self._interval = interval
        self._due = False
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        """How many wake-ups were sent (health, tests)."""

    def committed(self) -> None:
        """Note a commit: a wake-up follows it, now or within ``interval``."""
        self._due = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._due:
                self._due = False
                try:
                    await self._send()
                    self.sent += 1
                except StatekitError as exc:  # the commit stands; watchers poll anyway
                    log.warning("postgresql: could not wake watchers: %s", exc)
                await asyncio.sleep(self._interval)
        finally:
            # No await between the last check of _due and this: a commit noted
            # after it starts a new task.
            self._task = None

    async def flush(self) -> None:
        """Wait until every noted commit has had its wake-up (before closing the pool)."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)
