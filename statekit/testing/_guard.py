"""A transparent wrapper that fails the test if a backend lets a driver exception out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import datetime
from typing import Self, TypeVar

from statekit.backend import Backend, Guard, Health, Record, Write, guarded_append
from statekit.errors import StatekitError

T = TypeVar("T")


class LeakedDriverError(AssertionError):
    """A backend raised something that is not a StatekitError."""


def _check(exc: BaseException, method: str, backend: Backend) -> None:
    if isinstance(
        exc,
        StatekitError
        | asyncio.CancelledError
        | StopAsyncIteration
        | GeneratorExit
        | KeyboardInterrupt,
    ):
        return
    raise LeakedDriverError(
        f"{type(backend).__name__}.{method} let {type(exc).__module__}.{type(exc).__name__} "
        f"out: {exc}; translate driver errors into statekit.errors"
    ) from exc


class GuardedBackend(Backend):
    """Delegates to ``inner``; any non-statekit exception becomes a test failure."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.capabilities = inner.capabilities

    @classmethod
    async def open(cls, url: str) -> Self:  # pragma: no cover - never opened by URL
        raise NotImplementedError

    async def _call(self, method: str, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except BaseException as exc:
            _check(exc, method, self.inner)
            raise

    async def _iterate(self, method: str, it: AsyncIterator[Record]) -> AsyncIterator[Record]:
        try:
            async for record in it:
                yield record
        except BaseException as exc:
            _check(exc, method, self.inner)
            raise
        finally:
            close = getattr(it, "aclose", None)
            if close is not None:
                await close()

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        return await self._call("append", guarded_append(self.inner, writes, at, guards))

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        return await self._call(
            "read",
            self.inner.read(
                key, after=after, before=before, limit=limit, newest_first=newest_first
            ),
        )

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        return await self._call("latest", self.inner.latest(keys))

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        return await self._call("as_of", self.inner.as_of(keys, at))

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        try:
            it = self.inner.scan(prefix, kind)
        except BaseException as exc:
            _check(exc, "scan", self.inner)
            raise
        return self._iterate("scan", it)

    async def position(self) -> str:
        return await self._call("position", self.inner.position())

    async def changed(self, since: str, prefix: str = "") -> list[str]:
        return await self._call("changed", self.inner.changed(since, prefix))

    async def prune(self, key: str, before_version: int) -> int:
        return await self._call("prune", self.inner.prune(key, before_version))

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        it = await self._call("watch", self.inner.watch(prefix))
        return self._iterate("watch", it)

    async def replicate(self, records: Sequence[Record]) -> None:
        await self._call("replicate", self.inner.replicate(records))

    async def health(self) -> Health:
        return await self._call("health", self.inner.health())

    async def aclose(self) -> None:
        await self._call("aclose", self.inner.aclose())
