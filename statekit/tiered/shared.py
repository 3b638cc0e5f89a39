"""The shared second level of the tiered store's read cache (e.g. Redis).

Several processes over one primary share one :class:`SharedCache`: a head one of
them read or wrote is served to the others without a trip to the primary.
Plugins add implementations through ``statekit_register_caches``; the core never
imports their drivers.

:class:`SharedLevel` is how the tiered store uses one: every failure is counted
and logged once per outage, never raised, so a cache outage never becomes a
store outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from statekit.backend import JSON, Health, Record

__all__ = ["SharedCache", "SharedCacheStats", "SharedLevel"]

log = logging.getLogger("statekit.tiered")

T = TypeVar("T")


class SharedCache(ABC):
    """Head records by key, shared by every process that opens the same URL and namespace.

    A subclass serves one or more URL schemes (``registry.add("redis", RedisCache)``).
    Its methods raise only :class:`statekit.errors.StatekitError` subclasses; the
    tiered store counts and swallows them.

    Entries are *version-monotone*: :meth:`put_many` never replaces a cached head
    with an older version, whichever process sends it and in whatever order, so
    concurrent readers and writers cannot move an entry back in time. ``None``
    (the key has no head) counts as version 0: it never replaces a record.
    """

    name: ClassVar[str]
    """Short name for errors and ``statekit doctor`` (``redis``)."""

    @classmethod
    @abstractmethod
    async def open(cls, url: str, *, namespace: str, ttl: float) -> Self:
        """A cache on the server at ``url``, ready to use.

        Raise :class:`~statekit.errors.ConfigError` for a bad URL. Do not fail because
        the server is unreachable (connect lazily): a cache that is down must not stop
        a store from opening.

        :param namespace: keeps this store's entries apart from other stores' on the
            same server (a URL option of the cache may override it).
        :param ttl: seconds an entry lives after it was last put.
        """

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> dict[str, Record | None]:
        """The cached entries of ``keys`` that exist: a Record, or None for a cached absence."""

    @abstractmethod
    async def put_many(self, heads: Mapping[str, Record | None]) -> None:
        """Cache each head (None: the key has no head) for ``ttl`` seconds, never
        replacing a newer cached version; the same version refreshes the ttl."""

    @abstractmethod
    async def invalidate(self, keys: Sequence[str]) -> None:
        """Forget ``keys``: their next read goes to the primary."""

    @abstractmethod
    async def health(self) -> Health:
        """One timed round trip to the cache server."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections. Calling it twice is harmless."""

    def describe(self) -> dict[str, JSON]:
        """Facts for ``statekit doctor``; never include secrets."""
        return {"cache": self.name}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass
class SharedCacheStats:
    """What ``health()`` reports about the shared level."""

    hits: int = 0
    """Keys found (cached absences included)."""
    misses: int = 0
    """Keys asked for and not found, or not asked because the cache was failing."""
    puts: int = 0
    """Heads sent to the cache."""
    invalidations: int = 0
    """Keys evicted."""
    errors: int = 0
    """Calls that failed or timed out (the caller went on without the cache)."""
    skipped: int = 0
    """Calls not made because the cache was failing and its retry time had not come."""
    last_error: str | None = None

    def as_dict(self) -> dict[str, JSON]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "puts": self.puts,
            "invalidations": self.invalidations,
            "errors": self.errors,
            "skipped": self.skipped,
            "last_error": self.last_error,
        }


class SharedLevel:
    """A :class:`SharedCache` as the tiered store uses it: counted, bounded, never failing.

    Each call is bounded by ``timeout``. A failure is counted and logged (once per
    outage); the call then answers as if the cache were empty. After a failure the
    cache is left alone for ``retry_after`` seconds (doubling up to ``max_retry_after``
    while it keeps failing), so a dead server costs reads nothing but a clock check.

    :param cache: the shared cache (closed by :meth:`aclose`).
    :param timeout: seconds one call may take.
    :param retry_after: seconds the cache is left alone after a first failure.
    :param max_retry_after: the most it is left alone while it keeps failing.
    """

    def __init__(
        self,
        cache: SharedCache,
        *,
        timeout: float = 2.0,
        retry_after: float = 0.5,
        max_retry_after: float = 30.0,
    ) -> None:
        self.cache = cache
        self.stats = SharedCacheStats()
        self.timeout = timeout
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self._wait = retry_after
        self._skip_until = 0.0
        self._failing = False

    @property
    def failing(self) -> bool:
        """The last call failed (and none has succeeded since)."""
        return self._failing

    async def _call(self, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        if self._failing and time.monotonic() < self._skip_until:
            self.stats.skipped += 1
            return False, None
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
        # Any failure, a plugin's bug included: the level is optional by design, and a
        # read or write of the store must not fail because of it. Counted and logged.
        except Exception as exc:
            self._failed(exc)
            return False, None
        if self._failing:
            log.warning("shared cache %s answers again", self.cache.name)
            self._failing = False
            self._wait = self.retry_after
        return True, result

    def _failed(self, exc: Exception) -> None:
        text = f"timed out after {self.timeout} s" if isinstance(exc, TimeoutError) else str(exc)
        self.stats.errors += 1
        self.stats.last_error = text or type(exc).__name__
        if not self._failing:
            log.warning(
                "shared cache %s failed; reads and writes go to the primary until it "
                "answers again: %s",
                self.cache.name,
                self.stats.last_error,
            )
            self._wait = self.retry_after
        else:
            self._wait = min(self._wait * 2, self.max_retry_after)
        self._failing = True
        self._skip_until = time.monotonic() + self._wait

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record | None]:
        """The cached entries of ``keys`` (empty when the cache failed)."""
        ok, found = await self._call(lambda: self.cache.get_many(keys))
        found = found if ok and found is not None else {}
        self.stats.hits += len(found)
        self.stats.misses += len(keys) - len(found)
        return found

    async def put_many(self, heads: Mapping[str, Record | None]) -> None:
        """Cache ``heads`` (version-monotone); a failure is only counted."""
        if heads:
            ok, _ = await self._call(lambda: self.cache.put_many(heads))
            self.stats.puts += len(heads) if ok else 0

    async def invalidate(self, keys: Sequence[str]) -> None:
        """Evict ``keys``; a failure is only counted (the entries then end with their ttl)."""
        if keys:
            ok, _ = await self._call(lambda: self.cache.invalidate(keys))
            self.stats.invalidations += len(keys) if ok else 0

    async def describe(self) -> dict[str, Any]:
        """Counters, the cache's facts and one timed round trip, for ``health()``."""
        detail: dict[str, Any] = {**self.cache.describe(), **self.stats.as_dict()}
        try:
            async with asyncio.timeout(self.timeout):
                health = await self.cache.health()
        except Exception as exc:  # reported, as above
            detail.update(ok=False, error=str(exc) or type(exc).__name__)
        else:
            detail.update(ok=health.ok, latency_ms=round(health.latency_ms, 3))
        detail["failing"] = self._failing
        return detail

    async def aclose(self) -> None:
        try:
            await self.cache.aclose()
        except Exception as exc:  # closing is best effort
            log.debug("shared cache %s: error while closing: %s", self.cache.name, exc)
