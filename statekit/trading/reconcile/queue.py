"""The engine's work queue and its global rate limit.

:class:`WorkQueue` follows client-go's workqueue: a key is queued at most once
however often it is added (deduplication); a key being worked on is never handed
to a second worker (added meanwhile, it is queued again when the first finishes);
:meth:`WorkQueue.retry` re-adds a key after its own exponential backoff with
jitter, and :meth:`WorkQueue.forget` resets that backoff once the key succeeds.
:class:`TokenBucket` caps the exchange calls of every worker together.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections import deque

__all__ = ["Backoff", "TokenBucket", "WorkQueue"]


class Backoff:
    """Per-key exponential backoff with jitter: ``uniform(0.5, 1) * min(cap, base * 2**n)``
    (at least half the computed delay, so a key never retries at once)."""

    def __init__(self, base: float = 0.05, cap: float = 30.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, not base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        self._failures: dict[str, int] = {}

    def next(self, key: str) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay: float = random.uniform(0.5, 1.0) * min(self.cap, self.base * 2.0**failures)
        return delay

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class WorkQueue:
    """Keys waiting to be reconciled; see the module docstring."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._added_at: dict[str, float] = {}
        self._seq = itertools.count()
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    def __len__(self) -> int:
        """Keys waiting (ready or delayed), not counting those being worked on."""
        return len(self._queued) + len({k for _, _, k in self._delayed} - self._queued)

    @property
    def busy(self) -> int:
        return len(self._processing)

    def add(self, key: str) -> None:
        """Queue ``key`` now, unless it is queued already."""
        if self._closed:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._added_at.setdefault(key, time.monotonic())
        self._ready.append(key)
        self._notify()

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (requeue-after, backoff)."""
        if delay <= 0:
            self.add(key)
            return
        heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), key))
        self._notify()

    def retry(self, key: str) -> float:
        """Queue ``key`` again after its backoff; returns the delay."""
        delay = self.backoff.next(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """``key`` succeeded: its next failure starts the backoff from the beginning."""
        self.backoff.forget(key)

    async def get(self) -> str | None:
        """The next ready key (marked as being worked on); None once closed."""
        while True:
            self._promote()
            if self._closed:
                return None
            if self._ready:
                key = self._ready.popleft()
                self._queued.discard(key)
                self._processing.add(key)
                return key
            await self._wait()

    def done(self, key: str) -> float:
        """The worker finished ``key``; returns how long it waited and ran since added."""
        self._processing.discard(key)
        started = self._added_at.pop(key, time.monotonic())
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
        self._notify()
        return time.monotonic() - started

    def idle(self) -> bool:
        """Nothing ready and nothing being worked on (delayed keys may still wait)."""
        self._promote()
        return not self._ready and not self._processing

    async def wait_idle(self) -> None:
        """Until nothing is ready and nothing is being worked on (or the queue closes)."""
        while not self._closed and not self.idle():
            await self._wait()

    async def _wait(self) -> None:
        # Each waiter registers its own future before it sleeps, right after the
        # caller's check (no await in between): no wake-up is lost. The timeout is a
        # timer on that future, not asyncio.wait_for, which can swallow a cancel that
        # races with the wake-up (Python 3.11) and leave a worker that never stops.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None
        if self._delayed:
            delay = max(0.0, self._delayed[0][0] - time.monotonic())
            timer = loop.call_later(delay, _wake, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def close(self) -> None:
        self._closed = True
        self._notify()

    def _promote(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self.add(key)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _wake(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, int(rate)))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited = 0.0

    async def acquire(self) -> None:
        # With nobody waiting, a token at hand is taken at once: no await between the
        # check and the take, so no other task can come between them.
        if not self._lock.locked() and self._take():
            return
        async with self._lock:
            while not self._take():
                pause = (1 - self._tokens) / self.rate
                self.waited += pause
                await asyncio.sleep(pause)

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
