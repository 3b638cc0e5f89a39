"""Write-behind mirrors: every committed version copied to other backends, off the write path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from statekit.backend import Backend, Record
from statekit.errors import StatekitError

__all__ = ["Mirror", "MirrorStats"]

log = logging.getLogger("statekit.tiered")


@dataclass
class MirrorStats:
    """What ``health()`` reports per mirror."""

    copied: int = 0
    dropped: int = 0
    retries: int = 0
    last_error: str | None = None


class Mirror:
    """Copies committed records to ``backend`` through a bounded queue.

    :meth:`offer` never waits and never fails: when the queue is full the records
    are dropped and counted (the primary write must not slow down because a
    mirror did). A background task sends them in batches with
    ``backend.replicate``, retrying with capped exponential backoff while the
    mirror fails; ``replicate`` is idempotent, so a retried batch is harmless.

    :param backend: the mirror (it must implement ``replicate``).
    :param max_queue: records waiting at most; more are dropped.
    :param batch: records per ``replicate`` call at most.
    """

    def __init__(self, backend: Backend, *, max_queue: int = 10_000, batch: int = 500) -> None:
        self.backend = backend
        self.stats = MirrorStats()
        self._batch = batch
        self._queue: asyncio.Queue[tuple[float, Record]] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"statekit-mirror-{self.backend.name}"
            )

    def offer(self, records: Sequence[Record]) -> None:
        """Queue ``records`` for copying; drop (and count) what does not fit."""
        now = time.monotonic()
        for record in records:
            try:
                self._queue.put_nowait((now, record))
            except asyncio.QueueFull:
                self.stats.dropped += 1

    def lag(self) -> float:
        """Seconds the oldest waiting record has waited (0 when none waits)."""
        try:
            queued: float = self._queue._queue[0][0]  # type: ignore[attr-defined]
        except IndexError:
            return 0.0
        return max(0.0, time.monotonic() - queued)

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.backend.name,
            "queued": self._queue.qsize(),
            "lag_s": round(self.lag(), 3),
            "copied": self.stats.copied,
            "dropped": self.stats.dropped,
            "retries": self.stats.retries,
            "last_error": self.stats.last_error,
        }

    async def drain(self) -> None:
        """Wait until every queued record was copied (bound it with ``asyncio.timeout``)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = [record for _, record in batch]
            delay = 0.05
            while True:
                try:
                    await self.backend.replicate(records)
                    break
                except StatekitError as exc:
                    self.stats.retries += 1
                    self.stats.last_error = str(exc)
                    log.warning("mirror %s failed, retrying: %s", self.backend.name, exc)
                    await asyncio.sleep(random.uniform(delay / 2, delay))
                    delay = min(delay * 2, 5.0)
            self.stats.copied += len(records)
            for _ in batch:
                self._queue.task_done()

    async def aclose(self) -> None:
        """Copy what is queued (for up to 5 s), stop, close the mirror backend."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.drain()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.backend.aclose()
