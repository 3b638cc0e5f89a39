"""Waking a namespace's watchers after commits, with as few NOTIFYs as will do.

A NOTIFY takes a cluster-wide lock from its transaction's commit until the commit is
flushed, so one per append would queue every writer of the server behind each other
(and a NOTIFY in a transaction of its own costs a commit). So an append carries a
NOTIFY (``statekit_append``'s ``p_notify``) only when none was started in the last
``interval``; the commits in between are "quiet". Each quiet commit is covered by the
first NOTIFY started after it returned: a later carrying append, or, when none comes
within ``interval`` (the end of a burst), a wake-up sent on its own. So a busy writer
sends about one NOTIFY per ``interval`` whatever its commit rate, and every commit is
followed by one within about ``interval`` plus a round trip.

A wake-up carries only the namespace: watchers read the feed by position
(:mod:`statekit_postgres.watch`), so a lost or late wake-up delays a watcher, never
skips a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from statekit.errors import StatekitError

__all__ = ["INTERVAL", "Wakeups"]

INTERVAL = 0.002
"""Seconds between two NOTIFYs of one backend while it keeps committing."""

FLUSH_SECONDS = 5.0
"""The longest :meth:`Wakeups.flush` waits for the last wake-up to be sent."""

log = logging.getLogger("statekit.postgres")


class Wakeups:
    """Decides which appends carry a NOTIFY, and sends the trailing ones.

    :param send: sends one wake-up on its own (a NOTIFY on a pooled connection).
    :param interval: the least time between two NOTIFYs started.
    """

    def __init__(self, send: Callable[[], Awaitable[None]], interval: float = INTERVAL) -> None:
        self._send = send
        self.interval = interval
        """The least time between two NOTIFYs started (0: every append carries one)."""
        self._ticket = 0  # appends started so far
        self._last = float("-inf")  # when the last NOTIFY was started (time.monotonic)
        self._need: int | None = None  # a quiet commit returned when _ticket was this
        self._task: asyncio.Task[None] | None = None
        self.carried = 0
        """Appends that carried a NOTIFY."""
        self.alone = 0
        """Wake-ups sent on their own (after the last commit of a burst)."""

    def begin(self) -> tuple[int, bool]:
        """An append starts: its ticket, and whether it carries a NOTIFY."""
        self._ticket += 1
        now = time.monotonic()
        carry = now - self._last >= self.interval
        if carry:
            self._last = now
        return self._ticket, carry

    def committed(self, ticket: int, carried: bool) -> None:
        """The append of ``ticket`` committed (``carried``: with its NOTIFY)."""
        if carried:
            self.carried += 1
            if self._need is not None and ticket > self._need:
                self._need = None  # it started after every quiet commit so far returned
            return
        self._need = self._ticket
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._trail())

    async def _trail(self) -> None:
        """Send a wake-up on its own when quiet commits wait and no NOTIFY is started."""
        try:
            while self._need is not None:
                await asyncio.sleep(self.interval)
                if self._need is None or time.monotonic() - self._last < self.interval:
                    continue
                started, self._last = self._ticket, time.monotonic()
                try:
                    await self._send()
                    self.alone += 1
                except StatekitError as exc:
                    # The commits stand and watchers poll anyway: no retrying (the server
                    # may be away, and aclose waits for this task).
                    log.warning("postgresql: could not wake watchers: %s", exc)
                    self._need = None
                if self._need is not None and self._need <= started:
                    self._need = None
        finally:
            # No await between the last look at _need and this: a quiet commit noted
            # after it starts a new task.
            self._task = None

    async def flush(self) -> None:
        """Wait until every commit noted has had its wake-up (before closing the pool)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), FLUSH_SECONDS)
